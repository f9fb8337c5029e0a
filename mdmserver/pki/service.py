"""The server's certificate authority, its signing identity and the secrets at rest."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from cryptography import x509 as cx509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import CompoundSelect, Select, and_, select, update
from sqlalchemy.orm import Session

from mdmserver.db import delete_in_batches, utcnow
from mdmserver.errors import NotFound, ServiceUnavailable
from mdmserver.pki import x509
from mdmserver.pki.models import Certificate, RSAPrivateKey
from mdmserver.pki.secretbox import SecretBox

PURPOSE_CA = "ca"
PURPOSE_SERVER = "server_identity"
PURPOSE_DEVICE = "device_identity"
#: the key of an APNs push certificate request, waiting for the certificate Apple returns
KEY_PURPOSE_PUSH_REQUEST = "push_request"
#: lifetime of a device's enrollment identity certificate (PKCS#12 or SCEP)
DEVICE_IDENTITY_DAYS = 365 * 2


def device_common_name(enrollment_id: str) -> str:
    """The common name of the identity certificate issued for one enrollment."""
    return f"mdmserver device {enrollment_id}"


@functools.cache
def load_secret_box(path: str) -> SecretBox:
    """The secret box keyed by this key file (created on first use, mode 0600), one per path.

    Only the entry floor calls this (``mdmserver.collaborators.secret_box``, the CLI, ``init``); the
    services below receive the box as an argument."""
    return SecretBox.load_or_create(Path(path))


def store_private_key(session: Session, key, box: SecretBox, *, purpose: str | None = None) -> RSAPrivateKey:
    """Encrypt and store a private key (``purpose`` for a key that has no certificate yet)."""
    if isinstance(key, rsa.RSAPrivateKey):
        key_type, size = "rsa", key.key_size
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        key_type, size = "ec", key.curve.key_size
    else:
        raise TypeError(f"unsupported key type {type(key).__name__}")
    row = RSAPrivateKey(
        key_type=key_type,
        key_size=size,
        encrypted_pem=box.encrypt(x509.key_to_pem(key).encode()),
        public_key_pem=x509.public_key_pem(key),
        purpose=purpose,
    )
    session.add(row)
    session.flush()
    return row


def find_private_key(session: Session, public_key_pem: str, purpose: str) -> RSAPrivateKey | None:
    """The newest stored key for ``purpose`` whose public half is ``public_key_pem`` (SubjectPublicKeyInfo PEM)."""
    return session.scalar(
        select(RSAPrivateKey)
        .where(RSAPrivateKey.purpose == purpose, RSAPrivateKey.public_key_pem == public_key_pem)
        .order_by(RSAPrivateKey.id.desc())
        .limit(1)
    )


def load_private_key(row: RSAPrivateKey, box: SecretBox):
    """The stored key, opened with ``box`` on every call (a wrong box still fails); the parsed key is
    kept per process, because parsing checks the RSA key (about 90 ms here) and the CA and server
    identity keys are loaded by every enrollment."""
    return _parsed_key(box.decrypt(row.encrypted_pem))


@functools.lru_cache(maxsize=64)
def _parsed_key(pem: bytes):
    return x509.key_from_pem(pem)


def private_key_pem(row: RSAPrivateKey, box: SecretBox) -> bytes:
    return box.decrypt(row.encrypted_pem)


def store_certificate(
    session: Session, cert: cx509.Certificate, purpose: str, key_row: RSAPrivateKey | None = None, *,
    renews_udid: str | None = None,
) -> Certificate:
    fingerprint = x509.fingerprint_sha256(cert)
    existing = session.scalar(select(Certificate).where(Certificate.fingerprint_sha256 == fingerprint))
    if existing is not None:
        return existing
    common_names = cert.subject.get_attributes_for_oid(cx509.NameOID.COMMON_NAME)
    try:
        is_ca = cert.extensions.get_extension_for_class(cx509.BasicConstraints).value.ca
    except cx509.ExtensionNotFound:
        is_ca = False
    row = Certificate(
        purpose=purpose,
        subject=x509.subject_string(cert),
        issuer=cert.issuer.rfc4514_string(),
        common_name=str(common_names[0].value) if common_names else None,
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=fingerprint,
        pem_data=x509.cert_to_pem(cert),
        is_ca=is_ca,
        private_key=key_row,
        renews_udid=renews_udid,
    )
    session.add(row)
    session.flush()
    return row


def device_certificate(session: Session, fingerprint: str) -> Certificate | None:
    """The enrollment identity certificate with this fingerprint, unless it was revoked."""
    return session.scalar(
        select(Certificate).where(
            Certificate.fingerprint_sha256 == fingerprint,
            Certificate.purpose == PURPOSE_DEVICE,
            Certificate.revoked_at.is_(None),
        )
    )


def is_valid_device_certificate(session: Session, fingerprint: str, now: datetime) -> bool:
    """True when the certificate is a device identity we issued, not revoked and not expired."""
    row = device_certificate(session, fingerprint)
    return row is not None and row.not_before <= now <= row.not_after


def revoke_certificates(session: Session, fingerprints: Iterable[str | None]) -> int:
    """Revoke device identity certificates (one UPDATE); returns how many were newly revoked."""
    wanted = sorted({f for f in fingerprints if f})
    if not wanted:
        return 0
    result = session.execute(
        update(Certificate)
        .where(
            Certificate.fingerprint_sha256.in_(wanted),
            Certificate.purpose == PURPOSE_DEVICE,
            Certificate.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    return result.rowcount or 0


def _current(session: Session, purpose: str) -> Certificate | None:
    return session.scalar(
        select(Certificate).where(Certificate.purpose == purpose).order_by(Certificate.id.desc()).limit(1)
    )


def ensure_ca_and_identity(
    session: Session, organization_name: str, box: SecretBox
) -> tuple[Certificate, Certificate]:
    """Create the CA and the server identity if missing (idempotent); return both rows."""
    ca_row = _current(session, PURPOSE_CA)
    if ca_row is None:
        ca_cert, ca_key = x509.create_ca(f"{organization_name} MDM CA", organization=organization_name)
        ca_row = store_certificate(session, ca_cert, PURPOSE_CA, store_private_key(session, ca_key, box))
    server_row = _current(session, PURPOSE_SERVER)
    if server_row is None:
        ca_cert = x509.cert_from_pem(ca_row.pem_data)
        ca_key = load_private_key(ca_row.private_key, box)
        key = x509.generate_private_key()
        cert = x509.issue_certificate(
            ca_cert, ca_key, common_name=f"{organization_name} MDM Server", public_key=key.public_key(),
            days=3 * 365, usage="signing", organization=organization_name,
        )
        server_row = store_certificate(session, cert, PURPOSE_SERVER, store_private_key(session, key, box))
    return ca_row, server_row


def _required(session: Session, purpose: str) -> Certificate:
    row = _current(session, purpose)
    if row is None or row.private_key is None:
        raise ServiceUnavailable("the server is not initialised: run `mdmserver init`")
    return row


def _material(session: Session, purpose: str, box: SecretBox):
    row = _required(session, purpose)
    return x509.cert_from_pem(row.pem_data), load_private_key(row.private_key, box)


def get_ca(session: Session, box: SecretBox):
    """(CA certificate, CA private key)."""
    return _material(session, PURPOSE_CA, box)


def get_ca_certificate(session: Session) -> cx509.Certificate:
    return x509.cert_from_pem(_required(session, PURPOSE_CA).pem_data)


def get_server_identity(session: Session, box: SecretBox):
    """(server signing certificate, its private key) used to sign enrollment and configuration profiles."""
    return _material(session, PURPOSE_SERVER, box)


def get_certificate(session: Session, certificate_id: int) -> Certificate:
    row = session.get(Certificate, certificate_id)
    if row is None:
        raise NotFound(f"no certificate with id {certificate_id}")
    return row


def get_private_key(session: Session, key_id: int) -> RSAPrivateKey:
    row = session.get(RSAPrivateKey, key_id)
    if row is None:
        raise NotFound(f"no private key with id {key_id}")
    return row


def purge_device_certificates(
    session: Session, *, issued_before: datetime, bound: Select | CompoundSelect, batch_size: int = 5000, commit: bool = True
) -> int:
    """Delete device identity certificates issued before ``issued_before`` whose fingerprint is not
    in ``bound`` (a select of non-null fingerprints still in use), in batches (each committed when
    ``commit``). A deleted certificate can no longer ``Authenticate``. Returns how many were deleted."""
    return delete_in_batches(
        session, Certificate,
        and_(Certificate.purpose == PURPOSE_DEVICE, Certificate.created_at < issued_before,
             Certificate.fingerprint_sha256.not_in(bound)),
        batch_size=batch_size, commit=commit,
    )
