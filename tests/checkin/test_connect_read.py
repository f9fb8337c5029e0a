"""A command-channel request is first read outside any transaction (issue 12): a quiet Idle is answered
there, an Idle with a command offers it only if the command is still active when the transaction marks it
sent, and a result's transaction only writes (the result, then the next command if it is still queued);
every check of the transactional path still holds (the refusals themselves are proven in
test_takeover.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from mdmserver.checkin import service
from mdmserver.checkin.auth import DeviceIdentity
from mdmserver.collaborators import secret_box
from mdmserver.commands import service as commands
from mdmserver.db import untransacted, utcnow
from mdmserver.errors import Forbidden
from mdmserver.pki.x509 import fingerprint_sha256
from mdmserver.protocol.plist import load_dict
from mdmserver.protocol.results import parse_result
from mdmserver.records.commands import Command
from mdmserver.records.devices import Device
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice
from tests.checkin.test_connect_statements import count_statements


def _enrolled(client, db_session) -> tuple[SimulatedDevice, int]:
    sim = SimulatedDevice(FlaskTransport(client))
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    return sim, db_session.scalar(select(Device.id).where(Device.udid == sim.udid))


def _queue(db_session, device_id: int, request_type: str = "SecurityInfo") -> str:
    uuid = commands.enqueue_commands(db_session, [device_id], request_type, {}, enqueued_by="t",
                                     box=secret_box())[0]["uuid"]
    db_session.commit()
    return uuid


def _read(db_session, sim: SimulatedDevice, identity_of: SimulatedDevice | None = None) -> service.ConnectRead:
    result = parse_result({"UDID": sim.udid, "Status": "Idle"})
    certificate = (identity_of or sim).identity.certificate
    identity = DeviceIdentity(certificate=certificate, fingerprint=fingerprint_sha256(certificate))
    with untransacted(db_session.get_bind()) as connection:
        return service.read_connect(connection, result, identity, b"", secret_box())


def _handle(db_session, sim: SimulatedDevice, read: service.ConnectRead) -> bytes | None:
    result = parse_result({"UDID": sim.udid, "Status": "Idle"})
    certificate = sim.identity.certificate
    identity = DeviceIdentity(certificate=certificate, fingerprint=fingerprint_sha256(certificate))
    return service.handle_idle(db_session, read, result, b"", identity, secret_box(), "https://mdm.example")


def _status(db_session, uuid: str) -> tuple[str, int]:
    return db_session.execute(select(Command.status, Command.attempts).where(Command.uuid == uuid)).one()


def test_a_quiet_idle_is_one_read_and_writes_nothing(client, db_session, topic, auto_admission) -> None:
    sim, device_id = _enrolled(client, db_session)
    assert sim.idle() == (200, None)  # last_seen recorded now
    seen_before = db_session.scalar(select(Device.last_seen_at).where(Device.id == device_id))
    with count_statements() as seen:
        assert sim.idle() == (200, None)
    assert len(seen) == 1 and seen[0].lstrip().upper().startswith("SELECT")
    assert db_session.scalar(select(Device.last_seen_at).where(Device.id == device_id)) == seen_before


def test_an_idle_past_the_last_seen_resolution_is_not_quiet_and_records_it(client, db_session, topic,
                                                                           auto_admission) -> None:
    sim, device_id = _enrolled(client, db_session)
    long_ago = utcnow() - timedelta(hours=1)
    db_session.execute(update(Device).where(Device.id == device_id).values(last_seen_at=long_ago))
    db_session.commit()
    read = _read(db_session, sim)
    assert not read.quiet and not read.offer
    assert sim.idle() == (200, None)
    seen = db_session.scalar(select(Device.last_seen_at).where(Device.id == device_id))
    assert seen > long_ago + timedelta(minutes=59)


def test_another_devices_certificate_is_neither_quiet_nor_offered(client, db_session, topic, auto_admission) -> None:
    sim, device_id = _enrolled(client, db_session)
    other, _ = _enrolled(client, db_session)
    sim.idle()
    _queue(db_session, device_id)
    read = _read(db_session, sim, identity_of=other)
    assert not read.quiet and not read.offer  # the transactional path decides: it refuses (test_takeover.py)


def test_the_command_read_is_offered_and_marked_sent_once(client, db_session, topic, auto_admission) -> None:
    sim, device_id = _enrolled(client, db_session)
    uuid = _queue(db_session, device_id)
    read = _read(db_session, sim)
    assert read.offer and not read.quiet
    with count_statements() as seen:
        body = _handle(db_session, sim, read)
    db_session.commit()
    assert load_dict(body)["CommandUUID"] == uuid
    assert _status(db_session, uuid) == ("sent", 1)
    # last_seen is fresh (the check-in recorded it): the one guarded UPDATE that marks it sent
    assert [s.split()[0].upper() for s in seen] == ["UPDATE"]


def test_a_command_canceled_after_the_read_is_not_delivered(client, db_session, topic, auto_admission) -> None:
    sim, device_id = _enrolled(client, db_session)
    sim.idle()
    uuid = _queue(db_session, device_id)
    read = _read(db_session, sim)
    assert read.offer
    commands.cancel_command(db_session, uuid)  # an administrator, between the read and the transaction
    db_session.commit()
    assert _handle(db_session, sim, read) is None
    db_session.commit()
    assert _status(db_session, uuid) == ("cancelled", 0)


def test_a_command_answered_after_the_read_gives_way_to_the_next(client, db_session, topic, auto_admission) -> None:
    sim, device_id = _enrolled(client, db_session)
    sim.idle()
    first = _queue(db_session, device_id)
    second = _queue(db_session, device_id, "ProfileList")
    read = _read(db_session, sim)
    assert read.offer and read.state.command_uuid == first
    db_session.execute(update(Command).where(Command.uuid == first).values(status="acknowledged"))
    db_session.commit()
    body = _handle(db_session, sim, read)
    db_session.commit()
    assert load_dict(body)["CommandUUID"] == second  # read again in the transaction
    assert _status(db_session, first) == ("acknowledged", 0)
    assert _status(db_session, second) == ("sent", 1)


# --- results -----------------------------------------------------------------------------------------


def test_a_device_refused_after_an_idles_read_is_refused_when_the_queue_is_read_again(
        client, db_session, topic, auto_admission) -> None:
    sim, device_id = _enrolled(client, db_session)
    sim.idle()
    uuid = _queue(db_session, device_id)
    read = _read(db_session, sim)
    assert read.offer
    # between the read and the transaction: the device is rejected, which cancels its queue
    db_session.execute(update(Device).where(Device.id == device_id).values(admission_status="rejected"))
    commands.cancel_queue(db_session, device_id)
    db_session.commit()
    with pytest.raises(Forbidden):
        _handle(db_session, sim, read)
    db_session.rollback()
    assert _status(db_session, uuid) == ("cancelled", 0)


def _identity(sim: SimulatedDevice) -> DeviceIdentity:
    certificate = sim.identity.certificate
    return DeviceIdentity(certificate=certificate, fingerprint=fingerprint_sha256(certificate))


def _acknowledgement(sim: SimulatedDevice, uuid: str) -> dict:
    return {"UDID": sim.udid, "Status": "Acknowledged", "CommandUUID": uuid}


def _read_result(db_session, sim: SimulatedDevice, message: dict, identity_of: SimulatedDevice | None = None):
    with untransacted(db_session.get_bind()) as connection:
        return service.read_connect(connection, parse_result(message), _identity(identity_of or sim), b"<plist/>",
                                    secret_box())


def _handle_result(db_session, sim: SimulatedDevice, read: service.ConnectRead, message: dict) -> bytes | None:
    return service.handle_result(db_session, read, parse_result(message), b"<plist/>", _identity(sim), secret_box(),
                                 "https://mdm.example")


def _offered(client, db_session, sim: SimulatedDevice, device_id: int) -> str:
    """Queue a command and have the device receive it: it is sent, awaiting the device's answer."""
    uuid = _queue(db_session, device_id)
    status, command = sim.idle()
    assert status == 200 and command["CommandUUID"] == uuid
    return uuid


