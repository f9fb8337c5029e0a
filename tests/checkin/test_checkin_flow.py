"""Enrollment, check-in and the command channel through the Flask app (in-process)."""

from __future__ import annotations

import plistlib

from sqlalchemy import select

from mdmserver.admission import service as admission
from mdmserver.checkin import service as checkin_service
from mdmserver.collaborators import secret_box
from mdmserver.commands import service as commands
from mdmserver.pki import cms
from mdmserver.protocol import checkin as checkin_messages
from mdmserver.records.admission import AuthSet
from mdmserver.records.commands import Command
from mdmserver.records.devices import Device, DeviceUser
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice


def _device(client, **kw) -> SimulatedDevice:
    device = SimulatedDevice(FlaskTransport(client), **kw)
    device.enroll()
    return device


def _row(db_session, sim: SimulatedDevice) -> Device:
    db_session.expire_all()
    return db_session.scalar(select(Device).where(Device.udid == sim.udid))


def test_enroll_profile_is_signed_and_complete(app, client, topic, monkeypatch) -> None:
    """The PKCS#12 mode's profile (the SCEP mode's, the default, is tested in tests/scep)."""
    monkeypatch.setitem(app.config, "ENROLLMENT_IDENTITY", "pkcs12")
    response = client.get("/mdm/enroll")
    assert response.status_code == 200
    assert response.mimetype == "application/x-apple-aspen-config"
    signed = cms.unwrap_signed(response.data)
    profile = plistlib.loads(signed.content)
    by_type = {p["PayloadType"]: p for p in profile["PayloadContent"]}
    mdm = by_type["com.apple.mdm"]
    assert mdm["ServerURL"].endswith("/mdm/connect") and mdm["CheckInURL"].endswith("/mdm/checkin")
    assert mdm["Topic"] == topic and mdm["SignMessage"] is True and mdm["AccessRights"] == 8191
    assert mdm["IdentityCertificateUUID"] == by_type["com.apple.security.pkcs12"]["PayloadUUID"]
    assert by_type["com.apple.security.pkcs12"]["Password"]
    assert "com.apple.security.root" in by_type
    # every enrollment issues a fresh identity
    again = plistlib.loads(cms.unwrap_signed(client.get("/mdm/enroll").data).content)
    p12s = [p["PayloadContent"] for p in again["PayloadContent"] if p["PayloadType"] == "com.apple.security.pkcs12"]
    assert p12s[0] != by_type["com.apple.security.pkcs12"]["PayloadContent"]


def test_enroll_without_push_certificate_is_503(client, db_session) -> None:
    response = client.get("/mdm/enroll")
    assert response.status_code == 503
    assert b"push-cert import" in response.data


