"""A simulated device over real HTTP: enroll → Authenticate → admission → TokenUpdate → commands →
results → inventory → CheckOut, and forged or malformed requests refused."""

from __future__ import annotations

import httpx
import pytest

from mdmserver.admission import service as admission
from mdmserver.db import db
from mdmserver.devices.service import get_device_by_udid
from mdmserver.simulator.device import HttpxTransport, SimulatedDevice
from tests.factories import install_push_topic


@pytest.fixture
def live(live_server, monkeypatch):
    monkeypatch.setitem(live_server.app.config, "ENROLL_RATE_LIMIT", 0)
    with live_server.app.app_context():
        install_push_topic(db.session, monkeypatch)
    return live_server


def _accept(app, udid: str) -> int:
    with app.app_context():
        device = get_device_by_udid(db.session, udid)
        admission.set_device_status(db.session, device, "accepted")
        db.session.commit()
        return device.id


def test_device_life_cycle_over_http(live) -> None:
    api = httpx.Client(base_url=live.url, headers=live.auth("read", "write"), timeout=30)
    transport = HttpxTransport(live.url)
    sim = SimulatedDevice(transport, platform="ipados")
    sim.enroll()
    assert sim.authenticate() == 200
    assert sim.token_update() == 200

    # pending (manual admission): listed with its status, commands queue but are not delivered
    pending = api.get(f"/api/v1/devices/{sim.udid}").json()["data"]
    device_id = int(pending["id"])
    assert pending["attributes"]["admission_status"] == "pending"
    lock = api.post(f"/api/v1/devices/{device_id}/commands",
                    json={"request_type": "DeviceLock", "parameters": {"Message": "Lost"}})
    assert lock.status_code == 201
    assert sim.idle() == (200, None)

    _accept(live.app, sim.udid)
    scan = api.get(f"/api/v1/devices/inventory/{device_id}")
    assert scan.status_code == 202 and len(scan.json()["data"]) == 5
    handled = sim.run_session()
    assert [t for _u, t, _s in handled] == ["DeviceLock", "DeviceInformation", "SecurityInfo", "ProfileList",
                                            "InstalledApplicationList", "CertificateList"]
    assert all(s == "Acknowledged" for _u, _t, s in handled)

    detail = api.get(f"/api/v1/devices/{device_id}").json()["data"]["attributes"]
    assert detail["admission_status"] == "accepted" and detail["platform"] == "ipados"
    assert detail["device_name"] == sim.device_name and detail["os_version"] == sim.os_version
    assert api.get(f"/api/v1/devices/{device_id}/installed_applications").json()["meta"]["total"] == 1
    assert api.get(f"/api/v1/devices/{device_id}/certificates").json()["meta"]["total"] == 2
    assert api.get(f"/api/v1/devices/{device_id}/security").json()["data"]["attributes"]["passcode_present"]
    result = api.get(f"/api/v1/commands/{handled[0][0]}").json()["data"]["attributes"]
    assert result["status"] == "acknowledged" and result["result"]["MessageResult"] == "NoPasscodeSet"

    # an error answer keeps its ErrorChain
    sim.answer_overrides["RestartDevice"] = "Error"
    restart = api.post(f"/api/v1/devices/{device_id}/commands", json={"request_type": "RestartDevice"}).json()
    sim.run_session()
    shown = api.get(f"/api/v1/commands/{restart['data']['id']}").json()["data"]["attributes"]
    assert shown["status"] == "error" and shown["error_chain"][0]["error_code"] == 12021

    # CheckOut: unenrolled, queue cancelled
    queued = api.post(f"/api/v1/devices/{device_id}/commands", json={"request_type": "ProfileList"}).json()
    assert sim.checkout() == 200
    detail = api.get(f"/api/v1/devices/{device_id}").json()["data"]["attributes"]
    assert detail["enrolled"] is False and detail["unenrolled_at"].endswith("Z")
    assert api.get(f"/api/v1/commands/{queued['data']['id']}").json()["data"]["attributes"]["status"] == "cancelled"
    api.close()
    transport.close()


def test_forged_and_malformed_over_http(live, monkeypatch) -> None:
    monkeypatch.setitem(live.app.config, "ADMISSION_POLICY", "auto")
    transport = HttpxTransport(live.url)
    a = SimulatedDevice(transport, seed=11)
    b = SimulatedDevice(transport, seed=12)
    for sim in (a, b):
        sim.enroll()
        assert sim.authenticate() == 200 and sim.token_update() == 200
    idle = {"UDID": a.udid, "Status": "Idle"}
    for misbehave in ("unsigned", "foreign_cert", "tampered", "bad_signature"):
        status, body = a.send("/mdm/connect", idle, misbehave=misbehave)
        assert status == 403 and body == b"forbidden\n", misbehave
    assert a.send("/mdm/connect", idle, misbehave="other_device_cert", other=b)[0] == 403
    assert a.send("/mdm/connect", b"", misbehave="garbage")[0] == 400
    assert a.send("/mdm/checkin", {"MessageType": "UserAuthenticate", "UDID": a.udid})[0] == 410
    assert a.send("/mdm/checkin", {"MessageType": "Bogus", "UDID": a.udid})[0] == 400
    monkeypatch.setitem(live.app.config, "MAX_DEVICE_BODY_BYTES", 4096)
    response = httpx.put(f"{live.url}/mdm/connect", content=b"x" * 10000)
    assert response.status_code == 413
    # nothing a device sends is answered 401 or 500
    for body in (b"", b"\x00" * 100, b"<plist><dict></dict></plist>"):
        for path in ("/mdm", "/mdm/checkin", "/mdm/connect"):
            assert httpx.put(f"{live.url}{path}", content=body).status_code == 403
    transport.close()
