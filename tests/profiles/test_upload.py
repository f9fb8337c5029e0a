"""Synthetic upload cases the corpus lacks: formats, value types, nesting, signatures, limits, bad input."""

from __future__ import annotations

import base64
import plistlib
from datetime import datetime

import pytest
from sqlalchemy import select, text

from mdmserver.audit.models import AuditEvent
from mdmserver.collaborators import secret_box
from mdmserver.pki import cms
from mdmserver.pki import x509 as px
from mdmserver.pki.service import get_server_identity
from mdmserver.profiles.models import Payload, Profile

from .helpers import (
    assert_error,
    assert_same_plist,
    download,
    dumps,
    make_payload,
    make_profile,
    raw_bplist,
    upload,
)


def _round_trip(client, headers, original: dict, fmt: str = "xml", **params) -> dict:
    response = upload(client, headers, dumps(original, fmt), **params)
    assert response.status_code == 201, response.get_data(as_text=True)[:800]
    got = download(client, headers, response.get_json()["data"]["id"])
    assert got.status_code == 200
    reloaded = plistlib.loads(got.data)
    assert_same_plist(plistlib.loads(dumps(original, fmt)), reloaded)
    return response.get_json()


@pytest.fixture
def rw(auth):
    # ``secrets``: the profile download carries the profile's passwords and identities
    return auth("read", "write", "secrets")


def test_binary_plist_round_trips_and_downloads_as_binary(client, rw):
    profile = make_profile([make_payload("com.apple.wifi.managed", SSID_STR="Office", AutoJoin=True)])
    body = _round_trip(client, rw, profile, "binary")
    assert body["data"]["attributes"]["source_format"] == "binary"
    got = download(client, rw, body["data"]["id"])
    assert got.data.startswith(b"bplist00")
    as_xml = download(client, rw, body["data"]["id"], format="xml")
    assert as_xml.data.startswith(b"<?xml")
    assert_same_plist(profile, plistlib.loads(as_xml.data))


def test_data_date_real_and_integer_values_keep_their_types(client, rw):
    payload = make_payload(
        "com.example.types",
        Blob=b"\x00\x01binary\xff",
        When=datetime(2024, 2, 29, 23, 59, 58),
        Ratio=0.25,
        WholeReal=3.0,
        Big=2**63 + 5,
        Negative=-(2**62),
        Flag=False,
        Nested={"Data": [b"", b"x" * 100], "Date": datetime(1999, 12, 31, 0, 0, 0)},
    )
    removal = datetime(2030, 1, 1, 12, 0, 0)
    profile = make_profile([payload], RemovalDate=removal, DurationUntilRemoval=3600, PayloadRemovalDisallowed=True)
    for fmt in ("xml", "binary"):
        profile["PayloadIdentifier"] += fmt
        _round_trip(client, rw, profile, fmt)


def test_typed_payload_with_mismatched_types_keeps_them_and_warns(client, rw, db_session):
    wifi = make_payload(
        "com.apple.wifi.managed",
        SSID_STR="Lab",
        AutoJoin=1,  # an integer where Apple documents a boolean
        HIDDEN_NETWORK="no",  # a string where a boolean is expected
        EncryptionType="WPA2",
        UnknownVendorKey={"a": [1, 2]},
    )
    restrictions = make_payload("com.apple.applicationaccess", allowCamera=False, ratingApps=1000)
    body = _round_trip(client, rw, make_profile([wifi, restrictions], PayloadVersion="1"))
    pointers = {w["pointer"]: w["code"] for w in body["meta"]["warnings"]}
    assert pointers["/PayloadContent/0/AutoJoin"] == "schema.wrong_type"
    assert pointers["/PayloadContent/0/HIDDEN_NETWORK"] == "schema.wrong_type"
    assert pointers["/PayloadContent/0/UnknownVendorKey"] == "schema.unknown_key"
    assert pointers["/PayloadVersion"] == "schema.wrong_type"
    stored = db_session.get(Payload, int(body["data"]["relationships"]["payloads"]["data"][0]["id"]))
    assert stored.kind == "wifi" and stored.ssid_str == "Lab" and stored.auto_join is None
    assert stored.extras["AutoJoin"] == 1 and "UnknownVendorKey" in stored.extras
    camera = db_session.get(Payload, int(body["data"]["relationships"]["payloads"]["data"][1]["id"]))
    assert camera.kind == "restrictions" and camera.allow_camera is False and camera.rating_apps == 1000


