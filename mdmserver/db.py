"""Database objects shared by every feature: the Flask-SQLAlchemy handle, naming convention, UTC times."""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session as FlaskSession
from sqlalchemy import ColumnElement, DateTime, MetaData, Select, delete, event, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError as UrlError
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, SessionTransaction, scoped_session
from sqlalchemy.pool import Pool
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# --- SQLite transactions: writers start IMMEDIATE, read-only units DEFERRED -------------------------

_BEGIN_OPTION = "mdmserver_sqlite_begin"
_NO_BEGIN = "NONE"  # see untransacted()
_BEGIN_STATEMENTS = {"IMMEDIATE": "BEGIN IMMEDIATE", "DEFERRED": "BEGIN DEFERRED"}
_READ_ONLY_NEXT = "mdmserver_read_only_next"  # what the next transaction of a session will be
_READ_ONLY_NOW = "mdmserver_read_only_now"  # what the session's current transaction is
_deferred_engines: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()

# SQLite primary result codes that mean "another connection holds the lock", not "broken".
_SQLITE_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class MdmSession(FlaskSession):
    """``db.session``: on SQLite, a session declared read-only (:func:`set_read_only`) begins its
    transactions ``DEFERRED``, so it never takes the database write lock; every other transaction
    begins ``IMMEDIATE`` (see ``_sqlite_begin``). Other databases are untouched. A new session runs
    the setups :func:`on_session` left for it."""

    def __init__(self, db: SQLAlchemy, **kwargs: Any) -> None:
        super().__init__(db, **kwargs)
        pending = _pending_setups.get()
        if pending:
            _pending_setups.set(())
            for setup in pending:
                setup(self)

    def get_bind(self, mapper: Any = None, clause: Any = None, bind: Any = None, **kwargs: Any):
        chosen = super().get_bind(mapper=mapper, clause=clause, bind=bind, **kwargs)
        if self.info.get(_READ_ONLY_NOW) and isinstance(chosen, Engine) and chosen.dialect.name == "sqlite":
            return _deferred_engine(chosen)
        return chosen


def _deferred_engine(engine: Engine) -> Engine:
    """The same engine (same pool) whose connections begin their transactions DEFERRED."""
    deferred = _deferred_engines.get(engine)
    if deferred is None:
        deferred = _deferred_engines[engine] = engine.execution_options(**{_BEGIN_OPTION: "DEFERRED"})
    return deferred


@event.listens_for(Session, "after_transaction_create")
def _fix_transaction_mode(session: Session, transaction: SessionTransaction) -> None:
    # The mode is taken when a root transaction starts, so changing it never splits a transaction
    # over two connections; it applies from the next transaction on.
    if transaction.parent is None:
        session.info[_READ_ONLY_NOW] = session.info.get(_READ_ONLY_NEXT, False)


def set_read_only(session: Session | scoped_session, read_only: bool = True) -> None:
    """Declare whether the session's next transactions only read.

    On SQLite a read-only transaction begins ``DEFERRED`` and never takes the write lock (under WAL
    it reads a snapshot however long a writer holds the lock); a writing one begins ``IMMEDIATE``
    and so waits for the lock up front instead of failing when it upgrades from reading to writing.
    A read-only transaction that writes anyway works while nobody else writes, and fails at once
    with "database is locked" otherwise. Takes effect at the next transaction the session begins.
    """
    target = session() if isinstance(session, scoped_session) else session
    target.info[_READ_ONLY_NEXT] = read_only
    if not target.in_transaction():
        target.info[_READ_ONLY_NOW] = read_only


#: setups for the session this request has not created yet (:func:`on_session`); a request runs in one
#: thread, and its end forgets them (:func:`forget_session_setups`)
_pending_setups: ContextVar[tuple[Callable[[Session], None], ...]] = ContextVar("mdmserver_session_setups",
                                                                                default=())


