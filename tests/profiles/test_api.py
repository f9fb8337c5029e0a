"""JSON:API: profiles and payloads created, read, filtered, patched and deleted; bounded SQL per list."""

from __future__ import annotations

import base64
import plistlib

import pytest
from sqlalchemy import event, select

from mdmserver.audit.models import AuditEvent
from mdmserver.db import db
from mdmserver.profiles.models import Payload, Profile

from .helpers import (
    JSONAPI,
    assert_error,
    assert_same_plist,
    download,
    dumps,
    make_payload,
    make_profile,
    upload,
)


@pytest.fixture
def rw(auth):
    # ``secrets``: the profile download carries the profile's passwords and identities
    return auth("read", "write", "secrets")


def _post(client, headers, path, data, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return client.post(path + (f"?{query}" if query else ""), json={"data": data},
                       headers={**headers, "Content-Type": JSONAPI})


def _patch(client, headers, path, data):
    return client.patch(path, json={"data": data}, headers={**headers, "Content-Type": JSONAPI})


WIFI = {
    "PayloadType": "com.apple.wifi.managed",
    "SSID_STR": "Office",
    "AutoJoin": True,
    "EncryptionType": "WPA2",
    "Password": "correct horse",
    "EAPClientConfiguration": {"AcceptEAPTypes": [25], "TLSTrustedServerNames": ["radius.example.com"]},
}


def test_create_wifi_profile_by_api_without_a_plist(client, rw, db_session):
    attributes = {
        "PayloadIdentifier": "com.example.wifi",
        "PayloadDisplayName": "Office Wi-Fi",
        "RemovalDate": "2031-05-01T08:00:00Z",
        "PayloadContent": [
            WIFI,
            {"PayloadType": "com.apple.security.root", "PayloadContent": base64.b64encode(b"DER").decode(),
             "PayloadCertificateFileName": "root.cer"},
            {"PayloadType": "com.vendor.custom", "Blob": {"$data": "AAEC"}, "When": {"$date": "2020-01-02T03:04:05Z"},
             "Real": 2.0, "Int": 2},
        ],
    }
    response = _post(client, rw, "/api/v1/profiles", {"type": "profiles", "attributes": attributes})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    profile_id = body["data"]["id"]
    assert response.headers["Location"] == f"/api/v1/profiles/{profile_id}"
    kinds = [p["attributes"]["kind"] for p in body["included"]]
    assert kinds == ["wifi", "certificate", "generic"]

    plist = plistlib.loads(download(client, rw, profile_id).data)
    assert plist["PayloadType"] == "Configuration" and plist["PayloadVersion"] == 1 and plist["PayloadUUID"]
    wifi = plist["PayloadContent"][0]
    assert wifi["AutoJoin"] is True and wifi["Password"] == "correct horse"
    assert wifi["PayloadIdentifier"] == "com.example.wifi.com.apple.wifi.managed.0" and wifi["PayloadVersion"] == 1
    assert plist["PayloadContent"][1]["PayloadContent"] == b"DER"
    custom = plist["PayloadContent"][2]
    assert custom["Blob"] == b"\x00\x01\x02" and custom["When"].year == 2020
    assert type(custom["Real"]) is float and type(custom["Int"]) is int
    assert plist["RemovalDate"].isoformat() == "2031-05-01T08:00:00"

    row = db_session.get(Profile, int(profile_id))
    assert row.payloads[0].ssid_str == "Office" and row.payloads[0].auto_join is True
    assert db_session.scalar(select(AuditEvent).where(AuditEvent.action == "profile:create",
                                                      AuditEvent.resource_id == profile_id))


def test_payload_detail_has_typed_attributes_and_hides_secrets(client, rw):
    created = _post(client, rw, "/api/v1/profiles", {"type": "profiles", "attributes": {
        "PayloadIdentifier": "com.example.wifi2", "PayloadContent": [WIFI]}})
    payload_id = created.get_json()["included"][0]["id"]
    detail = client.get(f"/api/v1/payloads/{payload_id}", headers=rw)
    assert detail.status_code == 200
    attributes = detail.get_json()["data"]["attributes"]
    assert attributes["kind"] == "wifi" and attributes["SSID_STR"] == "Office" and attributes["AutoJoin"] is True
    assert attributes["EAPClientConfiguration"] == WIFI["EAPClientConfiguration"]
    assert "Password" not in attributes
    assert detail.get_json()["data"]["relationships"]["profile"]["data"]["id"] == created.get_json()["data"]["id"]


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        ({"PayloadType": "com.apple.wifi.managed", "AutoJoin": 1}, "/data/attributes/PayloadContent/0/AutoJoin"),
        ({"PayloadType": "com.apple.wifi.managed", "SSID_STR": True}, "/data/attributes/PayloadContent/0/SSID_STR"),
        ({"PayloadType": "com.apple.mobiledevice.passwordpolicy", "minLength": True},
         "/data/attributes/PayloadContent/0/minLength"),
        ({"PayloadType": "com.apple.mobiledevice.passwordpolicy", "minLength": 4.5},
         "/data/attributes/PayloadContent/0/minLength"),
        ({"PayloadType": "com.apple.security.root", "PayloadContent": "***not base64***"},
         "/data/attributes/PayloadContent/0/PayloadContent"),
        ({"PayloadType": "com.vendor.x", "D": {"$date": "yesterday"}}, "/data/attributes/PayloadContent/0/D/$date"),
        ({"PayloadType": "com.vendor.x", "N": None}, "/data/attributes/PayloadContent/0/N"),
        ({"PayloadType": 3}, "/data/attributes/PayloadContent/0/PayloadType"),
        ({"SSID_STR": "x"}, "/data/attributes/PayloadContent/0/PayloadType"),
        ("not an object", "/data/attributes/PayloadContent/0"),
    ],
)
def test_create_validates_types_exactly(client, rw, payload, pointer):
    response = _post(client, rw, "/api/v1/profiles", {"type": "profiles", "attributes": {
        "PayloadIdentifier": "com.example.bad", "PayloadContent": [payload]}})
    body = assert_error(response, 422)
    assert body["errors"][0]["source"]["pointer"] == pointer


