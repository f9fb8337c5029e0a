"""Compliance policies over real HTTP with simulated devices: a device falling below the minimum OS
becomes non-compliant and back, the remediation fires once per transition, the device list filters
and facets on the state; scheduled actions are queued when due, exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from mdmserver.db import db
from mdmserver.jobs import Upkeep
from mdmserver.records.commands import Command
from mdmserver.simulator.device import SimulatedDevice
from tests.concurrency import race

JSONAPI = {"Content-Type": "application/vnd.api+json"}


def _policy(api, **attributes):
    response = api.post("/api/v1/compliance_policies", headers=JSONAPI,
                        json={"data": {"type": "compliance_policies", "attributes": attributes}})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def _scan(api, sim: SimulatedDevice, device_id: str) -> list[str]:
    assert api.post(f"/api/v1/devices/{device_id}/actions/scan").status_code == 202
    return [t for _, t, _ in sim.run_session()]


def _commands(live, device_id: str, request_type: str) -> int:
    with live.app.app_context():
        return db.session.scalar(select(func.count()).select_from(Command).where(
            Command.device_id == int(device_id), Command.request_type == request_type))


def _device_id(api, sim) -> str:
    return api.get(f"/api/v1/devices/{sim.udid}").json()["data"]["id"]


def test_minimum_os_non_compliant_and_back_with_one_remediation(live, api, transport):
    sim = SimulatedDevice(transport, platform="ios", seed=101)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    mac = SimulatedDevice(transport, platform="macos", seed=102)
    mac.enroll()
    assert mac.authenticate() == 200 and mac.token_update() == 200
    phone, computer = _device_id(api, sim), _device_id(api, mac)

    policy = _policy(api, name="iOS 17.4 or later", rule="os_version_min",
                     parameters={"versions": {"ios": "17.4"}}, all_devices=True,
                     remediation={"action": "lock", "message": "Update iOS"}, grace_minutes=0)

    sim.os_version = "17.3.1"
    assert "DeviceInformation" in _scan(api, sim, phone)
    state = api.get(f"/api/v1/devices/{phone}/compliance").json()["data"]["attributes"]
    assert state["compliance_state"] == "non_compliant"
    assert [(v["policy_id"], v["observed"]) for v in state["violated_policies"]] == [(policy["id"], "17.3.1")]
    # the Mac is outside an iOS-only policy: nothing to violate
    assert api.get(f"/api/v1/devices/{computer}/compliance").json()["data"]["attributes"]["policies"] == []

    # the device list filters and facets on the state
    listed = api.get("/api/v1/devices?filter[compliance_state]=non_compliant&facets=compliance_state").json()
    assert [d["id"] for d in listed["data"]] == [phone]
    assert {f["value"]: f["count"] for f in listed["meta"]["facets"]["compliance_state"]} == {"non_compliant": 1}
    assert api.get("/api/v1/devices?filter[compliance_state]=bogus").status_code == 400

    # Ivanti's shapes: the device's compliance fields and "Get Compliance Status of a Particular Device"
    details = api.get(f"/api/v1/device/{phone}").json()["result"]
    assert (details["complianceState"], details["policyViolationCount"], details["quarantined"]) == (False, 1, False)
    assert [(v["id"], v["observedValue"]) for v in details["violatedPolicies"]] == [(int(policy["id"]), "17.3.1")]
    assert api.get(f"/api/v1/device/{computer}").json()["result"]["complianceState"] is True
    found = api.get("/api/v1/device", params={"q": sim.serial_number}).json()["result"]["searchResults"]
    assert [(r["complianceState"], r["policyViolationCount"]) for r in found] == [(False, 1)]
    status = api.get(f"/api/v1/device/{phone}/policies").json()
    assert status["errors"] is None and status["result"]["totalCount"] == 1
    entry = status["result"]["searchResults"][0]
    assert {k: entry[k] for k in ("id", "name", "policyType", "policyRuleType", "enabled", "violationDeviceCount",
                                  "compliant", "pendingCompliant")} == {
        "id": int(policy["id"]), "name": "iOS 17.4 or later", "policyType": "POLICY",
        "policyRuleType": "OS_VERSION_MIN", "enabled": True, "violationDeviceCount": 1, "compliant": False,
        "pendingCompliant": False}
    assert api.get(f"/api/v1/device/{computer}/policies").json()["result"]["searchResults"] == []
    assert api.get("/api/v1/device/999999/policies").status_code == 404

    # remediation: the lock is queued once for the transition, however often the job runs
    upkeep = Upkeep(live.app)
    upkeep.run(force=True)
    upkeep.run(force=True)
    assert _commands(live, phone, "DeviceLock") == 1
    assert _commands(live, computer, "DeviceLock") == 0
    sim.run_session()

    # 17.10 is above 17.4 numerically (a string comparison would say below)
    sim.os_version = "17.10"
    _scan(api, sim, phone)
    state = api.get(f"/api/v1/devices/{phone}/compliance").json()["data"]["attributes"]
    assert state["compliance_state"] == "compliant" and state["violated_policies"] == []
    history = api.get(f"/api/v1/devices/{phone}/compliance/history?sort=changed_at").json()["data"]
    assert [h["attributes"]["to_state"] for h in history][-2:] == ["non_compliant", "compliant"]
    upkeep.run(force=True)
    assert _commands(live, phone, "DeviceLock") == 1

    # falling below again is a new transition: one more lock
    sim.os_version = "16.7"
    _scan(api, sim, phone)
    upkeep.run(force=True)
    upkeep.run(force=True)
    assert _commands(live, phone, "DeviceLock") == 2

    counts = api.get(f"/api/v1/compliance_policies/{policy['id']}").json()["data"]["attributes"]["device_counts"]
    assert counts == {"compliant": 0, "non_compliant": 1, "unknown": 0}
    assert api.delete(f"/api/v1/compliance_policies/{policy['id']}").status_code == 204
    assert api.get(f"/api/v1/devices/{phone}/compliance").json()["data"]["attributes"]["compliance_state"] == "compliant"


def test_scheduled_action_is_queued_when_due_exactly_once(live, api, transport):
    sim = SimulatedDevice(transport, platform="ios", seed=103)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    device = _device_id(api, sim)
    before = _commands(live, device, "DeviceInformation")
    when = datetime.now(UTC) + timedelta(hours=1)
    response = api.post(f"/api/v1/devices/{device}/actions/scan", json={"not_before": when.isoformat()})
    assert response.status_code == 202, response.text
    scheduled = response.json()["data"]
    assert scheduled["attributes"]["status"] == "scheduled"

    upkeep = Upkeep(live.app)
    upkeep.run(force=True, now=datetime.now(UTC))
    assert _commands(live, device, "DeviceInformation") == before  # not before its time
    later = when + timedelta(minutes=1)
    upkeep.run(force=True, now=later)
    upkeep.run(force=True, now=later)
    assert _commands(live, device, "DeviceInformation") == before + 1
    row = api.get(f"/api/v1/scheduled_actions/{scheduled['id']}").json()["data"]["attributes"]
    assert row["status"] == "queued" and row["result"]["success_count"] == 1
    # once queued it can no longer be cancelled
    assert api.delete(f"/api/v1/scheduled_actions/{scheduled['id']}").status_code == 409


def test_scheduled_bulk_action_window_and_cancel(live, api, transport):
    sim = SimulatedDevice(transport, platform="ios", seed=104)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    device = _device_id(api, sim)
    before = _commands(live, device, "DeviceLock")
    # Mondays 22:00-02:00 in Paris; 2026-11-30 is a Monday
    window = {"weekdays": ["mon"], "start": "22:00", "end": "02:00", "time_zone": "Europe/Paris"}
    body = {"devices": [device], "parameters": {"message": "maintenance"},
            "not_before": "2026-11-30T00:00:00Z", "window": window}
    response = api.post("/api/v1/actions/lock", json=body)
    assert response.status_code == 202, response.text
    first = response.json()["data"]["id"]
    upkeep = Upkeep(live.app)
    upkeep.run(force=True, now=datetime(2026, 11, 30, 12, 0, tzinfo=UTC))  # due, but outside the window
    assert _commands(live, device, "DeviceLock") == before
    upkeep.run(force=True, now=datetime(2026, 11, 30, 23, 30, tzinfo=UTC))  # 00:30 Tuesday in Paris: inside
    assert _commands(live, device, "DeviceLock") == before + 1

    second = api.post("/api/v1/actions/lock", json={**body, "not_before": "2026-12-07T00:00:00Z"}).json()["data"]["id"]
    cancelled = api.delete(f"/api/v1/scheduled_actions/{second}")
    assert cancelled.status_code == 200 and cancelled.json()["data"]["attributes"]["status"] == "cancelled"
    upkeep.run(force=True, now=datetime(2026, 12, 7, 22, 30, tzinfo=UTC))
    assert _commands(live, device, "DeviceLock") == before + 1
    listed = api.get("/api/v1/scheduled_actions?filter[status]=queued,cancelled").json()
    assert {(d["id"], d["attributes"]["status"]) for d in listed["data"]} >= {(first, "queued"), (second, "cancelled")}
    # the PIN-bearing parameters are never shown
    assert "parameters" not in listed["data"][0]["attributes"]


def test_bad_policies_and_schedules_are_4xx(live, api, transport):
    bad = [
        {"name": "x", "rule": "nope"},
        {"name": "x", "rule": "os_version_min", "parameters": {"versions": {"ios": "17.x"}}},
        {"name": "x", "rule": "os_version_min", "parameters": {}},
        {"name": "x", "rule": "last_checkin", "parameters": {"hours": 0}},
        {"name": "x", "rule": "supervised", "parameters": {"extra": 1}},
        {"name": "x", "rule": "supervised", "remediation": {"action": "install_profile"}},
        {"name": "x", "rule": "supervised", "remediation": {"action": "install_profile", "profile_id": 999999}},
        {"name": "x", "rule": "supervised", "grace_minutes": -1},
    ]
    for attributes in bad:
        response = api.post("/api/v1/compliance_policies", headers=JSONAPI,
                            json={"data": {"type": "compliance_policies", "attributes": attributes}})
        assert response.status_code == 422, (attributes, response.text)
        assert response.json()["errors"][0]["status"] == "422"
    assert api.get("/api/v1/compliance_policies").json()["meta"]["total"] == 0
    _policy(api, name="dup", rule="supervised")
    again = api.post("/api/v1/compliance_policies", headers=JSONAPI,
                     json={"data": {"type": "compliance_policies", "attributes": {"name": "dup", "rule": "encryption"}}})
    assert again.status_code == 409
    for body in ({"devices": ["1"], "not_before": "tomorrow"},
                 {"devices": ["1"], "window": {"weekdays": ["mon"], "start": "22:00", "end": "02:00",
                                               "time_zone": "Mars/Olympus"}},
                 {"devices": ["1"], "window": {"weekdays": ["someday"], "start": "22:00", "end": "02:00",
                                               "time_zone": "UTC"}},
                 {"groups": [999999], "not_before": "2030-01-01T00:00:00Z"}):
        response = api.post("/api/v1/actions/scan", json=body)
        assert response.status_code == 422, (body, response.text)
    assert api.get("/api/v1/scheduled_actions?filter[status]=scheduled").json()["meta"]["total"] == 0
    assert api.delete("/api/v1/scheduled_actions/999999").status_code == 404


def test_two_workers_racing_queue_a_scheduled_action_once(live, api, transport):
    sims = [SimulatedDevice(transport, platform="ios", seed=110 + i) for i in range(3)]
    for sim in sims:
        sim.enroll()
        assert sim.authenticate() == 200 and sim.token_update() == 200
    devices = [_device_id(api, sim) for sim in sims]
    before = sum(_commands(live, d, "DeviceInformation") for d in devices)
    for _ in range(5):
        assert api.post("/api/v1/actions/scan", json={
            "devices": devices, "not_before": "2026-01-01T00:00:00Z"}).status_code == 202
    now = datetime.now(UTC)
    # two workers, each its own upkeep (and session), at once
    assert race(live.app, lambda _session: Upkeep(live.app).run(force=True, now=now), threads=2) == []
    # five scheduled scans of three devices: fifteen DeviceInformation queries, each queued once
    assert sum(_commands(live, d, "DeviceInformation") for d in devices) == before + 15
    statuses = {d["attributes"]["status"] for d in api.get("/api/v1/scheduled_actions?filter[action]=scan").json()["data"]}
    assert statuses == {"queued"}
