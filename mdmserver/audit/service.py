"""The audit log: every admin write records an event in the same transaction as the change."""

from __future__ import annotations

from typing import Any

from flask import g, has_request_context
from sqlalchemy.orm import Session

from mdmserver.audit.models import AuditEvent


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

    The actor defaults to the current API token's name (``cli`` outside a request).
    """
    request_id = None
    if has_request_context():
        token = getattr(g, "api_token", None)
        actor = actor or (token.name if token is not None else None)
        request_id = getattr(g, "request_id", None)
    event = AuditEvent(
        actor=actor or "cli",
        action=action,
        resource_type=resource_type,
        resource_id=str(resource_id),
        request_id=request_id,
        details=details,
    )
    session.add(event)
    return event
