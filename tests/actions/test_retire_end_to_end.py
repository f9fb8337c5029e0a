"""Issue 9 item 5: retire removes the enrollment profile the device really has, and the device counts
as retired only once it acknowledged that removal. Every device here enrolls through the real flow
(``/mdm/enroll``, Authenticate, TokenUpdate over HTTP with signed messages); nothing is planted."""

from __future__ import annotations

from sqlalchemy import select

from mdmserver.collaborators import secret_box
from mdmserver.commands.service import command_parameters
from mdmserver.db import db
from mdmserver.records.commands import Command
from mdmserver.simulator.device import SimulatedDevice

JSONAPI = {"Content-Type": "application/vnd.api+json"}


def _enrolled(api, transport, **kw) -> tuple[SimulatedDevice, int]:
    sim = SimulatedDevice(transport, **kw)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    device_id = int(api.get(f"/api/v1/devices/udid:{sim.udid}").json()["data"]["id"])
    return sim, device_id


def _actions(api, device_id) -> tuple[dict, dict]:
    body = api.get(f"/api/v1/devices/{device_id}/actions").json()
    return {a["id"]: a["attributes"] for a in body["data"]}, body["meta"]


def _retired_ids(api) -> list[int]:
    return [int(d["id"]) for d in api.get("/api/v1/devices?filter[retired]=true").json()["data"]]


def _identifier(live, command_uuid: str) -> str:
    with live.app.app_context():
        command = db.session.scalar(select(Command).where(Command.uuid == command_uuid))
        return command_parameters(command, secret_box())["Identifier"]


def test_retire_removes_the_installed_enrollment_profile_and_retires_after_the_ack(live, api, transport):
    sim, device_id = _enrolled(api, transport, platform="ios")
    installed = sim.enrollment_profile["PayloadIdentifier"]  # what the device really installed
    response = api.post(f"/api/v1/devices/{device_id}/actions/retire")
    assert response.status_code == 202
    assert _identifier(live, response.json()["data"][0]["id"]) == installed

    # queued, not answered: still managed, every action but a second retire still applies
    actions, meta = _actions(api, device_id)
    assert actions["lock"]["is_enabled"] and actions["complete_wipe"]["is_enabled"]
    assert actions["retire"]["reason"].startswith("a retirement is already pending")
    assert meta["retirement"]["status"] == "pending"
    assert device_id not in _retired_ids(api)

    assert [(t, s) for _, t, s in sim.run_session()] == [("RemoveProfile", "Acknowledged")]
    assert sim.enrolled is False and installed not in sim.profiles  # it left management and checked out
    assert device_id in _retired_ids(api)
    detail = api.get(f"/api/v1/devices/{device_id}").json()["data"]["attributes"]
    assert detail["enrolled"] is False and detail["unenrolled_at"]
    actions, meta = _actions(api, device_id)
    assert meta["retirement"]["status"] == "completed"
    assert actions["lock"]["is_enabled"] is False


def test_retire_uses_the_profile_list_when_the_prefix_changed_since_enrollment(live, api, transport):
    sim, device_id = _enrolled(api, transport, platform="ipados")
    installed = sim.enrollment_profile["PayloadIdentifier"]
    assert [t for _, t, _ in (sim.run_session() or [])] == []
    scan = api.post(f"/api/v1/devices/{device_id}/actions/scan")
    assert scan.status_code == 202
    assert all(s == "Acknowledged" for _, _, s in sim.run_session())
    before = api.get("/api/v1/organization").json()["data"]["attributes"]["payload_prefix"]
    changed = api.patch("/api/v1/organization", headers=JSONAPI, json={"data": {
        "type": "organizations", "attributes": {"payload_prefix": "com.renamed.example.mdm"}}})
    assert changed.status_code == 200, changed.text
    try:
        response = api.post(f"/api/v1/devices/{device_id}/actions/retire")
        assert response.status_code == 202
        assert _identifier(live, response.json()["data"][0]["id"]) == installed
        assert not installed.startswith("com.renamed.example.mdm")
        assert [(t, s) for _, t, s in sim.run_session()] == [("RemoveProfile", "Acknowledged")]
        assert device_id in _retired_ids(api)
    finally:
        api.patch("/api/v1/organization", headers=JSONAPI, json={"data": {
            "type": "organizations", "attributes": {"payload_prefix": before}}})


def test_a_refused_removal_leaves_the_device_managed(live, api, transport):
    sim, device_id = _enrolled(api, transport, platform="ios")
    sim.answer_overrides["RemoveProfile"] = "Error"
    assert api.post(f"/api/v1/devices/{device_id}/actions/retire").status_code == 202
    assert [(t, s) for _, t, s in sim.run_session()] == [("RemoveProfile", "Error")]
    assert sim.enrolled is True
    assert device_id not in _retired_ids(api)
    actions, meta = _actions(api, device_id)
    assert meta["retirement"]["status"] == "failed"
    assert "“RemoveProfile” failed." in meta["retirement"]["detail"]
    assert actions["lock"]["is_enabled"] and actions["retire"]["is_enabled"]
    # the admin can still lock it, and the device runs the lock
    lock = api.post(f"/api/v1/devices/{device_id}/actions/lock", json={"parameters": {"message": "Call IT"}})
    assert lock.status_code == 202
    assert [(t, s) for _, t, s in sim.run_session()] == [("DeviceLock", "Acknowledged")]


def test_removing_an_unknown_profile_is_refused_by_the_device(live, api, transport):
    """The simulator behaves as a device: RemoveProfile of a profile it does not have is Error 12013
    ("not managed by MDM") and the device stays enrolled."""
    sim, device_id = _enrolled(api, transport, platform="ios")
    queued = api.post(f"/api/v1/devices/{device_id}/commands", json={
        "request_type": "RemoveProfile", "parameters": {"Identifier": "com.example.not-installed"}})
    assert queued.status_code in (201, 202), queued.text
    assert [(t, s) for _, t, s in sim.run_session()] == [("RemoveProfile", "Error")]
    latest = api.get(f"/api/v1/devices/{device_id}/commands/latest").json()["data"]["attributes"]
    assert "not managed by MDM" in latest["remarks"]
    assert sim.enrolled is True and sim.idle()[0] == 200
