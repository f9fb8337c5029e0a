"""Ivanti Neurons for MDM, Device API calls (seed 004): each documented example request replayed against
the compatibility routes (``mdmserver/compat/ivanti.py``); expected answers come from the document.

Devices are named by our ids where the document uses Ivanti's (22000 …), and by UDID where it uses a
GUID."""

from __future__ import annotations

import http.client
import json
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from mdmserver.attributes.service import attributes_of
from mdmserver.db import db, utcnow
from mdmserver.records.attributes import CustomAttribute
from mdmserver.records.commands import Command
from mdmserver.records.devices import AvailableOSUpdate, Device
from mdmserver.records.users import User
from tests.factories import make_device

FORM = "application/x-www-form-urlencoded"


def _ok(response, result=None):
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["errors"] is None
    if result is not None:
        assert body["result"] == result
    return body["result"]


def _queued(db_session, device, request_type: str) -> int:
    return len(db_session.scalars(select(Command).where(Command.device_id == device.id,
                                                          Command.request_type == request_type)).all())


@pytest.fixture
def phone(db_session):
    return make_device(db_session, platform="ios", is_supervised=True)


# --- Assign a Device to a User ---------------------------------------------------------------------

def test_assign_a_device_to_a_user(client, auth, db_session, phone):
    user = User(email="praveen@example.com", name="praveen kh")
    db_session.add(user)
    db_session.flush()
    response = client.put("/api/v1/device/updateAccount", headers=auth("write"),
                          data={"accountId": str(user.id), "deviceIds": str(phone.id)}, content_type=FORM)
    assert _ok(response) == {"searchResults": [], "totalCount": 0, "offset": 0, "limit": 0, "queryTime": 0}
    assert client.get(f"/api/v1/device/{phone.id}", headers=auth("read")).get_json()["result"]["ownerId"] == user.id


def test_assign_a_device_to_an_unknown_user_is_a_4xx(client, auth, phone):
    response = client.put("/api/v1/device/updateAccount", headers=auth("write"),
                          data={"accountId": "10542407", "deviceIds": str(phone.id)}, content_type=FORM)
    assert response.status_code == 422 and response.get_json()["meta"]["request_id"]


# --- Custom attributes -----------------------------------------------------------------------------

def test_add_replace_custom_attributes_per_device(client, auth, db_session, phone):
    h = auth("write")
    client.post(f"/api/v1/device/{phone.id}/customattributes", headers=h, json={"attrs": {"old": ["x"]}})
    response = client.post(f"/api/v1/device/{phone.id}/customattributes", headers=h,
                           json={"attrs": {"cityid": ["SF"]}})
    _ok(response, 1)
    # by GUID (our UDID), the document's second example
    _ok(client.post(f"/api/v1/device/{phone.udid}/customattributes", headers=h,
                    json={"attrs": {"tlark": ["1"], "cityid": ["SF"]}}), 1)
    got = _ok(client.get(f"/api/v1/device/{phone.id}/customattributes", headers=auth("read")))
    assert got == {"deviceId": phone.id, "guid": phone.udid, "attrs": {"tlark": ["1"], "cityid": ["SF"]}}


def test_get_custom_attributes_per_device(client, auth, phone):
    client.post(f"/api/v1/device/{phone.id}/customattributes", headers=auth("write"),
                json={"attrs": {"cityId": ["SF"], "carrier": ["att"]}})
    for ident in (phone.id, phone.udid):
        got = _ok(client.get(f"/api/v1/device/{ident}/customattributes", headers=auth("read")))
        assert got["attrs"] == {"cityId": ["SF"], "carrier": ["att"]}


def _given_a_and_b(client, auth, phone):
    _ok(client.post(f"/api/v1/device/{phone.udid}/customattributes", headers=auth("write"),
                    json={"attrs": {"a": ["valuea"], "b": ["valueb"]}}), 1)


