"""An OS update followed over HTTP with a simulated iPhone whose update takes time: the blueprint's
upkeep asks OSUpdateStatus and DeviceInformation while the update downloads and installs, the progress
is stored and shown (the blueprint's OS item, the fleet view), and the item is installed once the
device reports the version. A refused update is failed, with the device's reason, in the fleet view."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mdmserver.records.devices import Device, DeviceOSUpdateStatus
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice
from tests.blueprints.helpers import created, states
from tests.factories import install_push_topic


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def topic(app, db_session, monkeypatch):
    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "auto")
    return install_push_topic(db_session, monkeypatch)


def _enrolled(client, h, db_session, seed: int, **kw) -> tuple[SimulatedDevice, int]:
    sim = SimulatedDevice(FlaskTransport(client), platform="ios", seed=seed, **kw)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    device_id = db_session.scalar(select(Device.id).where(Device.udid == sim.udid))
    asked = client.post(f"/api/v1/devices/{device_id}/commands", headers=h, json={"request_type": "AvailableOSUpdates"})
    assert asked.status_code in (201, 202)
    assert [(t, s) for _, t, s in sim.run_session()] == [("AvailableOSUpdates", "Acknowledged")]
    return sim, device_id


def _session(sim: SimulatedDevice) -> list[tuple[str, str]]:
    return [(t, s) for _, t, s in sim.run_session()]


def _summary(client, h, query: str = "") -> dict:
    response = client.get(f"/api/v1/os_updates{query}", headers=h)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["data"]["type"] == "os_update_summaries"
    return response.get_json()["data"]["attributes"]


def test_an_update_is_followed_until_the_device_reports_its_version(client, auth, db_session, topic):
    h = auth("read", "write")
    clock = Clock()
    sim, device_id = _enrolled(client, h, db_session, 4100, os_update_delay=10, clock=clock)
    doc = created(client, h, name="17.6 now", scope={"devices": [device_id]},
                  os_update={"version": "17.6", "install_action": "InstallASAP"})
    blueprint_id = doc["data"]["id"]
    reconcile = f"/api/v1/blueprints/{blueprint_id}/reconcile"
    assert _session(sim) == [("ScheduleOSUpdate", "Acknowledged")]
    assert sim.os_version == "17.5" and sim.os_update is not None  # downloading, not installed

    # the upkeep (its reconcile) asks how it goes: half-way through the download
    assert client.post(reconcile, headers=h).get_json()["os_update_checks_queued"] == 1
    clock.now += 2.5
    assert _session(sim) == [("OSUpdateStatus", "Acknowledged"), ("DeviceInformation", "Acknowledged")]
    db_session.expire_all()
    (row,) = db_session.scalars(select(DeviceOSUpdateStatus).where(DeviceOSUpdateStatus.device_id == device_id))
    assert (row.status, row.is_downloaded, row.download_percent_complete) == ("Downloading", False, 0.5)
    assert row.product_key == sim.offered_updates[0]["ProductKey"]
    (item,) = states(client, h, f"/api/v1/devices/{device_id}/blueprints")
    assert item["os_update"]["state"] == "queued" and item["os_update"]["detail"] == "UpdateResults: Downloading"
    assert [(p["status"], p["download_percent_complete"]) for p in item["os_update"]["progress"]] == [
        ("Downloading", 0.5)]
    (target,) = _summary(client, h)["targets"]
    assert (target["behind"], target["scheduled"], target["in_progress"], target["installed"]) == (1, 1, 1, 0)

    # later: downloaded, installing
    client.post(reconcile, headers=h)
    clock.now += 5
    assert _session(sim) == [("OSUpdateStatus", "Acknowledged"), ("DeviceInformation", "Acknowledged")]
    (item,) = states(client, h, f"/api/v1/devices/{device_id}/blueprints")
    assert [(p["status"], p["is_downloaded"]) for p in item["os_update"]["progress"]] == [("Installing", True)]

    # done: the device runs 17.6, reports no update in progress, and the item is installed
    client.post(reconcile, headers=h)
    clock.now += 5
    assert _session(sim) == [("OSUpdateStatus", "Acknowledged"), ("DeviceInformation", "Acknowledged")]
    assert sim.os_version == "17.6" and sim.os_update is None
    again = client.post(reconcile, headers=h).get_json()
    assert again["os_update_checks_queued"] == 0 and again["os_update_queued"] == 0
    (item,) = states(client, h, f"/api/v1/devices/{device_id}/blueprints")
    assert item["os_update"]["state"] == "installed" and item["os_update"]["progress"] == []
    assert item["os_version"] == "17.6"
    summary = _summary(client, h)
    (target,) = summary["targets"]
    assert (target["behind"], target["at_target"], target["installed"], target["in_progress"]) == (0, 1, 1, 0)
    assert {"platform": "ios", "os_version": "17.6", "count": 1} in summary["versions"]
    assert _session(sim) == []  # nothing more is asked


def test_a_refused_update_is_failed_with_the_devices_reason(client, auth, db_session, topic):
    h = auth("read", "write")
    sim, device_id = _enrolled(client, h, db_session, 4200, os_update_delay=0)
    doc = created(client, h, name="18 please", scope={"devices": [device_id]},
                  os_update={"version": "18.0", "install_action": "InstallASAP"})
    assert _session(sim) == [("ScheduleOSUpdate", "Acknowledged")]  # acknowledged, with an UpdateResults error
    assert sim.os_version == "17.5"
    reason = "UpdateResults: The update update-18.0 is not available for this device."
    (item,) = states(client, h, f"/api/v1/blueprints/{doc['data']['id']}/devices")
    assert (item["os_update"]["state"], item["os_update"]["detail"]) == ("failed", reason)
    summary = _summary(client, h)
    assert summary["failure_count"] == 1
    (failure,) = summary["failures"]
    assert (failure["device_id"], failure["blueprint_id"], failure["target_version"], failure["reason"]) == (
        str(device_id), doc["data"]["id"], "18.0", reason)
    assert failure["udid"] == sim.udid and failure["failed_at"].endswith("Z")
    (target,) = summary["targets"]
    assert (target["failed"], target["behind"]) == (1, 1)
    # not sent again in a loop, and no progress is asked of a failed update
    again = client.post(f"/api/v1/blueprints/{doc['data']['id']}/reconcile", headers=h).get_json()
    assert again["os_update_queued"] == 0 and again["os_update_checks_queued"] == 0
    limited = _summary(client, h, "?failures_limit=0")
    assert limited["failure_count"] == 1 and limited["failures"] == []


@pytest.mark.parametrize("query", ["?failures_limit=-1", "?failures_limit=501", "?failures_limit=x", "?nope=1"])
def test_the_fleet_view_refuses_bad_parameters(client, auth, query):
    response = client.get(f"/api/v1/os_updates{query}", headers=auth("read"))
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["errors"][0]["source"]["parameter"] in ("failures_limit", "nope")


def test_the_fleet_view_needs_a_token(client, auth):
    assert client.get("/api/v1/os_updates").status_code == 401
    empty = _summary(client, auth("read"))
    assert empty == {"versions": [], "targets": [], "failure_count": 0, "failures": []}
