"""PostgreSQL's plans for the connect path's writes when its statistics are stale (issue 12).

A fleet with a long history, analysed while no command was active, then a mass action queuing thousands
of commands before the next ANALYZE: the statistics say the partial index of active queues
(``ix_commands_active_queue``) is empty. An UPDATE that finds its command by id or UUID *and* guards on a
status from which that index's predicate follows could then be served by a scan of the whole index, the
active queue of every device, instead of its key's index: a cost per request that grows with the fleet.

The plans are PostgreSQL's own, reported by ``auto_explain`` for the statements the device's requests run
through the real request path; the test checks its premise (the stale statistics) in the catalogue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import text

from mdmserver.protocol.plist import load_dict
from tests.checkin.test_connect_read import _enrolled
from tests.checkin.test_result_with_read import _acknowledge, _listening, _received, _row
from tests.factories import make_device

#: commands answered before the last ANALYZE, and queued for another device by a mass action after it
HISTORY, MASS_ACTION = 5000, 3000
#: how often each request is repeated: past psycopg's prepare threshold and PostgreSQL's five custom plans,
#: so that generic plans are seen too
REPEATS = 12

_INSERT = text(
    "INSERT INTO commands (uuid, device_id, request_type, parameters_id, priority, status, created_at, attempts,"
    " completed_at)"
    " SELECT upper(md5(CAST(:tag AS text) || n)), :device, 'DeviceLock', :parameters, 0, CAST(:status AS varchar),"
    " now(), 0, CASE WHEN CAST(:status AS varchar) = 'acknowledged' THEN now() END"
    " FROM generate_series(1, :count) AS n")


@pytest.fixture
def postgresql(db_session):
    if db_session.get_bind().dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner")
    return db_session


def _plant_stale_statistics(session) -> None:
    """``HISTORY`` answered commands and no active one, ANALYZE, then the mass action's ``MASS_ACTION``
    queued commands for another device (no ANALYZE after it)."""
    parameters = session.scalar(text(
        "INSERT INTO command_parameters (sha256, body) VALUES (repeat('0', 64), '') RETURNING id"))
    other = make_device(session, index=901).id
    session.execute(_INSERT, {"tag": "history", "device": other, "parameters": parameters,
                              "status": "acknowledged", "count": HISTORY})
    session.execute(text("ANALYZE commands"))
    session.execute(_INSERT, {"tag": "mass", "device": other, "parameters": parameters,
                              "status": "queued", "count": MASS_ACTION})
    session.commit()
    estimated = session.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'ix_commands_active_queue'"))
    active = session.scalar(text("SELECT count(*) FROM commands WHERE status IN ('queued', 'sent', 'not_now')"))
    assert estimated == 0 and active >= MASS_ACTION  # the premise: the planner believes the index is empty


def _queue_many(session, device_id: int, like: str, count: int) -> None:
    """``count`` more queued commands for the device, with the parameters of command ``like``."""
    parameters = session.scalar(text("SELECT parameters_id FROM commands WHERE uuid = :uuid"), {"uuid": like})
    session.execute(_INSERT, {"tag": f"own{device_id}", "device": device_id, "parameters": parameters,
                              "status": "queued", "count": count})
    session.commit()


@contextmanager
def _plans(session) -> Iterator[list[dict[str, Any]]]:
    """The plans (JSON) of the statements run on the session's connection meanwhile, from ``auto_explain``
    (its log sent to this client as notices)."""
    connection = session.connection().connection.driver_connection
    plans: list[dict[str, Any]] = []

    def notice(diagnostic) -> None:
        message = diagnostic.message_primary or ""
        if "plan:" in message and "{" in message:
            plans.append(json.loads(message[message.index("{"):]))

    for setting in ("LOAD 'auto_explain'", "SET auto_explain.log_level = notice",
                    "SET auto_explain.log_min_duration = 0", "SET auto_explain.log_format = json"):
        session.execute(text(setting))
    connection.add_notice_handler(notice)
    try:
        yield plans
    finally:
        connection.remove_notice_handler(notice)
        session.execute(text("SET auto_explain.log_min_duration = -1"))


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def _whole_queue_scans(plans: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(statement, index condition) of every scan of the active-queue index not bounded to one device."""
    return [(plan["Query Text"][:80], node.get("Index Cond"))
            for plan in plans for node in _nodes(plan["Plan"])
            if node.get("Index Name") == "ix_commands_active_queue"
            and "device_id =" not in (node.get("Index Cond") or "")]


def _connect_plans(plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The plans of statements reading or writing ``commands`` (not the test's own settings)."""
    return [plan for plan in plans if "commands" in plan["Query Text"]]


def test_acknowledgements_read_no_other_devices_queue(client, postgresql, topic, auto_admission) -> None:
    """The one statement storing an answer and marking the next command sent (PostgreSQL's path)."""
    sim, device_id = _enrolled(client, postgresql)
    _plant_stale_statistics(postgresql)
    current = _received(postgresql, sim, device_id)
    _queue_many(postgresql, device_id, current, REPEATS + 1)
    with _plans(postgresql) as plans:
        for _ in range(REPEATS):
            status, body = _acknowledge(sim, current)
            assert status == 200
            answered, current = current, load_dict(body)["CommandUUID"]
            assert _row(postgresql, answered)[0] == "acknowledged" and _row(postgresql, current)[0] == "sent"
    assert len([plan for plan in plans if plan["Query Text"].startswith("WITH")]) == REPEATS
    assert _whole_queue_scans(_connect_plans(plans)) == []


def test_idle_offers_and_answers_in_a_transaction_read_no_other_devices_queue(client, postgresql, topic,
                                                                               auto_admission) -> None:
    """An Idle offering a command again (its guarded mark), and answers stored in the request's transaction
    (a webhook subscription listens) with the next command marked."""
    sim, device_id = _enrolled(client, postgresql)
    _plant_stale_statistics(postgresql)
    current = _received(postgresql, sim, device_id)
    _queue_many(postgresql, device_id, current, REPEATS + 1)
    _listening(postgresql, device_id)
    with _plans(postgresql) as plans:
        for _ in range(REPEATS):
            status, command = sim.idle()  # the command sent and not answered is offered again
            assert status == 200 and command["CommandUUID"] == current
            status, body = _acknowledge(sim, current)
            assert status == 200
            answered, current = current, load_dict(body)["CommandUUID"]
            assert _row(postgresql, answered)[0] == "acknowledged"
    assert len(_connect_plans(plans)) >= 3 * REPEATS  # the reads, the answers and the marks were seen
    assert _whole_queue_scans(_connect_plans(plans)) == []
