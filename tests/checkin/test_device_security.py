"""Every forged or malformed device request is refused as DESIGN.md says (never 401, never 500)."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from sqlalchemy import select

from mdmserver.admission import service as admission
from mdmserver.checkin import auth as device_auth
from mdmserver.collaborators import secret_box
from mdmserver.pki import cms, x509
from mdmserver.pki import service as pki
from mdmserver.protocol.plist import dump_plist
from mdmserver.records.devices import Device
from mdmserver.simulator.device import FlaskTransport, Identity, SimulatedDevice


@pytest.fixture
def pair(client, topic, auto_admission):
    a = SimulatedDevice(FlaskTransport(client), seed=1)
    b = SimulatedDevice(FlaskTransport(client), seed=2)
    for sim in (a, b):
        sim.enroll()
        assert sim.authenticate() == 200
        assert sim.token_update() == 200
    return a, b


IDLE = "/mdm/connect"


@pytest.mark.parametrize("misbehave", ["unsigned", "foreign_cert", "tampered", "bad_signature"])
@pytest.mark.parametrize("path", ["/mdm/connect", "/mdm/checkin", "/mdm"])
def test_bad_proof_is_403(pair, misbehave, path) -> None:
    a, _b = pair
    message = {"UDID": a.udid, "Status": "Idle"} if path != "/mdm/checkin" else a.authenticate_message()
    status, body = a.send(path, message, misbehave=misbehave)
    assert status == 403 and body == b"forbidden\n"


def test_other_devices_certificate_is_403(pair) -> None:
    a, b = pair
    status, _ = a.send(IDLE, {"UDID": a.udid, "Status": "Idle"}, misbehave="other_device_cert", other=b)
    assert status == 403
    # nor can a device re-bind another device's certificate with Authenticate
    status, _ = a.send("/mdm/checkin", a.authenticate_message(), misbehave="other_device_cert", other=b)
    assert status == 403


def test_garbage_with_valid_signature_is_400(pair) -> None:
    a, _b = pair
    status, body = a.send(IDLE, b"", misbehave="garbage")
    assert status == 400 and b"property list" in body


def test_unsigned_garbage_is_403_not_400(pair) -> None:
    a, _b = pair
    assert a.send(IDLE, b"<plist><dict>", misbehave="unsigned")[0] == 403


def test_size_limit_comes_first(app, pair, monkeypatch) -> None:
    a, _b = pair
    monkeypatch.setitem(app.config, "MAX_DEVICE_BODY_BYTES", 2000)
    big = dump_plist({"UDID": a.udid, "Status": "Idle", "Pad": "x" * 5000})
    assert a.send(IDLE, big, misbehave="unsigned")[0] == 413
    assert a.send(IDLE, big)[0] == 413


def test_unknown_device_is_403(client, topic, auto_admission) -> None:
    sim = SimulatedDevice(FlaskTransport(client))
    sim.enroll()  # enrolled identity, but never authenticated
    assert sim.idle()[0] == 403
    assert sim.token_update() == 403


def test_certificate_not_from_an_enrollment_is_403(client, db_session, topic) -> None:
    # issued by our CA, but never handed out by /mdm/enroll
    ca_cert, ca_key = pki.get_ca(db_session, secret_box())
    key = x509.generate_private_key()
    cert = x509.issue_certificate(ca_cert, ca_key, common_name="stray", public_key=key.public_key())
    sim = SimulatedDevice(FlaskTransport(client))
    sim.identity = Identity(cert, key)
    sim.topic = topic
    assert sim.authenticate() == 403


def test_rejected_device_is_403_everywhere(client, db_session, pair) -> None:
    a, _b = pair
    device = db_session.scalar(select(Device).where(Device.udid == a.udid))
    admission.set_device_status(db_session, device, "rejected")
    db_session.commit()
    assert a.idle()[0] == 403
    assert a.token_update() == 403
    assert a.checkout() == 403
    assert a.authenticate() == 403


def test_decommissioned_device_is_403(client, db_session, pair) -> None:
    a, _b = pair
    device = db_session.scalar(select(Device).where(Device.udid == a.udid))
    admission.decommission(db_session, device)
    db_session.commit()
    assert a.idle()[0] == 403
    assert a.authenticate() == 403


@pytest.mark.parametrize(
    "message,status",
    [
        ({"MessageType": "UserAuthenticate", "UserID": "u1"}, 410),
        ({"MessageType": "OldManYellsAtCloud.gif"}, 400),
        ({"MessageType": "GetToken", "TokenServiceType": "com.apple.maid"}, 400),
        ({"MessageType": 42}, 400),
        ({"MessageType": "TokenUpdate", "Token": 5}, 400),
        ({"MessageType": "DeclarativeManagement", "Endpoint": "status", "Data": b"{not json"}, 400),
        ({"MessageType": "DeclarativeManagement", "Endpoint": "nope"}, 400),
    ],
)
def test_bad_checkins(pair, message, status) -> None:
    a, _b = pair
    code, body = a.send("/mdm/checkin", {**message, "UDID": a.udid})
    assert code == status and body


@pytest.mark.parametrize(
    "message",
    [
        {"Status": "Idle"},
        {"Status": "Bogus"},
        {"Status": "Acknowledged"},
        {"Status": "Error", "CommandUUID": "x", "ErrorChain": "oops"},
        {"MessageType": "Authenticate"},
    ],
)
def test_bad_results_are_400(pair, message) -> None:
    a, _b = pair
    message = dict(message)
    if "Status" in message and message != {"Status": "Idle"}:
        message["UDID"] = a.udid
    assert a.send(IDLE, message)[0] == 400


def test_checkin_endpoint_needs_message_type(pair) -> None:
    a, _b = pair
    assert a.send("/mdm/checkin", {"UDID": a.udid, "Status": "Idle"})[0] == 400


def test_token_update_for_foreign_topic_is_403(client, pair, topic) -> None:
    a, _b = pair
    a.topic = "com.apple.mgmt.External.someone-else"
    assert a.token_update() == 403


def test_user_channel_and_ddm(pair) -> None:
    a, _b = pair
    assert a.send("/mdm/checkin", {"MessageType": "DeclarativeManagement", "UDID": a.udid,
                                   "Endpoint": "tokens"})[0] == 200
    assert a.send(IDLE, {"UDID": a.udid, "Status": "Idle", "UserID": "u1"}) == (200, b"")


def test_proxy_header_auth(app, client, db_session, topic, auto_admission, monkeypatch) -> None:
    monkeypatch.setitem(app.config, "DEVICE_AUTH", "header")
    monkeypatch.setitem(app.config, "CLIENT_CERT_HEADER", "X-Client-Cert")
    monkeypatch.setitem(app.config, "TRUSTED_PROXIES", ["127.0.0.1/32"])  # the test client's address

    def header(identity):
        return {"X-Client-Cert": quote(x509.cert_to_pem(identity.certificate))}

    sim = SimulatedDevice(FlaskTransport(client), header_auth=header)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    assert sim.idle() == (200, None)
    # a signature alone does not count in header mode
    sim.header_auth = None
    assert sim.idle()[0] == 403
    # a foreign certificate in the header is refused; so is junk
    from mdmserver.simulator.device import foreign_identity

    sim.header_auth = lambda _identity: header(foreign_identity())
    assert sim.idle()[0] == 403
    sim.header_auth = lambda _identity: {"X-Client-Cert": "garbage"}
    assert sim.idle()[0] == 403
    # both: either proof works
    monkeypatch.setitem(app.config, "DEVICE_AUTH", "both")
    sim.header_auth = None
    assert sim.idle() == (200, None)
    sim.header_auth = header
    assert sim.idle() == (200, None)


# --- who may sign a device request (issue 9, item 12): only an end-entity client identity --------------


@pytest.fixture(scope="module")
def our_pki():
    ca_cert, ca_key = x509.create_ca("Test MDM CA", organization="Test")
    issued = {}
    for usage in ("client", "signing", "server"):
        key = x509.generate_private_key()
        cert = x509.issue_certificate(ca_cert, ca_key, common_name=f"{usage} identity",
                                      public_key=key.public_key(), usage=usage)
        issued[usage] = (cert, key)
    return {"ca": (ca_cert, ca_key), **issued}


@pytest.mark.parametrize("signer", ["ca", "signing", "server"])
@pytest.mark.parametrize("mode", ["signature", "header"])
def test_ca_and_server_identities_are_not_device_identities(our_pki, signer, mode) -> None:
    ca_cert = our_pki["ca"][0]
    body = dump_plist({"UDID": "00008030-001A2B3C4D5E802E", "Status": "Idle"})

    def attempt(cert, key):
        if mode == "signature":
            signature = base64.b64encode(cms.sign(body, cert, key, detached=True)).decode()
            return device_auth.authenticate(body=body, signature_header=signature, cert_header_value=None,
                                            mode="signature", ca_cert=ca_cert, header_trusted=False)
        return device_auth.authenticate(body=body, signature_header=None, mode="header", ca_cert=ca_cert,
                                        cert_header_value=quote(x509.cert_to_pem(cert)), header_trusted=True)

    # a device identity our CA issued is accepted; the CA itself and the server's identities are not
    assert attempt(*our_pki["client"]).fingerprint == x509.fingerprint_sha256(our_pki["client"][0])
    with pytest.raises(device_auth.DeviceAuthError, match="not a device identity"):
        attempt(*our_pki[signer])


def test_enrollment_certificates_are_device_identities(client, db_session, topic) -> None:
    sim = SimulatedDevice(FlaskTransport(client))
    sim.enroll()
    assert x509.client_identity_problem(sim.identity.certificate) is None
    server_cert, _key = pki.get_server_identity(db_session, secret_box())
    assert x509.client_identity_problem(server_cert) == "certificate is not for client authentication"
    assert x509.client_identity_problem(pki.get_ca_certificate(db_session)) == "certificate is a CA certificate"


def _verdicts(app) -> cms.CertificateVerdicts:
    return app.extensions["mdmserver.device_verdicts"]


def test_cached_certificate_of_a_decommissioned_device_is_403(app, db_session, pair) -> None:
    a, _b = pair
    assert a.idle()[0] == 200 and a.idle()[0] == 200  # the certificate's verdict is cached now
    assert len(_verdicts(app)) >= 1
    device = db_session.scalar(select(Device).where(Device.udid == a.udid))
    admission.decommission(db_session, device)
    db_session.commit()
    assert a.idle()[0] == 403
    assert a.authenticate() == 403


def test_cached_certificate_after_checkout_and_reenrollment_is_403(app, client, db_session, pair) -> None:
    # CheckOut ends the enrollment; the next enrollment of the UDID binds a new certificate. The old
    # certificate's cached verdict (issued by our CA, valid) must not let it speak for the device.
    a, b = pair
    assert a.idle()[0] == 200
    assert len(_verdicts(app)) >= 1
    assert a.checkout() == 200
    again = SimulatedDevice(FlaskTransport(client), udid=a.udid, seed=3)
    again.enroll()
    assert again.authenticate() == 200 and again.token_update() == 200
    assert a.idle()[0] == 403
    assert a.token_update() == 403
    assert again.idle()[0] == 200
    assert b.idle()[0] == 200
