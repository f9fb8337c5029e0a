"""Software updates through MDM commands: what the inventory says about them, read set-based.

- :func:`viability_whens`: why a device cannot take an OS update now (for ``update_os``'s viability and
  Ivanti's ``scheduleOSUpdate?checkViability=true``), from its platform, its version, the updates it
  reports in ``AvailableOSUpdates`` and the updates already pending or in progress;
- :func:`queue_progress_checks`: ``OSUpdateStatus`` (progress) and ``DeviceInformation`` (the version
  once installed) for the devices with a blueprint update they accepted and have not installed, at most
  one of each pending per device, through the one command writer;
- :func:`fleet_summary`: devices per platform and OS version, per blueprint with an OS target how many
  are behind it, updating, installed or failed, and the failures with their reason.

Every function is a constant number of statements whatever the number of devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    exists,
    func,
    literal,
    not_,
    null,
    or_,
    select,
)
from sqlalchemy.orm import Session

from mdmserver.commands.service import QueuePlan, enqueue_where
from mdmserver.compliance.service import version_key, version_key_sql
from mdmserver.db import isoformat
from mdmserver.pki.secretbox import SecretBox
from mdmserver.records.blueprints import (
    LATEST,
    Blueprint,
    BlueprintMember,
    BlueprintOSUpdate,
    MemberStatus,
    OSUpdateStatus,
)
from mdmserver.records.commands import ACTIVE_STATUSES, Command
from mdmserver.records.devices import (
    AvailableOSUpdate,
    Device,
    DeviceOSUpdateStatus,
    OSUpdateProgress,
    Platform,
)
from mdmserver.selection.conditions import manageable
from mdmserver.selection.sql import in_values

_ACTIVE = tuple(s.value for s in ACTIVE_STATUSES)
#: the platforms Ivanti's OS update is documented for ("iOS only"; iPadOS is iOS to Apple's MDM)
IVANTI_PLATFORMS = (Platform.IOS.value, Platform.IPADOS.value)
#: an update the device reports as moving (OSUpdateStatus)
IN_PROGRESS = (OSUpdateProgress.DOWNLOADING.value, OSUpdateProgress.INSTALLING.value)
#: the commands that follow an accepted update: its progress, then the version it brought
PROGRESS_COMMANDS = ("OSUpdateStatus", "DeviceInformation")


def _pending(request_type: str) -> ColumnElement[bool]:
    return exists().where(Command.device_id == Device.id, Command.request_type == request_type,
                          Command.status.in_(_ACTIVE))


def viability_whens(session: Session, version: str | None, *,
                    platforms: Sequence[str] | None = None) -> list[tuple[ColumnElement[bool], Any]]:
    """``CASE`` branches (condition on ``Device``, reason) that make an OS update not viable, in this
    order: a platform outside ``platforms`` (Ivanti: iOS only), an unknown OS version, an update already
    pending (a ScheduleOSUpdate not answered, a blueprint's update accepted and not installed) or in
    progress (OSUpdateStatus: Downloading, Installing); with a ``version``: the device runs it or later,
    its offered updates are not known yet (no AvailableOSUpdates answer), or ``version`` is not among
    them; without one: no update above its version is offered. ``version`` must be a version
    (:func:`mdmserver.compliance.service.version_key` accepts it)."""
    reported = version_key_sql(session, Device.os_version)
    whens: list[tuple[ColumnElement[bool], Any]] = []
    if platforms is not None:
        whens.append((Device.platform.not_in(list(platforms)),
                      literal("an OS update is offered here for ", String) + literal(", ".join(platforms), String)
                      + literal(" only; the device runs ", String) + Device.platform))
    whens += [
        (reported.is_(None), literal("the device's OS version is not known yet (no DeviceInformation answer)")),
        (_pending("ScheduleOSUpdate"), literal("an OS update is already pending (ScheduleOSUpdate not answered)")),
        (exists().where(BlueprintOSUpdate.device_id == Device.id,
                        BlueprintOSUpdate.status == OSUpdateStatus.SCHEDULED.value),
         literal("an OS update the device accepted is not installed yet")),
        (exists().where(DeviceOSUpdateStatus.device_id == Device.id, DeviceOSUpdateStatus.status.in_(IN_PROGRESS)),
         literal("an OS update is downloading or installing on the device (OSUpdateStatus)")),
    ]
    unknown_offers = (Device.os_updates_reported_at.is_(None),
                      literal("the updates the device is offered are not known yet (no AvailableOSUpdates answer)"))
    offered = version_key_sql(session, AvailableOSUpdate.version)
    if version is not None:
        wanted = version_key(version)
        whens += [
            (reported >= wanted, literal("the device already runs ", String) + Device.os_version
             + literal(f", at or above {version}", String)),
            unknown_offers,
            (not_(exists().where(AvailableOSUpdate.device_id == Device.id, offered == wanted)),
             literal(f"{version} is not among the updates the device is offered (AvailableOSUpdates)")),
        ]
    else:
        whens += [
            unknown_offers,
            (not_(exists().where(AvailableOSUpdate.device_id == Device.id, offered > reported)),
             literal("the device is offered no update above ", String) + Device.os_version),
        ]
    return whens


def queue_progress_checks(session: Session, blueprint_id: int, *, actor: str | None, now: datetime,
                          box: SecretBox) -> dict[str, int]:
    """Ask the devices that accepted the blueprint's update and have not installed it how it goes
    (``OSUpdateStatus``) and which version they run (``DeviceInformation``): each command only where
    none of its kind is pending, so a device has at most one of each waiting, whatever the number of
    blueprints. One ``SELECT`` when no device is waiting; else the queue's constant handful."""
    waiting = exists().where(BlueprintOSUpdate.blueprint_id == blueprint_id, BlueprintOSUpdate.device_id == Device.id,
                             BlueprintOSUpdate.status == OSUpdateStatus.SCHEDULED.value)
    if not session.scalar(select(select(Device.id).where(waiting).exists())):
        return dict.fromkeys(PROGRESS_COMMANDS, 0)  # nothing to ask: nothing stored, nothing queued
    plans = [QueuePlan(request_type, {}, condition=not_(_pending(request_type))) for request_type in PROGRESS_COMMANDS]
    queued = enqueue_where(session, and_(waiting, manageable()), plans, actor=actor, now=now, box=box)
    return {request_type: len(rows) for request_type, rows in zip(PROGRESS_COMMANDS, queued, strict=True)}


# --- the fleet view -------------------------------------------------------------------------------


def _target_key(session: Session) -> ColumnElement[Any]:
    """SQL: the numeric key of the correlated blueprint's target for the correlated device (``latest``:
    the newest version the device is offered; offered nothing, its own version: it is up to date; its
    offers not known: NULL)."""
    newest = (select(func.max(version_key_sql(session, AvailableOSUpdate.version)))
              .where(AvailableOSUpdate.device_id == Device.id).correlate(Device).scalar_subquery())
    up_to_date = case((Device.os_updates_reported_at.is_not(None), version_key_sql(session, Device.os_version)),
                      else_=null())
    return case((Blueprint.os_update_version == LATEST, func.coalesce(newest, up_to_date)),
                else_=version_key_sql(session, Blueprint.os_update_version))


def fleet_summary(session: Session, *, failures_limit: int) -> dict[str, Any]:
    """The fleet's OS versions and its progress towards the blueprints' OS targets (four statements):

    - ``versions``: devices per platform and reported OS version (enrolled or not, admitted or not);
    - ``targets``: per blueprint with an OS target, its members in scope: ``behind`` (reporting a version
      below the target), ``at_target`` (at or above it), ``unknown`` (no version known, or ``latest``
      with no offered update known), and the OS item's states (``queued``, ``scheduled``, ``installed``,
      ``failed``) and ``in_progress`` (OSUpdateStatus says downloading or installing);
    - ``failures``: the failed OS items, newest first, at most ``failures_limit``, with the reason.
    """
    versions = [{"platform": platform, "os_version": os_version, "count": count}
                for platform, os_version, count in session.execute(
                    select(Device.platform, Device.os_version, func.count())
                    .group_by(Device.platform, Device.os_version)
                    .order_by(Device.platform, func.count().desc(), Device.os_version))]
    reported, target = version_key_sql(session, Device.os_version), _target_key(session)
    moving = exists().where(DeviceOSUpdateStatus.device_id == Device.id, DeviceOSUpdateStatus.status.in_(IN_PROGRESS))

    def count(condition: ColumnElement[bool]) -> Any:
        return func.sum(case((condition, 1), else_=0))

    def state(value: OSUpdateStatus) -> Any:
        return count(BlueprintOSUpdate.status == value.value)

    rows = session.execute(
        select(Blueprint.id, Blueprint.name, Blueprint.os_update_version, func.count(Device.id),
               count(and_(reported.is_not(None), target.is_not(None), reported < target)),
               count(and_(reported.is_not(None), target.is_not(None), reported >= target)),
               count(or_(reported.is_(None), target.is_(None))),
               state(OSUpdateStatus.QUEUED), state(OSUpdateStatus.SCHEDULED), state(OSUpdateStatus.INSTALLED),
               state(OSUpdateStatus.FAILED), count(moving))
        .join(BlueprintMember, and_(BlueprintMember.blueprint_id == Blueprint.id,
                                    BlueprintMember.status == MemberStatus.IN_SCOPE.value))
        .join(Device, Device.id == BlueprintMember.device_id)
        .outerjoin(BlueprintOSUpdate, and_(BlueprintOSUpdate.blueprint_id == Blueprint.id,
                                           BlueprintOSUpdate.device_id == Device.id))
        .where(Blueprint.os_update_version.is_not(None))
        .group_by(Blueprint.id, Blueprint.name, Blueprint.os_update_version)
        .order_by(Blueprint.apply_order, Blueprint.id)
    ).all()
    keys = ("members", "behind", "at_target", "unknown", "queued", "scheduled", "installed", "failed",
            "in_progress")
    targets = [{"blueprint_id": str(row[0]), "name": row[1], "target_version": row[2],
                **{k: int(v or 0) for k, v in zip(keys, row[3:], strict=True)}} for row in rows]
    failed = BlueprintOSUpdate.status == OSUpdateStatus.FAILED.value
    failure_total = session.scalar(select(func.count()).select_from(BlueprintOSUpdate).where(failed)) or 0
    failures = [{"blueprint_id": str(r.blueprint_id), "device_id": str(r.device_id), "udid": r.udid,
                 "platform": r.platform, "os_version": r.os_version, "target_version": r.target_version,
                 "reason": r.detail, "failed_at": r.updated_at}
                for r in session.execute(
                    select(BlueprintOSUpdate.blueprint_id, BlueprintOSUpdate.device_id, Device.udid, Device.platform,
                           Device.os_version, BlueprintOSUpdate.target_version, BlueprintOSUpdate.detail,
                           BlueprintOSUpdate.updated_at)
                    .join(Device, Device.id == BlueprintOSUpdate.device_id).where(failed)
                    .order_by(BlueprintOSUpdate.updated_at.desc(), BlueprintOSUpdate.device_id)
                    .limit(failures_limit))]
    return {"versions": versions, "targets": targets, "failure_count": failure_total, "failures": failures}


def progress_of(session: Session, device_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """device id → its last OSUpdateStatus entries, JSON-ready (one statement)."""
    out: dict[int, list[dict[str, Any]]] = {}
    if not device_ids:
        return out
    for row in session.scalars(select(DeviceOSUpdateStatus)
                               .where(in_values(session, DeviceOSUpdateStatus.device_id, device_ids, integer=True))
                               .order_by(DeviceOSUpdateStatus.device_id, DeviceOSUpdateStatus.id)):
        out.setdefault(row.device_id, []).append({
            "product_key": row.product_key, "status": row.status, "is_downloaded": row.is_downloaded,
            "download_percent_complete": row.download_percent_complete, "max_deferrals": row.max_deferrals,
            "deferrals_remaining": row.deferrals_remaining, "next_scheduled_install": isoformat(row.next_scheduled_install),
            "reported_at": isoformat(row.reported_at)})
    return out
