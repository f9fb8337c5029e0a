"""mdmserver.db.DriverRead and untransacted (issue 12): the quiet Idle's one read runs on the driver's
cursor, outside any transaction. It must give what SQLAlchemy's own execution of the same statement
gives, raise driver errors as SQLAlchemy raises them, and leave pooled connections as it found them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from mdmserver.db import DriverRead, UTCDateTime, db, untransacted
from tests.conftest import POSTGRES_URL

_metadata = sa.MetaData()
_things = sa.Table(
    "driver_read_things", _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(40)),
    sa.Column("seen", UTCDateTime()),
    sa.Column("blob", sa.LargeBinary),
    sa.Column("priority", sa.Integer),
)
NOW = datetime(2026, 11, 28, 3, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def engine(app):
    with app.app_context():
        engine = db.engine
        _metadata.create_all(engine)
        with engine.begin() as connection:
            connection.execute(_things.insert(), [
                {"id": 1, "name": "first", "seen": NOW - timedelta(days=1), "blob": b"\x00\x01", "priority": 1},
                {"id": 2, "name": "second", "seen": NOW, "blob": None, "priority": 5},
                {"id": 3, "name": None, "seen": None, "blob": b"", "priority": 5},
            ])
        try:
            yield engine
        finally:
            _metadata.drop_all(engine)


def _statement():
    newer = sa.bindparam("since", type_=UTCDateTime())
    return (
        sa.select(_things.c.id, _things.c.name, _things.c.seen, _things.c.blob,
                  sa.exists().where(_things.c.priority > 3).label("any_high"))
        .where(sa.or_(_things.c.seen.is_(None), _things.c.seen >= newer), _things.c.name != sa.bindparam("not_name"))
        .order_by(_things.c.priority.desc(), _things.c.id)
        .limit(1)
    )


@pytest.mark.parametrize("since, not_name", [
    (NOW - timedelta(hours=1), "nobody"),  # the datetime is bound as the column's type binds it
    (NOW - timedelta(days=2), "second"),
    (NOW + timedelta(days=1), "x"),  # nothing: None
])
def test_it_reads_what_sqlalchemy_reads(engine, since, not_name) -> None:
    values = {"since": since, "not_name": not_name}
    with engine.connect() as connection:
        expected = connection.execute(_statement(), values).first()
    read = DriverRead(_statement())
    for _ in range(2):  # compiled once, then reused
        with untransacted(engine) as connection:
            got = read.first(connection, values)
        assert got == (tuple(expected) if expected is not None else None)
    if got is not None and got[2] is not None:
        assert got[2].tzinfo is not None  # UTCDateTime's result processing ran


def test_an_expanding_parameter_is_refused(engine) -> None:
    read = DriverRead(sa.select(_things.c.id).where(_things.c.name.in_(["a", "b"])))
    with untransacted(engine) as connection, pytest.raises(ValueError, match="expanding"):
        read.first(connection, {})


def test_a_driver_error_is_sqlalchemys_error_and_the_pool_goes_on(engine) -> None:
    missing = sa.Table("driver_read_missing", sa.MetaData(), sa.Column("id", sa.Integer))
    with untransacted(engine) as connection, pytest.raises(sa_exc.DBAPIError) as raised:
        DriverRead(sa.select(missing.c.id)).first(connection, {})
    assert isinstance(raised.value, sa_exc.ProgrammingError | sa_exc.OperationalError)
    assert not raised.value.connection_invalidated
    with untransacted(engine) as connection:  # the same pooled connection, still usable
        assert DriverRead(sa.select(_things.c.id).where(_things.c.id == 1)).first(connection, {}) == (1,)


def test_no_transaction_is_left_open_and_the_pool_gets_its_connection_back_as_it_was(engine) -> None:
    read = DriverRead(sa.select(_things.c.name).where(_things.c.id == 2))
    with untransacted(engine) as connection:
        assert read.first(connection, {}) == ("second",)
        dbapi = connection.dbapi
        if POSTGRES_URL:
            assert dbapi.autocommit is True
            assert dbapi.info.transaction_status.name == "IDLE"  # the read began no transaction
        else:
            assert dbapi.in_transaction is False
    if POSTGRES_URL:
        assert dbapi.autocommit is False  # switched back before it went back to the pool
    # a writer right after sees no reader holding anything, and the next transaction is a transaction
    with engine.begin() as connection:
        connection.execute(_things.update().where(_things.c.id == 2).values(name="renamed"))
    with untransacted(engine) as connection:
        assert read.first(connection, {}) == ("renamed",)