def test_create_body_faults(client, rw):
    assert_error(_post(client, rw, "/api/v1/profiles", {"type": "profiles", "attributes": {}}), 422)
    assert_error(_post(client, rw, "/api/v1/profiles", {"type": "devices", "attributes": {}}), 409)
    assert_error(_post(client, rw, "/api/v1/profiles", {"type": "profiles", "attributes": {
        "PayloadIdentifier": "a", "PayloadContent": {}}}), 422)
    assert_error(client.post("/api/v1/profiles", data="{nope", headers={**rw, "Content-Type": JSONAPI}), 400)
    assert_error(client.post("/api/v1/profiles", data="x", headers={**rw, "Content-Type": "text/plain"}), 415)


def test_create_duplicate_identifier_is_409(client, rw):
    data = {"type": "profiles", "attributes": {"PayloadIdentifier": "com.example.same"}}
    assert _post(client, rw, "/api/v1/profiles", data).status_code == 201
    assert_error(_post(client, rw, "/api/v1/profiles", data), 409)


def test_create_strict(client, rw):
    data = {"type": "profiles", "attributes": {"PayloadIdentifier": "com.example.strict", "PayloadContent": [
        {"PayloadType": "com.apple.wifi.managed", "NotAKey": 1}]}}
    body = assert_error(_post(client, rw, "/api/v1/profiles", data, strict="true"), 422)
    assert body["errors"][0]["source"]["pointer"] == "/PayloadContent/0/NotAKey"
    created = _post(client, rw, "/api/v1/profiles", data)
    assert created.status_code == 201 and created.get_json()["meta"]["warnings"]


