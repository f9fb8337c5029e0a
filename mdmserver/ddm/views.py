"""``/api/v1/devices/<id>/declarations`` and ``/api/v1/devices/<id>/ddm_status``: what declarative
management says to a device, and what the device reports back (scope ``read``)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from mdmserver.api.jsonapi import document, jsonapi_response, refuse_query_params
from mdmserver.collaborators import public_url, secret_box
from mdmserver.db import db
from mdmserver.ddm import service
from mdmserver.ddm.schemas import declaration_resource, status_resource
from mdmserver.selection import resolve

bp = Blueprint("ddm", __name__, url_prefix="/api/v1")
device_bp = Blueprint("ddm_device", __name__)
blueprints = [bp, device_bp]


def _links() -> service.Links:
    return service.Links(public_url=public_url(), box=secret_box())


@bp.get("/devices/<ident>/declarations")
def device_declarations(ident: str):
    """The device's current declaration set (identifiers, types, server tokens; no payloads), each with
    the status the device last reported for it (null before it reports one)."""
    refuse_query_params(request.args)
    device = resolve.get_device(db.session, ident)
    entries = service.device_declaration_view(db.session, device.id, _links())
    return jsonapi_response(document([declaration_resource(device.id, e) for e in entries],
                                     meta={"total": len(entries)}))


@bp.get("/devices/<ident>/ddm_status")
def device_status(ident: str):
    """The device's DDM status items (merged from its reports), its last report's errors, and the token
    of its current declaration set."""
    refuse_query_params(request.args)
    device = resolve.get_device(db.session, ident)
    return jsonapi_response(document(status_resource(service.device_status(db.session, device.id, _links()))))


@device_bp.get("/mdm/ddm/profiles/<token>")
def legacy_profile(token: str):
    """A legacy-profile declaration's ``ProfileURL``: the signed configuration profile, for the one device
    whose declaration names this URL (an HMAC binds it to the device, the profile and its revision)."""
    body = service.legacy_profile(db.session, token, _links())
    return Response(body, status=200, mimetype="application/x-apple-aspen-config")
