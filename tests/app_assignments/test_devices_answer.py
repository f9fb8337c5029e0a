"""App assignment with simulated devices: enrolled through the real check-in endpoints (CMS-signed), they
receive the installs and removals and answer them; their answers and app lists move the states."""

from __future__ import annotations

from sqlalchemy import select

from mdmserver.apps.models import App
from mdmserver.records.devices import Device
from mdmserver.simulator.device import parse_command_envelope
from tests.apps.builders import info_plist, make_ipa

JSONAPI = "application/vnd.api+json"


def _upload(client, h, db_session, bundle_id: str, version: str = "1.0", build: str = "1") -> App:
    """A real .ipa through the upload route: the simulated devices fetch its manifest and package."""
    data = make_ipa(info_plist(bundle_id, version, build, "Field", "16.0"))
    response = client.post("/api/v1/apps/packages?filename=app.ipa", data=data,
                           headers={**h, "Content-Type": "application/octet-stream"})
    assert response.status_code == 201, response.get_json()
    return db_session.get(App, int(response.get_json()["data"]["id"]))


def _device_id(db_session, sim) -> int:
    return db_session.scalar(select(Device.id).where(Device.udid == sim.udid))


def _states(client, h, app, query=""):
    response = client.get(f"/api/v1/apps/{app.id}/devices{query}", headers=h)
    assert response.status_code == 200, response.get_json()
    return {d["attributes"]["device_id"]: d["attributes"] for d in response.get_json()["data"]}


def _group(client, h, **attributes) -> int:
    response = client.post("/api/v1/device_groups", json={"data": {"type": "device_groups", "attributes": attributes}},
                           headers={**h, "Content-Type": JSONAPI})
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["data"]["id"])


def _types(handled):
    return [(request_type, status) for _uuid, request_type, status in handled]


def test_install_status_removal_through_the_check_in_endpoint(client, auth, db_session, enrolled):
    h = auth("read", "write")
    app = _upload(client, h, db_session, "com.example.field", "3.2", "320")
    phone, tablet, rejecting, mac = enrolled("ios"), enrolled("ipados"), enrolled("ios"), enrolled("macos")
    ids = {sim.udid: _device_id(db_session, sim) for sim in (phone, tablet, rejecting, mac)}
    group = _group(client, h, name="Field")
    response = client.post(f"/api/v1/device_groups/{group}/relationships/devices", headers=h,
                           json={"data": [{"type": "devices", "id": str(i)} for i in ids.values()]})
    assert response.status_code in (200, 204)
    assigned = client.post(f"/api/v1/apps/{app.id}/assignments", json={"groups": [group]}, headers=h).get_json()
    assert assigned["install_queued"] == 3  # the Mac is in the group; an iOS app is not for it

    # the phone acknowledges, the tablet answers Error, the third device accepts but the install fails
    tablet.answer_overrides["InstallApplication"] = "Error"
    assert _types(phone.run_session()) == [("InstallApplication", "Acknowledged")]
    assert _types(tablet.run_session()) == [("InstallApplication", "Error")]
    assert mac.run_session() == []
    status, command = rejecting.idle()
    command_uuid, request_type, params = parse_command_envelope(command)
    assert (status, request_type) == (200, "InstallApplication")
    assert params["ManifestURL"].endswith(f"/apps/{app.download_token}/manifest.plist")
    status, _ = rejecting.send("/mdm/connect", {"UDID": rejecting.udid, "CommandUUID": command_uuid,
                                                "Status": "Acknowledged", "State": "Failed",
                                                "RejectionReason": "NotSupported"})
    assert status == 200
    # the phone fetched the manifest and the package, checked the hashes and answered State Managed
    assert phone.installed_version("com.example.field") == "3.2"
    states = _states(client, h, app)
    assert states[ids[phone.udid]]["status"] == "installed"
    assert states[ids[tablet.udid]]["status"] == "failed"
    assert "MCMDMErrorDomain" in states[ids[tablet.udid]]["detail"]
    assert (states[ids[rejecting.udid]]["status"], states[ids[rejecting.udid]]["detail"]) == (
        "failed", "InstallApplication: Failed (NotSupported)")
    assert ids[mac.udid] not in states

    # the refresh action asks the devices that have a state; their lists give the installed version
    refreshed = client.post(f"/api/v1/apps/{app.id}/refresh", headers=h)
    assert refreshed.status_code == 202
    assert refreshed.get_json() == {"app_id": str(app.id), "managed_list_queued": 3, "installed_list_queued": 3}
    # asked already: not queued twice
    assert client.post(f"/api/v1/apps/{app.id}/refresh", headers=h).get_json()["managed_list_queued"] == 0
    assert _types(phone.run_session()) == [("ManagedApplicationList", "Acknowledged"),
                                           ("InstalledApplicationList", "Acknowledged")]
    states = _states(client, h, app, "?filter[status]=installed")
    assert list(states) == [ids[phone.udid]]
    assert states[ids[phone.udid]]["installed_version"] == "3.2" and states[ids[phone.udid]]["drift"] is False
    device_apps = client.get(f"/api/v1/devices/{phone.udid}/apps", headers=h).get_json()["data"]
    assert [(d["attributes"]["bundle_id"], d["attributes"]["status"]) for d in device_apps] == [
        ("com.example.field", "installed")]

    # unassigned: RemoveApplication for the phone (installed); the failed devices are let go
    (assignment,) = client.get(f"/api/v1/apps/{app.id}/assignments", headers=h).get_json()["data"]
    out = client.delete(f"/api/v1/apps/{app.id}/assignments/{assignment['id']}", headers=h).get_json()
    assert out["removal_queued"] == 1
    assert _types(phone.run_session()) == [("RemoveApplication", "Acknowledged")]
    assert phone.received[-1] == ("RemoveApplication", {"Identifier": "com.example.field"})
    assert _types(tablet.run_session()) == [("ManagedApplicationList", "Acknowledged"),
                                            ("InstalledApplicationList", "Acknowledged")]
    states = _states(client, h, app)
    assert {d: s["status"] for d, s in states.items()} == {
        ids[phone.udid]: "removed", ids[tablet.udid]: "removed", ids[rejecting.udid]: "removed"}
    # every device received the install exactly once
    for sim in (phone, tablet, rejecting):
        assert [t for t, _ in sim.received].count("InstallApplication") <= 1
    assert [t for t, _ in phone.received].count("InstallApplication") == 1