def on_session(session: scoped_session, setup: Callable[[Session], None]) -> None:
    """Run ``setup`` on the scoped session of this request: now if it exists, else when it is created
    (:class:`MdmSession`). The request hooks declare each request's transaction mode and audit context
    this way, so a request that never uses the session never creates one: on PostgreSQL a plain
    device acknowledgement is one statement on a pooled connection (:func:`untransacted`), and the
    session's creation, commit and removal were 7 % of its instructions (docs/deploy.md)."""
    existing = session_in_use(session)
    if existing is not None:
        setup(existing)
    else:
        _pending_setups.set((*_pending_setups.get(), setup))


def forget_session_setups() -> None:
    """Drop the setups of a request that ended without creating its session."""
    _pending_setups.set(())


def session_in_use(session: scoped_session) -> Session | None:
    """The scoped session of this app context if something created it, else ``None`` (not created)."""
    return session() if session.registry.has() else None


def scope_bind(session: scoped_session) -> Engine | Connection:
    """What the scoped session of this app context is bound to, without creating it: the engine, or the
    connection its factory binds every session to (the test suite's rolled-back transaction)."""
    existing = session_in_use(session)
    if existing is not None:
        return existing.get_bind()
    bound = session.session_factory.kw.get("bind")
    return bound if bound is not None else db.engine


def is_read_only(session: Session | scoped_session) -> bool:
    return bool(session.info.get(_READ_ONLY_NEXT, False))


T = TypeVar("T")


def run_read_first(session: Session | scoped_session, unit: Callable[[], T]) -> T:
    """Run ``unit`` (a whole unit of work, its commit included) in a transaction that begins
    ``DEFERRED``, so that a unit which turns out only to read never takes SQLite's write lock; if it
    does write and meets another writer, roll back and run it again in a transaction that begins
    ``IMMEDIATE`` (which waits for the lock, up to the busy timeout).

    SQLite cannot wait when it upgrades a read transaction to a write one: it answers "database is
    locked" at once when another connection holds the write lock or committed since our snapshot.
    Running the unit again is safe because nothing of the first attempt was committed; ``unit`` must
    have no effect outside the session. For units that usually only read: one that always writes
    should begin ``IMMEDIATE`` (the default). If the session is already in a transaction, ``unit``
    runs in it as it is. Other databases run ``unit`` once, unchanged.
    """
    target = session() if isinstance(session, scoped_session) else session
    declared = target.info.get(_READ_ONLY_NEXT, False)
    if not target.in_transaction():
        set_read_only(target, True)
    try:
        try:
            return unit()
        except OperationalError as exc:
            if not (target.info.get(_READ_ONLY_NOW) and is_database_busy(exc)):
                raise
        target.rollback()
        set_read_only(target, False)
        return unit()
    finally:
        set_read_only(target, declared)


@dataclass(frozen=True)
class DriverConnection:
    """A driver (DB-API) connection and the dialect that speaks to it (:func:`untransacted`)."""

    dbapi: Any
    dialect: Dialect


@contextmanager
def untransacted(bind: Engine | Connection) -> Iterator[DriverConnection]:
    """A pooled driver connection on which each statement is its own transaction, with no BEGIN or
    COMMIT sent: for a unit that is one read (:class:`DriverStatement`). PostgreSQL: the driver's autocommit,
    switched back off before the connection returns to the pool. SQLite: the driver already leaves
    transactions to us (``_sqlite_pragmas``), so a statement outside BEGIN is its own transaction.

    ``bind`` is a session's bind: a session bound to one connection (the test suite's rolled-back
    transaction) reads on that connection, in its transaction, and sees what it sees."""
    if isinstance(bind, Connection):
        yield DriverConnection(bind.connection.dbapi_connection, bind.dialect)
        return
    pooled = bind.raw_connection()
    try:
        dbapi = pooled.dbapi_connection
        if bind.dialect.name == "postgresql":
            dbapi.autocommit = True
            try:
                yield DriverConnection(dbapi, bind.dialect)
            finally:
                if not dbapi.closed:
                    dbapi.autocommit = False
        else:
            yield DriverConnection(dbapi, bind.dialect)
    except DBAPIError as exc:
        if exc.connection_invalidated:
            pooled.invalidate(exc)  # gone (server restarted, dropped): the pool replaces it
        raise
    finally:
        pooled.close()


