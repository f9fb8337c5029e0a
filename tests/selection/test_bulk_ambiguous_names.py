"""Bulk naming (issue 9 item 11): a name that fits several devices by different keys is a 409 and
queues nothing; ``id:``, ``udid:`` and ``serial_number:`` name one device by one key."""

from __future__ import annotations

from sqlalchemy import func, select

from mdmserver.records.commands import Command
from mdmserver.records.devices import Device

VICTIM_UDID = "00008030-001A2B3C4D5E802E"


def _device(session, udid: str, serial: str) -> Device:
    device = Device(udid=udid, serial_number=serial, platform="ios", enrolled=True,
                    admission_status="accepted")
    session.add(device)
    session.flush()
    return device


def _queued(session) -> int:
    return session.scalar(select(func.count()).select_from(Command))


def test_bulk_action_refuses_a_name_that_fits_two_devices(client, auth, db_session) -> None:
    victim = _device(db_session, VICTIM_UDID, "F2LXK0AAAAAA")
    # a rogue device reported the victim's UDID as its serial number
    rogue = _device(db_session, "0000000000000000000000000000000000000001", VICTIM_UDID)
    db_session.commit()
    before = _queued(db_session)
    answer = client.post("/api/v1/actions/lock", json={"devices": [VICTIM_UDID]},
                         headers=auth("read", "write"))
    assert answer.status_code == 409, answer.get_json()
    error = answer.get_json()["errors"][0]
    assert error["code"] == "ambiguous_device" and VICTIM_UDID in error["detail"]
    assert error["source"] == {"pointer": "/devices"}
    assert _queued(db_session) == before

    # one key names one device: the victim by its UDID, the rogue by its id
    for name, expected in ((f"udid:{VICTIM_UDID}", victim.id), (f"id:{rogue.id}", rogue.id)):
        answer = client.post("/api/v1/actions/lock", json={"devices": [name]}, headers=auth("read", "write"))
        assert answer.status_code == 200, answer.get_json()
        queued = db_session.scalars(
            select(Command.device_id).where(Command.request_type == "DeviceLock")).all()
        assert expected in queued
