"""App assignments and each device's state for each assigned app."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow


class AppInstallStatus(StrEnum):
    SCHEDULED = "scheduled"  # InstallApplication / InstallEnterpriseApplication queued
    INSTALLING = "installing"  # acknowledged, the device reports the install under way (Prompting, Installing…)
    INSTALLED = "installed"  # the device reports it installed (ManagedApplicationList, InstalledApplicationList)
    FAILED = "failed"  # Error / CommandFormatError, or a Failed state, with the device's reason in detail
    REMOVAL_SCHEDULED = "removal_scheduled"  # RemoveApplication queued
    REMOVED = "removed"  # RemoveApplication acknowledged


#: states that hold the app (or a failure not retried): no new install is queued
HELD = (AppInstallStatus.SCHEDULED.value, AppInstallStatus.INSTALLING.value, AppInstallStatus.INSTALLED.value,
        AppInstallStatus.FAILED.value)


class AppAssignment(db.Model):
    """An app assigned to one device or to one group (its members, subgroups and smart groups included),
    with the install options Apple defines (management flags, removable, attributes, configuration)."""

    __tablename__ = "app_assignments"
    __table_args__ = (
        UniqueConstraint("app_id", "device_id"),
        UniqueConstraint("app_id", "group_id"),
        CheckConstraint("(device_id IS NULL) <> (group_id IS NULL)", name="one_target"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("device_groups.id", ondelete="CASCADE"), index=True)
    options: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeviceAppState(db.Model):
    """Where one assigned (or formerly assigned) app stands on one device."""

    __tablename__ = "device_app_states"
    __table_args__ = (Index("ix_device_app_states_app_status", "app_id", "status"),)

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(24))  # AppInstallStatus
    revision: Mapped[int] = mapped_column()  # the catalogue revision last queued
    installed_version: Mapped[str | None] = mapped_column(String(64))  # as the device reports it
    command_uuid: Mapped[str | None] = mapped_column(String(36))
    detail: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
