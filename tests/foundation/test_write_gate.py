"""SQLite's writers queue for the write lock (``WriteGate`` in mdmserver/db.py).

A transaction that begins ``IMMEDIATE`` first takes a place in a queue of the database file (a lock in
the process, ``flock`` across processes) and gives it back as soon as it commits or rolls back, so the
next writer is woken at once instead of finding out in SQLite's busy handler, which polls with sleeps
of up to 100 ms. Everything here goes through the app's own engine and session.

The busy timeout is several seconds, so a place that is never given back would show as a writer that
waits that long; every "gets in at once" below means well under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import multiprocessing
import os
import queue
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from mdmserver.db import WriteGate, db, write_gate
from tests.conftest import POSTGRES_URL, make_app

pytestmark = pytest.mark.skipif(POSTGRES_URL is not None, reason="SQLite's database-wide write lock")

BUSY_TIMEOUT = 3.0  # seconds: a leaked place would make the next writer wait at least this long
AT_ONCE = 1.0  # a writer that "gets in at once" finishes well within this
# Seconds a writer keeps its transaction open while another waits behind it. SQLite's busy handler,
# waiting since the start, tries again at 0.228 s and then at 0.328 s: without the queue, the waiter
# would find a commit made at 0.24 s some 90 ms late.
HOLD = 0.24
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Db:
    app: object
    path: str
    busy_timeout: float

    def count(self) -> int:
        """Rows of the scratch table, read on a connection that is not the app's."""
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            return conn.execute("SELECT count(*) FROM gate_rows").fetchone()[0]


def _make_db(tmp: Path, busy_timeout: float) -> tuple[Db, Callable[[], None]]:
    app, cleanup = make_app(tmp, database_busy_timeout=busy_timeout)
    path = app.config["DATABASE_URL"].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            "CREATE TABLE gate_rows (id INTEGER PRIMARY KEY, writer TEXT NOT NULL);"
            "CREATE TABLE gate_parents (id INTEGER PRIMARY KEY);"
            "CREATE TABLE gate_children (id INTEGER PRIMARY KEY,"
            " parent_id INTEGER NOT NULL REFERENCES gate_parents(id));"
        )
    return Db(app, path, busy_timeout), cleanup


@pytest.fixture(scope="module")
def gated(tmp_path_factory) -> Iterator[Db]:
    database, cleanup = _make_db(tmp_path_factory.mktemp("gate"), BUSY_TIMEOUT)
    yield database
    cleanup()


def _insert(writer: str) -> None:
    db.session.execute(text("INSERT INTO gate_rows (writer) VALUES (:w)"), {"w": writer})


def write_once(database: Db, writer: str) -> float:
    """One write through ``db.session`` on this thread (BEGIN IMMEDIATE, INSERT, COMMIT); the seconds
    it took."""
    started = time.monotonic()
    with database.app.app_context():
        _insert(writer)
        db.session.commit()
        db.session.remove()
    return time.monotonic() - started


def other_thread_writes(database: Db) -> float:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(write_once, database, "other").result(timeout=4 * BUSY_TIMEOUT)


# --- many writers ------------------------------------------------------------------------------------


def test_many_concurrent_writers_all_commit(gated: Db) -> None:
    before = gated.count()
    threads, writes = 16, 10

    def writer(n: int) -> int:
        with gated.app.app_context():
            for i in range(writes):
                _insert(f"t{n}-{i}")
                db.session.commit()
            db.session.remove()
        return n

    with ThreadPoolExecutor(max_workers=threads) as pool:
        done = sorted(f.result(timeout=60) for f in [pool.submit(writer, n) for n in range(threads)])
    assert done == list(range(threads))
    assert gated.count() == before + threads * writes


def test_the_next_writer_gets_in_as_soon_as_the_previous_commits(gated: Db) -> None:
    """The waiting writer is woken by the commit, not by a poll (see HOLD)."""
    handoffs = []
    started: queue.SimpleQueue[float] = queue.SimpleQueue()

    def waiter() -> float:
        with gated.app.app_context():
            started.put(time.monotonic())  # about to write
            _insert("waiter")
            began = time.monotonic()  # BEGIN IMMEDIATE and the INSERT are done
            db.session.commit()
            db.session.remove()
        return began

    for _ in range(5):
        with ThreadPoolExecutor(max_workers=1) as pool, gated.app.app_context():
            _insert("holder")  # this thread holds the write lock and its place in the queue
            future = pool.submit(waiter)
            waiting_since = started.get(timeout=10)
            time.sleep(max(0.0, waiting_since + HOLD - time.monotonic()))
            committing = time.monotonic()
            db.session.commit()
            committed = time.monotonic()
            db.session.remove()
            began = future.result(timeout=4 * BUSY_TIMEOUT)
        assert waiting_since < committing < began  # the waiter waited, and began after the commit
        handoffs.append(began - committed)
    assert statistics.median(handoffs) < 0.02, handoffs


