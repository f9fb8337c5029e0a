"""Issue 15's done-when for blueprints, over HTTP with simulated devices: a blueprint scoped to a smart
group (``os_version`` ``17.*``) with two profiles and an OS target reaches devices that enroll into the
scope without any manual reconcile, in the blueprint's order; the OS update is queued once; a device
whose inventory moves it out of the group has the blueprint's profiles removed."""

from __future__ import annotations

import plistlib

import pytest
from sqlalchemy import select

from mdmserver.pki.cms import unwrap_signed
from mdmserver.records.devices import Device
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice
from tests.blueprints.helpers import commands, created, group, parameters, states
from tests.factories import install_push_topic, make_wifi_profile

FLEET = 50


@pytest.fixture
def topic(app, db_session, monkeypatch):
    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "auto")
    return install_push_topic(db_session, monkeypatch)


def _identifier(command) -> str:
    return plistlib.loads(unwrap_signed(parameters(command)["Payload"]).content)["PayloadIdentifier"]


def test_smart_group_blueprint_reaches_enrolling_devices_in_order(client, auth, db_session, topic):
    h = auth("read", "write")
    first = make_wifi_profile(db_session, "com.example.bp.first", ssid="First")
    second = make_wifi_profile(db_session, "com.example.bp.second", ssid="Second")
    db_session.commit()
    smart = group(client, h, name="iOS 17", kind="smart", filter={"os_version": "17.*"})
    doc = created(client, h, name="Office iPhones", scope={"groups": [smart]},
                  profiles=[second.id, first.id],  # the blueprint's order, not the ids'
                  # no deadline: the target goes by ScheduleOSUpdate even to iOS 17 (with one, a declaration: tests/ddm)
                  os_update={"version": "17.6", "install_action": "InstallASAP"})
    blueprint_id = doc["data"]["id"]
    assert doc["meta"]["reconcile"]["profile_install_queued"] == 0  # nobody enrolled yet

    transport = FlaskTransport(client)
    # report 17.5; they install an update at once
    phones = [SimulatedDevice(transport, platform="ios", seed=1500 + i, os_update_delay=0) for i in range(FLEET)]
    mac = SimulatedDevice(transport, platform="macos", seed=1600)  # reports 14.5: not in the group
    for sim in [*phones, mac]:
        sim.enroll()
        assert sim.authenticate() == 200 and sim.token_update() == 200
    ids = {sim.udid: db_session.scalar(select(Device.id).where(Device.udid == sim.udid)) for sim in [*phones, mac]}

    # queued at enrollment, in the blueprint's order: second, first, then the OS update
    for sim in phones:
        queued = commands(db_session, device_id=ids[sim.udid])
        assert [c.request_type for c in queued] == ["InstallProfile", "InstallProfile", "ScheduleOSUpdate"]
        assert [_identifier(c) for c in queued[:2]] == ["com.example.bp.second", "com.example.bp.first"]
        assert parameters(queued[2]) == {"Updates": [{"InstallAction": "InstallASAP", "ProductVersion": "17.6"}]}
    assert commands(db_session, device_id=ids[mac.udid]) == []

    for sim in phones:
        handled = [(t, s) for _, t, s in sim.run_session()]
        assert handled == [("InstallProfile", "Acknowledged")] * 2 + [("ScheduleOSUpdate", "Acknowledged")]
        assert {"com.example.bp.first", "com.example.bp.second"} <= set(sim.profiles)
    assert mac.run_session() == []

    rows = states(client, h, f"/api/v1/blueprints/{blueprint_id}/devices?page[size]=100")
    assert len(rows) == FLEET and {r["membership"] for r in rows} == {"in_scope"}
    assert all([p["state"] for p in r["profiles"]] == ["installed", "installed"] for r in rows)
    assert all(r["os_update"]["state"] == "queued" and r["os_update"]["target_version"] == "17.6" for r in rows)

    # a second reconcile (the upkeep's) queues no OS update again (sent once per target, not in a loop);
    # it asks each device that accepted it how it goes (OSUpdateStatus) and which version it runs
    again = client.post(f"/api/v1/blueprints/{blueprint_id}/reconcile", headers=h).get_json()
    assert again["os_update_queued"] == 0 and again["profile_install_queued"] == 0
    assert again["os_update_checks_queued"] == FLEET
    again = client.post(f"/api/v1/blueprints/{blueprint_id}/reconcile", headers=h).get_json()
    assert again["os_update_checks_queued"] == 0  # one of each pending per device at most

    # the device reports the new version (DeviceInformation): the OS item is installed
    mover = phones[0]
    device_id = ids[mover.udid]
    assert mover.os_version == "17.6"  # the simulator "installed" it
    assert [(t, s) for _, t, s in mover.run_session()] == [("OSUpdateStatus", "Acknowledged"),
                                                           ("DeviceInformation", "Acknowledged")]
    (mine,) = states(client, h, f"/api/v1/devices/{device_id}/blueprints")
    assert mine["os_update"]["state"] == "installed" and mine["os_version"] == "17.6"

    # its inventory moves it out of the smart group: the blueprint's profiles are removed (connect path)
    mover.os_version = "18.0"
    client.post(f"/api/v1/devices/{device_id}/commands", headers=h, json={"request_type": "DeviceInformation"})
    handled = [(t, s) for _, t, s in mover.run_session()]
    assert handled == [("DeviceInformation", "Acknowledged")] + [("RemoveProfile", "Acknowledged")] * 2
    assert not {"com.example.bp.first", "com.example.bp.second"} & set(mover.profiles)
    (mine,) = states(client, h, f"/api/v1/devices/{device_id}/blueprints")
    assert mine["membership"] == "left" and [p["state"] for p in mine["profiles"]] == ["removed", "removed"]
    # the others keep theirs
    rows = states(client, h, f"/api/v1/blueprints/{blueprint_id}/devices?filter[membership]=in_scope&page[size]=100")
    assert len(rows) == FLEET - 1


