"""Shared fixtures.

The database is chosen by the environment: SQLite in a temporary folder by default, PostgreSQL when
``MDMSERVER_TEST_POSTGRES_URL`` is set (each pytest run gets its own schema, dropped at the end, so runs
never collide). The schema is built by running the Alembic migrations, never ``create_all``.

``db_session`` runs each test inside a transaction on one connection that is rolled back afterwards;
code under test that commits only releases a SAVEPOINT. ``live_server`` serves a separate app and
database over real HTTP for end-to-end tests (it must not be combined with ``db_session``).
"""

from __future__ import annotations

import os
import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.serving import make_server

from mdmserver.app import create_app
from mdmserver.bootstrap import initialize
from mdmserver.db import MdmSession, db
from mdmserver.simulator.device import FlaskTransport, HttpxTransport, SimulatedDevice
from mdmserver.tokens.service import create_token
from tests.factories import install_push_topic

POSTGRES_URL = os.environ.get("MDMSERVER_TEST_POSTGRES_URL")

CONFORMANCE_DIR = Path(
    os.environ.get("MDMSERVER_CONFORMANCE_DIR", Path(__file__).resolve().parents[2] / "shared" / "conformance")
)


def pytest_report_header(config) -> str:
    return f"mdmserver database: {'PostgreSQL ' + POSTGRES_URL if POSTGRES_URL else 'SQLite'}"


class _ConnectionBoundSession(MdmSession):
    """Flask-SQLAlchemy's session picks the app's engine; in tests it must use the test connection."""

    def get_bind(self, *args, **kwargs):
        return self.bind


def _new_database(tmp: Path) -> tuple[str, callable]:
    """A fresh, empty database: its URL and a function that removes it."""
    if not POSTGRES_URL:
        return f"sqlite:///{tmp / 'mdmserver.db'}", lambda: None
    schema = f"t_{os.getpid()}_{secrets.token_hex(4)}"
    admin_engine = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"

    def drop() -> None:
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin_engine.dispose()

    return url, drop


def make_app(tmp: Path, **overrides) -> tuple[Flask, callable]:
    url, drop = _new_database(tmp)
    settings = {
        "data_dir": str(tmp / "data"),
        "database_url": url,
        "public_url": "http://127.0.0.1:8080",
        "log_level": "WARNING",
        **overrides,
    }
    app = create_app(overrides=settings, environ={})
    app.config["TESTING"] = True
    initialize(app)

    def cleanup() -> None:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        drop()

    return app, cleanup


@pytest.fixture(scope="session")
def app(tmp_path_factory) -> Iterator[Flask]:
    application, cleanup = make_app(tmp_path_factory.mktemp("app"))
    yield application
    cleanup()


@pytest.fixture
def db_session(app: Flask):
    """A session inside a transaction that is rolled back after the test."""
    with app.app_context():
        connection = db.engine.connect()
        transaction = connection.begin()
        original = db.session
        db.session = db._make_scoped_session(
            {"bind": connection, "join_transaction_mode": "create_savepoint", "class_": _ConnectionBoundSession}
        )
        try:
            yield db.session
        finally:
            db.session.remove()
            db.session = original
            if transaction.is_active:
                transaction.rollback()
            connection.close()


@pytest.fixture
def client(app: Flask, db_session):
    return app.test_client()


@pytest.fixture
def make_token(db_session):
    def make(*scopes: str, name: str | None = None) -> str:
        _, token = create_token(db_session, name or f"test-{uuid.uuid4().hex[:8]}", scopes)
        db_session.commit()
        return token

    return make


@pytest.fixture
def auth(make_token):
    def headers(*scopes: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(*scopes)}"}

    return headers


@dataclass
class LiveServer:
    app: Flask
    url: str
    _tokens: dict = field(default_factory=dict)

    def token(self, *scopes: str) -> str:
        key = tuple(sorted(scopes))
        if key not in self._tokens:
            with self.app.app_context():
                _, token = create_token(db.session, f"live-{uuid.uuid4().hex[:8]}", scopes)
                db.session.commit()
            self._tokens[key] = token
        return self._tokens[key]

    def auth(self, *scopes: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(*scopes)}"}


@pytest.fixture(scope="module")
def live_server(tmp_path_factory) -> Iterator[LiveServer]:
    """The app on a real HTTP socket with its own database (fresh per test module)."""
    application, cleanup = make_app(tmp_path_factory.mktemp("live"))
    server = make_server("127.0.0.1", 0, application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    application.config["PUBLIC_URL"] = f"http://127.0.0.1:{server.server_port}"
    try:
        yield LiveServer(app=application, url=application.config["PUBLIC_URL"])
    finally:
        server.shutdown()
        thread.join(timeout=10)
        cleanup()


@pytest.fixture
def live(live_server: LiveServer, monkeypatch) -> LiveServer:
    """The live server with auto admission, no enrollment rate limit and a push certificate: a device
    the simulator enrolls is accepted and can receive commands. Modules that need other settings define
    their own ``live``."""
    monkeypatch.setitem(live_server.app.config, "ENROLL_RATE_LIMIT", 0)
    monkeypatch.setitem(live_server.app.config, "ADMISSION_POLICY", "auto")
    with live_server.app.app_context():
        install_push_topic(db.session, monkeypatch)
    return live_server


@pytest.fixture
def api(live: LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client of the live server's admin API with scopes read, write and admin."""
    with httpx.Client(base_url=live.url, headers=live.auth("read", "write", "admin"), timeout=30) as client:
        yield client


@pytest.fixture
def transport(live: LiveServer) -> Iterator[HttpxTransport]:
    """The device simulator's HTTP transport to the live server."""
    device_transport = HttpxTransport(live.url)
    yield device_transport
    device_transport.close()


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """The shared conformance data (``MDMSERVER_CONFORMANCE_DIR``). Missing: a loud skip on a
    developer's checkout, a failure in CI (``CI=true``), which always has it."""
    if not CONFORMANCE_DIR.is_dir():
        message = (
            f"CONFORMANCE DATA MISSING: {CONFORMANCE_DIR} is absent; set MDMSERVER_CONFORMANCE_DIR "
            "to run the conformance tests"
        )
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return CONFORMANCE_DIR


@pytest.fixture
def enrolled(app, client, db_session, monkeypatch):
    """A factory of simulated devices enrolled through the test client and admitted (auto admission),
    with their push token sent."""
    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "auto")
    install_push_topic(db_session, monkeypatch)

    def make(platform: str = "ios", **kwargs) -> SimulatedDevice:
        sim = SimulatedDevice(FlaskTransport(client), platform=platform, **kwargs)
        sim.enroll()
        assert sim.authenticate() == 200
        assert sim.token_update() == 200
        return sim

    return make