# --- two processes -----------------------------------------------------------------------------------

CHILD = """
import sys, time
from sqlalchemy import text
from mdmserver.app import create_app
from mdmserver.db import db

path, busy, data_dir = sys.argv[1], float(sys.argv[2]), sys.argv[3]
app = create_app(overrides={"database_url": f"sqlite:///{path}", "data_dir": data_dir,
                            "database_busy_timeout": busy, "log_level": "WARNING"}, environ={})

def write(writer):
    with app.app_context():
        db.session.execute(text("INSERT INTO gate_rows (writer) VALUES (:w)"), {"w": writer})
        began = time.monotonic()  # BEGIN IMMEDIATE and the INSERT are done: it holds the lock
        db.session.commit()
        db.session.remove()
    return began

print("ready", flush=True)
for line in sys.stdin:
    command = line.split()
    if command[0] == "one":
        print(time.monotonic(), flush=True)  # about to write
        print(write("child"), flush=True)
    elif command[0] == "many":
        for i in range(int(command[1])):
            write(f"child-{i}")
        print("done", flush=True)
"""


def test_writers_of_two_processes_queue_and_all_land(gated: Db, tmp_path: Path) -> None:
    """A writer of another process waits at the gate while ours holds a write transaction, and gets in
    as soon as ours commits; concurrent writes of both processes all land. (time.monotonic is the
    system-wide CLOCK_MONOTONIC on Linux, so both processes' times compare.)"""
    before = gated.count()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, gated.path, str(BUSY_TIMEOUT), str(tmp_path / "data")],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        handoffs = []
        for _ in range(3):
            with gated.app.app_context():
                _insert("parent")  # this process holds the write lock and its place in the queue
                child.stdin.write("one\n")
                child.stdin.flush()
                started = float(child.stdout.readline())
                time.sleep(max(0.0, started + HOLD - time.monotonic()))
                committing = time.monotonic()
                db.session.commit()
                committed = time.monotonic()
                db.session.remove()
            began = float(child.stdout.readline())
            assert started < committing < began  # the child's writer waited, and began after the commit
            handoffs.append(began - committed)
        assert statistics.median(handoffs) < 0.03, handoffs

        # both processes write at the same time, the parent from several threads
        child.stdin.write("many 40\n")
        child.stdin.flush()
        with ThreadPoolExecutor(max_workers=4) as pool:
            for f in [pool.submit(write_once, gated, f"parent-{n}") for n in range(40)]:
                f.result(timeout=60)
        assert child.stdout.readline().strip() == "done"
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    assert child.returncode == 0
    assert gated.count() == before + 3 * 2 + 40 + 40


def _forked_writer(path: str, results) -> None:
    """In a child forked while the parent holds its place: take a place in the database's queue."""
    gate = write_gate(path, BUSY_TIMEOUT)  # the gate the child inherited, its lock file open and held
    results.put(time.monotonic())  # about to queue
    taken = gate.acquire()
    results.put((taken, time.monotonic()))
    if taken:
        gate.release()