def _attrs(client, auth, phone):
    return _ok(client.get(f"/api/v1/device/{phone.udid}/customattributes", headers=auth("read")))["attrs"]


def test_patch_custom_attributes_per_device(client, auth, phone):
    h = auth("write")
    _given_a_and_b(client, auth, phone)
    # overwrite attribute a only
    _ok(client.patch(f"/api/v1/device/{phone.udid}/customattributes", headers=h,
                     json={"attrs": {"a": ["value_a_patched"]}, "forceOverwrite": True}), 1)
    assert _attrs(client, auth, phone) == {"a": ["value_a_patched"], "b": ["valueb"]}
    # overwrite both a and b
    _ok(client.patch(f"/api/v1/device/{phone.udid}/customattributes", headers=h,
                     json={"attrs": {"a": ["value_a_patched"], "b": ["value_b_patched"]}, "forceOverwrite": True}), 1)
    assert _attrs(client, auth, phone) == {"a": ["value_a_patched"], "b": ["value_b_patched"]}
    # add new attribute c
    _ok(client.patch(f"/api/v1/device/{phone.udid}/customattributes", headers=h,
                     json={"attrs": {"c": ["value_c_added"]}, "forceOverwrite": True}), 1)
    assert _attrs(client, auth, phone) == {"a": ["value_a_patched"], "b": ["value_b_patched"],
                                           "c": ["value_c_added"]}


def test_patch_custom_attributes_per_device_as_text_plain(client, auth, phone):
    """The document's PATCH examples send ``Content-Type: text/plain`` (after ``application/json``; the
    last one is what the server sees): the JSON body is read all the same, on this route."""
    h = auth("write")
    _given_a_and_b(client, auth, phone)
    url = f"/api/v1/device/{phone.udid}/customattributes"
    _ok(client.patch(url, headers=h, content_type="text/plain",
                     data='{"attrs":{"a":["value_a_patched"]}, "forceOverwrite":true}'), 1)
    assert _attrs(client, auth, phone) == {"a": ["value_a_patched"], "b": ["valueb"]}
    _ok(client.patch(url, headers=h, content_type="text/plain",
                     data='{"attrs":{"a":["value_a_patched"], "b":["value_b_patched"]}, "forceOverwrite":true}'), 1)
    _ok(client.patch(url, headers=h, content_type="text/plain",
                     data='{"attrs":{"c":["value_c_added"]}, "forceOverwrite":true}'), 1)
    assert _attrs(client, auth, phone) == {"a": ["value_a_patched"], "b": ["value_b_patched"],
                                           "c": ["value_c_added"]}
    # not JSON: 400; another media type: 415; POST keeps asking for JSON
    bad = client.patch(url, headers=h, content_type="text/plain", data="attrs=a")
    assert bad.status_code == 400 and bad.get_json()["meta"]["request_id"]
    assert client.patch(url, headers=h, content_type="text/csv", data="{}").status_code == 415
    assert client.post(url, headers=h, content_type="text/plain", data='{"attrs":{"a":["1"]}}').status_code == 415


