"""ManageEngine MDM's Devices API (seed 001), replayed from the document: its example requests (its own
bodies; its ids replaced by ours, since the document's do not exist here) and the response fields and
status codes it documents. One test per section of the document."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from mdmserver.collaborators import secret_box
from mdmserver.commands.service import command_parameters
from mdmserver.records.commands import Command
from mdmserver.records.devices import (
    Device,
    DeviceCertificate,
    DeviceLocation,
    DeviceSecurityInfo,
    InstalledApplication,
)
from mdmserver.records.groups import DeviceGroup, GroupMember
from tests.factories import make_app, make_device, make_wifi_profile

ME = "/api/v1/mdm"

#: the document's example body of "Perform Action on device", verbatim
PERFORM_BODY = {
    "send_email_to_user": True, "lock_message": "--", "clear_data_for_all_apps": False, "re_enter_time": 3600000,
    "email_sent_to_user": True, "email_sent_to_admin": True, "wipe_but_retain_mdm": True,
    "description": "Belong to Zoho Corp", "wipe_sd_card": True, "audit_message": "--", "ticket_id": "--",
    "unlock_pin": "--", "inclusion": True, "action_name": "scan", "phone_number": "+91 987*****00",
    "wipe_lock_pin": 123456, "passcode": 123456, "retry": True,
    "remarks": "The app is not compatible for this platform", "email_address_list": "--",
}

#: the document's example body of "Update device details", verbatim
UPDATE_BODY = {
    "purchase_type": "Reseller", "warranty_number": "SJSU64728372", "apn_password": None, "asset_tag": "TestDevice",
    "description": "Belong to Zoho Corp", "office": "North Plaza,CA", "warranty_type": "WithService",
    "apn_username": "zylker", "warranty_expiration_date": 1530057600000, "name": "zylker iPhone",
    "purchase_price": 65000, "asset_owner": "Sysadmin", "purchase_order_number": "SR2Ik56779",
    "purchase_date": 1527984000000,
}


def _assert_error(response, status):
    assert response.status_code == status, response.get_json()
    body = response.get_json()
    assert body["errors"] and body["meta"]["request_id"] == response.headers["X-Request-ID"]


def test_get_device_list(client, auth, db_session):
    phone = make_device(db_session, platform="ios", imei="357327071694307")
    make_device(db_session, 2, platform="macos")
    db_session.add(InstalledApplication(device_id=phone.id, identifier="com.example.a", name="A"))
    db_session.commit()
    response = client.get(f"{ME}/devices", headers=auth("read"))
    assert response.status_code == 200
    devices = response.get_json()["devices"]
    assert len(devices) == 2
    first = next(d for d in devices if d["device_id"] == phone.id)
    for key in ("device_id", "os_version", "is_lost_mode_enabled", "is_removed", "product_name", "device_name",
                "platform_type", "platform_type_id", "udid", "serial_number", "model", "user", "imei", "summary"):
        assert key in first, key
    assert first["udid"] == phone.udid and first["imei"] == "357327071694307"
    assert first["summary"] == {"profile_count": 0, "app_count": 1, "doc_count": 0, "group_count": 0}
    assert first["platform_type_id"] == 1 and first["is_removed"] is False


def test_get_device_list_query_parameters(client, auth, db_session):
    make_device(db_session, platform="ios")
    mac = make_device(db_session, 2, platform="macos", device_name="Finance Mac")
    db_session.commit()
    h = auth("read")
    names = lambda url: [d["device_id"] for d in client.get(url, headers=h).get_json()["devices"]]  # noqa: E731
    assert names(f"{ME}/devices?platform=macOS") == [mac.id]
    assert names(f"{ME}/devices?device_type=Laptop") == [mac.id]
    assert names(f"{ME}/devices?platform=Android") == []
    assert names(f"{ME}/devices?search=finance") == [mac.id]
    assert names(f"{ME}/devices?serial_number={mac.serial_number}") == [mac.id]
    page = client.get(f"{ME}/devices?limit=1", headers=h).get_json()
    assert len(page["devices"]) == 1 and page["metadata"]["total_record_count"] == 2 and "next" in page["paging"]
    _assert_error(client.get(f"{ME}/devices?platform=BlackBerry", headers=h), 400)
    _assert_error(client.get(f"{ME}/devices?owned_by=Corporate", headers=h), 400)
    _assert_error(client.get(f"{ME}/devices?limit=0", headers=h), 400)


def test_get_device_details(client, auth, db_session):
    phone = make_device(db_session, platform="ios", battery_level=0.22, capacity_gb=24.81,
                        available_capacity_gb=13.2, iccid="8991400912981718000", imei="357327071694307")
    db_session.add(DeviceSecurityInfo(device_id=phone.id, passcode_present=False, passcode_compliant=False,
                                      passcode_compliant_with_profiles=True, hardware_encryption_caps=3))
    db_session.commit()
    response = client.get(f"{ME}/devices/{phone.id}", headers=auth("read"))
    assert response.status_code == 200
    body = response.get_json()
    assert body["device_id"] == phone.id and body["battery_level"] == 22 and body["model"] == phone.model
    assert body["os"] == {"platform_type": "ios", "build_version": None, "os_version": phone.os_version,
                          "serial_number": phone.serial_number}
    assert body["security"]["passcode_complaint_profiles"] is True and body["security"]["device_rooted"] is False
    assert body["sims"] == [{"iccid": "8991400912981718000", "imei": "357327071694307"}]
    assert round(body["used_device_space"], 2) == 11.61
    assert body["registered_time"] > 0 and body["unregistered_time"] == -1
    # by UDID or serial number too; an unknown device is a 404 with the request id
    assert client.get(f"{ME}/devices/{phone.udid}", headers=auth("read")).status_code == 200
    _assert_error(client.get(f"{ME}/devices/999999", headers=auth("read")), 404)


def test_update_device_details(client, auth, db_session):
    phone = make_device(db_session, platform="ios", is_supervised=True)
    db_session.commit()
    response = client.put(f"{ME}/devices/{phone.id}", json=UPDATE_BODY, headers=auth("write"))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    for key in ("purchase_type", "warranty_number", "asset_tag", "description", "office", "warranty_type",
                "warranty_expiration_date", "purchase_price", "asset_owner", "purchase_order_number", "purchase_date"):
        assert body[key] == UPDATE_BODY[key], key
    assert body["device_name"] == "zylker iPhone" and body["ignored"] == ["apn_username", "apn_password"]
    device = db_session.get(Device, phone.id)
    assert device.purchase_date.isoformat() == "2018-06-03" and device.asset_tag == "TestDevice"
    # a new name also queues the rename (the native PATCH's workflow)
    assert db_session.scalar(select(Command.request_type).where(Command.device_id == phone.id)) == "Settings"
    # "" and -1 revert to the default
    cleared = client.put(f"{ME}/devices/{phone.id}", json={"asset_tag": "", "purchase_date": -1}, headers=auth("write"))
    assert cleared.get_json()["asset_tag"] is None and cleared.get_json()["purchase_date"] == -1
    _assert_error(client.put(f"{ME}/devices/{phone.id}", json={"field1": "value1"}, headers=auth("write")), 422)
    bad = client.put(f"{ME}/devices/{phone.id}", json={"purchase_price": "lots"}, headers=auth("write"))
    _assert_error(bad, 422)
    assert bad.get_json()["errors"][0]["source"]["pointer"] == "/purchase_price"


def test_get_device_summary(client, auth, db_session):
    phone = make_device(db_session, platform="ios")
    group = DeviceGroup(name="Test group", kind="static")
    db_session.add(group)
    db_session.flush()
    db_session.add(GroupMember(group_id=group.id, device_id=phone.id))
    db_session.commit()
    body = client.get(f"{ME}/devices/{phone.id}/summary", headers=auth("read")).get_json()
    assert body["device_id"] == phone.id and body["group_count"] == 1 and body["profile_count"] == 0
    assert body["group"] == [{"group_id": group.id, "group_name": "Test group"}]
    for key in ("agent_version", "device_name", "doc_count", "platform_type", "last_contact_time", "app_count"):
        assert key in body, key


def test_get_device_certificates(client, auth, db_session):
    phone = make_device(db_session, platform="ios")
    db_session.add(DeviceCertificate(device_id=phone.id, common_name="ManageEngineCA", is_identity=False,
                                     subject="CN=ManageEngineCA", issuer="CN=ManageEngineCA", serial_number="5482",
                                     not_after=datetime(2118, 10, 27, tzinfo=UTC)))
    db_session.commit()
    body = client.get(f"{ME}/devices/{phone.id}/certificates", headers=auth("read")).get_json()
    (cert,) = body["certificates"]["unmanagedcertificates"]
    assert body["certificates"]["managedcertificates"] == []
    assert cert["certificatename"] == "ManageEngineCA" and cert["isidentity"] is False
    assert cert["certificatesubjectname"] == "CN=ManageEngineCA" and cert["certificateexpiry"] > 0


def test_get_filevault_details(client, auth, db_session):
    mac = make_device(db_session, platform="macos")
    db_session.add(DeviceSecurityInfo(device_id=mac.id, fde_enabled=False, fde_has_personal_recovery_key=True,
                                      fde_has_institutional_recovery_key=True))
    db_session.commit()
    body = client.get(f"{ME}/devices/{mac.id}/filevault", headers=auth("read")).get_json()
    assert body == {"filevault": {"is_encryption_enabled": False, "is_personal_recovery_key": True,
                                  "is_institution_recovery_key": True, "resource_id": mac.id}}
    phone = make_device(db_session, platform="ios")
    db_session.commit()
    _assert_error(client.get(f"{ME}/devices/{phone.id}/filevault", headers=auth("read")), 404)


def test_get_firmware_details(client, auth, db_session):
    mac = make_device(db_session, platform="macos")
    # an Intel Mac's SecurityInfo as Apple documents it: FirmwarePasswordStatus
    db_session.add(DeviceSecurityInfo(device_id=mac.id, details={"FirmwarePasswordStatus": {
        "PasswordExists": False, "ChangePending": False, "AllowOroms": False, "Mode": "command"}}))
    db_session.commit()
    response = client.get(f"{ME}/devices/{mac.id}/firmware", headers=auth("read"))
    assert response.status_code == 200
    # the document's example answer
    assert response.get_json() == {"is_firmware_change_pending": False, "is_roms_allowed": False,
                                   "is_firmware_password_exists": False, "firmware_mode": 1,
                                   "managed_password_id": -1}
    phone = make_device(db_session, 2, platform="ios")
    db_session.add(DeviceSecurityInfo(device_id=phone.id, details={"PasscodePresent": True}))
    db_session.commit()
    _assert_error(client.get(f"{ME}/devices/{phone.id}/firmware", headers=auth("read")), 404)
    _assert_error(client.get(f"{ME}/devices/999999/firmware", headers=auth("read")), 404)


def test_get_firmware_password(client, auth, db_session):
    mac = make_device(db_session, platform="macos")
    db_session.commit()
    url = f"{ME}/devices/{mac.id}/firmware/password"
    _assert_error(client.get(url, headers=auth("secrets")), 404)  # none set through this server yet
    response = client.post(f"/api/v1/devices/{mac.id}/commands", headers=auth("write"), json={
        "request_type": "SetFirmwarePassword", "parameters": {"NewPassword": "SampleFirmwarePassword@123"}})
    assert response.status_code in (201, 202), response.get_json()
    command = db_session.scalar(select(Command).where(Command.device_id == mac.id,
                                                      Command.request_type == "SetFirmwarePassword"))
    _assert_error(client.get(url, headers=auth("secrets")), 404)  # not acknowledged yet
    command.status = "acknowledged"
    db_session.commit()
    _assert_error(client.get(url, headers=auth("read")), 403)  # a secret: scope secrets
    response = client.get(url, headers=auth("secrets"))
    assert response.status_code == 200
    # the document's example answer (its resource_id is the device's id)
    assert response.get_json() == {"firmware_password": "SampleFirmwarePassword@123", "resource_id": mac.id}


def test_get_device_location(client, auth, db_session):
    phone = make_device(db_session, platform="ios")
    db_session.add(DeviceLocation(device_id=phone.id, latitude=12.8282, longitude=80.0512,
                                  timestamp=datetime(2018, 4, 10, tzinfo=UTC)))
    db_session.commit()
    (location,) = client.get(f"{ME}/devices/{phone.id}/locations", headers=auth("read")).get_json()["locations"]
    assert location["latitude"] == 12.8282 and location["longitude"] == 80.0512
    assert location["located_time"] == 1523318400000 and location["added_time"] > 0


def test_associate_get_and_disassociate_profiles(client, auth, db_session):
    """Sections "Associate profiles to devices", "Get device profiles", "Get a details of profiles on
    device" and "Disassociate Profiles To Device"."""
    phone = make_device(db_session, platform="ios")
    profile = make_wifi_profile(db_session)
    db_session.commit()
    response = client.post(f"{ME}/devices/{phone.id}/profiles", json={"profile_ids": [profile.id]},
                           headers=auth("write"))
    assert response.status_code == 204 and response.data == b""
    (row,) = client.get(f"{ME}/devices/{phone.id}/profiles", headers=auth("read")).get_json()["profiles"]
    assert row["profile_id"] == profile.id and row["profile_name"] == "Wi-Fi" and row["status"] == "SCHEDULED"
    detail = client.get(f"{ME}/devices/{phone.id}/profiles/{profile.id}", headers=auth("read")).get_json()
    assert detail["profile_id"] == profile.id and detail["latest_version"] == 1
    response = client.delete(f"{ME}/devices/{phone.id}/profiles", json={"profile_ids": [profile.id]},
                             headers=auth("write"))
    assert response.status_code == 204
    _assert_error(client.post(f"{ME}/devices/{phone.id}/profiles", json={"profile_ids": [999999]},
                              headers=auth("write")), 422)