def test_strict_turns_schema_findings_into_422_with_pointers(client, rw):
    wifi = make_payload("com.apple.wifi.managed", SSID_STR="Lab", AutoJoin="yes", Bogus=True)
    data = dumps(make_profile([wifi]))
    body = assert_error(upload(client, rw, data, strict="true"), 422)
    pointers = {e["source"]["pointer"] for e in body["errors"]}
    assert {"/PayloadContent/0/AutoJoin", "/PayloadContent/0/Bogus"} <= pointers
    assert upload(client, rw, data, strict="false").status_code == 201


def test_ten_level_nesting_round_trips(client, rw):
    tree: object = "leaf"
    for level in range(10):
        tree = {f"Level{level}": [tree, level]} if level % 2 else {f"Level{level}": tree}
    _round_trip(client, rw, make_profile([make_payload("com.example.deep", Tree=tree)]))


def test_nesting_beyond_the_limit_is_refused(client, rw):
    tree: object = 1
    for _ in range(70):
        tree = [tree]
    body = assert_error(upload(client, rw, dumps(make_profile([make_payload("com.example.deep", T=tree)]))), 422)
    assert "nested deeper" in body["errors"][0]["detail"]


def test_unknown_payload_types_and_keys_are_kept(client, rw, db_session):
    payloads = [
        make_payload("com.vendor.thing", Anything={"x": [True, 1, 1.5, "s"]}, **{"odd key/with~chars": "v"}),
        make_payload("com.apple.dock", largesize=128.0, tilesize=64),
    ]
    body = _round_trip(client, rw, make_profile(payloads, VendorTopLevel="kept", TargetDeviceType=5))
    ids = [int(p["id"]) for p in body["data"]["relationships"]["payloads"]["data"]]
    assert {db_session.get(Payload, i).kind for i in ids} == {"generic"}


def test_template_placeholders_are_plain_strings(client, rw):
    scep = make_payload("com.apple.security.scep", PayloadContent={"Challenge": "%CHAL%", "Name": "$SERIAL_NUMBER"})
    _round_trip(client, rw, make_profile([scep]))


def test_bom_and_leading_whitespace_are_accepted(client, rw):
    data = dumps(make_profile([make_payload("com.example.a")]))
    for prefix in (b"\xef\xbb\xbf", b"\n\n  \t", b"\xef\xbb\xbf\r\n "):
        profile = make_profile([make_payload("com.example.a")])
        data = dumps(profile)
        response = upload(client, rw, prefix + data)
        assert response.status_code == 201, response.get_json()
        got = download(client, rw, response.get_json()["data"]["id"])
        assert_same_plist(profile, plistlib.loads(got.data))


def test_profile_signed_by_ourselves_uploads_trusted(client, rw, db_session):
    profile = make_profile([make_payload("com.apple.webClip.managed", URL="https://example.com", Label="Ex")])
    cert, key = get_server_identity(db_session, secret_box())
    signed = cms.sign(dumps(profile), cert, key)
    response = upload(client, rw, signed)
    assert response.status_code == 201, response.get_json()
    attributes = response.get_json()["data"]["attributes"]
    assert attributes["signed"] is True and attributes["signer_trusted"] is True
    assert attributes["signer_subject"]
    assert not [w for w in response.get_json()["meta"]["warnings"] if w["code"] == "signature.untrusted"]
    assert_same_plist(profile, plistlib.loads(download(client, rw, response.get_json()["data"]["id"]).data))


