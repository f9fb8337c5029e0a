"""Result parsers that turn command answers into inventory data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mdmserver.protocol.inventory import (
    detect_request_type,
    parse_certificate_list,
    parse_device_location,
    parse_inventory,
)
from mdmserver.protocol.plist import ProtocolError, load_dict


@pytest.fixture(scope="module")
def base(conformance_dir: Path) -> Path:
    return conformance_dir / "device-messages"


def _load(base: Path, rel: str) -> dict:
    return load_dict((base / rel).read_bytes())


def test_every_acknowledged_answer_parses_to_json(base: Path) -> None:
    parsed = 0
    for path in sorted(base.rglob("*")):
        if path.suffix not in (".xml", ".plist"):
            continue
        d = load_dict(path.read_bytes())
        if d.get("Status") != "Acknowledged":
            continue
        request_type = detect_request_type(d)
        data = parse_inventory(request_type, d) if request_type else None
        if data is not None:
            json.dumps(data, default=str)
            parsed += 1
    assert parsed >= 25


def test_device_information_columns(base: Path) -> None:
    info = parse_inventory("DeviceInformation", _load(base, "cmdmnt__commandment/testdata/DeviceInformation/iOS-11.3.1.xml"))
    assert info["columns"]["model"] == "MD786X" or info["columns"]["model"]
    assert info["columns"]["os_version"] == "11.3.1"
    json.dumps(info["query_responses"])


def test_security_info_leaves_out_recovery_key(base: Path) -> None:
    info = parse_inventory("SecurityInfo", {"SecurityInfo": {"FDE_Enabled": True, "FDE_PersonalRecoveryKeyCMS": b"secret"}})
    assert info["fde_enabled"] is True
    assert "FDE_PersonalRecoveryKeyCMS" not in info["details"]


def test_certificates_are_parsed(base: Path) -> None:
    certs = parse_certificate_list(_load(base, "cmdmnt__commandment/testdata/CertificateList/10.11.x.xml"))
    assert certs[0]["is_identity"] is True and certs[0]["subject"] and certs[0]["not_after"].endswith("Z")
    assert certs[1]["issuer"] and certs[1]["parse_error"] is None
    broken = parse_certificate_list({"CertificateList": [{"CommonName": "x", "Data": b"\x30\x03junk"}]})
    assert broken[0]["parse_error"] and broken[0]["fingerprint_sha256"]


def test_profile_list_payloads(base: Path) -> None:
    profiles = parse_inventory("ProfileList", _load(base, "micromdm__micromdm/workflow/profile/inventory/testdata/response.plist"))
    types = [p["type"] for p in profiles[0]["payloads"]]
    assert "com.apple.mdm" in types


def test_os_updates(base: Path) -> None:
    updates = parse_inventory("AvailableOSUpdates", _load(base, "cmdmnt__commandment/testdata/AvailableOSUpdates/iOS-11.3.1.xml"))
    assert updates[0]["version"] == "11.4" and updates[0]["build"] == "15F79"


def test_device_location() -> None:
    loc = parse_device_location({"Latitude": 52.5, "Longitude": 13.4, "Timestamp": "2024-01-02T03:04:05Z"})
    assert loc["latitude"] == 52.5 and loc["timestamp"].year == 2024
    with pytest.raises(ProtocolError):
        parse_device_location({"Latitude": "north"})


@pytest.mark.parametrize("request_type,body", [
    ("ProfileList", {"ProfileList": "x"}),
    ("DeviceInformation", {}),
    ("InstalledApplicationList", {"InstalledApplicationList": {}}),
    ("AvailableOSUpdates", {"AvailableOSUpdates": 3}),
    ("CertificateList", {}),
    ("SecurityInfo", {"SecurityInfo": []}),
])
def test_malformed_answers_are_protocol_errors(request_type: str, body: dict) -> None:
    with pytest.raises(ProtocolError):
        parse_inventory(request_type, body)