def test_get_device_app_list(client, auth, db_session):
    """Section "Get device app list": the device's own inventory under ``installed_apps``."""
    phone = make_device(db_session, platform="ios")
    app = InstalledApplication(device_id=phone.id, identifier="com.example.redball", name="Red Ball 4",
                               short_version="0.1", version="187945513")
    db_session.add(app)
    db_session.commit()
    body = client.get(f"{ME}/devices/{phone.id}/apps", headers=auth("read")).get_json()
    (listed,) = body["installed_apps"]
    assert listed["app_id"] == app.id and listed["app_name"] == "Red Ball 4" and listed["app_version"] == "0.1"
    assert listed["identifier"] == "com.example.redball" and body["apps"] == []
    # the details are for apps the server distributes, not for what the device merely reports
    _assert_error(client.get(f"{ME}/devices/{phone.id}/apps/{app.id}", headers=auth("read")), 404)


def _queued(db_session, device_id: int, request_type: str) -> list[dict]:
    rows = db_session.scalars(select(Command).where(Command.device_id == device_id,
                                                    Command.request_type == request_type)).all()
    return [command_parameters(row, secret_box()) for row in rows]


def test_associate_dissociate_and_refresh_apps(client, auth, db_session):
    """Sections "Associate apps to device", "Get a details of apps on the device", "Refresh App Status
    For Device" and "Dissociate apps from devices", with the document's own bodies."""
    phone = make_device(db_session, platform="ios")
    notes = make_app(db_session, "com.example.notes", version="2.1")
    db_session.commit()
    body = {"invite_user": True, "do_not_uninstall": True, "id": phone.id,
            "app_details": [{"app_id": notes.id, "release_label_id": 90086789628394940}],
            "notify_user_via_email": True, "silent_install": True}
    response = client.post(f"{ME}/devices/{phone.id}/apps", json=body, headers=auth("write"))
    assert response.status_code == 204 and response.data == b""
    (install,) = _queued(db_session, phone.id, "InstallApplication")
    assert install["ManifestURL"].endswith(f"/apps/{notes.download_token}/manifest.plist")

    listing = client.get(f"{ME}/devices/{phone.id}/apps", headers=auth("read")).get_json()
    (distributed,) = listing["apps"]
    assert distributed["app_id"] == notes.id and distributed["identifier"] == "com.example.notes"
    assert distributed["app_version"] == "2.1" and distributed["app_name"] == notes.name
    detail = client.get(f"{ME}/devices/{phone.id}/apps/{notes.id}", headers=auth("read")).get_json()
    assert detail["status"] == "SCHEDULED" and detail["app_id"] == notes.id and detail["associated_by"]

    response = client.post(f"{ME}/devices/{phone.id}/apps/refreshstatus", json={"app_ids": [notes.id]},
                           headers=auth("write"))
    assert response.status_code == 204
    (asked,) = _queued(db_session, phone.id, "ManagedApplicationList")
    assert asked == {"Identifiers": ["com.example.notes"]}

    response = client.delete(f"{ME}/devices/{phone.id}/apps", json={"app_ids": [notes.id]}, headers=auth("write"))
    assert response.status_code == 204
    (removal,) = _queued(db_session, phone.id, "RemoveApplication")
    assert removal == {"Identifier": "com.example.notes"}

    # not assigned any more, unknown ids, bodies of the wrong shape
    _assert_error(client.delete(f"{ME}/devices/{phone.id}/apps", json={"app_ids": [notes.id]},
                                headers=auth("write")), 404)
    _assert_error(client.post(f"{ME}/devices/{phone.id}/apps", json={"app_details": [{"app_id": 999999}]},
                              headers=auth("write")), 404)
    _assert_error(client.post(f"{ME}/devices/{phone.id}/apps", json={"app_details": []}, headers=auth("write")), 422)
    _assert_error(client.post(f"{ME}/devices/{phone.id}/apps/refreshstatus", json={"apps": [1]},
                              headers=auth("write")), 422)
    assert client.post(f"{ME}/devices/{phone.id}/apps", json=body, headers=auth("read")).status_code == 403


