"""Issue 9 item 6: group and smart-group assignments reach devices that enroll, are admitted or change
later, in the transaction of that change, without anyone calling ``…/assignments/reconcile``.

Devices are simulated and speak the protocol (signed requests through the app); admission goes
through the Mender API, profiles and groups through the admin API."""

from __future__ import annotations

import json
import plistlib
import uuid

import pytest
from sqlalchemy import event, select
from sqlalchemy.sql import visitors

from mdmserver.assignments.models import ProfileAssignment
from mdmserver.collaborators import secret_box
from mdmserver.db import db, driver_statement_listeners
from mdmserver.devices.service import GROUP_FILTER_COLUMNS
from mdmserver.profiles.service import upload_profile
from mdmserver.protocol.inventory import DEVICE_INFORMATION_COLUMNS
from mdmserver.records.commands import Command
from mdmserver.records.devices import Device
from mdmserver.records.groups import DeviceGroup
from mdmserver.selection.filters import device_filters
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice
from tests.factories import install_push_topic, make_wifi_profile

ADM = "/api/management/v1/admission"
JSONAPI = "application/vnd.api+json"
IDENTIFIER = "com.example.ios-wifi"


@pytest.fixture
def topic(app, db_session, monkeypatch):
    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    return install_push_topic(db_session, monkeypatch)


def _profile(db_session) -> int:
    profile = make_wifi_profile(db_session, IDENTIFIER)
    db_session.commit()
    return profile.id


def _assign_to_smart_group(client, h, profile_id: int, filter_: dict) -> None:
    group = client.post("/api/v1/device_groups", headers={**h, "Content-Type": JSONAPI}, json={"data": {
        "type": "device_groups", "attributes": {"name": f"smart {uuid.uuid4().hex[:6]}", "kind": "smart",
                                                "filter": filter_}}})
    assert group.status_code == 201, group.get_json()
    assigned = client.post(f"/api/v1/profiles/{profile_id}/assignments", headers=h,
                           json={"groups": [int(group.get_json()["data"]["id"])]})
    assert assigned.status_code == 200 and assigned.get_json()["install_queued"] == 0  # no device yet


def _install_commands(db_session, device_id: int, request_type: str = "InstallProfile") -> list[Command]:
    db_session.expire_all()
    return list(db_session.scalars(select(Command).where(
        Command.device_id == device_id, Command.request_type == request_type).order_by(Command.id)))


def _device_id(db_session, sim: SimulatedDevice) -> int:
    return db_session.scalar(select(Device.id).where(Device.udid == sim.udid))


def _states(client, h, profile_id: int) -> dict[int, str]:
    data = client.get(f"/api/v1/profiles/{profile_id}/assignments/status", headers=h).get_json()["data"]
    return {int(d["attributes"]["device_id"]): d["attributes"]["status"] for d in data}


def test_iphones_enrolled_after_the_assignment_get_the_profile_on_acceptance(client, auth, db_session, topic):
    h = auth("read", "write")
    profile_id = _profile(db_session)
    _assign_to_smart_group(client, h, profile_id, {"platform": "ios"})
    transport = FlaskTransport(client)
    phones = [SimulatedDevice(transport, platform="ios", seed=600 + i) for i in range(5)]
    mac = SimulatedDevice(transport, platform="macos", seed=700)
    for sim in [*phones, mac]:
        sim.enroll()
        assert sim.authenticate() == 200  # manual admission: pending
    ids = {sim.udid: _device_id(db_session, sim) for sim in [*phones, mac]}
    # nothing waits in the queue of a device nobody admitted
    assert all(_install_commands(db_session, device_id) == [] for device_id in ids.values())

    auth_sets = client.get(f"{ADM}/devices?status=pending&per_page=100", headers=h).get_json()
    by_udid = {json.loads(a["device_identity"])["udid"]: a["id"] for a in auth_sets}
    for sim in [*phones, mac]:
        accepted = client.put(f"{ADM}/devices/{by_udid[sim.udid]}/status", headers=h, json={"status": "accepted"})
        assert accepted.status_code == 200
    for sim in phones:
        assert len(_install_commands(db_session, ids[sim.udid])) == 1
    assert _install_commands(db_session, ids[mac.udid]) == []  # not in the smart group

    for sim in [*phones, mac]:
        assert sim.token_update() == 200
        handled = sim.run_session()
        if sim is mac:
            assert handled == []
        else:
            assert [(t, s) for _, t, s in handled] == [("InstallProfile", "Acknowledged")]
            assert IDENTIFIER in sim.profiles
    assert _states(client, h, profile_id) == {ids[sim.udid]: "installed" for sim in phones}


