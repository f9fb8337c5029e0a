"""The connect path runs a small, constant number of SQL statements, whatever the queue length or
the number of devices."""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import event, select

from mdmserver.collaborators import secret_box
from mdmserver.commands import service as commands
from mdmserver.db import db, driver_statement_listeners, session_driver, utcnow
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


def _read_steps(db_session, udid: str) -> dict[str, int]:
    """SQLite virtual-machine steps of the connect read, after an Idle and after a result."""
    driver = session_driver(db_session)
    steps = {}
    for after_idle in (True, False):
        counted = [0]

        def step(counted=counted) -> int:
            counted[0] += 1
            return 0  # go on

        driver.dbapi.set_progress_handler(step, 1)
        try:
            state = commands.connect_state(driver, udid, after_idle=after_idle, now=utcnow())
        finally:
            driver.dbapi.set_progress_handler(None, 1)
        assert state is not None and state.command_id is not None
        steps["after_idle" if after_idle else "after_result"] = counted[0]
    return steps


def _steps_before_and_after_200_more(client, db_session, *, own_queue: bool) -> tuple[SimulatedDevice, dict, dict]:
    """The read's steps with one command queued for the device, then with 200 more queued for it
    (``own_queue``) or for another device."""
    if db_session.get_bind().dialect.name != "sqlite":
        pytest.skip("counts SQLite's virtual-machine steps (PostgreSQL: the plan is its planner's, "
                    "which proves the partial index's predicate from status = 'queued' and has the same index)")
    sim, device_id = _enrolled(client, db_session)
    _other_sim, other_id = _enrolled(client, db_session)
    commands.enqueue_commands(db_session, [device_id], "SecurityInfo", {}, enqueued_by="t", box=secret_box())
    db_session.commit()
    before = _read_steps(db_session, sim.udid)
    for _ in range(200):
        commands.enqueue_commands(db_session, [device_id if own_queue else other_id], "ProfileList", {},
                                  enqueued_by="t", box=secret_box())
    db_session.commit()
    return sim, before, _read_steps(db_session, sim.udid)


def test_the_connect_read_does_not_read_other_devices_queues(client, db_session, topic, auto_admission) -> None:
    """The read that finds a device's next command searches that device's active queue only, after an
    Idle and after a result alike: the other devices' queued commands cost it nothing. (After a result
    only ``queued`` commands are candidates, and SQLite did not use the partial index of the active
    queue for that condition: it read every device's queued commands, 1 ms a request in the cycles.)"""
    _sim, alone, crowded = _steps_before_and_after_200_more(client, db_session, own_queue=False)
    # a step or two more for a deeper index, not steps per queued command (the plan that read every
    # device's queued commands took 6 a command after a result: 1,200 more here)
    assert all(crowded[read] - alone[read] <= 2 for read in alone), (alone, crowded)


def test_the_connect_read_does_not_sort_the_devices_queue(client, db_session, topic, auto_admission) -> None:
    """The next command is the first candidate of the device's active queue in delivery order
    (``ix_commands_active_queue`` is on ``device_id, priority DESC, id``): a longer queue costs the read
    nothing. (On ``device_id, status, priority, id`` the read gathered and sorted all the device's
    candidates: 113 steps after an Idle with one command queued, 2,513 with 200 more, and the same growth
    after a result. A bulk action's queue cost every answer.)"""
    sim, short, long = _steps_before_and_after_200_more(client, db_session, own_queue=True)
    assert all(long[read] - short[read] <= 2 for read in short), (short, long)
    # the one queued first is still the one offered (same priority: enqueueing order)
    state = commands.connect_state(session_driver(db_session), sim.udid, after_idle=True, now=utcnow())
    assert state.command_request_type == "SecurityInfo"