def test_patch_profile_metadata_keeps_the_rest(client, rw, db_session):
    original = make_profile([make_payload("com.example.a", K=[1, 2])], PayloadDescription="old")
    profile_id = upload(client, rw, dumps(original)).get_json()["data"]["id"]
    response = _patch(client, rw, f"/api/v1/profiles/{profile_id}", {
        "type": "profiles", "id": profile_id,
        "attributes": {"PayloadDisplayName": "Renamed", "PayloadDescription": None, "ConsentText": {"default": "ok"}},
    })
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["data"]["attributes"]["PayloadDisplayName"] == "Renamed"
    expected = dict(original)
    expected["PayloadDisplayName"] = "Renamed"
    del expected["PayloadDescription"]
    expected["ConsentText"] = {"default": "ok"}
    assert_same_plist(expected, plistlib.loads(download(client, rw, profile_id).data))
    assert db_session.scalar(select(AuditEvent).where(AuditEvent.action == "profile:update"))


def test_patch_profile_faults(client, rw):
    a = upload(client, rw, dumps(make_profile(PayloadIdentifier="com.example.pa"))).get_json()["data"]["id"]
    upload(client, rw, dumps(make_profile(PayloadIdentifier="com.example.pb")))
    path = f"/api/v1/profiles/{a}"
    assert_error(_patch(client, rw, path, {"type": "profiles", "id": a,
                                           "attributes": {"PayloadIdentifier": "com.example.pb"}}), 409)
    assert_error(_patch(client, rw, path, {"type": "profiles", "id": a,
                                           "attributes": {"PayloadRemovalDisallowed": "yes"}}), 422)
    assert_error(_patch(client, rw, path, {"type": "profiles", "id": a, "attributes": {"PayloadContent": []}}), 422)
    assert_error(_patch(client, rw, path, {"type": "profiles", "id": "999", "attributes": {}}), 409)
    assert_error(_patch(client, rw, "/api/v1/profiles/999999", {"type": "profiles", "id": "999999",
                                                                "attributes": {}}), 404)


def test_delete_profile(client, rw, db_session):
    body = upload(client, rw, dumps(make_profile([make_payload("com.apple.wifi.managed", SSID_STR="x")]))).get_json()
    profile_id, payload_id = body["data"]["id"], body["included"][0]["id"]
    assert client.delete(f"/api/v1/profiles/{profile_id}", headers=rw).status_code == 204
    assert_error(client.get(f"/api/v1/profiles/{profile_id}", headers=rw), 404)
    assert_error(client.get(f"/api/v1/payloads/{payload_id}", headers=rw), 404)
    assert_error(client.delete(f"/api/v1/profiles/{profile_id}", headers=rw), 404)
    assert db_session.scalar(select(AuditEvent).where(AuditEvent.action == "profile:delete"))


def test_payload_create_patch_delete(client, rw, db_session):
    original = make_profile([make_payload("com.example.first", A=1)])
    profile_id = upload(client, rw, dumps(original)).get_json()["data"]["id"]

    added = client.post("/api/v1/payloads", json={"data": {
        "type": "payloads",
        "attributes": {"PayloadType": "com.apple.mobiledevice.passwordpolicy", "minLength": 8, "allowSimple": False},
        "relationships": {"profile": {"data": {"type": "profiles", "id": profile_id}}},
    }}, headers={**rw, "Content-Type": JSONAPI})
    assert added.status_code == 201, added.get_json()
    payload_id = added.get_json()["data"]["id"]
    assert added.get_json()["data"]["attributes"]["minLength"] == 8

    patched = _patch(client, rw, f"/api/v1/payloads/{payload_id}", {
        "type": "payloads", "id": payload_id, "attributes": {"minLength": 12, "allowSimple": None, "Extra": "x"}})
    assert patched.status_code == 200, patched.get_json()
    plist = plistlib.loads(download(client, rw, profile_id).data)
    assert_same_plist(original["PayloadContent"][0], plist["PayloadContent"][0])
    policy = plist["PayloadContent"][1]
    assert policy["minLength"] == 12 and "allowSimple" not in policy and policy["Extra"] == "x"

    assert_error(_patch(client, rw, f"/api/v1/payloads/{payload_id}", {
        "type": "payloads", "id": payload_id, "attributes": {"PayloadType": "com.apple.wifi.managed"}}), 422)
    assert_error(_patch(client, rw, f"/api/v1/payloads/{payload_id}", {
        "type": "payloads", "id": payload_id, "attributes": {"minLength": "12"}}), 422)
    no_profile = client.post("/api/v1/payloads", json={"data": {"type": "payloads", "attributes": {
        "PayloadType": "x"}}}, headers={**rw, "Content-Type": JSONAPI})
    assert_error(no_profile, 400)

    assert client.delete(f"/api/v1/payloads/{payload_id}", headers=rw).status_code == 204
    plist = plistlib.loads(download(client, rw, profile_id).data)
    assert_same_plist(original, plist)
    actions = set(db_session.scalars(select(AuditEvent.action).where(AuditEvent.resource_type == "payloads")))
    assert actions == {"profile:payload:create", "profile:payload:update", "profile:payload:delete"}


