"""SQLite's write lock (issue 9, item 4): a slow writer must not turn every other request into a 500.

A second connection holds a write transaction open for several times the (small) busy timeout while
real HTTP requests run beside it in threads: reads answer 200 without waiting, writes answer 503 with
``Retry-After`` (JSON:API for admins, plain text for devices), /readyz tells a busy database from an
unreachable one, and the push worker keeps going.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import event, select
from werkzeug.serving import make_server

from mdmserver.app import create_app
from mdmserver.collaborators import secret_box
from mdmserver.commands import service as commands
from mdmserver.db import db
from mdmserver.jobs import run_worker
from mdmserver.push import service as push_service
from mdmserver.push.worker import PushWorker, WorkerSettings
from mdmserver.records.commands import Command, CommandStatus
from mdmserver.records.devices import Device
from mdmserver.records.push import PushRequest, PushStatus
from mdmserver.simulator.apns_emulator import APNsEmulator
from mdmserver.simulator.device import HttpxTransport, SimulatedDevice
from mdmserver.tokens.service import create_token, hash_token
from tests.conftest import POSTGRES_URL, make_app

pytestmark = pytest.mark.skipif(POSTGRES_URL is not None, reason="SQLite's database-wide write lock")

BUSY_TIMEOUT = 0.5  # seconds a writer waits for the lock (setting database_busy_timeout)
JSONAPI = "application/vnd.api+json"
TOPIC = "com.apple.mgmt.External.5a5a5a5a-1111-4222-8333-944455556666"


@dataclass
class Server:
    app: object
    url: str
    db_path: str
    emulator: APNsEmulator

    def token(self, *scopes: str) -> str:
        with self.app.app_context():
            _, token = create_token(db.session, f"t-{time.monotonic_ns()}", scopes)
            db.session.commit()
        return token


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    with APNsEmulator() as emulator:
        app, cleanup = make_app(
            tmp_path_factory.mktemp("locking"),
            database_busy_timeout=BUSY_TIMEOUT,
            admission_policy="auto",
            enroll_rate_limit=0,
            apns_url=emulator.url,
            apns_ca_file=str(emulator.ca_file),
        )
        with app.app_context():
            cert_pem, key_pem = emulator.issue_push_certificate(TOPIC)
            push_service.import_push_certificate(db.session, cert_pem.encode(), key_pem.encode(), box=secret_box())
            db.session.commit()
        http = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=http.serve_forever, daemon=True)
        thread.start()
        app.config["PUBLIC_URL"] = f"http://127.0.0.1:{http.server_port}"
        try:
            yield Server(app, app.config["PUBLIC_URL"], app.config["DATABASE_URL"].removeprefix("sqlite:///"),
                         emulator)
        finally:
            http.shutdown()
            thread.join(timeout=10)
            cleanup()


@contextmanager
def slow_write(db_path: str, *, exclusive: bool = False) -> Iterator[None]:
    """A write transaction held open on a connection of its own, as a slow request would.

    ``exclusive`` also takes SQLite's exclusive locking mode, which shuts out new readers too (the
    only way to make a WAL database refuse reads); the caller empties the app's pool first.
    """
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=5)
    try:
        if exclusive:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE organizations SET name = name")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


class RecordingTransport(HttpxTransport):
    """The simulator's HTTP transport, keeping the last response's headers."""

    last_headers: dict[str, str] = {}

    def request(self, method, path, content=None, headers=None):
        status, response_headers, body = super().request(method, path, content=content, headers=headers)
        self.last_headers = response_headers
        return status, response_headers, body


def _enrolled_device(server: Server) -> tuple[SimulatedDevice, RecordingTransport, int]:
    transport = RecordingTransport(server.url)
    sim = SimulatedDevice(transport, topic=TOPIC)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    with server.app.app_context():
        device_id = db.session.scalar(select(Device.id).where(Device.udid == sim.udid))
        db.session.remove()
    return sim, transport, device_id


def _enqueue(server: Server, device_id: int) -> str:
    with server.app.app_context():
        uuid = commands.enqueue_commands(db.session, [device_id], "SecurityInfo", {}, enqueued_by="t",
                                         box=secret_box())[0]["uuid"]
        db.session.commit()
        db.session.remove()
    return uuid


def _assert_busy_jsonapi(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Content-Type"].startswith(JSONAPI)
    body = response.json()
    assert body["errors"][0]["status"] == "503" and body["errors"][0]["code"] == "database_busy"
    assert body["meta"]["request_id"] == response.headers["X-Request-ID"]


def test_reads_answer_and_writes_get_503_while_a_slow_write_holds_the_lock(server: Server) -> None:
    reader, writer, fresh = server.token("read"), server.token("write"), server.token("read")
    sim, device_transport, device_id = _enrolled_device(server)
    _enqueue(server, device_id)  # so that the device's Idle writes (it delivers the command)
    api = httpx.Client(base_url=server.url, timeout=30)
    read, write = {"Authorization": f"Bearer {reader}"}, {"Authorization": f"Bearer {writer}"}
    # both tokens used once, so their last use is fresh; `fresh` is never used before the lock
    assert api.get("/api/v1/organization", headers=read).status_code == 200
    assert api.get("/api/v1/commands", headers=write).status_code == 403

    reads = [
        ("/api/v1/devices", read), (f"/api/v1/devices/{device_id}", read), ("/api/v1/organization", read),
        ("/api/v1/commands", read), ("/api/v1/device_groups", read), (f"/api/v1/devices/{device_id}/push", read),
        ("/api/management/v1/admission/devices", read), ("/api/v1/profiles", read), ("/readyz", {}),
        ("/metrics", {}), ("/api/v1/devices", {"Authorization": f"Bearer {fresh}"}),
    ]
    group = {"data": {"type": "device_groups", "attributes": {"name": "while-locked"}}}

    def timed(call):
        response = call()
        return response, time.monotonic()

    with slow_write(server.db_path):
        locked_at = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            read_futures = [pool.submit(timed, lambda p=p, h=h: api.get(p, headers=h)) for p, h in reads]
            write_future = pool.submit(timed, lambda: api.post(
                "/api/v1/device_groups", json=group, headers={**write, "Content-Type": JSONAPI}))
            device_future = pool.submit(timed, sim.idle)
            read_results = [f.result() for f in read_futures]
            write_response, write_finished = write_future.result()
            (device_status, _), _ = device_future.result()
            device_headers = dict(device_transport.last_headers)
        released_at = time.monotonic()

    # every read answered 200 while the lock was still held (none waited for it)
    for (path, _), (response, finished) in zip(reads, read_results, strict=True):
        assert response.status_code == 200, (path, response.status_code, response.text)
        assert finished < released_at, path
    ready = next(r for (p, _), (r, _) in zip(reads, read_results, strict=True) if p == "/readyz").json()
    assert ready["status"] == "ready" and ready["checks"]["database"] == "ok"
    assert write_finished - locked_at >= BUSY_TIMEOUT  # the lock outlived the busy timeout

    # a write waited busy_timeout for the lock, then answered 503 + Retry-After, never 500
    _assert_busy_jsonapi(write_response)
    # a device whose Idle must write gets a plain 503 (never 401, never 500)
    assert device_status == 503
    assert device_headers["retry-after"] == "1" and device_headers["content-type"].startswith("text/plain")

    # once the lock is free, the same write and the device go through
    response = api.post("/api/v1/device_groups", json=group, headers={**write, "Content-Type": JSONAPI})
    assert response.status_code == 201, response.text
    assert sim.idle()[0] == 200


def test_fresh_token_use_is_recorded_outside_the_read(server: Server) -> None:
    """The last-use bookkeeping is skipped while the lock is held and written once it is free."""
    token = server.token("read")
    api = httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {token}"})

    def last_used():  # read on a connection of our own: a reader never waits for the lock
        with contextlib.closing(sqlite3.connect(server.db_path)) as conn:
            return conn.execute("SELECT last_used_at FROM api_tokens WHERE token_hash = ?",
                                (hash_token(token),)).fetchone()[0]

    with slow_write(server.db_path):
        assert api.get("/api/v1/organization").status_code == 200
        assert last_used() is None
    assert api.get("/api/v1/organization").status_code == 200
    assert last_used() is not None


@contextmanager
def sqlite_begins(server: Server, begins: list[str]) -> Iterator[None]:
    """Record every BEGIN that SQLite itself runs on the server's connections (its trace callback, so
    whichever way the statement reached the driver)."""
    traced = []

    def trace(statement: str) -> None:
        if statement.lstrip().upper().startswith("BEGIN"):
            begins.append(statement.strip().upper())

    def attach(dbapi_connection, connection_record, connection_proxy) -> None:
        dbapi_connection.set_trace_callback(trace)
        traced.append(dbapi_connection)

    with server.app.app_context():
        engine = db.engine
    event.listen(engine.pool, "checkout", attach)
    try:
        yield
    finally:
        event.remove(engine.pool, "checkout", attach)
        for connection in traced:
            connection.set_trace_callback(None)


def test_reads_begin_deferred_and_writes_begin_immediate(server: Server) -> None:
    token = server.token("read", "write")
    api = httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {token}"})
    assert api.get("/api/v1/organization").status_code == 200  # records the token's use
    begins: list[str] = []
    with sqlite_begins(server, begins):
        for path in ("/api/v1/devices", "/api/v1/organization", "/readyz", "/api/v1/device_groups"):
            assert api.get(path).status_code == 200
        read_begins = list(begins)
        begins.clear()
        response = api.post("/api/v1/device_groups", headers={"Content-Type": JSONAPI},
                            json={"data": {"type": "device_groups", "attributes": {"name": "immediate"}}})
        assert response.status_code == 201
        write_begins = list(begins)
    assert read_begins and set(read_begins) == {"BEGIN DEFERRED"}
    assert write_begins and set(write_begins) == {"BEGIN IMMEDIATE"}


def test_idle_with_nothing_to_write_never_takes_the_write_lock(server: Server) -> None:
    """Issue 12: an Idle with an empty queue (last_seen fresh) only reads, outside any transaction
    (no BEGIN at all), and answers while a slow writer holds the lock; an Idle that delivers a command
    begins IMMEDIATE once, waits for the lock and delivers the command once."""
    sim, _, device_id = _enrolled_device(server)
    assert sim.idle() == (200, None)  # last_seen fresh
    begins: list[str] = []
    with sqlite_begins(server, begins):
        with slow_write(server.db_path):
            started = time.monotonic()
            assert sim.idle() == (200, None)
            assert time.monotonic() - started < BUSY_TIMEOUT  # it did not wait for the lock
        assert begins == []
        uuid = _enqueue(server, device_id)
        begins.clear()
        with ThreadPoolExecutor(max_workers=1) as pool:
            with slow_write(server.db_path):
                future = pool.submit(sim.idle)
                time.sleep(BUSY_TIMEOUT / 3)  # the device read its command and now waits for the lock
            status, command = future.result()
    assert status == 200 and command is not None and command["CommandUUID"] == uuid
    assert begins == ["BEGIN IMMEDIATE"]
    with server.app.app_context():
        sent = db.session.execute(select(Command.status, Command.attempts).where(Command.uuid == uuid)).one()
        db.session.remove()
    assert sent == (CommandStatus.SENT.value, 1)


def test_readyz_tells_busy_from_unreachable(server: Server, tmp_path) -> None:
    api = httpx.Client(base_url=server.url, timeout=30)
    token = server.token("read")
    assert api.get("/readyz").status_code == 200
    with server.app.app_context():
        db.engine.dispose()  # no pooled connection: new ones must open under the exclusive lock
    with slow_write(server.db_path, exclusive=True):
        ready = api.get("/readyz")
        organization = api.get("/api/v1/organization", headers={"Authorization": f"Bearer {token}"})
        alive = api.get("/healthz")
    assert ready.status_code == 503 and ready.headers["Retry-After"] == "1"
    assert ready.json()["checks"]["database"].startswith("busy")
    _assert_busy_jsonapi(organization)  # even a read that meets a busy database is a 503, not a 500
    assert alive.status_code == 200
    assert api.get("/readyz").status_code == 200

    unreachable = create_app(overrides={"database_url": f"sqlite:///{tmp_path}/missing/dir/x.db",
                                        "data_dir": str(tmp_path / "data"), "log_level": "WARNING"},
                             environ={})
    response = unreachable.test_client().get("/readyz")
    assert response.status_code == 503 and "Retry-After" not in response.headers
    assert response.get_json()["checks"]["database"].startswith("unreachable")


def test_push_worker_survives_a_busy_database(server: Server, caplog) -> None:
    app = server.app
    with app.app_context():
        device = Device(udid="LOCKING-PUSH-DEVICE", platform="ios", topic=TOPIC, admission_status="accepted",
                        enrolled=True, push_token=bytes(range(32)), push_magic="MAGIC-LOCKING")
        db.session.add(device)
        db.session.commit()
        device_id = device.id
        db.session.execute(PushRequest.__table__.delete())
        db.session.commit()
        db.session.remove()
    server.emulator.reset()
    worker = PushWorker(app, settings=WorkerSettings(poll_interval=0.05))
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, args=(app, stop), kwargs={"worker": worker}, daemon=True)
    caplog.set_level(logging.WARNING, logger="mdmserver.jobs")
    thread.start()
    try:
        with slow_write(server.db_path):
            time.sleep(BUSY_TIMEOUT * 4)
        assert thread.is_alive()
        assert any("database busy" in r.getMessage() for r in caplog.records)
        with app.app_context():
            assert push_service.request_push(db.session, [device_id]) == 1
            db.session.commit()
            db.session.remove()
        assert server.emulator.wait_for(1, timeout=30)
        assert server.emulator.tokens() == [bytes(range(32)).hex()]
        deadline = time.monotonic() + 30
        while True:
            with app.app_context():
                status = db.session.scalar(select(PushRequest.status).where(PushRequest.device_id == device_id))
                db.session.remove()
            if status == PushStatus.SENT.value or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == PushStatus.SENT.value
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
