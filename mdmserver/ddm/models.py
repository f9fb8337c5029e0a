"""Declarative device management, per device: the last token it was told of, and what it reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow


class DDMDevice(db.Model):
    """A device's DDM bookkeeping. ``declarations_token`` is the token of its declaration set when the
    server last looked (the set itself is always computed from the blueprints): a change from it queues
    one ``DeclarativeManagement`` command; ``token_changed_at`` is the ``SyncTokens`` Timestamp. ``errors``
    holds the ``Errors`` of its last status report."""

    __tablename__ = "ddm_devices"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    declarations_token: Mapped[str] = mapped_column(String(64))
    token_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    errors: Mapped[list[Any] | None] = mapped_column(JSON)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DDMStatusItem(db.Model):
    """One status item a device reported (``softwareupdate.install-state``), merged report by report."""

    __tablename__ = "ddm_status_items"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    key_path: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DDMDeclarationStatus(db.Model):
    """A declaration's status as the device reported it (``management.declarations``)."""

    __tablename__ = "ddm_declaration_statuses"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    identifier: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # protocol.ddm.Kind
    server_token: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool | None] = mapped_column(Boolean)
    valid: Mapped[str | None] = mapped_column(String(32))
    reasons: Mapped[list[Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
