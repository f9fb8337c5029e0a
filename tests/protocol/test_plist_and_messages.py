"""Pure protocol layer: plist loading, check-in messages, command results, envelopes."""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest

from mdmserver.protocol.checkin import (
    Authenticate,
    CheckOut,
    GetToken,
    TokenUpdate,
    UnknownMessageType,
    is_checkin,
    parse_checkin,
)
from mdmserver.protocol.plist import (
    DEFAULT_MAX_BYTES,
    ProtocolError,
    dump_plist,
    load_dict,
    load_plist,
    load_stored,
)
from mdmserver.protocol.results import (
    ResultStatus,
    command_envelope,
    parse_command_envelope,
    parse_result,
)


def _messages(messages_dir: Path) -> list[Path]:
    return sorted(p for p in messages_dir.rglob("*") if p.suffix in (".xml", ".plist"))


@pytest.fixture(scope="module")
def messages_dir(conformance_dir: Path) -> Path:
    return conformance_dir / "device-messages"


@pytest.mark.parametrize(
    "data,status",
    [
        (b"", 400),
        (b"   \n", 400),
        (b"not a plist", 400),
        (b"<?xml version='1.0'?><plist><dict><key>a</key>", 400),
        (b"<plist><dict><key>a</key><data>AAAAA</data></dict></plist>", 400),
        (b"<plist><dict><key>a</key><integer>x</integer></dict></plist>", 400),
        (b"<plist><dict><key>a</key><date>yesterday</date></dict></plist>", 400),
        (b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY e "x">]><plist><string>&e;</string></plist>', 400),
        (b"bplist00\x00\x01\x02", 400),
    ],
)
def test_bad_plists_are_one_protocol_error(data: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as info:
        load_plist(data)
    assert info.value.status == status


def test_size_limit_is_413() -> None:
    body = dump_plist({"a": "x" * 2000})
    with pytest.raises(ProtocolError) as info:
        load_plist(body, max_bytes=1000)
    assert info.value.status == 413


def test_depth_limit() -> None:
    value: list = []
    for _ in range(100):
        value = [value]
    with pytest.raises(ProtocolError, match="deep"):
        load_plist(plistlib.dumps(value))


def test_top_level_must_be_dict() -> None:
    with pytest.raises(ProtocolError, match="dictionary"):
        load_dict(plistlib.dumps(["a"]))


def test_dump_drops_none_and_keeps_order() -> None:
    data = plistlib.loads(dump_plist({"b": 1, "a": None, "c": [None, 2]}))
    assert list(data) == ["b", "c"] and data["c"] == [2]


def test_every_conformance_message_parses(messages_dir: Path) -> None:
    seen_checkins, seen_results = 0, 0
    for path in _messages(messages_dir):
        d = load_dict(path.read_bytes())
        if is_checkin(d):
            if d["MessageType"] == "OldManYellsAtCloud.gif":
                with pytest.raises(UnknownMessageType):
                    parse_checkin(d)
                continue
            message = parse_checkin(d)
            assert message.udid
            seen_checkins += 1
        elif "Status" in d:
            result = parse_result(d)
            assert result.status in ResultStatus
            seen_results += 1
        else:
            uuid, request_type, params = parse_command_envelope(d)
            assert uuid and request_type
    assert seen_checkins == 22 and seen_results == 40


def test_authenticate_fields(messages_dir: Path) -> None:
    d = load_dict((messages_dir / "cmdmnt__commandment/testdata/Authenticate/iOS-11.3.1-cell.xml").read_bytes())
    message = parse_checkin(d)
    assert isinstance(message, Authenticate)
    assert message.imei and message.meid and message.os_version == "11.3.1"


def test_empty_keys_are_tolerated(messages_dir: Path) -> None:
    base = messages_dir / "micromdm__micromdm/mdm/checkin/testdata"
    auth = parse_checkin(load_dict((base / "Authenticate.plist").read_bytes()))
    assert isinstance(auth, Authenticate)
    assert auth.imei is None and auth.meid is None and auth.serial_number == "C02RX6G8G8WP"
    token = parse_checkin(load_dict((base / "TokenUpdate.plist").read_bytes()))
    assert isinstance(token, TokenUpdate) and token.unlock_token is None
    assert isinstance(parse_checkin(load_dict((base / "CheckOut.plist").read_bytes())), CheckOut)


def test_user_channel_token_update(messages_dir: Path) -> None:
    path = messages_dir / "cmdmnt__commandment/testdata/TokenUpdate/10.11.x-user.plist"
    message = parse_checkin(load_dict(path.read_bytes()))
    assert isinstance(message, TokenUpdate) and message.is_user_channel
    assert message.user_short_name == "admin"


def test_get_token(messages_dir: Path) -> None:
    message = parse_checkin(load_dict((messages_dir / "micromdm__nanomdm/inline/GetToken.maid.plist").read_bytes()))
    assert isinstance(message, GetToken) and message.token_service_type == "com.apple.maid"


@pytest.mark.parametrize(
    "d,match",
    [
        ({"MessageType": "Authenticate"}, "UDID"),
        ({"MessageType": "Authenticate", "UDID": 5}, "UDID must be a string"),
        ({"MessageType": 3, "UDID": "x"}, "MessageType"),
        ({"MessageType": "TokenUpdate", "UDID": "x", "Token": 12}, "Token must be data"),
        ({"MessageType": "TokenUpdate", "UDID": "x", "AwaitingConfiguration": "yes"}, "boolean"),
        ({"MessageType": "Nope", "UDID": "x"}, "unknown MessageType"),
    ],
)
def test_bad_checkins(d: dict, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        parse_checkin(d)


def test_results_and_error_chain(messages_dir: Path) -> None:
    error = parse_result(load_dict((messages_dir / "micromdm__nanocmd/workflow/certprof/testdata/resp-error.plist").read_bytes()))
    assert error.status is ResultStatus.ERROR
    assert error.error_chain[0].error_code == -909 and error.error_chain[0].us_english_description is None
    not_now = parse_result(load_dict((messages_dir / "cmdmnt__commandment/testdata/NotNow/iOS-11.3.1.xml").read_bytes()))
    assert not_now.status is ResultStatus.NOT_NOW


@pytest.mark.parametrize(
    "d,match",
    [
        ({"UDID": "x"}, "Status"),
        ({"UDID": "x", "Status": "Maybe"}, "unknown Status"),
        ({"UDID": "x", "Status": "Acknowledged"}, "CommandUUID"),
        ({"Status": "Idle"}, "UDID"),
        ({"UDID": "x", "Status": "Error", "CommandUUID": "u", "ErrorChain": ["bad"]}, "ErrorChain"),
        ({"UDID": "x", "Status": "Error", "CommandUUID": "u", "ErrorChain": [{"ErrorCode": True}]}, "integer"),
    ],
)
def test_bad_results(d: dict, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        parse_result(d)


def test_idle_needs_no_uuid() -> None:
    assert parse_result({"UDID": "x", "Status": "Idle"}).command_uuid is None


def test_envelope_matches_reference_shape(messages_dir: Path) -> None:
    ref = load_dict((messages_dir / "micromdm__micromdm/mdm/mdm/testdata/InstallProfile.plist").read_bytes())
    ours = load_dict(dump_plist(command_envelope(ref["CommandUUID"], "InstallProfile", {"Payload": ref["Command"]["Payload"]})))
    assert ours == ref
    settings = load_dict((messages_dir / "micromdm__micromdm/platform/command/testdata/Settings_hostname_devicename.plist").read_bytes())
    uuid, request_type, params = parse_command_envelope(settings)
    again = load_dict(dump_plist(command_envelope(uuid, request_type, params)))
    assert again == settings


def test_truncated_and_flipped_messages_never_escape_protocol_error(messages_dir: Path) -> None:
    import random

    rng = random.Random(1234)
    for path in _messages(messages_dir):
        original = path.read_bytes()
        variants = [original[: len(original) // 2], original[:-10]]
        for _ in range(15):
            flipped = bytearray(original)
            for _ in range(3):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            variants.append(bytes(flipped))
        binary = plistlib.dumps(plistlib.loads(original), fmt=plistlib.FMT_BINARY)
        for _ in range(10):
            flipped = bytearray(binary)
            flipped[rng.randrange(8, len(flipped))] = rng.randrange(256)
            variants.append(bytes(flipped))
        for variant in variants:
            try:
                d = load_dict(variant)
            except ProtocolError:
                continue
            try:
                parse_checkin(d) if is_checkin(d) else parse_result(d) if "Status" in d else None
            except ProtocolError:
                pass


def test_a_stored_plist_is_not_refused_by_the_device_body_limit():
    """InstallProfile's parameters hold a whole profile (uploads may be larger than a device body): what the
    server stored itself loads back whatever its size, while a device body that size is refused (413)."""
    stored = dump_plist({"RequestType": "InstallProfile", "Payload": b"\x00" * (DEFAULT_MAX_BYTES * 3 // 4 + 4096)})
    assert len(stored) > DEFAULT_MAX_BYTES
    with pytest.raises(ProtocolError) as refused:
        load_plist(stored)
    assert refused.value.status == 413
    assert len(load_stored(stored)["Payload"]) == DEFAULT_MAX_BYTES * 3 // 4 + 4096
