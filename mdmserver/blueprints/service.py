"""Blueprints: the one writer of the blueprint tables, and their reconcile, set-based.

A blueprint does not queue profiles and apps itself: the profile and app reconciles
(``assignments.service.reconcile``, ``app_assignments.service.reconcile``) count the devices a
blueprint wants (``blueprints.scope``) among the devices that should have an item, beside direct and
group assignments. Reconciling a blueprint runs those reconciles for its items, in its order, so
their commands reach the queue (and the devices) in that order; then it queues its OS-update target
(``ScheduleOSUpdate``, once per target version and device) and records its members (who is in scope,
who left, who was unscoped once applied). Every step is a constant number of statements whatever the
number of devices.

Blueprints are reconciled in ``apply_order`` (then id) order, after the direct and group assignments
of the same change: a blueprint with a lower ``apply_order`` has its commands queued first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session

from mdmserver.app_assignments import service as app_assignments
from mdmserver.app_assignments.models import HELD as APP_HELD
from mdmserver.app_assignments.models import DeviceAppState
from mdmserver.apps.models import App
from mdmserver.assignments import service as assignments
from mdmserver.assignments.models import HELD as PROFILE_HELD
from mdmserver.assignments.models import DeviceProfileState
from mdmserver.audit.service import record_event
from mdmserver.commands.service import (
    RESULT_CONTEXT,
    QueuePlan,
    enqueue_where,
    open_blob,
    validate_command,
)
from mdmserver.db import UTCDateTime, utcnow
from mdmserver.ddm import service as ddm
from mdmserver.errors import Conflict, NotFound, UnprocessableEntity
from mdmserver.os_updates import service as os_updates
from mdmserver.pki.secretbox import SecretBox
from mdmserver.profiles.models import Profile
from mdmserver.protocol.plist import load_stored
from mdmserver.protocol.versions import version_tuple
from mdmserver.records.admission import AdmissionStatus
from mdmserver.records.blueprints import (
    LATEST,
    Blueprint,
    BlueprintApp,
    BlueprintMember,
    BlueprintOSUpdate,
    BlueprintProfile,
    BlueprintTarget,
    FirstItem,
    MemberStatus,
    OSUpdateStatus,
)
from mdmserver.records.commands import ACTIVE_STATUSES, Command, CommandStatus
from mdmserver.records.devices import AvailableOSUpdate, Device, Platform
from mdmserver.selection.blueprints import enforced_condition, is_active, member_in, scope_condition
from mdmserver.selection.conditions import manageable
from mdmserver.selection.resolve import resolve_targets
from mdmserver.selection.sql import in_values

log = logging.getLogger("mdmserver.blueprints")

#: the platforms ScheduleOSUpdate applies to (Apple: iOS, macOS, tvOS; iPadOS is iOS)
OS_UPDATE_PLATFORMS = (Platform.IOS.value, Platform.IPADOS.value, Platform.MACOS.value, Platform.TVOS.value)
_ACTIVE_COMMANDS = tuple(s.value for s in ACTIVE_STATUSES)


# --- lookups --------------------------------------------------------------------------------------


def get_blueprint(session: Session, blueprint_id: int) -> Blueprint:
    blueprint = session.get(Blueprint, blueprint_id)
    if blueprint is None:
        raise NotFound(f"no blueprint with id {blueprint_id}")
    return blueprint


def blueprints_query():
    return select(Blueprint)


def page_of_blueprints(session: Session, number: int, size: int) -> tuple[list[Blueprint], int]:
    """Page ``number`` (from 1) of the blueprints in ``apply_order``, and how many there are."""
    total = session.scalar(select(func.count()).select_from(Blueprint)) or 0
    rows = session.scalars(select(Blueprint).order_by(Blueprint.apply_order, Blueprint.id)
                           .offset((number - 1) * size).limit(size)).all()
    return list(rows), total


@dataclass
class Contents:
    """A blueprint's items and scope, as the resource shows them."""

    profile_ids: list[int]
    apps: list[dict[str, Any]]  # {"app_id", "options"}
    device_ids: list[int]
    group_ids: list[int]


def contents(session: Session, blueprint_ids: Sequence[int]) -> dict[int, Contents]:
    """The items and targets of these blueprints: three statements however many blueprints."""
    ids = list(blueprint_ids)
    result = {i: Contents([], [], [], []) for i in ids}
    if not ids:
        return result
    for row in session.execute(select(BlueprintProfile.blueprint_id, BlueprintProfile.profile_id)
                               .where(BlueprintProfile.blueprint_id.in_(ids))
                               .order_by(BlueprintProfile.blueprint_id, BlueprintProfile.position)):
        result[row.blueprint_id].profile_ids.append(row.profile_id)
    for row in session.execute(select(BlueprintApp.blueprint_id, BlueprintApp.app_id, BlueprintApp.options)
                               .where(BlueprintApp.blueprint_id.in_(ids))
                               .order_by(BlueprintApp.blueprint_id, BlueprintApp.position)):
        result[row.blueprint_id].apps.append({"app_id": row.app_id, "options": row.options or {}})
    for row in session.execute(select(BlueprintTarget.blueprint_id, BlueprintTarget.device_id,
                                      BlueprintTarget.group_id)
                               .where(BlueprintTarget.blueprint_id.in_(ids)).order_by(BlueprintTarget.id)):
        if row.device_id is not None:
            result[row.blueprint_id].device_ids.append(row.device_id)
        else:
            result[row.blueprint_id].group_ids.append(row.group_id)
    return result


