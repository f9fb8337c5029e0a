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

from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.pki import service as pki
from mdmserver.pki import x509
from mdmserver.protocol.plist import load_dict
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


def test_fresh_certificate_for_an_existing_udid_takes_nothing_over(live, api) -> None:
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

    # the attacker: a fresh identity from /mdm/enroll, the victim's UDID (and serial number)
    attacker = SimulatedDevice(HttpxTransport(live.url), udid=victim.udid, serial_number=victim.serial_number,
                               seed=666)
    attacker.enroll()
    assert attacker.authenticate() == 200

    # no BootstrapToken, no commands while pending; the real device is now refused
    assert _get_bootstrap(attacker) == (200, {})
    assert attacker.idle() == (200, None)
    assert victim.idle()[0] == 403

    # the administrator sees a flagged re-binding with both certificates; nothing is accepted
    device = _device(api, device_id)["attributes"]
    assert device["admission_status"] == "pending"
    assert not device["has_unlock_token"] and not device["has_bootstrap_token"]
    new = _auth_set_of(api, device_id, attacker)
    assert new["status"] == "pending" and new["rebinding"] is True
    assert new["certificate_fingerprint"] == fingerprint(attacker.identity)
    assert new["previous_certificate_fingerprint"] == fingerprint(victim.identity)
    assert _auth_set_of(api, device_id, victim)["rebinding"] is False

    # secret-bearing commands are cancelled, the others wait
    assert _command_status(api, clear) == "cancelled"
    assert _command_status(api, install) == "cancelled"
    assert _command_status(api, harmless) == "queued"
    events = api.get("/api/v1/audit_events", params={"filter[action]": "device:auth_set:rebind",
                                                      "filter[resource_id]": device_id}).json()["data"]
    assert len(events) == 1 and sorted(events[0]["attributes"]["details"]["cancelled_commands"]) == sorted(
        [clear, install])

    # even once an administrator accepts, the victim's secrets are gone for good
    assert api.put(f"{ADM}/devices/{new['id']}/status", json={"status": "accepted"}).status_code == 200
    status, command = attacker.idle()
    assert status == 200 and command["Command"]["RequestType"] == "DeviceInformation"
    assert "UnlockToken" not in command["Command"]
    assert attacker.send("/mdm/connect", attacker.answer(command["CommandUUID"], "DeviceInformation",
                                                         command["Command"]))[0] == 200
    assert _get_bootstrap(attacker) == (200, {})
    assert api.post(f"/api/v1/devices/{device_id}/actions/clear_passcode").status_code == 409


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
    assert _device(api, victim.udid)["attributes"]["admission_status"] == "pending"


def test_returning_to_an_older_certificate_is_a_rebinding_too(live, api) -> None:
    first = _enrolled(live, seed=51)
    second = SimulatedDevice(HttpxTransport(live.url), udid=first.udid, seed=52)
    second.enroll()
    assert second.authenticate() == 200
    device_id = _device(api, first.udid)["id"]
    new = _auth_set_of(api, device_id, second)
    assert new["status"] == "pending"
    assert api.put(f"{ADM}/devices/{new['id']}/status", json={"status": "accepted"}).status_code == 200
    # the first certificate's auth set was accepted once: going back to it still waits for an admin
    assert first.authenticate() == 200
    assert _device(api, device_id)["attributes"]["admission_status"] == "pending"
    assert first.idle() == (200, None) and second.idle()[0] == 403


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
    attacker.checkout()
    again = SimulatedDevice(HttpxTransport(live.url), udid=victim.udid, serial_number=victim.serial_number,
                            seed=913)
    again.enroll()
    assert again.authenticate() == 200
    assert again.token_update() == 200
    assert _device(api, device_id)["attributes"]["admission_status"] == "pending"
    assert _auth_set_of(api, device_id, again)["status"] == "pending"
    _enqueue(api, device_id, "DeviceLock", {"PIN": "123456"})
    assert again.idle() == (200, None)