def test_patch_custom_attributes_with_the_documents_two_content_types(live_server):
    """The document's curl sends both Content-Type headers over HTTP: replayed on a real socket."""
    with live_server.app.app_context():
        device = make_device(db.session, platform="ios")
        db.session.commit()
        udid, device_id = device.udid, device.id
    url = urlsplit(live_server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    body = '{"attrs":{"a":["value_a_patched"]}, "forceOverwrite":true}'
    connection.putrequest("PATCH", f"/api/v1/device/{udid}/customattributes")
    for name, value in (("Content-Type", "application/json"), *live_server.auth("write").items(),
                        ("Content-Type", "text/plain"), ("Content-Length", str(len(body)))):
        connection.putheader(name, value)
    connection.endheaders(body.encode())
    response = connection.getresponse()
    assert response.status == 200
    assert json.loads(response.read()) == {"errors": None, "result": 1}
    connection.close()
    with live_server.app.app_context():
        assert attributes_of(db.session, [device_id])[device_id] == {"a": ["value_a_patched"]}


def test_patch_custom_attributes_force_overwrite_false_appends(client, auth, db_session, phone):
    _given_a_and_b(client, auth, phone)
    _ok(client.patch(f"/api/v1/device/{phone.udid}/customattributes", headers=auth("write"),
                     json={"attrs": {"a": ["value_a2", "valuea"], "d": ["new"]}, "forceOverwrite": False}), 1)
    assert _attrs(client, auth, phone) == {"a": ["valuea", "value_a2"], "b": ["valueb"], "d": ["new"]}
    # filters and facets see every value
    h = auth("read")
    for value in ("valuea", "value_a2"):
        listed = client.get(f"/api/v1/devices?filter[custom.a]={value}", headers=h).get_json()
        assert [d["id"] for d in listed["data"]] == [str(phone.id)]
    facets = client.get("/api/v1/devices?facets=custom.a", headers=h).get_json()["meta"]["facets"]["custom.a"]
    assert sorted((f["value"], f["count"]) for f in facets) == [("value_a2", 1), ("valuea", 1)]
    # the native resource shows one value as a string, several as a list
    native = client.get(f"/api/v1/devices/{phone.id}/custom_attributes", headers=h).get_json()
    assert native["data"]["attributes"] == {"a": ["valuea", "value_a2"], "b": "valueb", "d": "new"}


def test_numerical_custom_attributes_take_the_suffix(client, auth, phone):
    h = auth("write")
    _ok(client.post(f"/api/v1/device/{phone.id}/customattributes", headers=h, json={"attrs": {"floor_#": ["3"]}}), 1)
    assert _attrs(client, auth, phone) == {"floor": ["3"]}
    response = client.post(f"/api/v1/device/{phone.id}/customattributes", headers=h,
                           json={"attrs": {"floor_#": ["third"]}})
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["source"]["pointer"] == "/attrs/floor_#"


@pytest.mark.parametrize("body", [{"attrs": {"a": "x", "b": [1]}}, {"attrs": {"a": []}}, {"attrs": []},
                                  {"attrs": {"a": ["x"]}, "forceOverwrite": "yes"}, {"attributes": {}}])
def test_custom_attributes_bad_bodies_are_422(client, auth, phone, body):
    response = client.patch(f"/api/v1/device/{phone.id}/customattributes", headers=auth("write"), json=body)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["meta"]["request_id"]


def test_remove_custom_attributes_per_device_method_1(client, auth, db_session, phone):
    client.post(f"/api/v1/device/{phone.id}/customattributes", headers=auth("write"),
                json={"attrs": {"ForDocs001": ["1"], "forDocs002": ["2"], "kept": ["3"]}})
    response = client.delete("/api/v1/device/customattributes", headers=auth("write"),
                             json={"ids": [str(phone.id)], "attrKeys": ["ForDocs001", "forDocs002"]})
    _ok(response, 1)
    assert _attrs(client, auth, phone) == {"kept": ["3"]}
    missing = client.delete("/api/v1/device/customattributes", headers=auth("write"),
                            json={"ids": ["73542"], "attrKeys": ["kept"]})
    assert missing.status_code == 422 and _attrs(client, auth, phone) == {"kept": ["3"]}


def test_remove_custom_attributes_per_device_method_2(client, auth, phone):
    client.post(f"/api/v1/device/{phone.id}/customattributes", headers=auth("write"),
                json={"attrs": {"attribute1": ["1"], "kept": ["3"]}})
    response = client.delete(f"/api/v1/device/{phone.udid}/customattributes", headers=auth("write"),
                             json={"attrs": {"attribute1": ["1"]}})
    _ok(response, 1)
    assert _attrs(client, auth, phone) == {"kept": ["3"]}


# --- Get Device Details ------------------------------------------------------------------------------

def test_get_device_details(client, auth, db_session):
    device = make_device(db_session, platform="ipados", model="iPad4,5", model_name="iPad Mini 2nd gen",
                         device_name="iPad", os_version="12.4.4", build_version="16G140",
                         serial_number="DLXMF0URFLMK", is_supervised=False)
    client.post(f"/api/v1/device/{device.id}/customattributes", headers=auth("write"),
                json={"attrs": {"cityid": ["SF"]}})
    for ident in (device.id, device.udid):
        result = _ok(client.get(f"/api/v1/device/{ident}", headers=auth("read")))
        assert {k: result[k] for k in ("id", "guid", "deviceModel", "deviceName", "platformType", "platformVersion",
                                      "osBuildVersion", "registrationState", "manufacturer", "serialNumber",
                                      "supervised", "udid", "prettyModel", "lostModeEnabled")} == {
            "id": device.id, "guid": device.udid, "deviceModel": "iPad4,5", "deviceName": "iPad",
            "platformType": "IOS", "platformVersion": "12.4.4", "osBuildVersion": "16G140",
            "registrationState": "ACTIVE", "manufacturer": "Apple Inc.", "serialNumber": "DLXMF0URFLMK",
            "supervised": False, "udid": device.udid, "prettyModel": "iPad Mini 2nd gen", "lostModeEnabled": False}
        assert result["customAttributes"] == {"attrs": {"cityid": ["SF"]}}
        assert isinstance(result["lastRegistrationTime"], int) and isinstance(result["groups"], list)
    assert client.get("/api/v1/device/92752", headers=auth("read")).status_code == 404


# --- Device actions and their viability checks --------------------------------------------------------

_VIABLE = {"totalCount": 0, "queryTime": 0, "searchResults": [], "offset": 0, "limit": 0}


@pytest.mark.parametrize("path", ["forceCheckin", "wipe", "lock", "retire"])
def test_check_viability(client, auth, phone, path):
    """Check Force Check-in / Wipe / Lock / Retire Viability: viable → no device details."""
    response = client.get(f"/api/v1/device/{path}?checkViability=true&ids={phone.id}", headers=auth("read"))
    assert _ok(response) == _VIABLE


def test_check_update_os_viability(client, auth, db_session, phone):
    """Check Update OS Version Viability reads the inventory (tests/os_updates has every reason): a
    supervised iPhone on 17.5 offered 17.6 is viable for 17.6; one that never answered
    AvailableOSUpdates is listed with the reason."""
    phone.os_version, phone.os_updates_reported_at = "17.5", utcnow()
    db_session.add(AvailableOSUpdate(device_id=phone.id, version="17.6", product_key="iOSUpdate21G80"))
    silent = make_device(db_session, index=1, platform="ios", is_supervised=True, os_version="17.5")
    db_session.commit()
    path = "/api/v1/device/scheduleOSUpdate?checkViability=true"
    assert _ok(client.get(f"{path}&ids={phone.id}&version=17.6", headers=auth("read"))) == _VIABLE
    result = _ok(client.get(f"{path}&ids={phone.id}&ids={silent.id}&version=17.6", headers=auth("read")))
    assert [(r["id"], r["actionExceptionCodes"]) for r in result["searchResults"]] == [
        (silent.id, ["the updates the device is offered are not known yet (no AvailableOSUpdates answer)"])]


def test_check_force_check_in_viability_repeated_ids(client, auth, db_session, phone):
    retired = make_device(db_session, platform="ios", admission_status="rejected")
    response = client.get(f"/api/v1/device/forceCheckin?checkViability=true&ids={phone.id}&ids={retired.id}",
                          headers=auth("read"))
    result = _ok(response)
    assert result["totalCount"] == 1 and result["searchResults"][0]["id"] == retired.id
    assert result["searchResults"][0]["actionExceptionCodes"]


def test_check_disable_lost_mode_viability(client, auth, db_session, phone):
    """The results list only the devices that CANNOT have lost mode disabled."""
    lost = make_device(db_session, platform="ios", is_supervised=True, lost_mode_enabled=True)
    result = _ok(client.get(f"/api/v1/device/disableLostMode?checkViability=true&ids={lost.id},{phone.id}",
                            headers=auth("read")))
    assert [row["id"] for row in result["searchResults"]] == [phone.id]


def test_native_action_path_check_viability(client, auth, phone):
    """The issue's row: ``…/actions/<name>?checkViability=true&ids=`` beside ``…/viability?ids=``."""
    h = auth("read")
    native = client.get(f"/api/v1/actions/lock?checkViability=true&ids={phone.id}", headers=h)
    assert native.status_code == 200
    assert native.get_json() == client.get(f"/api/v1/actions/lock/viability?ids={phone.id}", headers=h).get_json()
    assert client.get(f"/api/v1/actions/lock?ids={phone.id}", headers=h).status_code == 400
    assert client.get(f"/api/v1/actions/lock?checkViability=false&ids={phone.id}", headers=h).status_code == 400


def test_update_operating_system_version(client, auth, db_session, phone):
    response = client.put("/api/v1/device/scheduleOSUpdate", headers=auth("write"),
                          data={"ids": str(phone.id), "version": "15.5"}, content_type=FORM)
    _ok(response, 1)
    assert _queued(db_session, phone, "ScheduleOSUpdate") == 1


def test_restart_supervised_ios_devices(client, auth, db_session, phone):
    _ok(client.put(f"/api/v1/device/restart?ids={phone.id}", headers=auth("write")), 1)
    assert _queued(db_session, phone, "RestartDevice") == 1


def test_force_check_in_a_device_or_devices(client, auth, db_session, phone):
    other = make_device(db_session, platform="ios")
    _ok(client.put("/api/v1/device/forceCheckin", headers=auth("write"),
                   data=f"ids={phone.id}&ids={other.id}", content_type=FORM), 2)
    _ok(client.put(f"/api/v1/device/forceCheckin?ids={phone.id}", headers=auth("write")), 1)
    _ok(client.put(f"/api/v1/device/forceCheckin?guids={phone.udid}", headers=auth("write")), 1)
    assert _queued(db_session, phone, "DeviceInformation") == 3


def test_wipe_device(client, auth, db_session, phone):
    response = client.put("/api/v1/device/wipe", headers=auth("write"), content_type=FORM,
                          data=f"ids={phone.id}&iosDisallowProximitySetup=true&iosPreserveDataPlan=true"
                               "&message=Decommissioning")
    _ok(response, 1)
    assert _queued(db_session, phone, "EraseDevice") == 1


def test_lock_a_device_or_devices(client, auth, db_session, phone):
    _ok(client.put("/api/v1/device/lock", headers=auth("write"), data=f"ids={phone.id}", content_type=FORM), 1)
    _ok(client.put(f"/api/v1/device/lock?ids={phone.id}", headers=auth("write")), 1)
    _ok(client.put(f"/api/v1/device/lock?guids={phone.udid}", headers=auth("write")), 1)
    assert _queued(db_session, phone, "DeviceLock") == 3


def test_unlock_a_device_or_devices(client, auth, db_session):
    phone = make_device(db_session, platform="ios", is_supervised=True, unlock_token_encrypted=b"sealed")
    response = client.put("/api/v1/device/unlock", headers=auth("write"),
                          data={"ids": str(phone.id), "deviceUnlockPin": "123ab400"}, content_type="multipart/form-data")
    _ok(response, 1)
    assert _queued(db_session, phone, "ClearPasscode") == 1
    bad = client.put("/api/v1/device/unlock", headers=auth("write"),
                     data={"ids": str(phone.id), "deviceUnlockPin": "12"}, content_type=FORM)
    assert bad.status_code == 400 and bad.get_json()["errors"][0]["source"]["parameter"] == "deviceUnlockPin"


def test_retire_device(client, auth, db_session, phone):
    _ok(client.put("/api/v1/device/retire", headers=auth("write"), data=f"ids= {phone.id}", content_type=FORM), 1)
    assert _queued(db_session, phone, "RemoveProfile") == 1


def test_enable_lost_mode(client, auth, db_session, phone):
    response = client.put("/api/v1/device/enableLostMode", headers=auth("write"), content_type=FORM, data={
        "ids": str(phone.id), "message": "This device has been lost. Please call the number below.",
        "phoneNumber": "555-555-5555", "changeFootnote": "true", "footnote": "Lost Phone"})
    _ok(response, 1)
    assert _queued(db_session, phone, "EnableLostMode") == 1


def test_disable_lost_mode(client, auth, db_session):
    lost = make_device(db_session, platform="ios", is_supervised=True, lost_mode_enabled=True)
    _ok(client.put("/api/v1/device/disableLostMode", headers=auth("write"), data=f"ids={lost.id}",
                   content_type=FORM), 1)
    assert _queued(db_session, lost, "DisableLostMode") == 1


def test_action_not_applicable_counts_zero(client, auth, db_session):
    byod = make_device(db_session, platform="ios", is_supervised=False)
    _ok(client.put(f"/api/v1/device/restart?ids={byod.id}", headers=auth("write")), 0)


@pytest.mark.parametrize(("method", "path", "status"), [
    ("PUT", "/api/v1/device/enterKioskMode?ids=1", 404),  # Android only
    ("PUT", "/api/v1/device/lock", 400),  # no devices named
    ("PUT", "/api/v1/device/lock?ids=1&bogus=1", 400),
    ("GET", "/api/v1/device/lock?ids=1", 400),  # GET on an action is only the viability check
    ("PUT", "/api/v1/device/wipe?ids=1&iosPreserveDataPlan=maybe", 400),
])
def test_action_failures_are_4xx_json(client, auth, method, path, status):
    response = client.open(path, method=method, headers=auth("read" if method == "GET" else "write"))
    assert response.status_code == status, response.get_json()
    assert response.get_json()["meta"]["request_id"]


# --- Delete Device -----------------------------------------------------------------------------------

def test_delete_device(client, auth, db_session, phone):
    _ok(client.delete(f"/api/v1/device?deviceIds={phone.id}", headers=auth("write")), 1)
    assert db_session.get(Device, phone.id) is None
    assert db_session.scalars(select(CustomAttribute)).all() == []


# --- scopes ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/v1/device/1/customattributes"), ("GET", "/api/v1/device/lock?checkViability=true&ids=1"),
    ("GET", "/api/v1/device/1")])
