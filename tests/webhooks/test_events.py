"""The events emitted where things happen: admission decisions, failed app installs, an expiring push
certificate (once per threshold), and nothing outside the transaction that caused it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from mdmserver import workflows
from mdmserver.collaborators import secret_box
from mdmserver.db import utcnow
from mdmserver.push import service as push_service
from mdmserver.records.devices import Device
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice
from mdmserver.webhooks import events
from mdmserver.webhooks.models import EventType, WebhookDelivery, WebhookEvent
from mdmserver.webhooks.outbox import Event, emit, emit_many
from mdmserver.webhooks.service import create_subscription, purge
from tests.apps.builders import info_plist, make_ipa
from tests.factories import install_push_topic

MENDER = "/api/management/v1/admission"


def _subscribe(db_session, *types: str, name: str = "events") -> int:
    hook, _ = create_subscription(db_session, {"name": name, "url": "https://hooks.example.com/",
                                               "event_types": list(types)}, box=secret_box(), actor="tests")
    db_session.commit()
    return hook.id


def _events(db_session, event_type: str | None = None) -> list[dict]:
    statement = select(WebhookEvent.body).order_by(WebhookEvent.created_at)
    if event_type is not None:
        statement = statement.where(WebhookEvent.type == event_type)
    return [json.loads(body) for body in db_session.scalars(statement)]


def test_admission_decisions_are_events(app, client, auth, db_session, monkeypatch):
    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    install_push_topic(db_session, monkeypatch)
    _subscribe(db_session, "device.admission_changed", "device.enrolled")
    sim = SimulatedDevice(FlaskTransport(client))
    sim.enroll()
    assert sim.authenticate() == 200  # manual policy: pending, which it already was
    assert [e["type"] for e in _events(db_session)] == ["device.enrolled"]
    assert _events(db_session)[0]["data"]["admission_status"] == "pending"
    h = auth("read", "write")
    auth_set = client.get(f"{MENDER}/devices", headers=h).get_json()[0]
    for status in ("accepted", "accepted", "rejected"):  # the repeated accept changes nothing
        response = client.put(f"{MENDER}/devices/{auth_set['id']}/status", json={"status": status}, headers=h)
        assert response.status_code == 200
    changes = [e["data"] for e in _events(db_session, "device.admission_changed")]
    device_id = str(db_session.scalar(select(Device.id).where(Device.udid == sim.udid)))
    assert [(c["previous_status"], c["status"]) for c in changes] == [("pending", "accepted"), ("accepted", "rejected")]
    assert all(c["device"] == {"id": device_id, "udid": sim.udid, "serial_number": sim.serial_number}
               for c in changes)
    assert client.delete(f"{MENDER}/devices/{auth_set['id']}", headers=h).status_code == 204
    last = _events(db_session, "device.admission_changed")[-1]["data"]
    assert (last["previous_status"], last["status"]) == ("rejected", "decommissioned")
    # every event is owed to the subscription, in order
    deliveries = db_session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
    assert [d.subject for d in deliveries] == [f"device:{device_id}"] * 4


def test_a_failed_app_install_is_an_event(client, auth, db_session, enrolled):
    _subscribe(db_session, "app.install_failed")
    h = auth("read", "write")
    upload = client.post("/api/v1/apps/packages?filename=app.ipa",
                         data=make_ipa(info_plist("com.example.hooks", "1.0", "1", "Hooks", "16.0")),
                         headers={**h, "Content-Type": "application/octet-stream"})
    assert upload.status_code == 201, upload.get_json()
    app_id = upload.get_json()["data"]["id"]
    good, failing = enrolled(), enrolled()
    failing.answer_overrides["InstallApplication"] = "Error"
    device_ids = [db_session.scalar(select(Device.id).where(Device.udid == s.udid)) for s in (good, failing)]
    assigned = client.post(f"/api/v1/apps/{app_id}/assignments", json={"devices": device_ids}, headers=h)
    assert assigned.status_code in (200, 201), assigned.get_json()
    good.run_session()
    failing.run_session()
    # the answers are folded into the install states when they are read (or reconciled)
    assert client.get(f"/api/v1/apps/{app_id}/devices", headers=h).status_code == 200
    assert client.get(f"/api/v1/apps/{app_id}/devices", headers=h).status_code == 200  # told once
    (failed,) = _events(db_session, "app.install_failed")
    assert failed["data"]["device"]["udid"] == failing.udid
    assert failed["data"]["app"] == {"id": app_id, "bundle_id": "com.example.hooks", "name": "Hooks"}
    assert "MCMDMErrorDomain" in failed["data"]["detail"]


def test_push_certificate_expiring_once_per_threshold(db_session, monkeypatch):
    install_push_topic(db_session, monkeypatch)
    _subscribe(db_session, "push_certificate.expiring")
    certificate = push_service.get_active_certificate(db_session)
    at = certificate.not_after
    assert events.push_certificate_expiring(db_session, certificate, at - timedelta(days=40)) is None
    assert events.push_certificate_expiring(db_session, certificate, at - timedelta(days=20)) == 30
    assert events.push_certificate_expiring(db_session, certificate, at - timedelta(days=19)) is None
    assert events.push_certificate_expiring(db_session, certificate, at - timedelta(days=5)) == 7  # 14 was skipped
    assert events.push_certificate_expiring(db_session, certificate, at - timedelta(days=4)) is None
    assert events.push_certificate_expiring(db_session, certificate, at + timedelta(days=3)) == 1
    assert events.push_certificate_expiring(db_session, certificate, at + timedelta(days=30)) is None
    told = _events(db_session, "push_certificate.expiring")
    assert [e["data"]["threshold_days"] for e in told] == [30, 7, 1]
    assert [e["data"]["expired"] for e in told] == [False, False, True]
    assert told[0]["data"]["push_certificate"]["topic"] == certificate.topic
    assert "PRIVATE KEY" not in json.dumps(told)


def test_an_event_is_rolled_back_with_its_transaction(db_session):
    _subscribe(db_session, "device.enrolled")
    with pytest.raises(RuntimeError), db_session.begin_nested():
        emit(db_session, EventType.DEVICE_ENROLLED, "device:1", {"device": {"id": "1"}})
        assert len(_events(db_session)) == 1
        raise RuntimeError("the request failed")
    assert _events(db_session) == []
    assert db_session.scalars(select(WebhookDelivery)).all() == []


def test_purge_keeps_what_is_unfinished_or_recent(db_session):
    _subscribe(db_session, "device.enrolled")
    for n in range(3):
        emit(db_session, EventType.DEVICE_ENROLLED, f"device:{n}", {"device": {"id": str(n)}})
    db_session.commit()
    done, dead, waiting = db_session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
    old = utcnow() - timedelta(days=100)
    done.status, done.completed_at = "delivered", old
    dead.status, dead.completed_at = "dead", utcnow()
    db_session.commit()
    assert purge(db_session, older_than=timedelta(days=90), now=utcnow() + timedelta(days=1)) == 1
    assert [d.id for d in db_session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))] == [dead.id,
                                                                                                     waiting.id]
    # later the dead one goes too, and the two events no delivery needs any more; the waiting one stays
    assert purge(db_session, older_than=timedelta(days=90), now=utcnow() + timedelta(days=91)) == 3
    assert [d.id for d in db_session.scalars(select(WebhookDelivery))] == [waiting.id]
    assert len(_events(db_session)) == 1


def test_several_events_at_once_keep_their_order(db_session):
    _subscribe(db_session, "device.enrolled", "app.install_failed")
    emit_many(db_session, [
        Event(EventType.APP_INSTALL_FAILED, "device:2", {"n": 1}),
        Event(EventType.DEVICE_CHECKED_OUT, "device:2", {"n": 2}),  # nobody listens: not stored
        Event(EventType.DEVICE_ENROLLED, "device:2", {"n": 3}),
        Event(EventType.APP_INSTALL_FAILED, "device:3", {"n": 4}),
    ])
    rows = db_session.execute(select(WebhookDelivery.subject, WebhookEvent.body)
                              .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                              .order_by(WebhookDelivery.id)).all()
    assert [(subject, json.loads(body)["data"]["n"]) for subject, body in rows] == [
        ("device:2", 1), ("device:2", 3), ("device:3", 4)]
    assert len(_events(db_session)) == 3


def test_a_compliance_change_is_an_event_per_device(client, auth, db_session, enrolled):
    _subscribe(db_session, "compliance.changed")
    old, current = enrolled("ios"), enrolled("ios")
    rows = {s.udid: db_session.scalar(select(Device).where(Device.udid == s.udid)) for s in (old, current)}
    rows[old.udid].os_version, rows[current.udid].os_version = "16.7", "17.5"
    db_session.commit()
    created = client.post("/api/v1/compliance_policies", headers=auth("read", "write"), json={"data": {
        "type": "compliance_policies",
        "attributes": {"name": "iOS 17", "rule": "os_version_min", "parameters": {"versions": {"ios": "17.0"}},
                       "all_devices": True}}})
    assert created.status_code == 201, created.get_json()
    told = {e["data"]["device"]["udid"]: (e["data"]["from"], e["data"]["to"])
            for e in _events(db_session, "compliance.changed")}
    assert told == {old.udid: (None, "non_compliant"), current.udid: (None, "compliant")}
    # the device updates: one more event, for it alone
    rows[old.udid].os_version = "17.1"
    db_session.commit()
    workflows.reevaluate_compliance(db_session)
    db_session.commit()
    later = [e["data"] for e in _events(db_session, "compliance.changed")][2:]
    assert [(e["device"]["udid"], e["from"], e["to"]) for e in later] == [(old.udid, "non_compliant", "compliant")]