def _acknowledging_with_one_queued(client, db_session):
    """A device about to acknowledge the command it received, one more command queued, and the result's
    read made: (device, its id, answered UUID, queued UUID, the acknowledgement, the read)."""
    sim, device_id = _enrolled(client, db_session)
    answered = _offered(client, db_session, sim, device_id)
    queued = _queue(db_session, device_id, "ProfileList")
    message = _acknowledgement(sim, answered)
    read = _read_result(db_session, sim, message)
    assert read.state.command_uuid == queued
    return sim, device_id, answered, queued, message, read


def test_a_result_is_recorded_and_the_next_command_read_before_is_offered(client, db_session, topic,
                                                                          auto_admission) -> None:
    sim, _, answered, following, message, read = _acknowledging_with_one_queued(client, db_session)
    assert read.trusted and not read.quiet and not read.offer
    with count_statements() as seen:
        body = _handle_result(db_session, sim, read, message)
    db_session.commit()
    assert load_dict(body)["CommandUUID"] == following
    assert _status(db_session, answered) == ("acknowledged", 1)
    assert _status(db_session, following) == ("sent", 1)
    # the transaction only writes: the result's UPDATE … RETURNING and the guarded mark (no second read)
    assert [s.split()[0].upper() for s in seen] == ["UPDATE", "UPDATE"]


