"""Declarations from blueprints over the DeclarativeManagement check-in: tokens, items, declarations, the
DeclarativeManagement command, and the DDM / MDM split of the OS target."""

from __future__ import annotations

import json

from sqlalchemy import update

from mdmserver.records.blueprints import BlueprintOSUpdate
from mdmserver.records.devices import AvailableOSUpdate, Device
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice
from tests.blueprints.helpers import commands, created, parameters, patch
from tests.checkin.test_connect_statements import count_statements
from tests.ddm.helpers import DEADLINE, ddm, device_id, fetch_all, items, tokens
from tests.factories import install_push_topic, make_wifi_profile, seed_devices

SOFTWARE_UPDATE = "com.apple.configuration.softwareupdate.enforcement.specific"


def _acknowledge(sim, request_type: str) -> dict:
    """Idle, take the next command (it must be ``request_type``), acknowledge it; its parameters."""
    status, command = sim.idle()
    assert status == 200 and command is not None
    assert command["Command"]["RequestType"] == request_type, command
    status, _ = sim._connect({"UDID": sim.udid, "CommandUUID": command["CommandUUID"], "Status": "Acknowledged"})
    assert status == 200
    return command["Command"]


def test_tokens_items_and_declarations_round_trip(client, auth, db_session, enrolled):
    h = auth("read", "write")
    phone = enrolled("ios")  # reports 17.5
    assert tokens(phone) == tokens(phone)
    empty = items(phone)
    assert empty["Declarations"] == {"Activations": [], "Configurations": [], "Assets": [], "Management": []}

    pid = device_id(db_session, phone)
    doc = created(client, h, name="ddm", scope={"devices": [pid]}, os_update={"version": "17.6", "deadline": DEADLINE})
    assert doc["meta"]["reconcile"]["declarative_management_queued"] == 1
    assert doc["meta"]["reconcile"]["os_update_queued"] == 0
    assert commands(db_session, "ScheduleOSUpdate") == []
    (queued,) = commands(db_session, "DeclarativeManagement")
    data = json.loads(parameters(queued)["Data"])

    token = tokens(phone)
    assert token != empty["DeclarationsToken"]
    assert data["SyncTokens"]["DeclarationsToken"] == token
    assert data["SyncTokens"]["Timestamp"].endswith("Z")
    listed = items(phone)
    assert listed["DeclarationsToken"] == token
    assert len(listed["Declarations"]["Activations"]) == 2 and len(listed["Declarations"]["Configurations"]) == 2
    declarations = fetch_all(phone)
    by_type: dict[str, list] = {}
    for d in declarations.values():
        by_type.setdefault(d["Type"], []).append(d)
    (enforcement,) = by_type[SOFTWARE_UPDATE]
    assert enforcement["Payload"] == {"TargetOSVersion": "17.6", "TargetLocalDateTime": DEADLINE}
    (subscriptions,) = by_type["com.apple.configuration.management.status-subscriptions"]
    names = {item["Name"] for item in subscriptions["Payload"]["StatusItems"]}
    assert {"softwareupdate.install-state", "softwareupdate.pending-version", "softwareupdate.failure-reason",
            "device.operating-system.version", "device.operating-system.build-version"} <= names
    activated = {c for a in by_type["com.apple.activation.simple"] for c in a["Payload"]["StandardConfigurations"]}
    assert activated == {enforcement["Identifier"], subscriptions["Identifier"]}

    # the command reaches the device, with the token as Data
    command = _acknowledge(phone, "DeclarativeManagement")
    assert json.loads(command["Data"])["SyncTokens"]["DeclarationsToken"] == token


def test_token_changes_exactly_when_the_set_changes_and_the_command_is_queued_once(client, auth, db_session,
                                                                                   enrolled):
    h = auth("read", "write")
    phone = enrolled("ios")
    pid = device_id(db_session, phone)
    doc = created(client, h, name="t", scope={"devices": [pid]}, os_update={"version": "17.6", "deadline": DEADLINE})
    blueprint_id = doc["data"]["id"]
    first = tokens(phone)
    before = {k: v["ServerToken"] for k, v in fetch_all(phone).items()}

    # no change to the set: same token, no command
    patch(client, h, blueprint_id, name="renamed", description="words")
    assert tokens(phone) == first
    assert len(commands(db_session, "DeclarativeManagement")) == 1
    client.post(f"/api/v1/blueprints/{blueprint_id}/reconcile", headers=h)
    assert len(commands(db_session, "DeclarativeManagement")) == 1

    # a change while the first command is still queued: the token changes, no second command (the
    # device reads the current token when it syncs)
    patch(client, h, blueprint_id, os_update={"version": "17.6", "deadline": "2026-12-09T09:00:00"})
    second = tokens(phone)
    assert second != first
    assert len(commands(db_session, "DeclarativeManagement")) == 1
    after = {k: v["ServerToken"] for k, v in fetch_all(phone).items()}
    changed = {k for k in before if before[k] != after[k]}
    assert any(k.endswith(".softwareupdate") for k in changed)
    assert "mdmserver.status-subscriptions" not in changed  # untouched declarations keep their token

    # once the device took it, the next change queues one more (and only one)
    _acknowledge(phone, "DeclarativeManagement")
    patch(client, h, blueprint_id, os_update={"version": "17.7", "deadline": "2026-12-09T09:00:00"})
    assert tokens(phone) not in (first, second)
    assert len(commands(db_session, "DeclarativeManagement")) == 2
    client.post(f"/api/v1/blueprints/{blueprint_id}/reconcile", headers=h)
    assert len(commands(db_session, "DeclarativeManagement")) == 2

    # the blueprint goes: the set is empty again, and the device is told
    _acknowledge(phone, "DeclarativeManagement")
    assert client.delete(f"/api/v1/blueprints/{blueprint_id}", headers=h).status_code == 200
    assert items(phone)["Declarations"]["Configurations"] == []
    assert len(commands(db_session, "DeclarativeManagement")) == 3


