"""App assignment, reconciliation to the command queue, and install states, set-based.

The one writer of ``app_assignments`` and ``device_app_states``. An app's *desired* devices are the
manageable devices of its platform (an ``ios`` app: iOS and iPadOS devices) that are assigned directly
or belong to an assigned group (subgroups and smart groups included). ``reconcile`` compares them with
each device's state and queues, with one ``INSERT … SELECT`` per distinct set of install options:

- iOS/iPadOS: ``InstallApplication`` (enterprise: ``ManifestURL``; App Store: ``iTunesStoreID`` and/or
  ``Identifier`` with ``Options.PurchaseMethod`` 0, i.e. without volume-purchase licences);
- macOS: ``InstallEnterpriseApplication`` with the inline ``Manifest`` (enterprise ``.pkg``), or
  ``InstallApplication`` (App Store);
- ``RemoveApplication`` where the app is no longer desired and is scheduled, installing or installed;
- the install again (an update) where the device has it installed from an older catalogue revision.

**Overlapping assignments.** A device assigned directly gets its direct assignment's options; a device
reached only through groups gets the options of the oldest of those group assignments (``created_at``,
then id); a device reached only through blueprints (``selection/blueprints.py``), the options of the one
with the lowest ``apply_order``. The app is removed only where nothing wants it (docs/blueprints.md). Options are read when a command is queued: changing them takes unassigning and assigning
again, and reaches the devices with their next install or update.

States follow the queue's results and what the devices report (``refresh_states``), which runs before
states are read and before reconciling, never on the device's connect path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    delete,
    exists,
    false,
    insert,
    not_,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.orm import Session, aliased

from mdmserver.app_assignments.models import HELD, AppAssignment, AppInstallStatus, DeviceAppState
from mdmserver.apps.links import manifest_url
from mdmserver.apps.manifests import app_manifest
from mdmserver.apps.models import App, AppSource
from mdmserver.audit.service import record_event
from mdmserver.commands.service import (
    RESULT_CONTEXT,
    QueuePlan,
    enqueue_where,
    open_blob,
    validate_command,
)
from mdmserver.db import UTCDateTime, utcnow
from mdmserver.errors import Conflict, NotFound, UnprocessableEntity
from mdmserver.pki.secretbox import SecretBox
from mdmserver.protocol.inventory import parse_managed_applications
from mdmserver.protocol.plist import ProtocolError, load_stored
from mdmserver.records.admission import AdmissionStatus
from mdmserver.records.commands import ACTIVE_STATUSES, Command, CommandStatus
from mdmserver.records.devices import Device, InstalledApplication, Platform
from mdmserver.selection.blueprints import app_wanted
from mdmserver.selection.conditions import manageable
from mdmserver.selection.filters import group_condition
from mdmserver.selection.resolve import resolve_targets
from mdmserver.selection.sql import in_values
from mdmserver.webhooks import events as webhook_events
from mdmserver.webhooks.events import DeviceRef, FailedInstall

log = logging.getLogger("mdmserver.app_assignments")

Status = AppInstallStatus

#: the device platforms an app of a catalogue platform installs on
DEVICE_PLATFORMS: dict[str, tuple[str, ...]] = {
    Platform.IOS.value: (Platform.IOS.value, Platform.IPADOS.value),
    Platform.MACOS.value: (Platform.MACOS.value,),
}
#: states that have (or will have) the app on the device: RemoveApplication applies when no longer desired
PRESENT = (Status.SCHEDULED.value, Status.INSTALLING.value, Status.INSTALLED.value)
#: states the devices' inventory answers can move
REPORTABLE = (Status.SCHEDULED.value, Status.INSTALLING.value, Status.INSTALLED.value, Status.FAILED.value)
#: states waiting for their command's answer
WAITING = (Status.SCHEDULED.value, Status.REMOVAL_SCHEDULED.value)
_ACTIVE_COMMANDS = tuple(s.value for s in ACTIVE_STATUSES)

#: Apple's app states (InstallApplication's ``State``, ManagedApplicationList's ``Status``) → ours
APPLE_STATES: dict[str, Status] = {
    "Managed": Status.INSTALLED,
    **{name: Status.INSTALLING for name in (
        "Queued", "NeedsRedemption", "Redeeming", "Prompting", "PromptingForLogin", "ValidatingPurchase",
        "PromptingForUpdate", "PromptingForUpdateLogin", "PromptingForManagement", "ValidatingUpdate",
        "Updating", "Installing", "Unknown")},
    **{name: Status.FAILED for name in (
        "ManagedButUninstalled", "UserInstalledApp", "UserRejected", "UpdateRejected", "ManagementRejected",
        "Failed")},
}

#: the commands the refresh action queues to learn the apps' states
REFRESH_COMMANDS = ("ManagedApplicationList", "InstalledApplicationList")


# --- lookups --------------------------------------------------------------------------------------


def list_assignments(session: Session, app: App) -> list[AppAssignment]:
    return list(session.scalars(
        select(AppAssignment).where(AppAssignment.app_id == app.id).order_by(AppAssignment.id)))


def get_assignment(session: Session, app: App, assignment_id: int) -> AppAssignment:
    row = session.scalar(select(AppAssignment).where(AppAssignment.id == assignment_id,
                                                     AppAssignment.app_id == app.id))
    if row is None:
        raise NotFound(f"app {app.id} has no assignment {assignment_id}")
    return row


def platform_condition(app: App) -> ColumnElement[bool]:
    """SQL on ``Device``: the device's platform runs the app."""
    return Device.platform.in_(DEVICE_PLATFORMS.get(app.platform, (app.platform,)))