def test_reads_need_read(client, auth, method, path):
    assert client.open(path, method=method).status_code == 401
    assert client.open(path, method=method, headers=auth("write")).status_code == 403


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/api/v1/device/lock?ids=1"), ("PUT", "/api/v1/device/updateAccount"),
    ("POST", "/api/v1/device/1/customattributes"), ("PATCH", "/api/v1/device/1/customattributes"),
    ("DELETE", "/api/v1/device/1/customattributes"), ("DELETE", "/api/v1/device/customattributes"),
    ("DELETE", "/api/v1/device?deviceIds=1")])
def test_writes_need_write(client, auth, method, path):
    assert client.open(path, method=method).status_code == 401
    assert client.open(path, method=method, headers=auth("read")).status_code == 403


# --- searches: Get Device Details Based on Attribute, registered / checked in within x, by email ------

def test_get_device_details_based_on_attribute(client, auth, db_session, phone):
    other = make_device(db_session, platform="ios")
    client.post(f"/api/v1/device/{phone.id}/customattributes", headers=auth("write"),
                json={"attrs": {"cityId": ["SF"]}})
    client.post(f"/api/v1/device/{other.id}/customattributes", headers=auth("write"),
                json={"attrs": {"cityId": ["NY"]}})
    result = _ok(client.get("/api/v1/device?fq=CFDEVICE%5BcityId%5D=SF&dmPartitionId=23000", headers=auth("read")))
    assert result["totalCount"] == 1 and result["offset"] == 0
    row = result["searchResults"][0]
    assert row["id"] == phone.id and row["customAttributes"] == {"attrs": {"cityId": ["SF"]}}
    by_guid = _ok(client.get(f"/api/v1/device?fq=guid={phone.udid}&dmPartitionId=23000", headers=auth("read")))
    assert [r["id"] for r in by_guid["searchResults"]] == [phone.id]


