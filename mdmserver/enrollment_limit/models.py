"""Enrollment attempts counted per client address and window."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import db


class EnrollmentAttempt(db.Model):
    """How many enrollment attempts (``GET /mdm/enroll``, failed ``/scep`` PKIOperations) a client made
    in one fixed window.

    Shared by every web worker and server through the database. ``window_start`` is the window's
    start in seconds since the epoch. Rows older than the previous window are pruned as new windows
    open, so the table holds at most two windows' worth of client addresses.
    """

    __tablename__ = "enrollment_attempts"
    __table_args__ = (Index("ix_enrollment_attempts_window_start", "window_start"),)

    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    attempts: Mapped[int] = mapped_column(default=0)
