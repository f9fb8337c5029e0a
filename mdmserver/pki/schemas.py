"""JSON shapes of certificates and private keys: metadata only, never key material."""

from __future__ import annotations

from typing import Any

from mdmserver.api.apidoc import ApiDoc, Reply, listing
from mdmserver.api.jsonapi import resource
from mdmserver.db import isoformat
from mdmserver.pki.models import Certificate, RSAPrivateKey


def certificate_resource(row: Certificate) -> dict[str, Any]:
    return resource(
        "certificates",
        row.id,
        {
            "purpose": row.purpose,
            "subject": row.subject,
            "issuer": row.issuer,
            "x509_cn": row.common_name,
            "serial": row.serial,
            "not_before": isoformat(row.not_before),
            "not_after": isoformat(row.not_after),
            "fingerprint_sha256": row.fingerprint_sha256,
            "is_ca": row.is_ca,
            "created_at": isoformat(row.created_at),
            "revoked_at": isoformat(row.revoked_at),
        },
        relationships={
            "rsa_private_key": {
                "data": {"type": "rsa_private_keys", "id": str(row.private_key_id)} if row.private_key_id else None
            }
        },
        links={"download": f"/api/v1/download/certificates/{row.id}"},
    )


def private_key_resource(row: RSAPrivateKey) -> dict[str, Any]:
    return resource(
        "rsa_private_keys",
        row.id,
        {
            "key_type": row.key_type,
            "key_size": row.key_size,
            "public_key_pem": row.public_key_pem,
            "created_at": isoformat(row.created_at),
        },
        links={"download": f"/api/v1/rsa_private_keys/{row.id}/download"},
    )

OPENAPI: dict[str, ApiDoc] = {
    "pki.list_certificates": listing("certificates", filters=("purpose", "x509_cn", "fingerprint_sha256"),
                                     sorts=("id", "not_after", "x509_cn")),
    "pki.get_certificate": ApiDoc(type="certificates"),
    "pki.download_certificate": ApiDoc(reply=Reply.FILE, errors=(406,)),
    "pki.list_private_keys": listing("rsa_private_keys", filters=("key_type",), sorts=("id", "created_at")),
    "pki.get_private_key": ApiDoc(type="rsa_private_keys"),
    "pki.download_private_key": ApiDoc(reply=Reply.FILE, errors=(406,)),
}
