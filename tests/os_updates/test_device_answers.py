"""OSUpdateStatus answers as the protocol layer reads them, and the simulator's software update: a
delay, progress, and Apple's error form for an update it is not offered or that is not an upgrade."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mdmserver.protocol.inventory import (
    detect_request_type,
    parse_inventory,
    parse_os_update_status,
)
from mdmserver.protocol.plist import ProtocolError
from mdmserver.simulator.device import (
    UPDATE_DOWNGRADE,
    UPDATE_ERROR_DOMAIN,
    UPDATE_NOT_OFFERED,
    SimulatedDevice,
)


class _NoTransport:
    def request(self, *args, **kwargs):
        raise AssertionError("no HTTP in these tests")


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_os_update_status_is_parsed_with_apples_keys():
    answer = {"Status": "Acknowledged", "OSUpdateStatus": [
        {"ProductKey": "MSU_UPDATE_23G80_patch_14.6", "IsDownloaded": False, "DownloadPercentComplete": 0.25,
         "Status": "Downloading", "MaxDeferrals": 3, "DeferralsRemaining": 2,
         "NextScheduledInstall": datetime(2026, 12, 1, 18, 0, tzinfo=UTC), "PastNotifications": []},
        {"ProductKey": "iOSUpdate21G80", "IsDownloaded": True, "DownloadPercentComplete": 1, "Status": "Installing"},
    ]}
    assert detect_request_type(answer) == "OSUpdateStatus"
    assert parse_inventory("OSUpdateStatus", answer) == [
        {"product_key": "MSU_UPDATE_23G80_patch_14.6", "status": "Downloading", "is_downloaded": False,
         "download_percent_complete": 0.25, "max_deferrals": 3, "deferrals_remaining": 2,
         "next_scheduled_install": "2026-12-01T18:00:00Z"},
        {"product_key": "iOSUpdate21G80", "status": "Installing", "is_downloaded": True,
         "download_percent_complete": 1.0, "max_deferrals": None, "deferrals_remaining": None,
         "next_scheduled_install": None},
    ]


def test_wrong_types_are_dropped_and_a_missing_answer_refused():
    (row,) = parse_os_update_status({"OSUpdateStatus": [
        {"ProductKey": 7, "IsDownloaded": "yes", "DownloadPercentComplete": 42.0, "Status": "Idle",
         "MaxDeferrals": True, "NextScheduledInstall": "tomorrow"}, "not a dictionary"]})
    assert row == {"product_key": None, "status": "Idle", "is_downloaded": None, "download_percent_complete": None,
                   "max_deferrals": None, "deferrals_remaining": None, "next_scheduled_install": None}
    assert parse_os_update_status({"OSUpdateStatus": []}) == []
    for bad in ({}, {"OSUpdateStatus": {"ProductKey": "x"}}):
        with pytest.raises(ProtocolError):
            parse_os_update_status(bad)


def _sim(**kw) -> SimulatedDevice:
    return SimulatedDevice(_NoTransport(), platform="ios", seed=5, **kw)


def _schedule(sim: SimulatedDevice, **update) -> dict:
    answer = sim.answer("C0FFEE00-0000-4000-8000-000000000001", "ScheduleOSUpdate",
                        {"Updates": [{"InstallAction": "InstallASAP", **update}]})
    assert answer["Status"] == "Acknowledged"
    (result,) = answer["UpdateResults"]
    return result


def _status(sim: SimulatedDevice) -> list[dict]:
    return sim.answer("C0FFEE00-0000-4000-8000-000000000002", "OSUpdateStatus", {})["OSUpdateStatus"]


def test_an_update_downloads_then_installs_over_the_delay():
    clock = Clock()
    sim = _sim(os_update_delay=8, clock=clock)
    key = sim.offered_updates[0]["ProductKey"]
    assert _schedule(sim, ProductVersion="17.6") == {"ProductKey": key, "InstallAction": "InstallASAP",
                                                    "Status": "Downloading"}
    clock.now += 2
    assert _status(sim) == [{"ProductKey": key, "IsDownloaded": False, "DownloadPercentComplete": 0.5,
                             "Status": "Downloading"}]
    clock.now += 3
    assert _status(sim) == [{"ProductKey": key, "IsDownloaded": True, "DownloadPercentComplete": 1.0,
                             "Status": "Installing"}]
    assert sim.os_version == "17.5"
    clock.now += 3
    assert _status(sim) == [] and sim.os_version == "17.6" and sim.build_version == "21G80"
    info = sim.answer("C0FFEE00-0000-4000-8000-000000000003", "DeviceInformation", {"Queries": ["OSVersion"]})
    assert info["QueryResponses"]["OSVersion"] == "17.6"
    assert sim.answer("C0FFEE00-0000-4000-8000-000000000004", "AvailableOSUpdates", {})["AvailableOSUpdates"] == []


def test_a_zero_delay_installs_at_once_and_download_only_never_installs():
    sim = _sim(os_update_delay=0)
    assert _schedule(sim, ProductKey=sim.offered_updates[0]["ProductKey"])["Status"] == "Installing"
    assert sim.os_version == "17.6" and _status(sim) == []
    clock = Clock()
    later = _sim(os_update_delay=4, clock=clock)
    assert _schedule(later, ProductVersion="17.6", InstallAction="DownloadOnly")["Status"] == "Idle"
    clock.now += 100
    assert _status(later)[0]["Status"] == "Idle" and _status(later)[0]["IsDownloaded"] is True
    assert later.os_version == "17.5"


@pytest.mark.parametrize(("update", "code"), [
    ({"ProductVersion": "18.0"}, UPDATE_NOT_OFFERED),
    ({"ProductKey": "iOSUpdateNOPE"}, UPDATE_NOT_OFFERED),
    ({"ProductVersion": "17.5"}, UPDATE_DOWNGRADE),  # offered (below), but the device runs it already
])
def test_an_update_the_device_cannot_take_answers_apples_error_form(update, code):
    sim = _sim(os_update_delay=0)
    sim.offered_updates.append({**sim.offered_updates[0], "ProductKey": "iOSUpdateOld", "Version": "17.5"})
    result = _schedule(sim, **update)
    assert (result["InstallAction"], result["Status"]) == ("Error", "Idle")
    (error,) = result["ErrorChain"]
    assert (error["ErrorCode"], error["ErrorDomain"]) == (code, UPDATE_ERROR_DOMAIN)
    assert error["USEnglishDescription"]
    assert sim.os_version == "17.5" and sim.os_update is None
