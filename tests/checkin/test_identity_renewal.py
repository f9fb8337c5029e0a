"""Identity renewal (issue 13 item 4): a device enrolled with a short-lived identity gets a new one
through its command channel before the first expires, and goes on checking in after the first's end.

Every device flow goes through the simulator over the app's HTTP interface with real CMS signatures;
what the tests expect (who is bound, what is revoked, which requests are refused) is read from the
database or from the server's answers, never computed by the code under test.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from mdmserver.audit.models import AuditEvent
from mdmserver.checkin.enrollment import purge_unused_identities
from mdmserver.checkin.renewal import RENEWAL_ACTOR, RenewalSettings, renew_identities
from mdmserver.checkin.service import EnrollmentIdentity
from mdmserver.commands.service import command_parameters
from mdmserver.db import db, utcnow
from mdmserver.jobs import Upkeep
from mdmserver.pki import cms, x509
from mdmserver.pki.models import Certificate
from mdmserver.pki.service import load_secret_box
from mdmserver.protocol.plist import load_plist
from mdmserver.records.commands import Command
from mdmserver.records.devices import Device
from mdmserver.scep.models import ScepChallenge
from mdmserver.simulator.device import Identity, SimulatedDevice
from mdmserver.simulator.scep import ScepClient, ScepSettings

#: lifetime of the identities the enrollments in these tests get (seconds)
SHORT_LIFETIME = 4.0


@pytest.fixture(params=[EnrollmentIdentity.SCEP, EnrollmentIdentity.PKCS12])
def settings(app, request):
    """Renewal settings, with the new identity obtained through SCEP or shipped in a PKCS#12."""
    return RenewalSettings(
        renew_before=timedelta(days=30), lifetime_days=1.0, public_url=app.config["PUBLIC_URL"],
        box=load_secret_box(app.config["SECRET_KEY_FILE"]), identity=request.param,
    )


@pytest.fixture
def short_lived(app, monkeypatch):
    monkeypatch.setitem(app.config, "IDENTITY_LIFETIME_DAYS", SHORT_LIFETIME / 86400)


def _device(db_session, udid: str) -> Device:
    db_session.expire_all()
    return db_session.scalar(select(Device).where(Device.udid == udid))


def _certificate(db_session, fingerprint: str) -> Certificate:
    return db_session.scalar(select(Certificate).where(Certificate.fingerprint_sha256 == fingerprint))


def _renewals(db_session, device_id: int) -> list[Command]:
    return list(db_session.scalars(select(Command).where(
        Command.device_id == device_id, Command.enqueued_by == RENEWAL_ACTOR).order_by(Command.id)))


def _renewal_identity(transport, command: Command, box) -> Identity:
    """The identity a queued renewal gives, obtained by someone who read the command: the PKCS#12 inside,
    or a certificate for their own key through SCEP with the challenge inside."""
    payload = command_parameters(command, box)["Payload"]
    profile = load_plist(cms.unwrap_signed(payload).content)
    by_uuid = {p["PayloadUUID"]: p for p in profile["PayloadContent"]}
    mdm = next(p for p in profile["PayloadContent"] if p["PayloadType"] == "com.apple.mdm")
    identity = by_uuid[mdm["IdentityCertificateUUID"]]
    if identity["PayloadType"] == "com.apple.security.scep":
        result = ScepClient(transport, ScepSettings.from_payload(identity)).enroll()
        return Identity(result.certificate, result.key)
    cert, key, _ = x509.load_pkcs12(identity["PayloadContent"], identity["Password"].encode())
    return Identity(cert, key)


def test_a_device_renews_its_identity_and_checks_in_after_the_first_expires(
    enrolled, db_session, short_lived, settings
):
    sim = enrolled("ios")
    first = sim.identity
    device = _device(db_session, sim.udid)
    first_fingerprint = device.identity_fingerprint
    unlock_token = device.unlock_token_encrypted
    assert unlock_token is not None
    commands_before = db_session.scalar(select(func.count()).select_from(Command).where(Command.device_id == device.id))

    assert renew_identities(db_session, now=utcnow(), settings=settings) == 1
    db_session.commit()
    handled = sim.run_session()
    assert [(kind, status) for _uuid, kind, status in handled] == [("InstallProfile", "Acknowledged")]
    assert sim.identity is not first

    device = _device(db_session, sim.udid)
    assert device.identity_fingerprint != first_fingerprint
    new = _certificate(db_session, device.identity_fingerprint)
    assert new.renews_udid == sim.udid
    assert new.not_after - new.not_before > timedelta(hours=23)
    assert _certificate(db_session, first_fingerprint).revoked_at is not None
    # the same device: still accepted and enrolled, its UnlockToken kept, nothing re-queued
    assert (device.admission_status, device.enrolled) == ("accepted", True)
    assert device.unlock_token_encrypted is not None
    commands_after = db_session.scalar(select(func.count()).select_from(Command).where(Command.device_id == device.id))
    assert commands_after == commands_before + 1
    events = db_session.scalars(select(AuditEvent).where(AuditEvent.action == "device:identity:renew")).all()
    assert [e.details["certificate_fingerprint"] for e in events] == [device.identity_fingerprint]

    # past the first identity's end, the device goes on working
    time.sleep(max(0.0, first.certificate.not_valid_after_utc.timestamp() - time.time()) + 1.0)
    assert sim.idle()[0] == 200
    # and the first identity is refused (revoked, and expired by now)
    sim.identity = first
    assert sim.idle()[0] == 403


