"""The simulator's declarative management client against the real server over HTTP (SQLite, and
PostgreSQL when ``MDMSERVER_TEST_POSTGRES_URL`` is set): a blueprint with an OS target becomes
declarations, the ``DeclarativeManagement`` command makes the device sync, the device reports its status
and "installs" the update, and the server shows the version and the status items; a blueprint change
changes the token and the device fetches only what changed."""

from __future__ import annotations

import plistlib
import uuid
from typing import Any

import pytest

from mdmserver.simulator.device import SimulatedDevice

JSONAPI = {"Content-Type": "application/vnd.api+json"}
DEADLINE = "2026-12-08T18:00:00"
SOFTWARE_UPDATE = "com.apple.configuration.softwareupdate.enforcement.specific"


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def _enrolled(transport, seed: int, clock: Clock, **kw: Any) -> SimulatedDevice:
    sim = SimulatedDevice(transport, seed=seed, **kw)
    sim.ddm.update_delay, sim.ddm.clock = 10, clock
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    return sim


def _device_id(api, sim: SimulatedDevice) -> int:
    return int(api.get(f"/api/v1/devices/{sim.udid}").json()["data"]["id"])


def _blueprint(api, **attributes: Any) -> str:
    response = api.post("/api/v1/blueprints", headers=JSONAPI,
                        json={"data": {"type": "blueprints", "attributes": attributes}})
    assert response.status_code == 201, response.json()
    return response.json()["data"]["id"]


def _patch(api, blueprint_id: str, **attributes: Any) -> dict[str, Any]:
    response = api.patch(f"/api/v1/blueprints/{blueprint_id}", headers=JSONAPI,
                         json={"data": {"type": "blueprints", "id": blueprint_id, "attributes": attributes}})
    assert response.status_code == 200, response.json()
    return response.json()


def _status_items(api, device_id: int) -> dict[str, Any]:
    response = api.get(f"/api/v1/devices/{device_id}/ddm_status")
    assert response.status_code == 200, response.json()
    return {item["key_path"]: item["value"] for item in response.json()["data"]["attributes"]["status_items"]}


def _declarations(api, device_id: int) -> dict[str, dict[str, Any]]:
    response = api.get(f"/api/v1/devices/{device_id}/declarations")
    assert response.status_code == 200, response.json()
    return {d["attributes"]["identifier"]: d["attributes"] for d in response.json()["data"]}


def _os_item(api, device_id: int) -> dict[str, Any]:
    (row,) = api.get(f"/api/v1/devices/{device_id}/blueprints").json()["data"]
    return row["attributes"]["os_update"]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_os_target_over_ddm_round_trip(live, api, transport, clock) -> None:
    phone = _enrolled(transport, 4101, clock)  # iOS 17.5
    device_id = _device_id(api, phone)
    blueprint_id = _blueprint(api, name="ddm e2e", scope={"devices": [device_id]},
                              os_update={"version": "17.6", "deadline": DEADLINE})

    # the server tells the device through the MDM command; the device syncs once the session ends
    assert [(t, s) for _u, t, s in phone.run_session()] == [("DeclarativeManagement", "Acknowledged")]
    assert phone.ddm.errors == []
    # the command carried the tokens: the device went straight to the declaration items
    assert phone.ddm.requests[0] == "declaration-items" and phone.ddm.requests[-1] == "status"
    enforcement = f"mdmserver.blueprint.{blueprint_id}.softwareupdate"
    held = phone.ddm.held("configuration")
    assert held[enforcement].type == SOFTWARE_UPDATE and held[enforcement].payload == {
        "TargetOSVersion": "17.6", "TargetLocalDateTime": DEADLINE}
    assert all(d.valid == "valid" and d.active for d in phone.ddm.declarations.values())
    assert phone.os_version == "17.5" and phone.ddm.install_state == "downloading"

    # the server stored the report: status items and every declaration's status, current
    items = _status_items(api, device_id)
    assert items["softwareupdate.install-state"] == "downloading"
    assert items["softwareupdate.pending-version"]["os-version"] == "17.6"
    assert items["device.operating-system.version"] == "17.5"
    declarations = _declarations(api, device_id)
    assert set(declarations) == {d.identifier for d in phone.ddm.declarations.values()}
    for row in declarations.values():
        assert row["reported"]["current"] and row["reported"]["valid"] == "valid" and row["reported"]["active"]
    # the device could not report what it does not have: the report's Errors say which
    errors = api.get(f"/api/v1/devices/{device_id}/ddm_status").json()["data"]["attributes"]["errors"]
    assert {e["StatusItem"] for e in errors} == {"device.operating-system.supplemental.extra-version"}
    assert items["softwareupdate.install-reason"] == {"reason": ["declaration"], "declaration-id": enforcement}

    assert _os_item(api, device_id)["detail"] == "softwareupdate.install-state: downloading"

    # the update installs after its delay; the device reports it (a status report, incremental) and the
    # blueprint's OS item follows the report
    clock.now += 11
    report = phone.ddm.tick()
    assert "FullReport" not in report and "management" not in report["StatusItems"]  # no declaration changed
    assert phone.os_version == "17.6" and phone.build_version == "21G80"
    items = _status_items(api, device_id)
    assert items["device.operating-system.version"] == "17.6"
    assert items["device.operating-system.build-version"] == "21G80"
    assert items["softwareupdate.install-state"] == "none"
    assert items["softwareupdate.pending-version"] == {"os-version": "", "build-version": ""}
    assert _os_item(api, device_id)["state"] == "installed"
    # and so does its next DeviceInformation, for the inventory
    created = api.post(f"/api/v1/devices/{device_id}/commands", json={"request_type": "DeviceInformation"})
    assert created.status_code in (201, 202)
    assert [(t, s) for _u, t, s in phone.run_session()] == [("DeviceInformation", "Acknowledged")]
    assert api.get(f"/api/v1/devices/{device_id}").json()["data"]["attributes"]["os_version"] == "17.6"
    # never both ways: no ScheduleOSUpdate was sent to this device
    history = api.get(f"/api/v1/devices/{device_id}/commands").json()["data"]
    assert "ScheduleOSUpdate" not in {c["attributes"]["request_type"] for c in history}


