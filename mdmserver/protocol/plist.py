"""Property-list loading and dumping with size limits; every parse failure is one ``ProtocolError``.

Also the one bounded walker over parsed plists (``walk_tree``, ``NodeBudget``, ``bounded_walk``), used by
the device protocol and by profiles. plistlib's binary reader returns *one* object for an object the
file references several times, so a few hundred bytes describe a DAG with 2**60 paths: every walk
enters each array and dictionary at most once and counts what it visits (docs/security.md).
"""

from __future__ import annotations

import functools
import plistlib
import struct
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar
from xml.parsers.expat import ExpatError

from mdmserver.errors import InputError

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 64
#: Most values (arrays, dictionaries and scalars, dictionary keys not counted) one parsed plist may
#: hold; an XML plist of the 10 MiB body limit holds at most ~1.4 million (``<true/>``).
MAX_NODES = 1_000_000


class ProtocolError(InputError):
    """Input from a device (or for a device) that does not follow the protocol.

    ``status`` is the HTTP status the device endpoint should answer with (400, or 413 for a body past
    its size limit); the API's error handler translates it (``mdmserver.api.errors``).
    """

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message, status=status)
        self.message = message


class TreeFault(StrEnum):
    """Why a parsed plist is not a bounded tree."""

    SHARED = "shared_reference"
    TOO_DEEP = "too_deep"
    TOO_MANY_NODES = "too_many_nodes"
    TOO_LARGE = "too_large"


class TreeError(ValueError):
    """A parsed plist that is not a bounded tree; ``path`` (keys and indexes) names where."""

    def __init__(self, fault: TreeFault, message: str, path: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.fault = fault
        self.message = message
        self.path = path


class NodeBudget:
    """Node budget with an identity memo for one walk: each array or dictionary may be entered once."""

    __slots__ = ("_left", "_seen", "max_nodes")

    def __init__(self, max_nodes: int = MAX_NODES) -> None:
        self.max_nodes = max_nodes
        self._left = max_nodes
        self._seen: set[int] = set()

    def visit(self, item: Any, path: tuple[Any, ...] = ()) -> None:
        """Count one value; refuse a container reached a second time (a shared reference) or one too many."""
        self._left -= 1
        if self._left < 0:
            raise TreeError(TreeFault.TOO_MANY_NODES, f"more than {self.max_nodes} values in one property list", path)
        if isinstance(item, dict | list):
            if id(item) in self._seen:
                raise TreeError(
                    TreeFault.SHARED,
                    "shared references are not allowed: the same array or dictionary appears twice",
                    path,
                )
            self._seen.add(id(item))


def walk_tree(
    value: Any, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES, max_scalar_bytes: int | None = None
) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every value of a parsed plist with its path, in document order, each container once.

    Raises ``TreeError`` as soon as a container is reached twice, nesting passes ``max_depth``, more than
    ``max_nodes`` values are seen, or the strings, data and keys, counted at every place they appear,
    pass ``max_scalar_bytes`` (shared *scalars* are legitimate, CoreFoundation writes each string once,
    but one megabyte referenced a million times must not become a terabyte downstream).
    """
    budget = NodeBudget(max_nodes)
    scalar_bytes = 0
    stack: list[tuple[Any, tuple[Any, ...], int]] = [(value, (), 1)]
    while stack:
        item, path, depth = stack.pop()
        if depth > max_depth:
            raise TreeError(TreeFault.TOO_DEEP, f"nested deeper than {max_depth} levels", path)
        budget.visit(item, path)
        yield path, item
        if isinstance(item, dict):
            scalar_bytes += sum(len(key) for key in item if isinstance(key, str))
            stack.extend((child, (*path, key), depth + 1) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((item[i], (*path, i), depth + 1) for i in range(len(item) - 1, -1, -1))
        elif isinstance(item, str | bytes | bytearray):
            scalar_bytes += len(item)
        if max_scalar_bytes is not None and scalar_bytes > max_scalar_bytes:
            raise TreeError(
                TreeFault.TOO_LARGE, f"the property list expands to more than {max_scalar_bytes} bytes", path
            )


def check_tree(
    value: Any, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES, max_scalar_bytes: int | None = None
) -> None:
    """Walk ``value`` once with ``walk_tree``'s limits (raises ``TreeError``)."""
    for _ in walk_tree(value, max_depth=max_depth, max_nodes=max_nodes, max_scalar_bytes=max_scalar_bytes):
        pass


_Walk = TypeVar("_Walk", bound=Callable[..., Any])


def bounded_walk(fn: _Walk) -> _Walk:
    """Make a recursive function over a parsed plist (its first argument) one budgeted walk.

    The outermost call opens a ``NodeBudget``; the function's recursive calls (through its module-level
    name, so through this wrapper) visit their value against it: a container reached twice or too many
    values raise ``TreeError`` instead of walking a DAG's every path. Values that went through
    ``load_plist`` are trees within the budget, so for them this never fires.
    """
    current: ContextVar[NodeBudget | None] = ContextVar(f"bounded_walk.{fn.__qualname__}", default=None)

    @functools.wraps(fn)
    def wrapper(value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current.get()
        if budget is not None:
            budget.visit(value)
            return fn(value, *args, **kwargs)
        budget = NodeBudget()
        token = current.set(budget)
        try:
            budget.visit(value)
            return fn(value, *args, **kwargs)
        finally:
            current.reset(token)

    return wrapper  # type: ignore[return-value]


def load_plist(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse an XML or binary property list.

    Raises ``ProtocolError`` (status 413 for oversized input, 400 otherwise) for every failure plistlib can
    produce: invalid files, XML errors (entity declarations included), bad base64, bad dates, deep nesting;
    and for binary plists that share an array or dictionary (400) or expand past ``max_bytes`` (413).
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
    try:
        check_tree(value, max_depth=max_depth, max_scalar_bytes=max_bytes)
    except TreeError as exc:
        status = 413 if exc.fault in (TreeFault.TOO_LARGE, TreeFault.TOO_MANY_NODES) else 400
        raise ProtocolError(f"property list: {exc.message}", status=status) from None
    return value


def load_stored(data: bytes) -> Any:
    """A plist the server wrote itself or already accepted under its limits (command parameters, a
    device's stored answer): its own length bounds it, so no later setting refuses what was stored;
    the bounded walk still runs."""
    return load_plist(data, max_bytes=max(len(data), DEFAULT_MAX_BYTES))


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
