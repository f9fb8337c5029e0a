"""Enrollment bookkeeping: the purge of identities that were issued but never used (the attempt
limit is ``mdmserver/enrollment_limit``, shared with ``/scep``)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, union_all
from sqlalchemy.orm import Session

from mdmserver.db import utcnow
from mdmserver.pki import service as pki
from mdmserver.pki.models import Certificate
from mdmserver.records.admission import AuthSet
from mdmserver.records.devices import Device

log = logging.getLogger("mdmserver.checkin")

#: An identity issued at enrollment and not bound by an ``Authenticate`` within this time is deleted.
UNUSED_IDENTITY_AGE = timedelta(days=1)


def purge_unused_identities(
    session: Session, *, older_than: timedelta = UNUSED_IDENTITY_AGE, now: datetime | None = None,
    commit: bool = True,
) -> int:
    """Delete device identity certificates issued more than ``older_than`` ago that no device is
    bound to and no auth set names (never used for an ``Authenticate``), in batches. Returns how many."""
    moment = now or utcnow()
    bound = union_all(
        select(Device.identity_fingerprint).where(Device.identity_fingerprint.is_not(None)),
        # an auth set shows an administrator both certificates of a re-binding: keep them
        select(AuthSet.fingerprint).where(AuthSet.fingerprint.is_not(None)),
        select(AuthSet.previous_fingerprint).where(AuthSet.previous_fingerprint.is_not(None)),
        # a renewal's certificate waits for its device to fetch the InstallProfile, however long
        # that takes (``checkin/renewal.py``): deleting it would leave the device unable to connect
        select(Certificate.fingerprint_sha256).where(Certificate.renews_udid.is_not(None),
                                                     Certificate.not_after > moment),
    )
    return pki.purge_device_certificates(
        session, issued_before=moment - older_than, bound=bound, commit=commit
    )
