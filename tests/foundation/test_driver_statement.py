"""mdmserver.db.DriverStatement, untransacted and session_driver (issue 12): the connect path's read runs
on the driver's cursor outside any transaction, and its writes on the driver's cursor in the session's
transaction. It must give what SQLAlchemy's own execution of the same statement gives, raise driver
errors as SQLAlchemy raises them, leave pooled connections as it found them, and write only inside the
session's transaction (committed or rolled back with it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from mdmserver.db import DriverStatement, UTCDateTime, db, session_driver, untransacted
from tests.conftest import POSTGRES_URL

_metadata = sa.MetaData()
_things = sa.Table(
    "driver_read_things", _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(40)),
    sa.Column("seen", UTCDateTime()),
    sa.Column("blob", sa.LargeBinary),
    sa.Column("priority", sa.Integer),
    sa.Column("details", sa.JSON),
)
NOW = datetime(2026, 11, 28, 3, 0, 0, 123456, tzinfo=UTC)
_INITIAL = [
    {"id": 1, "name": "first", "seen": NOW - timedelta(days=1), "blob": b"\x00\x01", "priority": 1},
    {"id": 2, "name": "second", "seen": NOW, "blob": None, "priority": 5},
    {"id": 3, "name": None, "seen": None, "blob": b"", "priority": 5},
]


@pytest.fixture
def engine(app):
    with app.app_context():
        engine = db.engine
        _metadata.create_all(engine)
        with engine.begin() as connection:
            connection.execute(_things.insert(), _INITIAL)
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
    read = DriverStatement(_statement())
    for _ in range(2):  # compiled once, then reused
        with untransacted(engine) as connection:
            got = read.first(connection, values)
        assert got == (tuple(expected) if expected is not None else None)
    if got is not None and got[2] is not None:
        assert got[2].tzinfo is not None  # UTCDateTime's result processing ran


def test_an_expanding_parameter_is_refused(engine) -> None:
    read = DriverStatement(sa.select(_things.c.id).where(_things.c.name.in_(["a", "b"])))
    with untransacted(engine) as connection, pytest.raises(ValueError, match="expanding"):
        read.first(connection, {})


def test_a_driver_error_is_sqlalchemys_error_and_the_pool_goes_on(engine) -> None:
    missing = sa.Table("driver_read_missing", sa.MetaData(), sa.Column("id", sa.Integer))
    with untransacted(engine) as connection, pytest.raises(sa_exc.DBAPIError) as raised:
        DriverStatement(sa.select(missing.c.id)).first(connection, {})
    assert isinstance(raised.value, sa_exc.ProgrammingError | sa_exc.OperationalError)
    assert not raised.value.connection_invalidated
    with untransacted(engine) as connection:  # the same pooled connection, still usable
        assert DriverStatement(sa.select(_things.c.id).where(_things.c.id == 1)).first(connection, {}) == (1,)


def test_no_transaction_is_left_open_and_the_pool_gets_its_connection_back_as_it_was(engine) -> None:
    read = DriverStatement(sa.select(_things.c.name).where(_things.c.id == 2))
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


def _touch():
    return (
        _things.update()
        .where(_things.c.priority == sa.bindparam("at_priority"))
        .values(seen=sa.bindparam("when", type_=UTCDateTime()), details=sa.bindparam("new_details", type_=sa.JSON()),
                priority=_things.c.priority + 1)
    )


def _rows(engine) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(
            sa.select(_things.c.id, _things.c.seen, _things.c.details, _things.c.priority).order_by(_things.c.id))]


def test_a_write_binds_as_sqlalchemy_binds_and_counts_its_rows(engine) -> None:
    values = {"at_priority": 5, "when": NOW, "new_details": {"chain": [{"code": 12021}]}}
    with Session(engine) as session:
        outcome = DriverStatement(_touch()).execute(session_driver(session), values)
        assert outcome.rowcount == 2 and outcome.row is None  # no RETURNING: no row
        session.commit()
    ours = _rows(engine)
    _metadata.drop_all(engine)
    _metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(_things.insert(), _INITIAL)
        connection.execute(_touch(), values)  # SQLAlchemy's own execution of the same statement
    assert ours == _rows(engine)
    assert ours[1] == (2, NOW, {"chain": [{"code": 12021}]}, 6)


def test_returning_gives_the_row_converted(engine) -> None:
    statement = (_things.update().where(_things.c.id == sa.bindparam("which"))
                 .values(seen=sa.bindparam("when", type_=UTCDateTime()))
                 .returning(_things.c.id, _things.c.seen, _things.c.blob))
    with Session(engine) as session:
        outcome = DriverStatement(statement).execute(session_driver(session), {"which": 1, "when": NOW})
        missed = DriverStatement(statement).execute(session_driver(session), {"which": 99, "when": NOW})
        session.commit()
    assert outcome.row == (1, NOW, b"\x00\x01") and outcome.row[1].tzinfo is not None
    assert missed.row is None and missed.rowcount == 0


def test_a_write_is_part_of_the_sessions_transaction(engine) -> None:
    with Session(engine) as session:
        session.execute(_things.update().where(_things.c.id == 3).values(name="orm"))  # SQLAlchemy's statement
        DriverStatement(_touch()).execute(session_driver(session), {"at_priority": 5, "when": NOW, "new_details": None})
        session.rollback()  # both go
    assert [r[3] for r in _rows(engine)] == [1, 5, 5]
    with engine.connect() as connection:
        assert connection.scalar(sa.select(_things.c.name).where(_things.c.id == 3)) is None


def test_a_failed_write_is_sqlalchemys_error_and_the_session_rolls_back(engine) -> None:
    duplicate = _things.insert().values(id=sa.bindparam("new_id"), name="again")
    with Session(engine) as session:
        DriverStatement(_things.update().where(_things.c.id == 1).values(name="changed")).execute(
            session_driver(session), {})
        with pytest.raises(sa_exc.IntegrityError):
            DriverStatement(duplicate).execute(session_driver(session), {"new_id": 2})
        session.rollback()
        assert session.scalar(sa.select(_things.c.name).where(_things.c.id == 1)) == "first"


def test_on_sqlite_the_write_after_a_quiet_read_finds_the_same_pooled_connection(engine) -> None:
    if POSTGRES_URL:
        pytest.skip("SQLite's page cache is per connection; PostgreSQL's pool stays first in, first out")
    # three connections in the pool, returned in the order 0, 1, 2
    held = [engine.connect() for _ in range(3)]
    for connection in held:
        connection.close()
    with untransacted(engine) as connection:
        assert DriverStatement(sa.select(_things.c.id).where(_things.c.id == 1)).first(connection, {}) == (1,)
        read_on = connection.dbapi
    with Session(engine) as session:
        assert session_driver(session).dbapi is read_on
        session.rollback()
