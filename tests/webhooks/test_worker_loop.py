"""The worker process's loop (``mdmserver push-worker``, also started by ``mdmserver serve``) delivers
webhooks beside the pushes: enrollment over HTTP → event → receiver, and the upkeep job's
``push_certificate.expiring``, with no request ever waiting on a receiver."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import httpx
import pytest

from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.jobs import Upkeep, run_worker
from mdmserver.push import service
from mdmserver.push.worker import PushWorker, WorkerSettings
from mdmserver.simulator.apns_emulator import APNsEmulator
from mdmserver.simulator.device import HttpxTransport, SimulatedDevice
from mdmserver.webhooks.delivery import DeliverySettings, DeliveryWorker
from tests.factories import TOPIC
from tests.webhooks.receiver import receiver


@pytest.fixture
def running(live_server, monkeypatch):
    app = live_server.app
    with APNsEmulator() as emulator, receiver() as hooks:
        monkeypatch.setitem(app.config, "APNS_URL", emulator.url)
        monkeypatch.setitem(app.config, "APNS_CA_FILE", str(emulator.ca_file))
        monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
        monkeypatch.setitem(app.config, "ADMISSION_POLICY", "auto")
        with app.app_context():
            cert_pem, key_pem = emulator.issue_push_certificate(TOPIC)
            service.import_push_certificate(db.session, cert_pem.encode(), key_pem.encode(), box=secret_box())
            db.session.commit()
        stop = threading.Event()
        thread = threading.Thread(target=run_worker, args=(app, stop), name="push-worker", kwargs={
            "worker": PushWorker(app, settings=WorkerSettings(poll_interval=0.1)),
            "webhook_worker": DeliveryWorker(app, settings=DeliverySettings(connect_timeout=2, read_timeout=2))})
        thread.start()
        try:
            yield live_server, hooks
        finally:
            stop.set()
            thread.join(timeout=30)


def _wait_for(hooks, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while len(hooks.delivered()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(hooks.delivered()) >= count, [r.event["type"] for r in hooks.requests]


def test_the_worker_loop_delivers_events(running):
    live, hooks = running
    with httpx.Client(base_url=live.url, headers=live.auth("admin"), timeout=30) as api:
        created = api.post("/api/v1/webhooks", headers={"Content-Type": "application/vnd.api+json"}, json={
            "data": {"type": "webhooks", "attributes": {
                "name": "loop", "url": hooks.url, "event_types": ["device.enrolled", "push_certificate.expiring"]}}})
        assert created.status_code == 201
        secret = created.json()["data"]["attributes"]["secret"]
        sim = SimulatedDevice(HttpxTransport(live.url))
        sim.enroll()
        assert sim.authenticate() == 200
        _wait_for(hooks, 1)
        assert hooks.requests[0].event["type"] == "device.enrolled" and hooks.requests[0].signed_with(secret)

        # the upkeep job finds the certificate two days from its end: one event for the 7-day threshold
        # (the wider ones are passed over), and running it again tells nothing new
        with live.app.app_context():
            not_after = service.get_active_certificate(db.session).not_after
            db.session.remove()
        upkeep = Upkeep(live.app)
        upkeep.run(force=True, now=not_after - timedelta(days=2))
        upkeep.run(force=True, now=not_after - timedelta(days=2))
        _wait_for(hooks, 2)
        time.sleep(0.5)
        expiring = [r.event for r in hooks.delivered() if r.event["type"] == "push_certificate.expiring"]
        assert len(expiring) == 1
        assert expiring[0]["data"]["threshold_days"] == 7 and expiring[0]["data"]["days_left"] == 2
