"""The worker process: drains the push outbox and runs the periodic upkeep jobs.

``mdmserver push-worker`` runs :func:`run_standalone`; ``mdmserver serve`` starts exactly one
``mdmserver push-worker`` process beside the web workers (see ``mdmserver/server.py``). Several may run
against one PostgreSQL database: the outbox is shared by leases, and every upkeep job is idempotent.

The process loop: run the upkeep jobs that are due, drain one batch of the outbox
(:class:`mdmserver.push.worker.PushWorker`), wait a little when the batch was not full. The jobs, each
on its own period:

- *re-push*: push again the devices with queued commands that have been silent too long;
- *purge*: push records and finished commands past the retention, enrollment identities never used,
  SCEP challenges that expired unused;
- *reconcile*: the profiles and apps assigned to groups (smart groups follow the inventory devices report),
  and every blueprint (its smart-group scope, its OS target, and its ``start_on`` when it comes);
- *renew*: identities that expire soon are renewed (``mdmserver/checkin/renewal.py``);
- *notices*: ``push_certificate.expiring`` webhook events (30, 14, 7 and 1 days before, once each);
- *compliance*: every device judged again against the compliance policies (last-check-in rules depend
  on the time);
- *due*: the compliance remediations past their grace period, and the scheduled actions whose time
  (and maintenance window) has come: each claimed by one ``UPDATE … RETURNING``, so exactly once.

Each loop also drains one batch of the webhook outbox (:class:`mdmserver.webhooks.delivery.DeliveryWorker`).

This is an entry module (beside the views and the CLI): it may call any feature, and nothing imports it
but the CLI.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy.exc import OperationalError

from mdmserver import workflows
from mdmserver.actions.remediation import remediate
from mdmserver.actions.service import run_due_schedules
from mdmserver.checkin.enrollment import UNUSED_IDENTITY_AGE, purge_unused_identities
from mdmserver.checkin.renewal import RenewalSettings, renew_identities
from mdmserver.checkin.service import EnrollmentIdentity
from mdmserver.commands.service import purge_finished as purge_finished_commands
from mdmserver.db import db, is_database_busy, utcnow
from mdmserver.pki.service import load_secret_box
from mdmserver.push import service as push
from mdmserver.push.worker import PushWorker
from mdmserver.scep.service import purge_expired_challenges
from mdmserver.webhooks import events as webhook_events
from mdmserver.webhooks import service as webhooks
from mdmserver.webhooks.delivery import DeliveryWorker

log = logging.getLogger("mdmserver.jobs")

#: the actor of the assignment changes the periodic reconcile makes (audit log, ``enqueued_by``)
UPKEEP_ACTOR = "push-worker"


@dataclass
class UpkeepSettings:
    repush_after: timedelta = timedelta(hours=24)
    repush_every: float = 300.0
    retention: timedelta = timedelta(days=90)
    retention_days: int = 90
    purge_every: float = 3600.0
    reconcile_every: float = 900.0
    notices_every: float = 3600.0
    compliance_every: float = 300.0
    due_every: float = 30.0
    unused_identity_age: timedelta = UNUSED_IDENTITY_AGE
    renew_every: float = 3600.0
    renew_before: timedelta = timedelta(days=30)
    identity_lifetime_days: float = 730.0

    @classmethod
    def from_config(cls, config: Any) -> UpkeepSettings:
        return cls(
            repush_after=timedelta(hours=float(config.get("REPUSH_AFTER_HOURS", 24))),
            retention=timedelta(days=float(config.get("RETENTION_DAYS", 90))),
            retention_days=int(config.get("RETENTION_DAYS", 90)),
            renew_before=timedelta(days=float(config.get("IDENTITY_RENEW_DAYS", 30))),
            identity_lifetime_days=float(config.get("IDENTITY_LIFETIME_DAYS", 730)),
        )


class Upkeep:
    """The periodic jobs. :meth:`run` runs those that are due (all of them with ``force``)."""

    def __init__(self, app: Flask, settings: UpkeepSettings | None = None) -> None:
        self.app = app
        self.settings = settings or UpkeepSettings.from_config(app.config)
        self._last_repush = 0.0
        self._last_purge = 0.0
        self._last_reconcile = 0.0
        self._last_renew = 0.0
        self._last_notices = 0.0
        self._last_compliance = 0.0
        self._last_due = 0.0

    def run(self, *, force: bool = False, now: datetime | None = None) -> None:
        """Run the jobs whose period has passed; ``now`` drives the purges' clock (tests)."""
        clock = time.monotonic()
        settings = self.settings
        with self.app.app_context():
            try:
                if force or clock - self._last_repush >= settings.repush_every:
                    self._last_repush = clock
                    self._repush()
                if force or clock - self._last_purge >= settings.purge_every:
                    self._last_purge = clock
                    self._purge(now)
                if force or clock - self._last_reconcile >= settings.reconcile_every:
                    self._last_reconcile = clock
                    self._reconcile()
                if force or clock - self._last_renew >= settings.renew_every:
                    self._last_renew = clock
                    self._renew(now)
                if force or clock - self._last_notices >= settings.notices_every:
                    self._last_notices = clock
                    self._notices(now)
                if force or clock - self._last_compliance >= settings.compliance_every:
                    self._last_compliance = clock
                    self._compliance()
                if force or clock - self._last_due >= settings.due_every:
                    self._last_due = clock
                    self._due(now)
            finally:
                db.session.remove()

    def _repush(self) -> None:
        count = push.repush_stale(db.session, after=self.settings.repush_after)
        db.session.commit()
        if count:
            log.info("re-push: %d silent devices with queued commands", count)

    def _purge(self, now: datetime | None) -> None:
        settings = self.settings
        purged = push.purge_push_records(db.session, older_than=settings.retention, now=now)
        if purged:
            log.info("purged %d push records older than %s", purged, settings.retention)
        deleted = purge_finished_commands(db.session, retention_days=settings.retention_days, now=now)
        if deleted:
            log.info("purged %d finished commands older than %d days", deleted, settings.retention_days)
        hooks = webhooks.purge(db.session, older_than=settings.retention, now=now)
        if hooks:
            log.info("purged %d webhook deliveries and events older than %s", hooks, settings.retention)
        unused = purge_unused_identities(db.session, older_than=settings.unused_identity_age, now=now)
        if unused:
            log.info("purged %d enrollment identities not used within %s", unused, settings.unused_identity_age)
        expired = purge_expired_challenges(db.session, now=now)
        db.session.commit()
        if expired:
            log.info("purged %d SCEP challenges that expired unused", expired)

    def _reconcile(self) -> None:
        box = load_secret_box(self.app.config["SECRET_KEY_FILE"])
        counts = workflows.group_membership_changed(db.session, actor=UPKEEP_ACTOR, box=box,
                                                    public_url=self.app.config["PUBLIC_URL"])
        db.session.commit()
        if any(counts[k] for k in ("install_queued", "removal_queued", "app_install_queued", "app_removal_queued")) \
                or any(v for k, v in counts["blueprints"].items() if k != "blueprints"):
            log.info("group assignments reconciled: %s", counts)


    def _renew(self, now: datetime | None) -> None:
        settings = self.settings
        renewal = RenewalSettings(
            renew_before=settings.renew_before, lifetime_days=settings.identity_lifetime_days,
            public_url=self.app.config["PUBLIC_URL"], box=load_secret_box(self.app.config["SECRET_KEY_FILE"]),
            identity=EnrollmentIdentity(self.app.config.get("ENROLLMENT_IDENTITY", "scep")),
        )
        renew_identities(db.session, now=now or utcnow(), settings=renewal)
        db.session.commit()

    def _notices(self, now: datetime | None) -> None:
        certificate = push.get_active_certificate(db.session)
        told = webhook_events.push_certificate_expiring(db.session, certificate, now or utcnow()) \
            if certificate is not None else None
        db.session.commit()
        if told is not None:
            log.warning("the push certificate %s expires within %d days (webhook event queued)",
                        certificate.topic, told)

    def _compliance(self) -> None:
        changed = workflows.reevaluate_compliance(db.session)
        db.session.commit()
        if changed:
            log.info("compliance: %d devices changed state", len(changed))

    def _due(self, now: datetime | None) -> None:
        box = load_secret_box(self.app.config["SECRET_KEY_FILE"])
        remediated = remediate(db.session, box=box, public_url=self.app.config["PUBLIC_URL"], now=now)
        db.session.commit()
        if remediated:
            log.info("compliance remediations: %s", remediated)
        ran = run_due_schedules(db.session, box=box, now=now)
        db.session.commit()
        if ran:
            log.info("scheduled actions queued: %s", ran)


