"""Each rule's verdict and observed value, computed in SQL, on the inventory as the devices report it;
the policy API's changes re-judge the devices."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from mdmserver.compliance import service
from mdmserver.compliance.models import CompliancePolicy
from mdmserver.db import utcnow
from mdmserver.records.attributes import CustomAttribute
from mdmserver.records.devices import DeviceSecurityInfo, InstalledApplication, InstalledProfile
from tests.factories import make_device

JSONAPI = {"Content-Type": "application/vnd.api+json"}


def _verdicts(db_session, rule: str, parameters: dict, devices: list) -> list[tuple[str | None, str | None]]:
    policy = CompliancePolicy(name=f"p-{rule}-{uuid.uuid4().hex[:8]}", rule=rule, parameters=parameters, all_devices=True)
    db_session.add(policy)
    db_session.flush()
    service.evaluate(db_session)
    results = {}
    for device in devices:
        found = [(r.status, r.observed) for r, p in service.device_results(db_session, device.id) if p.id == policy.id]
        results[device.id] = found[0] if found else (None, None)
    return [results[d.id] for d in devices]


@pytest.mark.parametrize(("version", "expected"), [
    ("17.4", "compliant"), ("17.4.0", "compliant"), ("17.10", "compliant"), ("18", "compliant"),
    ("17.4.1.2", "compliant"), ("17.3.9", "non_compliant"), ("9.9", "non_compliant"), ("17", "non_compliant"),
    ("17.beta", "unknown"), ("", "unknown"), (None, "unknown"), ("1234567.1", "unknown"), ("17..4", "unknown"),
])
def test_minimum_os_compares_numbers(db_session, version, expected):
    device = make_device(db_session, platform="ios", os_version=version)
    assert _verdicts(db_session, "os_version_min", {"versions": {"ios": "17.4"}}, [device]) == [(expected, version)]


def test_minimum_os_per_platform(db_session):
    mac = make_device(db_session, platform="macos", os_version="13.6")
    tv = make_device(db_session, index=1, platform="tvos", os_version="1.0")
    unknown = make_device(db_session, index=2, platform=None, os_version=None)
    verdicts = _verdicts(db_session, "os_version_min", {"versions": {"ios": "17.4", "macos": "14"}}, [mac, tv, unknown])
    assert verdicts == [("non_compliant", "13.6"), (None, None), ("unknown", None)]


def test_passcode_and_encryption(db_session):
    good = make_device(db_session, platform="ios")
    weak = make_device(db_session, index=1, platform="ios")
    none = make_device(db_session, index=2, platform="ios")
    mac = make_device(db_session, index=3, platform="macos")
    silent = make_device(db_session, index=4, platform="ios")
    db_session.add_all([
        DeviceSecurityInfo(device_id=good.id, passcode_present=True, passcode_compliant=True,
                           passcode_compliant_with_profiles=True, hardware_encryption_caps=3),
        DeviceSecurityInfo(device_id=weak.id, passcode_present=True, passcode_compliant=True,
                           passcode_compliant_with_profiles=False, hardware_encryption_caps=3),
        DeviceSecurityInfo(device_id=none.id, passcode_present=False, passcode_compliant=True,
                           passcode_compliant_with_profiles=True, hardware_encryption_caps=3),
        DeviceSecurityInfo(device_id=mac.id, passcode_present=True, passcode_compliant=True,
                           passcode_compliant_with_profiles=True, fde_enabled=False),
    ])
    db_session.flush()
    devices = [good, weak, none, mac, silent]
    assert [v[0] for v in _verdicts(db_session, "passcode", {}, devices)] == [
        "compliant", "compliant", "non_compliant", "compliant", "unknown"]
    assert _verdicts(db_session, "passcode", {"with_profiles": True}, devices) == [
        ("compliant", "passcode compliant"), ("non_compliant", "passcode not compliant with profiles"),
        ("non_compliant", "no passcode"), ("compliant", "passcode compliant"), ("unknown", None)]
    assert _verdicts(db_session, "encryption", {}, devices) == [
        ("compliant", "data protection on"), ("compliant", "data protection on"),
        ("non_compliant", "data protection off"), ("non_compliant", "FileVault off"),
        ("unknown", None)]


def test_supervised_last_checkin_profile_app_attribute(db_session):
    now = utcnow()
    fresh = make_device(db_session, platform="ios", is_supervised=True, last_seen_at=now - timedelta(hours=1))
    stale = make_device(db_session, index=1, platform="ios", is_supervised=False, last_seen_at=now - timedelta(days=3))
    never = make_device(db_session, index=2, platform="ios", is_supervised=None, last_seen_at=None)
    db_session.add_all([
        InstalledProfile(device_id=fresh.id, identifier="com.example.wifi"),
        InstalledProfile(device_id=stale.id, identifier="com.example.mdm"),
        InstalledApplication(device_id=stale.id, identifier="com.example.vpn"),
        CustomAttribute(device_id=fresh.id, name="dept", value="IT"),
        CustomAttribute(device_id=stale.id, name="dept", value="Sales"),
    ])
    db_session.flush()
    devices = [fresh, stale, never]
    assert _verdicts(db_session, "supervised", {}, devices) == [
        ("compliant", "true"), ("non_compliant", "false"), ("unknown", None)]
    assert [v[0] for v in _verdicts(db_session, "last_checkin", {"hours": 24}, devices)] == [
        "compliant", "non_compliant", "unknown"]
    assert _verdicts(db_session, "profile_installed", {"identifier": "com.example.wifi"}, devices) == [
        ("compliant", "installed"), ("non_compliant", "not installed"), ("unknown", None)]
    assert _verdicts(db_session, "app_installed", {"identifier": "com.example.vpn"}, devices) == [
        ("unknown", None), ("compliant", "installed"), ("unknown", None)]
    assert _verdicts(db_session, "custom_attribute", {"name": "dept", "value": "IT"}, devices) == [
        ("compliant", "IT"), ("non_compliant", "Sales"), ("non_compliant", None)]
    # the overall state: any violation wins over unknown, unknown over compliant
    assert service.device_state(db_session, stale.id).state == "non_compliant"
    assert service.device_state(db_session, stale.id).violation_count == 4


def test_policy_changes_rejudge_devices(client, db_session, auth):
    h = {**auth("read", "write"), **JSONAPI}
    device = make_device(db_session, platform="ios", os_version="17.2")
    other = make_device(db_session, index=1, platform="ios", os_version="17.2")
    db_session.commit()
    created = client.post("/api/v1/compliance_policies", headers=h, json={"data": {
        "type": "compliance_policies", "attributes": {"name": "os", "rule": "os_version_min",
                                                      "parameters": {"versions": {"ios": "17.0"}}}}})
    assert created.status_code == 201, created.get_json()
    policy = created.get_json()["data"]["id"]
    # scoped to nothing yet: no device is judged by it
    assert created.get_json()["data"]["attributes"]["device_counts"] == {"compliant": 0, "non_compliant": 0, "unknown": 0}
    added = client.post(f"/api/v1/compliance_policies/{policy}/targets", headers=h, json={"devices": [device.id]})
    # creating the policy judged every device already (compliant: nothing applied); still compliant
    assert added.get_json() == {"policy_id": policy, "added": 1, "state_changes": 0}
    state = client.get(f"/api/v1/devices/{device.id}/compliance", headers=h).get_json()["data"]["attributes"]
    assert state["compliance_state"] == "compliant" and len(state["policies"]) == 1
    # a stricter version: non-compliant at once
    patched = client.patch(f"/api/v1/compliance_policies/{policy}", headers=h, json={"data": {
        "type": "compliance_policies", "id": policy, "attributes": {"parameters": {"versions": {"ios": "17.4"}}}}})
    assert patched.status_code == 200
    assert patched.get_json()["data"]["attributes"]["device_counts"]["non_compliant"] == 1
    # a new rule needs parameters that fit it
    bad = client.patch(f"/api/v1/compliance_policies/{policy}", headers=h, json={"data": {
        "type": "compliance_policies", "attributes": {"rule": "last_checkin"}}})
    assert bad.status_code == 422
    assert bad.get_json()["errors"][0]["source"]["pointer"] == "/data/attributes/parameters/hours"
    # disabled: nothing is judged, the device is compliant again
    client.patch(f"/api/v1/compliance_policies/{policy}", headers=h, json={"data": {
        "type": "compliance_policies", "attributes": {"enabled": False}}})
    assert client.get(f"/api/v1/devices/{device.id}/compliance", headers=h).get_json()["data"]["attributes"][
        "compliance_state"] == "compliant"
    assert client.get(f"/api/v1/devices/{other.id}/compliance", headers=h).get_json()["data"]["attributes"][
        "policies"] == []
    removed = client.delete(f"/api/v1/compliance_policies/{policy}/targets", headers=h, json={"devices": [device.id]})
    assert removed.get_json()["removed"] == 1
    assert client.get("/api/v1/compliance_policies/nope", headers=h).status_code == 404
    assert client.post(f"/api/v1/compliance_policies/{policy}/targets", headers=h,
                       json={"devices": ["NO-SUCH-DEVICE"]}).status_code == 422
    assert client.post("/api/v1/compliance_policies", headers=auth("read") | JSONAPI, json={"data": {
        "type": "compliance_policies", "attributes": {"name": "x", "rule": "supervised"}}}).status_code == 403
