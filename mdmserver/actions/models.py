"""Scheduled actions: a single-device or bulk action stored with ``not_before`` (and an optional
maintenance window), queued by the upkeep job when due, exactly once."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow


class ScheduleStatus(StrEnum):
    SCHEDULED = "scheduled"  # waiting for its time (and window)
    QUEUED = "queued"  # claimed by a worker and run: its commands are in the queue
    FAILED = "failed"  # claimed, but the action could not run (its group was deleted...)
    CANCELLED = "cancelled"  # cancelled through the API before it was due


SCHEDULE_STATUSES = tuple(s.value for s in ScheduleStatus)


class ScheduledAction(db.Model):
    """One scheduled action. ``selection``: the bulk body's selection members (``devices``, ``groups``,
    ``filter``, ``all_devices``); ``parameters_sealed``: the action's parameters, encrypted with the
    secret box (a lock PIN is a secret); ``window``: ``{"weekdays": [...], "start": "HH:MM", "end":
    "HH:MM", "time_zone": "Europe/Paris"}`` or NULL; ``result``: the bulk result's counts once queued,
    or the reason it failed."""

    __tablename__ = "scheduled_actions"
    __table_args__ = (Index("ix_scheduled_actions_status_not_before", "status", "not_before"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    action: Mapped[str] = mapped_column(String(40))
    selection: Mapped[dict[str, Any]] = mapped_column(JSON)
    parameters_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    window: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=ScheduleStatus.SCHEDULED.value)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    detail: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
