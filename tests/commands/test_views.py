"""Admin command endpoints: enqueue with validation, commandment routes, read, cancel."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mdmserver.audit.models import AuditEvent
from mdmserver.records.commands import Command
from mdmserver.records.devices import Device
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice

JSONAPI = "application/vnd.api+json"


@pytest.fixture
def sim(app, client, db_session, monkeypatch):
    from tests.factories import install_push_topic

    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "auto")
    install_push_topic(db_session, monkeypatch)
    device = SimulatedDevice(FlaskTransport(client), platform="ios")
    device.enroll()
    assert device.authenticate() == 200 and device.token_update() == 200
    return device


@pytest.fixture
def device_id(sim, db_session) -> int:
    return db_session.scalar(select(Device.id).where(Device.udid == sim.udid))


def _post(client, path, body, headers, content_type=JSONAPI):
    import json

    return client.post(path, data=json.dumps(body), headers={**headers, "Content-Type": content_type})


def test_enqueue_jsonapi_and_plain(client, auth, sim, device_id, db_session) -> None:
    headers = auth("read", "write")
    body = {"data": {"type": "commands", "attributes": {"request_type": "DeviceLock",
                                                        "parameters": {"Message": "Call IT"}}}}
    response = _post(client, f"/api/v1/devices/{device_id}/commands", body, headers)
    assert response.status_code == 201, response.json
    data = response.json["data"]
    assert data["type"] == "commands" and data["attributes"]["status"] == "queued"
    assert response.headers["Location"] == f"/api/v1/commands/{data['id']}"
    assert data["attributes"]["parameters"] == {"Message": "Call IT"}
    # commandment's test route, plain JSON body, lookup by UDID
    response = _post(client, f"/api/v1/devices/test/{sim.udid}",
                     {"request_type": "ProfileList", "parameters": {}}, headers, "application/json")
    assert response.status_code == 201
    events = db_session.scalars(select(AuditEvent.action).where(AuditEvent.resource_type == "devices")).all()
    assert "device:command:devicelock" in events and "device:command:profilelist" in events


@pytest.mark.parametrize(
    "attributes,status,pointer",
    [
        ({"request_type": "DeviceLock", "parameters": {"Message": 5}}, 422, "/data/attributes/parameters/Message"),
        ({"request_type": "EraseDevice", "parameters": {"PreserveDataPlan": "yes"}}, 422,
         "/data/attributes/parameters/PreserveDataPlan"),
        ({"request_type": "MakeCoffee"}, 422, "/data/attributes/request_type"),
        ({"request_type": "RotateFileVaultKey", "parameters": {"KeyType": "personal"}}, 422,
         "/data/attributes/request_type"),
        ({"parameters": {}}, 422, "/data/attributes/request_type"),
        ({"request_type": "DeviceLock", "priority": "high"}, 422, "/data/attributes/priority"),
        ({"request_type": "DeviceLock", "bogus": 1}, 422, "/data/attributes/bogus"),
        ({"request_type": "DeviceLock", "expires_at": "2030-01-01T00:00:00"}, 422, "/data/attributes/expires_at"),
    ],
)
def test_enqueue_validation(client, auth, device_id, attributes, status, pointer) -> None:
    response = _post(client, f"/api/v1/devices/{device_id}/commands",
                     {"data": {"type": "commands", "attributes": attributes}}, auth("write"))
    assert response.status_code == status
    assert pointer in [e.get("source", {}).get("pointer") for e in response.json["errors"]]


def test_enqueue_bad_bodies(client, auth, device_id) -> None:
    headers = auth("write")
    path = f"/api/v1/devices/{device_id}/commands"
    assert client.post(path, data="{", headers={**headers, "Content-Type": JSONAPI}).status_code == 400
    assert client.post(path, data="x", headers={**headers, "Content-Type": "text/plain"}).status_code == 415
    assert _post(client, path, {"data": {"type": "devices", "attributes": {}}}, headers).status_code == 409
    assert _post(client, path, [1, 2], headers).status_code == 422
    assert _post(client, "/api/v1/devices/999999/commands", {"request_type": "DeviceLock"}, headers).status_code == 404


def test_scopes(client, auth, device_id) -> None:
    path = f"/api/v1/devices/{device_id}/commands"
    assert _post(client, path, {"request_type": "DeviceLock"}, {}).status_code == 401
    assert _post(client, path, {"request_type": "DeviceLock"}, auth("read")).status_code == 403
    assert client.get(f"/api/v1/devices/inventory/{device_id}", headers=auth("read")).status_code == 403
    assert client.get(f"/api/v1/devices/{device_id}/clear_passcode", headers=auth("read")).status_code == 403


def test_inventory_and_results(client, auth, sim, device_id) -> None:
    response = client.get(f"/api/v1/devices/inventory/{device_id}", headers=auth("write"))
    assert response.status_code == 202
    types = [c["attributes"]["request_type"] for c in response.json["data"]]
    assert types == ["DeviceInformation", "SecurityInfo", "ProfileList", "InstalledApplicationList", "CertificateList"]
    handled = sim.run_session()
    assert [s for _u, _t, s in handled] == ["Acknowledged"] * 5
    shown = client.get(f"/api/v1/commands/{handled[0][0]}", headers=auth("read")).json["data"]["attributes"]
    assert shown["status"] == "acknowledged" and shown["result"]["QueryResponses"]["UDID"] == sim.udid
    assert shown["sent_at"].endswith("Z") and shown["completed_at"].endswith("Z")


def test_clear_passcode(client, auth, sim, device_id, db_session) -> None:
    response = client.post(f"/api/v1/devices/{device_id}/clear_passcode", headers=auth("write"))
    assert response.status_code == 202
    attrs = response.json["data"]["attributes"]
    assert attrs["request_type"] == "ClearPasscode" and "UnlockToken" not in attrs["parameters"]
    handled = sim.run_session()
    assert handled[0][1:] == ("ClearPasscode", "Acknowledged")  # the device got its own UnlockToken
    stored = db_session.scalar(select(Command).where(Command.uuid == handled[0][0]))
    assert sim.unlock_token not in stored.parameters
    # a device without an UnlockToken: 409
    device = db_session.get(Device, device_id)
    device.unlock_token_encrypted = None
    db_session.commit()
    assert client.get(f"/api/v1/devices/{device_id}/clear_passcode", headers=auth("write")).status_code == 409


def test_cancel(client, auth, sim, device_id) -> None:
    headers = auth("read", "write")
    first = _post(client, f"/api/v1/devices/{device_id}/commands", {"request_type": "RestartDevice"}, headers,
                  "application/json").json["data"]["id"]
    second = _post(client, f"/api/v1/devices/{device_id}/commands", {"request_type": "SecurityInfo"}, headers,
                   "application/json").json["data"]["id"]
    response = client.delete(f"/api/v1/commands/{second}", headers=headers)
    assert response.status_code == 200 and response.json["data"]["attributes"]["status"] == "cancelled"
    assert client.delete(f"/api/v1/commands/{second}", headers=headers).status_code == 409
    sim.answer_overrides["RestartDevice"] = "NotNow"
    handled = sim.run_session()
    assert [(u, s) for u, _t, s in handled] == [(first, "NotNow")]  # the cancelled one is never sent
    assert client.delete(f"/api/v1/commands/{first}", headers=headers).status_code == 409
    assert client.get("/api/v1/commands/NOPE", headers=headers).status_code == 404
    assert client.delete("/api/v1/commands/NOPE", headers=headers).status_code == 404


def test_priority_and_expiry(client, auth, sim, device_id) -> None:
    headers = auth("read", "write")
    low = _post(client, f"/api/v1/devices/{device_id}/commands", {"request_type": "ProfileList"}, headers,
                "application/json").json["data"]["id"]
    high = _post(client, f"/api/v1/devices/{device_id}/commands",
                 {"request_type": "SecurityInfo", "priority": 10}, headers, "application/json").json["data"]["id"]
    gone = _post(client, f"/api/v1/devices/{device_id}/commands",
                 {"request_type": "DeviceLock", "expires_at": "2000-01-01T00:00:00Z"}, headers,
                 "application/json").json["data"]["id"]
    handled = sim.run_session()
    assert [u for u, _t, _s in handled] == [high, low]
    shown = client.get(f"/api/v1/commands/{gone}", headers=headers).json["data"]["attributes"]
    assert shown["status"] == "expired" and shown["sent_at"] is None


def test_expire_due_rewrites_statuses(client, auth, sim, device_id, db_session) -> None:
    from mdmserver.commands import service
    from mdmserver.db import utcnow

    headers = auth("read", "write")
    gone = _post(client, f"/api/v1/devices/{device_id}/commands",
                 {"request_type": "DeviceLock", "expires_at": "2000-01-01T00:00:00Z"}, headers,
                 "application/json").json["data"]["id"]
    kept = _post(client, f"/api/v1/devices/{device_id}/commands", {"request_type": "DeviceLock"}, headers,
                 "application/json").json["data"]["id"]
    assert service.expire_due(db_session, utcnow()) == 1
    db_session.commit()
    assert db_session.scalar(select(Command.status).where(Command.uuid == gone)) == "expired"
    assert db_session.scalar(select(Command.status).where(Command.uuid == kept)) == "queued"


def test_purge_finished(client, auth, sim, device_id, db_session) -> None:
    from datetime import timedelta

    from mdmserver.commands import service
    from mdmserver.db import utcnow

    headers = auth("read", "write")
    done = _post(client, f"/api/v1/devices/{device_id}/commands", {"request_type": "ProfileList"}, headers,
                 "application/json").json["data"]["id"]
    sim.run_session()
    waiting = _post(client, f"/api/v1/devices/{device_id}/commands", {"request_type": "DeviceLock"}, headers,
                    "application/json").json["data"]["id"]
    assert service.purge_finished(db_session, retention_days=90, batch_size=1) == 0
    later = utcnow() + timedelta(days=91)
    assert service.purge_finished(db_session, retention_days=90, now=later, batch_size=1) == 1
    remaining = set(db_session.scalars(select(Command.uuid).where(Command.device_id == device_id)))
    assert done not in remaining and waiting in remaining
