"""The webhook outbox: events written in the caller's transaction, never a network call.

:func:`emit_many` is two statements whatever the number of events and subscriptions: an
``INSERT … SELECT … WHERE EXISTS`` of the events (an event no enabled subscription listens to is not
stored at all) and one ``INSERT … SELECT`` of a delivery per enabled subscription to each event's type,
left out when the one event was not stored (so without subscribers an event costs one statement).
The delivery worker (:mod:`mdmserver.webhooks.delivery`) takes it from there.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    and_,
    bindparam,
    exists,
    insert,
    literal,
    select,
)
from sqlalchemy.orm import Session

from mdmserver.db import UTCDateTime, isoformat, utcnow
from mdmserver.webhooks.models import (
    DeliveryStatus,
    EventType,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
    WebhookSubscriptionEvent,
)


@dataclass(frozen=True)
class Event:
    """An event to emit: its type, what it happened to (``device:12``) and its data."""

    type: EventType
    subject: str
    data: dict[str, Any]


def event_body(event_id: str, event_type: str, created_at: datetime, data: dict[str, Any]) -> str:
    """The JSON document a receiver gets (and whose bytes are signed)."""
    return json.dumps({"id": event_id, "type": event_type, "created_at": isoformat(created_at), "data": data},
                      separators=(",", ":"), ensure_ascii=False)


def listening() -> ColumnElement[bool]:
    """EXISTS: some enabled subscription listens to some event type. Without one :func:`emit_many`
    stores nothing, so a caller that reads this with other data (the connect path reads it with the
    device) can skip emitting and its statement."""
    return exists().where(
        WebhookSubscriptionEvent.subscription_id == WebhookSubscription.id,
        WebhookSubscription.enabled.is_(True),
    )


@cache
def _insert_events():
    table = WebhookEvent.__table__
    listening = exists().where(
        WebhookSubscriptionEvent.event_type == bindparam("e_type", type_=String()),
        WebhookSubscriptionEvent.subscription_id == WebhookSubscription.id,
        WebhookSubscription.enabled.is_(True),
    )
    return insert(table).from_select(
        ["id", "type", "subject", "body", "created_at"],
        select(
            bindparam("e_id", type_=String()), bindparam("e_type", type_=String()),
            bindparam("e_subject", type_=String()), bindparam("e_body", type_=String()),
            bindparam("e_at", type_=UTCDateTime()),
        ).where(listening),
    )


@cache
def _insert_event():
    return _insert_events().returning(WebhookEvent.__table__.c.id)


@cache
def _insert_deliveries():
    event, link, sub = WebhookEvent.__table__, WebhookSubscriptionEvent.__table__, WebhookSubscription.__table__
    now = bindparam("d_at", type_=UTCDateTime())
    return insert(WebhookDelivery.__table__).from_select(
        ["subscription_id", "event_id", "subject", "status", "attempts", "created_at", "not_before"],
        select(sub.c.id, event.c.id, event.c.subject, literal(DeliveryStatus.PENDING.value, String()),
               literal(0, Integer()), now, now)
        .select_from(event.join(link, link.c.event_type == event.c.type)
                     .join(sub, and_(sub.c.id == link.c.subscription_id, sub.c.enabled.is_(True))))
        .where(event.c.id.in_(bindparam("d_events", expanding=True)))
        .order_by(event.c.created_at, sub.c.id),
    )


def emit_many(session: Session, events: Sequence[Event]) -> None:
    """Write ``events`` (in order) and their deliveries in the session's transaction."""
    if not events:
        return
    now = utcnow()
    rows = []
    for index, event in enumerate(events):
        event_id = str(uuid.uuid4())
        at = now + timedelta(microseconds=index)  # the deliveries follow the order of the events
        rows.append({"e_id": event_id, "e_type": event.type.value, "e_subject": event.subject,
                     "e_body": event_body(event_id, event.type.value, at, event.data), "e_at": at})
    connection = session.connection()
    if len(rows) == 1:
        # RETURNING tells whether anyone listens (psycopg reports no row count for this INSERT … SELECT)
        if connection.execute(_insert_event(), rows[0]).first() is None:
            return  # nobody listens: one statement, and no row
    else:
        connection.execute(_insert_events(), rows)  # executemany: RETURNING is not available
    connection.execute(_insert_deliveries(), {"d_at": now, "d_events": [row["e_id"] for row in rows]})


def emit(session: Session, event_type: EventType, subject: str, data: dict[str, Any]) -> None:
    """Write one event and a delivery per enabled subscription to ``event_type``, in the caller's
    transaction (the event is rolled back with what caused it)."""
    emit_many(session, [Event(event_type, subject, data)])


def emit_to(session: Session, subscription: WebhookSubscription, event: Event) -> WebhookDelivery:
    """Write an event for one subscription only, whatever types it lists (the ping)."""
    now = utcnow()
    event_id = str(uuid.uuid4())
    session.add(WebhookEvent(id=event_id, type=event.type.value, subject=event.subject, created_at=now,
                             body=event_body(event_id, event.type.value, now, event.data)))
    session.flush()
    delivery = WebhookDelivery(subscription_id=subscription.id, event_id=event_id, subject=event.subject,
                               status=DeliveryStatus.PENDING.value, attempts=0, created_at=now, not_before=now)
    session.add(delivery)
    session.flush()
    return delivery
