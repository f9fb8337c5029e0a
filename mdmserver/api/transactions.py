"""Which requests write: decided before the first statement, so SQLite's write lock is taken only by them.

A request with a safe method (GET, HEAD, OPTIONS) is read-only unless its view is marked ``@writes``
(the few GETs that change something: the enrollment profile, the commandment GETs that enqueue,
audited downloads). Read-only requests begin their SQLite transactions DEFERRED and never wait for the
write lock; every other request begins IMMEDIATE (see :func:`mdmserver.db.set_read_only`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Flask, current_app, request

from mdmserver.db import db, forget_session_setups, on_session, set_read_only

F = TypeVar("F", bound=Callable)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def writes(view: F) -> F:
    """Mark a view reached by GET that writes to the database (it takes the write lock up front)."""
    view.writes_database = True  # type: ignore[attr-defined]
    return view


def request_writes(view: Callable | None, method: str) -> bool:
    return method not in SAFE_METHODS or bool(getattr(view, "writes_database", False))


def init_app(app: Flask) -> None:
    @app.before_request
    def _declare_transaction_mode() -> None:
        view = current_app.view_functions.get(request.endpoint) if request.url_rule is not None else None
        read_only = not request_writes(view, request.method)
        on_session(db.session, lambda session: set_read_only(session, read_only))

    @app.teardown_request
    def _forget_session_setups(_exc: BaseException | None) -> None:
        forget_session_setups()
