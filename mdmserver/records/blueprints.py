"""Blueprints: scoped bundles of configuration profiles, apps and an OS-update target (the Android MDM
seed's "scoped profile"), their scope, and what each did on each device."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow


class InstallAction(StrEnum):
    """``ScheduleOSUpdate``'s ``Updates[].InstallAction`` (Apple's enum)."""

    DEFAULT = "Default"
    DOWNLOAD_ONLY = "DownloadOnly"
    INSTALL_ASAP = "InstallASAP"
    NOTIFY_ONLY = "NotifyOnly"
    INSTALL_LATER = "InstallLater"
    INSTALL_FORCE_RESTART = "InstallForceRestart"


class FirstItem(StrEnum):
    """Which kind of item a blueprint queues first on a device (the seed's ``applyOrder``)."""

    PROFILES = "profiles"
    APPS = "apps"
    OS_UPDATE = "os_update"


class MemberStatus(StrEnum):
    IN_SCOPE = "in_scope"  # in the blueprint's scope at the last reconcile
    LEFT = "left"  # was in scope, is not any more
    UNSCOPED = "unscoped"  # applied once with unscope_if_applied: out of scope for good, keeps its items


class OSUpdateStatus(StrEnum):
    QUEUED = "queued"  # ScheduleOSUpdate queued or sent
    SCHEDULED = "scheduled"  # the device acknowledged it (UpdateResults) and has not reported the version yet
    INSTALLED = "installed"  # the device reports the target version (or a later one)
    FAILED = "failed"  # Error / CommandFormatError, cancelled or expired


#: the value of ``os_update_version`` that asks for the newest update the device is offered
LATEST = "latest"


class Blueprint(db.Model):
    __tablename__ = "blueprints"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    is_global: Mapped[bool] = mapped_column(Boolean, default=False)
    apply_order: Mapped[int] = mapped_column(default=0)
    first_item: Mapped[str] = mapped_column(String(16), default=FirstItem.PROFILES.value)
    remove_if_no_scope: Mapped[bool] = mapped_column(Boolean, default=True)
    unscope_if_applied: Mapped[bool] = mapped_column(Boolean, default=False)
    start_on: Mapped[datetime | None] = mapped_column(UTCDateTime)
    os_update_version: Mapped[str | None] = mapped_column(String(32))  # "17.5.1" or LATEST
    # the device's local date-time, without a zone ("2026-12-01T18:00:00"): DDM's TargetLocalDateTime
    os_update_deadline: Mapped[str | None] = mapped_column(String(19))
    os_update_install_action: Mapped[str] = mapped_column(String(24), default=InstallAction.DEFAULT.value)
    # its profiles go to devices that take declarations as com.apple.configuration.legacy (docs/ddm.md)
    declarative_profiles: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BlueprintProfile(db.Model):
    """A configuration profile of a blueprint, at its position (lower first)."""

    __tablename__ = "blueprint_profiles"

    blueprint_id: Mapped[int] = mapped_column(ForeignKey("blueprints.id", ondelete="CASCADE"), primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True,
                                            index=True)
    position: Mapped[int] = mapped_column()


class BlueprintApp(db.Model):
    """An app of a blueprint, at its position, with its install options (as an app assignment's)."""

    __tablename__ = "blueprint_apps"

    blueprint_id: Mapped[int] = mapped_column(ForeignKey("blueprints.id", ondelete="CASCADE"), primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True, index=True)
    position: Mapped[int] = mapped_column()
    options: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class BlueprintTarget(db.Model):
    """One device or one group (its members, subgroups and smart groups included) in a blueprint's scope."""

    __tablename__ = "blueprint_targets"
    __table_args__ = (
        UniqueConstraint("blueprint_id", "device_id"),
        UniqueConstraint("blueprint_id", "group_id"),
        CheckConstraint("(device_id IS NULL) <> (group_id IS NULL)", name="one_target"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    blueprint_id: Mapped[int] = mapped_column(ForeignKey("blueprints.id", ondelete="CASCADE"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("device_groups.id", ondelete="CASCADE"), index=True)


class BlueprintMember(db.Model):
    """A device that was in a blueprint's scope: whether it still is, left, or was unscoped once applied."""

    __tablename__ = "blueprint_members"
    __table_args__ = (Index("ix_blueprint_members_device", "device_id"),)

    blueprint_id: Mapped[int] = mapped_column(ForeignKey("blueprints.id", ondelete="CASCADE"), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # MemberStatus
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BlueprintOSUpdate(db.Model):
    """The OS-update target of a blueprint on one device: queued once per target version."""

    __tablename__ = "blueprint_os_updates"
    __table_args__ = (Index("ix_blueprint_os_updates_device", "device_id"),)

    blueprint_id: Mapped[int] = mapped_column(ForeignKey("blueprints.id", ondelete="CASCADE"), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    target_version: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # OSUpdateStatus
    command_uuid: Mapped[str | None] = mapped_column(String(36))
    detail: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
