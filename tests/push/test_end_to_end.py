"""The loop closed over real HTTP: admin action → outbox → worker → APNs emulator → the simulated
device is woken, polls, runs the command and reports → the admin sees the result."""

from __future__ import annotations

import threading

import httpx
import pytest

from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.jobs import run_worker
from mdmserver.push import service
from mdmserver.push.worker import PushWorker, WorkerSettings
from mdmserver.simulator.apns_emulator import APNsEmulator, Push
from mdmserver.simulator.device import HttpxTransport, SimulatedDevice
from tests.factories import TOPIC


@pytest.fixture
def loop(live_server, monkeypatch):
    app = live_server.app
    with APNsEmulator() as emulator:
        monkeypatch.setitem(app.config, "APNS_URL", emulator.url)
        monkeypatch.setitem(app.config, "APNS_CA_FILE", str(emulator.ca_file))
        monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
        monkeypatch.setitem(app.config, "ADMISSION_POLICY", "auto")
        with app.app_context():
            cert_pem, key_pem = emulator.issue_push_certificate(TOPIC)
            service.import_push_certificate(db.session, cert_pem.encode(), key_pem.encode(), box=secret_box())
            db.session.commit()
        worker = PushWorker(app, settings=WorkerSettings(poll_interval=0.1))
        stop = threading.Event()
        thread = threading.Thread(target=run_worker, args=(app, stop), kwargs={"worker": worker}, name="push-worker")
        thread.start()
        try:
            yield live_server, emulator
        finally:
            stop.set()
            thread.join(timeout=30)


def test_admin_action_wakes_the_device(loop):
    live, emulator = loop
    devices: dict[str, SimulatedDevice] = {}
    sessions: list[list] = []
    woken = threading.Event()

    def on_push(push: Push) -> None:
        device = devices[push.token]
        assert push.push_magic == device.push_magic
        sessions.append(device.run_session())
        woken.set()

    emulator.on_push = on_push
    sim = SimulatedDevice(HttpxTransport(live.url), platform="ios")
    sim.enroll()
    assert sim.topic == TOPIC
    assert sim.authenticate() == 200
    devices[sim.push_token.hex()] = sim
    assert sim.token_update() == 200

    api = httpx.Client(base_url=live.url, headers=live.auth("read", "write"), timeout=30)
    device_id = int(api.get(f"/api/v1/devices/{sim.udid}").json()["data"]["id"])
    queued = api.post(f"/api/v1/devices/{device_id}/commands", json={"request_type": "SecurityInfo", "parameters": {}})
    assert queued.status_code == 201, queued.text
    command_uuid = queued.json()["data"]["id"]

    assert woken.wait(30), "the device was never pushed"
    assert [t for _u, t, _s in sessions[0]] == ["SecurityInfo"]
    command = api.get(f"/api/v1/commands/{command_uuid}").json()["data"]["attributes"]
    assert command["status"] == "acknowledged"
    status = api.get(f"/api/v1/devices/{device_id}/push").json()["data"]["attributes"]
    assert status["last_status"] == 200 and status["token_valid"] is True

    # push now: the device checks in again (nothing queued: an empty session)
    woken.clear()
    assert api.post(f"/api/v1/devices/{device_id}/push").status_code == 202
    assert woken.wait(30)
    assert sessions[-1] == []
