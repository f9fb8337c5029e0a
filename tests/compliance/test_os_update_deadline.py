"""The ``os_update_deadline`` rule: a device in a blueprint's scope whose OS-update deadline has passed
(on every clock: UTC + 12 hours) and that still reports a version below the target violates it; the
verdicts in SQL on both databases, then end to end over HTTP with a simulated iPhone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from mdmserver.compliance import service
from mdmserver.compliance.models import CompliancePolicy
from mdmserver.records.blueprints import Blueprint, BlueprintMember
from mdmserver.records.devices import AvailableOSUpdate, Device
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice
from tests.blueprints.helpers import created
from tests.factories import install_push_topic, make_device

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
JSONAPI = {"Content-Type": "application/vnd.api+json"}


def _local(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


PAST = _local(NOW - timedelta(days=2))
FUTURE = _local(NOW + timedelta(days=2))


def _blueprint(db_session, devices, *, version="17.6", deadline=PAST, status="in_scope", **values) -> Blueprint:
    blueprint = Blueprint(name=f"bp-{uuid.uuid4().hex[:8]}", os_update_version=version, os_update_deadline=deadline,
                          **values)
    db_session.add(blueprint)
    db_session.flush()
    db_session.add_all([BlueprintMember(blueprint_id=blueprint.id, device_id=d.id, status=status) for d in devices])
    db_session.flush()
    return blueprint


def _policy(db_session) -> CompliancePolicy:
    policy = CompliancePolicy(name=f"deadline-{uuid.uuid4().hex[:8]}", rule="os_update_deadline", parameters={},
                              all_devices=True)
    db_session.add(policy)
    db_session.flush()
    return policy


def _verdicts(db_session, policy, devices, now=NOW) -> list[tuple[str | None, str | None]]:
    service.evaluate(db_session, now=now)
    out = []
    for device in devices:
        found = [(r.status, r.observed) for r, p in service.device_results(db_session, device.id) if p.id == policy.id]
        out.append(found[0] if found else (None, None))
    return out


def test_past_deadline_and_old_os_violates_with_the_target_in_the_observed_value(db_session):
    old = make_device(db_session, platform="ios", os_version="17.5.1")
    done = make_device(db_session, index=1, platform="ios", os_version="17.6")
    later = make_device(db_session, index=2, platform="ios", os_version="17.10")  # numerically above 17.6
    unknown = make_device(db_session, index=3, platform="ios", os_version=None)
    outside = make_device(db_session, index=4, platform="ios", os_version="16.0")
    blueprint = _blueprint(db_session, [old, done, later, unknown])
    policy = _policy(db_session)
    assert _verdicts(db_session, policy, [old, done, later, unknown, outside]) == [
        ("non_compliant", f"17.5.1 < 17.6 (deadline {PAST}, blueprint {blueprint.id})"),
        ("compliant", "17.6"),
        ("compliant", "17.10"),
        ("unknown", None),
        (None, None),  # not in the blueprint: not judged by the rule at all
    ]
    assert service.device_state(db_session, old.id).state == "non_compliant"
    assert service.device_state(db_session, outside.id).state == "compliant"

    # it reports the target: compliant (the same policy, the next evaluation)
    old.os_version = "17.6"
    db_session.flush()
    assert _verdicts(db_session, policy, [old]) == [("compliant", "17.6")]
    assert service.device_state(db_session, old.id).state == "compliant"


def test_a_deadline_not_yet_passed_on_every_clock_is_compliant(db_session):
    device = make_device(db_session, platform="ios", os_version="17.0")
    policy = _policy(db_session)
    blueprint = _blueprint(db_session, [device], deadline=FUTURE)
    assert _verdicts(db_session, policy, [device]) == [("compliant", "17.0")]

    # 6 hours ago in UTC is still ahead on a clock at UTC-12: not passed everywhere yet
    blueprint.os_update_deadline = _local(NOW - timedelta(hours=6))
    db_session.flush()
    assert _verdicts(db_session, policy, [device]) == [("compliant", "17.0")]
    # 12 hours after it in UTC it has passed on every clock
    assert _verdicts(db_session, policy, [device], now=NOW + timedelta(hours=6)) == [
        ("non_compliant", f"17.0 < 17.6 (deadline {blueprint.os_update_deadline}, blueprint {blueprint.id})")]
    # a space for the T (the blueprint schema takes it) compares the same
    blueprint.os_update_deadline = blueprint.os_update_deadline.replace("T", " ")
    db_session.flush()
    assert _verdicts(db_session, policy, [device])[0][0] == "compliant"
    assert _verdicts(db_session, policy, [device], now=NOW + timedelta(hours=6))[0][0] == "non_compliant"


@pytest.mark.parametrize(("values", "status"), [
    ({"enabled": False}, "in_scope"),  # a disabled blueprint sets no target
    ({}, "left"),  # the device left the scope
    ({"start_on": NOW + timedelta(days=1)}, "in_scope"),  # not started yet
    ({"os_update_deadline_none": True}, "in_scope"),  # a target without a deadline
])
def test_blueprints_that_set_no_live_deadline_are_not_judged(db_session, values, status):
    device = make_device(db_session, platform="ios", os_version="15.0")
    values = dict(values)
    deadline = None if values.pop("os_update_deadline_none", False) else PAST
    _blueprint(db_session, [device], deadline=deadline, status=status, **values)
    policy = _policy(db_session)
    assert _verdicts(db_session, policy, [device]) == [(None, None)]


def test_latest_is_the_newest_version_the_device_reports_available(db_session):
    behind = make_device(db_session, platform="ios", os_version="17.5")
    current = make_device(db_session, index=1, platform="ios", os_version="17.6")
    silent = make_device(db_session, index=2, platform="ios", os_version="17.0")  # never reported its updates
    db_session.add_all([
        AvailableOSUpdate(device_id=behind.id, version="17.6", product_key="iOSUpdate17.6"),
        AvailableOSUpdate(device_id=behind.id, version="17.10", product_key="iOSUpdate17.10"),
        AvailableOSUpdate(device_id=behind.id, version="not a version"),
        AvailableOSUpdate(device_id=current.id, version="17.6"),  # stale: the version it runs
    ])
    blueprint = _blueprint(db_session, [behind, current, silent], version="latest")
    policy = _policy(db_session)
    assert _verdicts(db_session, policy, [behind, current, silent]) == [
        ("non_compliant", f"17.5 < 17.10 (deadline {PAST}, blueprint {blueprint.id})"),
        ("compliant", "17.6"),
        ("compliant", "17.0"),  # nothing known to be offered: nothing pending
    ]


def test_the_earliest_overdue_blueprint_is_shown(db_session):
    device = make_device(db_session, platform="ios", os_version="16.0")
    _blueprint(db_session, [device], version="17.6", deadline=_local(NOW - timedelta(days=1)))
    earliest = _blueprint(db_session, [device], version="17.2", deadline=_local(NOW - timedelta(days=5)))
    _blueprint(db_session, [device], version="18.0", deadline=FUTURE)
    policy = _policy(db_session)
    assert _verdicts(db_session, policy, [device]) == [
        ("non_compliant", f"16.0 < 17.2 (deadline {_local(NOW - timedelta(days=5))}, blueprint {earliest.id})")]


def test_over_http_a_simulated_iphone_past_its_deadline_and_back(client, auth, db_session, app, monkeypatch):
    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "auto")
    install_push_topic(db_session, monkeypatch)
    h = auth("read", "write")
    transport = FlaskTransport(client)
    phone = SimulatedDevice(transport, platform="ios", seed=1701, os_update_delay=0)  # installs at once
    other = SimulatedDevice(transport, platform="ios", seed=1702)
    for sim in (phone, other):
        sim.os_version = "16.7.2"  # below iOS 17: the target goes by ScheduleOSUpdate, not DDM (docs/ddm.md)
        sim.enroll()
        assert sim.authenticate() == 200 and sim.token_update() == 200
    ids = {sim.udid: str(db_session.scalar(select(Device.id).where(Device.udid == sim.udid))) for sim in (phone, other)}
    mine, theirs = ids[phone.udid], ids[other.udid]

    response = client.post("/api/v1/compliance_policies", headers={**h, **JSONAPI}, json={"data": {
        "type": "compliance_policies",
        "attributes": {"name": "OS update deadline", "rule": "os_update_deadline", "parameters": {},
                       "all_devices": True}}})
    assert response.status_code == 201, response.get_json()
    policy_id = response.get_json()["data"]["id"]
    bad = client.post("/api/v1/compliance_policies", headers={**h, **JSONAPI}, json={"data": {
        "type": "compliance_policies",
        "attributes": {"name": "x", "rule": "os_update_deadline", "parameters": {"days": 3}, "all_devices": True}}})
    assert bad.status_code == 422

    deadline = _local(datetime.now(UTC) - timedelta(days=3))
    blueprint = created(client, h, name="Update iPhones", scope={"devices": [int(mine)]},
                        os_update={"version": "17.6", "install_action": "InstallASAP", "deadline": deadline})
    assert client.post("/api/v1/compliance_policies/evaluate", headers=h).status_code in (200, 202)
    state = client.get(f"/api/v1/devices/{mine}/compliance", headers=h).get_json()["data"]["attributes"]
    assert state["compliance_state"] == "non_compliant"
    assert [(v["policy_id"], v["observed"]) for v in state["violated_policies"]] == [
        (policy_id, f"16.7.2 < 17.6 (deadline {deadline}, blueprint {blueprint['data']['id']})")]
    # the other iPhone is outside the blueprint: the rule does not judge it
    assert client.get(f"/api/v1/devices/{theirs}/compliance", headers=h).get_json()["data"]["attributes"][
        "policies"] == []

    # the device installs the update (the simulator's ScheduleOSUpdate) and reports it: compliant at once
    assert ("ScheduleOSUpdate", "Acknowledged") in [(t, s) for _, t, s in phone.run_session()]
    assert phone.os_version == "17.6"
    scan = client.post(f"/api/v1/devices/{mine}/commands", headers=h, json={"request_type": "DeviceInformation"})
    assert scan.status_code in (201, 202)
    assert [(t, s) for _, t, s in phone.run_session()] == [("DeviceInformation", "Acknowledged")]
    state = client.get(f"/api/v1/devices/{mine}/compliance", headers=h).get_json()["data"]["attributes"]
    assert state["compliance_state"] == "compliant" and state["violated_policies"] == []
    assert [p["observed"] for p in state["policies"]] == ["17.6"]