def session_driver(session: Session | scoped_session) -> DriverConnection:
    """The driver connection of the session's transaction (begun here if it has not begun: on SQLite
    ``BEGIN IMMEDIATE`` and the write gate, as for any statement), for :class:`DriverStatement`."""
    connection = session.connection()
    return DriverConnection(connection.connection.dbapi_connection, connection.dialect)


#: called with the SQL of every :class:`DriverStatement` execution (SQLAlchemy's statement events never
#: see them): the statement counts of the test suite listen here too
driver_statement_listeners: list[Callable[[str], None]] = []


@dataclass(frozen=True)
class DriverOutcome:
    """What a :class:`DriverStatement` execution did: rows matched, and its first row (RETURNING)."""

    rowcount: int
    row: tuple[Any, ...] | None


class DriverStatement:
    """A statement (a SELECT, or an INSERT/UPDATE/DELETE with or without RETURNING) compiled once per
    dialect and run straight on the driver's cursor, its parameters and values converted by its types'
    bind and result processors as SQLAlchemy converts them.

    For the connect path, the hottest request there is, where SQLAlchemy's work around an execution
    (its execution context, result set-up, connection wrapper and events) costs several times the
    query: its read outside any transaction (:func:`untransacted`) and its writes in the session's
    transaction (:func:`session_driver`). A driver error is raised as SQLAlchemy raises it
    (``OperationalError``…), flagged ``connection_invalidated`` when the driver says the connection is
    gone. Not for anything else: no statement events (only ``driver_statement_listeners``), no echo."""

    def __init__(self, statement: Select | UpdateBase) -> None:
        self.statement = statement
        self._forms: dict[str, tuple[str, Callable[[dict[str, Any]], Any], tuple[Any, ...]]] = {}

    def _form(self, dialect: Dialect):
        form = self._forms.get(dialect.name)
        if form is None:
            compiled = self.statement.compile(dialect=dialect)
            if "POSTCOMPILE" in compiled.string:
                raise ValueError("a DriverStatement takes no expanding parameter (write the constants into the SQL)")
            binders = {name: bind.type.dialect_impl(dialect).bind_processor(dialect)
                       for name, bind in compiled.binds.items()}
            positions = compiled.positiontup

            def parameters(values: dict[str, Any]) -> Any:
                given = compiled.construct_params(values)
                converted = {name: (binders[name](value) if binders.get(name) else value)
                             for name, value in given.items()}
                return tuple(converted[name] for name in positions) if positions else converted

            # a SELECT's columns, or the RETURNING columns of a DML statement (none without RETURNING)
            results = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None)
                            for column in self.statement.exported_columns)
            form = self._forms[dialect.name] = (compiled.string, parameters, results)
        return form

    def execute(self, connection: DriverConnection, values: dict[str, Any]) -> DriverOutcome:
        sql, parameters, results = self._form(connection.dialect)
        bound = parameters(values)
        dbapi_module = connection.dialect.loaded_dbapi
        for listener in driver_statement_listeners:
            listener(sql)
        cursor = connection.dbapi.cursor()
        try:
            cursor.execute(sql, bound)
            row = cursor.fetchone() if results else None
            rowcount = cursor.rowcount
        except dbapi_module.Error as exc:
            gone = connection.dialect.is_disconnect(exc, connection.dbapi, cursor)
            raise DBAPIError.instance(sql, bound, exc, dbapi_module.Error, connection_invalidated=gone) from exc
        finally:
            cursor.close()
        if row is not None:
            row = tuple(convert(value) if convert is not None else value
                        for convert, value in zip(results, row, strict=True))
        return DriverOutcome(rowcount, row)

    def first(self, connection: DriverConnection, values: dict[str, Any]) -> tuple[Any, ...] | None:
        return self.execute(connection, values).row


def is_database_busy(exc: BaseException) -> bool:
    """True for SQLite's "database is locked" (busy / locked): another connection held the lock
    longer than the busy timeout. Decided on the driver's error code, never on the message."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(orig, sqlite3.OperationalError) and code is not None and (code & 0xFF) in _SQLITE_BUSY_CODES


db = SQLAlchemy(model_class=Base, session_options={"class_": MdmSession})


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back as an aware UTC datetime.

    SQLite has no time zone type, so values are normalised to UTC and stored naive there; PostgreSQL
    stores ``timestamp with time zone``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def upsert_insert(session, table):
    """``INSERT`` of the session's dialect, which has ``on_conflict_do_update`` / ``do_nothing``
    (SQLite and PostgreSQL spell the upsert the same way)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {dialect}")