def run_worker(
    app: Flask, stop: threading.Event, *, worker: PushWorker | None = None, upkeep: Upkeep | None = None,
    webhook_worker: DeliveryWorker | None = None,
) -> None:
    """Work until ``stop`` is set; the batch in flight is always finished and recorded."""
    worker = worker or PushWorker(app)
    upkeep = upkeep or Upkeep(app)
    hooks = webhook_worker or DeliveryWorker(app)
    pace = worker.settings
    log.info("push worker %s started", worker.name)
    try:
        while not stop.is_set():
            try:
                upkeep.run()
                report = worker.run_once()
                delivered = hooks.run_once()
            except OperationalError as exc:
                if not is_database_busy(exc):
                    log.exception("push worker batch failed; retrying shortly")
                    stop.wait(min(30.0, pace.poll_interval * 5))
                    continue
                # SQLite's write lock held by someone else past the busy timeout: nothing is
                # lost (a claimed batch is leased), try again on the next tick.
                log.warning("push worker: database busy; retrying on the next tick")
                stop.wait(pace.poll_interval)
                continue
            except Exception:  # noqa: BLE001 — keep the worker alive; the lease protects the batch
                log.exception("push worker batch failed; retrying shortly")
                stop.wait(min(30.0, pace.poll_interval * 5))
                continue
            if report.claimed < pace.batch_size and delivered.claimed < hooks.settings.batch_size:
                stop.wait(pace.poll_interval)
    finally:
        hooks.close()
        worker.close()
        log.info("push worker %s stopped", worker.name)


def _install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum, _frame) -> None:
        log.info("signal %s: finishing the current batch, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def run_standalone(app: Flask, *, stop: threading.Event | None = None) -> None:
    """``mdmserver push-worker``: run until SIGTERM/SIGINT (graceful: the batch in flight finishes)."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        _install_signal_handlers(stop)
    run_worker(app, stop)