def test_get_device_applicable_actions(client, auth, db_session):
    phone = make_device(db_session, platform="ios", is_supervised=True)
    db_session.commit()
    body = client.get(f"{ME}/devices/{phone.id}/actions", headers=auth("read")).get_json()
    actions = {a["name"]: a for a in body["actions"]}
    assert body["knox_actions"] == []
    assert actions["scan"]["is_enabled"] is True and actions["scan"]["action_info"] == "--"
    assert actions["disable_lost_mode"]["is_enabled"] is False
    assert actions["disable_lost_mode"]["action_info"] == "the device is not in lost mode"
    assert set(actions["lock"]) == {"name", "localized_name", "is_enabled", "action_info", "localized_action_info"}


def test_perform_action_on_device(client, auth, db_session):
    phone = make_device(db_session, platform="ios", is_supervised=True)
    mac = make_device(db_session, 2, platform="macos", is_supervised=True)
    db_session.commit()
    h = auth("write")
    # the document's own body on its own example path (scan)
    response = client.post(f"{ME}/devices/{phone.id}/actions/scan", json=PERFORM_BODY, headers=h)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["action_name"] == "scan" and len(body["command_uuids"]) == 5
    assert "lock_message" in body["ignored"] and "wipe_lock_pin" in body["ignored"] and "passcode" in body["ignored"]
    # lock with the document's argument names
    response = client.post(f"{ME}/devices/{phone.id}/actions/lock", headers=h,
                           json={"lock_message": "Call IT", "phone_number": "+91 98700000"})
    assert response.status_code == 202, response.get_json()
    command = db_session.scalar(select(Command).where(Command.uuid == response.get_json()["command_uuids"][0]))
    assert command_parameters(command, secret_box()) == {"Message": "Call IT", "PhoneNumber": "+91 98700000"}
    # a Mac locked with the document's body (unlock_pin "--": none) gets a generated 6-digit PIN, once
    response = client.post(f"{ME}/devices/{mac.id}/actions/lock", json={**PERFORM_BODY, "action_name": "lock"},
                           headers=h)
    assert response.status_code == 202, response.get_json()
    pin = response.get_json()["pin"]
    assert len(pin) == 6 and pin.isdigit()
    command = db_session.scalar(select(Command).where(Command.uuid == response.get_json()["command_uuids"][0]))
    assert command_parameters(command, secret_box())["PIN"] == pin
    # the PIN is read back only with scope secrets
    hidden = client.get(f"/api/v1/commands/{command.uuid}", headers=auth("read")).get_json()
    assert pin not in str(hidden)
    shown = client.get(f"/api/v1/commands/{command.uuid}", headers=auth("read", "secrets")).get_json()
    assert pin in str(shown)
    # unlock_pin given: sent, not echoed
    response = client.post(f"{ME}/devices/{mac.id}/actions/lock", json={"unlock_pin": 123456}, headers=h)
    assert response.status_code == 202 and "pin" not in response.get_json()
    # wipe_lock_pin → the EraseDevice PIN of a Mac
    response = client.post(f"{ME}/devices/{mac.id}/actions/complete_wipe", json={"wipe_lock_pin": 654321}, headers=h)
    command = db_session.scalar(select(Command).where(Command.uuid == response.get_json()["command_uuids"][0]))
    assert command_parameters(command, secret_box()) == {"PIN": "654321"}