# --- writing --------------------------------------------------------------------------------------

_PLAIN_FIELDS = ("name", "description", "enabled", "is_global", "apply_order", "first_item", "remove_if_no_scope",
                 "unscope_if_applied", "declarative_profiles", "start_on")


def _check_items(session: Session, values: dict[str, Any]) -> None:
    """422 with a pointer for each unknown profile or app, and install options an app refuses."""
    errors = []
    profile_ids = values.get("profiles")
    if profile_ids is not None:
        known = set(session.scalars(select(Profile.id).where(Profile.id.in_(profile_ids))))
        errors += [{"detail": f"no profile {p}", "pointer": f"/data/attributes/profiles/{i}"}
                   for i, p in enumerate(profile_ids) if p not in known]
    app_items = values.get("apps")
    if app_items is not None:
        apps = {a.id: a for a in session.scalars(select(App).where(App.id.in_([i["app_id"] for i in app_items])))}
        for i, item in enumerate(app_items):
            app = apps.get(item["app_id"])
            if app is None:
                errors.append({"detail": f"no app {item['app_id']}", "pointer": f"/data/attributes/apps/{i}/app_id"})
                continue
            try:
                app_assignments.check_options(app, item.get("options") or {})
            except UnprocessableEntity as exc:
                errors += [{"detail": e["detail"], "pointer": f"/data/attributes/apps/{i}{e.get('pointer', '')}"}
                           for e in exc.errors or [{"detail": exc.detail}]]
    if errors:
        raise UnprocessableEntity("invalid blueprint items; nothing was changed", errors=errors)


def _write_items(session: Session, blueprint: Blueprint, values: dict[str, Any],
                 targets: tuple[list[int], list[int]] | None) -> None:
    if values.get("profiles") is not None:
        session.execute(delete(BlueprintProfile).where(BlueprintProfile.blueprint_id == blueprint.id))
        if values["profiles"]:
            session.execute(insert(BlueprintProfile), [
                {"blueprint_id": blueprint.id, "profile_id": p, "position": i} for i, p in enumerate(values["profiles"])])
    if values.get("apps") is not None:
        session.execute(delete(BlueprintApp).where(BlueprintApp.blueprint_id == blueprint.id))
        if values["apps"]:
            session.execute(insert(BlueprintApp), [
                {"blueprint_id": blueprint.id, "app_id": a["app_id"], "position": i, "options": a.get("options") or {}}
                for i, a in enumerate(values["apps"])])
    if targets is not None:
        device_ids, group_ids = targets
        session.execute(delete(BlueprintTarget).where(BlueprintTarget.blueprint_id == blueprint.id))
        rows = [{"blueprint_id": blueprint.id, "device_id": d, "group_id": None} for d in device_ids]
        rows += [{"blueprint_id": blueprint.id, "device_id": None, "group_id": g} for g in group_ids]
        if rows:
            session.execute(insert(BlueprintTarget), rows)


def _targets(session: Session, values: dict[str, Any]) -> tuple[list[int], list[int]] | None:
    scope = values.get("scope")
    if scope is None:
        return None
    try:
        return resolve_targets(session, scope.get("devices") or [], scope.get("groups") or [])
    except UnprocessableEntity as exc:
        raise UnprocessableEntity(exc.detail, errors=[
            {"detail": e["detail"], "pointer": "/data/attributes/scope" + (e.get("pointer") or "")}
            for e in exc.errors or [{"detail": exc.detail}]]) from None


def _name_taken(session: Session, name: str, blueprint_id: int | None) -> None:
    other = session.scalar(select(Blueprint.id).where(Blueprint.name == name))
    if other is not None and other != blueprint_id:
        raise Conflict(f"a blueprint named {name!r} exists (id {other})")


def _apply_os_update(blueprint: Blueprint, os_update: dict[str, Any] | None) -> None:
    if os_update is None:
        blueprint.os_update_version = None
        blueprint.os_update_deadline = None
        return
    blueprint.os_update_version = os_update["version"]
    blueprint.os_update_deadline = os_update.get("deadline")
    blueprint.os_update_install_action = os_update.get("install_action") or "Default"


@dataclass(frozen=True)
class Collaborators:
    """What reconciling needs besides the session: the audit actor, the secret box, the public URL
    (app manifests)."""

    actor: str | None
    box: SecretBox
    public_url: str