def test_auto_admitted_iphones_get_the_profile_at_enrollment(client, auth, db_session, topic, monkeypatch, app):
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "auto")
    h = auth("read", "write")
    profile_id = _profile(db_session)
    _assign_to_smart_group(client, h, profile_id, {"platform": "ios"})
    transport = FlaskTransport(client)
    phones = [SimulatedDevice(transport, platform="ios", seed=800 + i) for i in range(5)]
    for sim in phones:
        sim.enroll()
        assert sim.authenticate() == 200 and sim.token_update() == 200
        assert len(_install_commands(db_session, _device_id(db_session, sim))) == 1
        assert [(t, s) for _, t, s in sim.run_session()] == [("InstallProfile", "Acknowledged")]
    assert sorted(_states(client, h, profile_id).values()) == ["installed"] * 5

    # enrolling again after leaving management (the MDM profile removed: CheckOut, then a new
    # enrollment): what the old enrollment installed is gone, so it comes again. (A re-enrollment
    # while the old certificate is still bound waits for an administrator: tests/checkin/test_takeover.py.)
    again = phones[0]
    assert again.checkout() == 200
    again.profiles.clear()
    again.enroll()
    assert again.authenticate() == 200 and again.token_update() == 200
    assert [(t, s) for _, t, s in again.run_session()] == [("InstallProfile", "Acknowledged")]
    assert IDENTIFIER in again.profiles


@pytest.fixture
def statements():
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK TO")):
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", before)
    driver_statement_listeners.append(seen.append)  # the connect path's first read runs on the driver's cursor
    yield seen
    driver_statement_listeners.remove(seen.append)
    event.remove(db.engine, "before_cursor_execute", before)


def test_inventory_changes_move_the_device_into_and_out_of_a_smart_group(
        client, auth, db_session, topic, monkeypatch, app, statements):
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "auto")
    h = auth("read", "write")
    profile_id = _profile(db_session)
    _assign_to_smart_group(client, h, profile_id, {"os_version": "18.*"})
    sim = SimulatedDevice(FlaskTransport(client), platform="ios", seed=900)  # reports 17.5
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    device_id = _device_id(db_session, sim)
    assert _install_commands(db_session, device_id) == []

    def scan() -> list[tuple[str, str]]:
        response = client.post(f"/api/v1/devices/{device_id}/commands", headers=h,
                               json={"request_type": "DeviceInformation"})
        assert response.status_code in (201, 202), response.get_json()
        return [(t, s) for _, t, s in sim.run_session()]

    # the first answer fills the inventory (supervision, IMEI…): reconciled, but still not a member
    assert scan() == [("DeviceInformation", "Acknowledged")]
    # an answer that changes nothing a group filters on costs what it cost before: no reconciliation
    client.post(f"/api/v1/devices/{device_id}/commands", headers=h, json={"request_type": "DeviceInformation"})
    status, command = sim.idle()
    assert command["Command"]["RequestType"] == "DeviceInformation"
    scan_answer = sim.answer(command["CommandUUID"], "DeviceInformation", command["Command"])
    statements.clear()
    assert sim.send("/mdm/connect", scan_answer) == (200, b"")
    # device and next command (which also reads whether a webhook listens and a compliance policy is
    # enabled: neither, so no event INSERT and no policy read) + result UPDATE … RETURNING + inventory
    # UPDATE … RETURNING
    assert len(statements) == 3, statements
    assert not any("profile_assignments" in s for s in statements)

    sim.os_version = "18.0"  # the device updated its OS: it enters the smart group
    assert scan() == [("DeviceInformation", "Acknowledged"), ("InstallProfile", "Acknowledged")]
    assert IDENTIFIER in sim.profiles
    assert _states(client, h, profile_id) == {device_id: "installed"}

    sim.os_version = "17.6"  # and leaves it again
    assert scan() == [("DeviceInformation", "Acknowledged"), ("RemoveProfile", "Acknowledged")]
    assert IDENTIFIER not in sim.profiles
    assert _states(client, h, profile_id) == {device_id: "removed"}


