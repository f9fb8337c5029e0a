"""Migration 0010 deletes the device private keys earlier enrollments stored (the server never
needs them), and keeps every other key."""

from __future__ import annotations

from sqlalchemy import func, select

from mdmserver.bootstrap import downgrade_database, upgrade_database
from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.pki import service as pki
from mdmserver.pki import x509
from mdmserver.pki.models import Certificate, RSAPrivateKey
from tests.conftest import make_app


def test_upgrade_drops_stored_device_private_keys(tmp_path) -> None:
    app, cleanup = make_app(tmp_path)
    try:
        downgrade_database(app, "0010_enrollment_limits-1")
        with app.app_context():
            session = db.session
            ca_cert, ca_key = pki.get_ca(session, secret_box())
            planted = []
            for n in range(3):  # what /mdm/enroll stored before: the certificate and its key
                key = x509.generate_private_key()
                cert = x509.issue_certificate(ca_cert, ca_key, common_name=f"old device {n}",
                                              public_key=key.public_key(), usage="client")
                planted.append(pki.store_certificate(session, cert, pki.PURPOSE_DEVICE,
                                                     pki.store_private_key(session, key, secret_box())).id)
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
