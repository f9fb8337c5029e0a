"""The pure parts: bytes policy, structural checks, the JSON form, Apple-schema findings, the catalogue."""

from __future__ import annotations

import importlib.util
import json
import plistlib
from datetime import datetime
from pathlib import Path

import pytest

from mdmserver.profiles import catalogue
from mdmserver.profiles.models import Payload, Profile, column_fits
from mdmserver.profiles.payload_models import PAYLOAD_CLASSES
from mdmserver.profiles.plist import (
    ProfileError,
    check_structure,
    first_difference,
    from_json,
    load_plist,
    pointer,
    redact,
    sniff,
    strict_equal,
    strip_leading,
    to_json,
)
from mdmserver.profiles.schemas import load_typed
from mdmserver.protocol.secrets import is_secret

ROOT = Path(__file__).resolve().parents[2]


def test_pointer_escapes_rfc6901():
    assert pointer() == ""
    assert pointer("PayloadContent", 3, "PayloadType") == "/PayloadContent/3/PayloadType"
    assert pointer("a/b", "c~d") == "/a~1b/c~0d"


def test_leading_bytes_policy_and_sniffing():
    assert strip_leading(b"\xef\xbb\xbf \n<?xml") == b"<?xml"
    assert strip_leading(b"bplist00") == b"bplist00"
    assert sniff(b"bplist00...") == "binary"
    assert sniff(b"<plist>") == "xml"
    assert sniff(b"\x30\x82\x01\x00") == "cms"
    assert sniff(b"\xff\xfe<\x00") == "xml"
    assert sniff(b"hello") is None


def test_utf16_xml_with_bom_parses():
    data = plistlib.dumps({"a": "é"}).decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    assert load_plist(data).value == {"a": "é"}


def test_load_errors_carry_status_and_code():
    with pytest.raises(ProfileError) as info:
        load_plist(b"x" * 100, max_bytes=10)
    assert info.value.status == 413
    with pytest.raises(ProfileError) as info:
        load_plist(b"<plist><dict><key>k</key><date>not a date</date></dict></plist>")
    assert info.value.status == 422 and info.value.code == "invalid_plist"


def test_structure_without_payload_content_is_accepted():
    check_structure({"PayloadType": "com.apple.dock", "tilesize": 3})
    check_structure({"PayloadContent": []})


@pytest.mark.parametrize(
    "value",
    [
        "s", "", True, False, 0, -1, 2**64 - 1, 1.5, 3.0, float("inf"), b"", b"\x00", datetime(2020, 1, 1),
        [], {}, {"$data": "x"}, {"$dict": {"a": 1}}, {"$sealed": "t"}, {"a": [{"$date": 1}]},
        {"k": {"nested": [b"1", datetime(1999, 1, 1, 1, 1, 1, 5)]}},
    ],
)
def test_json_form_round_trips_exactly(value):
    encoded = to_json(value)
    json.dumps(encoded, allow_nan=False)  # valid strict JSON
    assert strict_equal(value, from_json(json.loads(json.dumps(encoded))))


def test_json_form_rejects_bad_input_with_pointers():
    for bad, where in (
        ({"a": None}, "/a"),
        ({"a": [1, {"$data": "%%"}]}, "/a/1/$data"),
        ({"d": {"$date": "tomorrow"}}, "/d/$date"),
        ({"x": {"$dict": 3}}, "/x/$dict"),
    ):
        with pytest.raises(ProfileError) as info:
            from_json(bad)
        assert info.value.pointer == where


class _Reversing:
    def seal(self, value):
        return json.dumps(value)[::-1]

    def unseal(self, token):
        return json.loads(token[::-1])


def test_sealing_hides_secret_keys_at_any_depth():
    value = {"a": [{"Password": "p", "User": "u"}], "Challenge": b"c"}
    sealed = to_json(value, _Reversing())
    assert sealed["a"][0]["User"] == "u" and set(sealed["a"][0]["Password"]) == {"$sealed"}
    assert set(sealed["Challenge"]) == {"$sealed"}
    assert strict_equal(value, from_json(sealed, sealer=_Reversing()))
    assert redact(to_json(value)) == {"a": [{"User": "u"}]}


def test_strict_equal_checks_types_and_order():
    assert not strict_equal(True, 1) and not strict_equal(1, 1.0) and not strict_equal({"a": 1, "b": 2},
                                                                                       {"b": 2, "a": 1})
    assert strict_equal(float("nan"), float("nan"))
    assert first_difference({"a": [1, 2]}, {"a": [1, 2.0]}) == "/a/1: int != float"


def test_column_fits_is_exact():
    assert column_fits("integer", 5) and not column_fits("integer", True) and not column_fits("integer", 2**63)
    assert column_fits("real", 1.5) and not column_fits("real", 1) and not column_fits("real", float("nan"))
    assert column_fits("boolean", False) and not column_fits("boolean", 0)
    assert column_fits("string", "x") and not column_fits("string", "a\x00")
    assert column_fits("data", b"x") and not column_fits("data", "x")
    assert column_fits("array", []) and not column_fits("array", {}) and column_fits("any", None) is True


def _codes(profile):
    return {(f.pointer, f.code) for f in catalogue.check_profile(profile)}


