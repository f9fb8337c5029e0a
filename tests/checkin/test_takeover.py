"""Attack tests for device identity and binding (issue 9, items 1, 11 and 12), over real HTTP with
the simulator's genuinely signed requests: someone else tries every place where a device proves who
it is, and fails.

Each test reads the outcome through the admin API (and the Mender admission API), the way an
administrator would see it.
"""

from __future__ import annotations

import base64
import plistlib

import httpx
import pytest
from sqlalchemy import select, update

from mdmserver.collaborators import secret_box
from mdmserver.db import db, utcnow
from mdmserver.pki import service as pki
from mdmserver.pki import x509
from mdmserver.pki.models import Certificate
from mdmserver.protocol.plist import load_dict
from mdmserver.records.admission import AuthSet
from mdmserver.records.devices import Device
from mdmserver.simulator.device import HttpxTransport, Identity, SimulatedDevice, fingerprint

ADM = "/api/management/v1/admission"
FORBIDDEN = (403, b"forbidden\n")


def _device(api: httpx.Client, ident: str) -> dict:
    response = api.get(f"/api/v1/devices/{ident}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _auth_sets(api: httpx.Client, device_id: str) -> list[dict]:
    return api.get(f"{ADM}/devices", params={"device_id": device_id}).json()


def _enrolled(live, **kw) -> SimulatedDevice:
    sim = SimulatedDevice(HttpxTransport(live.url), **kw)
    sim.enroll()
    assert sim.authenticate() == 200
    assert sim.token_update() == 200
    return sim


def _auth_set_of(api: httpx.Client, device_id: str, sim: SimulatedDevice) -> dict:
    """The auth set of ``sim``'s enrollment certificate (found by its public key)."""
    key = x509.public_key_pem(sim.identity.certificate)
    return next(a for a in _auth_sets(api, device_id) if a["key"] == key)


def _binary(message: dict) -> bytes:
    """A binary property list: XML cannot carry most control characters, binary plists can."""
    return plistlib.dumps(message, fmt=plistlib.FMT_BINARY)


def _get_bootstrap(sim: SimulatedDevice) -> tuple[int, dict | None]:
    status, body = sim.send("/mdm/checkin", {"MessageType": "GetBootstrapToken", "UDID": sim.udid})
    return status, (load_dict(body) if status == 200 and body else None)


def _enqueue(api: httpx.Client, device_id: str, request_type: str, parameters=None) -> str:
    response = api.post(f"/api/v1/devices/{device_id}/commands",
                        json={"request_type": request_type, "parameters": parameters})
    assert response.status_code in (201, 202), response.text
    return response.json()["data"]["id"]


def _command_status(api: httpx.Client, command_uuid: str) -> str:
    return api.get(f"/api/v1/commands/{command_uuid}").json()["data"]["attributes"]["status"]


def _stored(live, udid: str) -> Device:
    """The device row as stored (push token and binding are not in the API), detached."""
    with live.app.app_context():
        device = db.session.scalar(select(Device).where(Device.udid == udid))
        db.session.expunge(device)
        return device


def _stored_auth_set(live, auth_set_id: str) -> AuthSet:
    with live.app.app_context():
        auth_set = db.session.get(AuthSet, auth_set_id)
        db.session.expunge(auth_set)
        return auth_set


def _rebind_events(api: httpx.Client, device_id: str) -> list[dict]:
    return api.get("/api/v1/audit_events", params={"filter[action]": "device:auth_set:rebind",
                                                   "filter[resource_id]": device_id}).json()["data"]


def _impostor(live, victim: SimulatedDevice, seed: int) -> SimulatedDevice:
    """A fresh identity from /mdm/enroll claiming the victim's UDID and serial number."""
    sim = SimulatedDevice(HttpxTransport(live.url), udid=victim.udid, serial_number=victim.serial_number, seed=seed)
    sim.enroll()
    return sim


def test_fresh_certificate_for_an_existing_udid_takes_nothing_over(live, api) -> None:
    """The re-binding denial of service: one Authenticate from a fresh identity used to move the
    binding, wipe the device's secrets and cut the real device off for good. While the previous
    binding is valid it is held for an administrator and nothing changes for the device."""
    victim = _enrolled(live)
    bootstrap = b"victim-bootstrap-token"
    assert victim.send("/mdm/checkin", {"MessageType": "SetBootstrapToken", "UDID": victim.udid,
                                        "BootstrapToken": bootstrap})[0] == 200
    device = _device(api, victim.udid)
    device_id = device["id"]
    assert device["attributes"]["admission_status"] == "accepted"
    assert device["attributes"]["has_unlock_token"] and device["attributes"]["has_bootstrap_token"]

    # the administrator queues commands the real device has not fetched yet
    clear = _enqueue(api, device_id, "ClearPasscode")
    profile = plistlib.dumps({"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.x.wifi",
                              "PayloadUUID": "0F0F0F0F-0000-4000-8000-000000000001", "PayloadContent": []})
    install = _enqueue(api, device_id, "InstallProfile", {"Payload": base64.b64encode(profile).decode()})
    harmless = _enqueue(api, device_id, "DeviceInformation", {"Queries": ["OSVersion"]})

    # the attacker: a fresh identity from /mdm/enroll, the victim's UDID (and serial number). An
    # Apple device aborts its enrollment unless Authenticate and TokenUpdate are answered 200
    attacker = _impostor(live, victim, seed=666)
    assert attacker.authenticate() == 200
    assert attacker.token_update() == 200

    # everything else it sends is refused (403, never 401): no commands, no BootstrapToken, no CheckOut
    assert attacker.idle() == (403, None)
    assert attacker.send("/mdm", {"UDID": attacker.udid, "Status": "Idle"}) == FORBIDDEN
    assert _get_bootstrap(attacker) == (403, None)
    assert attacker.send("/mdm/checkin", {"MessageType": "SetBootstrapToken", "UDID": attacker.udid,
                                          "BootstrapToken": b"attacker"}) == FORBIDDEN
    assert attacker.checkout() == 403
    assert attacker.send("/mdm/checkin", {"MessageType": "TokenUpdate", "UDID": attacker.udid,
                                          "Topic": "com.apple.mgmt.someone-else", "Token": b"t",
                                          "PushMagic": "m"}) == FORBIDDEN

    # the device is untouched: status, binding, push token, secrets
    attributes = _device(api, device_id)["attributes"]
    assert attributes["admission_status"] == "accepted" and attributes["enrolled"]
    assert attributes["has_unlock_token"] and attributes["has_bootstrap_token"] and attributes["has_push_token"]
    stored = _stored(live, victim.udid)
    assert stored.identity_fingerprint == fingerprint(victim.identity)
    assert stored.push_token == victim.push_token and stored.push_magic == victim.push_magic

    # the administrator sees a flagged, held re-binding with both certificates; nothing is accepted
    new = _auth_set_of(api, device_id, attacker)
    assert new["status"] == "pending" and new["rebinding"] is True and new["held"] is True
    assert new["certificate_fingerprint"] == fingerprint(attacker.identity)
    assert new["previous_certificate_fingerprint"] == fingerprint(victim.identity)
    old = _auth_set_of(api, device_id, victim)
    assert old["status"] == "accepted" and old["rebinding"] is False and old["held"] is False
    # the attacker's TokenUpdate is kept on its auth set, the UnlockToken sealed
    held = _stored_auth_set(live, new["id"])
    assert held.held_push_token == attacker.push_token and held.held_push_magic == attacker.push_magic
    assert held.held_unlock_token_encrypted and attacker.unlock_token not in held.held_unlock_token_encrypted

    # no command is cancelled: they are the real device's
    assert [_command_status(api, c) for c in (clear, install, harmless)] == ["queued"] * 3
    (event,) = _rebind_events(api, device_id)
    details = event["attributes"]["details"]
    assert details["previous_binding_valid"] is True and details["binding_moved"] is False
    assert details["cancelled_commands"] == [] and details["held_auth_set"] == new["id"]

    # the real device goes on: its commands (ClearPasscode with its own UnlockToken), its TokenUpdate,
    # its BootstrapToken
    handled = victim.run_session()
    assert sorted((t, st) for _, t, st in handled) == [
        ("ClearPasscode", "Acknowledged"), ("DeviceInformation", "Acknowledged"), ("InstallProfile", "Acknowledged")]
    assert dict(victim.received)["ClearPasscode"]["UnlockToken"] == victim.unlock_token
    assert victim.token_update() == 200
    assert _get_bootstrap(victim) == (200, {"BootstrapToken": bootstrap})
    assert attacker.idle() == (403, None)


def test_rejecting_a_held_rebinding_changes_nothing_for_the_device(live, api) -> None:
    victim = _enrolled(live, seed=21)
    device_id = _device(api, victim.udid)["id"]
    attacker = _impostor(live, victim, seed=22)
    assert attacker.authenticate() == 200 and attacker.token_update() == 200
    new = _auth_set_of(api, device_id, attacker)
    assert api.put(f"{ADM}/devices/{new['id']}/status", json={"status": "rejected"}).status_code == 200

    attributes = _device(api, device_id)["attributes"]
    assert attributes["admission_status"] == "accepted" and attributes["has_unlock_token"]
    assert _stored(live, victim.udid).identity_fingerprint == fingerprint(victim.identity)
    # a rejected enrollment is refused everything, and authenticating again does not lift that
    assert attacker.authenticate() == 403 and attacker.token_update() == 403 and attacker.idle()[0] == 403
    assert _auth_set_of(api, device_id, attacker)["status"] == "rejected"
    assert _device(api, device_id)["attributes"]["admission_status"] == "accepted"

    info = _enqueue(api, device_id, "DeviceInformation", {"Queries": ["OSVersion"]})
    status, command = victim.idle()
    assert status == 200 and command["CommandUUID"] == info
    assert victim.token_update() == 200


def test_accepting_a_held_rebinding_moves_the_binding(live, api) -> None:
    """A genuine re-enrollment (or an impostor an administrator believed): accepting the held auth set
    moves the binding to its certificate, with its push token and UnlockToken; the previous
    enrollment's secrets and secret-bearing commands go, and its certificate is refused."""
    victim = _enrolled(live, seed=31)
    assert victim.send("/mdm/checkin", {"MessageType": "SetBootstrapToken", "UDID": victim.udid,
                                        "BootstrapToken": b"old-bootstrap"})[0] == 200
    device_id = _device(api, victim.udid)["id"]
    clear = _enqueue(api, device_id, "ClearPasscode")
    info = _enqueue(api, device_id, "DeviceInformation", {"Queries": ["OSVersion"]})
    newcomer = _impostor(live, victim, seed=32)
    assert newcomer.authenticate() == 200 and newcomer.token_update() == 200
    assert newcomer.unlock_token != victim.unlock_token and newcomer.push_token != victim.push_token
    new = _auth_set_of(api, device_id, newcomer)

    response = api.put(f"{ADM}/devices/{new['id']}/status", json={"status": "accepted"})
    assert response.status_code == 200, response.text

    stored = _stored(live, victim.udid)
    assert stored.identity_fingerprint == fingerprint(newcomer.identity)
    assert stored.push_token == newcomer.push_token and stored.push_magic == newcomer.push_magic
    attributes = _device(api, device_id)["attributes"]
    assert attributes["admission_status"] == "accepted" and attributes["enrolled"]
    assert attributes["has_unlock_token"] and not attributes["has_bootstrap_token"]
    # the previous auth set is no longer the accepted one; the accepted one holds nothing any more
    assert _auth_set_of(api, device_id, victim)["status"] == "rejected"
    accepted = _auth_set_of(api, device_id, newcomer)
    assert accepted["status"] == "accepted" and accepted["held"] is False
    assert _stored_auth_set(live, new["id"]).held_push_token is None
    # secret-bearing commands were the previous holder's: cancelled; the others wait for the new one
    assert _command_status(api, clear) == "cancelled" and _command_status(api, info) == "queued"
    events = api.get("/api/v1/audit_events", params={"filter[action]": "device:auth_set:accept",
                                                      "filter[resource_id]": new["id"]}).json()["data"]
    (event,) = events
    details = event["attributes"]["details"]
    assert details["binding_moved"] is True and details["cancelled_commands"] == [clear]
    assert details["previous_certificate_fingerprint"] == fingerprint(victim.identity)

    # the old certificate is refused, the new holder receives commands
    assert victim.idle()[0] == 403 and victim.token_update() == 403
    status, command = newcomer.idle()
    assert status == 200 and command["CommandUUID"] == info
    assert newcomer.send("/mdm/connect", newcomer.answer(command["CommandUUID"], "DeviceInformation",
                                                         command["Command"]))[0] == 200
    # the old UnlockToken and BootstrapToken are gone: a new ClearPasscode carries the held UnlockToken
    assert _get_bootstrap(newcomer) == (200, {})
    assert api.post(f"/api/v1/devices/{device_id}/actions/clear_passcode").status_code == 202
    status, command = newcomer.idle()
    assert status == 200 and command["Command"]["RequestType"] == "ClearPasscode"
    assert command["Command"]["UnlockToken"] == newcomer.unlock_token


def test_a_held_certificate_cannot_claim_a_second_device(live, api) -> None:
    a, b = _enrolled(live, seed=35), _enrolled(live, seed=36)
    attacker = _impostor(live, a, seed=37)
    assert attacker.authenticate() == 200
    attacker.udid = b.udid
    assert attacker.authenticate() == 403
    assert [x["held"] for x in _auth_sets(api, _device(api, b.udid)["id"])] == [False]


@pytest.mark.parametrize("ended", ["expired", "revoked", "checked_out"])
def test_rebinding_moves_at_once_when_the_previous_binding_ended(live, api, ended) -> None:
    victim = _enrolled(live, seed={"expired": 141, "revoked": 142, "checked_out": 143}[ended])
    device_id = _device(api, victim.udid)["id"]
    clear = _enqueue(api, device_id, "ClearPasscode")
    if ended == "checked_out":
        assert victim.checkout() == 200
    else:
        with live.app.app_context():
            values = {"not_after": utcnow()} if ended == "expired" else {"revoked_at": utcnow()}
            db.session.execute(update(Certificate).where(Certificate.fingerprint_sha256 == fingerprint(victim.identity))
                               .values(**values))
            db.session.commit()
    newcomer = _impostor(live, victim, seed={"expired": 151, "revoked": 152, "checked_out": 153}[ended])
    assert newcomer.authenticate() == 200
    assert _stored(live, victim.udid).identity_fingerprint == fingerprint(newcomer.identity)
    attributes = _device(api, device_id)["attributes"]
    assert not attributes["has_unlock_token"]
    assert attributes["admission_status"] == "accepted"  # auto policy: the old binding ended
    new = _auth_set_of(api, device_id, newcomer)
    assert new["rebinding"] is True and new["held"] is False
    assert _command_status(api, clear) == "cancelled"
    (event,) = _rebind_events(api, device_id)
    assert event["attributes"]["details"]["binding_moved"] is True
    assert event["attributes"]["details"]["previous_binding_valid"] is False
    assert victim.idle()[0] == 403
    assert newcomer.token_update() == 200 and newcomer.idle() == (200, None)


def test_rebinding_ignores_preauthorization(live, api, monkeypatch) -> None:
    monkeypatch.setitem(live.app.config, "ADMISSION_POLICY", "manual")
    victim = SimulatedDevice(HttpxTransport(live.url), seed=41)
    assert api.post(f"{ADM}/devices", json={"device_identity": f'{{"udid": "{victim.udid}"}}'}).status_code == 201
    victim.enroll()
    assert victim.authenticate() == 200
    assert _device(api, victim.udid)["attributes"]["admission_status"] == "accepted"
    attacker = SimulatedDevice(HttpxTransport(live.url), udid=victim.udid, seed=42)
    attacker.enroll()
    assert attacker.authenticate() == 200
    # the re-binding is held (not admitted by the preauthorization); the device keeps its status
    assert _auth_set_of(api, _device(api, victim.udid)["id"], attacker)["status"] == "pending"
    assert _device(api, victim.udid)["attributes"]["admission_status"] == "accepted"
    assert attacker.idle()[0] == 403 and victim.idle() == (200, None)


def test_returning_to_an_older_certificate_is_a_rebinding_too(live, api) -> None:
    first = _enrolled(live, seed=51)
    second = SimulatedDevice(HttpxTransport(live.url), udid=first.udid, seed=52)
    second.enroll()
    assert second.authenticate() == 200
    device_id = _device(api, first.udid)["id"]
    new = _auth_set_of(api, device_id, second)
    assert new["status"] == "pending"
    assert api.put(f"{ADM}/devices/{new['id']}/status", json={"status": "accepted"}).status_code == 200
    assert second.idle() == (200, None) and first.idle()[0] == 403
    old = _auth_set_of(api, device_id, first)
    assert old["status"] == "rejected"  # no longer the accepted one
    # the first certificate's auth set was accepted once: going back to it still waits for an admin
    # (it was rejected when the binding moved: authenticating again does not lift that)
    assert first.authenticate() == 403
    old = _auth_set_of(api, device_id, first)
    assert old["status"] == "rejected" and old["held"] is True
    assert _device(api, device_id)["attributes"]["admission_status"] == "accepted"
    assert second.idle() == (200, None)
    # an administrator may move the binding back
    assert api.put(f"{ADM}/devices/{old['id']}/status", json={"status": "accepted"}).status_code == 200
    assert first.token_update() == 200 and first.idle() == (200, None) and second.idle()[0] == 403


def test_reenrolling_after_checkout_follows_the_policy_but_forgets_secrets(live, api) -> None:
    device = _enrolled(live, seed=55)
    device_id = _device(api, device.udid)["id"]
    assert device.checkout() == 200
    again = SimulatedDevice(HttpxTransport(live.url), udid=device.udid, seed=56)
    again.enroll()
    assert again.authenticate() == 200
    attributes = _device(api, device_id)["attributes"]
    assert attributes["admission_status"] == "accepted"  # auto policy: the old binding ended
    assert not attributes["has_unlock_token"]
    new = _auth_set_of(api, device_id, again)
    assert new["rebinding"] is True and new["previous_certificate_fingerprint"] == fingerprint(device.identity)
    assert device.idle()[0] == 403


def test_rejected_device_does_not_come_back_by_enrolling_again(live, api) -> None:
    device = _enrolled(live, seed=61)
    device_id = _device(api, device.udid)["id"]
    (old,) = _auth_sets(api, device_id)
    assert api.put(f"{ADM}/devices/{old['id']}/status", json={"status": "rejected"}).status_code == 200
    assert device.idle()[0] == 403

    again = SimulatedDevice(HttpxTransport(live.url), udid=device.udid, seed=62)
    again.enroll()  # a new enrollment profile: new certificate, same UDID, auto admission
    assert again.authenticate() == 403
    assert again.idle()[0] == 403 and again.token_update() == 403
    assert _device(api, device_id)["attributes"]["admission_status"] == "rejected"
    new = _auth_set_of(api, device_id, again)
    assert new["status"] == "rejected" and new["rebinding"] is True
    assert new["previous_certificate_fingerprint"] == fingerprint(device.identity)

    # unless an administrator allows it
    assert api.put(f"{ADM}/devices/{new['id']}/status", json={"status": "accepted"}).status_code == 200
    assert again.idle() == (200, None)
    assert device.idle()[0] == 403


def test_decommissioned_device_does_not_come_back_by_enrolling_again(live, api) -> None:
    device = _enrolled(live, seed=71)
    device_id = _device(api, device.udid)["id"]
    (auth_set,) = _auth_sets(api, device_id)
    assert api.delete(f"{ADM}/devices/{auth_set['id']}").status_code == 204
    again = SimulatedDevice(HttpxTransport(live.url), udid=device.udid, seed=72)
    again.enroll()
    assert again.authenticate() == 403
    assert _device(api, device_id)["attributes"]["admission_status"] == "decommissioned"


def test_deleted_device_certificate_is_revoked(live, api) -> None:
    device = _enrolled(live, seed=81)
    device_id = _device(api, device.udid)["id"]
    assert api.delete(f"/api/v1/devices/{device_id}").status_code == 204
    # the old certificate cannot re-create the device, nor speak for it
    assert device.authenticate() == 403
    assert device.idle()[0] == 403
    assert api.get(f"/api/v1/devices/{device.udid}").status_code == 404
    (revoked,) = api.get("/api/v1/certificates",
                         params={"filter[fingerprint_sha256]": fingerprint(device.identity)}).json()["data"]
    assert revoked["attributes"]["revoked_at"]
    # a new enrollment goes through admission like any new device
    fresh = SimulatedDevice(HttpxTransport(live.url), udid=device.udid, seed=82)
    fresh.enroll()
    assert fresh.authenticate() == 200


def test_revoked_certificate_is_refused_on_every_request(live, api) -> None:
    device = _enrolled(live, seed=85)
    with live.app.app_context():
        assert pki.revoke_certificates(db.session, [fingerprint(device.identity)]) == 1
        db.session.commit()
    assert device.idle()[0] == 403
    assert device.token_update() == 403
    assert device.authenticate() == 403


def test_another_devices_certificate_is_refused(live, api) -> None:
    a, b = _enrolled(live, seed=91), _enrolled(live, seed=92)
    assert a.send("/mdm/connect", {"UDID": a.udid, "Status": "Idle"}, misbehave="other_device_cert", other=b) == FORBIDDEN
    assert a.send("/mdm/checkin", a.authenticate_message(), misbehave="other_device_cert", other=b) == FORBIDDEN
    assert _device(api, a.udid)["attributes"]["admission_status"] == "accepted"


@pytest.mark.parametrize("which", ["ca", "server_identity"])
def test_ca_and_server_identity_cannot_sign_device_requests(live, api, which) -> None:
    device = _enrolled(live, seed=95 if which == "ca" else 96)
    with live.app.app_context():
        cert, key = pki.get_ca(db.session, secret_box()) if which == "ca" else pki.get_server_identity(db.session, secret_box())
    impostor = SimulatedDevice(HttpxTransport(live.url), udid=device.udid, topic=device.topic)
    impostor.identity = Identity(cert, key)
    assert impostor.send("/mdm/checkin", impostor.authenticate_message()) == FORBIDDEN
    assert impostor.send("/mdm/connect", {"UDID": device.udid, "Status": "Idle"}) == FORBIDDEN
    assert impostor.send("/mdm/checkin", {"MessageType": "GetBootstrapToken", "UDID": device.udid}) == FORBIDDEN
    assert device.idle() == (200, None)


@pytest.mark.parametrize("field,value", [
    ("UDID", "0000FACE-0123456789ABCDEF\nINFO forged log line"),
    ("UDID", "0000FACE-0123456789ABCDEF\r"),
    ("SerialNumber", "C02X\nY"),
    ("Topic", "com.apple.mgmt.x\u2028y"),
    ("IMEI", "35 000\x1b[2J"),
    ("DeviceName", "Phone\nroot"),
])
def test_control_characters_in_authenticate_are_400(live, api, field, value) -> None:
    sim = SimulatedDevice(HttpxTransport(live.url), udid="0000FACE-0123456789ABCDEF")
    sim.enroll()
    status, body = sim.send("/mdm/checkin", _binary({**sim.authenticate_message(), field: value}))
    assert status == 400 and field.encode() in body
    assert api.get("/api/v1/devices/0000FACE-0123456789ABCDEF").status_code == 404


def test_control_characters_in_later_messages_are_400(live) -> None:
    sim = _enrolled(live, seed=97)
    assert sim.send("/mdm/connect", _binary({"UDID": sim.udid + "\n", "Status": "Idle"}))[0] == 400
    assert sim.send("/mdm/connect", _binary({"UDID": sim.udid, "Status": "Error", "CommandUUID": "A\x07B"}))[0] == 400
    assert sim.send("/mdm/checkin", _binary({"MessageType": "TokenUpdate", "UDID": sim.udid, "UserID": "u\n1",
                                             "Token": b"t"}))[0] == 400
    assert sim.send("/mdm/checkin", _binary({"MessageType": "CheckOut", "UDID": sim.udid,
                                             "Topic": "t\u202e"}))[0] == 400
    assert sim.idle() == (200, None)


def test_udid_equal_to_another_devices_serial_is_refused(live, api) -> None:
    victim = _enrolled(live, seed=98)
    rogue = SimulatedDevice(HttpxTransport(live.url), udid=victim.serial_number, seed=99)
    rogue.enroll()
    status, body = rogue.send("/mdm/checkin", rogue.authenticate_message())
    assert status == 400 and b"UDID" in body
    # the administrator's lookup by serial number still finds the real device
    assert _device(api, victim.serial_number)["attributes"]["udid"] == victim.udid


@pytest.mark.parametrize("udid", [
    "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69",  # classic 40 hex
    "00008030-001A2B3C4D5E802E",  # iPhone XS and later, Apple silicon
    "2F6DE437-7C14-5735-85B4-DC6B365BCAF1",  # an Intel Mac's hardware UUID
])
def test_apple_udid_shapes_enroll(live, udid) -> None:
    sim = SimulatedDevice(HttpxTransport(live.url), udid=udid)
    sim.enroll()
    assert sim.authenticate() == 200


@pytest.mark.parametrize("udid", ["1", "C02MT66KFLHH", "00008030-001A2B3C4D5E802", "../../etc", "g" * 40,
                                  "2F6DE437-7C14-5735-85B4-DC6B365BCAF1-"])
def test_other_udid_shapes_are_400(live, udid) -> None:
    sim = SimulatedDevice(HttpxTransport(live.url), udid=udid)
    sim.enroll()
    assert sim.authenticate() == 400


def test_impostor_checkout_does_not_end_the_victims_binding(live, api) -> None:
    """Review of issue 9: an impostor's pending re-binding checks out (signed with its own key), then
    enrolls once more: under ``auto`` that third identity must not be admitted as if the real device
    had checked out, nor receive the administrator's next commands."""
    victim = _enrolled(live, seed=911)
    device_id = _device(api, victim.udid)["id"]
    attacker = SimulatedDevice(HttpxTransport(live.url), udid=victim.udid, serial_number=victim.serial_number,
                               seed=912)
    attacker.enroll()
    assert attacker.authenticate() == 200
    assert attacker.token_update() == 200
    assert attacker.checkout() == 403  # a held enrollment cannot check the device out
    again = SimulatedDevice(HttpxTransport(live.url), udid=victim.udid, serial_number=victim.serial_number,
                            seed=913)
    again.enroll()
    assert again.authenticate() == 200
    assert again.token_update() == 200
    assert _device(api, device_id)["attributes"]["admission_status"] == "accepted"
    assert _auth_set_of(api, device_id, again)["status"] == "pending"
    lock = _enqueue(api, device_id, "DeviceLock", {"PIN": "123456"})
    assert again.idle() == (403, None) and attacker.idle() == (403, None)
    status, command = victim.idle()
    assert status == 200 and command["CommandUUID"] == lock
