"""The bodies of device actions, for the OpenAPI document (``service.targets_from_body`` and the views
check them, with the error pointers the tests pin)."""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields

from mdmserver.api.apidoc import ApiDoc, Body, Reply

_NAME = {"oneOf": [{"type": "string"}, {"type": "integer"}]}


class PerformSchema(Schema):
    """``{"parameters": {…}}`` or an empty body: one action on one device."""

    class Meta:
        unknown = RAISE

    parameters = fields.Dict(allow_none=True)


class BulkActionSchema(Schema):
    """Which devices (any of ``devices``, ``groups``, ``filter``, ``all_devices``) and the action's
    parameters."""

    class Meta:
        unknown = RAISE

    devices = fields.List(fields.Raw(metadata=_NAME), metadata={"description": "ids, UDIDs or serial numbers"})
    groups = fields.List(fields.Raw(metadata=_NAME), metadata={"description": "group ids"})
    filter = fields.Dict(keys=fields.String(), values=fields.Raw(), metadata={"description": "a device filter"})
    all_devices = fields.Boolean()
    parameters = fields.Dict(allow_none=True)


OPENAPI: dict[str, ApiDoc] = {
    "actions.list_actions": ApiDoc(type="actions", reply=Reply.COLLECTION),
    "actions.device_actions": ApiDoc(type="device_actions", reply=Reply.COLLECTION),
    "actions.perform_action": ApiDoc(body=PerformSchema, body_kind=Body.JSON, type="commands",
                                     reply=Reply.COLLECTION, status=202, errors=(409,)),
    "actions.bulk_action": ApiDoc(body=BulkActionSchema, body_kind=Body.JSON, reply=Reply.JSON),
    "actions.viability": ApiDoc(reply=Reply.JSON, query={
        "ids": "comma-separated device ids, UDIDs or serial numbers",
        "groups": "comma-separated group ids"}),
}