# --- the commands ---------------------------------------------------------------------------------


def _store_identity(app: App) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if app.itunes_store_id is not None:
        params["iTunesStoreID"] = app.itunes_store_id
    if app.bundle_id is not None:
        params["Identifier"] = app.bundle_id
    return params


def check_options(app: App, options: dict[str, Any]) -> None:
    """422 for options the app's platform does not know (Apple's keys per platform)."""
    errors = []
    if app.platform == Platform.MACOS.value:
        for name in ("removable", "attributes"):
            if name in options:
                errors.append({"detail": f"{name} is not available for macOS apps", "pointer": f"/options/{name}"})
        if options.get("management_flags") not in (None, 0, 1):
            errors.append({"detail": "macOS knows management flag 1 only (0 or 1)",
                           "pointer": "/options/management_flags"})
    elif "install_as_managed" in options:
        errors.append({"detail": "install_as_managed is for macOS apps (iOS installs are managed)",
                       "pointer": "/options/install_as_managed"})
    if errors:
        raise UnprocessableEntity("invalid install options; nothing was changed", errors=errors)


def install_command(app: App, options: dict[str, Any], public_url: str) -> tuple[str, dict[str, Any]]:
    """The request type and parameters that install ``app`` with ``options`` (validated against Apple's
    keys; 422 with pointers under ``/options``)."""
    flags = options.get("management_flags") or 0
    configuration = options.get("configuration")
    enterprise = app.source == AppSource.ENTERPRISE.value
    if app.platform == Platform.MACOS.value:
        if enterprise:
            try:
                manifest = app_manifest(app, public_url)
            except ValueError as exc:
                raise Conflict(f"app {app.id} cannot be installed: {exc}") from None
            request_type, params = "InstallEnterpriseApplication", {"Manifest": manifest}
        else:
            request_type, params = "InstallApplication", _store_identity(app)
        # managed unless the assignment says otherwise: an unmanaged Mac app cannot be removed, updated
        # or listed by ManagedApplicationList
        if options.get("install_as_managed", True):
            params.update(InstallAsManaged=True, ChangeManagementState="Managed")
    else:
        request_type = "InstallApplication"
        if enterprise:
            params = {"ManifestURL": manifest_url(public_url, app.download_token)}
        else:
            # no volume-purchase licence: a free app, the device's user signs in with an Apple Account
            params = {**_store_identity(app), "Options": {"PurchaseMethod": 0}}
        # take over a copy the user installed before (the device asks the user when unsupervised)
        params["ChangeManagementState"] = "Managed"
        attributes = dict(options.get("attributes") or {})
        if "removable" in options:
            attributes["Removable"] = options["removable"]
        if attributes:
            params["Attributes"] = attributes
    if flags:
        params["ManagementFlags"] = flags
    if configuration is not None:
        params["Configuration"] = configuration
    try:
        return request_type, validate_command(request_type, params, pointer_prefix="")
    except UnprocessableEntity as exc:
        faults = exc.errors or [{"detail": exc.detail, "pointer": exc.pointer or ""}]
        raise UnprocessableEntity("invalid install options; nothing was changed", errors=[
            {"detail": fault["detail"], "pointer": _option_pointer(fault.get("pointer") or "")} for fault in faults
        ]) from None