def test_os_target_goes_by_ddm_or_by_mdm_never_both(client, auth, db_session, enrolled):
    h = auth("read", "write")
    new = enrolled("ios")  # 17.5: declarative
    old = enrolled("ios", seed=16)
    old_mac = enrolled("macos", seed=13)
    for sim, version in ((old, "16.7.2"), (old_mac, "13.6")):
        sim.os_version = version
        assert sim.authenticate() == 200 and sim.token_update() == 200
    mac = enrolled("macos", seed=14)  # 14.5: declarative
    ids = {s.udid: device_id(db_session, s) for s in (new, old, old_mac, mac)}
    doc = created(client, h, name="split", scope={"devices": list(ids.values())},
            os_update={"version": "17.6", "deadline": DEADLINE})
    schedule = {c.device_id for c in commands(db_session, "ScheduleOSUpdate")}
    declarative = {c.device_id for c in commands(db_session, "DeclarativeManagement")}
    assert schedule == {ids[old.udid], ids[old_mac.udid]}
    assert declarative == {ids[new.udid], ids[mac.udid]}
    assert items(old)["Declarations"]["Configurations"] == []
    assert any(c["Identifier"].endswith(".softwareupdate") for c in items(mac)["Declarations"]["Configurations"])
    # the declarative devices' OS item is tracked without a command
    rows = {r.device_id: r for r in db_session.query(BlueprintOSUpdate)}
    assert rows[ids[new.udid]].command_uuid is None and rows[ids[old.udid]].command_uuid is not None

    # the old one updates to iOS 17 (it could take declarations now): its target was sent by command, so
    # it gets no declaration for it either
    db_session.execute(update(Device).where(Device.id == ids[old.udid]).values(os_version="17.5"))
    db_session.commit()
    client.post(f"/api/v1/blueprints/{doc['data']['id']}/reconcile", headers=h)
    assert items(old)["Declarations"]["Configurations"] == []
    assert {c.device_id for c in commands(db_session, "DeclarativeManagement")} == declarative
    assert len(commands(db_session, "ScheduleOSUpdate")) == 2


def test_without_a_deadline_everyone_gets_schedule_os_update(client, auth, db_session, enrolled):
    """Apple's enforcement declaration requires TargetLocalDateTime: no deadline, no declaration."""
    h = auth("read", "write")
    phone = enrolled("ios")
    pid = device_id(db_session, phone)
    created(client, h, name="nodeadline", scope={"devices": [pid]}, os_update={"version": "17.6"})
    assert [c.device_id for c in commands(db_session, "ScheduleOSUpdate")] == [pid]
    assert commands(db_session, "DeclarativeManagement") == []
    assert items(phone)["Declarations"]["Configurations"] == []


def test_latest_is_resolved_from_available_updates_or_left_out(client, auth, db_session, enrolled):
    h = auth("read", "write")
    phone = enrolled("ios")
    pid = device_id(db_session, phone)
    created(client, h, name="latest", scope={"devices": [pid]}, os_update={"version": "latest", "deadline": DEADLINE})
    assert items(phone)["Declarations"]["Configurations"] == []  # nothing offered known yet
    assert commands(db_session, "ScheduleOSUpdate") == []
    db_session.add_all([AvailableOSUpdate(device_id=pid, version="17.6", product_key="iOSUpdate21G80"),
                        AvailableOSUpdate(device_id=pid, version="17.6.1", product_key="iOSUpdate21G93"),
                        AvailableOSUpdate(device_id=pid, version="17.4", product_key="old")])
    db_session.commit()
    assert client.post(f"/api/v1/blueprints/{_only_blueprint(client, h)}/reconcile", headers=h).status_code == 200
    enforcement = [d for d in fetch_all(phone).values() if d["Type"] == SOFTWARE_UPDATE]
    assert [d["Payload"]["TargetOSVersion"] for d in enforcement] == ["17.6.1"]
    assert commands(db_session, "ScheduleOSUpdate") == []
    assert len(commands(db_session, "DeclarativeManagement")) == 1


