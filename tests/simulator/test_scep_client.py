"""The simulator's SCEP client against an independent SCEP server: Debian's ``scep`` package (micromdm's
``scepserver``, written in Go), run for real on a free port with a CA made by its own ``scepserver ca
-init`` and a fixed challenge.

- a device obtains a certificate: issued by the depot's CA (checked with the CA file, not with anything
  the client returned), for the device's own key, with the payload's subject; over POST with AES, and
  over GET (``message=``) with DES-EDE3 when the service does not advertise POSTPKIOperation and AES;
- a wrong challenge is a typed ``ScepFailure`` (badRequest), never a certificate;
- someone in the middle: a replayed CertRep (another transaction's answer), a CA certificate that does
  not match the payload's ``CAFingerprint``, answers that are garbage — each a clear ``ScepError``
  (a ``SimulatorError``), not a traceback from inside asn1crypto.

scepserver is Debian's package; `.ci/run` installs it. Without it the test skips on a developer's machine
and fails in CI (``CI=true``).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import plistlib
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from asn1crypto import cms as acms
from asn1crypto import core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs7

from mdmserver.pki import cms
from mdmserver.pki import x509 as x509_tools
from mdmserver.simulator.device import HttpxTransport, SimulatedDevice, SimulatorError
from mdmserver.simulator.scep import (
    ScepClient,
    ScepError,
    ScepFailure,
    ScepPending,
    ScepSettings,
    generate_key,
)
from tests.test_serve import _free_port

SCEPSERVER = shutil.which("scepserver") or next((p for p in ("/usr/bin/scepserver",) if os.path.exists(p)), None)
CHALLENGE = "s3cret-challenge"
CA_PASSWORD = "depot-key-password"


@pytest.fixture(scope="module", autouse=True)
def _needs_scepserver() -> None:
    if SCEPSERVER is None:
        message = "scepserver is not installed (apt-get install scep; .ci/run does)"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)


class ScepServer:
    def __init__(self, url: str, ca: x509.Certificate, depot: Path) -> None:
        self.url, self.ca, self.depot = url, ca, depot


@pytest.fixture(scope="module")
def scep_server(tmp_path_factory) -> ScepServer:
    depot = tmp_path_factory.mktemp("scep") / "depot"
    subprocess.run([SCEPSERVER, "ca", "-init", "-depot", str(depot), "-keySize", "2048",
                    "-key-password", CA_PASSWORD],
                   check=True, capture_output=True, timeout=60)
    port = _free_port()
    log = open(depot.parent / "scepserver.log", "wb")  # noqa: SIM115 (closed at teardown)
    process = subprocess.Popen([SCEPSERVER, "-depot", str(depot), "-port", str(port), "-challenge", CHALLENGE,
                                "-capass", CA_PASSWORD],
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/scep"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url, params={"operation": "GetCACaps"}, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"scepserver did not start: {(depot.parent / 'scepserver.log').read_text()}")
            time.sleep(0.1)
        yield ScepServer(url, x509.load_pem_x509_certificate((depot / "ca.pem").read_bytes()), depot)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
def transport():
    t = HttpxTransport("http://127.0.0.1")
    yield t
    t.close()


def _settings(url: str, cn: str, **content) -> ScepSettings:
    payload = {"URL": url, "Challenge": CHALLENGE, "Subject": [[["O", "Simulated Devices"]], [["CN", cn]]],
               "Keysize": 2048, "Key Usage": 5, **content}
    return ScepSettings.from_payload({"PayloadType": "com.apple.security.scep", "PayloadContent": payload})


def _spki(key_or_cert) -> bytes:
    public = key_or_cert.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _assert_issued(result, key, server: ScepServer, cn: str) -> None:
    cert = result.certificate
    cert.verify_directly_issued_by(server.ca)  # raises unless the depot's CA signed it
    assert cert.issuer == server.ca.subject
    assert _spki(cert) == _spki(key)
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == cn


class Tampering:
    """A transport in the middle: ``hook(method, url, content, headers, inner)`` answers instead."""

    def __init__(self, inner, hook) -> None:
        self.inner, self.hook, self.seen = inner, hook, []

    def request(self, method, path, content=None, headers=None):
        self.seen.append((method, path))
        return self.hook(method, path, content, headers, self.inner)


def _operation(url: str) -> str:
    return parse_qs(urlsplit(url).query).get("operation", [""])[0]


def test_device_obtains_a_certificate_for_its_own_key(scep_server, transport) -> None:
    key = generate_key(2048)
    result = ScepClient(transport, _settings(scep_server.url, "device-post")).enroll(key)
    _assert_issued(result, key, scep_server, "device-post")
    assert result.encryption == "aes128_cbc" and result.polls == 0
    assert result.transaction_id == hashlib.sha256(_spki(key)).hexdigest().upper()


def test_the_key_is_made_on_the_device_when_not_given(scep_server, transport) -> None:
    result = ScepClient(transport, _settings(scep_server.url, "device-own-key")).enroll()
    _assert_issued(result, result.key, scep_server, "device-own-key")


def test_get_with_des_ede3_when_the_service_does_not_offer_post_and_aes(scep_server, transport) -> None:
    def without_post_and_aes(method, url, content, headers, inner):
        status, answer_headers, body = inner.request(method, url, content=content, headers=headers)
        if _operation(url) == "GetCACaps":
            body = b"\n".join(line for line in body.splitlines() if line.strip() not in (b"POSTPKIOperation", b"AES"))
        return status, answer_headers, body

    tampering = Tampering(transport, without_post_and_aes)
    key = generate_key(2048)
    result = ScepClient(tampering, _settings(scep_server.url, "device-get")).enroll(key)
    _assert_issued(result, key, scep_server, "device-get")
    assert result.encryption == "des_ede3_cbc"
    pki = [(method, url) for method, url in tampering.seen if _operation(url) == "PKIOperation"]
    assert [m for m, _ in pki] == ["GET"] and "message=" in pki[0][1]


def test_wrong_challenge_is_a_typed_failure(scep_server, transport) -> None:
    with pytest.raises(ScepFailure) as failure:
        ScepClient(transport, _settings(scep_server.url, "device-wrong", Challenge="not-the-challenge")).enroll()
    assert failure.value.fail_info == "badRequest"
    assert isinstance(failure.value, SimulatorError)


def test_no_challenge_is_a_typed_failure(scep_server, transport) -> None:
    settings = ScepSettings.from_payload({"URL": scep_server.url, "Subject": [[["CN", "device-none"]]]})
    with pytest.raises(ScepFailure):
        ScepClient(transport, settings).enroll()


def test_a_replayed_cert_rep_is_refused(scep_server, transport) -> None:
    """Someone in the middle answers a request with the CertRep of an earlier one."""
    kept: dict[str, tuple] = {}

    def replay(method, url, content, headers, inner):
        answer = inner.request(method, url, content=content, headers=headers)
        if _operation(url) != "PKIOperation":
            return answer
        return kept.setdefault("first", answer)

    tampering = Tampering(transport, replay)
    key = generate_key(2048)
    ScepClient(tampering, _settings(scep_server.url, "device-replay-1")).enroll(generate_key(2048))
    with pytest.raises(ScepError, match="transactionID"):
        ScepClient(tampering, _settings(scep_server.url, "device-replay-2")).enroll(key)
    # the same device (same key, so the same transactionID) asking again gets its own old answer
    kept.clear()
    ScepClient(tampering, _settings(scep_server.url, "device-replay-3")).enroll(key)
    with pytest.raises(ScepError, match="recipientNonce"):
        ScepClient(tampering, _settings(scep_server.url, "device-replay-4")).enroll(key)


def test_ca_fingerprint(scep_server, transport) -> None:
    der = scep_server.ca.public_bytes(serialization.Encoding.DER)
    good = _settings(scep_server.url, "device-fp", CAFingerprint=hashlib.sha256(der).digest())
    key = generate_key(2048)
    _assert_issued(ScepClient(transport, good).enroll(key), key, scep_server, "device-fp")
    wrong = _settings(scep_server.url, "device-fp-wrong", CAFingerprint=hashlib.sha256(b"another CA").digest())
    with pytest.raises(ScepError, match="CAFingerprint"):
        ScepClient(transport, wrong).enroll()


@pytest.mark.parametrize("operation, content_type, body, message", [
    ("GetCACaps", "text/plain", b"\xff\xfe\x00garbage", "not text"),
    ("GetCACert", "application/x-x509-ca-cert", b"\x30\x82garbage", "does not parse"),
    ("GetCACert", "application/x-x509-ca-ra-cert", b"\x30\x03\x02\x01\x01", "PKCS#7"),
    ("GetCACert", "text/html", b"<html>hello</html>", "content type"),
    ("PKIOperation", "application/x-pki-message", b"\x30\x80\x06\x09garbage", "not a CertRep"),
    ("PKIOperation", "application/x-pki-message", b"", "not a CertRep"),
    ("PKIOperation", "text/html", b"<html>proxy error</html>", "content type"),
])
def test_garbage_answers_are_clear_errors(scep_server, transport, operation, content_type, body, message) -> None:
    def garbage(method, url, content, headers, inner):
        if _operation(url) == operation:
            return 200, {"Content-Type": content_type}, body
        return inner.request(method, url, content=content, headers=headers)

    with pytest.raises(ScepError, match=message):
        ScepClient(Tampering(transport, garbage), _settings(scep_server.url, f"device-garbage-{operation}")).enroll()


def _degenerate(*certs) -> bytes:
    return acms.ContentInfo({"content_type": "signed_data", "content": {
        "version": "v1", "digest_algorithms": [], "encap_content_info": {"content_type": "data"},
        "certificates": [ax509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in certs],
        "signer_infos": []}}).dump()


def test_ca_ra_cert_answer_with_a_pinned_ca(scep_server, transport) -> None:
    """GetCACert answered as a degenerate PKCS#7 (``application/x-x509-ca-ra-cert``) holding an
    unrelated CA beside the real one: CAFingerprint says which is the CA, the request goes to it, and a
    CertRep signed by the other is refused."""
    other_ca, other_key = x509_tools.create_ca("Unrelated CA")

    def ca_ra_cert(method, url, content, headers, inner):
        if _operation(url) == "GetCACert":
            return 200, {"Content-Type": "application/x-x509-ca-ra-cert"}, _degenerate(other_ca, scep_server.ca)
        return inner.request(method, url, content=content, headers=headers)

    key = generate_key(2048)
    der = scep_server.ca.public_bytes(serialization.Encoding.DER)
    settings = _settings(scep_server.url, "device-ra-cert", CAFingerprint=hashlib.sha1(der).digest())
    result = ScepClient(Tampering(transport, ca_ra_cert), settings).enroll(key)
    _assert_issued(result, key, scep_server, "device-ra-cert")
    assert set(result.ca.all) == {other_ca, scep_server.ca}
    assert result.ca.recipient == result.ca.ca == scep_server.ca and result.ca.signers == (scep_server.ca,)

    def signed_by_the_other(method, url, content, headers, inner):
        if _operation(url) == "PKIOperation":
            return 200, {"Content-Type": "application/x-pki-message"}, \
                _cert_rep(other_ca, other_key, _request_attributes(content), "2", "2")
        return ca_ra_cert(method, url, content, headers, inner)

    settings = _settings(scep_server.url, "device-ra-cert-2", CAFingerprint=hashlib.sha1(der).digest())
    with pytest.raises(ScepError, match="not signed by the SCEP service"):
        ScepClient(Tampering(transport, signed_by_the_other), settings).enroll()


def test_ca_ra_cert_answer_with_a_root(scep_server, transport) -> None:
    """A chain (a root and the issuing CA below it) and no fingerprint: requests go to the issuing CA."""
    root, root_key = x509_tools.create_ca("Root")
    now = datetime.datetime.now(datetime.UTC)
    issuing_key = generate_key(2048)
    issuing = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Issuing")]))
               .issuer_name(root.subject).public_key(issuing_key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(root_key, hashes.SHA256()))

    def chain(method, url, content, headers, inner):
        if _operation(url) == "GetCACert":
            return 200, {"Content-Type": "application/x-x509-ca-ra-cert"}, _degenerate(root, issuing)
        if _operation(url) == "PKIOperation":
            request = _request_attributes(content)
            # the envelope opens with the issuing CA's key (and its answer is accepted as the CA's)
            assert _decrypted(issuing_key, request["content"])[:1] == b"\x30"
            return 200, {"Content-Type": "application/x-pki-message"}, _cert_rep(issuing, issuing_key, request, "2", "0")
        return inner.request(method, url, content=content, headers=headers)

    with pytest.raises(ScepFailure, match="badAlg"):
        ScepClient(Tampering(transport, chain), _settings(scep_server.url, "device-chain")).enroll()


def test_http_errors_are_clear(scep_server, transport) -> None:
    def refused(method, url, content, headers, inner):
        return 500, {"Content-Type": "text/plain"}, b"internal error"

    with pytest.raises(ScepError, match="GetCACaps answered HTTP 500"):
        ScepClient(Tampering(transport, refused), _settings(scep_server.url, "device-500")).enroll()


@pytest.mark.parametrize("content, message", [
    ({"Challenge": "x"}, "no URL"),
    ({"URL": "http://x/scep", "Key Type": "EC"}, "Key Type"),
    ({"URL": "http://x/scep", "Keysize": 3000}, "Keysize"),
    ({"URL": "http://x/scep", "Subject": "CN=x"}, "Subject"),
    ({"URL": "http://x/scep", "Subject": [[["CN"]]]}, "Subject"),
    ({"URL": "http://x/scep", "Subject": [[["not-an-oid", "x"]]]}, "Subject"),
    ({"URL": "http://x/scep", "Challenge": 1234}, "Challenge is not str"),
    ({"URL": "http://x/scep", "Retries": "three"}, "Retries is not int"),
    ({"URL": "http://x/scep", "Key Usage": True}, "Key Usage is not int"),
    ({"URL": "http://x/scep", "CAFingerprint": "ab12"}, "CAFingerprint is not data"),
    ({"URL": "http://x/scep", "SubjectAltName": ["x"]}, "SubjectAltName"),
])
def test_malformed_payloads_are_refused(content, message) -> None:
    with pytest.raises(ScepError, match=message):
        ScepSettings.from_payload({"PayloadContent": content})


def test_payload_subject_and_alt_names() -> None:
    settings = ScepSettings.from_payload({"PayloadContent": {
        "URL": "http://x/scep", "Subject": [[["C", "FR"]], [["O", "Org"]], [["2.5.4.3", "dev"], ["OU", "Unit"]]],
        "SubjectAltName": {"dNSName": ["a.example", "b.example"], "rfc822Name": "x@example.com"},
        "Retries": 5, "RetryDelay": 2}})
    assert settings.subject.rfc4514_string() == "CN=dev+OU=Unit,O=Org,C=FR"
    assert [n.value for n in settings.alt_names] == ["a.example", "b.example", "x@example.com"]
    assert (settings.retries, settings.retry_delay, settings.key_size) == (5, 2.0, 2048)


# --- SimulatedDevice.enroll() through a SCEP payload ----------------------------------------------------


class ProfileServer:
    """Serves ``/mdm/enroll`` (a signed profile whose identity is ``identity_payload``); every other
    request (the SCEP URL, absolute) goes to the real network."""

    def __init__(self, inner, identity_payload: dict, identity_uuid: str | None = None) -> None:
        self.inner = inner
        signer, signer_key = x509_tools.create_ca("Profile signer")
        mdm = {"PayloadType": "com.apple.mdm", "PayloadUUID": "MDM-UUID", "PayloadIdentifier": "com.example.mdm",
               "PayloadVersion": 1, "Topic": "com.apple.mgmt.External.test",
               "IdentityCertificateUUID": identity_uuid or identity_payload["PayloadUUID"],
               "ServerURL": "http://127.0.0.1:1/mdm/connect", "CheckInURL": "http://127.0.0.1:1/mdm/checkin"}
        profile = {"PayloadType": "Configuration", "PayloadIdentifier": "com.example.enroll", "PayloadVersion": 1,
                   "PayloadUUID": "PROFILE-UUID", "PayloadContent": [identity_payload, mdm]}
        self.body = cms.sign(plistlib.dumps(profile), signer, signer_key)

    def request(self, method, path, content=None, headers=None):
        if path == "/mdm/enroll":
            return 200, {"Content-Type": "application/x-apple-aspen-config"}, self.body
        return self.inner.request(method, path, content=content, headers=headers)


def _scep_payload(url: str, cn: str, **content) -> dict:
    return {"PayloadType": "com.apple.security.scep", "PayloadUUID": "SCEP-UUID", "PayloadVersion": 1,
            "PayloadIdentifier": "com.example.scep", "PayloadContent": {
                "URL": url, "Challenge": CHALLENGE, "Subject": [[["CN", cn]]], "Keysize": 2048, "Key Usage": 5,
                **content}}


def test_device_enrolls_through_the_profiles_scep_payload(scep_server, transport) -> None:
    key = generate_key(2048)
    device = SimulatedDevice(ProfileServer(transport, _scep_payload(scep_server.url, "enroll-scep")), scep_key=key)
    profile = device.enroll()
    assert device.identity_mode == "scep" and device.enrolled
    assert device.topic == "com.apple.mgmt.External.test"
    device.identity.certificate.verify_directly_issued_by(scep_server.ca)
    assert _spki(device.identity.certificate) == _spki(key) and device.identity.key is key
    assert not any("Password" in p or p["PayloadType"] == "com.apple.security.pkcs12" for p in profile["PayloadContent"])
    # the device signs its check-ins with the SCEP identity: a server trusting the SCEP CA accepts it
    body = b"<plist/>"
    signature = base64.b64decode(device.signature_for(body))
    assert cms.verify_detached(signature, body, ca_certs=[scep_server.ca]) == device.identity.certificate


def test_a_key_of_another_size_is_not_used(scep_server, transport) -> None:
    key = generate_key(2048)
    server = ProfileServer(transport, _scep_payload(scep_server.url, "enroll-1024", Keysize=1024))
    device = SimulatedDevice(server, scep_key=key)
    device.enroll()
    assert device.identity.key.key_size == 1024 and device.identity.key is not key
    assert _spki(device.identity.certificate) == _spki(device.identity.key)


def test_enroll_with_a_wrong_challenge_fails_typed(scep_server, transport) -> None:
    device = SimulatedDevice(ProfileServer(transport, _scep_payload(scep_server.url, "enroll-no", Challenge="nope")))
    with pytest.raises(ScepFailure):
        device.enroll()
    assert device.identity is None and not device.enrolled


@pytest.mark.parametrize("identity_uuid, message", [
    ("NOTHING-UUID", "names no payload"),
    ("MDM-UUID", "com.apple.mdm payload, not an identity"),
])
def test_identity_uuid_must_name_an_identity_payload(transport, identity_uuid, message) -> None:
    device = SimulatedDevice(ProfileServer(transport, _scep_payload("http://127.0.0.1:1/scep", "x"), identity_uuid))
    with pytest.raises(SimulatorError, match=message):
        device.enroll()


# --- PENDING: polled with GetCertInitial ---------------------------------------------------------------
# Debian's scepserver never answers PENDING: a CA in the middle (the depot's own key, so the answers are
# genuinely the CA's) answers PENDING, then FAILURE; its CertRep messages are built here from RFC 8894.

SCEP_ATTRIBUTE = "2.16.840.1.113733.1.9."


def _request_attributes(message: bytes) -> dict[str, bytes]:
    """The SCEP attributes a PKIOperation request carries (OID suffix → value DER), and its content."""
    signed = acms.ContentInfo.load(message)["content"]
    found = {a["type"].dotted.removeprefix(SCEP_ATTRIBUTE): a["values"][0].dump()
             for a in signed["signer_infos"][0]["signed_attrs"]}
    found["content"] = signed["encap_content_info"]["content"].native
    return found


def _cert_rep(ca_cert, ca_key, request: dict[str, bytes], status: str, fail_info: str | None = None,
              *, by_key_id: bool = False, content: bytes = b"") -> bytes:
    """A CertRep signed by the CA (named by issuer and serial number, or by its subject key
    identifier); ``content`` (SUCCESS) the envelope, empty for PENDING or FAILURE."""
    def attribute(oid: str, value) -> acms.CMSAttribute:
        return acms.CMSAttribute({"type": oid, "values": [value]})

    attributes = [
        acms.CMSAttribute({"type": "content_type", "values": ["data"]}),
        acms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(content).digest()]}),
        attribute(SCEP_ATTRIBUTE + "2", core.PrintableString("3")),
        attribute(SCEP_ATTRIBUTE + "3", core.PrintableString(status)),
        attribute(SCEP_ATTRIBUTE + "7", core.Any.load(request["7"])),
        attribute(SCEP_ATTRIBUTE + "6", core.Any.load(request["5"])),  # recipientNonce = their senderNonce
        attribute(SCEP_ATTRIBUTE + "5", core.OctetString(os.urandom(16))),
    ]
    if fail_info is not None:
        attributes.append(attribute(SCEP_ATTRIBUTE + "4", core.PrintableString(fail_info)))
    attributes.sort(key=lambda a: a.dump())
    signed_attrs = acms.CMSAttributes(attributes)
    signature = ca_key.sign(signed_attrs.dump(), asym_padding.PKCS1v15(), hashes.SHA256())
    ca_der = ax509.Certificate.load(ca_cert.public_bytes(serialization.Encoding.DER))
    signed = acms.SignedData({
        "version": "v1", "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": "data", "content": content or None},
        "certificates": [ca_der],
        "signer_infos": [{
            "version": "v1",
            "sid": acms.SignerIdentifier(name="subject_key_identifier", value=ca_der.key_identifier) if by_key_id
            else acms.SignerIdentifier(name="issuer_and_serial_number", value={
                "issuer": ca_der.issuer, "serial_number": ca_der.serial_number}),
            "digest_algorithm": {"algorithm": "sha256"}, "signed_attrs": signed_attrs,
            "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"}, "signature": signature}],
    })
    return acms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()


def _decrypted(ca_key, enveloped_der: bytes) -> bytes:
    """What a PKIOperation request's envelope holds, opened with the CA's key."""
    enveloped = acms.ContentInfo.load(enveloped_der)["content"]
    cek = ca_key.decrypt(enveloped["recipient_infos"][0].chosen["encrypted_key"].native, asym_padding.PKCS1v15())
    info = enveloped["encrypted_content_info"]
    iv = info["content_encryption_algorithm"]["parameters"].native
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
    padded = decryptor.update(info["encrypted_content"].native) + decryptor.finalize()
    return padded[:-padded[-1]]


@pytest.fixture(scope="module")
def ca_key(scep_server):
    return serialization.load_pem_private_key((scep_server.depot / "ca.key").read_bytes(), CA_PASSWORD.encode())


def _pending_then(scep_server, ca_key, transport, final: str, fail_info: str | None = None, by_key_id: bool = False):
    requests: list[dict[str, bytes]] = []

    def ca_in_the_middle(method, url, content, headers, inner):
        if _operation(url) != "PKIOperation":
            return inner.request(method, url, content=content, headers=headers)
        assert method == "POST"
        request = _request_attributes(content)
        requests.append(request)
        status = "3" if len(requests) < 3 else final
        return 200, {"Content-Type": "application/x-pki-message"}, _cert_rep(
            scep_server.ca, ca_key, request, status, fail_info if status == "2" else None, by_key_id=by_key_id)

    return Tampering(transport, ca_in_the_middle), requests


def test_pending_is_polled_with_get_cert_initial_until_retries_run_out(scep_server, ca_key, transport) -> None:
    tampering, requests = _pending_then(scep_server, ca_key, transport, final="3")
    slept: list[float] = []
    client = ScepClient(tampering, _settings(scep_server.url, "device-pending", Retries=2, RetryDelay=7), sleep=slept.append)
    with pytest.raises(ScepPending) as pending:
        client.enroll()
    assert pending.value.polls == 2 and slept == [7.0, 7.0]
    # PKCSReq (19), then two GetCertInitial (20), one transaction, a new nonce each time
    assert [core.PrintableString.load(r["2"]).native for r in requests] == ["19", "20", "20"]
    assert len({r["7"] for r in requests}) == 1 and len({r["5"] for r in requests}) == 3
    # a poll names the CA (issuer) and the subject asked for
    poll = core.Sequence.load(_decrypted(ca_key, requests[1]["content"]))
    assert ax509.Name.load(poll[0].dump()).native == ax509.Name.load(scep_server.ca.subject.public_bytes()).native
    assert ax509.Name.load(poll[1].dump()).native["common_name"] == "device-pending"


def test_pending_then_failure_is_a_typed_failure(scep_server, ca_key, transport) -> None:
    """The CA names itself by subject key identifier here (the other tests: issuer and serial number)."""
    tampering, requests = _pending_then(scep_server, ca_key, transport, final="2", fail_info="4", by_key_id=True)
    client = ScepClient(tampering, _settings(scep_server.url, "device-pending-fail", Retries=5, RetryDelay=0),
                        sleep=lambda s: None)
    with pytest.raises(ScepFailure) as failure:
        client.enroll()
    assert failure.value.fail_info == "badCertId" and len(requests) == 3


def test_an_answer_signed_by_another_ca_is_refused(scep_server, transport) -> None:
    other_ca, other_key = x509_tools.create_ca("Not the SCEP CA")

    def impostor(method, url, content, headers, inner):
        if _operation(url) != "PKIOperation":
            return inner.request(method, url, content=content, headers=headers)
        return 200, {"Content-Type": "application/x-pki-message"}, \
            _cert_rep(other_ca, other_key, _request_attributes(content), "2", "2")

    with pytest.raises(ScepError, match="not signed by the SCEP service"):
        ScepClient(Tampering(transport, impostor), _settings(scep_server.url, "device-impostor")).enroll()


def _success_with(scep_server, ca_key, cert_for) -> Tampering:
    """A CA in the middle answering SUCCESS with ``cert_for(requester's self-signed certificate)``,
    enveloped to the requester by cryptography's own PKCS#7 builder."""
    def answer(method, url, content, headers, inner):
        if _operation(url) != "PKIOperation":
            return inner.request(method, url, content=content, headers=headers)
        request = _request_attributes(content)
        signed = acms.ContentInfo.load(content)["content"]
        requester = x509.load_der_x509_certificate(signed["certificates"][0].chosen.dump())
        degenerate = _degenerate(cert_for(requester))
        enveloped = (pkcs7.PKCS7EnvelopeBuilder().set_data(degenerate).add_recipient(requester)
                     .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary]))
        return 200, {"Content-Type": "application/x-pki-message"}, \
            _cert_rep(scep_server.ca, ca_key, request, "0", content=enveloped)

    return Tampering(HttpxTransport("http://127.0.0.1"), answer)


