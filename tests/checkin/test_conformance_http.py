"""Every real device message in the conformance set, sent through the HTTP endpoints with simulator
signatures (check-ins) or through the command channel after delivering a matching command (results)."""

from __future__ import annotations

import json
import plistlib
from pathlib import Path

import pytest
from sqlalchemy import select

from mdmserver.collaborators import secret_box
from mdmserver.commands import service as commands
from mdmserver.protocol.checkin import is_udid
from mdmserver.protocol.inventory import detect_request_type
from mdmserver.protocol.plist import dump_plist, load_dict
from mdmserver.records.commands import Command
from mdmserver.records.devices import Device
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice, fingerprint


def _files(conformance_dir: Path) -> list[Path]:
    base = conformance_dir / "device-messages"
    return sorted(p for p in base.rglob("*") if p.suffix in (".xml", ".plist"))


@pytest.fixture
def device_for(client, topic, auto_admission):
    """An enrolled, authenticated simulated device that uses a given UDID: the same one for every
    message of a UDID (a second identity for a bound UDID is a held re-binding, refused but for
    Authenticate and TokenUpdate). ``None``: a fresh identity, not yet bound."""
    bound: dict[str, SimulatedDevice] = {}

    def make(udid: str | None) -> SimulatedDevice:
        if udid is not None and udid in bound:
            return bound[udid]
        sim = SimulatedDevice(FlaskTransport(client), udid=udid or "")
        sim.enroll()
        if udid is not None:
            assert sim.authenticate() == 200
            bound[udid] = sim
        return sim

    make.bound = bound
    return make


def test_checkins(conformance_dir, device_for, db_session, topic) -> None:
    seen = 0
    for path in _files(conformance_dir):
        data = load_dict(path.read_bytes())
        if "MessageType" not in data:
            continue
        seen += 1
        name = path.relative_to(conformance_dir).as_posix()
        message_type = data["MessageType"]
        if message_type == "Authenticate":
            # a fresh enrolled identity, not yet bound (or the identity bound to this UDID already)…
            sim = device_for.bound.get(data["UDID"]) or device_for(None)
            status, body = sim.send("/mdm/checkin", path.read_bytes())  # …sending the original bytes
            assert status == 200, (name, body)
            device_for.bound[data["UDID"]] = sim
            device = db_session.scalar(select(Device).where(Device.udid == data["UDID"]))
            assert device is not None and device.identity_fingerprint == fingerprint(sim.identity)
            if data.get("SerialNumber"):
                assert device.serial_number == data["SerialNumber"]
            continue
        if not is_udid(data.get("UDID") or ""):
            # only synthetic messages (GetToken's UDID is "test") lack an Apple UDID shape; such a
            # UDID cannot enroll, so the message is sent for a device that could
            assert "inline/" in name, name
            data = {**data, "UDID": "0000FACE-0123456789ABCDEF"}
            path_bytes = dump_plist(data)
        else:
            path_bytes = path.read_bytes()
        sim = device_for(data["UDID"])
        if message_type == "TokenUpdate":
            # the message is sent within our enrollment: our topic
            data = {**data, "Topic": topic}
            status, body = sim.send("/mdm/checkin", dump_plist(data))
            assert status == 200, (name, body)
            device = db_session.scalar(select(Device).where(Device.udid == data["UDID"]))
            if "UserID" not in data:
                assert device.enrolled and device.push_token == (data.get("Token") or None)
        elif message_type == "CheckOut":
            status, body = sim.send("/mdm/checkin", path_bytes)
            assert status == 200, (name, body)
            if "UserID" not in data:
                # the MDM profile is gone and its identity is revoked with it: a later message for this
                # UDID comes from a new enrollment
                device_for.bound.pop(data["UDID"])
        elif message_type == "GetToken":
            status, body = sim.send("/mdm/checkin", path_bytes)
            assert status == 400 and b"GetToken" in body
        else:
            status, body = sim.send("/mdm/checkin", path_bytes)
            assert 400 <= status < 500, (name, status)
    assert seen == 23


def test_ddm_status_reports(conformance_dir, device_for) -> None:
    reports = sorted((conformance_dir / "device-messages/jessepeterson__kmfddm").rglob("*.json"))
    assert reports
    sim = device_for("00008030-0000DD0000000001")
    for report in reports:
        json.loads(report.read_bytes())
        message = {"MessageType": "DeclarativeManagement", "UDID": sim.udid, "Endpoint": "status",
                   "Data": report.read_bytes()}
        assert sim.send("/mdm/checkin", message)[0] == 200
    status, body = sim.send("/mdm/checkin", {"MessageType": "DeclarativeManagement", "UDID": sim.udid,
                                             "Endpoint": "declaration-items"})
    assert status == 200 and json.loads(body)["Declarations"]["Configurations"] == []


def test_command_results(conformance_dir, device_for, db_session) -> None:
    sim = device_for("00008030-0000AE5000000001")
    device = db_session.scalar(select(Device).where(Device.udid == sim.udid))
    handled = 0
    for path in _files(conformance_dir):
        data = load_dict(path.read_bytes())
        if "Status" not in data or "MessageType" in data:
            continue
        name = path.relative_to(conformance_dir).as_posix()
        # unknown CommandUUID: ignored, still 200
        original = {**data, "UDID": sim.udid}
        if original["Status"] != "Idle":
            assert sim.send("/mdm/connect", original)[0] == 200, name
        request_type = detect_request_type(data) or "DeviceLock"
        queued = commands.enqueue_commands(db_session, [device.id], request_type, {}, enqueued_by="t",
                                           validate=False, box=secret_box())[0]["uuid"]
        db_session.commit()
        status, offered = sim.idle()
        assert status == 200 and offered["CommandUUID"] == queued, name
        answer = {**data, "UDID": sim.udid, "CommandUUID": queued}
        status, _body = sim.send("/mdm/connect", answer)
        assert status == 200, name
        db_session.expire_all()
        command = db_session.scalar(select(Command).where(Command.uuid == queued))
        expected = {"Acknowledged": "acknowledged", "Error": "error",
                    "CommandFormatError": "command_format_error", "NotNow": "not_now"}[data["Status"]]
        assert command.status == expected, name
        if expected == "not_now":
            commands.cancel_queue(db_session, device.id)
            db_session.commit()
        else:
            assert plistlib.loads(command.result)["CommandUUID"] == queued
        if data.get("ErrorChain"):
            assert command.error_chain and command.error_chain[0]["error_code"] == data["ErrorChain"][0]["ErrorCode"]
        # a second answer for the finished command is ignored, not an error
        assert sim.send("/mdm/connect", answer)[0] == 200, name
        handled += 1
    assert handled == 40
