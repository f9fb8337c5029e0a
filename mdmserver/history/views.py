"""``GET /api/v1/devices/<id>/commands``, ``GET /api/v1/commands``, latest command, cancel from the device path."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from mdmserver.api.jsonapi import (
    document,
    jsonapi_response,
    list_document,
    paginate,
    parse_list_query,
)
from mdmserver.audit.service import record_event
from mdmserver.commands.models import Command
from mdmserver.commands.schemas import command_resource, display_status
from mdmserver.db import db
from mdmserver.history import service
from mdmserver.inventory import service as inventory

bp = Blueprint("history", __name__, url_prefix="/api/v1")


def history_resource(command: Command, *, with_result: bool = False) -> dict[str, Any]:
    obj = command_resource(command, with_result=with_result)
    obj["attributes"]["remarks"] = service.remarks(command, display_status(command))
    return obj


def _history(device_id: int | None):
    filters = service.command_filters(db.session)
    if device_id is not None:
        filters.pop("device")
        filters.pop("group")
    query = parse_list_query(request.args, filters=filters, sorts=service.COMMAND_SORTS,
                             default_sort=[Command.id.desc()])
    page = paginate(db.session, service.commands_query(device_id), query)
    return jsonapi_response(list_document(page, [history_resource(c) for c in page.items]))


@bp.get("/commands")
def list_commands():
    """Commands across devices: filter by status, request_type, device, group, time, latest per device."""
    return _history(None)


@bp.get("/devices/<ident>/commands")
def device_commands(ident: str):
    """The device's command history with status life cycle, timestamps, who enqueued it and remarks."""
    return _history(inventory.get_device(db.session, ident).id)


@bp.get("/devices/<ident>/commands/latest")
def latest_command(ident: str):
    """The device's most recent command, with its result."""
    device = inventory.get_device(db.session, ident)
    return jsonapi_response(document(history_resource(service.latest_for_device(db.session, device),
                                                      with_result=True)))


@bp.delete("/devices/<ident>/commands/<command_uuid>")
def cancel_command(ident: str, command_uuid: str):
    """Cancel a queued command of this device (409 once sent)."""
    device = inventory.get_device(db.session, ident)
    command = service.cancel_for_device(db.session, device, command_uuid)
    record_event(db.session, "device:command:cancel", "commands", command.uuid, {"device_id": device.id})
    db.session.commit()
    return jsonapi_response(document(history_resource(command)))
