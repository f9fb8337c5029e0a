"""Command history per device and across devices, the latest command, cancel from either path."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from mdmserver.audit.models import AuditEvent
from mdmserver.collaborators import secret_box
from mdmserver.commands.service import enqueue_commands
from mdmserver.db import utcnow
from mdmserver.records.commands import Command
from mdmserver.records.groups import DeviceGroup
from tests.factories import make_device


def _queue(db_session, device, request_type, status="queued", **values):
    uuid = enqueue_commands(db_session, [device.id], request_type, None, enqueued_by="alice", box=secret_box())[0]["uuid"]
    command = db_session.scalar(select(Command).where(Command.uuid == uuid))
    command.status = status
    for key, value in values.items():
        setattr(command, key, value)
    db_session.flush()
    return command


def _uuids(response):
    assert response.status_code == 200, response.get_json()
    return [c["id"] for c in response.get_json()["data"]]


def test_device_history_and_filters(client, auth, db_session):
    h = auth("read", "write")
    phone, mac = make_device(db_session, platform="ios"), make_device(db_session, platform="macos")
    old = _queue(db_session, phone, "DeviceInformation", "acknowledged", completed_at=utcnow(),
                 created_at=utcnow() - timedelta(days=3))
    failed = _queue(db_session, phone, "DeviceLock", "error", completed_at=utcnow(), error_chain=[
        {"error_code": 12021, "error_domain": "MCMDMErrorDomain", "localized_description": "Passcode locked",
         "us_english_description": None}])
    queued = _queue(db_session, phone, "ProfileList")
    other = _queue(db_session, mac, "SecurityInfo")
    body = client.get(f"/api/v1/devices/{phone.udid}/commands", headers=h).get_json()
    assert [c["id"] for c in body["data"]] == [queued.uuid, failed.uuid, old.uuid] and body["meta"]["total"] == 3
    shown = body["data"][1]["attributes"]
    assert shown["status"] == "error" and shown["remarks"] == "the device reported an error: Passcode locked"
    assert shown["enqueued_by"] == "alice" and shown["created_at"].endswith("Z") and shown["completed_at"]
    assert body["data"][0]["attributes"]["remarks"] == "waiting for the device to connect"
    get = lambda url: _uuids(client.get(url, headers=h))  # noqa: E731
    assert get(f"/api/v1/devices/{phone.id}/commands?filter[status]=error,acknowledged&sort=id") == [
        old.uuid, failed.uuid]
    since = (utcnow() - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert get(f"/api/v1/devices/{phone.id}/commands?filter[created_after]={since}&page[size]=1") == [queued.uuid]
    assert get("/api/v1/commands?filter[request_type]=SecurityInfo") == [other.uuid]
    assert get(f"/api/v1/commands?filter[device]={mac.serial_number}") == [other.uuid]
    assert get("/api/v1/commands?filter[latest]=true&sort=device_id") == [queued.uuid, other.uuid]
    assert get("/api/v1/commands?filter[enqueued_by]=alice&filter[status]=queued&sort=id") == [
        queued.uuid, other.uuid]
    group = DeviceGroup(name="Macs", kind="smart", filter={"platform": "macos"})
    db_session.add(group)
    db_session.flush()
    assert get(f"/api/v1/commands?filter[group]={group.id}") == [other.uuid]
    latest = client.get(f"/api/v1/devices/{phone.id}/commands/latest", headers=h).get_json()["data"]
    assert latest["id"] == queued.uuid and "result" in latest["attributes"]
    expiring = _queue(db_session, mac, "CertificateList", expires_at=utcnow() - timedelta(minutes=1))
    assert get("/api/v1/commands?filter[status]=expired") == [expiring.uuid]


def test_cancel_from_the_device_path(client, auth, db_session):
    h = auth("read", "write")
    phone, mac = make_device(db_session), make_device(db_session)
    queued = _queue(db_session, phone, "ProfileList")
    sent = _queue(db_session, phone, "DeviceLock", "sent")
    other = _queue(db_session, mac, "ProfileList")
    response = client.delete(f"/api/v1/devices/{phone.id}/commands/{queued.uuid}", headers=h)
    assert response.status_code == 200 and response.get_json()["data"]["attributes"]["status"] == "cancelled"
    assert client.delete(f"/api/v1/devices/{phone.id}/commands/{queued.uuid}", headers=h).status_code == 409
    assert client.delete(f"/api/v1/devices/{phone.id}/commands/{sent.uuid}", headers=h).status_code == 409
    assert client.delete(f"/api/v1/devices/{phone.id}/commands/{other.uuid}", headers=h).status_code == 404
    assert client.delete(f"/api/v1/devices/{phone.id}/commands/nope", headers=h).status_code == 404
    assert db_session.get(Command, other.id).status == "queued"
    # one cancel whichever path: the same resource (with remarks) and the same audit event
    again = _queue(db_session, phone, "SecurityInfo")
    response = client.delete(f"/api/v1/commands/{again.uuid}", headers=h)
    assert response.status_code == 200
    assert response.get_json()["data"]["attributes"]["remarks"] == "cancelled before it was sent"
    events = db_session.scalars(select(AuditEvent).where(AuditEvent.resource_type == "commands")
                                .order_by(AuditEvent.id)).all()
    assert [(e.action, e.resource_id) for e in events] == [
        ("command:cancel", queued.uuid), ("command:cancel", again.uuid)]


def test_bad_history_queries(client, auth, db_session):
    h = auth("read")
    device = make_device(db_session)
    for url in ("/api/v1/commands?filter[status]=lost", "/api/v1/commands?filter[device]=NOPE",
                "/api/v1/commands?filter[group]=x", "/api/v1/commands?filter[group]=424242",
                "/api/v1/commands?filter[created_after]=soon", "/api/v1/commands?sort=colour",
                "/api/v1/commands?filter[latest]=perhaps", f"/api/v1/devices/{device.id}/commands?filter[device]=1",
                "/api/v1/commands?page[size]=0"):
        assert client.get(url, headers=h).status_code == 400, url
    assert client.get("/api/v1/devices/NOPE/commands", headers=h).status_code == 404
    assert client.get(f"/api/v1/devices/{device.id}/commands/latest", headers=h).status_code == 404
