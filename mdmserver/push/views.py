"""Push certificate (GET info, PUT import), push a device now, a device's push status."""

from __future__ import annotations

import logging

from flask import Blueprint, request

from mdmserver.api.auth import requires_scope
from mdmserver.api.jsonapi import document, jsonapi_response
from mdmserver.audit.service import record_event
from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.errors import BadRequest
from mdmserver.ops import metrics, readiness
from mdmserver.push import service
from mdmserver.push.schemas import certificate_resource, push_request_resource, push_status_resource
from mdmserver.selection.resolve import get_device

bp = Blueprint("push", __name__, url_prefix="/api/v1")
log = logging.getLogger("mdmserver.push")

#: Header carrying the PKCS#12 / key password when the certificate is sent as a raw body.
PASSWORD_HEADER = "X-Certificate-Password"

NO_PUSH_CERTIFICATE = readiness.Advisory(
    "not configured: no push certificate, devices cannot be woken; `mdmserver push-cert request`, then "
    "`mdmserver push-cert import` (docs/push-certificate.md)")


def _apns_readiness(session) -> str | None:
    """Never ``ok`` without a push certificate (an advisory: the server stays ready to be set up)."""
    if service.get_active_certificate(session) is None:
        return NO_PUSH_CERTIFICATE
    return service.push_readiness(session)


readiness.register_check("apns", _apns_readiness)


class _PushMetrics:
    """Renders the push counters, which live in the database because workers are separate processes."""

    name = "mdmserver_push"

    def render(self) -> list[str]:
        try:
            return service.metrics_lines(db.session)
        except Exception:  # noqa: BLE001 — a metrics scrape must not fail because of one collector
            db.session.rollback()
            log.exception("push metrics unavailable")
            return []


metrics.register_collector(_PushMetrics())


@bp.get("/push_certificate")
def show_push_certificate():
    """The active push certificate: topic, subject, expiry, days left (a warning under 30 days)."""
    row = service.require_active_certificate(db.session)
    info = service.certificate_info(row)
    meta = {"warning": info["warning"]} if info["warning"] else None
    return jsonapi_response(document(certificate_resource(row.id, info), meta=meta))


_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


def _replace_topic() -> bool:
    """The ``replace_topic`` query parameter: true accepts a certificate for another topic."""
    for name in request.args:
        if name != "replace_topic":
            raise BadRequest(f"unknown query parameter {name!r}", parameter=name)
    raw = (request.args.get("replace_topic") or "false").lower()
    if raw not in _TRUE | _FALSE:
        raise BadRequest(f"replace_topic must be true or false, not {raw!r}", parameter="replace_topic")
    return raw in _TRUE


def _upload() -> tuple[bytes, bytes | None, bytes | None]:
    """(certificate data, key data, password) from multipart fields or a raw body."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise BadRequest("the multipart field 'file' is missing", parameter="file")
        key_part = request.files.get("key")
        key = key_part.read() if key_part is not None else (request.form.get("key") or "").encode() or None
        password = request.form.get("password")
        return upload.read(), key, password.encode() if password else None
    data = request.get_data(cache=False)
    if not data:
        raise BadRequest(
            "send the certificate as multipart/form-data (fields file, key, password) or as the raw "
            "PEM / PKCS#12 body"
        )
    password = request.headers.get(PASSWORD_HEADER)
    return data, None, password.encode() if password else None


@bp.put("/push_certificate")
@requires_scope("admin")
def import_push_certificate():
    """Import (or renew) the APNs push certificate: PEM cert+key, PKCS#12, or the certificate alone when
    it answers `mdmserver push-cert request`; effective at once. A certificate for another topic than
    the current one is a 409 unless ``replace_topic=true`` (every enrolled device must then re-enroll)."""
    replace_topic = _replace_topic()
    data, key, password = _upload()
    row = service.import_push_certificate(db.session, data, key, password, box=secret_box(),
                                          replace_topic=replace_topic)
    record_event(
        db.session, "push_certificate:import", "push_certificates", row.id,
        {"topic": row.topic, "not_after": row.not_after.isoformat(), "fingerprint_sha256": row.fingerprint_sha256},
    )
    db.session.commit()
    info = service.certificate_info(row)
    meta = {"warning": info["warning"]} if info["warning"] else None
    return jsonapi_response(document(certificate_resource(row.id, info), meta=meta))


@bp.post("/devices/<ident>/push")
def push_device(ident: str):
    """Push the device now (202): it checks in and fetches its queued commands."""
    device = get_device(db.session, ident)
    row = service.push_now(db.session, device.id)
    record_event(db.session, "device:push", "devices", device.id, {"push_request_id": row.id})
    db.session.commit()
    return jsonapi_response(document(push_request_resource(row)), status=202)


@bp.get("/devices/<ident>/push")
def device_push_status(ident: str):
    """The device's push status: last push, its result, whether its token is valid."""
    device = get_device(db.session, ident)
    return jsonapi_response(document(push_status_resource(device.id, service.device_push_status(db.session, device.id))))
