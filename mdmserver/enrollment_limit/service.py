"""The enrollment attempt limit, shared by every web worker and server through the database.

Every ``GET /mdm/enroll`` issues a challenge (or a key and a certificate), and a wrong enrollment
secret or SCEP challenge is a guess: attempts are counted per client address
(:func:`mdmserver.enrollment_limit.peers.limit_key`), before the secret is even looked at. Both
``/mdm/enroll`` (``checkin``) and ``/scep`` (``scep``) count here, in the same buckets.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mdmserver.db import upsert_insert, utcnow
from mdmserver.enrollment_limit.models import EnrollmentAttempt

WINDOW_SECONDS = 60


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
