"""Dialect-aware SQL helpers for set-based work.

``in_values`` passes a whole list as one bound parameter (a JSON array on SQLite, a PostgreSQL array),
so "these 100,000 ids" is one statement with one parameter rather than chunks of ``IN (?, ?, …)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    String,
    any_,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.orm import Session


def dialect_name(session: Session) -> str:
    return session.get_bind().dialect.name


def in_values(session: Session, column, values: Sequence[Any], *, integer: bool) -> ColumnElement[bool]:
    """``column IN values`` with the values bound as a single parameter."""
    values = list(values)
    if dialect_name(session) == "postgresql":
        kind = Integer if integer else String
        return column == any_(bindparam(None, values, type_=ARRAY(kind)))
    each = func.json_each(bindparam(None, json.dumps(values), type_=String)).table_valued("value")
    return column.in_(select(each.c.value))


def int_pairs(session: Session, pairs: Sequence[tuple[int, int]], names: tuple[str, str]):
    """A subquery of integer pairs with columns ``names``, the whole list bound as one parameter (a JSON
    array on SQLite, two PostgreSQL arrays): "this device gets these parameters" for many devices in one
    statement."""
    first, second = names
    if dialect_name(session) == "postgresql":
        table = func.unnest(bindparam(None, [a for a, _ in pairs], type_=ARRAY(Integer)),
                            bindparam(None, [b for _, b in pairs], type_=ARRAY(Integer))).table_valued(
            first, second).render_derived()
        return select(table.c[first], table.c[second]).subquery()
    each = func.json_each(bindparam(None, json.dumps([list(p) for p in pairs]), type_=String)).table_valued("value")
    return select(func.json_extract(each.c.value, "$[0]").label(first),
                  func.json_extract(each.c.value, "$[1]").label(second)).subquery()


def uuid_expression(session: Session) -> ColumnElement[str]:
    """A new upper-case random (version 4) UUID per row, computed by the database."""
    if dialect_name(session) == "postgresql":
        return func.upper(func.cast(func.gen_random_uuid(), String))
    return literal_column(
        "upper(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || "
        "substr('89AB', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || "
        "hex(randomblob(6)))",
        String,
    )

