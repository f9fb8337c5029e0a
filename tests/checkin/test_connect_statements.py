"""The connect path runs a small, constant number of SQL statements, whatever the queue length or
the number of devices."""

from __future__ import annotations

import contextlib

from sqlalchemy import event, select

from mdmserver.collaborators import secret_box
from mdmserver.commands import service as commands
from mdmserver.db import db, driver_statement_listeners
from mdmserver.records.devices import Device
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice


@contextlib.contextmanager
def count_statements():
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK TO")):
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", before)
    driver_statement_listeners.append(seen.append)  # the quiet Idle's read runs on the driver's cursor
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
        driver_statement_listeners.remove(seen.append)


def _enrolled(client, db_session) -> tuple[SimulatedDevice, int]:
    sim = SimulatedDevice(FlaskTransport(client))
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    return sim, db_session.scalar(select(Device.id).where(Device.udid == sim.udid))


def _measure(client, db_session, *, queue: int, extra_devices: int) -> dict[str, int]:
    sim, device_id = _enrolled(client, db_session)
    others = [_enrolled(client, db_session)[1] for _ in range(extra_devices)]
    for other in others:
        commands.enqueue_commands(db_session, [other], "ProfileList", {}, enqueued_by="t", box=secret_box())
    for _ in range(queue):
        commands.enqueue_commands(db_session, [device_id], "SecurityInfo", {}, enqueued_by="t", box=secret_box())
    db_session.commit()
    sim.idle()  # warm caches (CA certificate); last_seen is fresh
    counts = {}
    with count_statements() as seen:
        status, command = sim.idle()
    assert status == 200 and command is not None
    counts["idle_deliver"] = len(seen)
    uuid = command["CommandUUID"]
    with count_statements() as seen:
        status, _body = sim.send("/mdm/connect", sim.answer(uuid, "SecurityInfo", {}))
    assert status == 200
    counts["result_apply_and_deliver"] = len(seen)
    commands.cancel_queue(db_session, device_id)
    db_session.commit()
    with count_statements() as seen:
        assert sim.idle() == (200, None)
    counts["idle_empty"] = len(seen)
    return counts


def test_connect_statement_count_is_constant(client, db_session, topic, auto_admission) -> None:
    # Counted: the statements of the request itself. Not counted: the transaction around it (the
    # fixture began the test's transaction, requests only add SAVEPOINTs); in production each device
    # request also runs SQLite's BEGIN IMMEDIATE (device requests write) and a COMMIT.
    small = _measure(client, db_session, queue=2, extra_devices=0)
    large = _measure(client, db_session, queue=60, extra_devices=8)
    assert small == large, (small, large)
    print("connect statements:", small)
    # device and next command in one query + mark sent
    assert small["idle_deliver"] == 2
    # device and next command + result UPDATE … RETURNING + the webhook outbox's conditional event
    # INSERT (command.acknowledged; nothing more without a subscriber) + inventory (delete + insert) + the
    # enabled compliance policies (none here: the device is not judged again) + mark sent
    assert small["result_apply_and_deliver"] == 5
    assert small["idle_empty"] == 1
