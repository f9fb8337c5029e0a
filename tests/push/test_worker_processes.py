"""Outbox crash safety, several workers on one database, graceful shutdown.

These tests commit for real, so they use their own database (not the rolled-back ``db_session``).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import func, select

from mdmserver.collaborators import secret_box
from mdmserver.db import db, utcnow
from mdmserver.push import service
from mdmserver.push.worker import PushWorker, WorkerSettings
from mdmserver.records.push import PushRequest
from mdmserver.simulator.apns_emulator import APNsEmulator
from tests.conftest import POSTGRES_URL, make_app
from tests.factories import TOPIC

from .helpers import make_devices


@pytest.fixture(scope="module")
def emulator():
    with APNsEmulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def own_app(tmp_path_factory, emulator):
    app, cleanup = make_app(
        tmp_path_factory.mktemp("push-workers"),
        apns_url=emulator.url,
        apns_ca_file=str(emulator.ca_file),
    )
    with app.app_context():
        cert_pem, key_pem = emulator.issue_push_certificate(TOPIC)
        service.import_push_certificate(db.session, cert_pem.encode(), key_pem.encode(), box=secret_box())
        db.session.commit()
    yield app
    cleanup()


@pytest.fixture
def outbox(own_app, emulator):
    """``fill(n)``: n pushable devices each owed a push; returns their tokens (hex)."""
    emulator.reset()
    with own_app.app_context():
        db.session.execute(PushRequest.__table__.delete())
        db.session.commit()

    def fill(count: int) -> set[str]:
        with own_app.app_context():
            ids = make_devices(db.session, count)
            assert service.request_push(db.session, ids) == count
            db.session.commit()
            from mdmserver.records.devices import Device

            return {t.hex() for t in db.session.scalars(select(Device.push_token).where(Device.id.in_(ids)))}

    return fill


def statuses(app) -> dict[str, int]:
    with app.app_context():
        rows = db.session.execute(select(PushRequest.status, func.count()).group_by(PushRequest.status)).all()
        db.session.remove()
    return dict(rows)


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def worker_env(app) -> dict[str, str]:
    return {
        **os.environ,
        "MDMSERVER_DATA_DIR": app.config["DATA_DIR"],
        "MDMSERVER_DATABASE_URL": app.config["DATABASE_URL"],
        "MDMSERVER_APNS_URL": app.config["APNS_URL"],
        "MDMSERVER_APNS_CA_FILE": app.config["APNS_CA_FILE"],
        "MDMSERVER_LOG_LEVEL": "WARNING",
    }


def test_worker_killed_mid_batch_loses_no_push(own_app, emulator, outbox):
    tokens = outbox(300)
    emulator.delay = 5.0  # answers never come before the kill
    script = (
        "from mdmserver.app import create_app\n"
        "from mdmserver.push.worker import PushWorker\n"
        "PushWorker(create_app()).run_once()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=worker_env(own_app))
    try:
        wait_for(lambda: statuses(own_app).get("sending") == 300)
        wait_for(lambda: emulator.received >= 100)  # pushes are on the wire
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert statuses(own_app) == {"sending": 300}  # nothing recorded, nothing lost
    emulator.delay = 0.0
    answered_before = emulator.counts[200]
    worker = PushWorker(own_app, settings=WorkerSettings(batch_size=500))
    try:
        assert worker.run_once().claimed == 0  # the dead worker's lease still holds
        after_lease = utcnow() + worker.settings.lease + dt.timedelta(seconds=1)
        assert worker.run_once(now=after_lease).sent == 300
    finally:
        worker.close()
    assert statuses(own_app) == {"sent": 300}
    delivered = set(emulator.tokens(200))
    assert delivered == tokens  # every device was woken (some perhaps twice: harmless)
    assert emulator.counts[200] - answered_before >= 300


def test_two_workers_share_the_outbox_without_double_sends(own_app, emulator, outbox):
    tokens = outbox(2000)
    emulator.delay = 0.02
    reports: dict[str, list] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def run(name: str) -> None:
        worker = PushWorker(own_app, settings=WorkerSettings(batch_size=100))
        try:
            while True:
                report = worker.run_once()
                reports[name].append(report)
                if report.claimed == 0:
                    return
        except BaseException as exc:  # noqa: BLE001 — surfaced below
            errors.append(exc)
        finally:
            worker.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in reports]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert statuses(own_app) == {"sent": 2000}
    delivered = emulator.tokens(200)
    assert len(delivered) == 2000 and set(delivered) == tokens  # each device exactly once
    claimed = {name: sum(r.claimed for r in rs) for name, rs in reports.items()}
    assert sum(claimed.values()) == 2000
    if POSTGRES_URL:
        assert all(claimed.values()), claimed  # SKIP LOCKED lets both work at once


def test_standalone_worker_cli_stops_gracefully(own_app, emulator, outbox):
    tokens = outbox(50)
    emulator.delay = 0.5
    proc = subprocess.Popen(
        [sys.executable, "-m", "mdmserver", "push-worker"], env=worker_env(own_app),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: emulator.received >= 50)  # batch in flight
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    # the batch in flight was finished and recorded before exiting
    assert statuses(own_app) == {"sent": 50}
    assert set(emulator.tokens(200)) == tokens