def test_the_previous_identity_is_refused_at_once_after_renewal(enrolled, db_session, settings):
    sim = enrolled("macos")
    first = sim.identity
    renew_identities(db_session, now=utcnow() + timedelta(days=729), settings=settings)
    db_session.commit()
    sim.run_session()
    renewed = sim.identity
    sim.identity = first
    assert sim.idle()[0] == 403
    assert sim.authenticate() == 403
    sim.identity = renewed
    assert sim.idle()[0] == 200


def test_a_renewal_certificate_cannot_enroll_or_take_another_device(enrolled, db_session, settings):
    target, other = enrolled("ios"), enrolled("ios")
    renew_identities(db_session, now=utcnow() + timedelta(days=729), settings=settings)
    db_session.commit()
    (command,) = _renewals(db_session, _device(db_session, target.udid).id)
    stolen = _renewal_identity(other.transport, command, settings.box)
    other_fingerprint = _device(db_session, other.udid).identity_fingerprint

    # presented for another UDID, as that device: refused, nothing moves
    other.identity = stolen
    assert other.authenticate() == 403
    assert _device(db_session, other.udid).identity_fingerprint == other_fingerprint
    # and it is not the target's binding until the target itself authenticates with it
    assert _device(db_session, target.udid).identity_fingerprint != x509.fingerprint_sha256(stolen.certificate)


def test_renewal_is_queued_once_and_only_for_devices_that_need_it(enrolled, db_session, settings):
    due, fresh = enrolled("ios"), enrolled("ios")
    fresh_row = _device(db_session, fresh.udid)
    due_row = _device(db_session, due.udid)
    # make only ``due``'s identity near its end
    cert = _certificate(db_session, due_row.identity_fingerprint)
    cert.not_after = utcnow() + timedelta(days=3)
    db_session.commit()

    now = utcnow()
    assert renew_identities(db_session, now=now, settings=settings) == 1
    db_session.commit()
    assert len(_renewals(db_session, due_row.id)) == 1
    assert _renewals(db_session, fresh_row.id) == []
    # a renewal is waiting: none is queued again, an hour or a week later
    assert renew_identities(db_session, now=now + timedelta(hours=1), settings=settings) == 0
    assert renew_identities(db_session, now=now + timedelta(days=2), settings=settings) == 0


def test_a_failed_renewal_is_retried_after_a_day(enrolled, db_session, settings):
    sim = enrolled("ios")
    row = _device(db_session, sim.udid)
    now = utcnow()
    _certificate(db_session, row.identity_fingerprint).not_after = now + timedelta(days=3)
    db_session.commit()
    sim.answer_overrides["InstallProfile"] = "Error"
    renew_identities(db_session, now=now, settings=settings)
    db_session.commit()
    assert [status for _u, _k, status in sim.run_session()] == ["Error"]
    assert renew_identities(db_session, now=now + timedelta(hours=2), settings=settings) == 0
    assert renew_identities(db_session, now=now + timedelta(days=1, hours=1), settings=settings) == 1


@pytest.mark.parametrize("state", ["rejected", "checked_out", "expired"])
def test_no_renewal_for_devices_that_cannot_take_it(enrolled, db_session, settings, state):
    sim = enrolled("ios")
    row = _device(db_session, sim.udid)
    cert = _certificate(db_session, row.identity_fingerprint)
    cert.not_after = utcnow() + timedelta(days=3)
    if state == "rejected":
        row.admission_status = "rejected"
    elif state == "checked_out":
        db_session.commit()
        assert sim.checkout() == 200
    else:
        cert.not_after = utcnow() - timedelta(seconds=1)
    db_session.commit()
    assert renew_identities(db_session, now=utcnow(), settings=settings) == 0


def test_an_unused_renewal_certificate_survives_the_unused_identity_purge_until_it_expires(
    enrolled, db_session, settings
):
    sim = enrolled("ios")
    if settings.identity == EnrollmentIdentity.SCEP:
        # nothing is issued before the device asks: its challenge stays good through the renewal window
        renew_identities(db_session, now=utcnow() + timedelta(days=729), settings=settings)
        expires_at = db_session.scalar(select(ScepChallenge.expires_at).where(ScepChallenge.renews_udid == sim.udid))
        assert expires_at > utcnow() + timedelta(days=29)
        return
    renew_identities(db_session, now=utcnow() + timedelta(days=729), settings=replace(settings, lifetime_days=30))
    db_session.commit()
    waiting_id, not_after = db_session.execute(
        select(Certificate.id, Certificate.not_after).where(Certificate.renews_udid == sim.udid)).one()

    def still_there() -> bool:
        return db_session.scalar(select(func.count()).select_from(Certificate).where(Certificate.id == waiting_id)) == 1

    # the device is offline for a week: the renewal's certificate is still there when it comes back
    purge_unused_identities(db_session, now=utcnow() + timedelta(days=7), commit=False)
    assert still_there()
    purge_unused_identities(db_session, now=not_after + timedelta(seconds=1), commit=False)
    assert not still_there()


def test_the_upkeep_job_renews_over_http(live, transport):
    """The worker's periodic job, a device on a real socket: renewed, then working with the new identity."""
    sim = SimulatedDevice(transport, platform="ipados")
    sim.enroll()
    assert (sim.authenticate(), sim.token_update()) == (200, 200)
    first = sim.identity
    Upkeep(live.app).run(force=True, now=utcnow() + timedelta(days=720))
    assert [(kind, status) for _u, kind, status in sim.run_session()] == [("InstallProfile", "Acknowledged")]
    with live.app.app_context():
        bound = db.session.scalar(select(Device.identity_fingerprint).where(Device.udid == sim.udid))
    assert bound == x509.fingerprint_sha256(sim.identity.certificate) != x509.fingerprint_sha256(first.certificate)
    assert sim.idle()[0] == 200
