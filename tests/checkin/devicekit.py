"""Helpers shared by the device-protocol tests: a push topic and enrolled simulated devices."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from mdmserver.collaborators import secret_box
from mdmserver.pki import x509
from mdmserver.push import service as push_service

TOPIC = "com.apple.mgmt.External.5a0a7e2d-1111-4222-8333-944455556666"


def push_certificate_pem(topic: str = TOPIC) -> tuple[bytes, bytes]:
    """A self-signed stand-in for an APNs MDM certificate: its subject UID is the topic."""
    key = x509.generate_private_key()
    name = cx509.Name([
        cx509.NameAttribute(NameOID.USER_ID, topic),
        cx509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{uuid.uuid4()}"),
    ])
    now = dt.datetime.now(dt.UTC)
    cert = (
        cx509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(cx509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365)).sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def install_push_topic(session, monkeypatch: pytest.MonkeyPatch | None = None, topic: str = TOPIC) -> str:
    """Import a push certificate for ``topic`` through the push service and commit."""
    cert_pem, key_pem = push_certificate_pem(topic)
    push_service.import_push_certificate(session, cert_pem, key_pem, None, box=secret_box())
    session.commit()
    assert push_service.get_push_topic(session) == topic
    return topic
