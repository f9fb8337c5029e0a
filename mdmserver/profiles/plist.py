"""Configuration profile bytes: sniffing, parsing, structural checks and a lossless JSON form.

Pure module (no Flask, no SQLAlchemy). Every failure is a :class:`ProfileError` carrying the HTTP
status the API should answer and, where it applies, a JSON pointer into the profile.

Leading-bytes policy (documented in docs/profiles.md): a UTF-8 byte order mark and any leading ASCII
whitespace before an XML plist are ignored, so a profile that starts with a blank line or a BOM is
accepted the same way every time. Nothing else is repaired.
"""

from __future__ import annotations

import base64
import binascii
import math
import plistlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from xml.parsers.expat import ExpatError

from mdmserver.errors import InputError
from mdmserver.protocol.plist import MAX_NODES, TreeError, TreeFault, bounded_walk, walk_tree
from mdmserver.protocol.secrets import is_secret

#: Deepest nesting of arrays and dictionaries accepted in a profile.
MAX_DEPTH = 64
#: Default size limit of an uploaded profile (the app passes its own setting).
DEFAULT_MAX_BYTES = 16 * 1024 * 1024

_UTF8_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n\x0b\x0c"


class ProfileError(InputError):
    """A profile that cannot be accepted; ``status`` is 400, 413 or 422 (translated by the API's handler)."""

    def __init__(self, detail: str, *, status: int = 422, pointer: str | None = None, code: str = "invalid_profile"):
        super().__init__(detail, status=status, code=code, pointer=pointer)


@dataclass
class LoadedPlist:
    value: Any
    format: str  # "xml" or "binary"