def _seed(client, rw, count: int, prefix: str) -> list[str]:
    ids = []
    for i in range(count):
        payloads = [make_payload("com.apple.wifi.managed", SSID_STR=f"n{i}"), make_payload(f"com.vendor.{i % 3}")]
        if i % 2:
            payloads.append(make_payload("com.apple.mobiledevice.passwordpolicy", minLength=i))
        profile = make_profile(payloads, PayloadIdentifier=f"{prefix}.{i:03d}", PayloadDisplayName=f"{prefix} {i}")
        ids.append(upload(client, rw, dumps(profile)).get_json()["data"]["id"])
    return ids


def test_list_filters_sort_paging_and_include(client, rw):
    ids = _seed(client, rw, 7, "com.example.list")
    listing = client.get("/api/v1/profiles?filter[payload_type]=com.apple.mobiledevice.passwordpolicy"
                         "&sort=-identifier&page[size]=2&include=payloads", headers=rw)
    assert listing.status_code == 200
    body = listing.get_json()
    assert body["meta"]["total"] == 3
    assert [d["attributes"]["PayloadIdentifier"] for d in body["data"]] == ["com.example.list.005",
                                                                           "com.example.list.003"]
    assert body["links"]["next"] and len(body["included"]) == 6
    assert {i["attributes"]["kind"] for i in body["included"]} == {"wifi", "generic", "passcode"}

    one = client.get("/api/v1/profiles?filter[identifier]=com.example.list.004", headers=rw).get_json()
    assert [d["id"] for d in one["data"]] == [ids[4]]
    named = client.get("/api/v1/profiles?filter[display_name]=com.example.list 6", headers=rw).get_json()
    assert [d["id"] for d in named["data"]] == [ids[6]]
    sparse = client.get("/api/v1/profiles?fields[profiles]=PayloadDisplayName&page[size]=1", headers=rw).get_json()
    assert list(sparse["data"][0]["attributes"]) == ["PayloadDisplayName"]

    payloads = client.get(f"/api/v1/payloads?filter[profile]={ids[1]}&sort=position", headers=rw).get_json()
    assert [p["attributes"]["kind"] for p in payloads["data"]] == ["wifi", "generic", "passcode"]
    by_type = client.get("/api/v1/payloads?filter[payload_type]=com.vendor.1", headers=rw).get_json()
    assert by_type["meta"]["total"] >= 2
    sparse = client.get(f"/api/v1/payloads?filter[profile]={ids[1]}&fields[payloads]=kind,SSID_STR", headers=rw)
    assert [d["attributes"] for d in sparse.get_json()["data"]] == [
        {"kind": "wifi", "SSID_STR": "n1"}, {"kind": "generic"}, {"kind": "passcode"}]

    assert_error(client.get("/api/v1/profiles?filter[colour]=red", headers=rw), 400)
    assert_error(client.get("/api/v1/profiles?sort=colour", headers=rw), 400)
    assert_error(client.get("/api/v1/profiles?page[size]=501", headers=rw), 400)
    assert_error(client.get("/api/v1/profiles?include=devices", headers=rw), 400)
    assert_error(client.get("/api/v1/payloads?filter[profile]=abc", headers=rw), 400)
    assert_error(client.get("/api/v1/profiles", headers={}), 401)


