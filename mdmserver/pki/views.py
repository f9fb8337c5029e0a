"""Certificates and private keys: JSON:API metadata, and the commandment download endpoints."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request
from sqlalchemy import select

from mdmserver.api.auth import requires_scope
from mdmserver.api.jsonapi import (
    document,
    jsonapi_response,
    list_document,
    paginate,
    parse_list_query,
)
from mdmserver.api.transactions import writes
from mdmserver.audit.service import record_event
from mdmserver.db import db
from mdmserver.errors import NotAcceptable
from mdmserver.pki import service, x509
from mdmserver.pki.models import Certificate, RSAPrivateKey
from mdmserver.pki.schemas import certificate_resource, private_key_resource

bp = Blueprint("pki", __name__, url_prefix="/api/v1")

CERTIFICATE_TYPES = ("application/x-pem-file", "application/x-x509-user-cert", "application/x-x509-ca-cert")
KEY_TYPES = ("application/x-pem-file", "application/pkcs8")


def _negotiate(offered: tuple[str, ...]) -> str:
    """The media type the client asked for; PEM when it did not say; 406 for anything else."""
    if not request.headers.get("Accept"):
        return offered[0]
    best = request.accept_mimetypes.best_match(offered)
    if best is None:
        raise NotAcceptable(f"Accept must be one of {', '.join(offered)}")
    return best


@bp.get("/certificates")
def list_certificates():
    query = parse_list_query(
        request.args,
        filters={
            "purpose": lambda v: Certificate.purpose == v,
            "x509_cn": lambda v: Certificate.common_name == v,
            "fingerprint_sha256": lambda v: Certificate.fingerprint_sha256 == v.lower(),
        },
        sorts={"id": Certificate.id, "not_after": Certificate.not_after, "x509_cn": Certificate.common_name},
        default_sort=(Certificate.id.asc(),),
    )
    page = paginate(db.session, select(Certificate), query)
    return jsonapi_response(list_document(page, [certificate_resource(c) for c in page.items]))


@bp.get("/certificates/<int:certificate_id>")
def get_certificate(certificate_id: int):
    return jsonapi_response(document(certificate_resource(service.get_certificate(db.session, certificate_id))))


@bp.get("/download/certificates/<int:certificate_id>")
def download_certificate(certificate_id: int):
    row = service.get_certificate(db.session, certificate_id)
    mimetype = _negotiate(CERTIFICATE_TYPES)
    if mimetype == "application/x-pem-file":
        body: bytes = row.pem_data.encode()
        extension = "pem"
    else:
        body = x509.cert_to_der(x509.cert_from_pem(row.pem_data))
        extension = "crt"
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="certificate-{row.id}.{extension}"'
    return response


@bp.get("/rsa_private_keys")
def list_private_keys():
    query = parse_list_query(
        request.args,
        filters={"key_type": lambda v: RSAPrivateKey.key_type == v},
        sorts={"id": RSAPrivateKey.id, "created_at": RSAPrivateKey.created_at},
        default_sort=(RSAPrivateKey.id.asc(),),
    )
    page = paginate(db.session, select(RSAPrivateKey), query)
    return jsonapi_response(list_document(page, [private_key_resource(k) for k in page.items]))


@bp.get("/rsa_private_keys/<int:key_id>")
def get_private_key(key_id: int):
    return jsonapi_response(document(private_key_resource(service.get_private_key(db.session, key_id))))



def _secret_box():
    """The app's secret box, as :func:`mdmserver.collaborators.secret_box` gives it to other views (pki
    cannot import ``collaborators``, which imports ``pki.service``: the two packages would import each
    other)."""
    return service.load_secret_box(current_app.config["SECRET_KEY_FILE"])


@bp.get("/rsa_private_keys/<int:key_id>/download")
@requires_scope("secrets")
@writes  # audited
def download_private_key(key_id: int):
    row = service.get_private_key(db.session, key_id)
    mimetype = _negotiate(KEY_TYPES)
    if mimetype == "application/pkcs8":
        body, extension = x509.key_to_pkcs8_der(service.load_private_key(row, _secret_box())), "p8"
    else:
        body, extension = service.private_key_pem(row, _secret_box()), "pem"
    record_event(db.session, "rsa_private_key:download", "rsa_private_keys", row.id, {"format": mimetype})
    db.session.commit()
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="private-key-{row.id}.{extension}"'
    return response