def create_blueprint(session: Session, values: dict[str, Any], *, with_: Collaborators) -> tuple[Blueprint, dict]:
    """Create a blueprint from ``schemas.BlueprintSchema`` values, then reconcile it."""
    _name_taken(session, values["name"], None)
    _check_items(session, values)
    targets = _targets(session, values)
    now = utcnow()
    blueprint = Blueprint(created_by=with_.actor, created_at=now, updated_at=now)
    for name in _PLAIN_FIELDS:
        if name in values:
            setattr(blueprint, name, values[name])
    _apply_os_update(blueprint, values.get("os_update"))
    session.add(blueprint)
    session.flush()
    _write_items(session, blueprint, values, targets)
    record_event(session, "blueprint:create", "blueprints", blueprint.id, {"name": blueprint.name}, actor=with_.actor)
    return blueprint, reconcile(session, blueprint, with_=with_)


def update_blueprint(
    session: Session, blueprint: Blueprint, values: dict[str, Any], *, with_: Collaborators
) -> tuple[Blueprint, dict]:
    """Change the given fields (lists given are replaced whole), then reconcile: items taken out of the
    blueprint are reconciled too, so they leave the devices nothing else wants them on."""
    if "name" in values:
        _name_taken(session, values["name"], blueprint.id)
    _check_items(session, values)
    targets = _targets(session, values)
    before = contents(session, [blueprint.id])[blueprint.id]
    for name in _PLAIN_FIELDS:
        if name in values:
            setattr(blueprint, name, values[name])
    if "os_update" in values:
        _apply_os_update(blueprint, values["os_update"])
    blueprint.updated_at = utcnow()
    session.flush()
    _write_items(session, blueprint, values, targets)
    record_event(session, "blueprint:update", "blueprints", blueprint.id, {"fields": sorted(values)},
                 actor=with_.actor)
    return blueprint, reconcile(session, blueprint, with_=with_, formerly=before)


def delete_blueprint(session: Session, blueprint: Blueprint, *, with_: Collaborators) -> dict[str, int]:
    """Delete a blueprint; its items leave the devices where nothing else wants them."""
    before = contents(session, [blueprint.id])[blueprint.id]
    blueprint_id = blueprint.id
    session.execute(delete(Blueprint).where(Blueprint.id == blueprint_id))
    session.expunge(blueprint)
    record_event(session, "blueprint:delete", "blueprints", blueprint_id, {}, actor=with_.actor)
    counts = _new_counts()
    _reconcile_profiles(session, before.profile_ids, None, with_, counts)
    _reconcile_apps(session, [a["app_id"] for a in before.apps], None, with_, counts)
    counts["declarative_management_queued"] = _notify(session, None, with_)
    return counts


def drop_profile(session: Session, profile: Profile, *, with_: Collaborators) -> int:
    """Take a profile that is being deleted out of every blueprint, and queue RemoveProfile where
    nothing else wants it (and DeclarativeManagement where it was a declaration). Returns how many
    blueprints held it."""
    held = session.execute(delete(BlueprintProfile).where(BlueprintProfile.profile_id == profile.id)).rowcount or 0
    if held:
        assignments.reconcile(session, profile, actor=with_.actor, box=with_.box)
        _notify(session, None, with_)
    return held


def profile_revised(session: Session, *, with_: Collaborators) -> int:
    """A profile changed (a new revision): the devices that get it as a declaration are told (its URL,
    hence the declaration's server token, changed). Returns how many DeclarativeManagement were queued."""
    return _notify(session, None, with_)


# --- reconcile ------------------------------------------------------------------------------------


def _notify(session: Session, device_ids: Sequence[int] | None, with_: Collaborators) -> int:
    """Tell the devices whose declaration set changed (``DeclarativeManagement``, once per change)."""
    return ddm.sync(session, device_ids, actor=with_.actor, links=ddm.Links(with_.public_url, with_.box))


def _new_counts() -> dict[str, int]:
    return {"profile_install_queued": 0, "profile_removal_queued": 0, "app_install_queued": 0,
            "app_removal_queued": 0, "os_update_queued": 0, "os_update_checks_queued": 0}


def _reconcile_profiles(session: Session, profile_ids: Sequence[int], device_ids: Sequence[int] | None,
                        with_: Collaborators, counts: dict[str, int]) -> None:
    for profile_id in dict.fromkeys(profile_ids):
        profile = session.get(Profile, profile_id)
        if profile is None:
            continue
        done = assignments.reconcile(session, profile, actor=with_.actor, box=with_.box, device_ids=device_ids)
        counts["profile_install_queued"] += done["install_queued"]
        counts["profile_removal_queued"] += done["removal_queued"]


def _reconcile_apps(session: Session, app_ids: Sequence[int], device_ids: Sequence[int] | None,
                    with_: Collaborators, counts: dict[str, int]) -> None:
    for app_id in dict.fromkeys(app_ids):
        app = session.get(App, app_id)
        if app is None:
            continue
        done = app_assignments.reconcile(session, app, actor=with_.actor, box=with_.box, public_url=with_.public_url,
                                         device_ids=device_ids)
        counts["app_install_queued"] += done["install_queued"]
        counts["app_removal_queued"] += done["removal_queued"]


def _device_scope(session: Session, device_ids: Sequence[int] | None) -> ColumnElement[bool]:
    return in_values(session, Device.id, device_ids, integer=True) if device_ids is not None else true()


