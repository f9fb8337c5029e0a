"""Typed access to property-list dictionaries sent by devices (tolerant of empty values)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

from .plist import ProtocolError


def opt_str(d: dict[str, Any], key: str, max_len: int | None = None) -> str | None:
    """A string value; missing or empty → ``None``; any other type, or longer than ``max_len``
    characters → ``ProtocolError``."""
    value = d.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bytes) and not value:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{key} must be a string")
    if max_len is not None and len(value) > max_len:
        raise ProtocolError(f"{key} is longer than {max_len} characters")
    if "\x00" in value:
        raise ProtocolError(f"{key} contains a NUL character")
    return value


#: Unicode categories never found in an identifier: control, format (bidi overrides, zero-width),
#: surrogate, private-use and unassigned characters, and the line and paragraph separators.
_NOT_IN_IDENTIFIERS = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
#: Categories never found in a one-line name (device and user names): line breaks and controls.
_NOT_IN_NAMES = frozenset({"Cc", "Zl", "Zp"})


def _refuse_categories(key: str, value: str | None, refused: frozenset[str], what: str) -> str | None:
    if value is None or (value.isascii() and value.isprintable()):
        return value  # printable ASCII: letters, digits, punctuation, symbols, the space (no Cc/Cf/Zl/Zp)
    if any(unicodedata.category(ch) in refused for ch in value):
        raise ProtocolError(f"{key} contains {what}")
    return value


def has_identifier_forbidden_character(value: str) -> bool:
    """Whether ``value`` holds a character never found in an identifier (see ``_NOT_IN_IDENTIFIERS``)."""
    return any(unicodedata.category(ch) in _NOT_IN_IDENTIFIERS for ch in value)


def opt_ident(d: dict[str, Any], key: str, max_len: int | None = None) -> str | None:
    """An identifier (UDID, serial number, user id, topic, command UUID…): like :func:`opt_str`, and
    any control, format or line-separator character is a ``ProtocolError`` (they would forge log
    lines and lookups)."""
    return _refuse_categories(key, opt_str(d, key, max_len), _NOT_IN_IDENTIFIERS, "a control character")


def req_ident(d: dict[str, Any], key: str, max_len: int | None = None) -> str:
    value = opt_ident(d, key, max_len)
    if value is None:
        raise ProtocolError(f"{key} is required")
    return value


def opt_line(d: dict[str, Any], key: str, max_len: int | None = None) -> str | None:
    """A one-line name (device name, user name): like :func:`opt_str`, without line breaks or
    control characters."""
    return _refuse_categories(key, opt_str(d, key, max_len), _NOT_IN_NAMES, "a control character")


def req_str(d: dict[str, Any], key: str, max_len: int | None = None) -> str:
    value = opt_str(d, key, max_len)
    if value is None:
        raise ProtocolError(f"{key} is required")
    return value


def opt_bytes(d: dict[str, Any], key: str) -> bytes | None:
    """A data value; missing or empty → ``None``. Strings are accepted as their UTF-8 bytes."""
    value = d.get(key)
    if value is None or value == b"" or value == "":
        return None
    if isinstance(value, str):
        return value.encode()
    if not isinstance(value, bytes):
        raise ProtocolError(f"{key} must be data")
    return value


def _opt(d: dict[str, Any], key: str, fits: Callable[[Any], bool], expected: str) -> Any:
    """The value of ``key``; missing or empty → ``None``; a value that does not fit → ``ProtocolError``."""
    value = d.get(key)
    if value is None or value == "":
        return None
    if not fits(value):
        raise ProtocolError(f"{key} must be {expected}")
    return value


def opt_bool(d: dict[str, Any], key: str) -> bool | None:
    return _opt(d, key, lambda v: isinstance(v, bool), "a boolean")


def opt_int(d: dict[str, Any], key: str) -> int | None:
    return _opt(d, key, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")


def opt_dict(d: dict[str, Any], key: str) -> dict[str, Any] | None:
    return _opt(d, key, lambda v: isinstance(v, dict), "a dictionary")


def opt_list(d: dict[str, Any], key: str) -> list[Any] | None:
    return _opt(d, key, lambda v: isinstance(v, list), "an array")
