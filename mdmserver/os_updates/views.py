"""``GET /api/v1/os_updates``: the fleet's OS versions and its progress towards the blueprints' OS targets."""

from __future__ import annotations

from flask import Blueprint, request

from mdmserver.api.jsonapi import document, jsonapi_response, load_query
from mdmserver.db import db
from mdmserver.os_updates import service
from mdmserver.os_updates.schemas import SummaryQuerySchema, summary_resource

bp = Blueprint("os_updates", __name__, url_prefix="/api/v1")


@bp.get("/os_updates")
def fleet_summary():
    """Devices per platform and OS version; per blueprint with an OS target, its members behind the
    target, at it, updating, installed and failed; the failed updates with their reason."""
    query = load_query(SummaryQuerySchema(), request.args)
    return jsonapi_response(document(summary_resource(
        service.fleet_summary(db.session, failures_limit=query["failures_limit"]))))