#: ``UpdateResults[].Status`` values (Apple's enum) that say the update will not happen
UPDATE_FAILURES = frozenset({
    "DownloadFailed", "DownloadRequiresComputer", "DownloadInsufficientSpace", "DownloadInsufficientPower",
    "DownloadInsufficientNetwork", "InstallInsufficientSpace", "InstallInsufficientPower",
    "InstallPhoneCallInProgress", "InstallFailed",
})


def _update_results(blob: bytes | None, box: SecretBox) -> list[dict[str, Any]]:
    """The ``UpdateResults`` entries of a ScheduleOSUpdate answer that have a ``Status`` (none when
    unreadable)."""
    if blob is None:
        return []
    try:
        answer = load_stored(open_blob(bytes(blob), box, RESULT_CONTEXT))
    except ValueError:
        return []
    results = answer.get("UpdateResults") if isinstance(answer, dict) else None
    return [r for r in results or [] if isinstance(r, dict) and isinstance(r.get("Status"), str)]


def _error_text(result: dict[str, Any]) -> str:
    """``InstallAction`` ``Error``: the first description of its ``ErrorChain``, else the status."""
    chain = result.get("ErrorChain")
    first = chain[0] if isinstance(chain, list) and chain and isinstance(chain[0], dict) else {}
    text = first.get("USEnglishDescription") or first.get("LocalizedDescription")
    return text if isinstance(text, str) and text else result["Status"]


def _answered(row: Any, box: SecretBox) -> tuple[str, str]:
    """The state and detail a ScheduleOSUpdate answer gives: failed when the command was refused, or
    an ``UpdateResults`` entry has a failure status or the ``Error`` install action (Apple's form for an
    update the device cannot schedule)."""
    if row.command_status != CommandStatus.ACKNOWLEDGED.value:
        return OSUpdateStatus.FAILED.value, f"ScheduleOSUpdate: {row.command_status}"
    results = _update_results(row.result, box)
    statuses = [r["Status"] for r in results]
    errors = [_error_text(r) for r in results if r.get("InstallAction") == "Error"]
    if errors:
        return OSUpdateStatus.FAILED.value, "UpdateResults: " + "; ".join(errors)
    failed = [s for s in statuses if s in UPDATE_FAILURES]
    if failed:
        return OSUpdateStatus.FAILED.value, "UpdateResults: " + ", ".join(failed)
    if statuses:
        return OSUpdateStatus.SCHEDULED.value, "UpdateResults: " + ", ".join(statuses)
    return OSUpdateStatus.SCHEDULED.value, "the device accepted ScheduleOSUpdate"


def refresh_os_updates(session: Session, blueprint_ids: Sequence[int] | None = None,
                       device_ids: Sequence[int] | None = None, *, box: SecretBox) -> int:
    """Bring OS-update states up to date: the ScheduleOSUpdate answers (acknowledged → scheduled, with
    ``UpdateResults``' status; a failure status, a refusal or a dropped command → failed) and the OS
    version the devices report (at or above the target → installed). One ``SELECT`` of the unfinished
    states and one ``executemany`` ``UPDATE``."""
    state = BlueprintOSUpdate
    scope = state.blueprint_id.in_(list(blueprint_ids)) if blueprint_ids is not None else true()
    if device_ids is not None:
        scope = and_(scope, in_values(session, state.device_id, device_ids, integer=True))
    rows = session.execute(
        select(state.blueprint_id, state.device_id, state.target_version, state.status, state.detail,
               state.command_uuid, Device.os_version, Command.status.label("command_status"), Command.result)
        .join(Device, Device.id == state.device_id)
        .outerjoin(Command, Command.uuid == state.command_uuid)
        .where(scope, or_(state.status.in_([OSUpdateStatus.QUEUED.value, OSUpdateStatus.SCHEDULED.value]),
                          # a declaration's failure is the device's latest word, not the end: it retries
                          and_(state.status == OSUpdateStatus.FAILED.value, state.command_uuid.is_(None))))
    ).all()
    now = utcnow()
    declarative = [row.device_id for row in rows if row.command_uuid is None]
    reports = ddm.os_update_reports(session, declarative) if declarative else {}
    changes = []
    for row in rows:
        status, detail = row.status, row.detail
        os_version = row.os_version
        report = reports.get(row.device_id)
        if report is not None and report.os_version is not None and (
                version_tuple(os_version) is None
                or (version_tuple(report.os_version) or ()) > (version_tuple(os_version) or ())):
            os_version = report.os_version
        target, reported = version_tuple(row.target_version), version_tuple(os_version)
        if target is not None and reported is not None and reported >= target:
            status, detail = OSUpdateStatus.INSTALLED.value, f"the device reports {os_version}"
        elif row.command_uuid is None and report is not None and report.state is not None:
            status, detail = report.state
        elif row.status == OSUpdateStatus.QUEUED.value and row.command_status not in (None, *_ACTIVE_COMMANDS):
            status, detail = _answered(row, box)
        if (status, detail) != (row.status, row.detail):
            changes.append({"b": row.blueprint_id, "d": row.device_id, "s": status, "t": detail, "u": now})
    if changes:
        table = BlueprintOSUpdate.__table__
        session.connection().execute(
            table.update()
            .where(table.c.blueprint_id == bindparam("b"), table.c.device_id == bindparam("d"))
            .values(status=bindparam("s"), detail=bindparam("t"), updated_at=bindparam("u")),
            changes,
        )
    return len(changes)


