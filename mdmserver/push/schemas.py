"""JSON:API shapes of the push certificate, push requests and device push status."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from mdmserver.api.apidoc import ApiDoc, Body
from mdmserver.api.jsonapi import UTCField, resource


class PushCertificateSchema(Schema):
    topic = fields.String()
    subject = fields.String()
    issuer = fields.String()
    serial = fields.String()
    fingerprint_sha256 = fields.String()
    not_before = UTCField()
    not_after = UTCField()
    days_left = fields.Integer()
    warning = fields.String(allow_none=True)
    imported_at = UTCField()
    stopped_at = UTCField(allow_none=True)
    stop_reason = fields.String(allow_none=True)


class PushRequestSchema(Schema):
    device_id = fields.Integer()
    status = fields.String()
    reason = fields.String()
    created_at = UTCField()
    not_before = UTCField()
    attempts = fields.Integer()
    sent_at = UTCField(allow_none=True)
    apns_id = fields.String(allow_none=True)
    last_status = fields.Integer(allow_none=True)
    last_reason = fields.String(allow_none=True)


class DevicePushStatusSchema(Schema):
    has_token = fields.Boolean()
    token_valid = fields.Boolean()
    pushable = fields.Boolean()
    not_pushable_reason = fields.String(allow_none=True)
    last_push_at = UTCField(allow_none=True)
    last_status = fields.Integer(allow_none=True)
    last_reason = fields.String(allow_none=True)
    last_apns_id = fields.String(allow_none=True)
    token_invalid_at = UTCField(allow_none=True)
    pending_requests = fields.Integer()


_certificate = PushCertificateSchema()
_request = PushRequestSchema()
_status = DevicePushStatusSchema()


def certificate_resource(row_id: int, info: dict[str, Any]) -> dict[str, Any]:
    return resource("push_certificates", row_id, _certificate.dump(info))


def push_request_resource(row) -> dict[str, Any]:
    return resource("push_requests", row.id, _request.dump(row))


def push_status_resource(device_id: int, status: dict[str, Any]) -> dict[str, Any]:
    return resource("device_push_status", device_id, _status.dump(status))

class PushCertificateUploadSchema(Schema):
    """The push certificate upload: a PEM or PKCS#12 file, its key and password (or the raw file as the
    body, the password in ``X-Certificate-Password``)."""

    file = fields.Raw(required=True, metadata={"type": "string", "format": "binary"})
    key = fields.Raw(metadata={"type": "string", "format": "binary"})
    password = fields.String()


OPENAPI: dict[str, ApiDoc] = {
    "push.show_push_certificate": ApiDoc(type="push_certificates", reply_schema=PushCertificateSchema),
    "push.import_push_certificate": ApiDoc(body=PushCertificateUploadSchema, body_kind=Body.MULTIPART,
                                           type="push_certificates", reply_schema=PushCertificateSchema,
                                           query={"replace_topic": "true: accept a certificate for another "
                                                  "topic than the current one (every enrolled device must "
                                                  "re-enroll); without it that is a 409"},
                                           errors=(409, 422)),
    "push.push_device": ApiDoc(body_kind=Body.NONE, type="push_requests", status=202, reply_schema=PushRequestSchema,
                               errors=(409,)),
    "push.device_push_status": ApiDoc(type="device_push_status", reply_schema=DevicePushStatusSchema),
}
