"""Migration 0010 deletes the device private keys earlier enrollments stored (the server never
needs them), and keeps every other key."""

from __future__ import annotations

from sqlalchemy import func, insert, select

from mdmserver.bootstrap import downgrade_database, upgrade_database
from mdmserver.collaborators import secret_box
from mdmserver.db import db, utcnow
from mdmserver.pki import service as pki
from mdmserver.pki import x509
from mdmserver.pki.models import Certificate, RSAPrivateKey
from tests.conftest import make_app


def test_upgrade_drops_stored_device_private_keys(tmp_path) -> None:
    app, cleanup = make_app(tmp_path)
    try:
        downgrade_database(app, "0010_enrollment_limits-1")
        with app.app_context():
            # The schema of 0009: the models' later columns (rsa_private_keys.purpose) are not there
            # yet, so the rows are read and planted with explicit columns.
            session = db.session
            box = secret_box()
            ca_pem, ca_key_pem = session.execute(
                select(Certificate.pem_data, RSAPrivateKey.encrypted_pem)
                .join(RSAPrivateKey, RSAPrivateKey.id == Certificate.private_key_id)
                .where(Certificate.purpose == pki.PURPOSE_CA)
            ).one()
            ca_cert, ca_key = x509.cert_from_pem(ca_pem), x509.key_from_pem(box.decrypt(ca_key_pem))
            planted = []
            for n in range(3):  # what /mdm/enroll stored before: the certificate and its key
                key = x509.generate_private_key()
                cert = x509.issue_certificate(ca_cert, ca_key, common_name=f"old device {n}",
                                              public_key=key.public_key(), usage="client")
                key_id = session.scalar(insert(RSAPrivateKey).values(
                    key_type="rsa", key_size=2048, encrypted_pem=box.encrypt(x509.key_to_pem(key).encode()),
                    public_key_pem=x509.public_key_pem(key), created_at=utcnow(),
                ).returning(RSAPrivateKey.id))
                planted.append(session.scalar(insert(Certificate).values(
                    purpose=pki.PURPOSE_DEVICE, subject=x509.subject_string(cert), issuer=cert.issuer.rfc4514_string(),
                    common_name=f"old device {n}", serial=format(cert.serial_number, "x"),
                    not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                    fingerprint_sha256=x509.fingerprint_sha256(cert), pem_data=x509.cert_to_pem(cert),
                    is_ca=False, private_key_id=key_id, created_at=utcnow(),
                ).returning(Certificate.id)))
            session.commit()
            keys_before = session.scalar(select(func.count()).select_from(RSAPrivateKey))
            session.remove()
        upgrade_database(app)
        with app.app_context():
            session = db.session
            rows = session.scalars(select(Certificate).where(Certificate.id.in_(planted))).all()
            assert len(rows) == 3 and all(row.private_key_id is None for row in rows)
            assert session.scalar(select(func.count()).select_from(RSAPrivateKey)) == keys_before - 3
            # the CA and the server identity keep theirs and still sign
            assert pki.get_ca(session, secret_box())[1] is not None and pki.get_server_identity(session, secret_box())[1] is not None
    finally:
        cleanup()
