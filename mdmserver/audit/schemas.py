"""The audit log's OpenAPI description."""

from __future__ import annotations

from mdmserver.api.apidoc import ApiDoc, listing

OPENAPI: dict[str, ApiDoc] = {
    "audit.list_audit_events": listing(
        "audit_events", filters=("action", "actor", "resource_type", "resource_id", "request_id", "since", "until"),
        sorts=("created_at", "id")),
}
