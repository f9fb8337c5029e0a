"""SCEP issuance: challenges, certificates, retransmissions and refusals (service level, real database)."""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta

import pytest
from asn1crypto import cms as acms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import func, select

from mdmserver.collaborators import secret_box
from mdmserver.db import db, utcnow
from mdmserver.organization.service import get_organization
from mdmserver.pki.models import Certificate
from mdmserver.pki.service import get_ca_certificate
from mdmserver.scep import service
from mdmserver.scep.models import ScepChallenge
from tests import scep_requests as sr
from tests.concurrency import race
from tests.conftest import make_app

ENROLLMENT = "0A1B2C3D-0000-4000-8000-00000000ABCD"


@pytest.fixture
def ca(db_session) -> x509.Certificate:
    return get_ca_certificate(db_session)


@pytest.fixture
def settings(db_session) -> service.ScepSettings:
    return service.ScepSettings(organization=get_organization(db_session).name, box=secret_box(), client="test")


def device_certificates(session) -> int:
    return session.scalar(select(func.count()).select_from(Certificate).where(Certificate.purpose == "device_identity"))


def spki_sha256(key) -> str:
    return hashlib.sha256(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def ask(session, settings, message: bytes, requester: sr.Requester, **kw) -> sr.Reply:
    reply = sr.read_reply(service.answer_pki_operation(session, message, settings, **kw).der, requester)
    assert reply.signature_ok
    assert reply.attributes[sr.TRANSACTION_ID] == requester.transaction_id
    return reply


def test_pkcs_req_with_a_fresh_challenge_issues_the_server_chosen_identity(db_session, ca, settings):
    challenge = service.issue_challenge(db_session, enrollment_id=ENROLLMENT)
    requester = sr.Requester.new()
    before = device_certificates(db_session)
    reply = ask(db_session, settings, sr.pkcs_req(requester, ca, challenge), requester)
    assert reply.status == "0"
    [cert] = reply.certificates
    # the subject is the server's choice, not the CSR's ("device asks for this")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"mdmserver device {ENROLLMENT}"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == settings.organization
    assert cert.public_key() == requester.key.public_key()
    cert.verify_directly_issued_by(ca)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=729) < lifetime < timedelta(days=731)
    # stored as a device identity, so Authenticate recognises it
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    stored = db_session.scalar(select(Certificate).where(Certificate.fingerprint_sha256 == fingerprint))
    assert stored is not None and stored.purpose == "device_identity" and stored.private_key_id is None
    assert device_certificates(db_session) == before + 1
    row = db_session.scalar(select(ScepChallenge).where(ScepChallenge.enrollment_id == ENROLLMENT))
    assert row.digest == hashlib.sha256(challenge.encode()).hexdigest()
    assert row.used_at is not None and row.transaction_id == requester.transaction_id
    assert row.public_key_sha256 == spki_sha256(requester.key)
    assert row.certificate_fingerprint == fingerprint


def test_the_challenge_itself_is_not_stored(db_session):
    challenge = service.issue_challenge(db_session, enrollment_id=ENROLLMENT)
    row = db_session.scalar(select(ScepChallenge).where(ScepChallenge.enrollment_id == ENROLLMENT))
    assert challenge not in repr([getattr(row, c.key) for c in ScepChallenge.__table__.columns])
    assert len(challenge) >= 40  # 32 random bytes, URL-safe base64


@pytest.mark.parametrize("algorithm", ["aes256_cbc", "tripledes_3key"])
def test_reply_uses_the_request_content_encryption(db_session, ca, settings, algorithm):
    challenge = service.issue_challenge(db_session, enrollment_id=ENROLLMENT)
    requester = sr.Requester.new()
    reply_der = service.answer_pki_operation(db_session, sr.pkcs_req(requester, ca, challenge, algorithm=algorithm),
                                             settings).der
    reply = sr.read_reply(reply_der, requester)
    assert reply.status == "0" and len(reply.certificates) == 1
    envelope = acms.ContentInfo.load(acms.ContentInfo.load(reply_der)["content"]["encap_content_info"]["content"]
                                     .native)
    assert envelope["content"]["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"].native == algorithm


