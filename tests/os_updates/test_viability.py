"""The OS update's viability from the inventory: ``GET /api/v1/actions/update_os/viability`` and Ivanti's
``GET /api/v1/device/scheduleOSUpdate?checkViability=true``, one device per reason."""

from __future__ import annotations

import pytest

from mdmserver.db import utcnow
from mdmserver.records.blueprints import Blueprint, BlueprintOSUpdate
from mdmserver.records.devices import AvailableOSUpdate, DeviceOSUpdateStatus
from tests.factories import make_device

NOT_KNOWN_OFFERS = "the updates the device is offered are not known yet (no AvailableOSUpdates answer)"


def _phone(db_session, index: int, *, os_version: str | None = "17.5", offered: tuple[str, ...] = ("17.6",),
           reported: bool = True, **overrides):
    device = make_device(db_session, index=index, platform=overrides.pop("platform", "ios"),
                         is_supervised=overrides.pop("is_supervised", True), os_version=os_version, **overrides)
    device.os_updates_reported_at = utcnow() if reported else None
    db_session.add_all([AvailableOSUpdate(device_id=device.id, version=v, product_key=f"iOSUpdate{v}")
                        for v in offered])
    db_session.flush()
    return device


@pytest.fixture
def fleet(client, auth, db_session):
    """name → device, each with one reason not to take 17.6 (``ok`` has none)."""
    devices = {
        "ok": _phone(db_session, 0),
        "ipad": _phone(db_session, 1, platform="ipados"),
        "unsupervised": _phone(db_session, 2, is_supervised=False),
        "mac": _phone(db_session, 3, platform="macos", os_version="14.5", offered=("14.6",)),
        "unknown_version": _phone(db_session, 4, os_version=None),
        "current": _phone(db_session, 5, os_version="17.6", offered=()),
        "ahead": _phone(db_session, 6, os_version="17.10", offered=()),  # numerically above 17.6
        "silent": _phone(db_session, 7, offered=(), reported=False),
        "other_offer": _phone(db_session, 8, offered=("17.5.1",)),
        "pending": _phone(db_session, 9),
        "downloading": _phone(db_session, 10),
        "accepted": _phone(db_session, 11),
    }
    db_session.add(DeviceOSUpdateStatus(device_id=devices["downloading"].id, product_key="iOSUpdate17.6",
                                        status="Downloading", is_downloaded=False, download_percent_complete=0.4))
    blueprint = Blueprint(name="target", os_update_version="17.6")
    db_session.add(blueprint)
    db_session.flush()
    db_session.add(BlueprintOSUpdate(blueprint_id=blueprint.id, device_id=devices["accepted"].id,
                                     target_version="17.6", status="scheduled"))
    db_session.commit()
    queued = client.post(f"/api/v1/devices/{devices['pending'].id}/commands", headers=auth("write"), json={
        "request_type": "ScheduleOSUpdate",
        "parameters": {"Updates": [{"InstallAction": "InstallASAP", "ProductVersion": "17.6"}]}})
    assert queued.status_code in (201, 202), queued.get_json()
    return devices


EXPECTED_17_6 = {
    "ipad": None,
    "unsupervised": "update_os needs a supervised device on ios",
    "mac": None,  # the native action is for iOS, macOS and tvOS (Apple's platforms for ScheduleOSUpdate)
    "unknown_version": "the device's OS version is not known yet (no DeviceInformation answer)",
    "current": "the device already runs 17.6, at or above 17.6",
    "ahead": "the device already runs 17.10, at or above 17.6",
    "silent": NOT_KNOWN_OFFERS,
    "other_offer": "17.6 is not among the updates the device is offered (AvailableOSUpdates)",
    "pending": "an OS update is already pending (ScheduleOSUpdate not answered)",
    "downloading": "an OS update is downloading or installing on the device (OSUpdateStatus)",
    "accepted": "an OS update the device accepted is not installed yet",
}


def _native(client, auth, devices, query: str) -> dict[str, str]:
    ids = ",".join(str(d.id) for d in devices.values())
    response = client.get(f"/api/v1/actions/update_os/viability?ids={ids}{query}", headers=auth("read"))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    names = {str(d.id): name for name, d in devices.items()}
    assert body["total_count"] == len(devices)
    return {names[row["device_id"]]: row["remarks"] for row in body["not_eligible"]}