#: the option each Apple key of an install command comes from
_OPTION_OF_KEY = {"Attributes": "attributes", "Configuration": "configuration", "ManagementFlags": "management_flags",
                  "InstallAsManaged": "install_as_managed"}


def _option_pointer(pointer: str) -> str:
    """The body's pointer for a fault at ``pointer`` in the built command (``/Attributes/Removable`` is
    the ``removable`` option; ``/Configuration/x`` is ``/options/configuration/x``)."""
    parts = pointer.split("/")[1:]
    if parts[:2] == ["Attributes", "Removable"]:
        return "/options/removable"
    if parts and parts[0] in _OPTION_OF_KEY:
        return "/".join(["/options", _OPTION_OF_KEY[parts[0]], *parts[1:]])
    return "/options"


# --- assignments ----------------------------------------------------------------------------------


def assign(
    session: Session, app: App, *, devices: Sequence[str | int] | None = None, groups: Sequence[int] | None = None,
    options: dict[str, Any] | None = None, actor: str | None, box: SecretBox, public_url: str,
) -> dict[str, int]:
    """Assign the app to devices and groups with ``options`` (``schemas.InstallOptionsSchema``), then
    reconcile. Targets already assigned keep their assignment and its options (``unchanged``)."""
    options = dict(options or {})
    check_options(app, options)
    install_command(app, options, public_url)  # the options must make a valid command: 422 before any change
    device_ids, group_ids = resolve_targets(session, devices, groups)
    existing = session.execute(
        select(AppAssignment.device_id, AppAssignment.group_id).where(AppAssignment.app_id == app.id)
    ).all()
    have_devices = {r.device_id for r in existing if r.device_id is not None}
    have_groups = {r.group_id for r in existing if r.group_id is not None}
    now = utcnow()
    rows = [{"app_id": app.id, "device_id": d, "group_id": None, "options": options, "created_by": actor,
             "created_at": now} for d in device_ids if d not in have_devices]
    rows += [{"app_id": app.id, "device_id": None, "group_id": g, "options": options, "created_by": actor,
              "created_at": now} for g in group_ids if g not in have_groups]
    if rows:
        session.execute(insert(AppAssignment), rows)
    record_event(session, "app:assign", "apps", app.id,
                 {"devices": len(device_ids), "groups": group_ids, "new": len(rows), "options": sorted(options)},
                 actor=actor)
    counts = reconcile(session, app, actor=actor, box=box, public_url=public_url)
    return {"assigned": len(rows), "unchanged": len(device_ids) + len(group_ids) - len(rows), **counts}


def unassign(
    session: Session, app: App, assignment: AppAssignment, *, actor: str | None, box: SecretBox, public_url: str,
) -> dict[str, int]:
    """Delete one assignment, then reconcile (RemoveApplication where the app is no longer wanted)."""
    details = {"assignment": assignment.id, "device_id": assignment.device_id, "group_id": assignment.group_id}
    session.execute(delete(AppAssignment).where(AppAssignment.id == assignment.id))
    session.expunge(assignment)
    record_event(session, "app:unassign", "apps", app.id, details, actor=actor)
    return {"unassigned": 1, **reconcile(session, app, actor=actor, box=box, public_url=public_url)}


# --- reconciliation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Devices that get the app with one set of options (exclusive of every other target's devices)."""

    options: dict[str, Any]
    condition: ColumnElement[bool]