def test_profile_signed_by_a_stranger_uploads_with_a_warning(client, rw):
    key = px.generate_private_key("ec")
    cert, _ = px.create_ca("Somebody Else", organization="Elsewhere", key=key)
    profile = make_profile([make_payload("com.example.a")])
    response = upload(client, rw, cms.sign(dumps(profile, "binary"), cert, key))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["data"]["attributes"]["signer_trusted"] is False
    assert "Somebody Else" in body["data"]["attributes"]["signer_subject"]
    assert [w for w in body["meta"]["warnings"] if w["code"] == "signature.untrusted"]
    # strict is about Apple-schema findings, not about who signed
    again = upload(client, rw, cms.sign(dumps(make_profile([make_payload("com.example.a")]), "binary"), cert, key),
                   strict="true")
    assert again.status_code == 201, again.get_json()


def test_configured_trust_file_makes_a_foreign_signer_trusted(app, client, rw, monkeypatch, tmp_path):
    key = px.generate_private_key("ec")
    ca, _ = px.create_ca("Partner Root", organization="Partner", key=key)
    bundle = tmp_path / "trust.pem"
    bundle.write_text(px.cert_to_pem(ca))
    monkeypatch.setitem(app.config, "PROFILE_TRUST_FILE", str(bundle))
    response = upload(client, rw, cms.sign(dumps(make_profile()), ca, key))
    assert response.status_code == 201
    assert response.get_json()["data"]["attributes"]["signer_trusted"] is True
    bundle.write_text("not a certificate")
    assert_error(upload(client, rw, cms.sign(dumps(make_profile()), ca, key)), 503)


def test_broken_signature_is_422(client, rw, db_session):
    cert, key = get_server_identity(db_session, secret_box())
    signed = bytearray(cms.sign(dumps(make_profile()), cert, key))
    index = signed.index(b"PayloadDisplayName")
    signed[index] ^= 0x01  # change the signed content, keep the structure
    body = assert_error(upload(client, rw, bytes(signed)), 422)
    assert body["errors"][0]["code"] == "bad_signature"


def test_signed_download_verifies_against_the_server_identity(client, rw, db_session):
    profile = make_profile([make_payload("com.example.a", Value=1)])
    profile_id = upload(client, rw, dumps(profile)).get_json()["data"]["id"]
    signed = download(client, rw, profile_id, signed="true")
    cert, _ = get_server_identity(db_session, secret_box())
    unwrapped = cms.unwrap_signed(signed.data, trust_roots=[cert])
    assert unwrapped.trusted
    assert_same_plist(profile, plistlib.loads(unwrapped.content))


def test_encrypted_profile_is_refused(client, rw):
    profile = make_profile(None, IsEncrypted=True, EncryptedPayloadContent=b"\x30\x80opaque")
    del profile["PayloadContent"]
    body = assert_error(upload(client, rw, dumps(profile)), 422)
    assert body["errors"][0]["detail"] == "encrypted profiles are not supported"
    assert body["errors"][0]["source"]["pointer"] == "/EncryptedPayloadContent"


def test_five_megabyte_profile_uploads(client, rw):
    blob = bytes(range(256)) * (5 * 1024 * 1024 // 256 // 4 * 3)  # ~3.75 MiB raw, ~5 MB as base64 XML
    profile = make_profile([make_payload("com.apple.security.root", PayloadContent=blob)])
    data = dumps(profile)
    assert len(data) > 5_000_000
    body = _round_trip(client, rw, profile)
    assert body["included"][0]["attributes"]["kind"] == "certificate"


def test_too_large_profile_is_413(app, client, rw, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_UPLOAD_BYTES", 10_000)
    data = dumps(make_profile([make_payload("com.example.a", Pad="x" * 20_000)]))
    assert_error(upload(client, rw, data), 413)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"   \n\t", "empty_file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00garbage", "not_a_plist"),
        (bytes(range(256)) * 8, "not_a_plist"),
        (b"<?xml version='1.0'?><plist><dict><key>a</key></plist>", "invalid_plist"),
        (b"<plist version='1.0'><dict><key>a</key><integer>x</integer></dict></plist>", "invalid_plist"),
        (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e 'boom'>]><plist><string>&e;</string></plist>",
         "invalid_plist"),
        (b"bplist00garbage-garbage-garbage-garbage", "invalid_plist"),
        (b"\x30\x82\x01\x00" + b"\x00" * 40, "bad_signature"),
    ],
)
def test_garbage_is_a_clear_4xx(client, rw, data, code):
    body = assert_error(upload(client, rw, data), 422)
    assert body["errors"][0]["code"] == code