def test_native_viability_names_each_reason(client, auth, fleet):
    got = _native(client, auth, fleet, "&version=17.6")
    expected = {k: v for k, v in EXPECTED_17_6.items() if v is not None}
    expected["mac"] = "17.6 is not among the updates the device is offered (AvailableOSUpdates)"  # 14.6 is
    assert got == expected
    assert "ok" not in got and "ipad" not in got


def test_native_viability_without_a_version_needs_an_offered_update_above(client, auth, fleet):
    got = _native(client, auth, fleet, "")
    assert "ok" not in got and "mac" not in got and "other_offer" not in got  # 17.5.1 is above 17.5
    assert got["silent"] == NOT_KNOWN_OFFERS
    assert got["current"] == "the device is offered no update above 17.6"
    assert got["pending"] == EXPECTED_17_6["pending"]


def test_ivanti_viability_is_for_ios_only_and_lists_the_ineligible(client, auth, fleet):
    ids = "&".join(f"ids={d.id}" for d in fleet.values())
    response = client.get(f"/api/v1/device/scheduleOSUpdate?checkViability=true&{ids}&version=17.6",
                          headers=auth("read"))
    assert response.status_code == 200
    body = response.get_json()
    assert body["errors"] is None
    rows = {row["id"]: row for row in body["result"]["searchResults"]}
    names = {d.id: name for name, d in fleet.items()}
    got = {names[i]: row["actionExceptionCodes"] for i, row in rows.items()}
    assert got["mac"] == ["an OS update is offered here for ios, ipados only; the device runs macos"]
    assert "ok" not in got and "ipad" not in got
    assert got["silent"] == [NOT_KNOWN_OFFERS]
    assert got["current"] == [EXPECTED_17_6["current"]]
    assert body["result"]["totalCount"] == len(rows) == len(fleet) - 2
    assert rows[fleet["pending"].id]["guid"] == fleet["pending"].udid
    # all viable → Ivanti's empty answer
    viable = client.get(f"/api/v1/device/scheduleOSUpdate?checkViability=true&ids={fleet['ok'].id}"
                        f"&ids={fleet['ipad'].id}&version=17.6", headers=auth("read")).get_json()
    assert viable == {"errors": None, "result": {"totalCount": 0, "queryTime": 0, "searchResults": [],
                                                 "offset": 0, "limit": 0}}


@pytest.mark.parametrize("url", [
    "/api/v1/actions/update_os/viability?ids={id}&version=seventeen",
    "/api/v1/actions/update_os/viability?ids={id}&version=17.6.1.2.3",
    "/api/v1/actions/lock/viability?ids={id}&version=17.6",
    "/api/v1/device/scheduleOSUpdate?checkViability=true&ids={id}&version=17.x",
])
def test_a_bad_version_is_a_400(client, auth, fleet, url):
    response = client.get(url.format(id=fleet["ok"].id), headers=auth("read"))
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["errors"][0]["source"] == {"parameter": "version"}


def test_viability_needs_the_read_scope(client, auth, fleet):
    url = f"/api/v1/actions/update_os/viability?ids={fleet['ok'].id}&version=17.6"
    assert client.get(url).status_code == 401


def test_the_fleet_view_counts_a_latest_target_per_device(client, auth, db_session):
    """``latest``: behind while the device is offered a newer update, at the target once offered
    nothing newer, unknown while its offers are not known."""
    behind = _phone(db_session, 0, offered=("17.6",))
    current = _phone(db_session, 1, os_version="17.6", offered=())
    silent = _phone(db_session, 2, offered=(), reported=False)
    mac = _phone(db_session, 3, platform="macos", os_version="14.5", offered=("14.6", "15.1"))
    db_session.commit()
    h = auth("read", "write")
    response = client.post("/api/v1/blueprints", headers={**h, "Content-Type": "application/vnd.api+json"}, json={
        "data": {"type": "blueprints", "attributes": {
            "name": "newest", "scope": {"devices": [d.id for d in (behind, current, silent, mac)]},
            "os_update": {"version": "latest"}}}})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["meta"]["reconcile"]["os_update_queued"] == 2  # the iPhone on 17.5, the Mac
    summary = client.get("/api/v1/os_updates", headers=h).get_json()["data"]["attributes"]
    (target,) = summary["targets"]
    assert target["target_version"] == "latest"
    assert (target["members"], target["behind"], target["at_target"], target["unknown"], target["queued"]) == (
        4, 2, 1, 1, 2)
    assert {(v["platform"], v["os_version"]): v["count"] for v in summary["versions"]} == {
        ("ios", "17.5"): 2, ("ios", "17.6"): 1, ("macos", "14.5"): 1}