def targets(session: Session, app: App) -> list[Target]:
    """The app's targets in precedence order: direct assignments (grouped by identical options), then
    group assignments oldest first, then the blueprints holding the app (lowest ``apply_order`` first),
    each without the devices an earlier target already covers."""
    rows = session.execute(
        select(AppAssignment.device_id, AppAssignment.group_id, AppAssignment.options)
        .where(AppAssignment.app_id == app.id)
        .order_by(AppAssignment.created_at, AppAssignment.id)
    ).all()
    by_options: dict[str, list[int]] = {}
    for row in rows:
        if row.device_id is not None:
            by_options.setdefault(json.dumps(row.options or {}, sort_keys=True), []).append(row.device_id)
    result = [Target(json.loads(key), in_values(session, Device.id, ids, integer=True))
              for key, ids in by_options.items()]
    covered: list[ColumnElement[bool]] = [r.condition for r in result]
    for row in rows:
        if row.group_id is None:
            continue
        try:
            members = group_condition(session, row.group_id)
        except ValueError as exc:
            raise Conflict(f"group {row.group_id} cannot be evaluated: {exc}") from None
        result.append(Target(row.options or {}, and_(members, *(not_(c) for c in covered))))
        covered.append(members)
    holds = exists().where(DeviceAppState.device_id == Device.id, DeviceAppState.app_id == app.id,
                           DeviceAppState.status.in_(HELD))
    for want in app_wanted(session, app.id, holds):  # blueprints, lowest apply_order first
        result.append(Target(want.options, and_(want.condition, *(not_(c) for c in covered))))
        covered.append(want.condition)
    return result


def _error_detail(request_type: str, command_status: str, error_chain: list[dict[str, Any]] | None) -> str:
    if command_status == CommandStatus.COMMAND_FORMAT_ERROR.value:
        return f"the device could not read {request_type} (CommandFormatError)"
    if command_status in (CommandStatus.CANCELLED.value, CommandStatus.EXPIRED.value):
        return f"{request_type} was {command_status} before the device answered"
    reasons = []
    for item in error_chain or []:
        text_ = item.get("us_english_description") or item.get("localized_description") or ""
        code = ", ".join(str(p) for p in (item.get("error_domain"), item.get("error_code")) if p is not None)
        reasons.append(f"{text_} ({code})" if code else text_)
    return f"{request_type} failed: " + ("; ".join(r for r in reasons if r) or "the device answered Error")


def _answer(blob: bytes | None, box: SecretBox) -> dict[str, Any]:
    if blob is None:
        return {}
    try:
        value = load_stored(open_blob(bytes(blob), box, RESULT_CONTEXT))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _from_apple_state(state: Any, reason: Any, via: str) -> tuple[Status, str | None] | None:
    if not isinstance(state, str) or state not in APPLE_STATES:
        return None
    status = APPLE_STATES[state]
    if status is Status.FAILED:
        return status, f"{via}: {state}" + (f" ({reason})" if isinstance(reason, str) else "")
    return status, None if status is Status.INSTALLED else f"{via}: {state}"


@cache
def _update_statement():
    table = DeviceAppState.__table__
    return (
        update(table)
        .where(table.c.device_id == bindparam("b_device"), table.c.app_id == bindparam("b_app"))
        .values(status=bindparam("b_status"), detail=bindparam("b_detail"),
                installed_version=bindparam("b_version"), updated_at=bindparam("b_at", type_=UTCDateTime()))
    )


@dataclass
class _Known:
    """A state as ``refresh_states`` folds the news into it."""

    status: str
    detail: str | None
    version: str | None
    at: datetime | None = None
    was: str | None = None  # the stored status before the news


def _on_answer(known: _Known, row: Any, box: SecretBox) -> None:
    """The answer to the command a state waits for."""
    acknowledged = row.command_status == CommandStatus.ACKNOWLEDGED.value
    if known.status == Status.REMOVAL_SCHEDULED.value:
        if acknowledged:
            known.status, known.detail, known.version = Status.REMOVED.value, None, None
        else:
            known.status = Status.FAILED.value
            known.detail = _error_detail(row.request_type, row.command_status, row.error_chain)
        return
    if not acknowledged:
        known.status = Status.FAILED.value
        known.detail = _error_detail(row.request_type, row.command_status, row.error_chain)
        return
    answer = _answer(row.result, box)
    status, detail = _from_apple_state(answer.get("State"), answer.get("RejectionReason"),
                                       row.request_type) or (Status.INSTALLING, None)
    known.status, known.detail = status.value, detail


