"""The push worker: drains the outbox into APNs and records what APNs answered.

One batch is three short transactions: *claim* (pick claimable requests — ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL so several workers share the work, SQLite's write lock serialises claims —
and lease them to this worker), *send* (no transaction open while talking to APNs), *record*
(results, device push state and counters). A worker killed between claim and record loses
nothing: its lease expires and another worker (or the same one, restarted) sends those requests
again. A duplicate MDM push is harmless (the device just checks in), a lost one is not.

This module drains; the process that runs it (``mdmserver push-worker``, with the periodic upkeep
jobs beside it) is :mod:`mdmserver.jobs`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from mdmserver.db import db, lease_batch, utcnow
from mdmserver.pki.service import load_secret_box
from mdmserver.push import service
from mdmserver.push.apns import APNsClient, HttpxAPNsClient, PushIdentity, PushMessage, PushResult
from mdmserver.records.devices import Device
from mdmserver.records.push import PushRequest, PushStatus
from mdmserver.selection.conditions import push_blocker

log = logging.getLogger("mdmserver.push.worker")

#: why a claimed request is skipped, per missed push requirement (``devices.conditions.push_requirements``)
_SKIP_REASONS = {"not_enrolled": "not enrolled", "no_token": "no push token", "token_refused": "token invalid"}


@dataclass
class WorkerSettings:
    batch_size: int = 500
    lease: timedelta = timedelta(minutes=2)
    max_attempts: int = 6
    backoff_base: float = 10.0  # seconds before the first retry; doubles each attempt
    backoff_max: float = 3600.0
    poll_interval: float = 1.0  # seconds the process waits after a batch that was not full


@dataclass
class _Claimed:
    request_id: int
    device_id: int
    attempts: int
    message: PushMessage | None
    skip_reason: str | None
    fail_reason: str | None


@dataclass
class BatchReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0


def backoff_delay(attempts: int, settings: WorkerSettings, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [base·2^(n-1) / 2, base·2^(n-1)], capped."""
    rng = rng or random
    ceiling = min(settings.backoff_max, settings.backoff_base * (2 ** max(attempts - 1, 0)))
    return rng.uniform(ceiling / 2, ceiling)