def test_smart_group_apps_follow_enrollment_and_reported_inventory(client, auth, db_session, enrolled):
    """A device matching a smart group when it enrolls gets the app with its enrollment; one that comes
    to match it through what it reports (DeviceInformation on the connect path) gets it in that session."""
    h = auth("read", "write")
    app = _upload(client, h, db_session, "com.example.kiosk")
    smart = _group(client, h, name="Kiosks", kind="smart", filter={"name": "Kiosk"})
    assert client.post(f"/api/v1/apps/{app.id}/assignments", json={"groups": [smart]},
                       headers=h).get_json()["install_queued"] == 0
    kiosk = enrolled("ios", device_name="Kiosk 7")
    assert _types(kiosk.run_session()) == [("InstallApplication", "Acknowledged")]
    other = enrolled("ios", device_name="Front desk")
    assert other.run_session() == []
    other.device_name = "Kiosk 8"  # renamed on the device: its next DeviceInformation says so
    other_id = _device_id(db_session, other)
    queued = client.post(f"/api/v1/devices/{other_id}/commands", headers={**h, "Content-Type": JSONAPI},
                         json={"data": {"type": "commands", "attributes": {"request_type": "DeviceInformation"}}})
    assert queued.status_code in (201, 202), queued.get_json()
    assert _types(other.run_session()) == [("DeviceInformation", "Acknowledged"),
                                           ("InstallApplication", "Acknowledged")]
    assert _types(kiosk.run_session()) == []  # nothing queued twice
    states = _states(client, h, app)
    assert {s["status"] for s in states.values()} == {"installed"} and len(states) == 2
    assert kiosk.installed_version("com.example.kiosk") == other.installed_version("com.example.kiosk") == "1.0"


def test_update_action_resends_the_install_where_versions_drift_or_installs_failed(client, auth, db_session, enrolled):
    """Version drift is visible (``drift``) and updatable: ``POST /api/v1/apps/<id>/update`` re-sends the
    install to the devices that report another version or whose install failed, and to no other."""
    h = auth("read", "write")
    app = _upload(client, h, db_session, "com.example.drift", "2.0", "200")
    current, drifting, failing = enrolled("ios"), enrolled("ios"), enrolled("ios")
    ids = {sim.udid: _device_id(db_session, sim) for sim in (current, drifting, failing)}
    assigned = client.post(f"/api/v1/apps/{app.id}/assignments", json={"devices": list(ids.values())}, headers=h)
    assert assigned.get_json()["install_queued"] == 3
    failing.answer_overrides["InstallApplication"] = "Error"
    for sim in (current, drifting, failing):
        sim.run_session()
    # the user (or a restore) left an older build on one device: its list says so
    drifting.apps["com.example.drift"]["ShortVersion"] = "1.9"
    assert client.post(f"/api/v1/apps/{app.id}/refresh", headers=h).status_code == 202
    for sim in (current, drifting, failing):
        sim.run_session()
    states = _states(client, h, app)
    assert (states[ids[drifting.udid]]["installed_version"], states[ids[drifting.udid]]["drift"]) == ("1.9", True)
    assert (states[ids[current.udid]]["installed_version"], states[ids[current.udid]]["drift"]) == ("2.0", False)
    assert states[ids[failing.udid]]["status"] == "failed"

    failing.answer_overrides.pop("InstallApplication")
    updated = client.post(f"/api/v1/apps/{app.id}/update", headers=h)
    assert updated.status_code == 202 and updated.get_json()["install_queued"] == 2
    assert client.post(f"/api/v1/apps/{app.id}/update", headers=h).get_json()["install_queued"] == 0  # once
    assert current.run_session() == []
    for sim in (drifting, failing):
        assert _types(sim.run_session()) == [("InstallApplication", "Acknowledged")]
        assert sim.installed_version("com.example.drift") == "2.0"
    assert client.post(f"/api/v1/apps/{app.id}/update", json={"devices": "all"}, headers=h).status_code == 422
