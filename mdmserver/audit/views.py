from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, request
from sqlalchemy import select

from mdmserver.api.auth import requires_scope
from mdmserver.api.jsonapi import (
    jsonapi_response,
    list_document,
    paginate,
    parse_list_query,
    resource,
)
from mdmserver.audit.models import AuditEvent
from mdmserver.db import db, isoformat

bp = Blueprint("audit", __name__, url_prefix="/api/v1")


def _timestamp(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("timestamps need a time zone, e.g. 2026-01-01T00:00:00Z")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value!r} is outside the years 1 to 9999 in UTC") from None


@bp.get("/audit_events")
@requires_scope("admin")
def list_audit_events():
    query = parse_list_query(
        request.args,
        filters={
            "action": lambda v: AuditEvent.action == v,
            "actor": lambda v: AuditEvent.actor == v,
            "resource_type": lambda v: AuditEvent.resource_type == v,
            "resource_id": lambda v: AuditEvent.resource_id == v,
            "request_id": lambda v: AuditEvent.request_id == v,
            "since": lambda v: AuditEvent.created_at >= _timestamp(v),
            "until": lambda v: AuditEvent.created_at < _timestamp(v),
        },
        sorts={"created_at": AuditEvent.created_at, "id": AuditEvent.id},
        default_sort=(AuditEvent.id.desc(),),
    )
    page = paginate(db.session, select(AuditEvent), query)
    data = [
        resource(
            "audit_events",
            e.id,
            {
                "created_at": isoformat(e.created_at),
                "actor": e.actor,
                "action": e.action,
                "resource_type": e.resource_type,
                "resource_id": e.resource_id,
                "request_id": e.request_id,
                "details": e.details,
            },
        )
        for e in page.items
    ]
    return jsonapi_response(list_document(page, data))
