"""Queued commands owe the device a push (the push outbox), also after TokenUpdate and acceptance."""

from __future__ import annotations

from sqlalchemy import func, select

from mdmserver.admission import service as admission
from mdmserver.collaborators import secret_box
from mdmserver.commands import service as commands
from mdmserver.mender import service as mender
from mdmserver.records.devices import Device
from mdmserver.records.push import PushRequest
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice
from tests.factories import install_push_topic


def _pending_pushes(db_session, device_id: int) -> int:
    return db_session.scalar(select(func.count()).select_from(PushRequest)
                             .where(PushRequest.device_id == device_id, PushRequest.status == "pending"))


def test_push_requests_follow_the_queue(app, client, db_session, monkeypatch) -> None:
    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    install_push_topic(db_session, monkeypatch)
    sim = SimulatedDevice(FlaskTransport(client))
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    device = db_session.scalar(select(Device).where(Device.udid == sim.udid))
    assert device.admission_status == "pending"
    commands.enqueue_commands(db_session, [device.id], "ProfileList", {}, enqueued_by="t", box=secret_box())
    db_session.commit()
    assert _pending_pushes(db_session, device.id) == 0  # pending devices are never pushed
    mender.set_status(db_session, admission.current_auth_set(db_session, device), "accepted", box=secret_box(),
                      public_url="http://127.0.0.1:8080")
    db_session.commit()
    assert _pending_pushes(db_session, device.id) == 1  # acceptance wakes it for the queued command
    commands.enqueue_commands(db_session, [device.id], "SecurityInfo", {}, enqueued_by="t", box=secret_box())
    db_session.commit()
    assert _pending_pushes(db_session, device.id) == 1  # coalesced
