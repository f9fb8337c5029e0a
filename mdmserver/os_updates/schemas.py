"""The fleet's software-update view (``GET /api/v1/os_updates``): its query and its resource."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from mdmserver.api.apidoc import ApiDoc, Reply
from mdmserver.api.jsonapi import resource
from mdmserver.db import isoformat

#: the failures the summary lists when ``failures_limit`` is not given, and the most it lists
DEFAULT_FAILURES, MAX_FAILURES = 50, 500


class SummaryQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    failures_limit = fields.Integer(
        load_default=DEFAULT_FAILURES, validate=validate.Range(min=0, max=MAX_FAILURES),
        metadata={"description": f"how many failed OS updates to list, newest first (default {DEFAULT_FAILURES}, "
                                 f"at most {MAX_FAILURES})"})


def summary_resource(summary: dict[str, Any]) -> dict[str, Any]:
    """``os_updates.service.fleet_summary`` as one JSON:API resource."""
    failures = [{**f, "failed_at": isoformat(f["failed_at"])} for f in summary["failures"]]
    return resource("os_update_summaries", "fleet", {**summary, "failures": failures})


OPENAPI: dict[str, ApiDoc] = {
    "os_updates.fleet_summary": ApiDoc(type="os_update_summaries", reply=Reply.RESOURCE, query=SummaryQuerySchema),
}
