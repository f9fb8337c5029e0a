"""The audit log: every admin write records an event in the same transaction as the change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, scoped_session

from mdmserver.audit.models import AuditEvent
from mdmserver.tokens.models import ApiToken

_CONTEXT = "mdmserver.audit_context"


@dataclass(frozen=True)
class AuditContext:
    """Who is acting and in which request: the API token behind it (None for a device or a command
    line; its name is read only when an event is recorded, so binding costs no statement) and the
    request id (None outside a request)."""

    token: ApiToken | None = None
    request_id: str | None = None


#: Outside a request (command line, worker, tests calling services directly).
NO_REQUEST = AuditContext()


def set_audit_context(session: Session | scoped_session, context: AuditContext | None) -> None:
    """Bind the acting token and request id to the session's unit of work (the request setup does
    this, as it declares the transaction mode with :func:`mdmserver.db.set_read_only`); ``None``
    unbinds it at the end of the request."""
    target = session() if isinstance(session, scoped_session) else session
    if context is None:
        target.info.pop(_CONTEXT, None)
    else:
        target.info[_CONTEXT] = context


def audit_context(session: Session | scoped_session) -> AuditContext:
    """The context bound to this session, or :data:`NO_REQUEST`."""
    target = session() if isinstance(session, scoped_session) else session
    return target.info.get(_CONTEXT, NO_REQUEST)


def record_event(
    session: Session,
    action: str,
    resource_type: str,
    resource_id: Any,
    details: dict[str, Any] | None = None,
    *,
    actor: str | None = None,
) -> AuditEvent:
    """Add an audit event; ``action`` is a ``subject:verb`` tag such as ``organization:update``.

    The actor defaults to the API token of the session's :class:`AuditContext` (``cli`` outside a
    request); the request id is the context's. Nothing here reads Flask's request globals: the
    request setup binds the context to the session (``mdmserver.collaborators.init_app``).
    """
    context = audit_context(session)
    token = context.token
    event = AuditEvent(
        actor=actor or (token.name if token is not None else None) or "cli",
        action=action,
        resource_type=resource_type,
        resource_id=str(resource_id),
        request_id=context.request_id,
        details=details,
    )
    session.add(event)
    return event