def _on_installed_list(known: _Known, row: Any, _box: SecretBox) -> None:
    """An InstalledApplicationList row of the app (its version), reported after the state's last news."""
    if known.status == Status.REMOVAL_SCHEDULED.value:
        return
    reported = row.short_version or row.version
    if row.installing:
        if known.status != Status.INSTALLED.value:
            known.status, known.detail = Status.INSTALLING.value, "InstalledApplicationList: installing"
        return
    current_build = (row.source == AppSource.STORE.value or row.app_version is None
                     or row.short_version == row.app_version
                     or (row.app_build is not None and row.version == row.app_build))
    known.version = reported
    if known.status == Status.INSTALLED.value or current_build:
        # an older build while an update is queued: the update is still on its way
        known.status, known.detail = Status.INSTALLED.value, None


def _on_managed_list(known: _Known, row: Any, box: SecretBox) -> None:
    """A ManagedApplicationList answer received after the state's last news."""
    if known.status == Status.REMOVAL_SCHEDULED.value:
        return
    try:
        items = parse_managed_applications(_answer(row.result, box))
    except ProtocolError:
        return
    reported = next((item["status"] for item in items if item["identifier"] == row.bundle_id), None)
    mapped = _from_apple_state(reported, None, "ManagedApplicationList")
    if mapped is None:
        return
    status, detail = mapped
    if status is Status.INSTALLING and known.status == Status.INSTALLED.value:
        return  # an update under way: the app stays installed (at its version) until the update lands
    known.status, known.detail = status.value, detail


def refresh_states(
    session: Session, app_ids: Sequence[int] | None = None, device_ids: Sequence[int] | None = None, *,
    box: SecretBox,
) -> int:
    """Bring states up to date from the queue's answers and the devices' app inventory; returns how
    many changed. Three ``SELECT``s of the rows with news (the answers to the states' commands,
    InstalledApplicationList rows and ManagedApplicationList answers newer than the state) and one
    ``executemany`` ``UPDATE``: the statement count does not depend on the number of devices.

    The news of one state are taken in the order the devices sent them; the state's ``updated_at``
    becomes the time of the latest, so each report is taken once.
    """
    state = DeviceAppState
    scope: ColumnElement[bool] = true()
    if app_ids is not None:
        scope = and_(scope, state.app_id.in_(list(app_ids)))
    if device_ids is not None:
        scope = and_(scope, in_values(session, state.device_id, device_ids, integer=True))
    news: list[tuple[datetime, int, Any, Callable[[_Known, Any, SecretBox], None]]] = []
    answered = session.execute(
        select(state.device_id, state.app_id, state.status, state.detail, state.installed_version,
               Command.request_type, Command.status.label("command_status"), Command.result, Command.error_chain,
               Command.completed_at.label("at"))
        .join(Command, Command.uuid == state.command_uuid)
        .where(scope, state.status.in_(WAITING), Command.status.not_in(_ACTIVE_COMMANDS))
    ).all()
    news += [(row.at or utcnow(), 0, row, _on_answer) for row in answered]
    reports = session.execute(
        select(state.device_id, state.app_id, state.status, state.detail, state.installed_version,
               App.source, App.version.label("app_version"), App.build_version.label("app_build"),
               InstalledApplication.short_version, InstalledApplication.version, InstalledApplication.installing,
               InstalledApplication.reported_at.label("at"))
        .join(App, App.id == state.app_id)
        .join(InstalledApplication, and_(InstalledApplication.device_id == state.device_id,
                                         InstalledApplication.identifier == App.bundle_id))
        .where(scope, state.status.in_(REPORTABLE), InstalledApplication.reported_at > state.updated_at)
    ).all()
    news += [(row.at, 1, row, _on_installed_list) for row in reports]
    managed = aliased(Command)
    listed = session.execute(
        select(state.device_id, state.app_id, state.status, state.detail, state.installed_version, App.bundle_id,
               managed.result, managed.completed_at.label("at"))
        .join(App, App.id == state.app_id)
        .join(managed, managed.device_id == state.device_id)
        .where(scope, state.status.in_(REPORTABLE), App.bundle_id.is_not(None),
               managed.request_type == "ManagedApplicationList",
               managed.status == CommandStatus.ACKNOWLEDGED.value, managed.completed_at > state.updated_at)
    ).all()
    news += [(row.at, 2, row, _on_managed_list) for row in listed]
    known: dict[tuple[int, int], _Known] = {}
    for at, _order, row, apply in sorted(news, key=lambda item: (item[0], item[1])):
        key = (row.device_id, row.app_id)
        entry = known.setdefault(key, _Known(row.status, row.detail, row.installed_version, was=row.status))
        apply(entry, row, box)
        entry.at = at
    if known:
        session.execute(_update_statement(), [
            {"b_device": d, "b_app": a, "b_status": k.status, "b_detail": k.detail, "b_version": k.version,
             "b_at": k.at} for (d, a), k in known.items()])
        _tell_failed_installs(session, {key: k for key, k in known.items() if k.status == Status.FAILED.value
                                        and k.was not in (Status.FAILED.value, Status.REMOVAL_SCHEDULED.value)})
    return len(known)