def test_a_blueprint_change_changes_the_token_and_only_changed_declarations_are_fetched(
        live, api, transport, clock) -> None:
    phone = _enrolled(transport, 4102, clock)
    device_id = _device_id(api, phone)
    blueprint_id = _blueprint(api, name="ddm change", scope={"devices": [device_id]},
                              os_update={"version": "17.6", "deadline": DEADLINE})
    phone.run_session()
    first_token = phone.ddm.declarations_token
    assert first_token and phone.ddm.errors == []

    # nothing changed: a sync on demand asks the tokens and stops there
    phone.ddm.requests.clear()
    phone.sync_declarations()
    assert phone.ddm.requests == ["tokens"]

    _patch(api, blueprint_id, os_update={"version": "17.6.1", "deadline": DEADLINE})
    phone.ddm.requests.clear()
    assert [(t, s) for _u, t, s in phone.run_session()] == [("DeclarativeManagement", "Acknowledged")]
    enforcement = f"mdmserver.blueprint.{blueprint_id}.softwareupdate"
    assert phone.ddm.declarations_token != first_token
    assert [r for r in phone.ddm.requests if r.startswith("declaration/")] == [
        f"declaration/configuration/{enforcement}"]
    assert phone.ddm.held("configuration")[enforcement].payload["TargetOSVersion"] == "17.6.1"
    assert phone.ddm.pending_update.os_version == "17.6.1"
    items = _status_items(api, device_id)
    assert items["softwareupdate.pending-version"]["os-version"] == "17.6.1"
    assert _declarations(api, device_id)[enforcement]["reported"]["current"] is True

    # the OS target goes: the declarations go, and the pending update with them (the status subscription
    # went too, so the device no longer reports the software-update items)
    _patch(api, blueprint_id, os_update=None)
    assert [(t, s) for _u, t, s in phone.run_session()] == [("DeclarativeManagement", "Acknowledged")]
    assert phone.ddm.errors == []
    assert phone.ddm.declarations == {} and phone.ddm.pending_update is None and phone.os_version == "17.5"
    assert _declarations(api, device_id) == {}
    # the safety sync (a full report) is accepted
    full = phone.ddm.report(full=True)
    assert full["FullReport"] is True and full["StatusItems"]["management"]["declarations"] == {
        "activations": [], "configurations": [], "assets": [], "management": []}


def test_a_downgrade_target_is_reported_invalid_to_the_server(live, api, transport, clock) -> None:
    phone = _enrolled(transport, 4103, clock)
    device_id = _device_id(api, phone)
    phone.os_version = "17.6"  # newer than the target, but the server still believes 17.5
    blueprint_id = _blueprint(api, name="ddm downgrade", scope={"devices": [device_id]},
                              os_update={"version": "17.5.1", "deadline": DEADLINE})
    phone.run_session()
    assert phone.os_version == "17.6"
    row = _declarations(api, device_id)[f"mdmserver.blueprint.{blueprint_id}.softwareupdate"]["reported"]
    assert row["valid"] == "invalid" and row["reasons"][0]["code"] == "Error.ConfigurationCannotBeApplied"


