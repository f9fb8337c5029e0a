"""Whatever a (correctly signed) device sends, the answer is never a 500."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from mdmserver.collaborators import secret_box
from mdmserver.protocol.plist import dump_plist
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice

ODD_VALUES = [None, "", "x" * 5000, 7, -1, 2**63 - 1, 1.5, True, b"\x00\xff", [], ["a"], {}, {"a": 1}]


@pytest.fixture
def device(client, topic, auto_admission) -> SimulatedDevice:
    sim = SimulatedDevice(FlaskTransport(client), seed=99)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    return sim


def _statuses(sim: SimulatedDevice, body: bytes) -> list[int]:
    return [sim.send(path, body)[0] for path in ("/mdm/checkin", "/mdm/connect", "/mdm")]


def test_odd_values_in_every_key(device) -> None:
    templates = [
        device.authenticate_message(),
        {"MessageType": "TokenUpdate", "UDID": device.udid, "Topic": device.topic, "Token": b"t",
         "PushMagic": "m", "UnlockToken": b"u", "AwaitingConfiguration": False, "UserID": "u",
         "UserShortName": "s", "UserLongName": "l"},
        {"MessageType": "SetBootstrapToken", "UDID": device.udid, "BootstrapToken": b"b"},
        {"MessageType": "DeclarativeManagement", "UDID": device.udid, "Endpoint": "status", "Data": b"{}"},
        {"UDID": device.udid, "Status": "Acknowledged", "CommandUUID": "X", "RequestType": "ProfileList",
         "ProfileList": [], "ErrorChain": [{"ErrorCode": 1, "ErrorDomain": "d"}], "UserID": "u"},
    ]
    for template in templates:
        for key in template:
            for odd in ODD_VALUES:
                message = {**template, key: odd}
                for status in _statuses(device, dump_plist(message)):
                    assert status < 500, (key, odd, status)


def test_mutated_conformance_messages(device, conformance_dir: Path) -> None:
    rng = random.Random(7)
    files = sorted(p for p in (conformance_dir / "device-messages").rglob("*") if p.suffix in (".xml", ".plist"))
    for path in files:
        original = path.read_bytes().replace(b"1c111c111c111c111c111c111c111c111c111c11", device.udid.encode())
        variants = [original, original[: len(original) // 3]]
        for _ in range(4):
            flipped = bytearray(original)
            for _ in range(4):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            variants.append(bytes(flipped))
        for body in variants:
            for status in _statuses(device, body):
                assert status < 500, (path.name, status)


def test_hostile_inventory_answers_are_stored_safely(device, client, db_session, auth) -> None:
    import plistlib

    from sqlalchemy import select

    from mdmserver.commands import service as commands
    from mdmserver.records.devices import Device

    device_id = db_session.scalar(select(Device.id).where(Device.udid == device.udid))
    hostile = {
        "DeviceInformation": {"QueryResponses": {"DeviceName": "n\x00" + "x" * 999, "DeviceCapacity": float("nan"),
                                                 "Model": "m" * 500, "BatteryLevel": float("inf"),
                                                 "Extra\x00Key": ["\x00"]}},
        "ProfileList": {"ProfileList": [{"PayloadIdentifier": "p" * 999, "PayloadVersion": 2**62,
                                         "PayloadContent": [{"PayloadType": "t\x00", "PayloadVersion": -2**40}]}]},
        "InstalledApplicationList": {"InstalledApplicationList": [{"Identifier": "a" * 999, "BundleSize": 2**63 - 1,
                                                                   "Name": "\x00"}]},
        "SecurityInfo": {"SecurityInfo": {"HardwareEncryptionCaps": 2**40, "PasscodePresent": "yes"}},
        "CertificateList": {"CertificateList": [{"CommonName": "c" * 999, "Data": b"junk", "IsIdentity": 3}]},
        "DeviceLocation": {"Latitude": float("nan"), "Longitude": 1.0},
        "AvailableOSUpdates": {"AvailableOSUpdates": [{"Version": "v" * 999, "DownloadSize": -2**63}]},
    }
    for request_type, answer in hostile.items():
        commands.enqueue_commands(db_session, [device_id], request_type, {}, enqueued_by="t", validate=False, box=secret_box())
        db_session.commit()
        status, command = device.idle()
        assert status == 200 and command["Command"]["RequestType"] == request_type
        body = plistlib.dumps({"UDID": device.udid, "Status": "Acknowledged",
                               "CommandUUID": command["CommandUUID"], **answer}, fmt=plistlib.FMT_BINARY)
        assert device.send("/mdm/connect", body)[0] == 200, request_type

    # What was stored, read back through the admin API: NULs removed, non-finite numbers and values of
    # the wrong type left out, over-long text cut to its column (a prefix of what the device sent).
    headers = auth("read")

    def get(suffix: str):
        response = client.get(f"/api/v1/devices/{device_id}{suffix}", headers=headers)
        assert response.status_code == 200, (suffix, response.status_code)
        document = response.get_json()
        assert "\\u0000" not in json.dumps(document), suffix  # no NUL anywhere, keys included
        return document["data"]

    def cut(stored: str | None, sent: str) -> None:
        assert stored and sent.startswith(stored), (stored, sent)

    detail = get("")["attributes"]
    cut(detail["model"], "m" * 500)
    cut(detail["device_name"], "n" + "x" * 999)
    assert detail["capacity_gb"] is None and detail["battery_level"] is None  # NaN, inf
    raw = detail["device_information"]
    assert raw["DeviceName"] == "n" + "x" * 999 and raw["Model"] == "m" * 500
    assert raw["DeviceCapacity"] is None and raw["BatteryLevel"] is None and raw["ExtraKey"] == [""]

    [profile] = get("/installed_profiles")
    cut(profile["attributes"]["identifier"], "p" * 999)
    [payload] = profile["attributes"]["payloads"]
    assert payload["type"] == "t" and payload["version"] == -2**40

    [app] = get("/installed_applications")
    cut(app["attributes"]["identifier"], "a" * 999)
    assert app["attributes"]["name"] in ("", None) and app["attributes"]["bundle_size"] == 2**63 - 1

    security = get("/security")["attributes"]
    # "yes" is not a boolean: not taken as one; the raw answer is kept as it came
    assert security["passcode_present"] is None
    assert security["details"] == {"HardwareEncryptionCaps": 2**40, "PasscodePresent": "yes"}

    [certificate] = get("/certificates")
    attributes = certificate["attributes"]
    cut(attributes["common_name"], "c" * 999)
    assert attributes["is_identity"] is False and attributes["subject"] is None
    assert attributes["fingerprint_sha256"] == hashlib.sha256(b"junk").hexdigest()
    assert attributes["parse_error"]

    assert get("/locations") == []  # a NaN latitude is no location

    [update] = get("/os_updates")
    cut(update["attributes"]["version"], "v" * 999)
    assert update["attributes"]["download_size"] is None  # -2**63 bytes is no size