@pytest.mark.parametrize("challenge", ["wrong", None, ""])
def test_wrong_or_missing_challenge_is_refused(db_session, ca, settings, challenge):
    service.issue_challenge(db_session, enrollment_id=ENROLLMENT)
    requester = sr.Requester.new()
    before = device_certificates(db_session)
    reply = ask(db_session, settings, sr.pkcs_req(requester, ca, challenge), requester)
    assert (reply.status, reply.fail_info, reply.certificates) == ("2", "2", [])
    assert device_certificates(db_session) == before


def test_expired_challenge_is_refused(db_session, ca, settings):
    challenge = service.issue_challenge(db_session, enrollment_id=ENROLLMENT, ttl=timedelta(minutes=5),
                                        now=utcnow() - timedelta(minutes=6))
    requester = sr.Requester.new()
    reply = ask(db_session, settings, sr.pkcs_req(requester, ca, challenge), requester)
    assert (reply.status, reply.fail_info) == ("2", "2")
    row = db_session.scalar(select(ScepChallenge).where(ScepChallenge.enrollment_id == ENROLLMENT))
    assert row.used_at is None


def test_retransmission_gets_the_same_certificate_and_other_reuse_is_refused(db_session, ca, settings):
    challenge = service.issue_challenge(db_session, enrollment_id=ENROLLMENT)
    requester = sr.Requester.new()
    first = ask(db_session, settings, sr.pkcs_req(requester, ca, challenge), requester)
    count = device_certificates(db_session)
    again = ask(db_session, settings, sr.pkcs_req(requester, ca, challenge), requester)
    assert again.status == "0" and again.certificates == first.certificates
    assert device_certificates(db_session) == count

    # another key with the same transaction id, and the same key with another transaction
    thief = sr.Requester.new()
    thief.transaction_id = requester.transaction_id
    same_key = sr.Requester(key=requester.key, cert=requester.cert)
    for other in (thief, same_key):
        reply = ask(db_session, settings, sr.pkcs_req(other, ca, challenge), other)
        assert (reply.status, reply.fail_info, reply.certificates) == ("2", "2", [])
    assert device_certificates(db_session) == count


def test_weak_and_unsupported_keys_are_refused(db_session, ca, settings):
    weak = sr.Requester.new(bits=1024)
    challenge = service.issue_challenge(db_session, enrollment_id=ENROLLMENT)
    reply = ask(db_session, settings, sr.pkcs_req(weak, ca, challenge), weak)
    assert (reply.status, reply.fail_info) == ("2", "0")
    # the challenge was not spent by the refused request
    good = sr.Requester.new()
    assert ask(db_session, settings, sr.pkcs_req(good, ca, challenge), good).status == "0"


@pytest.mark.parametrize("curve,granted", [(ec.SECP256R1(), True), (ec.SECP384R1(), True), (ec.SECP521R1(), False)])
def test_ec_csr_keys(db_session, ca, settings, curve, granted):
    """An EC key is asked for with a separate RSA signer (the reply is encrypted to the signer)."""
    challenge = service.issue_challenge(db_session, enrollment_id=ENROLLMENT)
    requester = sr.Requester.new()
    ec_key = ec.generate_private_key(curve)
    reply = ask(db_session, settings, sr.pkcs_req(requester, ca, challenge, csr=requester.csr(challenge, key=ec_key)),
                requester)
    if granted:
        assert reply.status == "0" and reply.certificates[0].public_key() == ec_key.public_key()
    else:
        assert (reply.status, reply.fail_info) == ("2", "0")


def test_ed25519_csr_key_is_refused(db_session, ca, settings):
    challenge = service.issue_challenge(db_session, enrollment_id=ENROLLMENT)
    requester = sr.Requester.new()
    csr = requester.csr(challenge, key=ed25519.Ed25519PrivateKey.generate())
    reply = ask(db_session, settings, sr.pkcs_req(requester, ca, challenge, csr=csr), requester)
    assert (reply.status, reply.fail_info) == ("2", "0")