def test_a_command_canceled_after_a_results_read_is_not_delivered(client, db_session, topic,
                                                                  auto_admission) -> None:
    sim, _, answered, canceled, message, read = _acknowledging_with_one_queued(client, db_session)
    commands.cancel_command(db_session, canceled)  # an administrator, between the read and the transaction
    db_session.commit()
    assert _handle_result(db_session, sim, read, message) is None
    db_session.commit()
    assert _status(db_session, answered) == ("acknowledged", 1)
    assert _status(db_session, canceled) == ("cancelled", 0)


def test_a_command_offered_elsewhere_after_a_results_read_is_not_offered_twice(client, db_session, topic,
                                                                               auto_admission) -> None:
    sim, device_id = _enrolled(client, db_session)
    answered = _offered(client, db_session, sim, device_id)
    taken = _queue(db_session, device_id, "ProfileList")
    last = _queue(db_session, device_id, "CertificateList")
    message = _acknowledgement(sim, answered)
    read = _read_result(db_session, sim, message)
    assert read.state.command_uuid == taken
    # a concurrent request of the same device offered it meanwhile
    db_session.execute(update(Command).where(Command.uuid == taken).values(status="sent", attempts=1))
    db_session.commit()
    body = _handle_result(db_session, sim, read, message)
    db_session.commit()
    assert load_dict(body)["CommandUUID"] == last  # read again in the transaction: the next one still queued
    assert _status(db_session, taken) == ("sent", 1)
    assert _status(db_session, last) == ("sent", 1)


def test_a_result_signed_with_another_devices_certificate_is_refused_and_not_recorded(
        client, db_session, topic, auto_admission) -> None:
    sim, device_id = _enrolled(client, db_session)
    other, _ = _enrolled(client, db_session)
    answered = _offered(client, db_session, sim, device_id)
    message = _acknowledgement(sim, answered)
    read = _read_result(db_session, sim, message, identity_of=other)
    assert not read.trusted
    with pytest.raises(Forbidden):
        service.handle_result(db_session, read, parse_result(message), b"<plist/>", _identity(other), secret_box(),
                              "https://mdm.example")
    db_session.rollback()
    assert _status(db_session, answered) == ("sent", 1)


def test_a_device_refused_after_a_results_read_is_refused_when_the_queue_is_read_again(
        client, db_session, topic, auto_admission) -> None:
    sim, device_id, _, following, message, read = _acknowledging_with_one_queued(client, db_session)
    assert read.trusted
    # between the read and the transaction: the device is rejected, which cancels its queue
    db_session.execute(update(Device).where(Device.id == device_id).values(admission_status="rejected"))
    commands.cancel_queue(db_session, device_id)
    db_session.commit()
    with pytest.raises(Forbidden):
        _handle_result(db_session, sim, read, message)
    db_session.rollback()
    assert _status(db_session, following) == ("cancelled", 0)
