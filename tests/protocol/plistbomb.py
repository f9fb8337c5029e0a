"""A hand-written binary property-list writer for attack tests: shared references on purpose.

A binary plist is an object table; an array holds *references* (indexes) into it, so one array object
can be referenced twice. ``shared_bomb(60)`` is an array whose two entries are the same array, whose
two entries are the same array… 60 levels: a few hundred bytes, 2**60 paths from the top.

Format (Apple's CFBinaryPList.c): ``bplist00``, the objects, the offset table, a 32-byte trailer
(offset size, reference size, object count, top object, offset-table offset). References are one byte
here (fewer than 256 objects).
"""

from __future__ import annotations

import struct
from typing import Any


class Shared:
    """Marks a value that the writer emits once and references wherever it appears (by identity)."""


def _marker(kind: int, count: int) -> bytes:
    if count < 15:
        return bytes([kind | count])
    return bytes([kind | 0x0F]) + _int_object(count)


def _int_object(value: int) -> bytes:
    if 0 <= value < 2**8:
        return b"\x10" + struct.pack(">B", value)
    if 0 <= value < 2**16:
        return b"\x11" + struct.pack(">H", value)
    return b"\x13" + struct.pack(">q", value)


class _Writer:
    def __init__(self) -> None:
        self.objects: list[bytes | None] = []
        self.by_key: dict[tuple, int] = {}

    def ref(self, value: Any) -> int:
        """Index of ``value`` in the object table: an array or dictionary *object* is written once (by
        identity), a string or data *value* once (by value, as CoreFoundation does)."""
        key = ("id", id(value)) if isinstance(value, list | dict) else (
            (type(value), value) if isinstance(value, str | bytes) else None)
        if key is not None and key in self.by_key:
            return self.by_key[key]
        index = len(self.objects)
        self.objects.append(None)
        if key is not None:
            self.by_key[key] = index
        if isinstance(value, bool):
            encoded = b"\x09" if value else b"\x08"
        elif isinstance(value, int):
            encoded = _int_object(value)
        elif isinstance(value, bytes):
            encoded = _marker(0x40, len(value)) + value
        elif isinstance(value, str):
            raw = value.encode("ascii")
            encoded = _marker(0x50, len(raw)) + raw
        elif isinstance(value, list):
            refs = [self.ref(item) for item in value]
            encoded = _marker(0xA0, len(refs)) + bytes(refs)
        elif isinstance(value, dict):
            keys = [self.ref(key) for key in value]
            values = [self.ref(item) for item in value.values()]
            encoded = _marker(0xD0, len(keys)) + bytes(keys) + bytes(values)
        else:
            raise TypeError(f"cannot write {type(value).__name__}")
        self.objects[index] = encoded
        return index

    def bytes(self, top: int) -> bytes:
        if len(self.objects) >= 256:
            raise ValueError("this writer uses one-byte references: at most 255 objects")
        body = bytearray(b"bplist00")
        offsets = []
        for encoded in self.objects:
            offsets.append(len(body))
            body += encoded
        table_offset = len(body)
        for offset in offsets:
            body += struct.pack(">H", offset)
        body += b"\x00" * 6 + struct.pack(">BBQQQ", 2, 1, len(self.objects), top, table_offset)
        return bytes(body)


def write_binary_plist(value: Any) -> bytes:
    """Binary plist of ``value``; a list or dict object that appears several times is written once and
    referenced from every place (that is the attack), and so is each distinct string or data value."""
    writer = _Writer()
    top = writer.ref(value)
    return writer.bytes(top)


def shared_chain(levels: int = 60, leaf: Any = "x") -> list:
    """``[a, a]`` where ``a`` is ``[b, b]``… ``levels`` deep: 2**levels paths over ``levels`` objects."""
    node: Any = leaf
    for _ in range(levels):
        node = [node, node]
    return node


def bomb_plist(template: dict[str, Any], key: str = "Bomb", levels: int = 60) -> bytes:
    """``template`` with ``key`` set to a shared chain, written as a binary plist (a few hundred bytes)."""
    return write_binary_plist({**template, key: shared_chain(levels)})
