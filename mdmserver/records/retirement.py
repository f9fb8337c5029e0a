"""Retirement (corporate wipe) bookkeeping."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow


class RetirementState(StrEnum):
    """Where a device's retirement stands (the ``retirement.status`` the API reports)."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


class DeviceRetirement(db.Model):
    """A device an administrator retired: the MDM profile removal was queued at ``requested_at``.

    The device counts as retired once it has left management (``devices.enrolled`` false after the
    request); no further actions apply to it.
    """

    __tablename__ = "device_retirements"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    command_uuid: Mapped[str | None] = mapped_column(String(36))
    requested_by: Mapped[str | None] = mapped_column(String(100))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