def test_rsa_csr_signed_by_another_key_is_refused(db_session, ca, settings):
    """Key substitution: the message is signed by one RSA key, the CSR asks for another."""
    challenge = service.issue_challenge(db_session, enrollment_id=ENROLLMENT)
    requester = sr.Requester.new()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    reply = ask(db_session, settings, sr.pkcs_req(requester, ca, challenge, csr=requester.csr(challenge, key=other)),
                requester)
    assert (reply.status, reply.fail_info) == ("2", "1")


def test_get_cert_initial(db_session, ca, settings):
    challenge = service.issue_challenge(db_session, enrollment_id=ENROLLMENT)
    requester = sr.Requester.new()
    issued = ask(db_session, settings, sr.pkcs_req(requester, ca, challenge), requester).certificates
    polled = ask(db_session, settings, sr.get_cert_initial(requester, ca), requester)
    assert polled.status == "0" and polled.certificates == issued

    unknown = sr.Requester.new()
    reply = ask(db_session, settings, sr.get_cert_initial(unknown, ca), unknown)
    assert (reply.status, reply.fail_info, reply.certificates) == ("2", "4", [])
    # someone who knows the transaction id but not the key gets nothing
    snoop = sr.Requester.new()
    snoop.transaction_id = requester.transaction_id
    reply = ask(db_session, settings, sr.get_cert_initial(snoop, ca), snoop)
    assert (reply.status, reply.fail_info) == ("2", "4")


def test_renewal_is_not_supported(db_session, ca, settings):
    requester = sr.Requester.new()
    message = sr.pki_message(requester, sr.RENEWAL_REQ, sr.envelope(requester.csr("x"), ca))
    reply = ask(db_session, settings, message, requester)
    assert (reply.status, reply.fail_info) == ("2", "2")


def test_purge_removes_only_expired_unused_challenges(db_session, ca, settings):
    now = utcnow()
    old = now - timedelta(hours=2)
    service.issue_challenge(db_session, enrollment_id="EXPIRED", now=old)
    used = service.issue_challenge(db_session, enrollment_id="USED", ttl=timedelta(hours=3), now=old)
    service.issue_challenge(db_session, enrollment_id="FRESH")
    requester = sr.Requester.new()
    assert ask(db_session, settings, sr.pkcs_req(requester, ca, used), requester).status == "0"
    db_session.execute(  # the used one has expired since
        ScepChallenge.__table__.update().where(ScepChallenge.enrollment_id == "USED").values(expires_at=old)
    )
    assert service.purge_expired_challenges(db_session, now=now) == 1
    left = set(db_session.scalars(select(ScepChallenge.enrollment_id)))
    assert {"USED", "FRESH"} <= left and "EXPIRED" not in left


@pytest.mark.parametrize("same_request", [False, True])
def test_racing_requests_with_one_challenge_issue_one_certificate(tmp_path, same_request):
    """Four requests at once with one challenge (real connections): one certificate. When they are
    the same request retransmitted, all four get it; else three are refused."""
    app, cleanup = make_app(tmp_path)
    try:
        with app.app_context():
            challenge = service.issue_challenge(db.session, enrollment_id=ENROLLMENT)
            db.session.commit()
            ca = get_ca_certificate(db.session)
            settings = service.ScepSettings(organization="race", box=secret_box())
        shared = sr.Requester.new()
        requesters = [shared] * 4 if same_request else [sr.Requester.new() for _ in range(4)]
        messages = [(r, sr.pkcs_req(r, ca, challenge)) for r in requesters]
        replies = []
        lock = threading.Lock()

        def work(session):
            with lock:
                requester, message = messages.pop()
            replies.append(sr.read_reply(service.answer_pki_operation(session, message, settings).der, requester))

        assert race(app, work) == []
        statuses = sorted(r.status for r in replies)
        assert statuses == (["0"] * 4 if same_request else ["0", "2", "2", "2"])
        issued = {c.fingerprint(hashes.SHA256()) for r in replies for c in r.certificates}
        assert len(issued) == 1
        with app.app_context():
            assert device_certificates(db.session) == 1
    finally:
        cleanup()
