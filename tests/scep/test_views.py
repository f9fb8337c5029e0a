"""``/scep`` over real HTTP: enrollment profile → SCEP → Authenticate with a key that never left the
device, and every malformed, refused, replayed or excessive request."""

from __future__ import annotations

import base64
import hashlib
import logging
import plistlib
from datetime import timedelta

import httpx
import pytest
from asn1crypto import cms as acms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from sqlalchemy import delete, select

from mdmserver.config import load_config
from mdmserver.db import db, utcnow
from mdmserver.enrollment_limit.models import EnrollmentAttempt
from mdmserver.jobs import Upkeep
from mdmserver.records.devices import Device
from mdmserver.scep.models import ScepChallenge
from mdmserver.simulator.device import HttpxTransport, Identity, SimulatedDevice
from tests import scep_requests as sr
from tests.factories import TOPIC, install_push_topic

PKI = "application/x-pki-message"


@pytest.fixture
def live(live_server, monkeypatch):
    config = live_server.app.config
    monkeypatch.setitem(config, "ENROLL_RATE_LIMIT", 0)
    monkeypatch.setitem(config, "ADMISSION_POLICY", "auto")
    monkeypatch.setitem(config, "ENROLLMENT_IDENTITY", "scep")
    with live_server.app.app_context():
        install_push_topic(db.session, monkeypatch)
    return live_server


@pytest.fixture
def http(live):
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client


