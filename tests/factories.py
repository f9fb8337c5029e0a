"""Factories shared by the tests of several packages (and by the benchmarks).

- Device rows, one or many set-based: they have not enrolled through the protocol (no identity
  certificate, no push token); they are inventory rows that behave like enrolled devices for the
  admin API.
- A push certificate (hence a topic), so that simulated devices can enroll and be pushed.
- A stored Wi-Fi profile, uploaded through the profile service.
- App catalogue rows (App Store or enterprise), inserted directly.

Helpers used by one package only stay in that package (``tests/<package>/helpers.py``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import plistlib
import secrets
import uuid
from typing import TYPE_CHECKING, Any

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from mdmserver.apps.models import App, AppSource, PackageKind
from mdmserver.collaborators import secret_box
from mdmserver.db import utcnow
from mdmserver.pki import x509 as px
from mdmserver.profiles.models import Profile
from mdmserver.profiles.service import upload_profile
from mdmserver.push import service as push_service
from mdmserver.records.devices import Device

if TYPE_CHECKING:
    import pytest

#: The push topic of the test push certificate (the subject UID of an APNs MDM certificate).
TOPIC = "com.apple.mgmt.External.0f0e0d0c-1111-4222-8333-944455556666"

_PROFILES = (
    ("ios", "iPhone15,2", "iPhone", "17.4"),
    ("ipados", "iPad13,4", "iPad", "17.3"),
    ("macos", "Mac14,2", "MacBook Air", "14.4"),
    ("ios", "iPhone14,7", "iPhone", "16.7"),
)
CHUNK = 10000


def device_row(index: int, **overrides: Any) -> dict[str, Any]:
    platform, product, model_name, os_version = _PROFILES[index % len(_PROFILES)]
    now = utcnow()
    row = {
        "udid": str(uuid.uuid4()).upper(),
        "serial_number": f"SEED{index:08d}",
        "platform": platform,
        "product_name": product,
        "model": product,
        "model_name": model_name,
        "os_version": os_version,
        "device_name": f"Device {index}",
        "admission_status": "accepted",
        "enrolled": True,
        "enrolled_at": now,
        "is_supervised": index % 3 != 0,
        "lost_mode_enabled": False,
        "awaiting_configuration": False,
        "created_at": now,
        "updated_at": now,
    }
    row.update(overrides)
    return row


def seed_devices(session: Session, count: int, *, start: int = 0, **overrides: Any) -> list[int]:
    """Insert ``count`` devices with ``executemany`` in chunks; returns their ids."""
    rows = [device_row(start + i, **overrides) for i in range(count)]
    for offset in range(0, len(rows), CHUNK):
        session.execute(insert(Device), rows[offset : offset + CHUNK])
    udids = [row["udid"] for row in rows]
    ids: list[int] = []
    for offset in range(0, len(udids), CHUNK):
        ids.extend(session.scalars(select(Device.id).where(Device.udid.in_(udids[offset : offset + CHUNK]))))
    return sorted(ids)


def make_device(session: Session, index: int = 0, **overrides: Any) -> Device:
    """One device row (ORM), flushed."""
    values = device_row(index, **overrides)
    if "serial_number" not in overrides:
        values["serial_number"] = f"T{uuid.uuid4().hex[:10].upper()}"
    device = Device(**values)
    session.add(device)
    session.flush()
    return device


def push_certificate(
    topic: str | None = TOPIC, *, days: int = 365, kind: str = "rsa", not_before_days: int = 1,
    public_key=None,
) -> tuple[cx509.Certificate, object]:
    """A self-signed stand-in for an APNs MDM push certificate (subject UID = topic) and its key.

    With ``public_key`` (the key of a push certificate request), the certificate carries that key, as
    the one Apple returns does, and is signed by the returned stand-in issuer key instead."""
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
        cx509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(public_key if public_key is not None else key.public_key())
        .serial_number(cx509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=not_before_days))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def push_certificate_pem(topic: str = TOPIC) -> tuple[bytes, bytes]:
    """``push_certificate`` as PEM: (certificate, unencrypted PKCS #8 key)."""
    cert, key = push_certificate(topic)
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


def make_wifi_profile(
    session: Session, identifier: str = "com.example.wifi", *, ssid: str = "Office",
    display_name: str = "Wi-Fi", replace: bool = False,
) -> Profile:
    """A one-payload Wi-Fi profile stored through the profile service, flushed (not committed)."""
    body = plistlib.dumps({
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": identifier,
        "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadDisplayName": display_name,
        "PayloadContent": [{"PayloadType": "com.apple.wifi.managed", "PayloadVersion": 1,
                            "PayloadIdentifier": f"{identifier}.p", "PayloadUUID": str(uuid.uuid4()).upper(),
                            "SSID_STR": ssid, "EncryptionType": "None", "AutoJoin": True}],
    })
    profile, _ = upload_profile(session, body, replace=replace, box=secret_box())
    session.flush()
    return profile


def make_app(
    session: Session, bundle_id: str | None = "com.example.notes", *, platform: str = "ios",
    enterprise: bool = True, version: str | None = "1.0", itunes_store_id: int | None = None, **overrides: Any,
) -> App:
    """A catalogue row, flushed. Enterprise: a made-up package (``.ipa`` on iOS, ``.pkg`` on macOS) with
    its SHA-256, size, one chunk hash and a download token; App Store: no package."""
    values: dict[str, Any] = {
        "source": AppSource.ENTERPRISE.value if enterprise else AppSource.STORE.value,
        "platform": platform, "bundle_id": bundle_id, "itunes_store_id": itunes_store_id,
        "name": f"App {bundle_id or itunes_store_id}", "version": version, "build_version": version,
        "download_token": secrets.token_urlsafe(32), "revision": 1,
    }
    if enterprise:
        digest = hashlib.sha256(f"{bundle_id}-{version}".encode()).hexdigest()
        values.update(
            package_kind=PackageKind.PKG.value if platform == "macos" else PackageKind.IPA.value,
            package_sha256=digest, package_size=1234, package_name=f"{bundle_id}.pkg",
            package_chunks={"size": 10 * 1024 * 1024, "sha256s": [digest]},
        )
    values.update(overrides)
    app = App(**values)
    session.add(app)
    session.flush()
    return app
