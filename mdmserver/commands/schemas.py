"""Command serialisation and the enqueue body."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from mdmserver.api.apidoc import ApiDoc, Body, Reply, listing
from mdmserver.api.jsonapi import resource
from mdmserver.db import isoformat, utcnow
from mdmserver.records.commands import ACTIVE_STATUSES, Command, CommandStatus


class EnqueueSchema(Schema):
    """``{request_type, parameters, priority?, expires_at?}`` (as attributes or a plain object)."""

    class Meta:
        unknown = RAISE

    request_type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    parameters = fields.Dict(load_default=None, allow_none=True)
    priority = fields.Integer(load_default=0, strict=True, validate=validate.Range(min=-100, max=100))
    expires_at = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=None)

    @validates("expires_at")
    def _storable(self, value: datetime | None, **_kwargs) -> None:
        """A time whose UTC value is outside the years 1 to 9999 cannot be stored (it was a 500)."""
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValidationError("expires_at is outside the years 1 to 9999 in UTC") from None


def display_status(command: Command) -> str:
    """The status as the API shows it (an active command past its expiry shows ``expired``)."""
    if (
        command.status in {s.value for s in ACTIVE_STATUSES}
        and command.expires_at is not None
        and command.expires_at <= utcnow()
    ):
        return CommandStatus.EXPIRED.value
    return command.status


def command_attributes(
    command: Command, *, parameters: dict[str, Any], result: dict[str, Any] | None = None, with_result: bool = False
) -> dict:
    """The command's attributes, given its parameters and result as they may be shown (secret values
    ``[redacted]`` unless a ``secrets`` token reads one command: ``service.public_parameters`` and
    ``service.public_result`` decide)."""
    attributes = {
        "uuid": command.uuid,
        "device_id": command.device_id,
        "request_type": command.request_type,
        "parameters": parameters,
        "priority": command.priority,
        "status": display_status(command),
        "enqueued_by": command.enqueued_by,
        "attempts": command.attempts,
        "created_at": isoformat(command.created_at),
        "sent_at": isoformat(command.sent_at),
        "completed_at": isoformat(command.completed_at),
        "expires_at": isoformat(command.expires_at),
        "error_chain": command.error_chain,
    }
    if with_result:
        attributes["result"] = result
    return attributes


def command_resource(
    command: Command, *, parameters: dict[str, Any], result: dict[str, Any] | None = None, with_result: bool = False
) -> dict:
    return resource(
        "commands", command.uuid,
        command_attributes(command, parameters=parameters, result=result, with_result=with_result),
        relationships={"device": {"data": {"type": "devices", "id": str(command.device_id)}}},
        links={"self": f"/api/v1/commands/{command.uuid}"},
    )


_HISTORY = ("status", "request_type", "device", "group", "enqueued_by", "created_after", "created_before",
            "completed_after", "completed_before", "latest")
_SORTS = ("id", "created_at", "sent_at", "completed_at", "status", "request_type", "device_id")

OPENAPI: dict[str, ApiDoc] = {
    "commands.enqueue": ApiDoc(body=EnqueueSchema, type="commands", plain_too=True, status=201, errors=(409,)),
    "commands.test_command": ApiDoc(body=EnqueueSchema, type="commands", plain_too=True, body_optional=True,
                                    status=201, errors=(409,)),
    "commands.inventory": ApiDoc(body_kind=Body.NONE, type="commands", reply=Reply.COLLECTION, status=202),
    "commands.clear_passcode": ApiDoc(body_kind=Body.NONE, type="commands", status=202, errors=(409,)),
    "commands.show": ApiDoc(type="commands"),
    "commands.cancel": ApiDoc(type="commands", errors=(409,)),
    "commands.list_commands": listing("commands", filters=_HISTORY, sorts=_SORTS),
    "commands.device_commands": listing("commands", filters=tuple(f for f in _HISTORY if f not in ("device", "group")),
                                       sorts=_SORTS),
    "commands.latest_command": ApiDoc(type="commands"),
}
