"""The Mender-compatible admission API's bodies: the views load them with these schemas (a fault is a 400 in
Mender's error shape), and the OpenAPI document shows the same ones."""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from mdmserver.api.apidoc import ApiDoc, Body, IdField, NameField, Reply
from mdmserver.records.admission import AdmissionStatus

_IDENTITY = ("a JSON object of string attributes, as a string (at most 32 attributes, 4096 characters): any "
             "vendor attributes (Mender's example: mac, sku, sn); udid, serial_number (alias sn) name an Apple "
             "device and model its model")


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
    device_id = NameField(allow_none=True, metadata={"description": "the device's id (as this server shows it), "
                                                                    "when known"})
    id = fields.String(allow_none=True, metadata={"description": "the auth set's id: when given, the path's"})


class AuthSetStatusSchema(Schema):
    class Meta:
        unknown = RAISE

    status = fields.String(required=True, validate=validate.OneOf(["accepted", "rejected"]))


#: The auth set statuses Mender's API knows (``decommissioned`` is ours: it is never listed).
STATUSES = tuple(s.value for s in (AdmissionStatus.PENDING, AdmissionStatus.ACCEPTED, AdmissionStatus.REJECTED,
                                   AdmissionStatus.PREAUTHORIZED))
DEFAULT_PER_PAGE = 10  # the document's default
MAX_PER_PAGE = 500


class PagingQuerySchema(Schema):
    """Mender's ``?page=&per_page=``."""

    class Meta:
        unknown = RAISE

    page = IdField(load_default=1, validate=validate.Range(min=1), metadata={"description": "page number (from 1)"})
    per_page = IdField(load_default=DEFAULT_PER_PAGE, validate=validate.Range(min=1, max=MAX_PER_PAGE),
                       metadata={"description": f"rows per page (at most {MAX_PER_PAGE})"})


class AuthSetListQuerySchema(PagingQuerySchema):
    """The auth set list's query: paging, ``status`` and ``device_id``."""

    status = fields.String(validate=validate.OneOf(STATUSES), metadata={"description": ", ".join(STATUSES)})
    device_id = fields.String(metadata={"description": "a device id"})


OPENAPI: dict[str, ApiDoc] = {
    "mender.list_devices": ApiDoc(reply=Reply.JSON, query=AuthSetListQuerySchema),
    "mender.preauthorize": ApiDoc(body=PreauthorizationSchema, body_kind=Body.JSON, reply=Reply.JSON, status=201,
                                  errors=(409,)),
    "mender.get_device": ApiDoc(reply=Reply.JSON),
    "mender.submit": ApiDoc(body=AuthSetSchema, body_kind=Body.JSON, reply=Reply.EMPTY),
    "mender.decommission": ApiDoc(reply=Reply.EMPTY),
    "mender.get_status": ApiDoc(reply=Reply.JSON),
    "mender.set_status": ApiDoc(body=AuthSetStatusSchema, body_kind=Body.JSON, reply=Reply.JSON),
    "mender.list_preauthorizations": ApiDoc(reply=Reply.JSON, query=PagingQuerySchema),
    "mender.delete_preauthorization": ApiDoc(reply=Reply.EMPTY),
}
