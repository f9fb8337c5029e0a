"""A request's session is created only if the request uses it: the hooks declare the transaction mode
and the audit context with ``mdmserver.db.on_session``, which applies them when the session is created
(or at once if it exists), and a request that ends without one leaves nothing behind for the next.

These tests use an app of their own and no ``db_session`` fixture: that fixture creates the session
before the request, which is the other case (covered by ``test_collaborators.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from mdmserver.audit.models import AuditEvent
from mdmserver.audit.service import NO_REQUEST, audit_context
from mdmserver.db import db, is_read_only, on_session, session_in_use
from mdmserver.tokens.service import create_token
from tests.conftest import make_app


@pytest.fixture(scope="module")
def own_app(tmp_path_factory) -> Iterator[Flask]:
    application, cleanup = make_app(tmp_path_factory.mktemp("lazy-session"))
    yield application
    cleanup()


def test_a_setup_waits_for_the_session_or_runs_at_once(own_app: Flask) -> None:
    with own_app.app_context():
        seen: list[object] = []
        on_session(db.session, seen.append)
        assert seen == [] and session_in_use(db.session) is None  # declaring creates nothing
        created = db.session()
        assert seen == [created]
        on_session(db.session, lambda session: seen.append(("again", session)))
        assert seen[-1] == ("again", created)  # the session exists: at once
        db.session.remove()


def test_a_session_created_inside_the_request_gets_the_token_and_request_id(own_app: Flask) -> None:
    with own_app.app_context():
        _, token = create_token(db.session, "lazy-writer", ["write"])
        db.session.commit()
        db.session.remove()
    # no app context is active here: the request pushes its own, and its session is created by the
    # token lookup, after the mode was declared (applied then) and before the audit context (at once);
    # test_sqlite_locking.py sees the declared mode in the BEGIN it sends
    response = own_app.test_client().patch(
        "/api/v1/organization", json={"data": {"type": "organizations", "attributes": {"phone": "3"}}},
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "lazy-audit-1"},
    )
    assert response.status_code == 200, response.get_json()
    with own_app.app_context():
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.request_id == "lazy-audit-1"))
        assert event is not None and (event.action, event.actor) == ("organization:update", "lazy-writer")


def test_a_request_without_a_session_leaves_nothing_for_the_next(own_app: Flask) -> None:
    """A GET that never touches the database declares a read-only mode and a request id; neither may
    reach a session created after it in the same thread."""
    response = own_app.test_client().get("/no-such-page", headers={"X-Request-ID": "lazy-unused-1"})
    assert response.status_code == 404
    with own_app.app_context():
        later = db.session()
        assert audit_context(later) is NO_REQUEST
        assert not is_read_only(later)
        db.session.remove()