def test_a_forked_child_does_not_inherit_its_parents_place(gated: Db) -> None:
    """A child forked while the parent holds its place shares the parent's open lock file, on which
    ``flock`` would succeed at once, and a copy of the parent's taken in-process lock, which nobody
    would release; the child must queue, and get its place as soon as the parent commits.

    The child only queues: SQLite itself cannot be used in a child forked while the parent held a
    write transaction (the child's copy of SQLite's in-process lock state says the parent's connection
    still holds the lock, so the child's own connections stay "database is locked"). That is why
    ``mdmserver serve`` disposes of the engine before gunicorn forks its workers."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    with gated.app.app_context():
        _insert("parent")  # this thread holds the write lock and its place in the queue
        child = context.Process(target=_forked_writer, args=(gated.path, results))
        child.start()
        started = results.get(timeout=30)
        time.sleep(HOLD)
        committing = time.monotonic()
        db.session.commit()
        committed = time.monotonic()
        db.session.remove()
    taken, taken_at = results.get(timeout=4 * BUSY_TIMEOUT)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert taken and started < committing < taken_at
    assert taken_at - committed < AT_ONCE


def test_a_writer_waiting_on_another_process_tries_again_within_the_poll_cap(tmp_path, monkeypatch) -> None:
    """While another process's writer holds the gate, the waiting writer sleeps at most
    ``CROSS_PROCESS_POLL`` between tries (a commit there is found that soon), and gets its place once
    the other lets go. (Another open file of the lock file stands in for the other process: ``flock``
    locks belong to an open file, not to a process.)"""
    gate = WriteGate(str(tmp_path / "db.sqlite"), timeout=0.05)
    other = os.open(gate.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    pauses: list[float] = []
    real_sleep = time.sleep

    def recorded(seconds: float) -> None:
        pauses.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", recorded)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        assert gate.acquire() is False  # held for the whole timeout
        assert pauses and pauses[0] <= 0.0002 and max(pauses) == 0.0004, pauses
        assert len(pauses) >= 10  # it kept trying until its timeout
        fcntl.flock(other, fcntl.LOCK_UN)
        assert gate.acquire() is True
        gate.release()
    finally:
        os.close(other)


# --- the place is given back however the transaction ends ----------------------------------------------


def _end_with_commit(database: Db) -> None:
    _insert("commit")
    db.session.commit()


def _end_with_rollback(database: Db) -> None:
    _insert("rollback")
    db.session.rollback()


def _end_with_an_exception_in_begin(database: Db) -> None:
    with contextlib.suppress(RuntimeError), db.session.begin():
        _insert("exception")
        raise RuntimeError("the unit of work fails")


def _end_with_a_failed_statement(database: Db) -> None:
    row = db.session.execute(text("INSERT INTO gate_rows (writer) VALUES ('once') RETURNING id")).scalar()
    with pytest.raises(IntegrityError):
        db.session.execute(text("INSERT INTO gate_rows (id, writer) VALUES (:id, 'again')"), {"id": row})
    db.session.rollback()


def _end_with_session_close(database: Db) -> None:
    _insert("close")
    db.session.close()


def _end_with_app_context_teardown(database: Db) -> None:
    _insert("teardown")  # the app context's end removes the session, transaction and all


def _end_with_core_commit(database: Db) -> None:
    with db.engine.connect() as connection:
        with connection.begin():
            connection.execute(text("INSERT INTO gate_rows (writer) VALUES ('core-commit')"))
        assert other_thread_writes(database) < AT_ONCE  # at the commit, not when the connection closes


def _end_with_core_rollback(database: Db) -> None:
    with db.engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(text("INSERT INTO gate_rows (writer) VALUES ('core-rollback')"))
        transaction.rollback()
        assert other_thread_writes(database) < AT_ONCE  # at the rollback, not when the connection closes


def _end_with_connection_close(database: Db) -> None:
    connection = db.engine.connect()
    connection.begin()
    connection.execute(text("INSERT INTO gate_rows (writer) VALUES ('core')"))
    connection.close()


def _end_with_invalidation(database: Db) -> None:
    connection = db.engine.connect()
    transaction = connection.begin()
    connection.execute(text("INSERT INTO gate_rows (writer) VALUES ('invalidated')"))
    connection.invalidate()
    assert other_thread_writes(database) < AT_ONCE  # given back when invalidated, before the rollback
    transaction.rollback()  # and the rollback of the invalidated connection still works
    with connection.begin():  # as does the connection afterwards (a new driver connection)
        connection.execute(text("INSERT INTO gate_rows (writer) VALUES ('after')"))
    connection.close()


def _end_with_a_session_over_an_invalidated_connection(database: Db) -> None:
    _insert("session-invalidated")
    db.session.connection().invalidate()
    db.session.rollback()
    _insert("after")
    db.session.commit()


def _end_with_a_dropped_connection(database: Db) -> None:
    connection = db.engine.connect()
    connection.begin()
    connection.execute(text("INSERT INTO gate_rows (writer) VALUES ('dropped')"))
    del connection  # never closed: the pool takes it back when it is collected
    gc.collect()


def _end_with_a_failed_commit(database: Db) -> None:
    """A COMMIT that fails (a deferred foreign key still violated) keeps the place, as the transaction
    is still open; the session's rollback that follows gives it back (with the connection)."""
    db.session.execute(text("PRAGMA defer_foreign_keys = ON"))
    db.session.execute(text("INSERT INTO gate_children (parent_id) VALUES (12345)"))
    with ThreadPoolExecutor(max_workers=1) as pool:
        with pytest.raises(IntegrityError, match="FOREIGN KEY"):
            db.session.commit()
        waiter = pool.submit(write_once, database, "behind-failed-commit")
        time.sleep(HOLD)
        assert not waiter.done()  # still queued: the failed transaction holds the lock
        rolled_back = time.monotonic()
        db.session.rollback()
        waiter.result(timeout=4 * BUSY_TIMEOUT)
        assert time.monotonic() - rolled_back < AT_ONCE