def _os_update_plans(session: Session, blueprint: Blueprint, device_ids: Sequence[int] | None,
                     now: datetime) -> list[tuple[str, dict[str, Any], list[int]]]:
    """``(target version, Updates entry, devices)`` for the devices that should get ScheduleOSUpdate now:
    enforced, manageable, of a platform that takes it, reporting a version below the target, and not
    yet sent this target. ``latest``: the newest update each device reports in AvailableOSUpdates."""
    target = blueprint.os_update_version
    if target is None or not is_active(blueprint, now):
        return []
    # devices that get the target declaratively never get ScheduleOSUpdate for it (docs/ddm.md)
    declarative = list(ddm.os_targets(session, blueprint, device_ids, now, accepted=False))
    sent = exists().where(BlueprintOSUpdate.blueprint_id == blueprint.id, BlueprintOSUpdate.device_id == Device.id,
                          BlueprintOSUpdate.target_version == (Device.os_version if target == LATEST else target))
    candidates = and_(_device_scope(session, device_ids), enforced_condition(session, blueprint, now), manageable(),
                      Device.platform.in_(OS_UPDATE_PLATFORMS))
    if declarative:
        candidates = and_(candidates, not_(in_values(session, Device.id, declarative, integer=True)))
    action = blueprint.os_update_install_action
    groups: dict[tuple[str, str | None], list[int]] = {}
    if target == LATEST:
        rows = session.execute(
            select(Device.id, Device.os_version, AvailableOSUpdate.version, AvailableOSUpdate.product_key)
            .join(AvailableOSUpdate, AvailableOSUpdate.device_id == Device.id).where(candidates)
        ).all()
        newest: dict[int, tuple[tuple[int, ...], str, str | None, str | None]] = {}
        for row in rows:
            offered, reported = version_tuple(row.version), version_tuple(row.os_version)
            if offered is None or reported is None or offered <= reported:
                continue
            if row.id not in newest or offered > newest[row.id][0]:
                newest[row.id] = (offered, row.version, row.product_key, row.os_version)
        already = set(session.execute(
            select(BlueprintOSUpdate.device_id, BlueprintOSUpdate.target_version)
            .where(BlueprintOSUpdate.blueprint_id == blueprint.id,
                   in_values(session, BlueprintOSUpdate.device_id, list(newest), integer=True))
        ).all()) if newest else set()
        for device_id, (_, version, product_key, _reported) in newest.items():
            if (device_id, version) not in already:
                groups.setdefault((version, product_key), []).append(device_id)
    else:
        wanted = version_tuple(target)
        rows = session.execute(select(Device.id, Device.os_version).where(candidates, not_(sent))).all()
        due = [row.id for row in rows if (v := version_tuple(row.os_version)) is not None and v < wanted]
        if due:
            groups[(target, None)] = due
    plans = []
    for (version, product_key), ids in groups.items():
        entry: dict[str, Any] = {"InstallAction": action, "ProductVersion": version}
        if product_key:
            entry["ProductKey"] = product_key
        plans.append((version, entry, ids))
    return plans


def _record_declarative_targets(session: Session, blueprint: Blueprint, device_ids: Sequence[int] | None,
                                now: datetime) -> None:
    """A state row (no command) for each device that gets the OS target as a declaration and has none for
    this target version yet: its state then follows the device's status reports (:func:`refresh_os_updates`)."""
    targets = {d: v for d, v in ddm.os_targets(session, blueprint, device_ids, now).items() if v is not None}
    if not targets:
        return
    have = set(session.execute(
        select(BlueprintOSUpdate.device_id, BlueprintOSUpdate.target_version)
        .where(BlueprintOSUpdate.blueprint_id == blueprint.id,
               in_values(session, BlueprintOSUpdate.device_id, list(targets), integer=True))).all())
    due = {d: v for d, v in targets.items() if (d, v) not in have}
    if not due:
        return
    session.execute(delete(BlueprintOSUpdate).where(
        BlueprintOSUpdate.blueprint_id == blueprint.id,
        in_values(session, BlueprintOSUpdate.device_id, list(due), integer=True)))
    session.execute(insert(BlueprintOSUpdate), [
        {"blueprint_id": blueprint.id, "device_id": d, "target_version": v, "status": OSUpdateStatus.QUEUED.value,
         "command_uuid": None, "detail": f"declaration {ddm.enforcement_id(blueprint.id)}", "updated_at": now}
        for d, v in due.items()])