def test_schema_findings():
    payload = {
        "PayloadType": "com.apple.mobiledevice.passwordpolicy",
        "PayloadIdentifier": "x",
        "PayloadUUID": "u",
        "PayloadVersion": 1,
        "minLength": True,  # boolean is not an integer
        "maxFailedAttempts": 99,  # range 2..11
        "maxInactivity": 1.0,  # real is not an integer
        "NoSuchKey": 1,
    }
    profile = {"PayloadIdentifier": "p", "PayloadUUID": "u", "PayloadType": "Configuration",
               "PayloadVersion": 1, "PayloadScope": "Everywhere", "PayloadContent": [payload]}
    assert _codes(profile) == {
        ("/PayloadScope", "schema.not_in_enum"),
        ("/PayloadContent/0/minLength", "schema.wrong_type"),
        ("/PayloadContent/0/maxFailedAttempts", "schema.out_of_range"),
        ("/PayloadContent/0/maxInactivity", "schema.wrong_type"),
        ("/PayloadContent/0/NoSuchKey", "schema.unknown_key"),
    }


def test_schema_findings_real_accepts_integer_and_missing_keys_are_reported():
    assert not _codes({"PayloadIdentifier": "p", "PayloadUUID": "u", "PayloadType": "Configuration",
                       "PayloadVersion": 1, "DurationUntilRemoval": 5, "PayloadContent": [],
                       "ConsentText": {"default": "x", "en": "y"}})
    assert _codes({"PayloadContent": [{"PayloadType": "com.vendor.x"}]}) == {
        ("/PayloadIdentifier", "schema.missing_key"), ("/PayloadUUID", "schema.missing_key"),
        ("/PayloadType", "schema.missing_key"), ("/PayloadVersion", "schema.missing_key"),
        ("/PayloadContent/0/PayloadIdentifier", "schema.missing_key"),
        ("/PayloadContent/0/PayloadUUID", "schema.missing_key"),
        ("/PayloadContent/0/PayloadVersion", "schema.missing_key"),
    }


def test_nested_array_items_are_checked():
    tcc = {"PayloadType": "com.apple.TCC.configuration-profile-policy", "PayloadIdentifier": "x",
           "PayloadUUID": "u", "PayloadVersion": 1,
           "Services": {"Camera": [{"Identifier": "a", "IdentifierType": "bundleID", "CodeRequirement": "c",
                                    "Allowed": 1}]}}
    assert {(f.pointer, f.code) for f in catalogue.check_payload(tcc)} == {
        ("/Services/Camera/0/Allowed", "schema.wrong_type")}


def test_typed_schemas_check_types_exactly():
    from mdmserver.profiles.payload_models import WiFiPayload

    typed, errors = load_typed(WiFiPayload, {"SSID_STR": "x", "AutoJoin": 1, "Unknown": 2}, json_mode=False)
    assert typed == {"SSID_STR": "x"} and set(errors) == {"AutoJoin"}
    typed, errors = load_typed(Profile, {"DurationUntilRemoval": 5, "RemovalDate": "2020-01-01"}, json_mode=False)
    assert typed == {"DurationUntilRemoval": 5} and set(errors) == {"RemovalDate"}
    typed, errors = load_typed(Profile, {"RemovalDate": "2020-01-01T00:00:00Z"}, json_mode=True)
    assert typed == {"RemovalDate": datetime(2020, 1, 1)} and not errors


def test_every_typed_model_is_registered_and_named_in_python_style():
    assert len({cls for cls in PAYLOAD_CLASSES.values()}) == 20
    for payload_type, cls in PAYLOAD_CLASSES.items():
        assert issubclass(cls, Payload) and payload_type in cls.payload_types
        for f in cls.plist_fields:
            assert f.attr == f.attr.lower() and " " not in f.attr
            # a typed key without a column is one the secrets policy names secret in every payload
            # type of the model (tests/protocol/test_secrets.py checks the policy against the schema)
            assert f.secret == (f.kind != "boolean" and all(
                is_secret(f.key, payload_type=t) for t in cls.payload_types)), f
    assert set(PAYLOAD_CLASSES) >= {
        "com.apple.mobiledevice.passwordpolicy", "com.apple.wifi.managed", "com.apple.vpn.managed",
        "com.apple.applicationaccess", "com.apple.security.root", "com.apple.security.pkcs1",
        "com.apple.security.pkcs12", "com.apple.security.scep", "com.apple.mail.managed", "com.apple.eas.account",
        "com.apple.webClip.managed", "com.apple.dnsSettings.managed", "com.apple.ManagedClient.preferences",
        "com.apple.TCC.configuration-profile-policy", "com.apple.system-extension-policy",
        "com.apple.syspolicy.kernel-extension-policy", "com.apple.notificationsettings",
        "com.apple.MCX.FileVault2", "com.apple.security.firewall", "com.apple.loginwindow",
        "com.apple.app.lock", "com.apple.mdm",
    }


def test_checked_in_catalogue_and_models_match_the_generator(conformance_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("gen", ROOT / "tools" / "gen_payload_catalogue.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    summary = json.loads((conformance_dir / "apple-schema" / "summary.json").read_text())
    merged = gen.merge_payloads(summary)
    assert json.loads(catalogue.CATALOGUE_FILE.read_text())["payloads"] == merged
    generated = gen.render_models(merged)
    assert generated == (ROOT / "mdmserver" / "profiles" / "payload_models.py").read_text()
    mcx = merged["com.apple.MCX"]
    assert mcx["entries"] == 6 and len(mcx["keys"]) > 10
