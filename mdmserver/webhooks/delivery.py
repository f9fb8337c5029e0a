"""The webhook delivery worker: drains the outbox into the receivers' URLs.

One batch is three steps, as the push worker's (:mod:`mdmserver.push.worker`): *claim* (due deliveries,
``FOR UPDATE SKIP LOCKED`` on PostgreSQL so several workers share the work, SQLite's write lock
serialising claims; each is leased to this worker), *send* (no transaction open while POSTing, the
batch's POSTs concurrent), *record* (each attempt, and the delivery's new state, only if the lease is
still ours). A worker killed between claim and record loses nothing: the lease expires and the
delivery is claimed again. So delivery is at least once: a receiver whose 2xx answer was lost gets the
event again, with the same event id.

Order per subject: a delivery is not claimed while an earlier delivery of the same subscription and
subject (``device:12``) is unfinished (pending, waiting for its retry, or being sent), so a receiver sees
each device's events in the order they happened. A dead delivery no longer holds the others back.

Deliveries of a disabled subscription wait (they are sent once it is enabled again).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from flask import Flask
from sqlalchemy import and_, bindparam, exists, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from mdmserver import __version__
from mdmserver.db import db, lease_batch, utcnow
from mdmserver.pki.secretbox import SecretBox, SecretBoxError
from mdmserver.pki.service import load_secret_box
from mdmserver.push.worker import backoff_delay
from mdmserver.webhooks.models import (
    UNFINISHED,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)
from mdmserver.webhooks.signing import open_secret, signature

log = logging.getLogger("mdmserver.webhooks")

#: how much of a receiver's answer is kept with the attempt
RESPONSE_BODY_LIMIT = 1024
USER_AGENT = f"mdmserver-webhooks/{__version__}"


@dataclass
class DeliverySettings:
    batch_size: int = 20
    lease: timedelta = timedelta(minutes=2)
    max_attempts: int = 8
    backoff_base: float = 10.0  # seconds before the first retry; doubles each attempt (with jitter)
    backoff_max: float = 3600.0
    connect_timeout: float = 5.0
    read_timeout: float = 10.0

    @classmethod
    def from_config(cls, config: Any) -> DeliverySettings:
        return cls(max_attempts=int(config.get("WEBHOOK_MAX_ATTEMPTS", 8)),
                   read_timeout=float(config.get("WEBHOOK_TIMEOUT", 10.0)),
                   connect_timeout=min(5.0, float(config.get("WEBHOOK_TIMEOUT", 10.0))))


@dataclass
class _Claimed:
    delivery_id: int
    attempts: int
    event_type: str
    body: bytes
    url: str
    secret: str | None  # None: the sealed secret could not be opened (another key)


@dataclass
class Outcome:
    """What one POST got."""

    status_code: int | None = None
    error: str | None = None
    duration_ms: int = 0
    body: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        """Timeouts, connection errors, 5xx and 429 are tried again; any other answer is final."""
        if self.status_code is None:
            return True
        return self.status_code == 429 or self.status_code >= 500


@dataclass
class DeliveryReport:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0


def _claimable(now: datetime):
    earlier = aliased(WebhookDelivery)
    held_back = exists().where(
        earlier.subscription_id == WebhookDelivery.subscription_id,
        earlier.subject == WebhookDelivery.subject,
        earlier.id < WebhookDelivery.id,
        earlier.status.in_(UNFINISHED),
    )
    return and_(
        or_(
            and_(WebhookDelivery.status == DeliveryStatus.PENDING.value, WebhookDelivery.not_before <= now),
            and_(WebhookDelivery.status == DeliveryStatus.SENDING.value, WebhookDelivery.lease_until < now),
        ),
        ~held_back,
    )


class DeliveryWorker:
    """Drains the webhook outbox, one batch per :meth:`run_once` (run by ``jobs.run_worker``)."""

    def __init__(
        self, app: Flask, *, settings: DeliverySettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        box_factory: Callable[[], SecretBox] | None = None,
    ) -> None:
        self.app = app
        self.settings = settings or DeliverySettings.from_config(app.config)
        self.name = f"webhooks-{secrets.token_hex(4)}"
        self._transport = transport
        self._box_factory = box_factory or (lambda: load_secret_box(app.config["SECRET_KEY_FILE"]))
        self._loop = asyncio.new_event_loop()

    # --- one batch ---------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> DeliveryReport:
        """Claim, send and record one batch. Returns what happened."""
        with self.app.app_context():
            try:
                claim, claimed = self.claim(db.session, now or utcnow())
                if not claimed:
                    return DeliveryReport()
                outcomes = self._loop.run_until_complete(self._send_all(claimed))
                return self.record(db.session, claim, claimed, outcomes)
            finally:
                db.session.remove()

    def claim(self, session: Session, now: datetime) -> tuple[str, list[_Claimed]]:
        """Lease up to a batch of due deliveries to this worker (committed before anything is sent)."""
        candidates = (
            select(WebhookDelivery.id)
            .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
            .where(_claimable(now), WebhookSubscription.enabled.is_(True))
            .order_by(WebhookDelivery.id)
            .limit(self.settings.batch_size)
        )
        claim, ids = lease_batch(session, WebhookDelivery, candidates, holder=self.name,
                                 until=now + self.settings.lease, status=DeliveryStatus.SENDING.value)
        if not ids:
            session.commit()
            return "", []
        rows = session.execute(
            select(WebhookDelivery.id, WebhookDelivery.attempts, WebhookEvent.type, WebhookEvent.body,
                   WebhookSubscription.id, WebhookSubscription.url, WebhookSubscription.secret_encrypted)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
            .where(WebhookDelivery.id.in_(ids))
            .order_by(WebhookDelivery.id)
        ).all()
        session.commit()
        box = self._box_factory()
        claimed = []
        for delivery_id, attempts, event_type, body, subscription_id, url, sealed in rows:
            try:
                secret: str | None = open_secret(sealed, subscription_id, box)
            except SecretBoxError:
                log.error("webhook %s: its secret cannot be opened with this server's key", subscription_id)
                secret = None
            claimed.append(_Claimed(delivery_id, attempts, event_type, body.encode(), url, secret))
        return claim, claimed

    async def _send_all(self, claimed: list[_Claimed]) -> list[Outcome]:
        settings = self.settings
        timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, transport=self._transport,
                                     trust_env=False) as client:
            return list(await asyncio.gather(*(self._send(client, c) for c in claimed)))

    async def _send(self, client: httpx.AsyncClient, claimed: _Claimed) -> Outcome:
        if claimed.secret is None:
            return Outcome(error="the subscription's secret cannot be opened (secret key changed?)")
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Mdmserver-Event": claimed.event_type,
            "X-Mdmserver-Delivery": str(claimed.delivery_id),
            "X-Mdmserver-Timestamp": str(timestamp),
            "X-Mdmserver-Signature": signature(claimed.secret, timestamp, claimed.body),
        }
        started = time.monotonic()
        try:
            async with client.stream("POST", claimed.url, content=claimed.body, headers=headers) as response:
                kept = bytearray()
                async for chunk in response.aiter_bytes():
                    kept += chunk
                    if len(kept) >= RESPONSE_BODY_LIMIT:
                        break
                return Outcome(status_code=response.status_code, duration_ms=_elapsed_ms(started),
                               body=bytes(kept[:RESPONSE_BODY_LIMIT]).decode("utf-8", "replace") or None)
        except httpx.TimeoutException as exc:
            return Outcome(error=f"timeout ({type(exc).__name__})", duration_ms=_elapsed_ms(started))
        except httpx.HTTPError as exc:
            return Outcome(error=f"{type(exc).__name__}: {exc}"[:255], duration_ms=_elapsed_ms(started))

    def record(
        self, session: Session, claim: str, claimed: list[_Claimed], outcomes: list[Outcome],
        now: datetime | None = None,
    ) -> DeliveryReport:
        """Store the attempts and each delivery's new state (only where the lease is still ours)."""
        now = now or utcnow()
        report = DeliveryReport(claimed=len(claimed))
        updates: list[dict[str, Any]] = []
        for c, outcome in zip(claimed, outcomes, strict=True):
            values = {"b_id": c.delivery_id, "b_claim": claim, "b_status": DeliveryStatus.DEAD.value,
                      "b_not_before": now, "b_completed_at": now, "b_last_status": outcome.status_code,
                      "b_last_error": outcome.error}
            if outcome.delivered:
                values["b_status"] = DeliveryStatus.DELIVERED.value
                report.delivered += 1
            elif outcome.retryable and c.attempts < self.settings.max_attempts:
                values.update(b_status=DeliveryStatus.PENDING.value, b_completed_at=None,
                              b_not_before=now + timedelta(seconds=backoff_delay(c.attempts, self.settings)))
                report.retried += 1
            else:
                report.dead += 1
            updates.append(values)
        # a webhook deleted meanwhile took its deliveries with it: nothing of theirs to record
        still_there = set(session.scalars(select(WebhookDelivery.id).where(
            WebhookDelivery.id.in_([c.delivery_id for c in claimed]))))
        attempts = [{"delivery_id": c.delivery_id, "attempted_at": now, "status_code": o.status_code,
                     "error": o.error, "duration_ms": o.duration_ms, "response_body": o.body}
                    for c, o in zip(claimed, outcomes, strict=True) if c.delivery_id in still_there]
        connection = session.connection()
        if attempts:
            connection.execute(insert(WebhookAttempt.__table__), attempts)
        connection.execute(
            update(WebhookDelivery.__table__)
            .where(WebhookDelivery.__table__.c.id == bindparam("b_id"),
                   WebhookDelivery.__table__.c.claimed_by == bindparam("b_claim"))
            .values(status=bindparam("b_status"), not_before=bindparam("b_not_before"),
                    completed_at=bindparam("b_completed_at"), last_status=bindparam("b_last_status"),
                    last_error=bindparam("b_last_error"), lease_until=None, claimed_by=None),
            updates,
        )
        session.commit()
        if report.retried or report.dead:
            log.info("webhook batch: %d claimed, %d delivered, %d to retry, %d dead",
                     report.claimed, report.delivered, report.retried, report.dead)
        return report

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.close()


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
