"""Profile assignment to devices and groups: InstallProfile / RemoveProfile, reconciliation, states."""

from __future__ import annotations

import plistlib

from sqlalchemy import event, func, select

from mdmserver.assignments.models import DeviceProfileState
from mdmserver.collaborators import secret_box
from mdmserver.commands.service import command_parameters
from mdmserver.db import utcnow
from mdmserver.pki.cms import unwrap_signed
from mdmserver.records.attributes import CustomAttribute
from mdmserver.records.commands import Command
from mdmserver.records.devices import InstalledProfile
from mdmserver.records.groups import GroupMember
from tests.factories import make_device, make_wifi_profile, seed_devices

JSONAPI = "application/vnd.api+json"


def _commands(db_session, request_type):
    return db_session.scalars(select(Command).where(Command.request_type == request_type).order_by(Command.id)).all()


def _states(client, h, profile):
    response = client.get(f"/api/v1/profiles/{profile.id}/assignments/status", headers=h)
    assert response.status_code == 200, response.get_json()
    return {d["attributes"]["device_id"]: d["attributes"]["status"] for d in response.get_json()["data"]}


def _send(client, h, method, url, body):
    return client.open(url, method=method, json=body, headers=h)


def _group(client, h, **attributes):
    response = client.post("/api/v1/device_groups", json={"data": {"type": "device_groups", "attributes": attributes}},
                           headers={**h, "Content-Type": JSONAPI})
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["data"]["id"])


def test_assign_to_devices_and_groups(client, auth, db_session):
    h = auth("read", "write")
    profile = make_wifi_profile(db_session)
    a, b, c = (make_device(db_session) for _ in range(3))
    gone = make_device(db_session, enrolled=False, unenrolled_at=utcnow())
    static = _group(client, h, name="Paris")
    _send(client, h, "POST", f"/api/v1/device_groups/{static}/relationships/devices",
          {"data": [{"type": "devices", "id": str(b.id)}, {"type": "devices", "id": str(gone.id)}]})
    response = _send(client, h, "POST", f"/api/v1/profiles/{profile.id}/assignments",
                     {"devices": [a.udid, b.id], "groups": [static]})
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"profile_id": str(profile.id), "assigned": 3, "install_queued": 2,
                                   "removal_queued": 0}
    installs = _commands(db_session, "InstallProfile")
    assert sorted(cmd.device_id for cmd in installs) == sorted([a.id, b.id])  # b counted once; gone skipped
    payload = command_parameters(installs[0], secret_box())["Payload"]
    assert plistlib.loads(unwrap_signed(payload).content)["PayloadIdentifier"] == "com.example.wifi"
    assert _states(client, h, profile) == {a.id: "scheduled", b.id: "scheduled"}
    listed = client.get(f"/api/v1/profiles/{profile.id}/assignments", headers=h).get_json()
    assert [x["attributes"]["target_type"] for x in listed["data"]] == ["device", "device", "group"]
    # assigning again changes nothing
    again = _send(client, h, "POST", f"/api/v1/profiles/{profile.id}/assignments", {"devices": [a.id]}).get_json()
    assert again["assigned"] == 0 and again["install_queued"] == 0
    # results: a acknowledges, b fails
    for cmd in installs:
        cmd.status = "acknowledged" if cmd.device_id == a.id else "error"
    db_session.flush()
    assert _states(client, h, profile) == {a.id: "installed", b.id: "failed"}
    # joining the group installs; leaving it removes (b is still assigned directly)
    _send(client, h, "POST", f"/api/v1/device_groups/{static}/relationships/devices",
          {"data": [{"type": "devices", "id": str(c.id)}]})
    assert _states(client, h, profile)[c.id] == "scheduled"
    _send(client, h, "DELETE", f"/api/v1/device_groups/{static}/relationships/devices",
          {"data": [{"type": "devices", "id": str(c.id)}]})
    assert _states(client, h, profile)[c.id] == "removal_scheduled"
    removal = _commands(db_session, "RemoveProfile")[-1]
    assert removal.device_id == c.id and command_parameters(removal, secret_box()) == {"Identifier": "com.example.wifi"}
    removal.status = "acknowledged"
    db_session.flush()
    assert _states(client, h, profile)[c.id] == "removed"
    # unassigning a device removes the profile from it
    out = _send(client, h, "DELETE", f"/api/v1/profiles/{profile.id}/assignments", {"devices": [a.id]}).get_json()
    assert out["unassigned"] == 1 and out["removal_queued"] == 1


def test_smart_groups_revisions_and_profilelist(client, auth, db_session):
    h = auth("read", "write")
    profile = make_wifi_profile(db_session)
    it, sales = make_device(db_session), make_device(db_session)
    smart = _group(client, h, name="IT", kind="smart", filter={"custom.dept": "IT"})
    db_session.add(CustomAttribute(device_id=it.id, name="dept", value="IT"))
    db_session.flush()
    assert _send(client, h, "POST", f"/api/v1/profiles/{profile.id}/assignments",
                 {"groups": [smart]}).get_json()["install_queued"] == 1
    # a custom attribute change moves sales into the smart group: reconciled at once
    response = client.patch(f"/api/v1/devices/{sales.id}/custom_attributes",
                            json={"data": {"type": "custom_attributes", "attributes": {"dept": "IT"}}},
                            headers={**h, "Content-Type": JSONAPI})
    assert response.status_code == 200
    assert _states(client, h, profile) == {it.id: "scheduled", sales.id: "scheduled"}
    # the device's ProfileList reports it installed
    db_session.add(InstalledProfile(device_id=it.id, identifier="com.example.wifi", reported_at=utcnow()))
    db_session.flush()
    assert _states(client, h, profile)[it.id] == "installed"
    # a new revision of the profile re-installs where assigned
    make_wifi_profile(db_session, ssid="Office-2", replace=True)
    db_session.refresh(profile)
    assert profile.revision == 2
    counts = _send(client, h, "POST", f"/api/v1/profiles/{profile.id}/assignments/reconcile", {}).get_json()
    assert counts["install_queued"] == 2
    states = client.get(f"/api/v1/devices/{it.id}/profiles", headers=h).get_json()["data"]
    assert states[0]["attributes"]["revision"] == 2 and states[0]["attributes"]["current_revision"] == 2
    assert client.post("/api/v1/assignments/reconcile", headers=h).get_json()["install_queued"] == 0