def _tell_failed_installs(session: Session, failed: dict[tuple[int, int], _Known]) -> None:
    """``app.install_failed`` for each install that has just failed (two reads, then the outbox)."""
    if not failed:
        return
    device_ids = sorted({d for d, _ in failed})
    app_ids = sorted({a for _, a in failed})
    refs = {row.id: DeviceRef(row.id, row.udid, row.serial_number) for row in session.execute(
        select(Device.id, Device.udid, Device.serial_number).where(in_values(session, Device.id, device_ids,
                                                                              integer=True)))}
    apps = {row.id: row for row in session.execute(select(App.id, App.bundle_id, App.name).where(App.id.in_(app_ids)))}
    webhook_events.app_installs_failed(session, [
        FailedInstall(refs[d], a, apps[a].bundle_id, apps[a].name, k.detail)
        for (d, a), k in sorted(failed.items()) if d in refs and a in apps
    ])


_RECONCILE_LOCK_NAMESPACE = 0x4D444D01  # apps; profiles use 0x4D444D00


def _serialize_reconciles(session: Session, app_id: int) -> None:
    """One reconcile of an app at a time (PostgreSQL advisory lock until the transaction ends; SQLite
    transactions hold the database write lock), so two never queue the same install twice."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:namespace, :app_id)"),
                        {"namespace": _RECONCILE_LOCK_NAMESPACE, "app_id": app_id})


def reconcile(
    session: Session, app: App, *, actor: str | None, box: SecretBox, public_url: str,
    device_ids: Sequence[int] | None = None, update_drifted: bool = False,
) -> dict[str, int]:
    """Queue installs, updates and removals so the devices match the app's assignments.

    ``device_ids`` limits the work to those devices (their enrollment, admission or group fields
    changed). A failed install is not retried automatically (unassigning and assigning again retries
    it); a newer revision is queued for devices that have the app installed, not for those still
    installing an older one (the manifest URL they were given serves the newest package anyway).
    """
    _serialize_reconciles(session, app.id)
    refresh_states(session, [app.id], device_ids, box=box)
    scope = in_values(session, Device.id, device_ids, integer=True) if device_ids is not None else true()
    state = aliased(DeviceAppState)
    plan_targets = targets(session, app)
    desired = and_(platform_condition(app), or_(*(t.condition for t in plan_targets))) if plan_targets else false()
    held = exists().where(state.device_id == Device.id, state.app_id == app.id, state.status.in_(HELD))
    outdated = exists().where(state.device_id == Device.id, state.app_id == app.id,
                              state.status == Status.INSTALLED.value, state.revision < app.revision)
    if update_drifted:
        # the administrator's update: also where the version the device reports is not the catalogue's,
        # and where the last install failed
        catalogue_versions = [v for v in (app.version, app.build_version) if v is not None]
        drifted = and_(state.status == Status.INSTALLED.value, state.installed_version.is_not(None),
                       state.installed_version.not_in(catalogue_versions)) if catalogue_versions else false()
        outdated = or_(outdated, exists().where(state.device_id == Device.id, state.app_id == app.id,
                                                or_(drifted, state.status == Status.FAILED.value)))
    present = exists().where(state.device_id == Device.id, state.app_id == app.id, state.status.in_(PRESENT))
    now = utcnow()
    plans: list[QueuePlan] = []
    for target in plan_targets:
        request_type, params = install_command(app, target.options, public_url)
        plans.append(QueuePlan(request_type, params, condition=and_(
            scope, platform_condition(app), target.condition, or_(not_(held), outdated))))
    if app.bundle_id is not None:
        plans.append(QueuePlan("RemoveApplication", {"Identifier": app.bundle_id},
                               condition=and_(scope, not_(desired), present)))
    queued = enqueue_where(session, manageable(), plans, actor=actor, now=now, box=box)
    removals = queued.pop() if app.bundle_id is not None else []
    installs = [pair for rows in queued for pair in rows]
    # devices that left management keep no claim on the app; failed installs no longer wanted are let go
    # (assigning again retries them); a failed removal stays failed
    session.execute(
        update(DeviceAppState)
        .where(DeviceAppState.app_id == app.id, DeviceAppState.status.in_(HELD),
               DeviceAppState.device_id.in_(select(Device.id).where(scope, not_(manageable()))))
        .values(status=Status.REMOVED.value, detail="the device left management", updated_at=now)
    )
    session.execute(
        update(DeviceAppState)
        .where(DeviceAppState.app_id == app.id, DeviceAppState.status == Status.FAILED.value,
               DeviceAppState.device_id.in_(select(Device.id).where(scope, not_(desired))),
               not_(exists().where(Command.uuid == DeviceAppState.command_uuid,
                                   Command.request_type == "RemoveApplication")))
        .values(status=Status.REMOVED.value, detail="no longer assigned (the install had failed)", updated_at=now)
    )
    touched = [device_id for device_id, _ in installs + removals]
    if touched:
        versions = dict(session.execute(
            select(DeviceAppState.device_id, DeviceAppState.installed_version)
            .where(DeviceAppState.app_id == app.id, in_values(session, DeviceAppState.device_id, touched, integer=True))
        ).all())
        session.execute(delete(DeviceAppState).where(
            DeviceAppState.app_id == app.id, in_values(session, DeviceAppState.device_id, touched, integer=True)))
        session.execute(insert(DeviceAppState), [
            {"device_id": d, "app_id": app.id, "status": Status.SCHEDULED.value, "revision": app.revision,
             "installed_version": versions.get(d), "command_uuid": u, "detail": None, "updated_at": now}
            for d, u in installs
        ] + [
            {"device_id": d, "app_id": app.id, "status": Status.REMOVAL_SCHEDULED.value, "revision": app.revision,
             "installed_version": versions.get(d), "command_uuid": u, "detail": None, "updated_at": now}
            for d, u in removals
        ])
    if touched:
        record_event(session, "app:reconcile", "apps", app.id,
                     {"revision": app.revision, "install_queued": len(installs), "removal_queued": len(removals),
                      **({"devices": len(device_ids)} if device_ids else {})}, actor=actor)
    return {"install_queued": len(installs), "removal_queued": len(removals)}


def _totals(session: Session, app_ids: Iterable[int], **kwargs: Any) -> dict[str, int]:
    totals = {"apps": 0, "install_queued": 0, "removal_queued": 0}
    for app_id in app_ids:
        app = session.get(App, app_id)
        if app is None:
            continue
        try:
            counts = reconcile(session, app, **kwargs)
        except Conflict as exc:
            # a group that cannot be evaluated must not stop the other apps (nor a device's check-in)
            log.warning("app %s not reconciled: %s", app_id, exc.detail)
            continue
        totals["apps"] += 1
        totals["install_queued"] += counts["install_queued"]
        totals["removal_queued"] += counts["removal_queued"]
    return totals


def reconcile_devices(
    session: Session, device_ids: Sequence[int], *, actor: str | None, box: SecretBox, public_url: str,
    new_enrollment: bool = False,
) -> dict[str, int]:
    """Reconcile every app that can concern these devices, for these devices only (their enrollment,
    admission, or a change of the fields smart groups filter on). Only admitted devices get commands.
    ``new_enrollment``: what an earlier enrollment installed is gone with it and is queued anew."""
    ids = list(dict.fromkeys(device_ids))
    if not ids:
        return {"apps": 0, "install_queued": 0, "removal_queued": 0}
    if new_enrollment:
        session.execute(
            update(DeviceAppState)
            .where(in_values(session, DeviceAppState.device_id, ids, integer=True),
                   DeviceAppState.status != Status.REMOVED.value)
            .values(status=Status.REMOVED.value, detail="the device enrolled again", installed_version=None,
                    updated_at=utcnow())
        )
    admitted = list(session.scalars(
        select(Device.id).where(in_values(session, Device.id, ids, integer=True),
                                Device.admission_status == AdmissionStatus.ACCEPTED.value)))
    if not admitted:
        return {"apps": 0, "install_queued": 0, "removal_queued": 0}
    app_ids = session.scalars(
        select(AppAssignment.app_id).distinct()
        .where(or_(AppAssignment.group_id.is_not(None),
                   in_values(session, AppAssignment.device_id, admitted, integer=True)))
        .order_by(AppAssignment.app_id)
    ).all()
    return _totals(session, app_ids, actor=actor, box=box, public_url=public_url, device_ids=admitted)


def reconcile_all(
    session: Session, *, actor: str | None, box: SecretBox, public_url: str, groups_only: bool = False,
) -> dict[str, int]:
    """Reconcile every assigned app (or those assigned to a group: after membership changes)."""
    stmt = select(AppAssignment.app_id).distinct()
    if groups_only:
        stmt = stmt.where(AppAssignment.group_id.is_not(None))
    return _totals(session, session.scalars(stmt.order_by(AppAssignment.app_id)).all(),
                   actor=actor, box=box, public_url=public_url)


# --- asking the devices ---------------------------------------------------------------------------


def _not_already_asked(request_type: str) -> ColumnElement[bool]:
    return not_(exists().where(Command.device_id == Device.id, Command.request_type == request_type,
                               Command.status.in_(_ACTIVE_COMMANDS)))


def request_refresh(
    session: Session, app: App | None, *, device_ids: Sequence[int] | None = None, actor: str | None,
    box: SecretBox,
) -> dict[str, int]:
    """Queue ManagedApplicationList (the app's install status; all managed apps without ``app``) and
    InstalledApplicationList (versions; always the full list, which the inventory replaces whole) for
    the manageable devices that have a state for ``app`` (limited to ``device_ids`` when given), unless
    the same question is already waiting in a device's queue. Their answers update the states."""
    condition: ColumnElement[bool] = manageable()
    if device_ids is not None:
        condition = and_(condition, in_values(session, Device.id, device_ids, integer=True))
    managed_params: dict[str, Any] = {}
    if app is not None:
        condition = and_(condition, exists().where(
            DeviceAppState.device_id == Device.id, DeviceAppState.app_id == app.id,
            DeviceAppState.status != Status.REMOVED.value))
        if app.bundle_id is not None:
            managed_params = {"Identifiers": [app.bundle_id]}
    plans = [
        QueuePlan("ManagedApplicationList", validate_command("ManagedApplicationList", managed_params),
                  condition=_not_already_asked("ManagedApplicationList")),
        QueuePlan("InstalledApplicationList", validate_command("InstalledApplicationList", {}),
                  condition=_not_already_asked("InstalledApplicationList")),
    ]
    managed, installed = enqueue_where(session, condition, plans, actor=actor, now=utcnow(), box=box)
    if app is not None:
        record_event(session, "app:refresh", "apps", app.id,
                     {"managed_list_queued": len(managed), "installed_list_queued": len(installed)}, actor=actor)
    return {"managed_list_queued": len(managed), "installed_list_queued": len(installed)}


# --- reading states -------------------------------------------------------------------------------


def states_query(app_id: int | None = None, device_id: int | None = None):
    stmt = select(DeviceAppState)
    if app_id is not None:
        stmt = stmt.where(DeviceAppState.app_id == app_id)
    if device_id is not None:
        stmt = stmt.where(DeviceAppState.device_id == device_id)
    return stmt


def app_facts(session: Session, app_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """What the state resources show of the catalogue entries (name, bundle id, version, revision)."""
    ids = list(set(app_ids))
    if not ids:
        return {}
    rows = session.execute(select(App.id, App.name, App.bundle_id, App.version, App.revision)
                           .where(App.id.in_(ids))).all()
    return {r.id: {"name": r.name, "bundle_id": r.bundle_id, "version": r.version, "revision": r.revision}
            for r in rows}