def delete_in_batches(session, model, condition: ColumnElement[bool], *, batch_size: int, commit: bool) -> int:
    """Delete ``model`` rows matching ``condition``, ``batch_size`` at a time (each batch committed
    when ``commit``), so a large purge never holds one long transaction. Returns how many."""
    total = 0
    while True:
        batch = select(model.id).where(condition).limit(batch_size).scalar_subquery()
        deleted = session.execute(
            delete(model).where(model.id.in_(batch)).execution_options(synchronize_session=False)
        ).rowcount or 0
        total += deleted
        if commit:
            session.commit()
        if deleted < batch_size:
            return total


def lease_batch(
    session: Session, model: Any, candidates: Select, *, holder: str, until: datetime, status: str,
) -> tuple[str, list[int]]:
    """Claim the outbox rows ``candidates`` selects (their ids) for ``holder`` until ``until``: ``status``
    becomes the sending one, ``attempts`` grows by one, ``claimed_by`` names this claim (returned with the
    ids; ``""`` and none when nothing was due). PostgreSQL skips rows another worker is claiming
    (``FOR UPDATE SKIP LOCKED``); SQLite's write lock serialises claims. The caller commits."""
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True, of=model)
    ids = list(session.scalars(candidates))
    if not ids:
        return "", []
    claim = f"{holder}-{secrets.token_hex(4)}"
    session.execute(
        update(model).where(model.id.in_(ids))
        .values(status=status, claimed_by=claim, lease_until=until, attempts=model.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    return claim, ids


def isoformat(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z`` suffix, as the API shows every timestamp."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin (see _sqlite_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # busy_timeout comes from the driver's ``timeout`` (setting database_busy_timeout).
        cursor.execute("PRAGMA synchronous=NORMAL")
        busy_ms = cursor.execute("PRAGMA busy_timeout").fetchone()[0]
        path = next((row[2] for row in cursor.execute("PRAGMA database_list") if row[1] == "main"), "")
        cursor.close()
        if connection_record is not None and path:
            connection_record.info[_GATE] = write_gate(path, busy_ms / 1000)


@event.listens_for(Engine, "begin")
def _sqlite_begin(connection: Connection) -> None:
    """Start SQLite transactions IMMEDIATE, unless their session is read-only (then DEFERRED).

    A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when another
    connection holds or took the write lock meanwhile; taking the write lock up front makes
    concurrent writers wait (busy_timeout) instead, and makes SAVEPOINTs behave as on PostgreSQL.
    Read-only requests begin DEFERRED (:func:`set_read_only`), so a slow writer never blocks them.
    An IMMEDIATE transaction first takes its place in the database's :class:`WriteGate`.
    """
    if connection.dialect.name == "sqlite":
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
        if mode == _NO_BEGIN:
            return
        gate = connection.info.get(_GATE) if mode == "IMMEDIATE" else None
        if gate is not None and connection.info.get(_GATE_HELD) is None and gate.acquire():
            connection.info[_GATE_HELD] = gate
        statement = _BEGIN_STATEMENTS[mode]
        try:
            # on the driver's connection: SQLAlchemy's statement machinery costs several times the BEGIN
            connection.connection.dbapi_connection.execute(statement)
        except sqlite3.Error as exc:
            _release_gate(connection.info)
            # as SQLAlchemy would have raised it ("database is locked" is an OperationalError)
            raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc
        except BaseException:
            _release_gate(connection.info)
            raise


# --- SQLite writers queue in front of the write lock instead of polling for it --------------------------


_GATE = "mdmserver_write_gate"  # the WriteGate of a pooled SQLite connection's database file
_GATE_HELD = "mdmserver_write_gate_held"  # set while the connection's transaction holds its place


#: the longest a writer sleeps between tries while another process's writer holds the gate. An
#: acknowledgement's transaction holds it about a millisecond: at 2 ms, a worker whose writer had just
#: missed the other worker's commit slept through most of the next transaction (SQLite deliver-and-
#: acknowledge, 2 workers: 755–788 against 878–904 req/s, p99 47–94 against 31–36 ms; docs/deploy.md).
#: One thread a process polls (the others wait on its in-process lock): at most 2,500 wakeups a second
#: while a long transaction of another process holds the gate.
CROSS_PROCESS_POLL = 0.0004


class WriteGate:
    """The queue of this database file's writers: a lock in each process, and ``flock`` on the file
    ``<database>-writers`` across processes (gunicorn's workers, the CLI).

    SQLite's own wait for the write lock (busy_timeout) polls: a writer that finds the lock taken
    sleeps 1, 2, 5, 10… up to 100 ms between tries, however soon the lock is free again, and others
    may take it meanwhile. Under concurrent writes (every device acknowledging a command) that sleep
    is the latency tail and the lost throughput. A writer that first takes its place here is woken
    when the one before it commits, and then finds SQLite's lock free.

    The gate only orders writers that pass through it; SQLite's lock still decides. Waiting here is
    bounded by the busy timeout; past it, the writer goes on to ``BEGIN IMMEDIATE`` without its place
    (and SQLite's busy handling decides as before). Writers that are not ours (the sqlite3 shell)
    simply do not queue.
    """

    def __init__(self, path: str, timeout: float) -> None:
        self.lock_path = f"{path}-writers"
        self.timeout = timeout
        self._local = threading.Lock()
        self._fd: int | None = None
        self._fd_pid = 0

    def _file(self) -> int:
        # a forked child shares its parent's open file, and with it the parent's flock: reopen
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fd_pid = os.getpid()
        return self._fd

    def acquire(self) -> bool:
        """Take this writer's place (True), or give up after the timeout (False)."""
        deadline = time.monotonic() + self.timeout
        if not self._local.acquire(timeout=self.timeout):
            return False
        try:
            fd = self._file()
            pause = 0.0001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        break
                    # another process's writer holds it: poll finely, as its transaction is short
                    time.sleep(pause)
                    pause = min(pause * 2, CROSS_PROCESS_POLL)
        except OSError:
            pass  # the lock file cannot be made (read-only folder): no queue, SQLite alone decides
        except BaseException:
            self.release()  # interrupted while waiting (a signal): what it took would stay taken
            raise
        self._local.release()
        return False

    def release(self) -> None:
        try:
            if self._fd is not None and self._fd_pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._local.release()

    def _after_fork(self) -> None:
        self._local = threading.Lock()  # a thread of the parent may have held it at the fork


_write_gates: dict[str, WriteGate] = {}
_write_gates_lock = threading.Lock()


def write_gate(path: str, timeout: float) -> WriteGate:
    """The one :class:`WriteGate` of this process for the database file ``path``."""
    key = os.path.realpath(path)
    with _write_gates_lock:
        gate = _write_gates.get(key)
        if gate is None:
            gate = _write_gates[key] = WriteGate(key, timeout)
        return gate


def _reset_gates_after_fork() -> None:
    global _write_gates_lock
    _write_gates_lock = threading.Lock()
    for gate in _write_gates.values():
        gate._after_fork()


os.register_at_fork(after_in_child=_reset_gates_after_fork)


def _release_gate(info: dict) -> None:
    gate = info.pop(_GATE_HELD, None)
    if gate is not None:
        gate.release()


@event.listens_for(Engine, "commit")
def _commit_then_release(connection: Connection) -> None:
    """Commit, then give the next writer its turn. SQLAlchemy signals a commit before making it; the
    driver's ``commit()`` is made here first (SQLAlchemy's own call then finds no transaction and does
    nothing). Should it fail, the place is kept with the transaction, still open: SQLAlchemy's call
    raises the error as usual and marks the transaction ended without rolling it back (no "rollback"
    event follows); the pool's reset rolls it back and gives the place back when the connection is
    returned (a session's ``rollback()`` or ``close()`` returns it)."""
    if connection.invalidated or connection.info.get(_GATE_HELD) is None:
        return
    try:
        connection.connection.dbapi_connection.commit()
    except sqlite3.Error:
        return
    _release_gate(connection.info)


@event.listens_for(Engine, "rollback")
def _rollback_then_release(connection: Connection) -> None:
    # An invalidated connection gave its place back when it was invalidated (_release_on_invalidate),
    # and must not be asked for its ``info`` here: that would try to reconnect, which SQLAlchemy
    # refuses inside the transaction being rolled back (PendingRollbackError), so the rollback failed.
    if connection.invalidated or connection.info.get(_GATE_HELD) is None:
        return
    try:
        connection.connection.dbapi_connection.rollback()
    except sqlite3.Error:
        pass  # the connection is broken: it is discarded, its transaction with it
    _release_gate(connection.info)


def _give_back_place(dbapi_connection, connection_record) -> None:
    """A connection whose transaction ended without SQLAlchemy's commit or rollback (pool reset,
    invalidated, closed) gives its place back after all."""
    if connection_record is not None and connection_record.info.get(_GATE_HELD) is not None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            try:
                dbapi_connection.rollback()
            except sqlite3.Error:
                pass
        _release_gate(connection_record.info)


@event.listens_for(Pool, "reset")
def _release_on_reset(dbapi_connection, connection_record, reset_state) -> None:
    _give_back_place(dbapi_connection, connection_record)


@event.listens_for(Pool, "invalidate")
def _release_on_invalidate(dbapi_connection, connection_record, exception) -> None:
    _give_back_place(dbapi_connection, connection_record)


@event.listens_for(Pool, "close")
def _release_on_close(dbapi_connection, connection_record) -> None:
    _give_back_place(dbapi_connection, connection_record)


# --- Pooled server connections: pinged before use only after sitting idle --------------------------------

#: a pooled PostgreSQL connection idle in the pool longer than this is pinged before it is handed out
PING_AFTER_IDLE_SECONDS = 10.0
_IDLE_SINCE = "mdmserver_idle_since"


@event.listens_for(Pool, "checkin")
def _mark_idle(dbapi_connection, connection_record) -> None:
    if connection_record is not None:
        connection_record.info[_IDLE_SINCE] = time.monotonic()


@event.listens_for(Pool, "checkout")
def _ping_if_idle(dbapi_connection, connection_record, connection_proxy) -> None:
    """What ``pool_pre_ping`` does, but only for a connection that sat in the pool for more than
    ``PING_AFTER_IDLE_SECONDS`` (the server restarted, a firewall dropped it): one in steady use, as under
    load, costs no round trip. A failed ping discards the connection and the pool hands out a new one.
    A connection that breaks while in use fails its request, and the pool then replaces every
    connection of that engine (SQLAlchemy's disconnect handling). SQLite connections are files: none."""
    if isinstance(dbapi_connection, sqlite3.Connection) or connection_record is None:
        return
    since = connection_record.info.get(_IDLE_SINCE)
    if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
        return  # new, or back in the pool a moment ago
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        # the ping began a transaction (the driver is not in autocommit): end it, so the connection is
        # handed out as every pooled one is, idle (a connection in a transaction cannot switch to
        # autocommit: db.untransacted)
        dbapi_connection.rollback()
    except Exception as exc:  # noqa: BLE001 — whatever the driver raises, the connection is unusable
        raise DisconnectionError(f"pooled connection did not answer a ping: {exc}") from exc


# --- A database that cannot be reached: one paragraph with the fix, not a traceback -------------------


class DatabaseUnavailable(Exception):
    """The configured database refused or failed the first connection; the message says how to fix it."""


def _url_parts(url: str) -> dict[str, str]:
    parsed = make_url(url)
    return {
        "shown": parsed.render_as_string(hide_password=True),
        "host": parsed.host or "localhost",
        "port": str(parsed.port or 5432),
        "user": parsed.username or "postgres",
        "database": parsed.database or parsed.username or "postgres",
    }


def _no_role(match: re.Match, url: dict[str, str]) -> str:
    role = match.group(1)
    return (f'PostgreSQL at {url["host"]}:{url["port"]} has no role "{role}". Create the role and its database '
            f"first (as PostgreSQL's superuser: `sudo -u postgres createuser --pwprompt {role}` then "
            f'`sudo -u postgres createdb --owner {role} {url["database"]}`), or correct the user in '
            "MDMSERVER_DATABASE_URL.")


def _no_database(match: re.Match, url: dict[str, str]) -> str:
    return (f'PostgreSQL at {url["host"]}:{url["port"]} has no database "{match.group(1)}". Create it (as '
            f'PostgreSQL\'s superuser: `sudo -u postgres createdb --owner {url["user"]} {match.group(1)}`), or '
            "correct the database name in MDMSERVER_DATABASE_URL.")


def _bad_password(_match: re.Match, url: dict[str, str]) -> str:
    return (f'PostgreSQL at {url["host"]}:{url["port"]} refused the password of role "{url["user"]}". Correct '
            "the password in MDMSERVER_DATABASE_URL (postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB; encode "
            f"special characters with %XX), or set it: `sudo -u postgres psql -c \"ALTER ROLE {url['user']} "
            "PASSWORD '...'\"`.")


def _not_allowed(_match: re.Match, url: dict[str, str]) -> str:
    return (f'PostgreSQL at {url["host"]}:{url["port"]} does not let role "{url["user"]}" connect from this '
            "host (pg_hba.conf has no entry for it). Add a line for this address, database and user to the "
            "server's pg_hba.conf and reload PostgreSQL, or connect through an address it allows.")


def _not_running(_match: re.Match, url: dict[str, str]) -> str:
    return (f"Is PostgreSQL running at {url['host']}:{url['port']} and accepting TCP connections? Start it "
            "(e.g. `sudo systemctl start postgresql`), or correct the host and port in MDMSERVER_DATABASE_URL.")


def _unknown_host(_match: re.Match, url: dict[str, str]) -> str:
    return (f'The host name "{url["host"]}" of MDMSERVER_DATABASE_URL does not resolve. Correct it (e.g. '
            "127.0.0.1 for a PostgreSQL on this machine).")


def _sqlite_unopenable(_match: re.Match, url: dict[str, str]) -> str:
    return ("SQLite cannot open the database file: its directory does not exist or this user may not write "
            "there. Run `mdmserver init` (it creates the data directory), or correct MDMSERVER_DATA_DIR / "
            "MDMSERVER_DATABASE_URL.")


#: What the driver's message says -> the paragraph that explains it. The first match wins.
_CONNECTION_PROBLEMS: tuple[tuple[re.Pattern[str], Callable[[re.Match, dict[str, str]], str]], ...] = (
    (re.compile(r'role "([^"]+)" does not exist'), _no_role),
    (re.compile(r'database "([^"]+)" does not exist'), _no_database),
    (re.compile(r"password authentication failed|no password supplied"), _bad_password),
    (re.compile(r"no pg_hba\.conf entry"), _not_allowed),
    (re.compile(r"Connection refused|timeout expired|No route to host|Network is unreachable"), _not_running),
    (re.compile(r"could not translate host name|Name or service not known|nodename nor servname"), _unknown_host),
    (re.compile(r"unable to open database file"), _sqlite_unopenable),
)


def connection_problem(exc: BaseException, url: str) -> str | None:
    """The paragraph explaining why the first connection to ``url`` failed with ``exc`` and what to do,
    or ``None`` when ``exc`` is not a connection failure this module recognises."""
    if not isinstance(exc, OperationalError):
        return None
    text = str(exc.orig or exc)
    try:
        parts = _url_parts(url)
    except UrlError:
        return None
    for pattern, explain in _CONNECTION_PROBLEMS:
        match = pattern.search(text)
        if match is not None:
            first_line = text.strip().splitlines()[0]
            return f"cannot connect to the database {parts['shown']}: {first_line}\n{explain(match, parts)}"
    return None


def check_connection(engine: Engine, url: str) -> None:
    """Open and close one connection, so a command that needs the database stops at once with
    :class:`DatabaseUnavailable` (one paragraph with the fix) instead of failing later with a traceback."""
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        message = connection_problem(exc, url)
        if message is None:
            raise
        raise DatabaseUnavailable(message) from None