def _only_blueprint(client, h) -> str:
    (doc,) = client.get("/api/v1/blueprints", headers=h).get_json()["data"]
    return doc["id"]


def test_another_device_cannot_fetch_this_devices_declarations(client, auth, db_session, enrolled):
    h = auth("read", "write")
    target, other = enrolled("ios"), enrolled("ios", seed=2)
    created(client, h, name="one", scope={"devices": [device_id(db_session, target)]},
            os_update={"version": "17.6", "deadline": DEADLINE})
    identifiers = [(k, e["Identifier"]) for k, key in (("configuration", "Configurations"),
                                                        ("activation", "Activations"))
                   for e in items(target)["Declarations"][key]]
    assert identifiers
    for kind, identifier in identifiers:
        status, body = ddm(other, f"declaration/{kind}/{identifier}")
        assert status == 404, body
        assert "Payload" not in body and "17.6" not in body
    # nor by naming the other device's UDID with its own certificate
    message = {"MessageType": "DeclarativeManagement", "UDID": target.udid,
               "Endpoint": f"declaration/{identifiers[0][0]}/{identifiers[0][1]}"}
    status, body = other.send("/mdm/checkin", message)
    assert status == 403 and b"mdmserver" not in body
    status, body = target.send("/mdm/checkin", message, misbehave="other_device_cert", other=other)
    assert status == 403


def test_bad_endpoints_are_refused(enrolled):
    phone = enrolled("ios")
    for endpoint in ("nope", "tokens/extra", "declaration/widget/x", "declaration/configuration/",
                     "declaration/configuration/a/b", "declaration/configuration/" + "x" * 300, ""):
        status, body = ddm(phone, endpoint)
        assert status == 400, (endpoint, body)
    status, body = ddm(phone, "tokens", UserID="00000000-1111-2222-3333-444455556666")
    assert status == 400


def test_declaration_generation_statements_do_not_grow_with_the_devices(client, auth, db_session):
    h = auth("read", "write")
    client.get("/api/v1/blueprints", headers=h)
    counts = {}
    for size in (5, 50):
        ids = seed_devices(db_session, size, start=size * 1000, platform="ios", os_version="17.5")
        profile = make_wifi_profile(db_session, f"com.example.count{size}")
        db_session.commit()
        with count_statements() as seen:
            # legacy profiles make every device's set (its URLs), hence its token and command, its own
            doc = created(client, h, name=f"n{size}", scope={"devices": ids}, profiles=[profile.id],
                          declarative_profiles=True, os_update={"version": f"17.6.{size}", "deadline": DEADLINE})
        assert doc["meta"]["reconcile"]["declarative_management_queued"] == size
        assert doc["meta"]["reconcile"]["os_update_queued"] == 0
        assert doc["meta"]["reconcile"]["profile_install_queued"] == 0
        counts[size] = len(seen)
        patch(client, h, doc["data"]["id"], enabled=False)  # the next round measures one active blueprint
    assert counts[5] == counts[50], counts


def test_a_device_enrolling_again_is_told_of_its_set_anew(client, auth, db_session, enrolled):
    h = auth("read", "write")
    phone = enrolled("ios")
    created(client, h, name="again", scope={"devices": [device_id(db_session, phone)]},
            os_update={"version": "17.6", "deadline": DEADLINE})
    _acknowledge(phone, "DeclarativeManagement")
    assert phone.authenticate() == 200 and phone.token_update() == 200  # a new enrollment of the same device
    assert len(commands(db_session, "DeclarativeManagement")) == 2
    command = _acknowledge(phone, "DeclarativeManagement")
    assert json.loads(command["Data"])["SyncTokens"]["DeclarationsToken"] == tokens(phone)


def test_a_pending_device_gets_neither_path_until_accepted(app, client, auth, db_session, monkeypatch):
    """A pending iOS 17 device is served no declarations (a legacy profile may hold secrets) and gets no
    ScheduleOSUpdate either (once accepted it takes the target declaratively, one way only)."""
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "manual")
    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    install_push_topic(db_session, monkeypatch)
    h = auth("read", "write")
    sim = SimulatedDevice(FlaskTransport(client), platform="ios", seed=1717)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    pid = device_id(db_session, sim)
    doc = created(client, h, name="pending", is_global=True, os_update={"version": "17.6", "deadline": DEADLINE})
    client.post(f"/api/v1/blueprints/{doc['data']['id']}/reconcile", headers=h)
    assert commands(db_session, device_id=pid) == []
    assert items(sim)["Declarations"]["Configurations"] == []
    pending = client.get("/api/management/v1/admission/devices?status=pending", headers=h).get_json()
    (auth_set,) = [a for a in pending if a["device_id"] == str(pid)]
    assert client.put(f"/api/management/v1/admission/devices/{auth_set['id']}/status", headers=h,
                      json={"status": "accepted"}).status_code == 200
    assert [c.request_type for c in commands(db_session, device_id=pid)] == ["DeclarativeManagement"]
    assert any(c["Identifier"].endswith(".softwareupdate") for c in items(sim)["Declarations"]["Configurations"])