@pytest.mark.parametrize(
    ("value", "pointer", "code"),
    [
        (["not", "a", "dict"], "", "not_a_dictionary"),
        ({"PayloadContent": {"a": 1}}, "/PayloadContent", "payload_content_not_array"),
        ({"PayloadContent": [{"PayloadType": "a"}, "x"]}, "/PayloadContent/1", "payload_not_dictionary"),
        (
            {"PayloadContent": [{"PayloadType": "a"}] * 3 + [{"PayloadIdentifier": "x"}]},
            "/PayloadContent/3/PayloadType",
            "missing_payload_type",
        ),
        ({"PayloadContent": [{"PayloadType": 5}]}, "/PayloadContent/0/PayloadType", "bad_payload_type"),
    ],
)
def test_structural_faults_are_422_with_pointers(client, rw, value, pointer, code):
    body = assert_error(upload(client, rw, plistlib.dumps(value)), 422)
    assert body["errors"][0]["code"] == code
    assert body["errors"][0]["source"]["pointer"] == pointer


@pytest.mark.parametrize(
    ("value", "pointer", "code"),
    [
        ({"PayloadContent": [{"PayloadType": "a", 7: "x"}]}, "/PayloadContent/0", "non_string_key"),
        ({"PayloadContent": [{"PayloadType": "a", "Null": None}]}, "/PayloadContent/0/Null", "null_value"),
    ],
)
def test_binary_only_faults_are_422_with_pointers(client, rw, value, pointer, code):
    body = assert_error(upload(client, rw, raw_bplist(value)), 422)
    assert body["errors"][0]["code"] == code
    assert body["errors"][0]["source"]["pointer"] == pointer


def test_uid_values_are_refused(client, rw):
    data = plistlib.dumps({"PayloadContent": [{"PayloadType": "a", "U": plistlib.UID(3)}]}, fmt=plistlib.FMT_BINARY)
    body = assert_error(upload(client, rw, data), 422)
    assert body["errors"][0]["source"]["pointer"] == "/PayloadContent/0/U"


def test_upload_needs_multipart_with_a_file_field(client, rw):
    form = client.post("/api/v1/upload/profiles", data={"file": "x"}, headers=rw,
                       content_type="application/x-www-form-urlencoded")
    assert "multipart/form-data" in assert_error(form, 415)["errors"][0]["detail"]
    raw = client.post("/api/v1/upload/profiles", data=dumps(make_profile()), headers=rw,
                      content_type="application/x-apple-aspen-config")
    assert_error(raw, 415)
    missing = client.post("/api/v1/upload/profiles", data={"other": "x"}, headers=rw,
                          content_type="multipart/form-data")
    assert assert_error(missing, 400)["errors"][0]["source"]["parameter"] == "file"
    bad_flag = upload(client, rw, dumps(make_profile()), strict="maybe")
    assert assert_error(bad_flag, 400)["errors"][0]["source"]["parameter"] == "strict"
    unknown = upload(client, rw, dumps(make_profile()), verbose="1")
    assert_error(unknown, 400)


def test_upload_needs_write_scope(client, auth):
    data = dumps(make_profile())
    assert_error(upload(client, {}, data), 401)
    assert_error(upload(client, auth("read"), data), 403)


