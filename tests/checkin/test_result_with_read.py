"""On PostgreSQL a result that needs nothing but storing is stored by the request's one read statement,
with the next command marked sent (issue 12): no transaction around it, no second statement. Only for
the device's own trusted certificate and its own command; any other result is left to the transaction.
The same tests run on SQLite, where every result goes through the transaction: the outcome is the same."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from mdmserver.checkin import service
from mdmserver.checkin.auth import DeviceIdentity
from mdmserver.collaborators import secret_box
from mdmserver.db import untransacted, utcnow
from mdmserver.pki.models import Certificate
from mdmserver.pki.x509 import fingerprint_sha256
from mdmserver.protocol.plist import dump_plist, load_dict
from mdmserver.protocol.results import parse_result
from mdmserver.records.commands import Command
from mdmserver.records.devices import Device, DeviceSecurityInfo
from mdmserver.simulator.device import SimulatedDevice
from mdmserver.webhooks.models import WebhookEvent
from mdmserver.webhooks.service import create_subscription
from tests.checkin.test_connect_read import _enrolled, _queue
from tests.checkin.test_connect_statements import count_statements

#: a command whose acknowledgement changes no inventory
LOCK = "DeviceLock"


def _received(db_session, sim: SimulatedDevice, device_id: int, request_type: str = LOCK) -> str:
    """Queue a command and have the device receive it (sent, awaiting its answer; last_seen is fresh)."""
    uuid = _queue(db_session, device_id, request_type)
    status, command = sim.idle()
    assert status == 200 and command["CommandUUID"] == uuid
    return uuid


def _row(db_session, uuid: str) -> tuple[str, int, bool]:
    """(status, attempts, has a completion time) of a command, as stored."""
    db_session.expire_all()
    status, attempts, completed_at = db_session.execute(
        select(Command.status, Command.attempts, Command.completed_at).where(Command.uuid == uuid)).one()
    return status, attempts, completed_at is not None


def _is_postgresql(db_session) -> bool:
    return db_session.get_bind().dialect.name == "postgresql"


def _acknowledge(sim: SimulatedDevice, uuid: str):
    return sim.send("/mdm/connect", {"UDID": sim.udid, "Status": "Acknowledged", "CommandUUID": uuid})


def _read(db_session, sim: SimulatedDevice, uuid: str, *, signer: SimulatedDevice | None = None) -> service.ConnectRead:
    message = {"UDID": sim.udid, "Status": "Acknowledged", "CommandUUID": uuid}
    certificate = (signer or sim).identity.certificate
    identity = DeviceIdentity(certificate=certificate, fingerprint=fingerprint_sha256(certificate))
    with untransacted(db_session.get_bind()) as connection:
        return service.read_connect(connection, parse_result(message), identity, dump_plist(message), secret_box())


def test_an_acknowledgement_is_one_statement_that_stores_it_and_offers_the_next(client, db_session, topic,
                                                                                auto_admission) -> None:
    sim, device_id = _enrolled(client, db_session)
    answered = _received(db_session, sim, device_id)
    following = _queue(db_session, device_id, LOCK)
    with count_statements() as seen:
        status, body = _acknowledge(sim, answered)
    assert status == 200 and load_dict(body)["CommandUUID"] == following
    assert _row(db_session, answered) == ("acknowledged", 1, True)
    assert _row(db_session, following) == ("sent", 1, False)
    kinds = [statement.split()[0].upper() for statement in seen]
    # PostgreSQL: the read, the result's UPDATE and the mark are one statement; SQLite: the read outside
    # the transaction, then the two UPDATEs in it
    assert kinds == (["WITH"] if _is_postgresql(db_session) else ["SELECT", "UPDATE", "UPDATE"])


def test_the_last_acknowledgement_of_a_queue_is_stored_and_answered_empty(client, db_session, topic,
                                                                          auto_admission) -> None:
    sim, device_id = _enrolled(client, db_session)
    answered = _received(db_session, sim, device_id)
    assert _acknowledge(sim, answered) == (200, b"")
    assert _row(db_session, answered) == ("acknowledged", 1, True)


def _another_devices_certificate(client, db_session, sim, device_id) -> SimulatedDevice:
    other, _ = _enrolled(client, db_session)
    return other


def _revoked(client, db_session, sim, device_id) -> None:
    db_session.execute(update(Certificate).where(Certificate.fingerprint_sha256 == fingerprint_sha256(
        sim.identity.certificate)).values(revoked_at=utcnow()))
    db_session.commit()


def _refused(status: str):
    def refuse(client, db_session, sim, device_id) -> None:
        db_session.execute(update(Device).where(Device.id == device_id).values(admission_status=status))
        db_session.commit()
    return refuse


@pytest.mark.parametrize("attack", [_another_devices_certificate, _revoked, _refused("rejected"),
                                    _refused("decommissioned")],
                         ids=["another-devices-certificate", "revoked-certificate", "rejected", "decommissioned"])
def test_a_result_the_checks_refuse_is_not_stored_with_the_read(client, db_session, topic, auto_admission,
                                                                attack) -> None:
    sim, device_id = _enrolled(client, db_session)
    answered = _received(db_session, sim, device_id)
    following = _queue(db_session, device_id, LOCK)
    signer = attack(client, db_session, sim, device_id)
    read = _read(db_session, sim, answered, signer=signer)
    assert not read.trusted and not read.recorded and not read.offered
    assert _row(db_session, answered) == ("sent", 1, False)
    assert _row(db_session, following) == ("queued", 0, False)


def test_a_device_cannot_answer_another_devices_command(client, db_session, topic, auto_admission) -> None:
    sim, device_id = _enrolled(client, db_session)
    other, other_id = _enrolled(client, db_session)
    theirs = _received(db_session, other, other_id)
    mine = _queue(db_session, device_id, LOCK)
    read = _read(db_session, sim, theirs)  # its own certificate, the other's command UUID
    assert read.trusted and not read.recorded and not read.offered
    status, body = _acknowledge(sim, theirs)
    assert status == 200 and load_dict(body)["CommandUUID"] == mine  # ignored; its own queue goes on
    assert _row(db_session, theirs) == ("sent", 1, False)


def _listening(db_session, device_id: int) -> None:
    create_subscription(db_session, {"name": "acks", "url": "https://hooks.example.com/",
                                     "event_types": ["command.acknowledged"]}, box=secret_box(), actor="tests")
    db_session.commit()


def _seen_long_ago(db_session, device_id: int) -> None:
    db_session.execute(update(Device).where(Device.id == device_id).values(last_seen_at=utcnow() - timedelta(hours=1)))
    db_session.commit()


@pytest.mark.parametrize("answered_type, arrange", [
    (LOCK, _listening), (LOCK, _seen_long_ago), ("SecurityInfo", None),
], ids=["webhook-listening", "last-seen-due", "inventory-answer"])
def test_a_result_that_needs_more_than_storing_is_left_to_the_transaction(client, db_session, topic,
                                                                          auto_admission, answered_type,
                                                                          arrange) -> None:
    sim, device_id = _enrolled(client, db_session)
    answered = _received(db_session, sim, device_id, answered_type)
    following = _queue(db_session, device_id, LOCK)
    if arrange is not None:
        arrange(db_session, device_id)
    read = _read(db_session, sim, answered)
    assert read.trusted and not read.recorded and not read.offered
    assert _row(db_session, answered) == ("sent", 1, False)
    status, body = sim.send("/mdm/connect", sim.answer(answered, answered_type, {}))
    assert status == 200 and load_dict(body)["CommandUUID"] == following
    assert _row(db_session, answered) == ("acknowledged", 1, True)
    if arrange is _listening:
        events = db_session.scalars(select(WebhookEvent.type)).all()
        assert "command.acknowledged" in events
    elif arrange is _seen_long_ago:
        seen = db_session.scalar(select(Device.last_seen_at).where(Device.id == device_id))
        assert seen > utcnow() - timedelta(minutes=1)
    else:
        assert db_session.get(DeviceSecurityInfo, device_id) is not None


def test_an_answer_to_the_command_next_in_line_gives_way_to_the_one_after(client, db_session, topic,
                                                                          auto_admission) -> None:
    """The device answers a command it was never offered, the one its read finds next: that one is not
    marked sent (it is answered), and the command after it is offered instead."""
    sim, device_id = _enrolled(client, db_session)
    sim.idle()
    first = _queue(db_session, device_id, LOCK)
    second = _queue(db_session, device_id, LOCK)
    status, body = _acknowledge(sim, first)
    assert status == 200 and load_dict(body)["CommandUUID"] == second
    assert _row(db_session, first) == ("acknowledged", 0, True)
    assert _row(db_session, second) == ("sent", 1, False)