def _count_statements(client, headers, url: str) -> int:
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.get(url, headers=headers)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 200, response.get_json()
    return len([s for s in statements if "api_tokens" not in s and "SAVEPOINT" not in s.upper()])


def test_profile_list_does_a_bounded_number_of_statements(client, rw):
    _seed(client, rw, 3, "com.example.few")
    few = _count_statements(client, rw, "/api/v1/profiles?page[size]=50")
    few_included = _count_statements(client, rw, "/api/v1/profiles?page[size]=50&include=payloads")
    _seed(client, rw, 25, "com.example.many")
    many = _count_statements(client, rw, "/api/v1/profiles?page[size]=50")
    many_included = _count_statements(client, rw, "/api/v1/profiles?page[size]=50&include=payloads")
    assert many == few <= 3, (few, many)  # COUNT, the page, the payload references
    # With payloads included: one query per typed payload table present, never one per profile.
    assert many_included == few_included <= 3 + 3, (few_included, many_included)
    assert _count_statements(client, rw, "/api/v1/payloads?page[size]=100") <= 2 + 3


def test_profile_detail_and_unknown_ids(client, rw):
    body = upload(client, rw, dumps(make_profile([make_payload("com.example.a")]))).get_json()
    detail = client.get(f"/api/v1/profiles/{body['data']['id']}?include=payloads", headers=rw).get_json()
    assert detail["data"]["links"]["download"].endswith(body["data"]["id"])
    assert detail["included"][0]["attributes"]["PayloadType"] == "com.example.a"
    assert_error(client.get("/api/v1/profiles/123456789", headers=rw), 404)
    assert_error(client.get("/api/v1/payloads/123456789", headers=rw), 404)
    assert_error(client.get(f"/api/v1/profiles/{body['data']['id']}?include=x", headers=rw), 400)


def test_stored_rows_are_joined_table_subclasses(client, rw, db_session):
    body = upload(client, rw, dumps(make_profile([
        make_payload("com.apple.security.firewall", EnableFirewall=True, BlockAllIncoming=False),
        make_payload("com.apple.mdm", ServerURL="https://mdm.example.com/connect", AccessRights=8191,
                     SignMessage=True),
    ]))).get_json()
    ids = [int(p["id"]) for p in body["data"]["relationships"]["payloads"]["data"]]
    firewall, mdm = (db_session.get(Payload, i) for i in ids)
    assert type(firewall).__name__ == "FirewallPayload" and firewall.enable_firewall is True
    assert type(mdm).__name__ == "MDMPayload" and mdm.access_rights == 8191 and mdm.sign_message is True
    assert mdm.server_url == "https://mdm.example.com/connect"


ROUTES = [
    ("get", "/api/v1/profiles", "read"),
    ("get", "/api/v1/profiles/1", "read"),
    ("get", "/api/v1/profiles/1/versions", "read"),
    ("get", "/api/v1/payloads", "read"),
    ("get", "/api/v1/payloads/1", "read"),
    ("get", "/api/v1/download/profiles/1", "secrets"),
    ("post", "/api/v1/upload/profiles", "write"),
    ("post", "/api/v1/profiles", "write"),
    ("patch", "/api/v1/profiles/1", "write"),
    ("delete", "/api/v1/profiles/1", "write"),
    ("post", "/api/v1/payloads", "write"),
    ("patch", "/api/v1/payloads/1", "write"),
    ("delete", "/api/v1/payloads/1", "write"),
]


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES)
def test_permission_table(client, auth, method, path, scope):
    """No token → 401; a token without the scope → 403; with it the request passes authorization."""
    call = getattr(client, method)
    assert_error(call(path), 401)
    other = "write" if scope == "read" else "read"
    assert_error(call(path, headers=auth(other)), 403)
    allowed = call(path, headers=auth(scope))
    assert allowed.status_code not in (401, 403), allowed.get_json()


