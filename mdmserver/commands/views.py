"""Admin endpoints for commands: enqueue (JSON:API and commandment's compatible routes), the history
across devices and per device, one command, cancel (from either path)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from mdmserver.api.auth import current_actor, may_read_secrets, requires_scope
from mdmserver.api.jsonapi import (
    document,
    has_body,
    jsonapi_response,
    list_document,
    load_attributes,
    paginate,
    parse_attributes_body,
    parse_list_query,
)
from mdmserver.api.transactions import writes
from mdmserver.audit.service import record_event
from mdmserver.collaborators import secret_box
from mdmserver.commands import queries, service
from mdmserver.commands.schemas import EnqueueSchema, command_resource, display_status
from mdmserver.db import db
from mdmserver.pki.secretbox import SecretBox
from mdmserver.protocol.catalogue import get_spec
from mdmserver.records.commands import Command
from mdmserver.selection.resolve import get_device

bp = Blueprint("commands", __name__)

#: what commandment's test route queues when no body names a command: a command every platform answers
TEST_COMMAND = "DeviceInformation"
INVENTORY_SET = ("DeviceInformation", "SecurityInfo", "ProfileList", "InstalledApplicationList", "CertificateList")


def _enqueue_body() -> tuple[dict, str]:
    """Accept ``{"data": {"type": "commands", "attributes": {...}}}`` or a plain ``{request_type, …}``."""
    attributes, base = parse_attributes_body(None, "commands")
    return load_attributes(EnqueueSchema(), attributes, "command", base), base


def _resource(command: Command, *, with_result: bool = False, reveal: bool = False, box: SecretBox) -> dict[str, Any]:
    """The command's resource; secret values of its parameters and result are ``[redacted]`` unless
    ``reveal`` (a token with the ``secrets`` scope reading one command)."""
    return command_resource(
        command, parameters=service.public_parameters(command, reveal=reveal, box=box),
        result=service.public_result(command, reveal=reveal, box=box) if with_result else None,
        with_result=with_result,
    )


def _created(commands: list, status: int = 201):
    box = secret_box()
    data = [_resource(c, box=box) for c in commands]
    headers = {"Location": f"/api/v1/commands/{commands[0].uuid}"} if len(commands) == 1 else None
    return jsonapi_response(document(data[0] if len(data) == 1 else data), status=status, headers=headers)


def _enqueue_one(device, request_type: str, parameters, *, priority=0, expires_at=None, base="/data/attributes"):
    command = service.enqueue_for_device(
        db.session, device, request_type, parameters, enqueued_by=current_actor(), priority=priority,
        expires_at=expires_at, pointer_base=base, box=secret_box(),
    )
    record_event(db.session, f"device:command:{request_type.lower()}", "devices", device.id,
                 {"command_uuid": command.uuid, "request_type": request_type})
    return command


@bp.post("/api/v1/devices/<ident>/commands")
def enqueue(ident: str):
    device = get_device(db.session, ident)
    body, base = _enqueue_body()
    command = _enqueue_one(device, body["request_type"], body["parameters"], priority=body["priority"],
                           expires_at=body["expires_at"], base=base)
    db.session.commit()
    return _created([command])


@bp.post("/api/v1/devices/test/<ident>")
def test_command(ident: str):
    """Commandment's quick command check: without a body (and without a Content-Type) it queues
    ``TEST_COMMAND``; a body that is sent is the enqueue body of ``POST /api/v1/devices/<id>/commands``
    and is checked as there."""
    device = get_device(db.session, ident)
    if not has_body():
        command = _enqueue_one(device, TEST_COMMAND, None)
    else:
        body, base = _enqueue_body()
        command = _enqueue_one(device, body["request_type"], body["parameters"], priority=body["priority"],
                               expires_at=body["expires_at"], base=base)
    db.session.commit()
    return _created([command])


@bp.route("/api/v1/devices/inventory/<ident>", methods=["GET", "POST"])
@requires_scope("write")
@writes
def inventory(ident: str):
    """Commandment's inventory refresh: queue the inventory command set."""
    device = get_device(db.session, ident)
    commands = [_enqueue_one(device, request_type, None) for request_type in INVENTORY_SET
                if _applicable(device, request_type)]
    db.session.commit()
    return _created(commands, status=202)


def _applicable(device, request_type: str) -> bool:
    return get_spec(request_type).applies_to(device.platform, device.is_supervised)[0]


@bp.route("/api/v1/devices/<ident>/clear_passcode", methods=["GET", "POST"])
@requires_scope("write")
@writes
def clear_passcode(ident: str):
    device = get_device(db.session, ident)
    command = _enqueue_one(device, "ClearPasscode", {})
    db.session.commit()
    return _created([command], status=202)


@bp.get("/api/v1/commands/<command_uuid>")
def show(command_uuid: str):
    """One command with its result. Secret values of its parameters and result (InstallProfile's
    profile, PINs, passwords, the Activation Lock bypass code, FileVault keys) are ``[redacted]``
    unless the token has the ``secrets`` scope."""
    command = service.get_command(db.session, command_uuid)
    reveal = may_read_secrets()
    if reveal and (service.is_sealed(command.parameters) or service.is_sealed(command.result)):
        record_event(db.session, "command:secrets:read", "commands", command.uuid,
                     {"device_id": command.device_id, "request_type": command.request_type})
        db.session.commit()
    return jsonapi_response(document(_resource(command, with_result=True, reveal=reveal, box=secret_box())))


@bp.delete("/api/v1/commands/<command_uuid>")
@bp.delete("/api/v1/devices/<ident>/commands/<command_uuid>")
def cancel(command_uuid: str, ident: str | None = None):
    """Cancel a queued command (from the device path: only that device's); 409 once sent."""
    device_id = get_device(db.session, ident).id if ident is not None else None
    command = service.cancel_command(db.session, command_uuid, device_id=device_id)
    record_event(db.session, "command:cancel", "commands", command.uuid,
                 {"device_id": command.device_id, "request_type": command.request_type})
    db.session.commit()
    return jsonapi_response(document(history_resource(command)))


# --- history --------------------------------------------------------------------------------------


def history_resource(command: Command, *, with_result: bool = False) -> dict[str, Any]:
    obj = _resource(command, with_result=with_result, box=secret_box())
    obj["attributes"]["remarks"] = queries.remarks(command, display_status(command))
    return obj


def _history(device_id: int | None):
    filters = queries.command_filters(db.session)
    if device_id is not None:
        filters.pop("device")
        filters.pop("group")
    query = parse_list_query(request.args, filters=filters, sorts=queries.COMMAND_SORTS,
                             default_sort=[Command.id.desc()])
    page = paginate(db.session, queries.commands_query(device_id), query)
    return jsonapi_response(list_document(page, [history_resource(c) for c in page.items]))


@bp.get("/api/v1/commands")
def list_commands():
    """Commands across devices: filter by status, request_type, device, group, time, latest per device."""
    return _history(None)


@bp.get("/api/v1/devices/<ident>/commands")
def device_commands(ident: str):
    """The device's command history with status life cycle, timestamps, who enqueued it and remarks."""
    return _history(get_device(db.session, ident).id)


@bp.get("/api/v1/devices/<ident>/commands/latest")
def latest_command(ident: str):
    """The device's most recent command, with its result."""
    device = get_device(db.session, ident)
    return jsonapi_response(document(history_resource(queries.latest_for_device(db.session, device),
                                                      with_result=True)))
