"""Profile assignments and each device's state for each assigned profile."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow


class AssignmentStatus(StrEnum):
    SCHEDULED = "scheduled"  # InstallProfile queued
    INSTALLED = "installed"  # acknowledged, or reported by ProfileList
    FAILED = "failed"  # the device answered Error / CommandFormatError
    REMOVAL_SCHEDULED = "removal_scheduled"  # RemoveProfile queued
    REMOVED = "removed"  # RemoveProfile acknowledged


#: states that hold the profile on the device (queued, installed, or a failure not retried)
HELD = (AssignmentStatus.SCHEDULED.value, AssignmentStatus.INSTALLED.value, AssignmentStatus.FAILED.value)


class ProfileAssignment(db.Model):
    """A profile assigned to one device or to one group (its members, subgroups included)."""

    __tablename__ = "profile_assignments"
    __table_args__ = (
        UniqueConstraint("profile_id", "device_id"),
        UniqueConstraint("profile_id", "group_id"),
        CheckConstraint("(device_id IS NULL) <> (group_id IS NULL)", name="one_target"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("device_groups.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeviceProfileState(db.Model):
    """Where one assigned (or formerly assigned) profile stands on one device."""

    __tablename__ = "device_profile_states"
    __table_args__ = (Index("ix_device_profile_states_profile_status", "profile_id", "status"),)

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(24))
    revision: Mapped[int] = mapped_column()
    command_uuid: Mapped[str | None] = mapped_column(String(36))
    detail: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
