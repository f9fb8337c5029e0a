"""Identifiers a device sends (issue 9, items 11 and 12): Apple's UDID shapes at Authenticate, and no
control characters in any identifier of any message."""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest

from mdmserver.protocol.checkin import is_udid, parse_checkin
from mdmserver.protocol.plist import ProtocolError, load_dict
from mdmserver.protocol.results import parse_result

#: Placeholders the conformance index itself calls placeholders or synthetic (INDEX.md).
PLACEHOLDER_UDIDS = {"UDID001", "AAABBBCCC111222333", "test"}

AUTH = {"MessageType": "Authenticate", "Topic": "com.apple.mgmt.x", "SerialNumber": "C02MT66KFLHH"}


def _messages(conformance_dir: Path) -> list[Path]:
    base = conformance_dir / "device-messages"
    return sorted(p for p in base.rglob("*") if p.suffix in (".xml", ".plist"))


def test_every_real_udid_in_the_conformance_set_has_an_apple_shape(conformance_dir) -> None:
    seen = set()
    for path in _messages(conformance_dir):
        data = load_dict(path.read_bytes())
        udid = data.get("UDID")
        if not udid:
            continue
        seen.add(udid)
        if udid not in PLACEHOLDER_UDIDS:
            assert is_udid(udid), (path.name, udid)
            assert parse_checkin({**AUTH, "UDID": udid}).udid == udid
        # every message still parses: shapes are checked at Authenticate only
        if "MessageType" in data:
            if data["MessageType"] in ("Authenticate", "TokenUpdate", "CheckOut"):
                assert parse_checkin(data).udid == udid
        else:
            assert parse_result(data).udid == udid
    assert len(seen - PLACEHOLDER_UDIDS) >= 10


@pytest.mark.parametrize("udid", [
    "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69",
    "00008030-001A2B3C4D5E802E",
    "00008030-001a2b3c4d5e802e",
    "2F6DE437-7C14-5735-85B4-DC6B365BCAF1",
])
def test_apple_udid_shapes(udid) -> None:
    assert parse_checkin({**AUTH, "UDID": udid}).udid == udid


@pytest.mark.parametrize("udid", [
    "C02MT66KFLHH",  # a serial number
    "42",  # a database id
    "663b07bb783e9ade1dae4fbb92ea12afc0ce5b6",  # 39 hex
    "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69\n",
    "00008030-001A2B3C4D5E802EX",
    "2F6DE437-7C14-5735-85B4DC6B365BCAF1",
    "２F6DE437-7C14-5735-85B4-DC6B365BCAF1",  # a full-width digit
])
def test_other_udids_are_refused_at_authenticate(udid) -> None:
    with pytest.raises(ProtocolError, match="UDID"):
        parse_checkin({**AUTH, "UDID": udid})


def test_enrollment_id_cannot_pose_as_a_serial_number() -> None:
    message = {**AUTH, "EnrollmentID": "A1B2C3D4E5F60718293A4B5C6D7E8F90"}
    assert parse_checkin(message).udid == message["EnrollmentID"]
    with pytest.raises(ProtocolError, match="EnrollmentID"):
        parse_checkin({**AUTH, "EnrollmentID": "C02MT66KFLHH"})


UDID = "00008030-001A2B3C4D5E802E"
BAD = ["a\nb", "a\rb", "a\x00b", "a\x1bb", "a\x7fb", "a\x85b", "a\u2028b", "a\u2029b", "a\u202eb", "a\u200bb"]


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("message,field", [
    ({"MessageType": "Authenticate", "UDID": UDID}, "UDID"),
    ({"MessageType": "Authenticate", "UDID": UDID}, "SerialNumber"),
    ({"MessageType": "Authenticate", "UDID": UDID}, "Topic"),
    ({"MessageType": "Authenticate", "UDID": UDID}, "IMEI"),
    ({"MessageType": "Authenticate", "UDID": UDID}, "ProductName"),
    ({"MessageType": "TokenUpdate", "UDID": UDID}, "UserID"),
    ({"MessageType": "TokenUpdate", "UDID": UDID}, "EnrollmentUserID"),
    ({"MessageType": "TokenUpdate", "UDID": UDID}, "PushMagic"),
    ({"MessageType": "CheckOut"}, "UDID"),
    ({"MessageType": "CheckOut"}, "EnrollmentID"),
    ({"MessageType": "GetToken", "UDID": UDID}, "TokenServiceType"),
    ({"MessageType": "DeclarativeManagement", "UDID": UDID}, "Endpoint"),
])
def test_control_characters_in_checkin_identifiers(message, field, bad) -> None:
    with pytest.raises(ProtocolError, match=field):
        parse_checkin({**message, field: bad})


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("field", ["UDID", "EnrollmentID", "CommandUUID", "RequestType", "UserID", "Status"])
def test_control_characters_in_result_identifiers(field, bad) -> None:
    message = {"UDID": UDID, "Status": "Acknowledged", "CommandUUID": "C1"}
    if field == "EnrollmentID":
        del message["UDID"]
    with pytest.raises(ProtocolError, match=field):
        parse_result({**message, field: bad})


@pytest.mark.parametrize("field", ["DeviceName", "ModelName"])
def test_names_keep_their_characters_but_no_line_breaks(field) -> None:
    name = "Zoë’s iPhone 👩\u200d💻"
    assert getattr(parse_checkin({**AUTH, "UDID": UDID, field: name}), "device_name" if field == "DeviceName"
                   else "model_name") == name
    with pytest.raises(ProtocolError, match=field):
        parse_checkin({**AUTH, "UDID": UDID, field: "Phone\nroot"})


def test_binary_plists_carry_control_characters_the_parser_refuses() -> None:
    body = plistlib.dumps({**AUTH, "UDID": UDID + "\x1b"}, fmt=plistlib.FMT_BINARY)
    with pytest.raises(ProtocolError, match="control character"):
        parse_checkin(load_dict(body))
