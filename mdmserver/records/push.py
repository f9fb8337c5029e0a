"""APNs push: the push certificate, the transactional outbox and per-device push state."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow


class PushCertificate(db.Model):
    """An imported APNs MDM push certificate; the newest ``active`` row is the one in use.

    ``stopped_at`` is set when APNs refused the certificate (403 or a failed TLS handshake): the
    worker stops sending for that topic until a new certificate is imported.
    """

    __tablename__ = "push_certificates"

    id: Mapped[int] = mapped_column(primary_key=True)
    topic: Mapped[str] = mapped_column(String(255), index=True)
    subject: Mapped[str] = mapped_column(String(500))
    issuer: Mapped[str] = mapped_column(String(500))
    serial: Mapped[str] = mapped_column(String(64))
    fingerprint_sha256: Mapped[str] = mapped_column(String(64))
    certificate_pem: Mapped[str] = mapped_column(Text)
    encrypted_key: Mapped[bytes] = mapped_column(LargeBinary)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    not_after: Mapped[datetime] = mapped_column(UTCDateTime)
    active: Mapped[bool] = mapped_column(default=True)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stop_reason: Mapped[str | None] = mapped_column(String(255))


class PushStatus(StrEnum):
    PENDING = "pending"  # waiting to be claimed (or for its retry time, ``not_before``)
    SENDING = "sending"  # claimed by a worker until ``lease_until``; reclaimed after a crash
    RETRY = "retry"  # APNs or the network failed; tried again from ``not_before`` (backoff)
    SENT = "sent"  # APNs accepted it (200)
    FAILED = "failed"  # gave up: token invalid, retries exhausted, no certificate for the topic
    SKIPPED = "skipped"  # the device was not pushable when the worker looked (pending, unenrolled…)
    SUPERSEDED = "superseded"  # a retry found a newer pending request for the same device


FINISHED_STATUSES = (PushStatus.SENT, PushStatus.FAILED, PushStatus.SKIPPED, PushStatus.SUPERSEDED)

_PENDING_SQL = "status = 'pending'"
_CLAIMABLE_SQL = "status IN ('pending', 'retry', 'sending')"


class PushRequest(db.Model):
    """The outbox: a wake-up owed to a device, written in the transaction that queued its command.

    At most one ``pending`` row per device (partial unique index), so a bulk action for 100,000
    devices, or ten commands for one device, means one push each.
    """

    __tablename__ = "push_requests"
    __table_args__ = (
        Index(
            "uq_push_requests_pending_device",
            "device_id",
            unique=True,
            postgresql_where=text(_PENDING_SQL),
            sqlite_where=text(_PENDING_SQL),
        ),
        Index(
            "ix_push_requests_claimable",
            "status",
            "not_before",
            "id",
            postgresql_where=text(_CLAIMABLE_SQL),
            sqlite_where=text(_CLAIMABLE_SQL),
        ),
        Index("ix_push_requests_device_created", "device_id", "created_at"),
        Index("ix_push_requests_status_completed", "status", "completed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=PushStatus.PENDING.value)
    reason: Mapped[str] = mapped_column(String(16), default="command")  # command | manual | repush
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(default=0)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    apns_id: Mapped[str | None] = mapped_column(String(64))
    last_status: Mapped[int | None]
    last_reason: Mapped[str | None] = mapped_column(String(100))


class DevicePushState(db.Model):
    """What the device's last push did, and whether APNs said its token is dead.

    The token counts as invalid while ``token_invalid_at`` is later than the device's
    ``token_updated_at``: the next TokenUpdate makes it valid again without touching this row.
    """

    __tablename__ = "device_push_state"

    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    last_push_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None]
    last_reason: Mapped[str | None] = mapped_column(String(100))
    last_apns_id: Mapped[str | None] = mapped_column(String(64))
    token_invalid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_repush_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PushCounter(db.Model):
    """Monotonic outcome counters shared by every worker process (rendered in ``/metrics``)."""

    __tablename__ = "push_counters"

    outcome: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
