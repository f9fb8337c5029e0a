"""Pooled PostgreSQL connections are pinged before use only after sitting idle (mdmserver.db._ping_if_idle),
instead of before every checkout (pool_pre_ping): a connection the server dropped while it sat in the
pool is replaced, and one in steady use costs no round trip."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from mdmserver import db as db_module
from mdmserver.config import load_config

POSTGRES_URL = os.environ.get("MDMSERVER_TEST_POSTGRES_URL")

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL only (SQLite connections are files)")


def _pid(engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(sa.text("SELECT pg_backend_pid()"))


def _drop_from_server(pid: int) -> None:
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            assert connection.scalar(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        admin.dispose()


@pytest.fixture
def engine(tmp_path):
    options = load_config(environ={}, overrides={"data_dir": str(tmp_path), "database_url": POSTGRES_URL})[
        "SQLALCHEMY_ENGINE_OPTIONS"]
    assert "pool_pre_ping" not in options  # the ping below is the only one
    engine = sa.create_engine(POSTGRES_URL, pool_size=1, max_overflow=0, **options)
    yield engine
    engine.dispose()


def test_idle_connection_dropped_by_the_server_is_replaced(engine, monkeypatch):
    first = _pid(engine)
    _drop_from_server(first)
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert _pid(engine) != first  # the ping failed, the pool connected again, the request went on


def test_connection_in_steady_use_is_not_pinged(engine, monkeypatch):
    first = _pid(engine)
    assert _pid(engine) == first  # the same pooled connection
    _drop_from_server(first)
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 3600.0)
    # back in the pool a moment ago: handed out without a round trip, so the drop shows at first use
    with pytest.raises(sa.exc.OperationalError):
        _pid(engine)
    assert _pid(engine) != first  # and the pool replaced it


def test_a_pinged_connection_is_handed_out_idle_and_can_switch_to_autocommit(engine, monkeypatch):
    _pid(engine)
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    with engine.connect() as connection:  # pinged on the way out of the pool
        # not inside the ping's transaction: a quiet Idle's read switches it to autocommit
        assert connection.connection.dbapi_connection.info.transaction_status.name == "IDLE"
    with db_module.untransacted(engine) as connection:  # switches the driver to autocommit
        assert db_module.DriverStatement(sa.select(sa.literal_column("1"))).first(connection, {}) == (1,)


def test_a_quiet_read_on_a_dropped_connection_fails_once_and_the_pool_replaces_it(engine, monkeypatch):
    first = _pid(engine)
    _drop_from_server(first)
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 3600.0)  # handed out unpinged
    read = db_module.DriverStatement(sa.select(sa.func.pg_backend_pid()))
    with pytest.raises(sa.exc.OperationalError) as raised, db_module.untransacted(engine) as connection:
        read.first(connection, {})
    assert raised.value.connection_invalidated
    with db_module.untransacted(engine) as connection:
        assert read.first(connection, {})[0] != first