class PushWorker:
    """Drains the outbox, one batch per :meth:`run_once` (the loop around it: ``jobs.run_worker``)."""

    def __init__(
        self,
        app: Flask,
        *,
        settings: WorkerSettings | None = None,
        client_factory: Callable[[Callable[[str], PushIdentity | None]], APNsClient] | None = None,
    ) -> None:
        self.app = app
        self.settings = settings or WorkerSettings()
        self.name = f"worker-{secrets.token_hex(4)}"
        self._identity: PushIdentity | None = None
        self._identity_key: tuple[int, str] | None = None
        factory = client_factory or self._default_client
        self.client = factory(self._identity_for)
        self._loop = asyncio.new_event_loop()

    def _default_client(self, identities: Callable[[str], PushIdentity | None]) -> APNsClient:
        config = self.app.config
        return HttpxAPNsClient(
            config["APNS_URL"],
            identities,
            ca_file=config.get("APNS_CA_FILE"),
            expiration_seconds=int(config.get("APNS_EXPIRATION_SECONDS", 7 * 24 * 3600)),
        )

    def _identity_for(self, topic: str) -> PushIdentity | None:
        identity = self._identity
        return identity if identity is not None and identity.topic == topic else None

    def _refresh_identity(self, session: Session) -> PushIdentity | None:
        """The usable certificate; decrypts the key only when the active certificate changed."""
        row = service.get_active_certificate(session)
        if row is None or row.stopped_at is not None:
            self._identity, self._identity_key = None, None
            return None
        key = (row.id, row.fingerprint_sha256)
        if key != self._identity_key:
            self._identity = service.push_identity(session, box=load_secret_box(self.app.config["SECRET_KEY_FILE"]))
            self._identity_key = key if self._identity is not None else None
        return self._identity

    # --- one batch ---------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> BatchReport:
        """Claim, send and record one batch. Returns what happened."""
        with self.app.app_context():
            session = db.session
            try:
                identity = self._refresh_identity(session)
                if identity is None:
                    session.rollback()
                    return BatchReport()
                claim, claimed = self._claim(session, identity, now or utcnow())
                if not claimed:
                    return BatchReport()
                to_send = [c for c in claimed if c.message is not None]
                results = (
                    self._loop.run_until_complete(self.client.send_batch([c.message for c in to_send]))
                    if to_send
                    else []
                )
                return self._record(session, identity, claim, claimed, results)
            finally:
                db.session.remove()

    def _claim(
        self, session: Session, identity: PushIdentity, now: datetime
    ) -> tuple[str, list[_Claimed]]:
        claimable = or_(
            and_(
                PushRequest.status.in_([PushStatus.PENDING.value, PushStatus.RETRY.value]),
                PushRequest.not_before <= now,
            ),
            and_(PushRequest.status == PushStatus.SENDING.value, PushRequest.lease_until < now),
        )
        candidates = (
            select(PushRequest.id).where(claimable).order_by(PushRequest.id).limit(self.settings.batch_size)
        )
        claim, ids = lease_batch(session, PushRequest, candidates, holder=self.name,
                                 until=now + self.settings.lease, status=PushStatus.SENDING.value)
        if not ids:
            session.commit()
            return "", []
        rows = session.execute(
            select(
                PushRequest.id,
                PushRequest.attempts,
                Device.id,
                push_blocker(),
                Device.admission_status,
                Device.push_token,
                Device.push_magic,
                Device.topic,
            )
            .join(Device, Device.id == PushRequest.device_id)
            .where(PushRequest.id.in_(ids))
            .order_by(PushRequest.id)
        ).all()
        session.commit()
        claimed = []
        for (rid, attempts, device_id, blocker, admission, token, magic, topic) in rows:
            skip = None
            fail = None
            if blocker == "admission":
                skip = f"admission {admission}"
            elif blocker is not None:
                skip = _SKIP_REASONS[blocker]
            elif topic is not None and topic != identity.topic:
                fail = "TopicMismatch"
            message = None
            if skip is None and fail is None:
                message = PushMessage(bytes(token).hex(), magic, identity.topic)
            claimed.append(_Claimed(rid, device_id, attempts, message, skip, fail))
        return claim, claimed

    def _record(
        self,
        session: Session,
        identity: PushIdentity,
        claim: str,
        claimed: list[_Claimed],
        results: list[PushResult],
    ) -> BatchReport:
        now = utcnow()
        report = BatchReport(claimed=len(claimed))
        counts: Counter[str] = Counter()
        updates: list[dict[str, Any]] = []
        states: list[dict[str, Any]] = []
        result_iter = iter(results)
        certificate_refused: str | None = None

        def row(c: _Claimed, status: str, **values: Any) -> dict[str, Any]:
            base = {
                "b_id": c.request_id,
                "b_claim": claim,
                "b_status": status,
                "b_completed_at": None,
                "b_sent_at": None,
                "b_apns_id": None,
                "b_last_status": None,
                "b_last_reason": None,
                "b_not_before": now,
                "b_attempts": c.attempts,
            }
            base.update({f"b_{k}": v for k, v in values.items()})
            return base

        for c in claimed:
            if c.message is None:
                if c.skip_reason:
                    updates.append(row(c, PushStatus.SKIPPED.value, completed_at=now, last_reason=c.skip_reason))
                    report.skipped += 1
                    counts["skipped"] += 1
                else:
                    updates.append(row(c, PushStatus.FAILED.value, completed_at=now, last_reason=c.fail_reason))
                    report.failed += 1
                    counts["failed"] += 1
                continue
            result = next(result_iter)
            if result.status:
                states.append({
                    "device_id": c.device_id, "last_push_at": now, "last_status": result.status,
                    "last_reason": result.reason, "last_apns_id": result.apns_id,
                })
            if result.ok:
                updates.append(row(
                    c, PushStatus.SENT.value, completed_at=now, sent_at=now, apns_id=result.apns_id,
                    last_status=200,
                ))
                report.sent += 1
                counts["sent"] += 1
            elif result.token_invalid:
                updates.append(row(
                    c, PushStatus.FAILED.value, completed_at=now, apns_id=result.apns_id,
                    last_status=result.status, last_reason=result.reason,
                ))
                states.append({"device_id": c.device_id, "token_invalid_at": now})
                report.failed += 1
                counts["unregistered" if result.status == 410 else "bad_token"] += 1
            elif result.certificate_problem:
                # Not the device's fault: keep the request (attempt not counted) for the next certificate.
                certificate_refused = result.reason or str(result.status)
                updates.append(row(
                    c, PushStatus.RETRY.value, attempts=c.attempts - 1, last_status=result.status,
                    last_reason=result.reason,
                ))
                report.retried += 1
                counts["certificate_refused"] += 1
            elif result.retryable:
                counts[
                    "throttled" if result.status == 429
                    else "server_error" if result.status >= 500
                    else "connection_error"
                ] += 1
                if c.attempts >= self.settings.max_attempts:
                    updates.append(row(
                        c, PushStatus.FAILED.value, completed_at=now, last_status=result.status,
                        last_reason=result.reason,
                    ))
                    report.failed += 1
                    counts["failed"] += 1
                else:
                    delay = backoff_delay(c.attempts, self.settings)
                    updates.append(row(
                        c, PushStatus.RETRY.value, not_before=now + timedelta(seconds=delay),
                        last_status=result.status, last_reason=result.reason,
                    ))
                    report.retried += 1
                    counts["retried"] += 1
            else:
                updates.append(row(
                    c, PushStatus.FAILED.value, completed_at=now, apns_id=result.apns_id,
                    last_status=result.status, last_reason=result.reason,
                ))
                report.failed += 1
                counts["failed"] += 1

        stmt = (
            update(PushRequest)
            .where(PushRequest.id == bindparam("b_id"), PushRequest.claimed_by == bindparam("b_claim"))
            .values(
                status=bindparam("b_status"),
                completed_at=bindparam("b_completed_at"),
                sent_at=bindparam("b_sent_at"),
                apns_id=bindparam("b_apns_id"),
                last_status=bindparam("b_last_status"),
                last_reason=bindparam("b_last_reason"),
                not_before=bindparam("b_not_before"),
                attempts=bindparam("b_attempts"),
                lease_until=None,
                claimed_by=None,
            )
            .execution_options(synchronize_session=False)
        )
        if updates:
            session.connection().execute(stmt, updates)
        service.upsert_states(session, states)
        service.bump_counters(session, counts)
        if certificate_refused is not None:
            service.stop_topic(session, identity.topic, identity.fingerprint, certificate_refused)
        session.commit()
        if report.failed or report.retried:
            log.info(
                "push batch: %d claimed, %d sent, %d retried, %d failed, %d skipped",
                report.claimed, report.sent, report.retried, report.failed, report.skipped,
            )
        return report

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.run_until_complete(self.client.aclose())
        self._loop.close()