def test_manageengine_device_profiles(client, auth, db_session):
    h = auth("read", "write")
    p1, p2 = make_wifi_profile(db_session, "com.example.one"), make_wifi_profile(db_session, "com.example.two")
    device = make_device(db_session)
    response = _send(client, h, "POST", f"/api/v1/devices/{device.serial_number}/profiles",
                     {"profile_ids": [p1.id, str(p2.id)]})
    assert response.status_code == 200
    assert [p["install_queued"] for p in response.get_json()["profiles"]] == [1, 1]
    states = client.get(f"/api/v1/devices/{device.id}/profiles", headers=h).get_json()
    assert {s["attributes"]["profile_id"] for s in states["data"]} == {p1.id, p2.id}
    response = _send(client, h, "DELETE", f"/api/v1/devices/{device.id}/profiles", {"profile_ids": [p2.id]})
    assert response.get_json()["profiles"][0]["removal_queued"] == 1


def test_bad_assignment_input(client, auth, db_session):
    h = auth("read", "write")
    profile = make_wifi_profile(db_session)
    device = make_device(db_session)
    url = f"/api/v1/profiles/{profile.id}/assignments"
    for body in ({}, {"devices": "all"}, {"devices": [device.id, "NOPE"]}, {"groups": [424242]},
                 {"groups": ["x"]}, {"devices": [device.id], "extra": 1}, [device.id], {"devices": [True]}):
        response = _send(client, h, "POST", url, body)
        assert response.status_code == 422, body
    assert db_session.scalar(select(func.count()).select_from(Command)) == 0
    assert _send(client, h, "POST", "/api/v1/profiles/424242/assignments", {"devices": [device.id]}).status_code == 404
    assert _send(client, h, "POST", "/api/v1/profiles/x/assignments", {"devices": [device.id]}).status_code == 404
    dev = f"/api/v1/devices/{device.id}/profiles"
    for body in ({}, {"profile_ids": []}, {"profile_ids": [424242]}, {"profile_ids": ["x"]}, {"ids": [1]}):
        assert _send(client, h, "POST", dev, body).status_code == 422, body
    assert client.get(f"{url}/status?filter[status]=lost", headers=h).status_code == 400
    assert db_session.scalar(select(func.count()).select_from(DeviceProfileState)) == 0


def test_assigning_to_a_large_group_is_constant_sql(client, auth, db_session):
    h = auth("read", "write")
    client.get("/api/v1/actions", headers=h)
    counts = {}
    for size in (10, 300):
        profile = make_wifi_profile(db_session, f"com.example.size{size}")
        ids = seed_devices(db_session, size, start=size * 1000)
        group = _group(client, h, name=f"g{size}")
        db_session.add_all([GroupMember(group_id=group, device_id=i) for i in ids])
        db_session.flush()
        seen = []

        def listener(conn, clause, *args, seen=seen):
            if not str(clause).startswith(("SAVEPOINT", "RELEASE")):
                seen.append(str(clause))

        bind = db_session.get_bind()
        event.listen(bind, "before_execute", listener)
        try:
            result = _send(client, h, "POST", f"/api/v1/profiles/{profile.id}/assignments", {"groups": [group]})
        finally:
            event.remove(bind, "before_execute", listener)
        assert result.get_json()["install_queued"] == size
        counts[size] = len(seen)
    assert counts[10] == counts[300] <= 30, counts


def test_push_worker_upkeep_reconciles_smart_groups_after_device_reported_changes(app, client, auth, db_session):
    """Inventory a device reports (here its OS version) can move it into a smart group; the worker's
    periodic upkeep queues the group's profiles for it, once."""
    from mdmserver.jobs import Upkeep
    from mdmserver.records.devices import Device

    h = auth("read", "write")
    profile = make_wifi_profile(db_session, identifier="com.example.upkeep")
    old, updated = make_device(db_session, os_version="16.7"), make_device(db_session, os_version="16.7")
    smart = _group(client, h, name="iOS 17", kind="smart", filter={"os_version": "17.*"})
    assert _send(client, h, "POST", f"/api/v1/profiles/{profile.id}/assignments",
                 {"groups": [smart]}).get_json()["install_queued"] == 0
    db_session.get(Device, updated.id).os_version = "17.5.1"  # as a DeviceInformation answer would
    db_session.commit()

    upkeep = Upkeep(app)
    upkeep.run(force=True)
    upkeep.run(force=True)  # a second pass has nothing left to do
    installs = [c for c in _commands(db_session, "InstallProfile")
                if command_parameters(c, secret_box()).get("Payload") is not None]
    assert [c.device_id for c in installs] == [updated.id]
    assert _states(client, h, profile) == {updated.id: "scheduled"}
    assert old.id not in {c.device_id for c in installs}