def _queue_os_update(session: Session, blueprint: Blueprint, device_ids: Sequence[int] | None,
                     with_: Collaborators, counts: dict[str, int], now: datetime) -> None:
    refresh_os_updates(session, [blueprint.id], device_ids, box=with_.box)
    _record_declarative_targets(session, blueprint, device_ids, now)
    if blueprint.os_update_version is not None and device_ids is None:
        # the whole blueprint (the upkeep's pass, an admin's reconcile; not a device's own check-in, whose
        # answers are the news): how the accepted updates go, and the version they bring, at most one of
        # each pending per device
        checks = os_updates.queue_progress_checks(session, blueprint.id, actor=with_.actor, now=now, box=with_.box)
        counts["os_update_checks_queued"] += checks["OSUpdateStatus"]
    plans = _os_update_plans(session, blueprint, device_ids, now)
    if not plans:
        return
    queue = [QueuePlan("ScheduleOSUpdate", validate_command("ScheduleOSUpdate", {"Updates": [entry]}),
                       condition=in_values(session, Device.id, ids, integer=True))
             for _, entry, ids in plans]
    queued = enqueue_where(session, manageable(), queue, actor=with_.actor, now=now, box=with_.box)
    rows = [{"blueprint_id": blueprint.id, "device_id": d, "target_version": version,
             "status": OSUpdateStatus.QUEUED.value, "command_uuid": u, "detail": None, "updated_at": now}
            for (version, _, _), pairs in zip(plans, queued, strict=True) for d, u in pairs]
    if rows:
        touched = [r["device_id"] for r in rows]
        session.execute(delete(BlueprintOSUpdate).where(
            BlueprintOSUpdate.blueprint_id == blueprint.id,
            in_values(session, BlueprintOSUpdate.device_id, touched, integer=True)))
        session.execute(insert(BlueprintOSUpdate), rows)
    counts["os_update_queued"] += len(rows)


def _sync_members(session: Session, blueprint: Blueprint, device_ids: Sequence[int] | None, now: datetime) -> None:
    """Record who is in the scope now (new members), who left, and, for ``unscope_if_applied``, who had
    every profile and app of the blueprint queued or installed: unscoped for good (four statements)."""
    scope = _device_scope(session, device_ids)
    if not is_active(blueprint, now):
        in_scope: ColumnElement[bool] = false()  # nothing is in the scope of a blueprint at rest
    else:
        in_scope = and_(scope_condition(session, blueprint), manageable())
    session.execute(insert(BlueprintMember).from_select(
        ["blueprint_id", "device_id", "status", "entered_at", "updated_at"],
        select(literal(blueprint.id), Device.id, literal(MemberStatus.IN_SCOPE.value), literal(now, UTCDateTime()),
               literal(now, UTCDateTime()))
        .where(scope, in_scope, not_(member_in(blueprint.id)))
    ))
    member_device = select(Device.id).where(scope, in_scope)
    session.execute(
        update(BlueprintMember)
        .where(BlueprintMember.blueprint_id == blueprint.id, BlueprintMember.status == MemberStatus.LEFT.value,
               BlueprintMember.device_id.in_(member_device))
        .values(status=MemberStatus.IN_SCOPE.value, updated_at=now)
    )
    session.execute(
        update(BlueprintMember)
        .where(BlueprintMember.blueprint_id == blueprint.id, BlueprintMember.status == MemberStatus.IN_SCOPE.value,
               BlueprintMember.device_id.in_(select(Device.id).where(scope)),
               BlueprintMember.device_id.not_in(member_device))
        .values(status=MemberStatus.LEFT.value, updated_at=now)
    )
    if blueprint.unscope_if_applied and is_active(blueprint, now):
        items = contents(session, [blueprint.id])[blueprint.id]
        applied = [exists().where(DeviceProfileState.device_id == BlueprintMember.device_id,
                                  DeviceProfileState.profile_id == p, DeviceProfileState.status.in_(PROFILE_HELD))
                   for p in items.profile_ids]
        applied += [exists().where(DeviceAppState.device_id == BlueprintMember.device_id,
                                   DeviceAppState.app_id == a["app_id"], DeviceAppState.status.in_(APP_HELD))
                    for a in items.apps]
        if blueprint.os_update_version is not None:
            applied.append(in_values(session, BlueprintMember.device_id, _os_target_settled(session, blueprint, scope),
                                     integer=True))
        session.execute(
            update(BlueprintMember)
            .where(BlueprintMember.blueprint_id == blueprint.id, BlueprintMember.status == MemberStatus.IN_SCOPE.value,
                   BlueprintMember.device_id.in_(select(Device.id).where(scope)), *applied)
            .values(status=MemberStatus.UNSCOPED.value, updated_at=now)
        )


def _os_target_settled(session: Session, blueprint: Blueprint, scope: ColumnElement[bool]) -> list[int]:
    """Members in scope for whom the OS target is done with: sent (a state row), or not needed (the
    device reports the target or later; with ``latest``, any known version: what it was offered was sent
    in this pass). A device whose version is unknown is not settled."""
    target = version_tuple(blueprint.os_update_version)
    rows = session.execute(
        select(Device.id, Device.os_version, BlueprintOSUpdate.device_id.label("sent"))
        .join(BlueprintMember, and_(BlueprintMember.device_id == Device.id,
                                    BlueprintMember.blueprint_id == blueprint.id))
        .outerjoin(BlueprintOSUpdate, and_(BlueprintOSUpdate.device_id == Device.id,
                                           BlueprintOSUpdate.blueprint_id == blueprint.id))
        .where(scope, BlueprintMember.status == MemberStatus.IN_SCOPE.value)
    ).all()
    settled = []
    for row in rows:
        reported = version_tuple(row.os_version)
        if row.sent is not None or (reported is not None and (target is None or reported >= target)):
            settled.append(row.id)
    return settled