def pointer(*parts: Any) -> str:
    """RFC 6901 JSON pointer from path parts (``pointer("PayloadContent", 3)`` → ``/PayloadContent/3``)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def strip_leading(data: bytes) -> bytes:
    """Drop a UTF-8 BOM and leading ASCII whitespace (the documented leading-bytes policy)."""
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
    return data.lstrip(_WHITESPACE)


def sniff(data: bytes) -> str | None:
    """``"binary"``, ``"xml"``, ``"cms"`` (DER SignedData) or None for bytes that are none of them."""
    if data.startswith(b"bplist"):
        return "binary"
    if data[:1] == b"\x30":
        return "cms"
    head = data[:64]
    if head.startswith(b"<"):
        return "xml"
    if head.startswith((b"\xfe\xff", b"\xff\xfe")):  # UTF-16 XML with its byte order mark
        return "xml"
    return None


def load_plist(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedPlist:
    """Parse XML or binary plist bytes (after the leading-bytes policy). Raises ProfileError."""
    if len(data) > max_bytes:
        raise ProfileError(f"the profile is larger than {max_bytes} bytes", status=413, code="too_large")
    body = strip_leading(data)
    if not body:
        raise ProfileError("the file is empty", code="empty_file")
    kind = sniff(body)
    if kind is None:
        raise ProfileError(
            "the file is not a property list (expected XML, binary plist or a CMS-signed profile)",
            code="not_a_plist",
        )
    if kind == "cms":
        raise ProfileError("a signed envelope holds another signed envelope instead of a property list")
    fmt = plistlib.FMT_BINARY if kind == "binary" else plistlib.FMT_XML
    try:
        value = plistlib.loads(body, fmt=fmt)
    except plistlib.InvalidFileException as exc:
        raise ProfileError(f"invalid {kind} property list: {exc}", code="invalid_plist") from None
    except ExpatError as exc:
        raise ProfileError(f"malformed XML: {exc}", code="invalid_plist") from None
    except RecursionError:
        raise ProfileError("the property list is nested too deeply", code="invalid_plist") from None
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, UnicodeError, binascii.Error) as exc:
        raise ProfileError(f"invalid property list content: {exc}", code="invalid_plist") from None
    except Exception as exc:  # noqa: BLE001 - plistlib's binary reader can raise anything on hostile input
        raise ProfileError(f"unreadable property list ({type(exc).__name__})", code="invalid_plist") from None
    check_tree(value, max_scalar_bytes=max_bytes)  # one bounded walk before anything else looks at it
    return LoadedPlist(value=value, format=kind)


_PLIST_SCALARS = (str, bool, int, float, bytes, datetime)


#: HTTP status and error code of each way a parsed plist can fail to be a bounded tree.
_TREE_FAULTS = {
    TreeFault.SHARED: (422, "shared_reference"),
    TreeFault.TOO_DEEP: (422, "too_deep"),
    TreeFault.TOO_MANY_NODES: (413, "too_large"),
    TreeFault.TOO_LARGE: (413, "too_large"),
}


def check_tree(value: Any, *, max_depth: int = MAX_DEPTH, max_scalar_bytes: int | None = None) -> None:
    """Refuse what a plist writer cannot write back: non-string keys, null, UID, excessive depth; and
    what is not a bounded tree: an array or dictionary referenced twice (binary plists), too many values.

    Binary plists can hold all of these; XML ones cannot. The pointer names the first fault.
    """
    try:
        for path, item in walk_tree(value, max_depth=max_depth, max_nodes=MAX_NODES,
                                    max_scalar_bytes=max_scalar_bytes):
            _check_node(item, path)
    except TreeError as exc:
        status, code = _TREE_FAULTS[exc.fault]
        raise ProfileError(exc.message, status=status, pointer=pointer(*exc.path), code=code) from None


def _check_node(item: Any, path: tuple) -> None:
    if isinstance(item, dict):
        for key in item:
            if not isinstance(key, str):
                raise ProfileError(
                    f"dictionary key {key!r} is a {type(key).__name__}, keys must be strings",
                    pointer=pointer(*path), code="non_string_key",
                )
    elif item is None:
        raise ProfileError("null values are not allowed in a profile", pointer=pointer(*path), code="null_value")
    elif isinstance(item, plistlib.UID):
        raise ProfileError("UID values are not allowed in a profile", pointer=pointer(*path), code="uid_value")
    elif not isinstance(item, (list, *_PLIST_SCALARS)):
        raise ProfileError(f"unsupported value type {type(item).__name__}", pointer=pointer(*path))


def check_structure(profile: Any) -> None:
    """Structural validation of a parsed profile (always 422, never a warning)."""
    if not isinstance(profile, dict):
        raise ProfileError(
            f"the top level of a profile must be a dictionary, not {plist_type_name(profile)}",
            pointer="", code="not_a_dictionary",
        )
    check_tree(profile)
    if "EncryptedPayloadContent" in profile:
        raise ProfileError(
            "encrypted profiles are not supported", pointer="/EncryptedPayloadContent", code="encrypted_profile"
        )
    if "PayloadContent" not in profile:
        return
    content = profile["PayloadContent"]
    if not isinstance(content, list):
        raise ProfileError(
            f"PayloadContent must be an array, not {plist_type_name(content)}",
            pointer="/PayloadContent", code="payload_content_not_array",
        )
    for index, item in enumerate(content):
        if not isinstance(item, dict):
            raise ProfileError(
                f"each payload must be a dictionary, not {plist_type_name(item)}",
                pointer=pointer("PayloadContent", index), code="payload_not_dictionary",
            )
        if "PayloadType" not in item:
            raise ProfileError(
                "the payload has no PayloadType", pointer=pointer("PayloadContent", index, "PayloadType"),
                code="missing_payload_type",
            )
        if not isinstance(item["PayloadType"], str) or not item["PayloadType"]:
            raise ProfileError(
                "PayloadType must be a non-empty string",
                pointer=pointer("PayloadContent", index, "PayloadType"), code="bad_payload_type",
            )


def plist_type_name(value: Any) -> str:
    """Apple's name of a value's plist type (``boolean``, ``integer``, ``data``...)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "real"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes | bytearray):
        return "data"
    if isinstance(value, datetime):
        return "date"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "dictionary"
    return type(value).__name__


def dump_plist(value: dict[str, Any], fmt: str = "xml") -> bytes:
    """Serialise in the author's key order. Raises ProfileError (422) when XML cannot hold a value."""
    try:
        return plistlib.dumps(
            value, fmt=plistlib.FMT_BINARY if fmt == "binary" else plistlib.FMT_XML, sort_keys=False
        )
    except (ValueError, TypeError, OverflowError) as exc:
        raise ProfileError(f"the profile cannot be written as {fmt}: {exc}", code="unrepresentable") from None


