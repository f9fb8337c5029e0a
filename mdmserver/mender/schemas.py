"""The Mender-compatible admission API's bodies (``service`` checks them; its errors are Mender's shape)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from mdmserver.api.apidoc import ApiDoc, Body, Reply


class AuthSetSchema(Schema):
    """A preauthorization or a submitted auth set: the device's identity and public key."""

    device_identity = fields.String(required=True, metadata={"description": "a JSON object as a string"})
    key = fields.String(required=True, metadata={"description": "the device's public key (PEM)"})
    device_id = fields.String()


class AuthSetStatusSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["accepted", "rejected"]))


_PAGING = {"page": "page number (from 1)", "per_page": "rows per page"}

OPENAPI: dict[str, ApiDoc] = {
    "mender.list_devices": ApiDoc(reply=Reply.JSON, query={**_PAGING, "status": "pending, accepted or rejected",
                                                          "device_id": "a device id"}),
    "mender.preauthorize": ApiDoc(body=AuthSetSchema, body_kind=Body.JSON, reply=Reply.JSON, status=201,
                                  errors=(409,)),
    "mender.get_device": ApiDoc(reply=Reply.JSON),
    "mender.submit": ApiDoc(body=AuthSetSchema, body_kind=Body.JSON, reply=Reply.EMPTY),
    "mender.decommission": ApiDoc(reply=Reply.EMPTY),
    "mender.get_status": ApiDoc(reply=Reply.JSON),
    "mender.set_status": ApiDoc(body=AuthSetStatusSchema, body_kind=Body.JSON, reply=Reply.JSON),
    "mender.list_preauthorizations": ApiDoc(reply=Reply.JSON, query=_PAGING),
    "mender.delete_preauthorization": ApiDoc(reply=Reply.EMPTY),
}
