"""Webhooks end to end: simulated devices (real HTTP, CMS-signed) cause events, the delivery worker POSTs
them to a receiver on 127.0.0.1, which checks each signature the way docs/webhooks.md tells receivers to."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from mdmserver.db import db, utcnow
from mdmserver.simulator.device import SimulatedDevice
from mdmserver.webhooks.delivery import DeliverySettings, DeliveryWorker
from mdmserver.webhooks.models import WebhookAttempt, WebhookDelivery
from tests.conftest import POSTGRES_URL
from tests.webhooks.receiver import receiver

JSONAPI = "application/vnd.api+json"
FAST = DeliverySettings(backoff_base=0.0, backoff_max=0.0, connect_timeout=2.0, read_timeout=2.0)


@pytest.fixture(autouse=True)
def _no_other_webhooks(api):
    """The live server's database lives for the module: each test starts with no subscription (and so
    no deliveries) of the tests before it."""
    for hook in api.get("/api/v1/webhooks", params={"page[size]": 500}).json()["data"]:
        assert api.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 204


def _subscribe(api, url: str, *event_types: str, name: str | None = None) -> tuple[str, str]:
    body = {"data": {"type": "webhooks", "attributes": {
        "name": name or f"hook-{time.monotonic_ns()}", "url": url, "event_types": list(event_types)}}}
    response = api.post("/api/v1/webhooks", json=body, headers={"Content-Type": JSONAPI})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["id"], data["attributes"]["secret"]


def _drain(app, *, settings: DeliverySettings = FAST, rounds: int = 60) -> DeliveryWorker:
    worker = DeliveryWorker(app, settings=settings)
    try:
        for _ in range(rounds):
            if worker.run_once().claimed == 0:
                return worker
        raise AssertionError("the outbox did not drain")
    finally:
        worker.close()


def _enrolled(transport) -> SimulatedDevice:
    sim = SimulatedDevice(transport)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    return sim


def _query(api, sim: SimulatedDevice, request_type: str = "DeviceInformation") -> None:
    response = api.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": request_type})
    assert response.status_code in (201, 202), response.text


def _device_id(api, sim: SimulatedDevice) -> str:
    return api.get(f"/api/v1/devices/{sim.udid}").json()["data"]["id"]


def test_enrol_acknowledge_check_out_reach_the_receiver_signed(live, api, transport):
    with receiver() as hooks:
        _hook_id, secret = _subscribe(
            api, hooks.url, "device.enrolled", "device.admission_changed", "command.acknowledged",
            "command.error", "command.not_now", "inventory.changed", "device.checked_out")
        sim = _enrolled(transport)
        device_id = _device_id(api, sim)
        _query(api, sim)
        _query(api, sim)  # the same answer again: the inventory does not change a second time
        _query(api, sim, "SecurityInfo")
        sim.answer_overrides["SecurityInfo"] = "Error"
        handled = sim.run_session()
        assert [(t, s) for _u, t, s in handled] == [("DeviceInformation", "Acknowledged"),
                                                     ("DeviceInformation", "Acknowledged"), ("SecurityInfo", "Error")]
        _query(api, sim, "ProfileList")
        sim.answer_overrides["ProfileList"] = "NotNow"
        sim.run_session()
        assert sim.checkout() == 200
        _drain(live.app)

    received = hooks.requests
    assert all(r.answered == 200 for r in received)
    assert all(r.signed_with(secret) for r in received)
    assert not any(r.signed_with(secret + "x") for r in received)
    events = [r.event for r in received]
    assert [e["type"] for e in events] == [
        "device.admission_changed", "device.enrolled", "command.acknowledged", "inventory.changed",
        "command.acknowledged", "command.error", "command.not_now", "device.checked_out"]
    for request, event in zip(received, events, strict=True):
        assert request.path == "/hooks/mdm"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-mdmserver-event"] == event["type"]
        assert request.headers["x-mdmserver-delivery"].isdigit()
        assert abs(int(request.headers["x-mdmserver-timestamp"]) - time.time()) < 120
        assert set(event) == {"id", "type", "created_at", "data"} and event["created_at"].endswith("Z")
        assert event["data"]["device"] == {"id": device_id, "udid": sim.udid, "serial_number": sim.serial_number}
    assert len({e["id"] for e in events}) == len(events)
    admission, enrolled, ack, inventory, _ack2, error, not_now, checked_out = (e["data"] for e in events)
    assert (admission["previous_status"], admission["status"]) == ("pending", "accepted")
    assert enrolled["admission_status"] == "accepted" and enrolled["rebinding"] is False
    uuids = [u for u, _t, _s in handled]
    assert ack["command"] == {"uuid": uuids[0], "request_type": "DeviceInformation", "status": "acknowledged"}
    assert inventory["source"] == "DeviceInformation"
    assert error["command"]["status"] == "error" and error["command"]["error_chain"][0]["error_code"] == 12021
    assert not_now["command"]["request_type"] == "ProfileList" and not_now["command"]["status"] == "not_now"
    assert checked_out["unenrolled_at"].endswith("Z")
    # nothing secret travels: no push token, no unlock token, no command result
    for request in received:
        for secret_value in (sim.push_token.hex(), sim.push_magic, sim.unlock_token.hex()):
            assert secret_value not in request.body.decode()


def test_a_failing_receiver_gets_each_event_once_in_order_per_device(live, api, transport):
    with receiver() as hooks:
        hooks.answer = lambda n: 500 if n < 3 else 200
        _subscribe(api, hooks.url, "device.enrolled", "command.acknowledged", "device.checked_out")
        sims = [_enrolled(transport) for _ in range(2)]
        for sim in sims:
            _query(api, sim, "SecurityInfo")
            _query(api, sim, "ProfileList")
            sim.run_session()
            assert sim.checkout() == 200
        _drain(live.app)

    assert [r.answered for r in hooks.requests[:3]] == [500, 500, 500]
    delivered = hooks.delivered()
    ids = [r.event["id"] for r in delivered]
    assert len(ids) == len(set(ids)) == 8  # exactly one successful delivery of each event
    for sim in sims:
        mine = [r.event for r in delivered if r.event["data"]["device"]["udid"] == sim.udid]
        assert [e["type"] for e in mine] == ["device.enrolled", "command.acknowledged", "command.acknowledged",
                                            "device.checked_out"]
        assert [e["data"]["command"]["request_type"] for e in mine[1:3]] == ["SecurityInfo", "ProfileList"]
        # a later event of a device is never attempted before the earlier one was delivered
        attempts = [r for r in hooks.requests if r.event["data"]["device"]["udid"] == sim.udid]
        seen_ok: list[str] = []
        for attempt in attempts:
            position = [e["id"] for e in mine].index(attempt.event["id"])
            assert seen_ok == [e["id"] for e in mine[:position]] or attempt.event["id"] in seen_ok
            if attempt.answered == 200:
                seen_ok.append(attempt.event["id"])
    with live.app.app_context():
        failures = db.session.scalars(select(WebhookAttempt).where(WebhookAttempt.status_code == 500)).all()
        assert len(failures) == 3
        assert all(a.response_body.startswith("receiver says no") and len(a.response_body) == 1024 for a in failures)
        db.session.remove()


def test_a_worker_stopped_mid_batch_loses_nothing_and_duplicates_nothing(live, api, transport):
    with receiver() as hooks:
        _subscribe(api, hooks.url, "command.acknowledged")
        sims = [_enrolled(transport) for _ in range(3)]
        for sim in sims:
            _query(api, sim, "SecurityInfo")
            sim.run_session()
        crashed = DeliveryWorker(live.app, settings=FAST)
        with live.app.app_context():
            claim, claimed = crashed.claim(db.session, utcnow())
            db.session.remove()
        assert len(claimed) == 3  # leased, never sent: the worker "died" here
        # another worker does not take them while the lease runs
        assert _drain(live.app).name and hooks.requests == []
        # once the lease has expired, they are sent, once each
        later = DeliveryWorker(live.app, settings=FAST)
        assert later.run_once(now=utcnow() + FAST.lease + timedelta(seconds=1)).delivered == 3
        later.close()
        _drain(live.app)
        # the dead worker waking up late cannot overwrite what the other one recorded
        with live.app.app_context():
            stale = crashed.record(db.session, claim, claimed, [type("O", (), {
                "delivered": False, "retryable": True, "status_code": None, "error": "late", "duration_ms": 1,
                "body": None})() for _ in claimed])
            assert stale.claimed == 3
            statuses = db.session.scalars(select(WebhookDelivery.status).where(
                WebhookDelivery.id.in_([c.delivery_id for c in claimed]))).all()
            assert set(statuses) == {"delivered"}
            db.session.remove()
        crashed.close()
    assert len(hooks.requests) == 3
    assert len({r.event["id"] for r in hooks.requests}) == 3


def test_a_lost_answer_is_sent_again_with_the_same_event_id(live, api, transport):
    """At least once: a worker that POSTed but died before recording makes the receiver see the event
    twice, with the same event id (and delivery id) to deduplicate on."""
    with receiver() as hooks:
        _subscribe(api, hooks.url, "command.acknowledged")
        sim = _enrolled(transport)
        _query(api, sim, "SecurityInfo")
        sim.run_session()
        crashed = DeliveryWorker(live.app, settings=FAST)
        with live.app.app_context():
            _claim, claimed = crashed.claim(db.session, utcnow())
            db.session.remove()
        crashed._loop.run_until_complete(crashed._send_all(claimed))  # POSTed; the record never happens
        crashed.close()
        later = DeliveryWorker(live.app, settings=FAST)
        assert later.run_once(now=utcnow() + FAST.lease + timedelta(seconds=1)).delivered == 1
        later.close()
    first, second = hooks.requests
    assert first.event["id"] == second.event["id"]
    assert first.headers["x-mdmserver-delivery"] == second.headers["x-mdmserver-delivery"]


def test_answers_other_than_retryable_ones_are_dead_and_replay_sends_again(live, api, transport):
    with receiver() as hooks:
        hooks.answer = lambda n: {0: 404, 1: 302}.get(n, 200)
        hook_id, _ = _subscribe(api, hooks.url, "command.acknowledged", "command.error")
        sim = _enrolled(transport)
        _query(api, sim, "SecurityInfo")
        sim.answer_overrides["ProfileList"] = "Error"
        _query(api, sim, "ProfileList")
        sim.run_session()
        _drain(live.app)
        assert [r.answered for r in hooks.requests] == [404, 302]  # no redirect followed
        dead = api.get(f"/api/v1/webhooks/{hook_id}/deliveries", params={"filter[status]": "dead"}).json()["data"]
        assert len(dead) == 2
        assert {d["attributes"]["last_status"] for d in dead} == {404, 302}
        for delivery in dead:
            log = delivery["attributes"]["attempt_log"]
            assert len(log) == 1 and log[0]["duration_ms"] >= 0
        oldest = min(dead, key=lambda d: int(d["id"]))
        replayed = api.post(f"/api/v1/webhooks/{hook_id}/deliveries/{oldest['id']}/replay")
        assert replayed.status_code == 202 and replayed.json()["data"]["attributes"]["status"] == "pending"
        _drain(live.app)
        assert hooks.requests[-1].answered == 200
        assert hooks.requests[-1].event["id"] == oldest["attributes"]["event_id"]
        got = api.get(f"/api/v1/webhooks/{hook_id}/deliveries/{oldest['id']}").json()["data"]["attributes"]
        assert got["status"] == "delivered" and [a["status_code"] for a in got["attempt_log"]] == [404, 200]


def test_timeouts_and_refused_connections_retry_until_the_attempts_run_out(live, api, transport):
    stall = threading.Event()
    with receiver() as hooks:
        def answer(n: int) -> int:
            if n == 0:
                stall.wait(5)  # longer than the read timeout
            return 200
        hooks.answer = answer
        hook_id, _ = _subscribe(api, hooks.url, "command.acknowledged")
        sim = _enrolled(transport)
        _query(api, sim, "SecurityInfo")
        sim.run_session()
        settings = DeliverySettings(backoff_base=0.0, backoff_max=0.0, connect_timeout=1.0, read_timeout=1.0)
        _drain(live.app, settings=settings)
        stall.set()
    log = api.get(f"/api/v1/webhooks/{hook_id}/deliveries").json()["data"][0]["attributes"]["attempt_log"]
    assert log[0]["error"].startswith("timeout") and log[0]["status_code"] is None
    assert log[-1]["status_code"] == 200

    # nobody listens any more: connection refused, retried, then dead after max_attempts
    _query(api, sim, "SecurityInfo")
    sim.run_session()
    _drain(live.app, settings=DeliverySettings(backoff_base=0.0, backoff_max=0.0, max_attempts=3,
                                               connect_timeout=1.0, read_timeout=1.0))
    newest = api.get(f"/api/v1/webhooks/{hook_id}/deliveries").json()["data"][0]["attributes"]
    assert newest["status"] == "dead" and newest["attempts"] == 3
    assert len(newest["attempt_log"]) == 3 and all(a["error"] for a in newest["attempt_log"])


@pytest.mark.skipif(not POSTGRES_URL, reason="several workers share the outbox on PostgreSQL")
def test_concurrent_workers_claim_each_delivery_once(live, api, transport):
    with receiver() as hooks:
        _subscribe(api, hooks.url, "command.acknowledged")
        sims = [_enrolled(transport) for _ in range(6)]
        for sim in sims:
            for request_type in ("SecurityInfo", "ProfileList", "CertificateList"):
                _query(api, sim, request_type)
            sim.run_session()
        workers = [DeliveryWorker(live.app, settings=FAST) for _ in range(4)]
        barrier = threading.Barrier(len(workers))
        errors: list[BaseException] = []

        def work(worker: DeliveryWorker) -> None:
            try:
                barrier.wait(10)
                for _ in range(40):
                    worker.run_once()
            except BaseException as exc:  # noqa: BLE001 — reported below
                errors.append(exc)
            finally:
                worker.close()

        threads = [threading.Thread(target=work, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
    ids = [r.event["id"] for r in hooks.requests]
    assert len(ids) == len(set(ids)) == 18
    for sim in sims:
        mine = [r.event["data"]["command"]["request_type"] for r in hooks.requests
                if r.event["data"]["device"]["udid"] == sim.udid]
        assert mine == ["SecurityInfo", "ProfileList", "CertificateList"]
    with live.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(WebhookAttempt)) >= 18
        db.session.remove()


def test_a_held_rebinding_is_enrolled_when_an_admin_accepts_it(live, api, transport):
    """A new certificate claiming an enrolled device is held (nothing is told: it may be an impostor);
    accepting it completes the enrollment: ``device.enrolled`` with ``rebinding`` true."""
    with receiver() as hooks:
        _subscribe(api, hooks.url, "device.enrolled", "device.admission_changed")
        first = _enrolled(transport)
        again = SimulatedDevice(transport, udid=first.udid, serial_number=first.serial_number, seed=7)
        again.enroll()
        assert again.authenticate() == 200  # held for an administrator
        _drain(live.app)
        assert [r.event["type"] for r in hooks.requests] == ["device.admission_changed", "device.enrolled"]
        device_id = _device_id(api, first)
        sets = api.get("/api/management/v1/admission/devices", params={"device_id": device_id}).json()
        held = next(s for s in sets if s["status"] == "pending")
        assert api.put(f"/api/management/v1/admission/devices/{held['id']}/status",
                       json={"status": "accepted"}).status_code == 200
        _drain(live.app)
    last = hooks.requests[-1].event
    assert last["type"] == "device.enrolled" and last["data"]["rebinding"] is True
    assert last["data"]["device"]["id"] == device_id and len(hooks.requests) == 3


def test_a_webhook_deleted_while_its_batch_is_in_flight(live, api, transport):
    with receiver() as hooks:
        hook_id, _ = _subscribe(api, hooks.url, "command.acknowledged")
        kept_id, _ = _subscribe(api, hooks.url, "command.acknowledged")
        sim = _enrolled(transport)
        _query(api, sim, "SecurityInfo")
        sim.run_session()
        worker = DeliveryWorker(live.app, settings=FAST)
        with live.app.app_context():
            claim, claimed = worker.claim(db.session, utcnow())
            db.session.remove()
        outcomes = worker._loop.run_until_complete(worker._send_all(claimed))
        assert api.delete(f"/api/v1/webhooks/{hook_id}").status_code == 204
        with live.app.app_context():
            report = worker.record(db.session, claim, claimed, outcomes)
            db.session.remove()
        worker.close()
    assert report.claimed == 2 and len(hooks.requests) == 2
    kept = api.get(f"/api/v1/webhooks/{kept_id}/deliveries").json()["data"]
    assert [d["attributes"]["status"] for d in kept] == ["delivered"]
