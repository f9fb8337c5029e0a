"""Certificates and keys: metadata in JSON, material only through the download endpoints."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mdmserver.pki.models import Certificate


def test_certificates_list_is_metadata_only(client, auth):
    response = client.get("/api/v1/certificates", headers=auth("read"))
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "PRIVATE KEY" not in body and "BEGIN CERTIFICATE" not in body
    doc = response.get_json()
    purposes = {item["attributes"]["purpose"] for item in doc["data"]}
    assert {"ca", "server_identity"} <= purposes
    assert doc["meta"]["total"] >= 2


def test_certificates_filter_and_sort(client, auth):
    doc = client.get("/api/v1/certificates?filter[purpose]=ca&sort=-not_after", headers=auth("read")).get_json()
    assert [item["attributes"]["purpose"] for item in doc["data"]] == ["ca"]
    assert doc["data"][0]["attributes"]["is_ca"] is True


def test_private_keys_list_is_metadata_only(client, auth):
    response = client.get("/api/v1/rsa_private_keys", headers=auth("read"))
    assert response.status_code == 200
    assert "PRIVATE KEY" not in response.get_data(as_text=True)
    first = response.get_json()["data"][0]["attributes"]
    assert first["key_type"] == "rsa" and first["key_size"] == 2048 and "PUBLIC KEY" in first["public_key_pem"]


@pytest.mark.parametrize(
    "accept,mimetype,is_pem",
    [
        ("application/x-pem-file", "application/x-pem-file", True),
        ("application/x-x509-user-cert", "application/x-x509-user-cert", False),
        ("application/x-x509-ca-cert", "application/x-x509-ca-cert", False),
        (None, "application/x-pem-file", True),
    ],
)
def test_download_certificate(client, auth, accept, mimetype, is_pem):
    headers = auth("read")
    if accept:
        headers["Accept"] = accept
    response = client.get("/api/v1/download/certificates/1", headers=headers)
    assert response.status_code == 200
    assert response.mimetype == mimetype
    cert = (x509.load_pem_x509_certificate if is_pem else x509.load_der_x509_certificate)(response.data)
    assert "MDM CA" in cert.subject.rfc4514_string()


def test_download_certificate_406_and_404(client, auth):
    headers = auth("read")
    response = client.get("/api/v1/download/certificates/1", headers={**headers, "Accept": "text/html"})
    assert response.status_code == 406
    assert response.get_json()["meta"]["request_id"]
    assert client.get("/api/v1/download/certificates/999", headers=headers).status_code == 404


def test_download_private_key_pem_and_pkcs8(client, auth, db_session):
    headers = auth("secrets")
    cert_row = db_session.get(Certificate, 2)
    cert = x509.load_pem_x509_certificate(cert_row.pem_data.encode())
    key_id = cert_row.private_key_id
    pem = client.get(f"/api/v1/rsa_private_keys/{key_id}/download",
                     headers={**headers, "Accept": "application/x-pem-file"})
    assert pem.status_code == 200 and pem.mimetype == "application/x-pem-file"
    key = serialization.load_pem_private_key(pem.data, password=None)
    der = client.get(f"/api/v1/rsa_private_keys/{key_id}/download",
                     headers={**headers, "Accept": "application/pkcs8"})
    assert der.status_code == 200 and der.mimetype == "application/pkcs8"
    key2 = serialization.load_der_private_key(der.data, password=None)
    expected = cert.public_key().public_numbers()
    assert key.public_key().public_numbers() == expected == key2.public_key().public_numbers()
    bad = client.get(f"/api/v1/rsa_private_keys/{key_id}/download", headers={**headers, "Accept": "text/plain"})
    assert bad.status_code == 406
    assert client.get("/api/v1/rsa_private_keys/999/download", headers=headers).status_code == 404


def test_private_keys_are_encrypted_at_rest(db_session):
    from mdmserver.pki.models import RSAPrivateKey

    rows = db_session.execute(RSAPrivateKey.__table__.select()).all()
    assert rows
    for row in rows:
        assert b"PRIVATE KEY" not in row.encrypted_pem


def test_secret_key_file_is_private(app):
    import os
    import stat

    mode = stat.S_IMODE(os.stat(app.config["SECRET_KEY_FILE"]).st_mode)
    assert mode == 0o600
