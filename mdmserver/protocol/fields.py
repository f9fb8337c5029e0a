"""Typed access to property-list dictionaries sent by devices (tolerant of empty values)."""

from __future__ import annotations

from datetime import datetime
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


def opt_bool(d: dict[str, Any], key: str) -> bool | None:
    value = d.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, bool):
        raise ProtocolError(f"{key} must be a boolean")
    return value


def opt_int(d: dict[str, Any], key: str) -> int | None:
    value = d.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{key} must be an integer")
    return value


def opt_real(d: dict[str, Any], key: str) -> float | None:
    value = d.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{key} must be a number")
    return float(value)


def opt_date(d: dict[str, Any], key: str) -> datetime | None:
    value = d.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, datetime):
        raise ProtocolError(f"{key} must be a date")
    return value


def opt_dict(d: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = d.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, dict):
        raise ProtocolError(f"{key} must be a dictionary")
    return value


def opt_list(d: dict[str, Any], key: str) -> list[Any] | None:
    value = d.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, list):
        raise ProtocolError(f"{key} must be an array")
    return value
