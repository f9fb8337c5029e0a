"""``push-cert request`` (key + CSR, the vendor-signed request) and importing what Apple returns:
binding to the stored request key, renewal (same topic) and topic replacement."""

from __future__ import annotations

import base64
import plistlib

import pytest
from click.testing import CliRunner
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from sqlalchemy import select

from mdmserver.collaborators import secret_box
from mdmserver.errors import Conflict, UnprocessableEntity
from mdmserver.pki import push_request as preq
from mdmserver.pki import x509 as px
from mdmserver.pki.models import RSAPrivateKey
from mdmserver.pki.service import KEY_PURPOSE_PUSH_REQUEST
from mdmserver.push import service
from mdmserver.push.cli import push_cert_group
from mdmserver.records.push import PushCertificate
from tests.factories import TOPIC, push_certificate, seed_devices

OTHER_TOPIC = TOPIC.replace("0f0e", "abcd")


def _vendor(tmp_path):
    """A stand-in MDM vendor: CSR signing certificate + key, and an 'Apple' intermediate and root."""
    root, root_key = px.create_ca("Stand-in Apple Root CA")
    intermediate = px.issue_certificate(root, root_key, common_name="Stand-in WWDR", public_key=px.generate_private_key().public_key(), days=30, usage="signing")
    vendor_key = px.generate_private_key()
    vendor_cert = px.issue_certificate(root, root_key, common_name="MDM Vendor: Example", public_key=vendor_key.public_key(), days=30, usage="signing")
    (tmp_path / "vendor.cer").write_bytes(px.cert_to_der(vendor_cert))
    (tmp_path / "vendor.key").write_bytes(px.key_to_pem(vendor_key, b"vpw").encode())
    (tmp_path / "chain.pem").write_bytes((px.cert_to_pem(intermediate) + px.cert_to_pem(root)).encode())
    return vendor_cert, [intermediate, root]


def _run(app, *args):
    with app.app_context():
        return CliRunner().invoke(push_cert_group, list(args))


def _request_keys(db_session) -> list[RSAPrivateKey]:
    return list(db_session.scalars(select(RSAPrivateKey).where(RSAPrivateKey.purpose == KEY_PURPOSE_PUSH_REQUEST)))


def test_request_without_vendor_writes_csr_of_the_stored_key(app, db_session, tmp_path):
    result = _run(app, "request", "--out", str(tmp_path / "out"), "--email", "admin@example.com")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "out" / "push-request.b64").exists()
    csr = cx509.load_pem_x509_csr((tmp_path / "out" / "push.csr").read_bytes())
    assert csr.is_signature_valid
    [row] = _request_keys(db_session)
    assert px.public_key_pem(csr.public_key()) == row.public_key_pem
    assert b"PRIVATE KEY" not in row.encrypted_pem  # sealed by the secret box
    assert row.key_type == "rsa" and row.key_size == 2048


def test_request_with_vendor_is_the_signed_plist(app, db_session, tmp_path):
    vendor_cert, chain = _vendor(tmp_path)
    result = _run(app, "request", "--out", str(tmp_path / "out"), "--vendor-cert", str(tmp_path / "vendor.cer"),
                  "--vendor-key", str(tmp_path / "vendor.key"), "--vendor-key-password", "vpw",
                  "--vendor-chain", str(tmp_path / "chain.pem"))
    assert result.exit_code == 0, result.output
    encoded = (tmp_path / "out" / "push-request.b64").read_bytes()
    fields = plistlib.loads(base64.b64decode(encoded, validate=True))
    assert set(fields) == {"PushCertRequestCSR", "PushCertCertificateChain", "PushCertSignature"}
    csr_der = base64.b64decode(fields["PushCertRequestCSR"], validate=True)
    csr = cx509.load_der_x509_csr(csr_der)
    # the vendor's RSA SHA-256 signature over the CSR's DER, checked with the vendor certificate's key
    vendor_cert.public_key().verify(base64.b64decode(fields["PushCertSignature"]), csr_der,
                                    padding.PKCS1v15(), hashes.SHA256())
    # the chain: the vendor certificate, then Apple's intermediate and root as given
    assert cx509.load_pem_x509_certificates(fields["PushCertCertificateChain"].encode()) == [vendor_cert, *chain]
    # the CSR is the one written beside it, for the key stored here
    assert csr.public_bytes(serialization.Encoding.PEM) == (tmp_path / "out" / "push.csr").read_bytes()
    [row] = _request_keys(db_session)
    assert px.public_key_pem(csr.public_key()) == row.public_key_pem
    assert preq.read_signed_request(encoded).csr == csr


def test_request_refuses_a_vendor_key_of_another_certificate(app, db_session, tmp_path):
    _vendor(tmp_path)
    (tmp_path / "other.key").write_bytes(px.key_to_pem(px.generate_private_key()).encode())
    result = _run(app, "request", "--out", str(tmp_path / "out"), "--vendor-cert", str(tmp_path / "vendor.cer"),
                  "--vendor-key", str(tmp_path / "other.key"))
    assert result.exit_code == 1 and "does not belong" in result.output
    assert _request_keys(db_session) == [] and not (tmp_path / "out").exists()
    half = _run(app, "request", "--out", str(tmp_path / "out"), "--vendor-cert", str(tmp_path / "vendor.cer"))
    assert half.exit_code == 2 and "go together" in half.output


