"""Issue 9 item 11: an identifier in an admin route that names different devices by different keys
is a 409, never a guess (a rogue device whose UDID is a real device's serial number must not receive
the administrator's lock)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from mdmserver.records.commands import Command
from tests.factories import make_device


def _queued(db_session) -> int:
    return db_session.scalar(select(func.count()).select_from(Command))


@pytest.fixture
def victim_and_rogue(db_session):
    # inserted directly: the device side refuses such UDIDs (the rogue predates that check)
    victim = make_device(db_session, platform="ios", is_supervised=True, serial_number="C02XK1ABJGH5",
                         udid="00008030-001A2D8E3C82802E")
    rogue = make_device(db_session, platform="ios", is_supervised=True, serial_number="F17ROGUE0001",
                        udid="C02XK1ABJGH5")
    return victim, rogue


def test_udid_equal_to_another_serial_is_a_conflict(client, auth, db_session, victim_and_rogue):
    victim, rogue = victim_and_rogue
    h = auth("read", "write")
    response = client.get("/api/v1/devices/C02XK1ABJGH5", headers=h)
    assert response.status_code == 409
    body = response.get_json()
    error = body["errors"][0]
    assert error["status"] == "409" and error["code"] == "ambiguous_device"
    assert f"device {victim.id} by serial_number" in error["detail"]
    assert f"device {rogue.id} by udid" in error["detail"]
    assert body["meta"]["matches"] == [{"id": str(victim.id), "keys": ["serial_number"]},
                                       {"id": str(rogue.id), "keys": ["udid"]}]
    assert body["meta"]["request_id"] == response.headers["X-Request-ID"]

    before = _queued(db_session)
    for path in ("/api/v1/devices/C02XK1ABJGH5/actions/lock", "/api/v1/devices/C02XK1ABJGH5/actions/complete_wipe"):
        locked = client.post(path, json={"parameters": {}}, headers=h)
        assert locked.status_code == 409, locked.get_json()
        assert locked.get_json()["errors"][0]["code"] == "ambiguous_device"
    assert client.post("/api/v1/devices/C02XK1ABJGH5/push", headers=h).status_code == 409
    assert client.get("/api/v1/devices/C02XK1ABJGH5/actions", headers=h).status_code == 409
    assert _queued(db_session) == before  # nothing was queued for either device

    # one key at a time names exactly one device
    by_serial = client.get("/api/v1/devices/serial_number:C02XK1ABJGH5", headers=h).get_json()["data"]
    assert by_serial["id"] == str(victim.id)
    by_udid = client.get("/api/v1/devices/udid:C02XK1ABJGH5", headers=h).get_json()["data"]
    assert by_udid["id"] == str(rogue.id)
    locked = client.post(f"/api/v1/devices/id:{victim.id}/actions/lock", json={"parameters": {}}, headers=h)
    assert locked.status_code == 202
    command = db_session.scalar(select(Command).where(Command.uuid == locked.get_json()["data"][0]["id"]))
    assert command.device_id == victim.id and command.request_type == "DeviceLock"
    # unambiguous identifiers work as before
    assert client.get(f"/api/v1/devices/{victim.udid}", headers=h).get_json()["data"]["id"] == str(victim.id)
    assert client.get("/api/v1/devices/F17ROGUE0001", headers=h).get_json()["data"]["id"] == str(rogue.id)
    assert client.get(f"/api/v1/devices/{rogue.id}", headers=h).get_json()["data"]["id"] == str(rogue.id)


def test_serial_claimed_twice_or_equal_to_an_id_is_a_conflict(client, auth, db_session):
    h = auth("read", "write")
    real = make_device(db_session, platform="ios", serial_number="DMPXL0000001")
    claimant = make_device(db_session, platform="ios", serial_number="DMPXL0000001")
    response = client.get("/api/v1/devices/DMPXL0000001", headers=h)
    assert response.status_code == 409
    assert response.get_json()["meta"]["matches"] == [{"id": str(real.id), "keys": ["serial_number"]},
                                                      {"id": str(claimant.id), "keys": ["serial_number"]}]
    # a device claiming a serial number that is another device's id
    numeric = make_device(db_session, platform="ios", serial_number=str(real.id))
    before = _queued(db_session)
    response = client.post(f"/api/v1/devices/{real.id}/actions/lock", json={"parameters": {}}, headers=h)
    assert response.status_code == 409
    assert response.get_json()["meta"]["matches"] == [{"id": str(real.id), "keys": ["id"]},
                                                      {"id": str(numeric.id), "keys": ["serial_number"]}]
    assert _queued(db_session) == before
    assert client.get(f"/api/v1/devices/id:{real.id}", headers=h).get_json()["data"]["id"] == str(real.id)
    for missing in ("id:abc", "udid:", "serial_number:NOPE", "NOPE"):
        assert client.get(f"/api/v1/devices/{missing}", headers=h).status_code == 404, missing
