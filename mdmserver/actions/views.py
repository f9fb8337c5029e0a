"""Per-device actions (``/api/v1/devices/<id>/actions``), bulk actions and viability (``/api/v1/actions``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from mdmserver.actions import service
from mdmserver.actions.catalogue import ACTIONS
from mdmserver.actions.models import SCHEDULE_STATUSES, ScheduledAction
from mdmserver.actions.schemas import (
    SCHEDULE_MEMBERS,
    BulkActionSchema,
    PerformSchema,
    ViabilityQuerySchema,
    scheduled_action_resource,
)
from mdmserver.api.auth import current_actor
from mdmserver.api.jsonapi import (
    document,
    is_id,
    jsonapi_response,
    list_document,
    load_body,
    load_query,
    paginate,
    parse_list_query,
    plain_response,
    refuse_query_params,
    resource,
)
from mdmserver.collaborators import secret_box
from mdmserver.db import db, isoformat, utcnow
from mdmserver.errors import BadRequest, NotFound, UnprocessableEntity
from mdmserver.records.commands import CommandStatus
from mdmserver.selection import resolve
from mdmserver.selection.filters import one_of
from mdmserver.selection.targets import select_targets

bp = Blueprint("actions", __name__, url_prefix="/api/v1")



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
    body = load_body(PerformSchema(), "action", optional=True)
    schedule = {member: body.pop(member) for member in SCHEDULE_MEMBERS if member in body}
    given = service.body_parameters(action, body)
    if schedule:
        return _schedule(action, {"devices": [device.id]}, given, schedule)
    entry = service.perform_on_device(db.session, action, device, given.raw, actor=current_actor(), box=secret_box())
    db.session.commit()
    data = [resource("commands", uuid, {"status": CommandStatus.QUEUED.value},
                     links={"self": f"/api/v1/commands/{uuid}"})
            for uuid in entry["command_uuids"]]
    meta = {"action": action.name, "device_id": str(device.id)}
    if "pin" in entry:  # the PIN generated for a Mac: shown once, to the caller who locked
        meta["pin"] = entry["pin"]
    if given.ignored:
        meta["ignored"] = given.ignored
    return jsonapi_response(document(data, meta=meta), status=202)


@bp.post("/actions/<name>")
def bulk_action(name: str):
    """ManageEngine's bulk action: success_list, na_list (each with remarks) and the counts."""
    action = service.get_action(name)
    body = load_body(BulkActionSchema(), "bulk action")
    schedule = {member: body.pop(member) for member in SCHEDULE_MEMBERS if member in body}
    if schedule:
        selection = {member: body.pop(member, None) for member in service.SELECTION_MEMBERS}
        return _schedule(action, selection, service.body_parameters(action, body), schedule)
    result = service.run_bulk(db.session, action, body, actor=current_actor(), box=secret_box())
    db.session.commit()
    return plain_response(result)


def _schedule(action, selection: dict[str, Any], given: service.BodyParameters, schedule: dict[str, Any]):
    """Store the action for later (``not_before``, default now, and/or a ``window``): 202 with it."""
    row = service.schedule_action(db.session, action, selection, given.raw,
                                  not_before=schedule.get("not_before") or utcnow(), window=schedule.get("window"),
                                  actor=current_actor(), box=secret_box())
    db.session.commit()
    meta = {"ignored": given.ignored} if given.ignored else None
    return jsonapi_response(document(scheduled_action_resource(row), meta=meta), status=202,
                            headers={"Location": f"/api/v1/scheduled_actions/{row.id}"})


def _scheduled(schedule_id: str) -> ScheduledAction:
    if not is_id(schedule_id):
        raise NotFound(f"no scheduled action {schedule_id!r}")
    return service.get_scheduled(db.session, int(schedule_id))


@bp.get("/scheduled_actions")
def list_scheduled():
    """Scheduled actions (filter[status]=scheduled for those still waiting), soonest first."""
    query = parse_list_query(
        request.args,
        filters={"status": one_of(ScheduledAction.status, SCHEDULE_STATUSES),
                 "action": lambda v: ScheduledAction.action == v.strip()},
        sorts={"id": ScheduledAction.id, "not_before": ScheduledAction.not_before},
        default_sort=[ScheduledAction.not_before.asc(), ScheduledAction.id.asc()],
    )
    page = paginate(db.session, service.scheduled_query(), query)
    return jsonapi_response(list_document(page, [scheduled_action_resource(r) for r in page.items]))


@bp.get("/scheduled_actions/<schedule_id>")
def get_scheduled(schedule_id: str):
    """One scheduled action: its status and, once queued, the counts and command UUIDs."""
    refuse_query_params(request.args)
    return jsonapi_response(document(scheduled_action_resource(_scheduled(schedule_id))))


@bp.delete("/scheduled_actions/<schedule_id>")
def cancel_scheduled(schedule_id: str):
    """Cancel a scheduled action that has not been queued yet (409 once it has)."""
    row = service.cancel_scheduled(db.session, _scheduled(schedule_id))
    db.session.commit()
    return jsonapi_response(document(scheduled_action_resource(row)))


#: select_targets' body members → viability's query parameters
_QUERY_PARAMETER_OF = {"devices": "ids", "groups": "groups"}


@bp.get("/actions/<name>/viability")
def viability(name: str):
    """Ivanti's checkViability: ``?ids=`` (ids, UDIDs, serial numbers) and/or ``?groups=``."""
    return plain_response(_viability(name, _joined(request.args)))


@bp.get("/actions/<name>")
def check_viability(name: str):
    """Ivanti's own form of the viability check, on the action's path:
    ``?checkViability=true&ids=…`` (repeated ``ids=`` are joined): the answer of ``…/viability``."""
    args = _joined(request.args)
    flag = args.pop("checkViability", None)
    if flag is None:
        raise BadRequest("GET on an action checks its viability: give checkViability=true and ids= or groups=",
                         parameter="checkViability")
    if flag.strip().lower() != "true":
        raise BadRequest("checkViability must be true (to perform the action, POST to it)",
                         parameter="checkViability")
    return plain_response(_viability(name, args))


def _joined(args: Any) -> dict[str, str]:
    """Query parameters, a repeated one (Ivanti's ``ids=1&ids=2``) joined with commas: never dropped."""
    return {key: ",".join(values) for key, values in args.lists()}


def _viability(name: str, args: dict[str, str]) -> dict[str, Any]:
    action = service.get_action(name)
    query = load_query(ViabilityQuerySchema(), args)
    try:
        target = select_targets(db.session, devices=query.get("ids"), groups=query.get("groups"))
    except UnprocessableEntity as exc:
        # select_targets names the body member at fault; here the same lists came as query parameters
        fault = exc.errors[0] if exc.errors else {"detail": exc.detail, "pointer": exc.pointer}
        member = (fault.get("pointer") or "")[1:].partition("/")[0]
        raise BadRequest(fault["detail"], parameter=_QUERY_PARAMETER_OF.get(member, "ids")) from None
    return service.viability(db.session, action, target, version=query.get("version"))