def test_read_signed_request_rejects_tampering(tmp_path):
    vendor_cert, chain = _vendor(tmp_path)
    vendor_key = px.key_from_pem((tmp_path / "vendor.key").read_bytes(), b"vpw")
    csr = preq.build_csr(px.generate_private_key(), common_name="x")
    fields = plistlib.loads(base64.b64decode(preq.sign_request(csr, vendor_cert, vendor_key, chain)))
    other = preq.build_csr(px.generate_private_key(), common_name="x")
    fields["PushCertRequestCSR"] = base64.b64encode(preq.csr_to_der(other)).decode()
    with pytest.raises(px.PKIError, match="does not match"):
        preq.read_signed_request(base64.b64encode(plistlib.dumps(fields)))
    with pytest.raises(px.PKIError):
        preq.read_signed_request(b"not base64 at all!")


def _apple_answer(app, tmp_path, db_session, topic=TOPIC, der=False):
    """Make a request, and the certificate 'Apple' returns for its CSR (stand-in issuer), on disk."""
    result = _run(app, "request", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    csr = cx509.load_pem_x509_csr((tmp_path / "out" / "push.csr").read_bytes())
    cert, _issuer_key = push_certificate(topic, public_key=csr.public_key())
    path = tmp_path / ("apple.cer" if der else "apple.pem")
    path.write_bytes(px.cert_to_der(cert) if der else px.cert_to_pem(cert).encode())
    return cert, path


@pytest.mark.parametrize("der", [False, True])
def test_import_binds_to_the_request_key(app, db_session, tmp_path, der):
    cert, path = _apple_answer(app, tmp_path, db_session, der=der)
    result = _run(app, "import", str(path))
    assert result.exit_code == 0, result.output
    identity = service.push_identity(db_session, box=secret_box())
    assert identity.topic == TOPIC and identity.fingerprint == px.fingerprint_sha256(cert)
    assert px.public_key_pem(px.key_from_pem(identity.key_pem)) == px.public_key_pem(cert)


def test_import_without_key_of_an_unknown_certificate_is_refused(db_session):
    cert, _key = push_certificate()
    with pytest.raises(UnprocessableEntity, match="no private key"):
        service.import_push_certificate(db_session, px.cert_to_pem(cert).encode(), box=secret_box())


def _enrolled_devices(db_session, count=3):
    return seed_devices(db_session, count, topic=TOPIC, push_token=b"\x01" * 32, push_magic="magic",
                        token_updated_at=px._now())


def test_renewal_keeps_every_device(app, db_session, tmp_path):
    first, _ = push_certificate()
    service.import_push_certificate(db_session, b"".join(_pem(first, _)), box=secret_box())
    ids = _enrolled_devices(db_session)
    db_session.commit()
    renewed, path = _apple_answer(app, tmp_path, db_session)
    result = _run(app, "import", str(path))
    assert result.exit_code == 0, result.output
    assert "renewed" in result.output and "re-enroll" not in result.output
    identity = service.push_identity(db_session, topic=TOPIC, box=secret_box())
    assert identity.fingerprint == px.fingerprint_sha256(renewed)
    assert service.request_push(db_session, ids) == len(ids)  # every device is still pushed on its topic


def test_other_topic_is_refused_without_replace_topic(app, db_session, tmp_path):
    first, key = push_certificate()
    service.import_push_certificate(db_session, b"".join(_pem(first, key)), box=secret_box())
    _enrolled_devices(db_session)
    db_session.commit()
    other, key2 = push_certificate(OTHER_TOPIC)
    with pytest.raises(Conflict) as refused:
        service.import_push_certificate(db_session, b"".join(_pem(other, key2)), box=secret_box())
    assert refused.value.code == "push_topic_changed" and refused.value.meta["enrolled_devices"] == 3
    _, path = _apple_answer(app, tmp_path, db_session, topic=OTHER_TOPIC)
    result = _run(app, "import", str(path))
    assert result.exit_code == 1 and "must re-enroll" in result.output and "--replace-topic" in result.output
    assert service.get_push_topic(db_session) == TOPIC
    replaced = _run(app, "import", str(path), "--replace-topic")
    assert replaced.exit_code == 0, replaced.output
    assert "3 enrolled devices must re-enroll" in replaced.output
    assert service.get_push_topic(db_session) == OTHER_TOPIC
    assert [r.topic for r in db_session.scalars(select(PushCertificate).order_by(PushCertificate.id))] == [TOPIC, OTHER_TOPIC]


def test_api_other_topic_is_409_unless_replace_topic(client, auth, db_session):
    first, key = push_certificate()
    service.import_push_certificate(db_session, b"".join(_pem(first, key)), box=secret_box())
    db_session.commit()
    other, key2 = push_certificate(OTHER_TOPIC)
    body = b"".join(_pem(other, key2))
    refused = client.put("/api/v1/push_certificate", data=body, headers=auth("admin"))
    assert refused.status_code == 409, refused.json
    assert refused.json["errors"][0]["code"] == "push_topic_changed"
    ok = client.put("/api/v1/push_certificate?replace_topic=true", data=body, headers=auth("admin"))
    assert ok.status_code == 200, ok.json
    assert ok.json["data"]["attributes"]["topic"] == OTHER_TOPIC
    bad = client.put("/api/v1/push_certificate?replace_topic=maybe", data=body, headers=auth("admin"))
    assert bad.status_code == 400


def _pem(cert, key) -> tuple[bytes, bytes]:
    return px.cert_to_pem(cert).encode(), px.key_to_pem(key).encode()
