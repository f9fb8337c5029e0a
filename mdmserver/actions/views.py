"""Per-device actions (``/api/v1/devices/<id>/actions``), bulk actions and viability (``/api/v1/actions``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, json, request

from mdmserver.actions import service
from mdmserver.actions.catalogue import ACTIONS
from mdmserver.api.auth import current_actor
from mdmserver.api.jsonapi import (
    document,
    jsonapi_response,
    refuse_query_params,
    request_json,
    resource,
)
from mdmserver.collaborators import secret_box
from mdmserver.commands.models import CommandStatus
from mdmserver.db import db, isoformat
from mdmserver.errors import BadRequest, UnprocessableEntity
from mdmserver.selection import resolve
from mdmserver.selection.targets import select_targets

bp = Blueprint("actions", __name__, url_prefix="/api/v1")


def _optional_body() -> Any:
    if not request.get_data(cache=True):
        return {}
    return request_json()


def _plain(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


@bp.get("/actions")
def list_actions():
    """The action vocabulary with each action's commands and parameters."""
    refuse_query_params(request.args)
    data = [resource("actions", a.name, {"name": a.name, "title": a.title, "request_types": list(a.request_types),
                                         "parameters": sorted(a.schema().fields) if a.schema else []})
            for a in ACTIONS.values()]
    return jsonapi_response(document(data, meta={"total": len(data)}))


@bp.get("/devices/<ident>/actions")
def device_actions(ident: str):
    """Every action for this device with is_enabled and the reason when not."""
    refuse_query_params(request.args)
    device = resolve.get_device(db.session, ident)
    data = [resource("device_actions", a["name"], a, links={"self": f"/api/v1/devices/{device.id}/actions/{a['name']}"})
            for a in service.device_actions(db.session, device)]
    retirement = service.retirement_state(db.session, device)
    if retirement is not None:
        retirement["requested_at"] = isoformat(retirement["requested_at"])
    return jsonapi_response(document(data, meta={"total": len(data), "retirement": retirement}))


@bp.post("/devices/<ident>/actions/<name>")
def perform_action(ident: str, name: str):
    """Perform one action on one device: 202 with the queued command(s); 409 when it does not apply."""
    device = resolve.get_device(db.session, ident)
    action = service.get_action(name)
    body = _optional_body()
    if not isinstance(body, dict) or set(body) - {"parameters"}:
        raise UnprocessableEntity('the body is {"parameters": {…}} (or empty)', pointer="")
    uuids = service.perform_on_device(db.session, action, device, body.get("parameters"), actor=current_actor(),
                                     box=secret_box())
    db.session.commit()
    data = [resource("commands", uuid, {"status": CommandStatus.QUEUED.value},
                     links={"self": f"/api/v1/commands/{uuid}"})
            for uuid in uuids]
    return jsonapi_response(document(data, meta={"action": name, "device_id": str(device.id)}), status=202)


@bp.post("/actions/<name>")
def bulk_action(name: str):
    """ManageEngine's bulk action: success_list, na_list (each with remarks) and the counts."""
    action = service.get_action(name)
    body = request_json()
    target = service.targets_from_body(db.session, body)
    outcome = service.run_action(db.session, action, target, body.get("parameters"), actor=current_actor(),
                                 box=secret_box())
    db.session.commit()
    return _plain(outcome.as_result())


def _list_param(name: str) -> list[str] | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    items = [p.strip() for p in raw.split(",") if p.strip()]
    if not items:
        raise BadRequest(f"{name} must list at least one value", parameter=name)
    return items


@bp.get("/actions/<name>/viability")
def viability(name: str):
    """Ivanti's checkViability: ``?ids=`` (ids, UDIDs, serial numbers) and/or ``?groups=``."""
    action = service.get_action(name)
    for param in request.args:
        if param not in ("ids", "groups"):
            raise BadRequest(f"unknown query parameter {param!r}", parameter=param)
    ids, groups = _list_param("ids"), _list_param("groups")
    if ids is None and groups is None:
        raise BadRequest("give ids= or groups=", parameter="ids")
    try:
        target = select_targets(db.session, devices=ids, groups=groups)
    except UnprocessableEntity as exc:
        raise BadRequest(exc.errors[0]["detail"] if exc.errors else exc.detail,
                         parameter="groups" if "group" in exc.detail else "ids") from None
    return _plain(service.viability(db.session, action, target))