def test_devices_registered_and_checked_in_within_x(client, auth, db_session):
    recent = make_device(db_session, platform="ios", enrolled_at=utcnow(), last_seen_at=utcnow())
    make_device(db_session, platform="ios", enrolled_at=utcnow() - timedelta(days=3),
                last_seen_at=utcnow() - timedelta(days=3))
    h = auth("read")
    registered = _ok(client.get("/api/v1/device?dmPartitionId=23003&fq=lastRegistrationTime<'0:0:03:06'&rows=5&start=0",
                                headers=h))
    assert [r["id"] for r in registered["searchResults"]] == [recent.id]
    checked_in = _ok(client.get("/api/v1/device?dmPartitionId=23003&fq=lastCheckin<'00:01:00'&rows=5&start=0",
                                headers=h))
    assert [r["id"] for r in checked_in["searchResults"]] == [recent.id]


def test_list_devices_by_email_address(client, auth, db_session, phone):
    user = User(email="stuart@example.com", name="Stuart Cordery")
    db_session.add(user)
    db_session.flush()
    client.put("/api/v1/device/updateAccount", headers=auth("write"),
               data={"accountId": str(user.id), "deviceIds": str(phone.id)}, content_type=FORM)
    result = _ok(client.get("/api/v1/device?q=&dmPartitionId=23505&fq=EMAILADDRESS+EQ+stuart@example.com",
                            headers=auth("read")))
    assert [r["id"] for r in result["searchResults"]] == [phone.id]
    assert result["searchResults"][0]["ownerId"] == user.id