#: the order of a blueprint's steps, by its ``first_item``
_ORDER: dict[str, tuple[str, ...]] = {
    FirstItem.PROFILES.value: ("profiles", "apps", "os_update"),
    FirstItem.APPS.value: ("apps", "profiles", "os_update"),
    FirstItem.OS_UPDATE.value: ("os_update", "profiles", "apps"),
}


def reconcile(
    session: Session, blueprint: Blueprint, *, with_: Collaborators, device_ids: Sequence[int] | None = None,
    formerly: Contents | None = None, notify: bool = True,
) -> dict[str, int]:
    """Queue what the blueprint says (profiles, apps, OS update, in its order) where it applies, remove
    what it no longer wants where nothing else wants it, and record its members. ``device_ids`` limits
    the work to those devices; ``formerly``: the items before a change (they are reconciled too).
    ``notify``: then tell the devices whose declaration set changed (``DeclarativeManagement``)."""
    now = utcnow()
    items = contents(session, [blueprint.id])[blueprint.id]
    profile_ids = items.profile_ids + (formerly.profile_ids if formerly else [])
    app_ids = [a["app_id"] for a in items.apps + (formerly.apps if formerly else [])]
    counts = _new_counts()
    steps: dict[str, Callable[[], None]] = {
        "profiles": lambda: _reconcile_profiles(session, profile_ids, device_ids, with_, counts),
        "apps": lambda: _reconcile_apps(session, app_ids, device_ids, with_, counts),
        "os_update": lambda: _queue_os_update(session, blueprint, device_ids, with_, counts, now),
    }
    for step in _ORDER[blueprint.first_item]:
        steps[step]()
    _sync_members(session, blueprint, device_ids, now)
    if notify:
        counts["declarative_management_queued"] = _notify(session, device_ids, with_)
    if any(counts.values()):
        record_event(session, "blueprint:reconcile", "blueprints", blueprint.id,
                     {**counts, **({"devices": len(device_ids)} if device_ids else {})}, actor=with_.actor)
    return counts


def _reconcile_many(session: Session, device_ids: Sequence[int] | None, with_: Collaborators) -> dict[str, int]:
    totals = {"blueprints": 0, **_new_counts()}
    ids = session.scalars(select(Blueprint.id).order_by(Blueprint.apply_order, Blueprint.id)).all()
    for blueprint_id in ids:
        try:
            counts = reconcile(session, session.get(Blueprint, blueprint_id), with_=with_, device_ids=device_ids,
                               notify=False)
        except Conflict as exc:
            # a group that cannot be evaluated must not stop the other blueprints, nor a device's check-in
            log.warning("blueprint %s not reconciled: %s", blueprint_id, exc.detail)
            continue
        totals["blueprints"] += 1
        for key, value in counts.items():
            totals[key] += value
    totals["declarative_management_queued"] = _notify(session, device_ids, with_)
    return totals


def reconcile_all(session: Session, *, with_: Collaborators) -> dict[str, int]:
    """Every blueprint, lowest ``apply_order`` first: after membership changes, and periodically (the
    upkeep job), which is also when a blueprint whose ``start_on`` has come starts."""
    return _reconcile_many(session, None, with_)


def reconcile_devices(
    session: Session, device_ids: Sequence[int], *, with_: Collaborators, new_enrollment: bool = False,
) -> dict[str, int]:
    """Every blueprint for these devices only (their enrollment, admission, or an inventory change that
    moves them in or out of a smart group); only admitted devices get commands. ``new_enrollment``: the
    devices enrolled (again): what an earlier enrollment was given is gone with it, so their membership
    and OS-update history are forgotten (a one-shot blueprint applies to the new enrollment again)."""
    ids = list(dict.fromkeys(device_ids))
    if new_enrollment and ids:
        session.execute(delete(BlueprintMember).where(in_values(session, BlueprintMember.device_id, ids,
                                                                integer=True)))
        session.execute(delete(BlueprintOSUpdate).where(in_values(session, BlueprintOSUpdate.device_id, ids,
                                                                  integer=True)))
        ddm.forget_enrollments(session, ids)
    admitted = list(session.scalars(
        select(Device.id).where(in_values(session, Device.id, ids, integer=True),
                                Device.admission_status == AdmissionStatus.ACCEPTED.value)))
    if not admitted:
        return {"blueprints": 0, **_new_counts(), "declarative_management_queued": 0}
    return _reconcile_many(session, admitted, with_)


# --- per-device state -----------------------------------------------------------------------------