@pytest.fixture
def ca(http) -> x509.Certificate:
    answer = http.get("/scep", params={"operation": "GetCACert"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-x509-ca-cert"
    return x509.load_der_x509_certificate(answer.content)


def enrollment_profile(http) -> dict:
    answer = http.get("/mdm/enroll")
    assert answer.status_code == 200
    signed = acms.ContentInfo.load(answer.content)["content"]
    return plistlib.loads(signed["encap_content_info"]["content"].native)


def scep_payload(profile: dict) -> dict:
    [payload] = [p for p in profile["PayloadContent"] if p["PayloadType"] == "com.apple.security.scep"]
    return payload


def post(http, message: bytes) -> httpx.Response:
    return http.post("/scep", params={"operation": "PKIOperation"}, content=message,
                     headers={"Content-Type": PKI})


def assert_json_error(answer: httpx.Response, status: int) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/vnd.api+json"
    body = answer.json()
    assert body["meta"]["request_id"] == answer.headers["X-Request-ID"]
    assert body["errors"][0]["status"] == str(status)
    return body


def test_get_ca_caps(http):
    answer = http.get("/scep", params={"operation": "GetCACaps"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    caps = answer.text.split()
    assert {"AES", "SHA-256", "POSTPKIOperation", "SCEPStandard"} <= set(caps)
    assert "Renewal" not in caps  # RenewalReq is not implemented


def test_get_ca_cert_is_the_profile_ca(http, ca):
    profile = enrollment_profile(http)
    [root] = [p for p in profile["PayloadContent"] if p["PayloadType"] == "com.apple.security.root"]
    assert x509.load_der_x509_certificate(root["PayloadContent"]) == ca


def test_default_profile_has_a_scep_payload_and_no_private_key(live, http):
    answer = http.get("/mdm/enroll")
    raw = answer.content
    profile = plistlib.loads(acms.ContentInfo.load(raw)["content"]["encap_content_info"]["content"].native)
    types = [p["PayloadType"] for p in profile["PayloadContent"]]
    assert types == ["com.apple.security.root", "com.apple.security.scep", "com.apple.mdm"]
    assert b"PRIVATE KEY" not in raw and b"Password" not in raw
    payload = scep_payload(profile)
    content = payload["PayloadContent"]
    assert content["URL"] == f"{live.url}/scep"
    assert content["Keysize"] == 2048 and content["Key Type"] == "RSA" and content["Key Usage"] == 5
    assert len(content["Challenge"]) >= 40
    [[(cn, name)], [(o, org)]] = content["Subject"]
    assert (cn, o, org) == ("CN", "O", live.app.config["ORGANIZATION_NAME"])
    assert name.startswith("mdmserver device ")
    assert content["Retries"] >= 1 and content["RetryDelay"] >= 1
    [mdm] = [p for p in profile["PayloadContent"] if p["PayloadType"] == "com.apple.mdm"]
    assert mdm["IdentityCertificateUUID"] == payload["PayloadUUID"]
    # a second profile has another challenge and another enrollment id
    other = scep_payload(enrollment_profile(http))["PayloadContent"]
    assert other["Challenge"] != content["Challenge"] and other["Subject"] != content["Subject"]


def test_the_product_default_is_scep():
    assert load_config(environ={})["ENROLLMENT_IDENTITY"] == "scep"


def test_pkcs12_mode_keeps_the_server_made_identity(live, http, monkeypatch):
    monkeypatch.setitem(live.app.config, "ENROLLMENT_IDENTITY", "pkcs12")
    types = [p["PayloadType"] for p in enrollment_profile(http)["PayloadContent"]]
    assert types == ["com.apple.security.root", "com.apple.security.pkcs12", "com.apple.mdm"]


@pytest.mark.parametrize("by_get", [False, True])
def test_enroll_through_scep_and_authenticate(live, http, ca, by_get):
    """The device's key never leaves it: profile → PKCSReq with the profile's challenge → the issued
    certificate signs Authenticate and TokenUpdate, and the device is enrolled."""
    content = scep_payload(enrollment_profile(http))["PayloadContent"]
    requester = sr.Requester.new()
    message = sr.pkcs_req(requester, ca, content["Challenge"])
    if by_get:
        # base64 "+" sent unescaped arrives as a space: still read
        query = "operation=PKIOperation&message=" + base64.b64encode(message).decode().replace("/", "%2F")
        answer = http.get(f"/scep?{query}")
    else:
        answer = post(http, message)
    assert answer.status_code == 200 and answer.headers["content-type"] == PKI
    reply = sr.read_reply(answer.content, requester)
    assert reply.signature_ok and reply.signer == ca and reply.status == "0"
    [cert] = reply.certificates
    cert.verify_directly_issued_by(ca)
    assert cert.public_key() == requester.key.public_key()
    subject = content["Subject"][0][0][1]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == subject

    transport = HttpxTransport(live.url)
    try:
        device = SimulatedDevice(transport, platform="ios")
        device.identity = Identity(cert, requester.key)
        device.topic = TOPIC
        assert device.authenticate() == 200
        assert device.token_update() == 200
        with live.app.app_context():
            stored = db.session.scalar(select(Device).where(Device.udid == device.udid))
            assert stored.identity_fingerprint == cert.fingerprint(hashes.SHA256()).hex()
    finally:
        transport.close()


def test_scep_certificate_cannot_be_used_by_another_device(live, http, ca):
    """A device bound to its SCEP certificate; another UDID presenting the same certificate is refused."""
    content = scep_payload(enrollment_profile(http))["PayloadContent"]
    requester = sr.Requester.new()
    [cert] = sr.read_reply(post(http, sr.pkcs_req(requester, ca, content["Challenge"])).content,
                           requester).certificates
    transport = HttpxTransport(live.url)
    try:
        first = SimulatedDevice(transport, platform="ios")
        first.identity = Identity(cert, requester.key)
        assert first.authenticate() == 200
        second = SimulatedDevice(transport, platform="ios")
        second.identity = Identity(cert, requester.key)
        assert second.authenticate() == 403
    finally:
        transport.close()


def test_refused_request_is_a_signed_failure_and_a_warning(live, http, ca, caplog):
    requester = sr.Requester.new()
    with caplog.at_level(logging.WARNING, logger="mdmserver.scep"):
        answer = post(http, sr.pkcs_req(requester, ca, "guessed challenge"))
    assert answer.status_code == 200 and answer.headers["content-type"] == PKI
    reply = sr.read_reply(answer.content, requester)
    assert reply.signature_ok and (reply.status, reply.fail_info, reply.certificates) == ("2", "2", [])
    assert any("unknown challenge" in r.getMessage() for r in caplog.records if r.name == "mdmserver.scep")
    assert "guessed challenge" not in caplog.text


def test_challenge_is_single_use_over_http(http, ca):
    content = scep_payload(enrollment_profile(http))["PayloadContent"]
    device = sr.Requester.new()
    first = sr.read_reply(post(http, sr.pkcs_req(device, ca, content["Challenge"])).content, device)
    retransmitted = sr.read_reply(post(http, sr.pkcs_req(device, ca, content["Challenge"])).content, device)
    assert first.status == retransmitted.status == "0" and first.certificates == retransmitted.certificates
    thief = sr.Requester.new()
    stolen = sr.read_reply(post(http, sr.pkcs_req(thief, ca, content["Challenge"])).content, thief)
    assert (stolen.status, stolen.fail_info, stolen.certificates) == ("2", "2", [])


def _malformed(ca) -> dict[str, bytes]:
    requester = sr.Requester.new()
    good = sr.pkcs_req(requester, ca, "whatever")
    other_ca = sr.self_signed(sr.Requester.new().key, cn="another CA")
    return {
        "empty": b"",
        "garbage": b"not a pkiMessage" * 4,
        "truncated": good[: len(good) // 2],
        "tampered signature": good[:-10] + bytes([good[-10] ^ 1]) + good[-9:],
        "wrong recipient": sr.pkcs_req(requester, other_ca, "whatever"),
        "unknown message type": sr.pki_message(requester, "99", sr.envelope(requester.csr("x"), ca)),
        "nested": b"\x30\x80" * 3000 + b"\x00\x00" * 3000,
    }


@pytest.mark.parametrize("case", ["empty", "garbage", "truncated", "tampered signature", "wrong recipient",
                                  "unknown message type", "nested"])
def test_malformed_messages_are_400(http, ca, case):
    body = assert_json_error(post(http, _malformed(ca)[case]), 400)
    assert body["errors"][0]["code"] == "bad_scep_message"


def test_malformed_message_by_get_is_400(http, ca):
    for message in ("not base64!", base64.b64encode(b"garbage").decode()):
        assert_json_error(http.get("/scep", params={"operation": "PKIOperation", "message": message}), 400)
    assert_json_error(http.get("/scep", params={"operation": "PKIOperation"}), 400)


def test_oversized_message_is_413(http):
    assert_json_error(post(http, b"\x30" * (70 * 1024)), 413)


@pytest.mark.parametrize("params", [{}, {"operation": "GetNextCACert"}, {"operation": "x" * 5000}])
def test_unknown_operation_is_400(http, params):
    assert_json_error(http.get("/scep", params=params), 400)


def test_get_operations_are_not_posted(http):
    assert_json_error(http.post("/scep", params={"operation": "GetCACaps"}, content=b""), 400)


@pytest.fixture
def fresh_limiter(live):
    """No attempt counted yet (the live server and its client address are shared by the module)."""
    with live.app.app_context():
        db.session.execute(delete(EnrollmentAttempt))
        db.session.commit()


def test_failed_pki_operations_count_against_the_enrollment_rate_limit(live, http, ca, monkeypatch, fresh_limiter):
    """A PKIOperation that gets no certificate is a failed attempt (a wrong challenge is a guess); one
    that gets a certificate is not counted again (the profile that carried its challenge was)."""
    monkeypatch.setitem(live.app.config, "ENROLL_RATE_LIMIT", 4)
    # the window is shared with /mdm/enroll: two profiles count two attempts
    first = scep_payload(enrollment_profile(http))["PayloadContent"]
    second = scep_payload(enrollment_profile(http))["PayloadContent"]
    requester = sr.Requester.new()
    assert sr.read_reply(post(http, sr.pkcs_req(requester, ca, first["Challenge"])).content, requester).status == "0"
    assert post(http, b"garbage").status_code == 400  # 3
    guess = sr.read_reply(post(http, sr.pkcs_req(requester, ca, "a wrong challenge")).content, requester)
    assert guess.status == "2"  # 4: the limit is reached, a request still runs
    assert post(http, b"garbage").status_code == 400  # 5: past the limit
    # now even the right challenge waits: the client is past the limit
    answer = post(http, sr.pkcs_req(sr.Requester.new(), ca, second["Challenge"]))
    assert_json_error(answer, 429)
    assert answer.headers["Retry-After"] == "60"
    # GetCACaps and GetCACert are not enrollments
    assert http.get("/scep", params={"operation": "GetCACaps"}).status_code == 200


def test_an_enrollment_through_scep_counts_once(live, http, ca, monkeypatch, fresh_limiter):
    """Profile then a granted PKIOperation: one attempt, so a limit of N lets N devices enroll a minute."""
    monkeypatch.setitem(live.app.config, "ENROLL_RATE_LIMIT", 3)
    for _ in range(3):
        content = scep_payload(enrollment_profile(http))["PayloadContent"]
        device = sr.Requester.new()
        assert sr.read_reply(post(http, sr.pkcs_req(device, ca, content["Challenge"])).content, device).status == "0"
    assert http.get("/mdm/enroll").status_code == 429


def test_upkeep_purges_challenges_that_expired_unused(live, http, ca):
    """Two profiles: one challenge redeemed, one never. After the TTL the upkeep job deletes the unused
    one (its profile can no longer get a certificate); the redeemed one stays as the issuance record."""
    used = scep_payload(enrollment_profile(http))["PayloadContent"]
    unused = scep_payload(enrollment_profile(http))["PayloadContent"]
    device = sr.Requester.new()
    assert sr.read_reply(post(http, sr.pkcs_req(device, ca, used["Challenge"])).content, device).status == "0"
    digests = {hashlib.sha256(c["Challenge"].encode()).hexdigest(): name
               for name, c in (("used", used), ("unused", unused))}

    def left() -> set[str]:
        with live.app.app_context():
            return {digests[d] for d in db.session.scalars(
                select(ScepChallenge.digest).where(ScepChallenge.digest.in_(digests)))}

    upkeep = Upkeep(live.app)
    upkeep.run(force=True, now=utcnow() + timedelta(minutes=59))
    assert left() == {"used", "unused"}
    upkeep.run(force=True, now=utcnow() + timedelta(minutes=61))
    assert left() == {"used"}
    late = sr.Requester.new()
    reply = sr.read_reply(post(http, sr.pkcs_req(late, ca, unused["Challenge"])).content, late)
    assert (reply.status, reply.fail_info) == ("2", "2")