def test_duplicate_identifier_is_409_unless_replace(client, rw, db_session):
    first = make_profile([make_payload("com.example.a", V=1)], PayloadIdentifier="com.example.dup")
    created = upload(client, rw, dumps(first))
    assert created.status_code == 201
    profile_id = created.get_json()["data"]["id"]

    second = make_profile([make_payload("com.example.b", V=2), make_payload("com.example.c")],
                          PayloadIdentifier="com.example.dup", PayloadDisplayName="Second")
    conflict = assert_error(upload(client, rw, dumps(second)), 409)
    assert conflict["meta"]["existing_id"] == profile_id
    assert conflict["errors"][0]["source"]["pointer"] == "/PayloadIdentifier"

    replaced = upload(client, rw, dumps(second), replace="true")
    assert replaced.status_code == 200, replaced.get_json()
    body = replaced.get_json()
    assert body["data"]["id"] == profile_id and body["data"]["attributes"]["revision"] == 2
    assert_same_plist(second, plistlib.loads(download(client, rw, profile_id).data))
    assert_same_plist(first, plistlib.loads(download(client, rw, profile_id, revision=1).data))
    assert_same_plist(second, plistlib.loads(download(client, rw, profile_id, revision=2).data))
    assert_error(download(client, rw, profile_id, revision=7), 404)

    versions = client.get(f"/api/v1/profiles/{profile_id}/versions", headers=rw).get_json()
    assert [v["attributes"]["revision"] for v in versions["data"]] == [1]
    assert versions["meta"]["current_revision"] == 2
    assert db_session.scalar(select(Payload.id).where(Payload.payload_type == "com.example.a")) is None
    actions = db_session.scalars(
        select(AuditEvent.action).where(AuditEvent.resource_type == "profiles", AuditEvent.resource_id == profile_id)
    ).all()
    assert actions == ["profile:create", "profile:replace"]


def test_download_errors(client, rw):
    assert_error(download(client, rw, 999999), 404)
    profile_id = upload(client, rw, dumps(make_profile())).get_json()["data"]["id"]
    assert_error(download(client, rw, profile_id, format="json"), 400)
    assert_error(download(client, rw, profile_id, signed="perhaps"), 400)
    assert_error(download(client, rw, profile_id, revision="x"), 400)


def test_download_file_name_is_safe(client, rw):
    profile = make_profile(PayloadDisplayName='Wi-Fi "Office"/../\r\nX: y ünïcode')
    profile_id = upload(client, rw, dumps(profile)).get_json()["data"]["id"]
    disposition = download(client, rw, profile_id).headers["Content-Disposition"]
    assert disposition == 'attachment; filename="Wi-Fi-Office-.-X-y-n-code.mobileconfig"'


def test_binary_profile_with_control_characters_cannot_become_xml(client, rw):
    profile = make_profile([make_payload("com.example.a", Text="bell\x07")])
    profile_id = upload(client, rw, dumps(profile, "binary")).get_json()["data"]["id"]
    assert_same_plist(profile, plistlib.loads(download(client, rw, profile_id).data))
    body = assert_error(download(client, rw, profile_id, format="xml"), 422)
    assert body["errors"][0]["code"] == "unrepresentable"


def test_profile_columns_are_typed(client, rw, db_session):
    profile = make_profile([], PayloadScope="System", PayloadRemovalDisallowed=False,
                           ConsentText={"default": "Hi", "fr": "Salut"}, PayloadOrganization="Example")
    profile_id = int(upload(client, rw, dumps(profile)).get_json()["data"]["id"])
    row = db_session.get(Profile, profile_id)
    assert (row.scope, row.removal_disallowed, row.organization) == ("System", False, "Example")
    assert row.consent_text == {"default": "Hi", "fr": "Salut"} and row.extras == {}
    assert row.key_order == list(profile)


