"""Webhook subscriptions (create, change, rotate the secret, delete), their deliveries (replay) and the
test ping. The events themselves are written by :mod:`mdmserver.webhooks.outbox`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, select, update
from sqlalchemy.orm import Session

from mdmserver.api.jsonapi import is_id
from mdmserver.audit.service import record_event
from mdmserver.db import delete_in_batches, utcnow
from mdmserver.errors import Conflict, NotFound
from mdmserver.pki.secretbox import SecretBox
from mdmserver.webhooks.models import (
    FINISHED,
    DeliveryStatus,
    EventType,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
    WebhookSubscriptionEvent,
)
from mdmserver.webhooks.outbox import Event, emit_to
from mdmserver.webhooks.signing import new_secret, open_secret, seal_secret

POINTER = "/data/attributes"


def get_subscription(session: Session, subscription_id: Any) -> WebhookSubscription:
    text = str(subscription_id).strip()
    subscription = session.get(WebhookSubscription, int(text)) if is_id(text) else None
    if subscription is None:
        raise NotFound(f"no webhook {text!r}")
    return subscription


def event_types(session: Session, subscription_ids: Sequence[int]) -> dict[int, list[str]]:
    """The event types each subscription receives (one query for a page of subscriptions)."""
    found: dict[int, list[str]] = {i: [] for i in subscription_ids}
    if subscription_ids:
        rows = session.execute(
            select(WebhookSubscriptionEvent.subscription_id, WebhookSubscriptionEvent.event_type)
            .where(WebhookSubscriptionEvent.subscription_id.in_(list(subscription_ids)))
        )
        for subscription_id, event_type in rows:
            found[subscription_id].append(event_type)
    return found


def _check_unique_name(session: Session, name: str | None, subscription: WebhookSubscription | None) -> None:
    if name is None:
        return
    existing = session.scalar(select(WebhookSubscription.id).where(WebhookSubscription.name == name))
    if existing is not None and (subscription is None or existing != subscription.id):
        raise Conflict(f"a webhook named {name!r} exists (id {existing})", pointer=f"{POINTER}/name")


def _set_event_types(session: Session, subscription: WebhookSubscription, types: Sequence[str]) -> None:
    session.execute(delete(WebhookSubscriptionEvent).where(WebhookSubscriptionEvent.subscription_id == subscription.id))
    session.add_all(WebhookSubscriptionEvent(subscription_id=subscription.id, event_type=t) for t in sorted(set(types)))


def create_subscription(
    session: Session, values: dict[str, Any], *, box: SecretBox, actor: str | None,
) -> tuple[WebhookSubscription, str]:
    """Create a subscription with a new signing secret; returns it and the secret (shown this once)."""
    _check_unique_name(session, values["name"], None)
    secret = new_secret()
    subscription = WebhookSubscription(name=values["name"], url=values["url"], enabled=values.get("enabled", True),
                                       secret_encrypted=b"", created_by=actor)
    session.add(subscription)
    session.flush()
    subscription.secret_encrypted = seal_secret(secret, subscription.id, box)
    _set_event_types(session, subscription, values["event_types"])
    session.flush()
    record_event(session, "webhook:create", "webhooks", subscription.id,
                 {"name": subscription.name, "url": subscription.url, "event_types": sorted(set(values["event_types"]))})
    return subscription, secret


def update_subscription(session: Session, subscription: WebhookSubscription, values: dict[str, Any]) -> None:
    _check_unique_name(session, values.get("name"), subscription)
    for key in ("name", "url", "enabled"):
        if key in values:
            setattr(subscription, key, values[key])
    if "event_types" in values:
        _set_event_types(session, subscription, values["event_types"])
    subscription.updated_at = utcnow()
    session.flush()
    record_event(session, "webhook:update", "webhooks", subscription.id, dict(values))


def delete_subscription(session: Session, subscription: WebhookSubscription) -> None:
    """Delete a subscription with its deliveries (events nobody else is owed are purged later)."""
    record_event(session, "webhook:delete", "webhooks", subscription.id, {"name": subscription.name})
    session.delete(subscription)
    session.flush()


def rotate_secret(session: Session, subscription: WebhookSubscription, *, box: SecretBox) -> str:
    """A new signing secret, used from the next POST on; returns it (shown this once)."""
    secret = new_secret()
    subscription.secret_encrypted = seal_secret(secret, subscription.id, box)
    subscription.secret_rotated_at = subscription.updated_at = utcnow()
    session.flush()
    record_event(session, "webhook:rotate_secret", "webhooks", subscription.id, {"name": subscription.name})
    return secret


def reveal_secret(subscription: WebhookSubscription, *, box: SecretBox) -> str:
    return open_secret(subscription.secret_encrypted, subscription.id, box)


def ping(session: Session, subscription: WebhookSubscription) -> WebhookDelivery:
    """Queue a ``ping`` event for this subscription only (a disabled one gets it once enabled)."""
    return emit_to(session, subscription, Event(EventType.PING, f"webhook:{subscription.id}", {
        "webhook": {"id": str(subscription.id), "name": subscription.name}}))


def get_delivery(session: Session, subscription: WebhookSubscription, delivery_id: Any) -> WebhookDelivery:
    text = str(delivery_id).strip()
    delivery = session.get(WebhookDelivery, int(text)) if is_id(text) else None
    if delivery is None or delivery.subscription_id != subscription.id:
        raise NotFound(f"no delivery {text!r} of webhook {subscription.id}")
    return delivery


def delivery_details(
    session: Session, deliveries: Sequence[WebhookDelivery],
) -> tuple[dict[str, WebhookEvent], dict[int, list[WebhookAttempt]]]:
    """The events and attempts of a page of deliveries (two queries)."""
    events = {e.id: e for e in session.scalars(
        select(WebhookEvent).where(WebhookEvent.id.in_({d.event_id for d in deliveries})))} if deliveries else {}
    attempts: dict[int, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
    if deliveries:
        for attempt in session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(attempts)))
                                       .order_by(WebhookAttempt.id)):
            attempts[attempt.delivery_id].append(attempt)
    return events, attempts


def replay(session: Session, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again (dead, delivered or waiting for a retry): pending now, with a full set of
    attempts. One being sent right now is refused (409): replay it once it is recorded."""
    if delivery.status == DeliveryStatus.SENDING.value:
        raise Conflict(f"delivery {delivery.id} is being sent; replay it once it is recorded")
    now = utcnow()
    session.execute(
        update(WebhookDelivery).where(WebhookDelivery.id == delivery.id,
                                      WebhookDelivery.status != DeliveryStatus.SENDING.value)
        .values(status=DeliveryStatus.PENDING.value, attempts=0, not_before=now, completed_at=None,
                lease_until=None, claimed_by=None)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    session.refresh(delivery)
    record_event(session, "webhook:delivery:replay", "webhooks", delivery.subscription_id,
                 {"delivery": delivery.id, "event_id": delivery.event_id})
    return delivery


def purge(session: Session, *, older_than: timedelta, now: datetime | None = None, batch_size: int = 5000,
          commit: bool = True) -> int:
    """Finished deliveries (with their attempts) past the retention, then the events no delivery needs."""
    cutoff = (now or utcnow()) - older_than
    finished = and_(WebhookDelivery.status.in_(FINISHED), WebhookDelivery.completed_at < cutoff)
    deleted = delete_in_batches(session, WebhookDelivery, finished, batch_size=batch_size, commit=commit)
    orphaned = and_(WebhookEvent.created_at < cutoff,
                    ~select(WebhookDelivery.id).where(WebhookDelivery.event_id == WebhookEvent.id).exists())
    return deleted + delete_in_batches(session, WebhookEvent, orphaned, batch_size=batch_size, commit=commit)
