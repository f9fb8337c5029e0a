"""Remediation: each kind, once per transition, after the grace period; two workers claim each due
result once; the compliance and scheduled-action tables have one writer each; a scheduled lock's PIN
is never stored in the clear."""

from __future__ import annotations

import plistlib
import re
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

import mdmserver
from mdmserver.actions.remediation import remediate
from mdmserver.assignments.models import ProfileAssignment
from mdmserver.collaborators import secret_box
from mdmserver.compliance import service
from mdmserver.compliance.models import CompliancePolicy
from mdmserver.db import db, utcnow
from mdmserver.profiles.service import upload_profile
from mdmserver.records.commands import Command
from mdmserver.records.devices import InstalledProfile
from mdmserver.records.groups import DeviceGroup, GroupMember
from mdmserver.simulator.device import SimulatedDevice
from tests.commands.test_secrets_end_to_end import _scan_database
from tests.concurrency import race
from tests.factories import make_device, seed_devices


def _remediate(db_session, now=None):
    done = remediate(db_session, box=secret_box(), public_url="http://127.0.0.1:8080", now=now)
    db_session.commit()
    return done


def test_add_to_group_after_the_grace_period_once_per_transition(db_session):
    group = DeviceGroup(name="quarantine", kind="static")
    db_session.add(group)
    db_session.flush()
    device = make_device(db_session, platform="ios", is_supervised=False)
    policy = CompliancePolicy(name="supervised", rule="supervised", parameters={}, all_devices=True,
                              remediation={"action": "add_to_group", "group_id": group.id}, grace_minutes=30)
    db_session.add(policy)
    db_session.flush()
    service.evaluate(db_session)
    db_session.commit()
    assert _remediate(db_session) == {}  # within the grace period
    later = utcnow() + timedelta(minutes=31)
    assert _remediate(db_session, later) == {policy.id: {"added": 1}}
    assert _remediate(db_session, later + timedelta(minutes=1)) == {}
    assert db_session.scalars(select(GroupMember.device_id).where(GroupMember.group_id == group.id)).all() == [device.id]


def test_install_profile_remediation_assigns_the_profile(db_session):
    profile, _ = upload_profile(db_session, plistlib.dumps({
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.example.wifi",
        "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadDisplayName": "Wi-Fi", "PayloadContent": []}),
        box=secret_box())
    device = make_device(db_session, platform="ios")
    other = make_device(db_session, index=1, platform="ios")
    policy = CompliancePolicy(name="wifi", rule="profile_installed", parameters={"identifier": "com.example.wifi"},
                              all_devices=True, remediation={"action": "install_profile", "profile_id": profile.id})
    db_session.add(policy)
    db_session.flush()
    # only a device that answered ProfileList is judged: the other stays unknown, and is not remediated
    db_session.add(InstalledProfile(device_id=device.id, identifier="com.example.mdm"))
    db_session.flush()
    service.evaluate(db_session)
    assert _remediate(db_session)[policy.id]["assigned"] == 1
    assigned = db_session.scalars(select(ProfileAssignment.device_id).where(ProfileAssignment.profile_id == profile.id))
    assert list(assigned) == [device.id]
    assert service.device_state(db_session, other.id).state == "unknown"


def test_two_workers_claim_each_due_remediation_once(live_server):
    app = live_server.app
    with app.app_context():
        ids = seed_devices(db.session, 300, is_supervised=False)
        db.session.add(CompliancePolicy(name="race", rule="supervised", parameters={}, all_devices=True,
                                        remediation={"action": "scan"}))
        db.session.flush()
        service.evaluate(db.session)
        db.session.commit()
    claims: list[list[int]] = []

    def claim(session) -> None:
        claims.append([d for c in service.claim_remediations(session) for d in c.device_ids])

    assert race(app, claim, threads=2) == []
    first, second = claims
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(ids)


ROOT = Path(mdmserver.__file__).parent
_TABLES = {
    "mdmserver/compliance/service.py": ("CompliancePolicy", "CompliancePolicyTarget", "DevicePolicyResult",
                                        "DeviceCompliance", "ComplianceHistory"),
    "mdmserver/actions/service.py": ("ScheduledAction",),
}


def test_one_writer_module_per_table():
    for writer, models in _TABLES.items():
        names = "|".join(models)
        pattern = re.compile(rf"\b(insert|update|delete)\(\s*({names})(\.__table__)?\s*\)|\b({names})\(")
        writers = {str(path.relative_to(ROOT.parent)) for path in ROOT.rglob("*.py")
                   if not str(path).endswith("/models.py") and not str(path).startswith(str(ROOT / "records"))
                   and pattern.search(path.read_text())}
        assert writers == {writer}, (models, writers)


def test_a_scheduled_lock_pin_is_sealed_at_rest(live, api, transport):
    sim = SimulatedDevice(transport, platform="ios", seed=140)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    device = api.get(f"/api/v1/devices/{sim.udid}").json()["data"]["id"]
    response = api.post(f"/api/v1/devices/{device}/actions/lock", json={
        "parameters": {"pin": "739164", "message": "locked"}, "not_before": "2099-01-01T00:00:00Z"})
    assert response.status_code == 202, response.text
    assert "739164" not in response.text
    assert "739164" not in api.get(f"/api/v1/scheduled_actions/{response.json()['data']['id']}").text
    findings, _ = _scan_database(live.app, {b"739164": "the lock PIN"})
    assert findings == []
    with live.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Command).where(
            Command.request_type == "DeviceLock")) == 0
