"""The outbox worker against the APNs emulator: every answer APNs can give, backoff, certificate
refusal, re-push, purge, and the admin endpoints. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import ssl

import pytest
from sqlalchemy import func, select, update

from mdmserver.collaborators import secret_box
from mdmserver.db import utcnow
from mdmserver.jobs import Upkeep, UpkeepSettings
from mdmserver.pki import x509 as px
from mdmserver.push import service
from mdmserver.push.apns import HttpxAPNsClient
from mdmserver.push.worker import PushWorker, WorkerSettings, backoff_delay
from mdmserver.records.devices import Device
from mdmserver.records.push import DevicePushState, PushRequest
from mdmserver.simulator.apns_emulator import APNsEmulator
from tests.factories import TOPIC

from .helpers import make_device


@pytest.fixture(scope="module")
def emulator():
    with APNsEmulator() as emu:
        yield emu


@pytest.fixture
def apns(app, emulator, monkeypatch, db_session):
    """Emulator reset, app pointed at it, and an emulator-trusted push certificate imported."""
    emulator.reset()
    monkeypatch.setitem(app.config, "APNS_URL", emulator.url)
    monkeypatch.setitem(app.config, "APNS_CA_FILE", str(emulator.ca_file))
    cert_pem, key_pem = emulator.issue_push_certificate(TOPIC)
    service.import_push_certificate(db_session, cert_pem.encode(), key_pem.encode(), box=secret_box())
    db_session.commit()
    return emulator


@pytest.fixture
def worker(app, apns):
    workers = []

    def make(**settings) -> PushWorker:
        timeout = settings.pop("timeout", 10.0)
        w = PushWorker(
            app,
            settings=WorkerSettings(**settings),
            client_factory=lambda ids: HttpxAPNsClient(
                app.config["APNS_URL"], ids, ca_file=app.config["APNS_CA_FILE"], timeout=timeout
            ),
        )
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.close()


def requests_of(db_session, device_id: int) -> list[PushRequest]:
    db_session.expire_all()
    return list(db_session.scalars(select(PushRequest).where(PushRequest.device_id == device_id).order_by(PushRequest.id)))


def test_pushes_are_delivered_and_recorded(db_session, apns, worker):
    devices = [make_device(db_session) for _ in range(3)]
    assert service.request_push(db_session, [d.id for d in devices]) == 3
    db_session.commit()
    report = worker().run_once()
    assert (report.claimed, report.sent) == (3, 3)
    pushed = {p.token: p for p in apns.pushes}
    for device in devices:
        push = pushed[device.push_token.hex()]
        assert push.push_magic == device.push_magic and push.topic == TOPIC
        assert push.push_type == "mdm" and push.priority == "10"
        [row] = requests_of(db_session, device.id)
        assert row.status == "sent" and row.apns_id == push.apns_id and row.sent_at is not None
        assert row.lease_until is None and row.claimed_by is None
        state = db_session.get(DevicePushState, device.id)
        assert state.last_status == 200 and state.last_apns_id == push.apns_id
    assert service.counters(db_session)["sent"] == 3
    assert worker().run_once().claimed == 0  # nothing left


def test_coalescing_one_pending_push_per_device(db_session, apns, worker):
    device = make_device(db_session)
    assert service.request_push(db_session, [device.id, device.id]) == 1
    assert service.request_push(db_session, [device.id]) == 0
    assert service.request_push(db_session, select(Device.id).where(Device.id == device.id)) == 0
    db_session.commit()
    worker().run_once()
    assert apns.tokens() == [device.push_token.hex()]
    # once sent, a new command owes a new push
    assert service.request_push(db_session, [device.id]) == 1


@pytest.mark.parametrize(
    "overrides,reason",
    [
        ({"admission_status": "pending"}, "pending"),
        ({"admission_status": "rejected"}, "rejected"),
        ({"enrolled": False}, "unenrolled"),
        ({"push_token": None}, "no token"),
        ({"push_magic": None}, "no magic"),
    ],
)
def test_unpushable_devices_get_no_request(db_session, apns, overrides, reason):
    device = make_device(db_session, **overrides)
    assert service.request_push(db_session, [device.id]) == 0, reason
    assert requests_of(db_session, device.id) == []


def test_device_that_became_unpushable_is_skipped(db_session, apns, worker):
    device = make_device(db_session)
    service.request_push(db_session, [device.id])
    device.admission_status = "rejected"
    db_session.commit()
    report = worker().run_once()
    assert report.skipped == 1 and apns.total == 0
    [row] = requests_of(db_session, device.id)
    assert row.status == "skipped" and "rejected" in row.last_reason


def test_topic_mismatch_fails_without_sending(db_session, apns, worker):
    device = make_device(db_session, topic="com.apple.mgmt.External.other")
    service.request_push(db_session, [device.id])
    db_session.commit()
    assert worker().run_once().failed == 1
    assert apns.total == 0
    assert requests_of(db_session, device.id)[0].last_reason == "TopicMismatch"


@pytest.mark.parametrize("status,reason,counter", [(410, "Unregistered", "unregistered"), (400, "BadDeviceToken", "bad_token")])
def test_dead_tokens_are_marked_until_next_token_update(db_session, apns, worker, client, auth, status, reason, counter):
    device = make_device(db_session)
    apns.set_token_answer(device.push_token.hex(), status, reason)
    service.request_push(db_session, [device.id])
    db_session.commit()
    report = worker().run_once()
    assert report.failed == 1
    [row] = requests_of(db_session, device.id)
    assert row.status == "failed" and row.last_status == status and row.last_reason == reason
    assert service.counters(db_session)[counter] == 1
    status_doc = client.get(f"/api/v1/devices/{device.id}/push", headers=auth("read")).json["data"]["attributes"]
    assert status_doc["token_valid"] is False and status_doc["last_status"] == status
    # no new push requests while the token is dead
    assert service.request_push(db_session, [device.id]) == 0
    refused = client.post(f"/api/v1/devices/{device.id}/push", headers=auth("write"))
    assert refused.status_code == 409 and "TokenUpdate" in refused.json["errors"][0]["detail"]
    # the next TokenUpdate makes the token valid again
    db_session.execute(update(Device).where(Device.id == device.id).values(token_updated_at=utcnow() + dt.timedelta(seconds=1)))
    apns.reset()
    assert service.request_push(db_session, [device.id]) == 1
    db_session.commit()
    assert worker().run_once().sent == 1


@pytest.mark.parametrize("status,counter", [(429, "throttled"), (503, "server_error"), (500, "server_error")])
def test_transient_errors_back_off_then_succeed(db_session, apns, worker, status, counter):
    device = make_device(db_session)
    apns.fail_next(1, status)
    service.request_push(db_session, [device.id])
    db_session.commit()
    w = worker(backoff_base=60)
    report = w.run_once()
    assert report.retried == 1
    [row] = requests_of(db_session, device.id)
    assert row.status == "retry" and row.attempts == 1 and row.last_status == status
    delay = (row.not_before - utcnow()).total_seconds()
    assert 25 <= delay <= 61  # jittered within [base/2, base]
    assert w.run_once().claimed == 0  # not before its time
    later = w.run_once(now=utcnow() + dt.timedelta(seconds=62))
    assert later.sent == 1
    counters = service.counters(db_session)
    assert counters[counter] == 1 and counters["retried"] == 1 and counters["sent"] == 1


def test_retries_are_limited(db_session, apns, worker):
    device = make_device(db_session)
    apns.set_token_answer(device.push_token.hex(), 503)
    service.request_push(db_session, [device.id])
    db_session.commit()
    w = worker(max_attempts=3, backoff_base=1)
    when = utcnow()
    for _ in range(3):
        w.run_once(now=when)
        when += dt.timedelta(hours=2)
    [row] = requests_of(db_session, device.id)
    assert row.status == "failed" and row.attempts == 3 and row.completed_at is not None
    assert apns.counts[503] == 3
    assert service.counters(db_session)["failed"] == 1


def test_timeouts_and_connection_errors_are_retried(db_session, apns, worker):
    device = make_device(db_session)
    service.request_push(db_session, [device.id])
    db_session.commit()
    apns.delay = 1.0
    report = worker(timeout=0.2).run_once()
    assert report.retried == 1
    [row] = requests_of(db_session, device.id)
    assert row.status == "retry" and row.last_status is None or row.last_status == 0
    assert row.last_reason == "Timeout"
    assert service.counters(db_session)["connection_error"] == 1


def test_certificate_refused_stops_the_topic(db_session, apns, worker, client, auth):
    device = make_device(db_session)
    apns.set_mode(403, "BadCertificate")
    service.request_push(db_session, [device.id])
    db_session.commit()
    w = worker()
    report = w.run_once()
    assert report.retried == 1
    [row] = requests_of(db_session, device.id)
    assert row.status == "retry" and row.attempts == 0  # not the device's fault: not counted
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "BadCertificate" in ready.json["checks"]["apns"]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "mdmserver_push_certificate_stopped 1" in metrics
    assert 'mdmserver_push_outcomes_total{outcome="certificate_refused"} 1' in metrics
    info = client.get("/api/v1/push_certificate", headers=auth("read")).json
    assert "refused" in info["meta"]["warning"]
    # stopped: nothing is sent, however often the worker runs
    apns.set_mode(None)
    assert w.run_once().claimed == 0 and apns.counts[200] == 0
    # a new certificate takes effect without a restart
    cert_pem, key_pem = apns.issue_push_certificate(TOPIC)
    service.import_push_certificate(db_session, cert_pem.encode(), key_pem.encode(), box=secret_box())
    db_session.commit()
    assert w.run_once().sent == 1
    assert client.get("/readyz").json["checks"]["apns"] == "ok"


def test_foreign_certificate_over_tls13_is_retried_not_lost(db_session, apns, worker):
    """TLS 1.3 reports a refused client certificate only as a dropped connection: retry later."""
    from tests.factories import push_certificate

    cert, key = push_certificate()
    service.import_push_certificate(db_session, (px.cert_to_pem(cert) + px.key_to_pem(key)).encode(), box=secret_box())
    device = make_device(db_session)
    service.request_push(db_session, [device.id])
    db_session.commit()
    report = worker().run_once()
    assert report.retried == 1
    [row] = requests_of(db_session, device.id)
    assert row.status == "retry" and row.last_reason == "ConnectionError"


def test_tls12_handshake_refusal_stops_the_topic(db_session, app, worker, monkeypatch):
    """Over TLS 1.2 a refused client certificate fails the handshake: a certificate problem."""
    from tests.factories import push_certificate

    with APNsEmulator(max_tls_version=ssl.TLSVersion.TLSv1_2) as tls12:
        monkeypatch.setitem(app.config, "APNS_URL", tls12.url)
        monkeypatch.setitem(app.config, "APNS_CA_FILE", str(tls12.ca_file))
        cert, key = push_certificate()
        service.import_push_certificate(db_session, (px.cert_to_pem(cert) + px.key_to_pem(key)).encode(), box=secret_box())
        device = make_device(db_session)
        service.request_push(db_session, [device.id])
        db_session.commit()
        report = worker().run_once()
    assert report.retried == 1
    db_session.expire_all()
    row = service.get_active_certificate(db_session)
    assert row.stopped_at is not None and row.stop_reason == "TLSError"
    [request] = requests_of(db_session, device.id)
    assert request.status == "retry" and request.attempts == 0


def test_push_now_endpoint(db_session, apns, worker, client, auth):
    device = make_device(db_session)
    db_session.commit()
    response = client.post(f"/api/v1/devices/{device.id}/push", headers=auth("write"))
    assert response.status_code == 202
    assert response.json["data"]["attributes"]["status"] == "pending"
    assert response.json["data"]["attributes"]["reason"] == "manual"
    again = client.post(f"/api/v1/devices/{device.udid}/push", headers=auth("write"))
    assert again.status_code == 202 and again.json["data"]["id"] == response.json["data"]["id"]  # coalesced
    assert client.post(f"/api/v1/devices/{device.id}/push", headers=auth("read")).status_code == 403
    assert client.post("/api/v1/devices/999999/push", headers=auth("write")).status_code == 404
    worker().run_once()
    status = client.get(f"/api/v1/devices/{device.id}/push", headers=auth("read")).json["data"]["attributes"]
    assert status["last_status"] == 200 and status["token_valid"] and status["pending_requests"] == 0
    assert status["last_push_at"].endswith("Z")


def test_push_now_refuses_unpushable_devices(db_session, apns, client, auth):
    pending = make_device(db_session, admission_status="pending")
    untokened = make_device(db_session, push_token=None)
    db_session.commit()
    first = client.post(f"/api/v1/devices/{pending.id}/push", headers=auth("write"))
    assert first.status_code == 409 and "pending" in first.json["errors"][0]["detail"]
    second = client.post(f"/api/v1/devices/{untokened.id}/push", headers=auth("write"))
    assert second.status_code == 409 and "TokenUpdate" in second.json["errors"][0]["detail"]


def test_push_now_without_certificate(db_session, client, auth):
    device = make_device(db_session)
    db_session.commit()
    response = client.post(f"/api/v1/devices/{device.id}/push", headers=auth("write"))
    assert response.status_code == 409 and "push certificate" in response.json["errors"][0]["detail"]


def test_without_certificate_requests_wait(db_session, app, worker):
    device = make_device(db_session)
    service.request_push(db_session, [device.id])
    db_session.commit()
    row = service.get_active_certificate(db_session)
    row.active = False
    db_session.commit()
    assert worker().run_once().claimed == 0
    assert requests_of(db_session, device.id)[0].status == "pending"


def test_repush_stale_devices(db_session, apns, worker):
    from mdmserver.commands.service import enqueue_commands

    now = utcnow()
    silent = make_device(db_session, last_seen_at=now - dt.timedelta(hours=30))
    recent = make_device(db_session, last_seen_at=now - dt.timedelta(hours=1))
    idle = make_device(db_session, last_seen_at=now - dt.timedelta(hours=30))
    enqueue_commands(db_session, [silent.id, recent.id], "ProfileList", {}, enqueued_by="test", box=secret_box())
    worker().run_once()  # the enqueue pushes
    apns.reset()
    count = service.repush_stale(db_session, after=dt.timedelta(hours=24))
    db_session.commit()
    assert count == 1
    worker().run_once()
    assert apns.tokens() == [silent.push_token.hex()]
    assert idle.push_token.hex() not in apns.tokens()
    # at most once per period
    assert service.repush_stale(db_session, after=dt.timedelta(hours=24)) == 0
    # a period later both devices with queued commands have been silent long enough
    assert service.repush_stale(db_session, after=dt.timedelta(hours=24), now=now + dt.timedelta(hours=25)) == 2


def test_purge_keeps_recent_and_unfinished_records(db_session, apns, worker):
    devices = [make_device(db_session) for _ in range(3)]
    service.request_push(db_session, [d.id for d in devices])
    db_session.commit()
    worker().run_once()
    service.request_push(db_session, [devices[0].id])  # a pending one
    old = utcnow() - dt.timedelta(days=100)
    db_session.execute(update(PushRequest).where(PushRequest.status == "sent", PushRequest.device_id != devices[2].id)
                       .values(completed_at=old))
    db_session.commit()
    purged = service.purge_push_records(db_session, older_than=dt.timedelta(days=90), batch=1)
    assert purged == 2
    left = db_session.execute(select(PushRequest.device_id, PushRequest.status).order_by(PushRequest.id)).all()
    assert sorted(left) == sorted([(devices[2].id, "sent"), (devices[0].id, "pending")])


def test_backoff_grows_and_is_capped():
    settings = WorkerSettings(backoff_base=10, backoff_max=100)
    assert 5 <= backoff_delay(1, settings) <= 10
    assert 20 <= backoff_delay(3, settings) <= 40
    assert 50 <= backoff_delay(20, settings) <= 100


def test_bulk_request_is_set_based(db_session, apns, worker):
    from .helpers import make_devices

    ids = make_devices(db_session, 1200)
    assert service.request_push(db_session, select(Device.id).where(Device.id.in_(ids))) == 1200
    assert service.request_push(db_session, ids) == 0
    db_session.commit()
    assert db_session.scalar(select(func.count()).select_from(PushRequest).where(PushRequest.status == "pending")) == 1200
    w = worker(batch_size=500)
    sent = sum(w.run_once().sent for _ in range(3))
    assert sent == 1200 and apns.counts[200] == 1200
    assert len(set(apns.tokens())) == 1200


def test_upkeep_purges_finished_commands_past_retention(app, db_session):
    from mdmserver.commands.service import enqueue_commands
    from mdmserver.records.commands import Command

    device = make_device(db_session)
    enqueue_commands(db_session, [device.id], "DeviceInformation", None, enqueued_by="t", box=secret_box())
    enqueue_commands(db_session, [device.id], "SecurityInfo", None, enqueued_by="t", box=secret_box())
    enqueue_commands(db_session, [device.id], "ProfileList", None, enqueued_by="t", box=secret_box())
    db_session.commit()
    uuids = db_session.scalars(select(Command.uuid).where(Command.device_id == device.id).order_by(Command.id)).all()
    old, recent = utcnow() - dt.timedelta(days=91), utcnow() - dt.timedelta(days=1)
    db_session.execute(update(Command).where(Command.uuid == uuids[0]).values(status="acknowledged", completed_at=old))
    db_session.execute(update(Command).where(Command.uuid == uuids[1]).values(status="error", completed_at=recent))
    db_session.commit()
    Upkeep(app, UpkeepSettings(retention_days=90)).run(force=True)
    db_session.expire_all()
    left = db_session.scalars(select(Command.uuid).where(Command.device_id == device.id).order_by(Command.id)).all()
    assert left == uuids[1:]  # the old finished one is gone; the recent one and the queued one stay