def test_a_pending_device_gets_the_blueprint_when_accepted(client, auth, db_session, topic, monkeypatch, app):
    """Nothing waits in the queue of a device nobody admitted; accepting it (Mender's API) brings the
    blueprint's items in the same transaction."""
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "manual")
    h = auth("read", "write")
    profile = make_wifi_profile(db_session, "com.example.bp.pending")
    db_session.commit()
    created(client, h, name="everyone", is_global=True, profiles=[profile.id], os_update={"version": "17.6"})
    sim = SimulatedDevice(FlaskTransport(client), platform="ios", seed=1700)
    sim.enroll()
    assert sim.authenticate() == 200
    device_id = db_session.scalar(select(Device.id).where(Device.udid == sim.udid))
    assert commands(db_session, device_id=device_id) == []
    pending = client.get("/api/management/v1/admission/devices?status=pending", headers=h).get_json()
    (auth_set,) = [a for a in pending if a["device_id"] == str(device_id)]
    accepted = client.put(f"/api/management/v1/admission/devices/{auth_set['id']}/status", headers=h,
                          json={"status": "accepted"})
    assert accepted.status_code == 200
    assert [c.request_type for c in commands(db_session, device_id=device_id)] == ["InstallProfile",
                                                                                   "ScheduleOSUpdate"]
    assert sim.token_update() == 200
    assert [(t, s) for _, t, s in sim.run_session()] == [("InstallProfile", "Acknowledged"),
                                                         ("ScheduleOSUpdate", "Acknowledged")]


def test_latest_takes_the_update_the_device_offers_and_a_refusal_is_failed(client, auth, db_session, topic):
    h = auth("read", "write")
    transport = FlaskTransport(client)
    phones = [SimulatedDevice(transport, platform="ios", seed=1800 + i, os_update_delay=0) for i in range(2)]  # 17.5
    ids = []
    for sim in phones:
        sim.enroll()
        assert sim.authenticate() == 200 and sim.token_update() == 200
        ids.append(db_session.scalar(select(Device.id).where(Device.udid == sim.udid)))
        asked = client.post(f"/api/v1/devices/{ids[-1]}/commands", headers=h,
                            json={"request_type": "AvailableOSUpdates"})
        assert asked.status_code in (201, 202)
        assert [(t, s) for _, t, s in sim.run_session()] == [("AvailableOSUpdates", "Acknowledged")]  # 17.6
    refusing = phones[1]
    refusing.answer_overrides["ScheduleOSUpdate"] = "Error"

    doc = created(client, h, name="latest", scope={"devices": ids},
                  os_update={"version": "latest", "install_action": "InstallASAP"})
    assert doc["meta"]["reconcile"]["os_update_queued"] == 2
    for sim, device_id in zip(phones, ids, strict=True):
        (schedule,) = commands(db_session, "ScheduleOSUpdate", device_id)
        assert parameters(schedule) == {"Updates": [{"InstallAction": "InstallASAP", "ProductVersion": "17.6",
                                                     "ProductKey": f"iOSUpdate{sim.build_version}X"}]}
        sim.run_session()
    rows = {int(r["device_id"]): r["os_update"]
            for r in states(client, h, f"/api/v1/blueprints/{doc['data']['id']}/devices")}
    assert (rows[ids[0]]["state"], rows[ids[0]]["detail"]) == ("queued", "UpdateResults: Installing")
    assert (rows[ids[1]]["state"], rows[ids[1]]["detail"]) == ("failed", "ScheduleOSUpdate: error")
    assert rows[ids[0]]["target_version"] == "17.6"
    again = client.post(f"/api/v1/blueprints/{doc['data']['id']}/reconcile", headers=h).get_json()
    assert again["os_update_queued"] == 0  # once per target: the refused one is not retried in a loop


def test_a_one_shot_blueprint_applies_again_to_a_new_enrollment(client, auth, db_session, topic):
    h = auth("read", "write")
    profile = make_wifi_profile(db_session, "com.example.bp.once")
    db_session.commit()
    doc = created(client, h, name="once", is_global=True, profiles=[profile.id], unscope_if_applied=True)
    sim = SimulatedDevice(FlaskTransport(client), platform="ios", seed=1900)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    assert [(t, s) for _, t, s in sim.run_session()] == [("InstallProfile", "Acknowledged")]
    (row,) = states(client, h, f"/api/v1/blueprints/{doc['data']['id']}/devices")
    assert row["membership"] == "unscoped"
    assert client.post(f"/api/v1/blueprints/{doc['data']['id']}/reconcile", headers=h).get_json()[
        "profile_install_queued"] == 0  # applied once

    # the device left management (CheckOut) and enrolls again: a new enrollment gets it once more
    assert sim.checkout() == 200
    sim.profiles.clear()
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    assert [(t, s) for _, t, s in sim.run_session()] == [("InstallProfile", "Acknowledged")]
    assert "com.example.bp.once" in sim.profiles
