"""Identity renewal: every enrolled device gets a new identity certificate before its own expires.

A device proves who it is with the identity certificate its enrollment gave it; once that expires it
can no longer reach the server, and only a new enrollment by hand brings it back. Apple's guidance is
to replace the profile that holds the MDM payload before any certificate in it expires. So, for
each accepted, enrolled device whose bound certificate expires within ``renew_before``, the upkeep
job queues an ``InstallProfile`` of a fresh enrollment profile with the same ``PayloadIdentifier``
(it replaces the installed one). The device installs it, authenticates with the new certificate and
sends TokenUpdate; :func:`mdmserver.checkin.service._renewed_identity` moves the binding then.

The new certificate is marked as renewing that device's UDID (``certificates.renews_udid``): it, or
with SCEP the challenge that obtains it (``scep_challenges.renews_udid``), reaches only that device,
inside a command over its own authenticated channel, which is why its Authenticate is not held for
an administrator as a fresh certificate claiming a known UDID is.

A device gets one renewal at a time: none is queued while an earlier one for its current
certificate is still waiting, or was queued less than ``retry_after`` ago (an answered one that did
not lead to an Authenticate, or one that failed, is tried again after that).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session

from mdmserver.checkin.service import (
    EnrollmentIdentity,
    EnrollmentSettings,
    build_enrollment_profile,
)
from mdmserver.commands import service as commands
from mdmserver.organization.service import get_organization
from mdmserver.pki.models import Certificate
from mdmserver.pki.secretbox import SecretBox
from mdmserver.push import service as push_service
from mdmserver.records.admission import AdmissionStatus
from mdmserver.records.commands import ACTIVE_STATUSES, Command
from mdmserver.records.devices import Device
from mdmserver.selection.conditions import manageable

log = logging.getLogger("mdmserver.checkin")

#: ``enqueued_by`` of the renewal commands (the command history shows who queued them)
RENEWAL_ACTOR = "system:identity-renewal"


@dataclass(frozen=True)
class RenewalSettings:
    renew_before: timedelta
    lifetime_days: float
    public_url: str
    box: SecretBox
    #: SCEP (the device makes its new key; the challenge stays valid through the renewal window) or PKCS#12
    identity: EnrollmentIdentity = EnrollmentIdentity.SCEP
    retry_after: timedelta = timedelta(days=1)
    #: devices renewed per run (each renewal signs a profile and, with PKCS#12, makes an RSA key)
    batch: int = 200


def _renewal_waiting(now: datetime, retry_after: timedelta):
    """SQL: a renewal was queued for the device's current certificate and is still waiting, or was
    queued less than ``retry_after`` ago."""
    return exists().where(
        Command.device_id == Device.id,
        Command.enqueued_by == RENEWAL_ACTOR,
        Command.created_at >= Certificate.created_at,
        or_(Command.status.in_([s.value for s in ACTIVE_STATUSES]), Command.created_at > now - retry_after),
    )


def devices_due(session: Session, *, now: datetime, settings: RenewalSettings) -> list[Device]:
    """Accepted, enrolled, manageable devices whose bound identity expires within ``renew_before``
    (and has not expired: such a device cannot fetch a command any more), with no renewal waiting;
    the soonest to expire first, at most ``batch``."""
    return list(session.scalars(
        select(Device)
        .join(Certificate, Certificate.fingerprint_sha256 == Device.identity_fingerprint)
        .where(
            and_(
                Device.admission_status == AdmissionStatus.ACCEPTED.value,
                Device.enrolled.is_(True),
                manageable(),
                Certificate.revoked_at.is_(None),
                Certificate.not_after > now,
                Certificate.not_after <= now + settings.renew_before,
                ~_renewal_waiting(now, settings.retry_after),
            )
        )
        .order_by(Certificate.not_after, Device.id)
        .limit(settings.batch)
    ))


def renew_identities(session: Session, *, now: datetime, settings: RenewalSettings) -> int:
    """Queue an identity renewal for each device due (:func:`devices_due`); returns how many. The
    caller commits."""
    if settings.renew_before <= timedelta(0):
        return 0
    due = devices_due(session, now=now, settings=settings)
    if not due:
        return 0
    topic = push_service.get_push_topic(session)
    if not topic:
        log.warning("identity renewal: %d devices due, but there is no push certificate", len(due))
        return 0
    organization = get_organization(session)
    for device in due:
        profile = build_enrollment_profile(session, EnrollmentSettings(
            public_url=settings.public_url, topic=topic, organization=organization.name,
            prefix=organization.payload_prefix, box=settings.box, identity=settings.identity,
            scep_challenge_ttl=settings.renew_before, lifetime_days=settings.lifetime_days,
            renews_udid=device.udid,
        ))
        commands.enqueue_commands(session, [device.id], "InstallProfile", {"Payload": profile.signed},
                                  enqueued_by=RENEWAL_ACTOR, box=settings.box)
    log.info("identity renewal queued for %d devices", len(due))
    return len(due)
