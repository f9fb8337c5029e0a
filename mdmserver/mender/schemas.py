"""The Mender-compatible admission API's bodies: the views load them with these schemas (a fault is a 400 in
Mender's error shape), and the OpenAPI document shows the same ones."""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from mdmserver.api.apidoc import ApiDoc, Body, NameField, Reply

_IDENTITY = "a JSON object as a string: udid, serial_number, model"


class PreauthorizationSchema(Schema):
    """A preauthorization: the device's identity (its udid and/or serial_number are preauthorized) and,
    optionally, its public key (checked, not stored: Apple devices get theirs at enrollment)."""

    class Meta:
        unknown = RAISE

    device_identity = fields.String(required=True, metadata={"description": _IDENTITY})
    key = fields.String(allow_none=True, metadata={"description": "the device's public key (PEM)"})


class AuthSetSchema(Schema):
    """A submitted auth set: the device's identity and public key."""

    class Meta:
        unknown = RAISE

    device_identity = fields.String(required=True, metadata={"description": _IDENTITY})
    key = fields.String(required=True, metadata={"description": "the device's public key (PEM)"})
    device_id = NameField(allow_none=True, metadata={"description": "the device's id, when known"})


class AuthSetStatusSchema(Schema):
    class Meta:
        unknown = RAISE

    status = fields.String(required=True, validate=validate.OneOf(["accepted", "rejected"]))


_PAGING = {"page": "page number (from 1)", "per_page": "rows per page"}

OPENAPI: dict[str, ApiDoc] = {
    "mender.list_devices": ApiDoc(reply=Reply.JSON, query={**_PAGING, "status": "pending, accepted or rejected",
                                                          "device_id": "a device id"}),
    "mender.preauthorize": ApiDoc(body=PreauthorizationSchema, body_kind=Body.JSON, reply=Reply.JSON, status=201,
                                  errors=(409,)),
    "mender.get_device": ApiDoc(reply=Reply.JSON),
    "mender.submit": ApiDoc(body=AuthSetSchema, body_kind=Body.JSON, reply=Reply.EMPTY),
    "mender.decommission": ApiDoc(reply=Reply.EMPTY),
    "mender.get_status": ApiDoc(reply=Reply.JSON),
    "mender.set_status": ApiDoc(body=AuthSetStatusSchema, body_kind=Body.JSON, reply=Reply.JSON),
    "mender.list_preauthorizations": ApiDoc(reply=Reply.JSON, query=_PAGING),
    "mender.delete_preauthorization": ApiDoc(reply=Reply.EMPTY),
}