def test_perform_action_on_device_bad_input(client, auth, db_session):
    phone = make_device(db_session, platform="ios", is_supervised=True)
    db_session.commit()
    h = auth("write")
    before = db_session.scalar(select(func.count()).select_from(Command))
    url = f"{ME}/devices/{phone.id}/actions"
    _assert_error(client.post(f"{url}/scan", json={"field1": "value1", "field2": "value2"}, headers=h), 422)
    _assert_error(client.post(f"{url}/lock", json={"action_name": "scan"}, headers=h), 422)
    _assert_error(client.post(f"{url}/lock", json={"lock_message": "x", "parameters": {}}, headers=h), 422)
    _assert_error(client.post(f"{url}/lock", json={"lock_message": "a", "message": "b"}, headers=h), 422)
    bad_pin = client.post(f"{url}/lock", json={"unlock_pin": "12"}, headers=h)
    _assert_error(bad_pin, 422)
    assert bad_pin.get_json()["errors"][0]["source"]["pointer"] == "/unlock_pin"
    _assert_error(client.post(f"{url}/teleport", headers=h), 404)
    _assert_error(client.post(f"{url}/clear_passcode", headers=h), 409)
    _assert_error(client.post(f"{url}/lock", data="{", headers={**h, "Content-Type": "application/json"}), 400)
    assert db_session.scalar(select(func.count()).select_from(Command)) == before


