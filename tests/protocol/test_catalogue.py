"""The generated command catalogue and its parameter schemas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mdmserver.protocol.catalogue import (
    ParameterError,
    UnknownRequestType,
    carries_secret,
    catalogue,
    get_spec,
    public_parameters,
    validate_parameters,
)
from mdmserver.protocol.secrets import redact

ROOT = Path(__file__).resolve().parents[2]

REQUIRED = """DeviceInformation SecurityInfo ProfileList InstallProfile RemoveProfile InstalledApplicationList
ManagedApplicationList CertificateList ProvisioningProfileList Restrictions DeviceLock EraseDevice ClearPasscode
RestartDevice ShutDownDevice EnableLostMode DisableLostMode DeviceLocation PlayLostModeSound Settings
ScheduleOSUpdate AvailableOSUpdates OSUpdateStatus InstallApplication RemoveApplication UserList LogOutUser
DeleteUser ActivationLockBypassCode ClearRestrictionsPassword SetRecoveryLock RotateFileVaultKey
DeviceConfigured""".split()


def test_catalogue_has_the_required_request_types() -> None:
    specs = catalogue()
    assert len(specs) >= 30
    missing = [name for name in REQUIRED if name not in specs]
    assert missing == []


def test_checked_in_catalogue_matches_generator(tmp_path: Path, conformance_dir: Path) -> None:
    summary = conformance_dir / "apple-schema" / "summary.json"
    checked_in = (ROOT / "mdmserver/protocol/command_catalogue.json").read_text()
    subprocess.run([sys.executable, str(ROOT / "tools/gen_command_catalogue.py"), str(summary)],
                   check=True, capture_output=True)
    regenerated = (ROOT / "mdmserver/protocol/command_catalogue.json").read_text()
    assert json.loads(regenerated) == json.loads(checked_in)


def test_platforms_and_supervision() -> None:
    lost = get_spec("EnableLostMode")
    assert "ios" in lost.platforms and "ipados" in lost.platforms and "macos" not in lost.platforms
    assert lost.applies_to("ios", supervised=False) == (False, "EnableLostMode needs a supervised device on ios")
    assert lost.applies_to("ios", supervised=True) == (True, None)
    assert get_spec("RotateFileVaultKey").applies_to("ios", True)[0] is False
    assert get_spec("DeviceLock").applies_to("macos", False) == (True, None)


def test_unknown_request_type() -> None:
    with pytest.raises(UnknownRequestType):
        validate_parameters("MakeCoffee", {})


def test_device_information_defaults() -> None:
    params = validate_parameters("DeviceInformation", None)
    assert "UDID" in params["Queries"] and "SerialNumber" in params["Queries"]


@pytest.mark.parametrize(
    "request_type,params,pointer",
    [
        ("DeviceLock", {"Message": 1}, "/Message"),
        ("DeviceLock", {"Bogus": "x"}, "/Bogus"),
        ("EraseDevice", {"PreserveDataPlan": 1}, "/PreserveDataPlan"),
        ("InstallApplication", {"iTunesStoreID": True}, "/iTunesStoreID"),
        ("InstallApplication", {"iTunesStoreID": 1.5}, "/iTunesStoreID"),
        ("InstallProfile", {}, "/Payload"),
        ("InstallProfile", {"Payload": "%%%"}, "/Payload"),
        ("RemoveProfile", {"Identifier": None}, "/Identifier"),
        ("Settings", {"Settings": [{"Item": "Nope"}]}, "/Settings/0/Item"),
        ("Settings", {"Settings": [{"Item": "DataRoaming", "Enabled": "yes"}]}, "/Settings/0/Enabled"),
        ("Settings", {"Settings": "DeviceName"}, "/Settings"),
        ("ScheduleOSUpdate", {"Updates": [{"InstallAction": "Now"}]}, "/Updates/0/InstallAction"),
        ("DeviceInformation", {"Queries": ["UDID", 3]}, "/Queries/1"),
        ("ClearPasscode", {"UnlockToken": "AAAA"}, "/UnlockToken"),
        ("InstallApplication", {"iTunesStoreID": 2**70}, "/iTunesStoreID"),
        ("DeviceLock", {"Message": "bell\x07"}, "/Message"),
        ("InstallApplication", {"Identifier": "a.b", "Configuration": {"k": [1, 2**65]}}, "/Configuration/k/1"),
        ("InstallApplication", {"Identifier": "a.b", "Configuration": {"k": "\x00"}}, "/Configuration/k"),
    ],
)
def test_invalid_parameters_have_pointers(request_type: str, params: dict, pointer: str) -> None:
    with pytest.raises(ParameterError) as info:
        validate_parameters(request_type, params)
    assert pointer in [e["pointer"] for e in info.value.errors]


def test_valid_parameters_load_to_plist_values() -> None:
    assert validate_parameters("InstallProfile", {"Payload": "Zm9v"}) == {"Payload": b"foo"}
    settings = validate_parameters(
        "Settings", {"Settings": [{"Item": "DeviceName", "DeviceName": "Kiosk 1"},
                                  {"Item": "ApplicationConfiguration", "Identifier": "a.b",
                                   "Configuration": {"k": [1, True]}}]}
    )
    assert settings["Settings"][0]["DeviceName"] == "Kiosk 1"
    assert validate_parameters("DeviceLock", {"Message": "Call IT", "PIN": "123456"})["PIN"] == "123456"


def test_public_parameters_are_json_safe_after_the_secrets_policy_redacts() -> None:
    params = {"PIN": "123456", "Payload": b"foo", "NewPassword": "x", "Message": "m"}
    assert public_parameters(params) == {"PIN": "123456", "Payload": "Zm9v", "NewPassword": "x", "Message": "m"}
    shown = public_parameters(redact(params, request_type="DeviceLock"))
    assert shown == {"PIN": "[redacted]", "Payload": "Zm9v", "NewPassword": "[redacted]", "Message": "m"}
    shown = public_parameters(redact(params, request_type="InstallProfile"))
    assert shown["Payload"] == "[redacted]"


@pytest.mark.parametrize("request_type,parameters,expected", [
    ("ClearPasscode", {}, True),  # the server adds the device's UnlockToken at delivery
    ("InstallProfile", {"Payload": b"<plist/>"}, True),  # profiles hold credentials
    ("DeviceLock", {"Message": "hi", "PIN": "123456"}, True),
    ("SetFirmwarePassword", {"CurrentPassword": "", "NewPassword": "x"}, True),
    ("Settings", {"Settings": [{"Item": "DeviceName", "DeviceName": "x"}]}, False),
    ("Settings", {"Settings": [{"Item": "X", "Nested": {"SharedSecret": "s"}}]}, True),
    ("DeviceInformation", {"Queries": ["UDID"]}, False),
    ("DeviceLock", {"Message": "hi"}, False),
])
def test_carries_secret(request_type, parameters, expected) -> None:
    assert carries_secret(request_type, parameters) is expected


def test_carries_secret_walks_shared_trees_once() -> None:
    node: list = []
    for _ in range(200):
        node = [node, node]  # 2^200 paths, 200 containers
    assert carries_secret("Settings", {"Settings": node}) is False
    assert carries_secret("Settings", {"Settings": [[n] for n in range(20)]}, max_nodes=10) is True