ENDINGS = [
    _end_with_commit, _end_with_rollback, _end_with_an_exception_in_begin, _end_with_a_failed_statement,
    _end_with_session_close, _end_with_app_context_teardown, _end_with_core_commit, _end_with_core_rollback,
    _end_with_connection_close,
    _end_with_invalidation, _end_with_a_session_over_an_invalidated_connection,
    _end_with_a_dropped_connection, _end_with_a_failed_commit,
]


@pytest.mark.parametrize("end", ENDINGS, ids=[f.__name__.removeprefix("_end_with_") for f in ENDINGS])
def test_the_place_is_given_back_however_the_transaction_ends(gated: Db, end) -> None:
    with gated.app.app_context():
        end(gated)
        db.session.remove()
    for _ in range(2):
        assert other_thread_writes(gated) < AT_ONCE
    assert write_once(gated, "same-thread") < AT_ONCE


# --- a writer that is not ours --------------------------------------------------------------------------


@pytest.fixture
def quick(tmp_path: Path) -> Iterator[Db]:
    database, cleanup = _make_db(tmp_path, 0.5)
    yield database
    cleanup()


@contextlib.contextmanager
def foreign_writer(path: str) -> Iterator[sqlite3.Connection]:
    """A write transaction of a program that does not queue (the sqlite3 shell)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO gate_rows (writer) VALUES ('foreign')")
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


def _timed_write(database: Db, writer: str) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        write_once(database, writer)
    except OperationalError as exc:
        with database.app.app_context():
            db.session.remove()
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def test_a_foreign_writer_makes_ours_wait_then_fail_busy(quick: Db) -> None:
    """Our writers wait for a writer outside mdmserver as before, each at most about twice the busy
    timeout (its wait at the gate behind one of ours, then SQLite's own), and fail "database is locked";
    once the foreign writer commits, ours go through."""
    before = quick.count()
    with foreign_writer(quick.path), ThreadPoolExecutor(max_workers=4) as pool:
        results = [f.result(timeout=30) for f in [pool.submit(_timed_write, quick, f"w{n}") for n in range(4)]]
    for took, error in results:
        assert isinstance(error, OperationalError), error
        assert error.orig.sqlite_errorname == "SQLITE_BUSY"
        assert "database is locked" in str(error.orig)
        assert quick.busy_timeout * 0.9 <= took <= quick.busy_timeout * 2 + 0.5, results
    assert quick.count() == before + 1  # the foreign row only
    with ThreadPoolExecutor(max_workers=4) as pool:
        took = [f.result(timeout=30) for f in [pool.submit(write_once, quick, f"a{n}") for n in range(4)]]
    assert max(took) < quick.busy_timeout
    assert quick.count() == before + 5


def test_writers_waiting_for_a_foreign_writer_go_through_when_it_commits(quick: Db) -> None:
    before = quick.count()
    with ThreadPoolExecutor(max_workers=4) as pool:
        with foreign_writer(quick.path):
            futures = [pool.submit(_timed_write, quick, f"w{n}") for n in range(4)]
            time.sleep(quick.busy_timeout / 3)
        results = [f.result(timeout=30) for f in futures]
    assert [error for _, error in results] == [None] * 4
    assert quick.count() == before + 1 + 4



# --- a writer interrupted while it queues -------------------------------------------------------------


class Interrupted(BaseException):
    """What a signal handler may raise in the middle of a wait (KeyboardInterrupt, SystemExit)."""


def test_a_writer_interrupted_while_it_queues_leaves_no_place_taken(gated: Db) -> None:
    """Another process's writer holds the queue's lock file; ours, queued behind it, is interrupted by a
    signal. Once the other process lets go, a writer of ours gets in at once."""
    def interrupt(signum, frame):
        raise Interrupted

    other_process = os.open(f"{gated.path}-writers", os.O_RDWR)  # a description of its own: as another process
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        fcntl.flock(other_process, fcntl.LOCK_EX)
        signal.setitimer(signal.ITIMER_REAL, HOLD)
        with pytest.raises(Interrupted):
            write_once(gated, "interrupted")
        fcntl.flock(other_process, fcntl.LOCK_UN)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.close(other_process)
    assert other_thread_writes(gated) < AT_ONCE