# --- lossless JSON form ----------------------------------------------------------------------------
#
# Strings, booleans, integers, finite reals, arrays and dictionaries map to their JSON selves (JSON
# keeps the int/float distinction and dictionary order as Python's json reads and writes it). The rest
# is tagged: {"$data": base64}, {"$date": ISO 8601 UTC}, {"$real": "inf"}; a dictionary whose only
# key is one of the tags is escaped as {"$dict": {...}}. With a ``Sealer``, the value of every
# dictionary key the secrets policy (``mdmserver.protocol.secrets``) names a secret, at any depth, is
# stored encrypted as {"$sealed": token}.

_TAGS = frozenset({"$data", "$date", "$real", "$dict", "$sealed"})

class Sealer(Protocol):
    """Encrypts and decrypts secret values of the JSON form."""

    def seal(self, value: Any) -> str: ...

    def unseal(self, token: str) -> Any: ...


def date_to_iso(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


def iso_to_date(text: str) -> datetime:
    """ISO 8601 → naive UTC datetime (how plistlib represents dates). Raises ValueError."""
    if not isinstance(text, str):
        raise ValueError("a date must be an ISO 8601 string")
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def b64decode(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("data must be a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not valid base64") from None


@bounded_walk
def to_json(value: Any, sealer: Sealer | None = None) -> Any:
    """Plist value → JSON-safe value, losslessly (see the module notes)."""
    if isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$real": repr(value)}
    if isinstance(value, bytes | bytearray):
        return {"$data": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime):
        return {"$date": date_to_iso(value)}
    if isinstance(value, list):
        return [to_json(v, sealer) for v in value]
    if isinstance(value, dict):
        encoded = {
            k: {"$sealed": sealer.seal(to_json(v))} if sealer is not None and is_secret(k, v) else to_json(v, sealer)
            for k, v in value.items()
        }
        if len(encoded) == 1 and next(iter(encoded)) in _TAGS:
            return {"$dict": encoded}
        return encoded
    raise TypeError(f"not a plist value: {type(value).__name__}")


def from_json(value: Any, path: tuple = (), sealer: Sealer | None = None) -> Any:
    """JSON form → plist value. Raises ProfileError (422, with a pointer relative to the value).

    ``{"$sealed": …}`` is only read with a ``sealer`` (from storage, never from API input).
    """
    if value is None:
        raise ProfileError("null is not a plist value", pointer=pointer(*path), code="null_value")
    if isinstance(value, bool | str | int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ProfileError("non-finite number", pointer=pointer(*path))
        return value
    if isinstance(value, list):
        return [from_json(v, (*path, i), sealer) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if len(value) == 1:
            tag, inner = next(iter(value.items()))
            try:
                if tag == "$data":
                    return b64decode(inner)
                if tag == "$date":
                    return iso_to_date(inner)
                if tag == "$real":
                    return float(inner)
            except (ValueError, TypeError) as exc:
                raise ProfileError(f"bad {tag} value: {exc}", pointer=pointer(*path, tag)) from None
            if tag == "$dict":
                if not isinstance(inner, dict):
                    raise ProfileError("$dict must hold an object", pointer=pointer(*path, tag))
                return {k: from_json(v, (*path, k), sealer) for k, v in inner.items()}
            if tag == "$sealed" and sealer is not None and isinstance(inner, str):
                return from_json(sealer.unseal(inner), path)
        return {k: from_json(v, (*path, k), sealer) for k, v in value.items()}
    raise ProfileError(f"unsupported JSON value {type(value).__name__}", pointer=pointer(*path))


@bounded_walk
def redact(value: Any) -> Any:
    """The JSON form without the values of secret keys (for API output)."""
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items() if not is_secret(k, v)}
    return value


@bounded_walk
def strict_equal(a: Any, b: Any) -> bool:
    """Deep equality that also compares types (``True != 1``, ``1 != 1.0``) and dictionary key order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


@bounded_walk
def first_difference(a: Any, b: Any, path: tuple = ()) -> str | None:
    """Pointer and reason of the first difference ``strict_equal`` would find (for test messages)."""
    if type(a) is not type(b):
        return f"{pointer(*path)}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{pointer(*path)}: keys {list(a)} != {list(b)}"
        for k in a:
            if (diff := first_difference(a[k], b[k], (*path, k))) is not None:
                return diff
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{pointer(*path)}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if (diff := first_difference(x, y, (*path, i))) is not None:
                return diff
        return None
    return None if strict_equal(a, b) else f"{pointer(*path)}: {a!r} != {b!r}"
