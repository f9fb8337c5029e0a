"""Reactions that reconcile apps beside profiles: admission, the worker's periodic upkeep; and the one
writer of the app assignment tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sqlalchemy import select

import mdmserver
from mdmserver.jobs import Upkeep
from mdmserver.records.commands import Command
from mdmserver.records.devices import Device
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice
from tests.factories import install_push_topic, make_app, make_device

JSONAPI = "application/vnd.api+json"
ADMISSION = "/api/management/v1/admission"


def _group(client, h, **attributes) -> int:
    response = client.post("/api/v1/device_groups", json={"data": {"type": "device_groups", "attributes": attributes}},
                           headers={**h, "Content-Type": JSONAPI})
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["data"]["id"])


def _installs(db_session) -> list[int]:
    return list(db_session.scalars(select(Command.device_id).where(Command.request_type == "InstallApplication")
                                   .order_by(Command.id)))


def test_accepting_a_pending_device_installs_its_group_apps(app, client, auth, db_session, monkeypatch):
    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "manual")
    install_push_topic(db_session, monkeypatch)
    h = auth("read", "write")
    catalogue_app = make_app(db_session, "com.example.welcome")
    smart = _group(client, h, name="iPads", kind="smart", filter={"platform": "ipados"})
    assert client.post(f"/api/v1/apps/{catalogue_app.id}/assignments", json={"groups": [smart]},
                       headers=h).get_json()["install_queued"] == 0
    sim = SimulatedDevice(FlaskTransport(client), platform="ipados")
    sim.enroll()
    assert sim.authenticate() == 200
    assert _installs(db_session) == []  # pending: nothing waits in its queue
    (auth_set,) = [s for s in client.get(f"{ADMISSION}/devices", headers=h).get_json()
                   if json.loads(s["device_identity"])["udid"] == sim.udid]
    response = client.put(f"{ADMISSION}/devices/{auth_set['id']}/status", json={"status": "accepted"}, headers=h)
    assert response.status_code == 200
    device_id = db_session.scalar(select(Device.id).where(Device.udid == sim.udid))
    assert _installs(db_session) == [device_id]
    assert sim.token_update() == 200
    assert [t for _, t, _ in sim.run_session()] == ["InstallApplication"]


def test_push_worker_upkeep_reconciles_apps_of_smart_groups(app, client, auth, db_session):
    """A device that reports a new OS version enters a smart group; the periodic upkeep queues the
    group's app for it, once."""
    h = auth("read", "write")
    catalogue_app = make_app(db_session, "com.example.upkeep")
    old, updated = make_device(db_session, platform="ios", os_version="16.7"), make_device(
        db_session, platform="ios", os_version="16.7")
    smart = _group(client, h, name="iOS 18", kind="smart", filter={"os_version": "18.*"})
    assert client.post(f"/api/v1/apps/{catalogue_app.id}/assignments", json={"groups": [smart]},
                       headers=h).get_json()["install_queued"] == 0
    db_session.get(Device, updated.id).os_version = "18.1"  # as a DeviceInformation answer would
    db_session.commit()
    upkeep = Upkeep(app)
    upkeep.run(force=True)
    upkeep.run(force=True)  # nothing left to do the second time
    assert _installs(db_session) == [updated.id]
    assert old.id not in _installs(db_session)


ROOT = Path(mdmserver.__file__).parent
WRITER = "mdmserver/app_assignments/service.py"
WRITES = re.compile(r"\b(insert|update|delete)\(\s*(AppAssignment|DeviceAppState)(\.__table__)?\s*\)"
                    r"|\b(AppAssignment|DeviceAppState)\(|(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?"
                    r"(app_assignments|device_app_states)\"?\s", re.IGNORECASE)


def test_only_the_app_assignments_service_writes_its_tables():
    writers = {str(path.relative_to(ROOT.parent)) for path in ROOT.rglob("*.py")
               if not str(path).endswith("/models.py") and WRITES.search(path.read_text())}
    assert writers == {WRITER}
