"""Property-list loading and dumping with size limits; every parse failure is one ``ProtocolError``."""

from __future__ import annotations

import plistlib
import struct
from datetime import UTC, datetime
from typing import Any
from xml.parsers.expat import ExpatError

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 64


class ProtocolError(ValueError):
    """Input from a device (or for a device) that does not follow the protocol.

    ``status`` is the HTTP status the device endpoint should answer with.
    """

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _depth(value: Any, limit: int) -> int:
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > limit:
            return level
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def load_plist(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse an XML or binary property list.

    Raises ``ProtocolError`` (status 413 for oversized input, 400 otherwise) for every failure plistlib can
    produce: invalid files, XML errors (entity declarations included), bad base64, bad dates, deep nesting.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError("property list must be bytes")
    if len(data) > max_bytes:
        raise ProtocolError(f"property list larger than {max_bytes} bytes", status=413)
    if not data.strip():
        raise ProtocolError("empty body: a property list was expected")
    try:
        value = plistlib.loads(bytes(data))
    except plistlib.InvalidFileException as exc:
        raise ProtocolError(f"not a property list: {exc}") from None
    except ExpatError as exc:
        raise ProtocolError(f"malformed XML property list: {exc}") from None
    except (
        ValueError, TypeError, LookupError, OverflowError, AttributeError, struct.error
    ) as exc:
        raise ProtocolError(f"invalid property list content: {exc}") from None
    except RecursionError:
        raise ProtocolError("property list nested too deeply") from None
    if _depth(value, max_depth) > max_depth:
        raise ProtocolError(f"property list nested deeper than {max_depth} levels")
    return value


def load_dict(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Parse a property list whose top level must be a dictionary."""
    value = load_plist(data, max_bytes=max_bytes)
    if not isinstance(value, dict):
        raise ProtocolError("the property list's top level must be a dictionary")
    return value


def _clean(value: Any) -> Any:
    """Drop ``None`` values (plistlib cannot write them) and make datetimes naive UTC."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value if v is not None]
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def dump_plist(value: Any) -> bytes:
    """Serialise to an XML property list, keeping key order and leaving out ``None`` values."""
    return plistlib.dumps(_clean(value), fmt=plistlib.FMT_XML, sort_keys=False)