def test_a_failed_update_shows_as_failed_with_its_reason(live, api, transport, clock) -> None:
    phone = _enrolled(transport, 4108, clock)
    phone.ddm.update_failure = "Not enough storage"
    device_id = _device_id(api, phone)
    _blueprint(api, name="ddm failure", scope={"devices": [device_id]},
               os_update={"version": "17.6", "deadline": DEADLINE})
    phone.run_session()
    clock.now += 11
    phone.ddm.tick()
    assert phone.os_version == "17.5"
    items = _status_items(api, device_id)
    assert items["softwareupdate.install-state"] == "failed"
    assert items["softwareupdate.failure-reason"]["count"] == 1
    state = _os_item(api, device_id)
    assert state["state"] == "failed" and "Not enough storage" in state["detail"]

    # the device tries again and succeeds: the item follows
    phone.ddm.update_failure = None
    phone.ddm.retry_update()
    clock.now += 11
    phone.ddm.tick()
    assert phone.os_version == "17.6" and _os_item(api, device_id)["state"] == "installed"


def test_a_device_without_ddm_gets_the_mdm_command(live, api, transport, clock) -> None:
    old = _enrolled(transport, 4104, clock, platform="ios")
    old.os_version = "16.7"
    assert old.authenticate() == 200  # the server learns its version
    device_id = _device_id(api, old)
    _blueprint(api, name="ddm old", scope={"devices": [device_id]}, os_update={"version": "17.6", "deadline": DEADLINE})
    handled = [t for _u, t, _s in old.run_session()]
    assert handled == ["ScheduleOSUpdate"] and old.ddm.requests == []


def test_an_incremental_report_keeps_the_status_of_unchanged_declarations(live, api, transport, clock) -> None:
    phone = _enrolled(transport, 4105, clock)
    device_id = _device_id(api, phone)
    blueprint_id = _blueprint(api, name="ddm incremental", scope={"devices": [device_id]},
                              os_update={"version": "17.6", "deadline": DEADLINE})
    phone.run_session()
    _patch(api, blueprint_id, os_update={"version": "17.6.1", "deadline": DEADLINE})
    phone.run_session()
    assert "FullReport" not in phone.ddm.reports[-1]
    assert len(phone.ddm.reports[-1]["StatusItems"]["management"]["declarations"]["configurations"]) == 1
    rows = _declarations(api, device_id)
    assert len(rows) == 4 and all(row["reported"] is not None for row in rows.values())


def _upload_profile(api, identifier: str, ssid: str) -> str:
    body = plistlib.dumps({
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": identifier,
        "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadDisplayName": ssid,
        "PayloadContent": [{"PayloadType": "com.apple.wifi.managed", "PayloadVersion": 1,
                            "PayloadIdentifier": f"{identifier}.wifi", "PayloadUUID": str(uuid.uuid4()).upper(),
                            "SSID_STR": ssid, "EncryptionType": "WPA2", "Password": "e2e-Secret-1"}]})
    uploaded = api.post("/api/v1/upload/profiles", files={"file": (f"{ssid}.mobileconfig", body)})
    assert uploaded.status_code in (200, 201), uploaded.text
    return uploaded.json()["data"]["id"]


def test_declarative_profiles_are_installed_through_ddm_not_install_profile(live, api, transport, clock) -> None:
    phone = _enrolled(transport, 4106, clock)
    device_id = _device_id(api, phone)
    first, second = "com.example.e2e.first", "com.example.e2e.second"
    profiles = [_upload_profile(api, first, "First"), _upload_profile(api, second, "Second")]
    blueprint_id = _blueprint(api, name="ddm profiles", scope={"devices": [device_id]}, profiles=profiles,
                              declarative_profiles=True)

    handled = [t for _u, t, _s in phone.run_session()]
    assert handled == ["DeclarativeManagement"] and phone.ddm.errors == []  # no InstallProfile
    assert {first, second} <= set(phone.profiles)
    assert phone.profiles[first]["PayloadContent"][0]["SSID_STR"] == "First"
    legacy = {d.identifier: d for d in phone.ddm.held("configuration").values()
              if d.type == "com.apple.configuration.legacy"}
    assert len(legacy) == 2 and all(d.valid == "valid" and d.active for d in legacy.values())
    # the URLs are the server's own, fetched with a plain GET
    assert all(url.startswith(f"{live.url}/mdm/ddm/profiles/") for url in phone.downloads)
    rows = _declarations(api, device_id)
    assert all(row["reported"]["valid"] == "valid" for row in rows.values() if row["kind"] == "configuration")

    # one profile leaves the blueprint: the device removes it, keeps the other
    _patch(api, blueprint_id, profiles=[profiles[1]])
    assert [t for _u, t, _s in phone.run_session()] == ["DeclarativeManagement"]
    assert first not in phone.profiles and second in phone.profiles
    history = api.get(f"/api/v1/devices/{device_id}/commands").json()["data"]
    assert not {"InstallProfile", "RemoveProfile"} & {c["attributes"]["request_type"] for c in history}
