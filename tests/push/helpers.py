"""Factories for push tests: push certificates and pushable devices."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from mdmserver.db import utcnow
from mdmserver.devices.models import Device
from mdmserver.pki import x509 as px

TOPIC = "com.apple.mgmt.External.0f0e0d0c-1111-4222-8333-944455556666"


def push_certificate(
    topic: str | None = TOPIC, *, days: int = 365, kind: str = "rsa", not_before_days: int = 1
) -> tuple[cx509.Certificate, object]:
    """A self-signed stand-in for an APNs MDM push certificate (subject UID = topic)."""
    key = px.generate_private_key(kind)
    attributes = []
    if topic is not None:
        attributes.append(cx509.NameAttribute(NameOID.USER_ID, topic))
    attributes += [
        cx509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{uuid.uuid4()}"),
        cx509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
    ]
    name = cx509.Name(attributes)
    now = dt.datetime.now(dt.UTC)
    cert = (
        cx509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(cx509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=not_before_days))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_device(session, **overrides) -> Device:
    """An enrolled, accepted device with a push token (pushable), unless overridden."""
    now = utcnow()
    values = {
        "udid": secrets.token_hex(20).upper(),
        "serial_number": secrets.token_hex(6).upper(),
        "platform": "ios",
        "topic": TOPIC,
        "admission_status": "accepted",
        "enrolled": True,
        "enrolled_at": now,
        "push_token": secrets.token_bytes(32),
        "push_magic": str(uuid.uuid4()).upper(),
        "token_updated_at": now - dt.timedelta(minutes=1),
    }
    values.update(overrides)
    device = Device(**values)
    session.add(device)
    session.flush()
    return device


def make_devices(session, count: int, **overrides) -> list[int]:
    """Many pushable devices, inserted set-based; returns their ids."""
    from sqlalchemy import insert, select

    now = utcnow()
    prefix = secrets.token_hex(4).upper()
    rows = [
        {
            "udid": f"{prefix}-{i:08d}",
            "platform": "ios",
            "topic": TOPIC,
            "admission_status": "accepted",
            "enrolled": True,
            "push_token": secrets.token_bytes(32),
            "push_magic": f"MAGIC-{i}",
            "token_updated_at": now - dt.timedelta(minutes=1),
            "awaiting_configuration": False,
            "created_at": now,
            "updated_at": now,
            **overrides,
        }
        for i in range(count)
    ]
    for start in range(0, len(rows), 5000):
        session.execute(insert(Device), rows[start : start + 5000])
    return list(session.scalars(select(Device.id).where(Device.udid.like(f"{prefix}-%")).order_by(Device.id)))
