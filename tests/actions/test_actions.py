"""Per-device actions with applicability, bulk actions with ManageEngine's result shape, viability."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, func, select

from mdmserver.audit.models import AuditEvent
from mdmserver.collaborators import secret_box
from mdmserver.commands.service import command_parameters
from mdmserver.organization.service import get_organization
from mdmserver.records.commands import Command
from mdmserver.records.devices import Device
from mdmserver.records.groups import DeviceGroup, GroupMember
from mdmserver.records.retirement import DeviceRetirement
from mdmserver.selection.resolve import MAX_NAMED_DEVICES
from tests.factories import make_device, seed_devices

JSONAPI = "application/vnd.api+json"


def _actions(client, h, device):
    response = client.get(f"/api/v1/devices/{device.id}/actions", headers=h)
    assert response.status_code == 200
    return {a["id"]: a["attributes"] for a in response.get_json()["data"]}


def test_applicability_per_device(client, auth, db_session):
    h = auth("read")
    phone = make_device(db_session, platform="ios", is_supervised=True)
    byod = make_device(db_session, platform="ios", is_supervised=False)
    mac = make_device(db_session, platform="macos", is_supervised=True)
    lost = make_device(db_session, platform="ipados", is_supervised=True, lost_mode_enabled=True,
                       unlock_token_encrypted=b"sealed")
    gone = make_device(db_session, platform="ios", enrolled=False, unenrolled_at=phone.created_at)
    rejected = make_device(db_session, platform="ios", admission_status="rejected")
    a = _actions(client, h, phone)
    assert len(a) == 16 and a["scan"]["is_enabled"] and a["lock"]["is_enabled"] and a["rename"]["is_enabled"]
    assert a["clear_passcode"] == {**a["clear_passcode"], "is_enabled": False,
                                   "reason": "no UnlockToken is stored for the device (needed to clear its passcode)"}
    assert a["fetch_location"]["reason"] == "the device is not in lost mode"
    assert a["enable_lost_mode"]["is_enabled"] and not a["disable_lost_mode"]["is_enabled"]
    assert a["lock"]["parameters"] == ["message", "phone_number", "pin"]
    b = _actions(client, h, byod)
    assert b["enable_lost_mode"]["reason"] == "enable_lost_mode needs a supervised device on ios"
    assert b["rename"]["reason"] == "rename needs a supervised device on ios"
    assert b["lock"]["is_enabled"] and b["clear_restrictions_password"]["is_enabled"] is False
    m = _actions(client, h, mac)
    assert m["enable_lost_mode"]["reason"] == "enable_lost_mode is not available on macos"
    assert m["lock"]["is_enabled"] and m["lock"]["reason"] is None  # a PIN is generated when none is given
    assert m["shutdown"]["is_enabled"] and not m["clear_passcode"]["is_enabled"]
    lo = _actions(client, h, lost)
    assert lo["clear_passcode"]["is_enabled"] and lo["fetch_location"]["is_enabled"]
    assert lo["enable_lost_mode"]["reason"] == "the device is already in lost mode"
    assert lo["play_lost_mode_sound"]["is_enabled"] and lo["disable_lost_mode"]["is_enabled"]
    assert {x["reason"] for x in _actions(client, h, gone).values()} == {
        "the device is no longer enrolled (it checked out)"}
    assert {x["reason"] for x in _actions(client, h, rejected).values()} == {
        "the device's admission status is rejected"}


def test_perform_action(client, auth, db_session):
    h = auth("read", "write")
    phone = make_device(db_session, platform="ios", is_supervised=True)
    mac = make_device(db_session, platform="macos", is_supervised=True)
    post = lambda d, name, body=None: client.post(  # noqa: E731
        f"/api/v1/devices/{d}/actions/{name}", json=body, headers=h) if body is not None else client.post(
        f"/api/v1/devices/{d}/actions/{name}", headers=h)
    response = post(phone.udid, "lock", {"parameters": {"message": "Call IT", "phone_number": "+33 1 23"}})
    assert response.status_code == 202, response.get_json()
    uuid = response.get_json()["data"][0]["id"]
    command = db_session.scalar(select(Command).where(Command.uuid == uuid))
    assert command.request_type == "DeviceLock" and command.device_id == phone.id
    assert command_parameters(command, secret_box()) == {"Message": "Call IT", "PhoneNumber": "+33 1 23"}
    assert command.enqueued_by.startswith("test-")
    # a Mac gets the PIN; without one, a random 6-digit PIN is generated, sent and returned once
    generated = post(mac.id, "lock")
    assert generated.status_code == 202, generated.get_json()
    pin = generated.get_json()["meta"]["pin"]
    assert len(pin) == 6 and pin.isdigit()
    command = db_session.scalar(select(Command).where(Command.uuid == generated.get_json()["data"][0]["id"]))
    assert command_parameters(command, secret_box()) == {"PIN": pin}
    assert pin.encode() not in command.parameters  # stored sealed
    assert "pin" not in post(phone.id, "lock").get_json()["meta"]  # only Macs take (and get) a PIN
    response = post(mac.id, "lock", {"parameters": {"pin": "123456"}})
    assert "pin" not in response.get_json()["meta"]
    command = db_session.scalar(select(Command).where(Command.uuid == response.get_json()["data"][0]["id"]))
    assert command_parameters(command, secret_box()) == {"PIN": "123456"}
    scan = post(phone.id, "scan")
    assert scan.status_code == 202 and len(scan.get_json()["data"]) == 5
    rename = post(phone.id, "rename", {"parameters": {"name": "Kiosk 1"}})
    assert rename.status_code == 202 and db_session.get(Device, phone.id).device_name == "Kiosk 1"
    wipe = post(phone.id, "complete_wipe", {"parameters": {"preserve_data_plan": True}})
    assert wipe.status_code == 202
    update = post(phone.id, "update_os", {"parameters": {"install_action": "InstallASAP"}})
    command = db_session.scalar(select(Command).where(Command.uuid == update.get_json()["data"][0]["id"]))
    assert command_parameters(command, secret_box()) == {"Updates": [{"InstallAction": "InstallASAP"}]}
    event = db_session.scalar(select(AuditEvent).where(AuditEvent.action == "device:command:lock"))
    assert event is not None and event.resource_id == str(phone.id)
    before = db_session.scalar(select(func.count()).select_from(Command))
    # bad input: nothing queued
    assert post(phone.id, "clear_passcode").status_code == 409
    assert post(phone.id, "teleport").status_code == 404
    assert post("no-such-device", "lock").status_code == 404
    bad = post(phone.id, "lock", {"parameters": {"pin": "12", "colour": "red"}})
    assert bad.status_code == 422
    assert {e["source"]["pointer"] for e in bad.get_json()["errors"]} == {"/parameters/pin", "/parameters/colour"}
    assert post(phone.id, "enable_lost_mode", {"parameters": {}}).status_code == 422
    assert post(phone.id, "restart", {"parameters": {"now": True}}).status_code == 422
    assert post(phone.id, "restart", {"other": 1}).status_code == 422
    assert post(phone.id, "rename", {"parameters": {"name": ""}}).status_code == 422
    assert client.post(f"/api/v1/devices/{phone.id}/actions/lock", data="{", headers={
        **h, "Content-Type": "application/json"}).status_code == 400
    assert db_session.scalar(select(func.count()).select_from(Command)) == before


def test_retire_marks_the_device_once_the_removal_is_acknowledged(client, auth, db_session):
    h = auth("read", "write")
    phone = make_device(db_session, platform="ios")
    response = client.post(f"/api/v1/devices/{phone.id}/actions/retire", headers=h)
    assert response.status_code == 202
    command = db_session.scalar(select(Command).where(Command.uuid == response.get_json()["data"][0]["id"]))
    assert command.request_type == "RemoveProfile"
    # no ProfileList reported: the identifier this server gives enrollment profiles
    assert command_parameters(command, secret_box()) == {"Identifier": get_organization(db_session).payload_prefix + ".enroll"}
    retirement = db_session.get(DeviceRetirement, phone.id)
    assert retirement.command_uuid == command.uuid
    # queued: not retired yet, still manageable; a second retirement is refused while one is pending
    actions = _actions(client, h, phone)
    assert actions["scan"]["is_enabled"] and actions["lock"]["is_enabled"]
    assert actions["retire"]["reason"].startswith("a retirement is already pending")
    assert client.get("/api/v1/devices?filter[retired]=true", headers=h).get_json()["data"] == []
    # acknowledged: retired
    command.status = "acknowledged"
    db_session.flush()
    assert _actions(client, h, phone)["scan"]["reason"].startswith("the device is retired")
    listed = client.get("/api/v1/devices?filter[retired]=true", headers=h).get_json()["data"]
    assert [int(d["id"]) for d in listed] == [phone.id]
    # enrolling again afterwards makes it a managed device again
    db_session.get(Device, phone.id).enrolled_at = retirement.requested_at + timedelta(minutes=5)
    db_session.flush()
    assert _actions(client, h, phone)["scan"]["is_enabled"]
    assert client.get("/api/v1/devices?filter[retired]=true", headers=h).get_json()["data"] == []


def _bulk(client, h, name, body):
    response = client.post(f"/api/v1/actions/{name}", json=body, headers=h)
    return response


def test_bulk_action_result_shape(client, auth, db_session):
    h = auth("read", "write")
    phones = [make_device(db_session, platform="ios", is_supervised=True) for _ in range(3)]
    mac = make_device(db_session, platform="macos", is_supervised=True)
    byod = make_device(db_session, platform="ios", is_supervised=False)
    group = DeviceGroup(name="Fleet", kind="static")
    db_session.add(group)
    db_session.flush()
    db_session.add_all([GroupMember(group_id=group.id, device_id=d.id) for d in (phones[2], mac)])
    db_session.flush()
    body = {"devices": [phones[0].id, phones[0].udid, phones[1].serial_number, byod.id, "NOPE"],
            "groups": [group.id], "parameters": {"message": "Found? Call IT"}}
    response = _bulk(client, h, "enable_lost_mode", body)
    assert response.status_code == 200 and response.mimetype == "application/json"
    result = response.get_json()
    assert result["total_count"] == 6 and result["success_count"] == 3 and result["not_applicable_count"] == 3
    assert [int(s["device_id"]) for s in result["success_list"]] == [p.id for p in phones]
    assert all(len(s["command_uuids"]) == 1 for s in result["success_list"])
    remarks = {n["device_id"] or n["device"]: n["remarks"] for n in result["na_list"]}
    assert remarks == {str(mac.id): "enable_lost_mode is not available on macos",
                       str(byod.id): "enable_lost_mode needs a supervised device on ios",
                       "NOPE": "no such device"}
    queued = db_session.scalars(select(Command).where(Command.request_type == "EnableLostMode")).all()
    assert sorted(c.device_id for c in queued) == [p.id for p in phones]
    assert all(command_parameters(c, secret_box()) == {"Message": "Found? Call IT"} for c in queued)
    assert all(len(c.uuid) == 36 and c.uuid == c.uuid.upper() and c.status == "queued" for c in queued)
    # by filter, and everything
    by_filter = _bulk(client, h, "scan", {"filter": {"platform": "macos"}}).get_json()
    assert by_filter["success_count"] == 1 and len(by_filter["success_list"][0]["command_uuids"]) == 5
    everything = _bulk(client, h, "restart", {"all_devices": True}).get_json()
    assert everything["success_count"] == 4 and everything["not_applicable_count"] == 1


def test_bulk_bad_input_changes_nothing(client, auth, db_session):
    h = auth("read", "write")
    device = make_device(db_session, platform="ios")
    for name, body, status in (
        ("teleport", {"devices": [device.id]}, 404),
        ("lock", {}, 422),
        ("lock", {"devices": "all"}, 422),
        ("lock", {"devices": [device.id, None]}, 422),
        ("lock", {"devices": [device.id], "groups": [424242]}, 422),
        ("lock", {"devices": [device.id], "groups": ["x"]}, 422),
        ("lock", {"filter": {"colour": "red"}}, 422),
        ("lock", {"filter": {}}, 422),
        ("lock", {"all_devices": "yes"}, 422),
        ("lock", {"devices": [device.id], "parameters": {"pin": "1"}}, 422),
        ("lock", {"devices": [device.id], "extra": 1}, 422),
        ("lock", [device.id], 422),
    ):
        response = _bulk(client, h, name, body)
        assert response.status_code == status, (name, body, response.get_json())
        assert response.mimetype == JSONAPI
    assert client.post("/api/v1/actions/lock", data="x", headers={**h, "Content-Type": "text/plain"}).status_code == 415
    assert db_session.scalar(select(func.count()).select_from(Command)) == 0


def _statements(db_session, run):
    seen = []

    def listener(conn, clauseelement, multiparams, params, execution_options):
        text = str(clauseelement)
        if not text.startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")):
            seen.append(text)

    bind = db_session.get_bind()
    event.listen(bind, "before_execute", listener)
    try:
        run()
    finally:
        event.remove(bind, "before_execute", listener)
    return len(seen)


def test_bulk_statement_count_does_not_grow_with_devices(client, auth, db_session):
    """The same bulk request over 20 or 400 devices runs the same number of SQL statements."""
    h = auth("read", "write")
    client.get("/api/v1/actions", headers=h)  # the token's first use records it; measure afterwards
    sets = {"small": seed_devices(db_session, 20), "large": seed_devices(db_session, 400, start=1000,
                                                                          office="HQ")}
    groups = {}
    for label, ids in sets.items():
        group = DeviceGroup(name=label, kind="static")
        db_session.add(group)
        db_session.flush()
        db_session.add_all([GroupMember(group_id=group.id, device_id=i) for i in ids])
        groups[label] = group.id
    db_session.flush()
    # the first use of a parameter body stores it (one INSERT more, once per distinct body): warm up
    # (rename: the whole small set, since its first device may not be renameable; retire: one device,
    # since a device whose retirement is pending is not retired again)
    for action in ("scan", "retire", "rename"):
        warm = _bulk(client, h, action, {"devices": sets["small"] if action == "rename" else sets["small"][:1],
                                         **({"parameters": {"name": "x"}} if action == "rename" else {})})
        assert warm.status_code == 200, warm.get_json()
    counts = {}
    for size in ("small", "large"):
        for shape, body in (("ids", {"devices": sets[size]}), ("group", {"groups": [groups[size]]}),
                            ("filter", {"filter": {"office": "HQ"}} if size == "large"
                             else {"filter": {"id": ",".join(map(str, sets[size]))}})):
            for action in ("scan", "retire", "rename"):
                result = {}
                params = {"parameters": {"name": "x"}} if action == "rename" else {}

                def run(body=body, action=action, result=result, params=params):
                    result.update(_bulk(client, h, action, {**body, **params}).get_json())

                counts[(size, shape, action)] = _statements(db_session, run)
                assert result["total_count"] == len(sets[size]), result
    for shape in ("ids", "group", "filter"):
        for action in ("scan", "retire", "rename"):
            print(shape, action, counts[("small", shape, action)], counts[("large", shape, action)])
    print("bulk action statements:", counts)
    # 10 before command parameters were stored once per body; + 1 SELECT of the stored bodies; a group
    # target adds the group lookups (this was hidden while retire retired every device at once, so the
    # later group and filter runs queued nothing)
    assert max(counts.values()) <= 12, counts


def test_viability(client, auth, db_session):
    h = auth("read")
    phone = make_device(db_session, platform="ios", is_supervised=True)
    mac = make_device(db_session, platform="macos")
    response = client.get(f"/api/v1/actions/enable_lost_mode/viability?ids={phone.id},{mac.udid},NOPE", headers=h)
    assert response.status_code == 200
    body = response.get_json()
    assert body["total_count"] == 3 and body["eligible_count"] == 1 and body["not_eligible_count"] == 2
    assert [(n["device_id"], n["remarks"]) for n in body["not_eligible"]] == [
        (str(mac.id), "enable_lost_mode is not available on macos"), (None, "no such device")]
    assert db_session.scalar(select(func.count()).select_from(Command)) == 0
    for qs, status in (("", 400), ("?ids=", 400), ("?groups=424242", 400), ("?colour=1", 400)):
        assert client.get(f"/api/v1/actions/lock/viability{qs}", headers=h).status_code == status, qs
    assert client.get("/api/v1/actions/teleport/viability?ids=1", headers=h).status_code == 404
    assert len(client.get("/api/v1/actions", headers=h).get_json()["data"]) == 16


def test_viability_names_the_query_parameter_at_fault(client, auth, db_session):
    """The fault is told by which list it is in, never by the words of its message: a smart group whose
    stored filter cannot be evaluated is a fault of ``groups`` although its message says "filter"."""
    broken = DeviceGroup(name="Broken", kind="smart", filter={"platform": "amiga"})
    db_session.add(broken)
    db_session.flush()
    h = auth("read")
    cases = (
        (f"?groups={broken.id}", "groups", "filter 'platform'"),
        ("?groups=424242", "groups", "no device group 424242"),
        ("?groups=abc", "groups", "expected an id"),
        ("?ids=" + ",".join(str(i) for i in range(MAX_NAMED_DEVICES + 1)), "ids", str(MAX_NAMED_DEVICES)),
    )
    for qs, parameter, words in cases:
        response = client.get(f"/api/v1/actions/lock/viability{qs}", headers=h)
        assert response.status_code == 400, qs
        error = response.get_json()["errors"][0]
        assert error["source"] == {"parameter": parameter}, qs
        assert words in error["detail"], qs
