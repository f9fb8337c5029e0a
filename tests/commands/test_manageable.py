"""Issue 10 item 1: "can this device receive commands?" has one answer
(``selection.conditions.manageable``) for every path that queues: the per-device enqueue, the rename
on PATCH and bulk actions. A retired device whose CheckOut never arrived still shows as enrolled;
before, the per-device enqueue and the rename queued commands for it anyway."""

from __future__ import annotations

from sqlalchemy import func, select

from mdmserver.db import db
from mdmserver.records.commands import Command
from mdmserver.simulator.device import SimulatedDevice

JSONAPI = {"Content-Type": "application/vnd.api+json"}


def _queued(live, device_id: int) -> int:
    with live.app.app_context():
        return db.session.scalar(select(func.count()).select_from(Command).where(
            Command.device_id == device_id, Command.status == "queued"))


def test_a_retired_device_whose_checkout_was_lost_gets_no_command(live, api, transport):
    sim = SimulatedDevice(transport, platform="ios", supervised=True)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    device_id = int(api.get(f"/api/v1/devices/udid:{sim.udid}").json()["data"]["id"])
    for payload in sim.enrollment_profile["PayloadContent"]:
        payload.pop("CheckOutWhenRemoved", None)  # the CheckOut is never sent (lost on the way)
    assert api.post(f"/api/v1/devices/{device_id}/actions/retire").status_code == 202
    assert [(t, s) for _, t, s in sim.run_session()] == [("RemoveProfile", "Acknowledged")]
    detail = api.get(f"/api/v1/devices/{device_id}").json()["data"]["attributes"]
    assert detail["enrolled"] is True  # the server never heard the CheckOut
    assert device_id in [int(d["id"]) for d in api.get("/api/v1/devices?filter[retired]=true").json()["data"]]

    queued = api.post(f"/api/v1/devices/{device_id}/commands", json={"request_type": "DeviceInformation"})
    assert queued.status_code == 409, queued.text
    assert "retired" in queued.json()["errors"][0]["detail"]

    renamed = api.patch(f"/api/v1/devices/{device_id}", headers=JSONAPI, json={
        "data": {"type": "devices", "id": str(device_id), "attributes": {"device_name": "Gone"}}})
    assert renamed.status_code == 200, renamed.text
    meta = renamed.json()["meta"]
    assert "rename_command" not in meta and meta["rename_not_sent"]

    lock = api.post("/api/v1/actions/lock", json={"devices": [device_id], "parameters": {"message": "x"}})
    assert lock.status_code == 200, lock.text  # nothing queued
    assert [d["remarks"] for d in lock.json()["na_list"]] == [
        "the device is retired (management removal was requested)"]
    assert _queued(live, device_id) == 0
