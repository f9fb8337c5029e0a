"""The bodies and query parameters of device actions: the views load them with these schemas, and the
OpenAPI document shows the same ones."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from mdmserver.api.apidoc import ApiDoc, Body, CommaList, IdField, NameField, Reply, StrictBoolean


class PerformSchema(Schema):
    """``{"parameters": {…}}`` or an empty body: one action on one device."""

    class Meta:
        unknown = RAISE

    parameters = fields.Dict(load_default=None, allow_none=True)


class BulkActionSchema(Schema):
    """Which devices (any of ``devices``, ``groups``, ``filter``, ``all_devices``) and the action's
    parameters. More devices than ``selection.resolve.MAX_NAMED_DEVICES`` is a 422 at ``/devices``."""

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
    parameters = fields.Dict(load_default=None, allow_none=True)

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
