"""The operations endpoints' OpenAPI description."""

from __future__ import annotations

from mdmserver.api.apidoc import ApiDoc, Reply

OPENAPI: dict[str, ApiDoc] = {
    "ops.index": ApiDoc(reply=Reply.JSON),
    "ops.healthz": ApiDoc(reply=Reply.JSON),
    "ops.readyz": ApiDoc(reply=Reply.JSON),
    "ops.metrics_text": ApiDoc(reply=Reply.TEXT),
    "ops.openapi_json": ApiDoc(reply=Reply.JSON),
    "ops.api_docs": ApiDoc(reply=Reply.HTML),
}