#: a profile's or an app's state (``DeviceProfileState``, ``DeviceAppState``) as a blueprint item shows it
ITEM_STATES: dict[str | None, str] = {
    None: "pending",
    "scheduled": "queued",
    "installing": "queued",
    "installed": "installed",
    "failed": "failed",
    "removal_scheduled": "removal_queued",
    "removed": "removed",
}
_OS_ITEM_STATES = {OSUpdateStatus.QUEUED.value: "queued", OSUpdateStatus.SCHEDULED.value: "queued",
                   OSUpdateStatus.INSTALLED.value: "installed", OSUpdateStatus.FAILED.value: "failed"}


def members_query(blueprint_id: int | None = None, device_id: int | None = None):
    stmt = select(BlueprintMember)
    if blueprint_id is not None:
        stmt = stmt.where(BlueprintMember.blueprint_id == blueprint_id)
    if device_id is not None:
        stmt = stmt.where(BlueprintMember.device_id == device_id)
    return stmt


def refresh_states(session: Session, blueprint_ids: Sequence[int], device_ids: Sequence[int] | None,
                   box: SecretBox) -> None:
    """Bring the items' states up to date from the queue's answers and the devices' reports."""
    items = contents(session, blueprint_ids)
    profile_ids = sorted({p for c in items.values() for p in c.profile_ids})
    app_ids = sorted({a["app_id"] for c in items.values() for a in c.apps})
    if profile_ids:
        assignments.refresh_states(session, profile_ids, device_ids)
    if app_ids:
        app_assignments.refresh_states(session, app_ids, device_ids, box=box)
    refresh_os_updates(session, blueprint_ids, device_ids, box=box)


def device_states(session: Session, members: Sequence[BlueprintMember]) -> list[dict[str, Any]]:
    """Each member's items with their state: nine statements for a page of members, whatever its size."""
    if not members:
        return []
    blueprint_ids = sorted({m.blueprint_id for m in members})
    device_ids = sorted({m.device_id for m in members})
    items = contents(session, blueprint_ids)
    blueprints = {b.id: b for b in session.scalars(select(Blueprint).where(Blueprint.id.in_(blueprint_ids)))}
    profile_ids = {p for c in items.values() for p in c.profile_ids}
    app_ids = {a["app_id"] for c in items.values() for a in c.apps}
    in_devices = in_values(session, DeviceProfileState.device_id, device_ids, integer=True)
    profiles = {(r.device_id, r.profile_id): r for r in session.execute(
        select(DeviceProfileState.device_id, DeviceProfileState.profile_id, DeviceProfileState.status,
               DeviceProfileState.detail)
        .where(in_devices, DeviceProfileState.profile_id.in_(profile_ids or [0])))}
    apps = {(r.device_id, r.app_id): r for r in session.execute(
        select(DeviceAppState.device_id, DeviceAppState.app_id, DeviceAppState.status, DeviceAppState.detail)
        .where(in_values(session, DeviceAppState.device_id, device_ids, integer=True),
               DeviceAppState.app_id.in_(app_ids or [0])))}
    os_rows = {(r.blueprint_id, r.device_id): r for r in session.scalars(
        select(BlueprintOSUpdate).where(BlueprintOSUpdate.blueprint_id.in_(blueprint_ids),
                                        in_values(session, BlueprintOSUpdate.device_id, device_ids, integer=True)))}
    versions = dict(session.execute(select(Device.id, Device.os_version)
                                    .where(in_values(session, Device.id, device_ids, integer=True))).all())
    progress = os_updates.progress_of(session, device_ids)
    result = []
    for member in members:
        blueprint, content, device_id = blueprints[member.blueprint_id], items[member.blueprint_id], member.device_id

        def item(row: Any) -> dict[str, Any]:
            return {"state": ITEM_STATES.get(row.status if row else None, "pending"),
                    "detail": row.detail if row else None}

        os_update = None
        if blueprint.os_update_version is not None or (blueprint.id, device_id) in os_rows:
            row = os_rows.get((blueprint.id, device_id))
            target, reported = version_tuple(blueprint.os_update_version), version_tuple(versions.get(device_id))
            if row is not None:
                os_update = {"target_version": row.target_version, "state": _OS_ITEM_STATES[row.status],
                             "detail": row.detail, "command_uuid": row.command_uuid}
            elif target is not None and reported is not None and reported >= target:
                os_update = {"target_version": blueprint.os_update_version, "state": "installed",
                             "detail": f"the device reports {versions.get(device_id)}", "command_uuid": None}
            else:
                os_update = {"target_version": blueprint.os_update_version, "state": "pending",
                             "detail": None, "command_uuid": None}
            # what the device's last OSUpdateStatus answer lists (download progress, phase, deferrals)
            os_update["progress"] = progress.get(device_id, [])
        result.append({
            "blueprint_id": blueprint.id, "device_id": device_id, "membership": member.status,
            "entered_at": member.entered_at, "os_version": versions.get(device_id),
            "profiles": [{"profile_id": str(p), **item(profiles.get((device_id, p)))} for p in content.profile_ids],
            "apps": [{"app_id": str(a["app_id"]), **item(apps.get((device_id, a["app_id"])))} for a in content.apps],
            "os_update": os_update,
        })
    return result
