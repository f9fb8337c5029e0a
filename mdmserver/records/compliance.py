"""Each device's overall compliance state: the table the device list filters and facets on.

Written by :mod:`mdmserver.compliance.service` only (the evaluation); read by the device list's
``filter[compliance_state]`` and ``?facets=compliance_state`` (``mdmserver.selection.filters``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow


class ComplianceState(StrEnum):
    COMPLIANT = "compliant"
    NON_COMPLIANT = "non_compliant"
    #: a policy applies but the device has not reported the inventory it judges yet
    UNKNOWN = "unknown"


COMPLIANCE_STATES = tuple(s.value for s in ComplianceState)


class DeviceCompliance(db.Model):
    """One row per evaluated device: its state, how many policies it violates, when the state changed."""

    __tablename__ = "device_compliance"
    #: (state, device_id): the device list's filter reads a page of one state in device order from the
    #: index alone; a lookup by state alone uses its first column
    __table_args__ = (Index("ix_device_compliance_state_device", "state", "device_id"),)

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    violation_count: Mapped[int] = mapped_column(default=0)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