def test_native_routes_take_the_flat_body_too(client, auth, db_session):
    """The gap of issue 11's table: the native actions routes accept the document's field names."""
    phone = make_device(db_session, platform="ios", is_supervised=True)
    db_session.commit()
    h = auth("write")
    response = client.post(f"/api/v1/devices/{phone.id}/actions/lock", json={"lock_message": "Call IT"}, headers=h)
    assert response.status_code == 202, response.get_json()
    response = client.post("/api/v1/actions/DeviceLock", headers=h,
                           json={"devices": [phone.id], "command_name": "DeviceLock", "phone_number": "+1 555"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["success_count"] == 1
    response = client.post("/api/v1/actions/lock", headers=h, json={"devices": [phone.id], "colour": "red"})
    _assert_error(response, 422)
    assert response.get_json()["errors"][0]["source"]["pointer"] == "/colour"


def test_get_scan_status(client, auth, db_session):
    phone = make_device(db_session, platform="ios")
    db_session.commit()
    _assert_error(client.get(f"{ME}/devices/{phone.id}/scan", headers=auth("read")), 404)
    client.post(f"{ME}/devices/{phone.id}/actions/scan", headers=auth("write"))
    body = client.get(f"{ME}/devices/{phone.id}/scan", headers=auth("read")).get_json()
    assert body == {"status_code": 1, "status_description": "Command Initiated"}


def test_execute_command_for_bulk_resources(client, auth, db_session):
    phone = make_device(db_session, platform="ios")
    other = make_device(db_session, 1, platform="ipados")
    retired = make_device(db_session, 3, platform="ios", admission_status="rejected")
    group = DeviceGroup(name="bulk", kind="static")
    db_session.add(group)
    db_session.flush()
    db_session.add(GroupMember(group_id=group.id, device_id=other.id))
    db_session.commit()
    # the document's body: devices as numbers, groups as strings, command_name AssetScan
    body = {"devices": [phone.id, retired.id], "command_name": "AssetScan", "groups": [str(group.id)]}
    response = client.post(f"{ME}/actions/AssetScan", json=body, headers=auth("write"))
    assert response.status_code == 200, response.get_json()
    result = response.get_json()
    assert result["total_count"] == 3 and result["success_count"] == 2 and result["not_applicable_count"] == 1
    assert {e["device_id"] for e in result["success_list"]} == {phone.id, other.id}
    assert all(e["status"] == "SCHEDULED" and e["remarks"] for e in result["success_list"])
    (na,) = result["na_list"]
    assert na["device_id"] == retired.id and na["remarks"]
    _assert_error(client.post(f"{ME}/actions/AssetScan", json={**body, "command_name": "DeviceLock"},
                              headers=auth("write")), 422)
    _assert_error(client.post(f"{ME}/actions/AssetScan", json={"field1": "value1"}, headers=auth("write")), 422)


def test_get_command_history_for_device(client, auth, db_session):
    phone = make_device(db_session, platform="ios")
    db_session.commit()
    client.post(f"{ME}/devices/{phone.id}/actions/scan", headers=auth("write"))
    body = client.get(f"{ME}/devices/{phone.id}/commandhistory?limit=2", headers=auth("read")).get_json()
    assert body["metadata"] == {"total_record_count": 5} and len(body["commands"]) == 2
    first = body["commands"][0]
    for key in ("command_status", "managed_status", "command_id", "command_name", "added_time", "device_id",
                "added_by_name", "command_history_id", "command_life", "remarks", "remarks_args"):
        assert key in first, key
    assert first["command_life"][0]["status_description"] == "Command Initiated"
    following = client.get(body["paging"]["next"], headers=auth("read")).get_json()
    assert len(following["commands"]) == 2 and "previous" in following["paging"]
    _assert_error(client.get(f"{ME}/devices/{phone.id}/commandhistory?skip-token=nope", headers=auth("read")), 400)


def test_get_last_initiated_command_status_for_device(client, auth, db_session):
    phone = make_device(db_session, platform="ios")
    db_session.commit()
    _assert_error(client.get(f"{ME}/devices/{phone.id}/actions/recent_command", headers=auth("read")), 404)
    client.post(f"{ME}/devices/{phone.id}/actions/lock", headers=auth("write"))
    body = client.get(f"{ME}/devices/{phone.id}/actions/recent_command", headers=auth("read")).get_json()
    assert body == {"status_code": 1, "status_description": "Command Initiated", "command_name": "DeviceLock"}


def test_remove_action(client, auth, db_session):
    phone = make_device(db_session, platform="ios")
    db_session.commit()
    client.post(f"{ME}/devices/{phone.id}/actions/scan", headers=auth("write"))
    response = client.delete(f"{ME}/devices/{phone.id}/actions/scan", headers=auth("write"))
    assert response.status_code == 204
    statuses = set(db_session.scalars(select(Command.status).where(Command.device_id == phone.id)))
    assert statuses == {"cancelled"}
    _assert_error(client.delete(f"{ME}/devices/{phone.id}/actions/scan", headers=auth("write")), 404)
