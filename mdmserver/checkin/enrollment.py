"""Enrollment bookkeeping: the attempt limit shared by every worker, and the purge of identities
that were issued but never used.

Every ``GET /mdm/enroll`` issues a key and a certificate, and a wrong enrollment secret is a guess:
both are counted per client address in the database, so the limit holds across web workers and
servers, and failures are counted before the secret is even looked at.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, select, union_all
from sqlalchemy.orm import Session

from mdmserver.checkin.models import EnrollmentAttempt
from mdmserver.db import upsert_insert, utcnow
from mdmserver.pki import service as pki
from mdmserver.pki.models import Certificate
from mdmserver.records.admission import AuthSet
from mdmserver.records.devices import Device

log = logging.getLogger("mdmserver.checkin")

WINDOW_SECONDS = 60
#: An identity issued at enrollment and not bound by an ``Authenticate`` within this time is deleted.
UNUSED_IDENTITY_AGE = timedelta(days=1)


def record_attempt(
    session: Session, client: str, *, limit: int, now: datetime | None = None, window: int = WINDOW_SECONDS
) -> bool:
    """Count one enrollment attempt by ``client``; ``True`` while the client is within ``limit``
    attempts per ``window`` seconds.

    A sliding-window estimate over two fixed windows: this window's count plus the previous window's
    weighted by how much of it still falls within the last ``window`` seconds. Refused attempts
    count too, so hammering keeps a client locked out. One upsert (atomic on SQLite and
    PostgreSQL) and one read; a new window also prunes rows older than the previous one. The caller
    commits.
    """
    moment = int((now or utcnow()).timestamp())
    start = moment - moment % window
    insert = upsert_insert(session, EnrollmentAttempt).values(client=client, window_start=start, attempts=1)
    count = session.execute(
        insert.on_conflict_do_update(
            index_elements=[EnrollmentAttempt.client, EnrollmentAttempt.window_start],
            set_={"attempts": EnrollmentAttempt.attempts + 1},
        ).returning(EnrollmentAttempt.attempts)
    ).scalar_one()
    if count == 1:
        session.execute(
            delete(EnrollmentAttempt)
            .where(EnrollmentAttempt.window_start < start - window)
            .execution_options(synchronize_session=False)
        )
    previous = session.scalar(
        select(EnrollmentAttempt.attempts).where(
            EnrollmentAttempt.client == client, EnrollmentAttempt.window_start == start - window
        )
    ) or 0
    still_relevant = 1 - (moment - start) / window
    return count + previous * still_relevant <= limit


def limit_exceeded(
    session: Session, client: str, *, limit: int, now: datetime | None = None, window: int = WINDOW_SECONDS
) -> bool:
    """Whether ``client`` went past its ``limit`` attempts per ``window`` seconds (the estimate of
    :func:`record_attempt`), without counting one: for requests that count only when they fail."""
    moment = int((now or utcnow()).timestamp())
    start = moment - moment % window
    rows = dict(session.execute(
        select(EnrollmentAttempt.window_start, EnrollmentAttempt.attempts).where(
            EnrollmentAttempt.client == client, EnrollmentAttempt.window_start.in_([start, start - window])
        )
    ).all())
    still_relevant = 1 - (moment - start) / window
    return rows.get(start, 0) + rows.get(start - window, 0) * still_relevant > limit


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