def test_enrollment_secret(app, client, topic, monkeypatch) -> None:
    monkeypatch.setitem(app.config, "ENROLLMENT_SECRET", "s3cret")
    assert client.get("/mdm/enroll").status_code == 403
    # never in the URL (it would be logged), right or wrong
    assert client.get("/mdm/enroll?secret=wrong").status_code == 400
    assert client.get("/mdm/enroll?secret=s3cret").status_code == 400
    import base64

    basic = base64.b64encode(b"device:s3cret").decode()
    assert client.get("/mdm/enroll", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    assert client.get("/mdm/enroll", headers={"Authorization": "Basic !!!"}).status_code == 403


def test_full_flow_manual_admission(client, db_session, topic) -> None:
    sim = _device(client, platform="ios")
    assert sim.authenticate() == 200
    device = _row(db_session, sim)
    assert device.admission_status == "pending" and device.platform == "ios"
    assert device.serial_number == sim.serial_number
    auth_set = db_session.scalar(select(AuthSet).where(AuthSet.device_id == device.id))
    assert auth_set.status == "pending" and '"udid"' in auth_set.identity_data

    assert sim.token_update() == 200
    device = _row(db_session, sim)
    assert device.enrolled and device.push_token == sim.push_token and device.unlock_token_encrypted
    assert sim.unlock_token not in device.unlock_token_encrypted

    queued = commands.enqueue_commands(db_session, [device.id], "DeviceInformation", None, enqueued_by="test", box=secret_box())
    db_session.commit()
    # pending: 200 but no command
    assert sim.idle() == (200, None)

    admission.set_device_status(db_session, device, "accepted")
    db_session.commit()
    handled = sim.run_session()
    assert [(u, t, s) for u, t, s in handled] == [(queued[0]["uuid"], "DeviceInformation", "Acknowledged")]
    device = _row(db_session, sim)
    assert device.device_name == sim.device_name and device.capacity_gb == 119.2
    command = db_session.scalar(select(Command).where(Command.uuid == queued[0]["uuid"]))
    assert command.status == "acknowledged" and command.result and command.completed_at

    assert sim.checkout() == 200
    device = _row(db_session, sim)
    assert device.enrolled is False and device.unenrolled_at is not None


def test_a_checked_out_identity_is_refused(client, db_session, topic, auto_admission) -> None:
    """CheckOut: the device removed its MDM profile, and its identity with it. The same certificate
    afterwards (a replay, a copied key) is refused on both endpoints; enrolling again works."""
    sim = _device(client)
    assert sim.authenticate() == 200 and sim.token_update() == 200
    assert sim.idle() == (200, None)
    assert sim.checkout() == 200
    assert sim.idle() == (403, None)
    assert sim.token_update() == 403
    assert sim.checkout() == 403
    sim.enroll()  # the profile installed again: a new identity
    assert sim.authenticate() == 200 and sim.token_update() == 200
    assert sim.idle() == (200, None)
    assert _row(db_session, sim).enrolled is True


def test_user_channel_token_update(client, db_session, topic, auto_admission) -> None:
    sim = _device(client, platform="macos")
    assert sim.authenticate() == 200 and sim.token_update() == 200
    assert sim.user_token_update() == 200
    device = _row(db_session, sim)
    users = db_session.scalars(select(DeviceUser).where(DeviceUser.device_id == device.id)).all()
    assert [u.short_name for u in users] == ["admin"]
    assert device.enrolled and device.push_token == sim.push_token


def test_not_now_rules(client, db_session, topic, auto_admission) -> None:
    sim = _device(client)
    sim.authenticate()
    sim.token_update()
    device = _row(db_session, sim)
    first = commands.enqueue_commands(db_session, [device.id], "SecurityInfo", {}, enqueued_by="t", box=secret_box())[0]["uuid"]
    second = commands.enqueue_commands(db_session, [device.id], "ProfileList", {}, enqueued_by="t", box=secret_box())[0]["uuid"]
    db_session.commit()
    sim.answer_overrides["SecurityInfo"] = "NotNow"
    handled = sim.run_session()
    # the NotNow'd command is not offered again in the same session, the next one is
    assert [(u, s) for u, _t, s in handled] == [(first, "NotNow"), (second, "Acknowledged")]
    sim.answer_overrides.clear()
    handled = sim.run_session()
    assert [(u, s) for u, _t, s in handled] == [(first, "Acknowledged")]
    assert sim.idle() == (200, None)


def test_enrollment_rate_limit(app, client, topic, monkeypatch) -> None:
    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 2)
    codes = [client.get("/mdm/enroll", environ_base={"REMOTE_ADDR": "10.9.8.7"}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert client.get("/mdm/enroll", environ_base={"REMOTE_ADDR": "10.9.8.6"}).status_code == 200


def test_every_check_in_message_type_has_one_handler():
    """Each MessageType the protocol parses is handled: Authenticate before the device is bound, every
    other one by the dispatch table after it."""
    assert set(checkin_service._BOUND_HANDLERS) == checkin_messages.MESSAGE_TYPES - {"Authenticate"}