def test_values_no_column_can_hold_go_to_extras(client, rw, db_session):
    """NUL in text, integers beyond 64 bits, non-finite and integer reals: kept exactly, out of columns."""
    wifi = make_payload("com.apple.wifi.managed", SSID_STR="nul\x00inside", Misc="a\x00b")
    passcode = make_payload("com.apple.mobiledevice.passwordpolicy", maxPINAgeInDays=2**64 - 1, minLength=-(2**63))
    profile = make_profile([wifi, passcode], DurationUntilRemoval=float("inf"), TargetDeviceType=2**63)
    body = _round_trip(client, rw, profile, "binary")
    row = db_session.get(Profile, int(body["data"]["id"]))
    assert row.duration_until_removal is None and row.extras["DurationUntilRemoval"] == {"$real": "inf"}
    assert row.target_device_type is None and row.extras["TargetDeviceType"] == 2**63
    stored_wifi, stored_passcode = row.payloads
    assert stored_wifi.ssid_str is None and stored_wifi.extras["SSID_STR"] == "nul\x00inside"
    assert stored_passcode.max_pin_age_in_days is None and stored_passcode.min_length == -(2**63)

    integer_real = make_profile([], DurationUntilRemoval=86400)
    body = _round_trip(client, rw, integer_real)
    row = db_session.get(Profile, int(body["data"]["id"]))
    assert row.extras["DurationUntilRemoval"] == 86400 and row.duration_until_removal is None


def test_secrets_are_sealed_at_rest_and_hidden_from_json(client, rw, db_session):
    """Passwords, SCEP challenges and PKCS#12 key material: encrypted in the database, absent from
    JSON:API, present in the profile download (the device needs them)."""
    pkcs12_blob = b"PKCS12-PRIVATE-KEY-MATERIAL"
    payloads = [
        make_payload("com.apple.wifi.managed", SSID_STR="Office", Password="wifi-s3cret",
                     EAPClientConfiguration={"UserName": "bob", "UserPassword": "eap-s3cret"}),
        make_payload("com.apple.security.pkcs12", Password="p12-s3cret", PayloadContent=pkcs12_blob),
        make_payload("com.apple.security.scep", PayloadContent={"URL": "https://ca", "Challenge": "scep-s3cret"}),
        make_payload("com.vendor.app", Settings=[{"SharedSecret": "vendor-s3cret"}]),
    ]
    profile = make_profile(payloads, PayloadIdentifier="com.example.secrets")
    body = _round_trip(client, rw, profile)
    profile_id = body["data"]["id"]
    replaced = upload(client, rw, dumps(profile), replace="true")  # the history is sealed too
    assert replaced.status_code == 200

    secrets = [b"wifi-s3cret", b"eap-s3cret", b"p12-s3cret", b"scep-s3cret", b"vendor-s3cret", pkcs12_blob]
    dump = []
    for table in ("profiles", "profile_versions", "payloads", "payloads_wifi", "payloads_certificate",
                  "payloads_scep"):
        for row in db_session.execute(text(f"SELECT * FROM {table}")):
            dump.append(repr(tuple(row)).encode())
    everything = b"\n".join(dump)
    assert everything and not [s for s in secrets if s in everything or base64.b64encode(s) in everything]

    listing = client.get(f"/api/v1/payloads?filter[profile]={profile_id}", headers=rw)
    assert listing.status_code == 200
    text_body = listing.get_data()
    assert not [s for s in secrets if s in text_body or base64.b64encode(s) in text_body]
    wifi = listing.get_json()["data"][0]["attributes"]
    assert wifi["SSID_STR"] == "Office" and wifi["EAPClientConfiguration"] == {"UserName": "bob"}
    assert "Password" not in wifi

    plist = plistlib.loads(download(client, rw, profile_id).data)
    assert_same_plist(profile, plist)
    old = plistlib.loads(download(client, rw, profile_id, revision=1).data)
    assert_same_plist(profile, old)


def test_concurrent_duplicate_is_409_not_500(client, rw, monkeypatch):
    """Two uploads of one identifier racing past the existence check: the unique index decides."""
    from mdmserver.profiles import service

    profile = make_profile(PayloadIdentifier="com.example.race")
    assert upload(client, rw, dumps(profile)).status_code == 201
    monkeypatch.setattr(service, "current_by_identifier", lambda session, identifier: None)
    body = assert_error(upload(client, rw, dumps(make_profile(PayloadIdentifier="com.example.race"))), 409)
    assert body["errors"][0]["code"] == "duplicate_identifier"
    assert client.get("/api/v1/profiles?filter[identifier]=com.example.race", headers=rw).get_json()["meta"][
        "total"] == 1
