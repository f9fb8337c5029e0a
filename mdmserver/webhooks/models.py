"""Webhook subscriptions, the event outbox, its deliveries and their attempts.

An event row is written in the transaction that caused it, with one delivery row per enabled
subscription to its type (:mod:`mdmserver.webhooks.outbox`); the delivery worker
(:mod:`mdmserver.webhooks.delivery`) claims due deliveries, POSTs them and records each attempt.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow


class EventType(StrEnum):
    """The events a subscription can name (``ping`` is sent only by the ping endpoint)."""

    DEVICE_ENROLLED = "device.enrolled"
    DEVICE_CHECKED_OUT = "device.checked_out"
    DEVICE_ADMISSION_CHANGED = "device.admission_changed"
    COMMAND_ACKNOWLEDGED = "command.acknowledged"
    COMMAND_ERROR = "command.error"
    COMMAND_NOT_NOW = "command.not_now"
    INVENTORY_CHANGED = "inventory.changed"
    PUSH_CERTIFICATE_EXPIRING = "push_certificate.expiring"
    APP_INSTALL_FAILED = "app.install_failed"
    COMPLIANCE_CHANGED = "compliance.changed"
    PING = "ping"


#: the types a subscription may list (ping goes to the one subscription it was asked for)
SUBSCRIBABLE = frozenset(t.value for t in EventType if t is not EventType.PING)


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # due from ``not_before`` (a retry waits there after its backoff)
    SENDING = "sending"  # claimed by a worker until ``lease_until``; claimed again after a crash
    DELIVERED = "delivered"  # the receiver answered 2xx
    DEAD = "dead"  # a 4xx other than 429, or the attempts ran out: only a replay sends it again


#: deliveries not finished: they hold back later deliveries of the same subscription and subject
UNFINISHED = (DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value)
FINISHED = (DeliveryStatus.DELIVERED.value, DeliveryStatus.DEAD.value)
_UNFINISHED_SQL = "status IN ('pending', 'sending')"


class WebhookSubscription(db.Model):
    """Where events of the listed types are POSTed, signed with the subscription's secret."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    url: Mapped[str] = mapped_column(String(2048))
    enabled: Mapped[bool] = mapped_column(default=True)
    #: the signing secret, sealed with the secret box (associated data: the subscription's id)
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class WebhookSubscriptionEvent(db.Model):
    """One event type a subscription receives (a row per type, so matching is one indexed join)."""

    __tablename__ = "webhook_subscription_events"
    __table_args__ = (Index("ix_webhook_subscription_events_type", "event_type", "subscription_id"),)

    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), primary_key=True
    )
    event_type: Mapped[str] = mapped_column(String(64), primary_key=True)


class WebhookEvent(db.Model):
    """Something that happened. ``body`` is the JSON document every receiver gets, as it is signed and
    sent (``{"id", "type", "created_at", "data"}``), fixed when the event is written.

    ``subject`` names what it happened to (``device:12``, ``push_certificate:<fingerprint>``): the
    deliveries of one subscription and subject are attempted in order.
    """

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(128))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class WebhookDelivery(db.Model):
    """One event owed to one subscription."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_claimable", "status", "not_before", "id",
              postgresql_where=text(_UNFINISHED_SQL), sqlite_where=text(_UNFINISHED_SQL)),
        # the per-subject ordering check: an earlier unfinished delivery of the same subscription and subject
        Index("ix_webhook_deliveries_order", "subscription_id", "subject", "id",
              postgresql_where=text(_UNFINISHED_SQL), sqlite_where=text(_UNFINISHED_SQL)),
        Index("ix_webhook_deliveries_subscription", "subscription_id", "id"),
        Index("ix_webhook_deliveries_event", "event_id"),
        Index("ix_webhook_deliveries_status_completed", "status", "completed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(32))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(255))


class WebhookAttempt(db.Model):
    """What one POST of a delivery got: the HTTP status or the error, how long it took, the start of the
    answer's body."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(255))
    duration_ms: Mapped[int]
    response_body: Mapped[str | None] = mapped_column(Text)


class WebhookNotice(db.Model):
    """An event that must be emitted once (``push_certificate.expiring`` per certificate and threshold):
    its key is inserted with the event, and a second insert finds it."""

    __tablename__ = "webhook_notices"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