def test_every_edit_is_a_new_revision_with_history(client, rw):
    original = make_profile([make_payload("com.apple.wifi.managed", SSID_STR="A")])
    profile_id = upload(client, rw, dumps(original)).get_json()["data"]["id"]
    path = f"/api/v1/profiles/{profile_id}"
    renamed = _patch(client, rw, path, {"type": "profiles", "id": profile_id,
                                        "attributes": {"PayloadDisplayName": "B"}}).get_json()
    assert renamed["data"]["attributes"]["revision"] == 2 and renamed["meta"]["warnings"] == []
    payload_id = renamed["data"]["relationships"]["payloads"]["data"][0]["id"]
    patched = _patch(client, rw, f"/api/v1/payloads/{payload_id}", {
        "type": "payloads", "id": payload_id, "attributes": {"SSID_STR": "C", "NotAKey": 1}}).get_json()
    assert patched["meta"]["warnings"] == [
        {"code": "schema.unknown_key", "detail": "NotAKey is not a documented key here",
         "pointer": "/PayloadContent/0/NotAKey"}]
    assert client.delete(f"/api/v1/payloads/{payload_id}", headers=rw).status_code == 204
    detail = client.get(path, headers=rw).get_json()["data"]
    assert detail["attributes"]["revision"] == 4 and detail["relationships"]["payloads"]["data"] == []
    versions = client.get(f"{path}/versions", headers=rw).get_json()["data"]
    assert [v["attributes"]["revision"] for v in versions] == [1, 2, 3]
    assert_same_plist(original, plistlib.loads(download(client, rw, profile_id, revision=1).data))
    third = plistlib.loads(download(client, rw, profile_id, revision=3).data)
    assert third["PayloadDisplayName"] == "B" and third["PayloadContent"][0]["SSID_STR"] == "C"
    assert plistlib.loads(download(client, rw, profile_id).data)["PayloadContent"] == []


def test_vendor_keys_with_a_secret_word_anywhere_are_hidden_from_read(client, rw, auth):
    """Review of issue 9 ("name rule gaps"): a vendor key whose secret word is not its last one was
    shown to a ``read`` token. A secret word anywhere in the name makes it secret; a word after it
    that describes the secret (a hint, a URL) does not."""
    vendor = {"PayloadType": "com.vendor.agent", "MyOddSecretToken": "tok-3f9a", "SecretValue": "v-77c1",
              "AdminPINCode": "4711", "PasswordHint": "the usual", "TokenRefreshURL": "https://vendor.example/t",
              "ServerName": "agent.example"}
    created = _post(client, rw, "/api/v1/profiles", {"type": "profiles", "attributes": {
        "PayloadIdentifier": "com.example.vendor", "PayloadContent": [vendor]}})
    assert created.status_code == 201, created.get_json()
    payload_id = created.get_json()["included"][0]["id"]
    shown = client.get(f"/api/v1/payloads/{payload_id}", headers=auth("read"))
    assert shown.status_code == 200
    text = shown.get_data(as_text=True)
    # the PIN as a JSON string: bare, its digits could be part of a generated UUID in the answer
    for secret in ("tok-3f9a", "v-77c1", '"4711"'):
        assert secret not in text
    attributes = shown.get_json()["data"]["attributes"]
    assert attributes.get("AdminPINCode") != "4711"
    assert attributes["PasswordHint"] == "the usual" and attributes["TokenRefreshURL"] == "https://vendor.example/t"
    assert attributes["ServerName"] == "agent.example"
    # the profile itself still carries them, for a caller with ``secrets``
    plist = plistlib.loads(download(client, rw, created.get_json()["data"]["id"]).data)
    assert plist["PayloadContent"][0]["MyOddSecretToken"] == "tok-3f9a"
    assert plist["PayloadContent"][0]["AdminPINCode"] == "4711"
