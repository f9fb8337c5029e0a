"""The bodies and query parameters of device actions: the views load them with these schemas, and the
OpenAPI document shows the same ones."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from mdmserver.actions.catalogue import ACTIONS, FLAT_ARGUMENTS, IGNORED_ARGUMENTS
from mdmserver.api.apidoc import ApiDoc, Body, CommaList, IdField, NameField, Reply, StrictBoolean


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


class PerformSchema(FlatActionMembers):
    """``{"parameters": {…}}``, the parameters as members of the body (ours or ManageEngine's:
    ``lock_message``, ``phone_number``, ``unlock_pin``, ``wipe_lock_pin``..., see
    ``actions.service.body_parameters``), or an empty body: one action on one device."""

    class Meta:
        unknown = RAISE

    parameters = fields.Dict(allow_none=True)


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
}
