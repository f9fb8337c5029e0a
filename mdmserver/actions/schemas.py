"""The bodies and query parameters of device actions: the views load them with these schemas, and the
OpenAPI document shows the same ones."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from mdmserver.actions.catalogue import ACTIONS, FLAT_ARGUMENTS, IGNORED_ARGUMENTS
from mdmserver.actions.models import ScheduledAction
from mdmserver.actions.windows import WEEKDAYS, parse_clock
from mdmserver.api.apidoc import (
    ApiDoc,
    Body,
    CommaList,
    IdField,
    NameField,
    Reply,
    StrictBoolean,
    listing,
)
from mdmserver.api.jsonapi import resource
from mdmserver.db import isoformat


def _flat_members() -> dict[str, fields.Field]:
    """The members an action body may carry beside ``parameters``: every action's own parameter names,
    ManageEngine's argument names and ``action_name``/``command_name``. Which of them the path's action
    takes is checked by ``actions.service.body_parameters`` (values too, by the action's schema)."""
    ours = {name for action in ACTIONS.values() if action.schema for name in action.schema().fields}
    described = {**{name: "a parameter of the action (see GET /api/v1/actions)" for name in ours},
                 **{name: "ManageEngine's argument: " + ", ".join(f"{ours_} of {action}" for action, ours_ in
                                                           sorted(targets.items()))
                    for name, targets in FLAT_ARGUMENTS.items()},
                 **{name: "ManageEngine's argument with no Apple equivalent: accepted, not sent, named in ignored"
                    for name in IGNORED_ARGUMENTS},
                 "action_name": "ManageEngine: the path's action (or its command name)",
                 "command_name": "ManageEngine: the path's action (or its command name, e.g. AssetScan)"}
    return {name: fields.Raw(allow_none=True, metadata={"description": text}) for name, text in sorted(described.items())}


#: the flat members of an action body, as a base schema
FlatActionMembers = Schema.from_dict(_flat_members(), name="FlatActionMembers")


def _zone(value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError("not an IANA time zone (Europe/Paris, America/New_York, UTC)") from None


def _clock(value: str) -> None:
    try:
        parse_clock(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class WindowSchema(Schema):
    """A maintenance window: the action runs only on these ``weekdays`` between the local ``start`` and
    ``end`` (HH:MM; a start after the end spans midnight) in ``time_zone``."""

    class Meta:
        unknown = RAISE

    weekdays = fields.List(fields.String(validate=validate.OneOf(WEEKDAYS)), required=True,
                           validate=validate.Length(min=1, max=7))
    start = fields.String(required=True, validate=_clock)
    end = fields.String(required=True, validate=_clock)
    time_zone = fields.String(required=True, validate=[validate.Length(max=64), _zone])

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data.get("start") == data.get("end"):
            raise ValidationError("start and end must differ", "end")


def _not_before() -> fields.Field:
    return fields.AwareDateTime(metadata={"description": "schedule: queue the action at or after this time "
                                                         "(ISO 8601 with a zone)"})


def _window() -> fields.Field:
    return fields.Nested(WindowSchema, metadata={"description": "schedule: queue it only inside this "
                                                                "maintenance window"})


#: the members of an action body that schedule it
SCHEDULE_MEMBERS = ("not_before", "window")


class PerformSchema(FlatActionMembers):
    """``{"parameters": {…}}``, the parameters as members of the body (ours or ManageEngine's:
    ``lock_message``, ``phone_number``, ``unlock_pin``, ``wipe_lock_pin``..., see
    ``actions.service.body_parameters``), or an empty body: one action on one device."""

    class Meta:
        unknown = RAISE

    parameters = fields.Dict(allow_none=True)
    not_before = _not_before()
    window = _window()


class BulkActionSchema(FlatActionMembers):
    """Which devices (any of ``devices``, ``groups``, ``filter``, ``all_devices``) and the action's
    parameters (``{"parameters": {…}}`` or flat members, as :class:`PerformSchema`; ManageEngine's
    ``command_name`` may repeat the path's). More devices than ``selection.resolve.MAX_NAMED_DEVICES`` is a
    422 at ``/devices``."""

    class Meta:
        unknown = RAISE

    devices = fields.List(NameField(), metadata={"description": "ids, UDIDs or serial numbers"},
                          error_messages={"invalid": "devices must be an array of ids, UDIDs or serial numbers"})
    groups = fields.List(IdField(), metadata={"description": "group ids"},
                         error_messages={"invalid": "groups must be an array of group ids"})
    filter = fields.Dict(keys=fields.String(), values=fields.Raw(), metadata={"description": "a device filter", "minProperties": 1},
                         validate=validate.Length(min=1, error="filter must be a non-empty object (use all_devices "
                                                                 "for every device)"))
    all_devices = StrictBoolean(load_default=False)
    parameters = fields.Dict(allow_none=True)
    not_before = _not_before()
    window = _window()

    @validates_schema
    def _names_devices(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if not data.get("all_devices") and all(data.get(k) is None for k in ("devices", "groups", "filter")):
            raise ValidationError("name the devices: devices, groups, filter or all_devices")


class ViabilityQuerySchema(Schema):
    """``?ids=`` and/or ``?groups=``: the devices whose viability is asked."""

    class Meta:
        unknown = RAISE

    ids = CommaList(NameField(), metadata={"description": "comma-separated device ids, UDIDs or serial numbers"})
    groups = CommaList(IdField(), metadata={"description": "comma-separated group ids"})
    version = fields.String(validate=validate.Length(min=1, max=32), metadata={
        "description": "update_os only: the OS version to update to (17.6); checked against the version the "
                       "device runs and the updates it reports in AvailableOSUpdates"})

    @validates_schema
    def _names_devices(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if "ids" not in data and "groups" not in data:
            raise ValidationError("give ids= or groups=", field_name="ids")


class CheckViabilityQuerySchema(ViabilityQuerySchema):
    """Ivanti's ``?checkViability=true&ids=…`` on the action's own path (documentation of the query)."""

    checkViability = fields.String(required=True, validate=validate.Equal("true"),
                                   metadata={"description": "true: check, do not perform"})


OPENAPI: dict[str, ApiDoc] = {
    "actions.list_actions": ApiDoc(type="actions", reply=Reply.COLLECTION),
    "actions.device_actions": ApiDoc(type="device_actions", reply=Reply.COLLECTION),
    "actions.perform_action": ApiDoc(body=PerformSchema, body_kind=Body.JSON, type="commands",
                                     reply=Reply.COLLECTION, status=202, errors=(409,)),
    "actions.bulk_action": ApiDoc(body=BulkActionSchema, body_kind=Body.JSON, reply=Reply.JSON),
    "actions.viability": ApiDoc(reply=Reply.JSON, query=ViabilityQuerySchema),
    "actions.check_viability": ApiDoc(reply=Reply.JSON, query=CheckViabilityQuerySchema),
    "actions.list_scheduled": listing("scheduled_actions", filters=("status", "action"), sorts=("id", "not_before")),
    "actions.get_scheduled": ApiDoc(type="scheduled_actions"),
    "actions.cancel_scheduled": ApiDoc(type="scheduled_actions", errors=(409,)),
}


def scheduled_action_resource(row: ScheduledAction) -> dict[str, Any]:
    """A scheduled action; its parameters are not shown (they may hold a PIN, and are kept sealed)."""
    return resource("scheduled_actions", row.id, {
        "action": row.action,
        "selection": row.selection,
        "not_before": isoformat(row.not_before),
        "window": row.window,
        "status": row.status,
        "result": row.result,
        "detail": row.detail,
        "created_by": row.created_by,
        "created_at": isoformat(row.created_at),
        "queued_at": isoformat(row.queued_at),
    }, links={"self": f"/api/v1/scheduled_actions/{row.id}"})
