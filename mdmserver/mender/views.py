"""Mender's v1 admission management API at ``/api/management/v1/admission`` (Mender's shapes and errors)."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, Response, json, request
from marshmallow import Schema, ValidationError

from mdmserver.api.auth import current_actor
from mdmserver.api.jsonapi import json_body, marshmallow_errors
from mdmserver.collaborators import public_url, secret_box
from mdmserver.db import db
from mdmserver.errors import BadRequest
from mdmserver.mender import service
from mdmserver.mender.schemas import (
    AuthSetListQuerySchema,
    AuthSetSchema,
    AuthSetStatusSchema,
    PagingQuerySchema,
    PreauthorizationSchema,
)

bp = Blueprint("mender", __name__, url_prefix="/api/management/v1/admission")

def _json(body, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _load(schema: Schema, data: dict) -> dict:
    """``schema.load(data)``; any fault is a 400 (Mender's error shape has one message)."""
    try:
        return schema.load(data)
    except ValidationError as exc:
        faults = marshmallow_errors(exc.messages, base="")
        raise BadRequest("; ".join(f"{f['pointer'].lstrip('/') or 'body'}: {f['detail']}" for f in faults)) from None


def _body(schema: Schema) -> dict:
    """The JSON body loaded by ``schema``."""
    if (request.mimetype or "") != "application/json":
        raise BadRequest("the body must be application/json")
    body = json_body(request)
    if body is None:
        raise BadRequest("the body is not valid JSON")
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return _load(schema, body)


def _query(schema: Schema) -> dict:
    """The query parameters loaded by ``schema`` (an unknown one is a 400)."""
    return _load(schema, dict(request.args))


def _link(page: int, per_page: int, rel: str) -> str:
    params = [(k, v) for k, v in request.args.items(multi=True) if k not in ("page", "per_page")]
    params += [("page", str(page)), ("per_page", str(per_page))]
    return f'<{request.path}?{urlencode(params)}>; rel="{rel}"'


@bp.get("/devices")
def list_devices():
    """Auth sets (Mender): status, device_id, page, per_page; Link headers."""
    query = _query(AuthSetListQuerySchema())
    page, per_page = query["page"], query["per_page"]
    result = service.list_auth_sets(db.session, status=query.get("status"), device_id=query.get("device_id"),
                                    page=page, per_page=per_page)
    links = [_link(1, per_page, "first")]
    if page > 1:
        links.append(_link(page - 1, per_page, "prev"))
    if result.has_next:
        links.append(_link(page + 1, per_page, "next"))
    return _json([service.auth_set_document(a) for a in result.items], headers={"Link": ", ".join(links)})


@bp.post("/devices")
def preauthorize():
    """Preauthorize a serial number and/or UDID (Mender's POST /devices)."""
    rows = service.preauthorize(db.session, _body(PreauthorizationSchema()))
    db.session.commit()
    return _json([service.preauthorization_document(r) for r in rows], status=201,
                 headers={"Location": f"{bp.url_prefix}/preauthorizations"})


@bp.get("/devices/<auth_set_id>")
def get_device(auth_set_id: str):
    """One auth set."""
    return _json(service.auth_set_document(service.get_auth_set(db.session, auth_set_id)))


@bp.put("/devices/<auth_set_id>")
def submit(auth_set_id: str):
    """Submit an auth set (pending when new), 204."""
    service.submit(db.session, auth_set_id, _body(AuthSetSchema()))
    db.session.commit()
    return Response(status=204)


@bp.delete("/devices/<auth_set_id>")
def decommission(auth_set_id: str):
    """Decommission the device: every request it makes is refused from now on."""
    service.decommission(db.session, service.get_auth_set(db.session, auth_set_id))
    db.session.commit()
    return Response(status=204)


@bp.get("/devices/<auth_set_id>/status")
def get_status(auth_set_id: str):
    """An auth set's status."""
    return _json({"status": service.get_auth_set(db.session, auth_set_id).status})


@bp.put("/devices/<auth_set_id>/status")
def set_status(auth_set_id: str):
    """Accept or reject an auth set (Mender's transition rules)."""
    auth_set = service.get_auth_set(db.session, auth_set_id)
    body = _body(AuthSetStatusSchema())
    service.set_status(db.session, auth_set, body["status"], actor=current_actor(), box=secret_box(), public_url=public_url())
    db.session.commit()
    return _json({"status": auth_set.status})


@bp.get("/preauthorizations")
def list_preauthorizations():
    """Preauthorized serial numbers and UDIDs: page, per_page; Link headers (like the auth set list)."""
    query = _query(PagingQuerySchema())
    page, per_page = query["page"], query["per_page"]
    result = service.list_preauthorizations(db.session, page=page, per_page=per_page)
    links = [_link(1, per_page, "first")]
    if page > 1:
        links.append(_link(page - 1, per_page, "prev"))
    if result.has_next:
        links.append(_link(page + 1, per_page, "next"))
    return _json([service.preauthorization_document(r) for r in result.items],
                 headers={"Link": ", ".join(links)})


@bp.delete("/preauthorizations/<preauth_id>")
def delete_preauthorization(preauth_id: str):
    """Remove a preauthorization."""
    service.delete_preauthorization(db.session, preauth_id)
    db.session.commit()
    return Response(status=204)