def test_a_lost_mode_answer_moves_the_device_into_a_smart_group(client, auth, db_session, topic, monkeypatch,
                                                                 app):
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "auto")
    h = auth("read", "write")
    profile_id = _profile(db_session)
    _assign_to_smart_group(client, h, profile_id, {"lost_mode": "true"})
    sim = SimulatedDevice(FlaskTransport(client), platform="ios", seed=901)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    device_id = _device_id(db_session, sim)
    scan = client.post(f"/api/v1/devices/{device_id}/commands", headers=h, json={"request_type": "DeviceInformation"})
    assert scan.status_code in (201, 202)
    assert [(t, s) for _, t, s in sim.run_session()] == [("DeviceInformation", "Acknowledged")]  # supervised
    lost = client.post(f"/api/v1/devices/{device_id}/actions/enable_lost_mode", headers=h,
                       json={"parameters": {"message": "Return to IT"}})
    assert lost.status_code == 202, lost.get_json()
    assert [(t, s) for _, t, s in sim.run_session()] == [("EnableLostMode", "Acknowledged"),
                                                       ("InstallProfile", "Acknowledged")]
    assert _states(client, h, profile_id) == {device_id: "installed"}


def test_group_filter_columns_cover_what_device_filters_read():
    """Every device-reported column that some device filter reads is in GROUP_FILTER_COLUMNS (else a
    change of it would not move the device between smart groups)."""
    samples = {"id": "1", "platform": "ios", "supervised": "true", "enrolled": "true", "lost_mode": "true",
               "admission_status": "accepted", "owner_email": "a@example.com", "retired": "true",
               "last_seen_before": "2026-01-01", "last_seen_after": "2026-01-01", "enrolled_after": "2026-01-01",
               "os_version": "17.*", "compliance_state": "non_compliant"}
    reported = {column for column, _ in DEVICE_INFORMATION_COLUMNS.values()} | {"platform", "lost_mode_enabled"}
    read: set[str] = set()
    for name, build in device_filters(None).items():
        if name == "group":
            continue  # a group's filter is made of the other filters
        condition = build(samples.get(name, "x"))
        for element in visitors.iterate(condition):
            table = getattr(element, "table", None)
            if table is not None and getattr(table, "name", None) == "devices" and hasattr(element, "key"):
                read.add(element.key)
    assert {"os_version", "platform", "device_name", "is_supervised"} <= read  # the walk sees columns
    assert read & reported <= GROUP_FILTER_COLUMNS, sorted((read & reported) - GROUP_FILTER_COLUMNS)


def test_a_group_that_cannot_be_evaluated_does_not_break_enrollment(client, auth, db_session, topic, monkeypatch,
                                                                    app):
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "auto")
    h = auth("read", "write")
    good = _profile(db_session)
    _assign_to_smart_group(client, h, good, {"platform": "ios"})
    # a stored filter that no longer evaluates (written directly: the API refuses it)
    broken = DeviceGroup(name="broken", kind="smart", filter={"colour": "red"})
    db_session.add(broken)
    db_session.flush()
    body = plistlib.dumps({"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.example.b",
                           "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadDisplayName": "B", "PayloadContent": []})
    other, _ = upload_profile(db_session, body, box=secret_box())
    db_session.flush()
    db_session.add(ProfileAssignment(profile_id=other.id, group_id=broken.id))
    db_session.commit()
    sim = SimulatedDevice(FlaskTransport(client), platform="ios", seed=950)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    assert [(t, s) for _, t, s in sim.run_session()] == [("InstallProfile", "Acknowledged")]
    assert IDENTIFIER in sim.profiles