def test_list_devices_by_uid(client, auth, db_session, phone):
    """The document's ``fq=UID+EQ+ <uid>`` (its example has a space after the last ``+``): the owner's uid."""
    user = User(email="stuart@example.com", name="Stuart Cordery", uid="scordery")
    other = User(email="ann@example.com", name="Ann", uid="ann")
    db_session.add_all([user, other])
    db_session.flush()
    client.put("/api/v1/device/updateAccount", headers=auth("write"),
               data={"accountId": str(user.id), "deviceIds": str(phone.id)}, content_type=FORM)
    result = _ok(client.get("/api/v1/device?q=&dmPartitionId=23505&fq=UID+EQ+%20scordery", headers=auth("read")))
    assert result["totalCount"] == 1
    assert [r["id"] for r in result["searchResults"]] == [phone.id]
    assert result["searchResults"][0]["ownerId"] == user.id
    assert _ok(client.get("/api/v1/device?fq=UID+EQ+ann", headers=auth("read")))["totalCount"] == 0
    # the native filter it maps to
    listed = client.get("/api/v1/devices?filter[owner_uid]=scordery", headers=auth("read")).get_json()["data"]
    assert [int(d["id"]) for d in listed] == [phone.id]


@pytest.mark.parametrize("query", ["fq=UID+EQ+", "fq=nonsense", "rows=501", "start=3&rows=5",
                                   "searchAfterValues=1", "fq=lastCheckin<'99'"])
def test_device_search_bad_input_is_400(client, auth, query):
    response = client.get(f"/api/v1/device?{query}", headers=auth("read"))
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["meta"]["request_id"]
