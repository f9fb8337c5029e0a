"""Compliance policies, their scope, each device's result per policy, and the history of state changes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow


class RuleType(StrEnum):
    OS_VERSION_MIN = "os_version_min"
    PASSCODE = "passcode"
    ENCRYPTION = "encryption"
    SUPERVISED = "supervised"
    LAST_CHECKIN = "last_checkin"
    PROFILE_INSTALLED = "profile_installed"
    APP_INSTALLED = "app_installed"
    CUSTOM_ATTRIBUTE = "custom_attribute"
    OS_UPDATE_DEADLINE = "os_update_deadline"


class RemediationType(StrEnum):
    SCAN = "scan"
    LOCK = "lock"
    INSTALL_PROFILE = "install_profile"
    ADD_TO_GROUP = "add_to_group"


class CompliancePolicy(db.Model):
    """One named rule (``rule`` with its ``parameters``), scoped to every device (``all_devices``) or to
    the devices and groups of its targets, with an optional remediation after a grace period."""

    __tablename__ = "compliance_policies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    rule: Mapped[str] = mapped_column(String(32))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    all_devices: Mapped[bool] = mapped_column(default=False)
    remediation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    grace_minutes: Mapped[int] = mapped_column(default=0)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class CompliancePolicyTarget(db.Model):
    """A policy scoped to one device or one group (its members, subgroups and smart groups included)."""

    __tablename__ = "compliance_policy_targets"
    __table_args__ = (
        UniqueConstraint("policy_id", "device_id"),
        UniqueConstraint("policy_id", "group_id"),
        CheckConstraint("(device_id IS NULL) <> (group_id IS NULL)", name="one_target"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("compliance_policies.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("device_groups.id", ondelete="CASCADE"), index=True)


class DevicePolicyResult(db.Model):
    """Where one device stands against one policy that applies to it.

    ``violated_at``: since when it violates the policy (NULL unless non_compliant); ``remediate_after``:
    when the policy's remediation is due (the transition time plus the grace period; NULL without one);
    ``remediated_at``: when the remediation was claimed (once per transition to non_compliant).
    """

    __tablename__ = "device_policy_results"
    __table_args__ = (Index("ix_device_policy_results_due", "status", "remediated_at", "remediate_after"),)

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("compliance_policies.id", ondelete="CASCADE"),
                                           primary_key=True, index=True)
    status: Mapped[str] = mapped_column(String(16))
    observed: Mapped[str | None] = mapped_column(String(255))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    violated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    remediate_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    remediated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ComplianceHistory(db.Model):
    """A change of a device's overall compliance state (transitions only, never a repeat)."""

    __tablename__ = "compliance_history"
    __table_args__ = (Index("ix_compliance_history_device_at", "device_id", "changed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    violation_count: Mapped[int] = mapped_column(default=0)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