def _issue(issuer, issuer_key, public_key) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")]))
            .issuer_name(issuer.subject).public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)).sign(issuer_key, hashes.SHA256()))


def test_success_answers_are_checked(scep_server, ca_key) -> None:
    other_ca, other_key = x509_tools.create_ca("Not the SCEP CA")
    key = generate_key(2048)
    # the genuine CA issuing for the device's key: accepted (and the envelope opens: AES-128 from cryptography)
    good = _success_with(scep_server, ca_key, lambda requester: _issue(scep_server.ca, ca_key, requester.public_key()))
    result = ScepClient(good, _settings(scep_server.url, "device-success")).enroll(key)
    assert result.certificate.issuer == scep_server.ca.subject and _spki(result.certificate) == _spki(key)
    # a certificate for another key
    other_key_cert = _success_with(scep_server, ca_key, lambda r: _issue(scep_server.ca, ca_key, generate_key(2048).public_key()))
    with pytest.raises(ScepError, match="no certificate for this device's key"):
        ScepClient(other_key_cert, _settings(scep_server.url, "device-success-2")).enroll(key)
    # a certificate for our key, issued by someone else
    foreign = _success_with(scep_server, ca_key, lambda requester: _issue(other_ca, other_key, requester.public_key()))
    with pytest.raises(ScepError, match="not issued by the SCEP service's CA"):
        ScepClient(foreign, _settings(scep_server.url, "device-success-3")).enroll(key)
