"""Per-device and bulk actions, set-based.

Eligibility is one SQL ``CASE`` expression per action (the first reason a device is not eligible, or
NULL), so a bulk action over 100,000 devices is a fixed handful of statements whatever the count:
resolve the named devices (one SELECT), classify every targeted device (one SELECT), queue each
command with ``INSERT … SELECT … RETURNING`` (one per command plan), then bookkeeping (retirement
rows, the new name), the push outbox (one INSERT … SELECT) and one audit event.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import (
    ColumnElement,
    String,
    Text,
    and_,
    case,
    cast,
    delete,
    exists,
    insert,
    literal,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session

from mdmserver.actions.catalogue import (
    ACTIONS,
    COMMAND_NAMES,
    FLAT_ARGUMENTS,
    IGNORED_ARGUMENTS,
    NO_VALUE,
    Action,
    CommandPlan,
)
from mdmserver.actions.models import ScheduledAction, ScheduleStatus
from mdmserver.actions.windows import in_window
from mdmserver.api.jsonapi import marshmallow_errors
from mdmserver.audit.service import record_event
from mdmserver.commands.service import QueuePlan, enqueue_where, validate_command
from mdmserver.compliance.service import version_key
from mdmserver.db import utcnow
from mdmserver.devices import service as devices
from mdmserver.errors import AppError, BadRequest, Conflict, NotFound, UnprocessableEntity
from mdmserver.organization.service import enrollment_profile_identifier, get_organization
from mdmserver.os_updates import service as os_updates
from mdmserver.pki.secretbox import SecretBox
from mdmserver.protocol import catalogue
from mdmserver.protocol.secrets import redact
from mdmserver.records.commands import ACTIVE_STATUSES, Command, CommandStatus
from mdmserver.records.devices import Device, InstalledProfile
from mdmserver.records.retirement import DeviceRetirement, RetirementState
from mdmserver.selection.conditions import unmanaged_whens
from mdmserver.selection.sql import in_values
from mdmserver.selection.targets import Targets, select_targets

MDM_PAYLOAD_TYPE = "com.apple.mdm"

log = logging.getLogger("mdmserver.actions")


def get_action(name: str) -> Action:
    """An action by our name or by ManageEngine's command name (``AssetScan``, ``DeviceLock``...)."""
    action = ACTIONS.get(COMMAND_NAMES.get(name, name))
    if action is None:
        raise NotFound(f"no action {name!r}; actions: {', '.join(ACTIONS)} (or the command names "
                       f"{', '.join(COMMAND_NAMES)})")
    return action


# --- eligibility ----------------------------------------------------------------------------------


def not_applicable_reason(action: Action, params: dict[str, Any] | None = None) -> ColumnElement[str | None]:
    """SQL for the first reason the action does not apply to a device (NULL when it applies)."""
    return case(*_not_applicable_whens(action), else_=null()).label("reason")


def _not_applicable_whens(action: Action) -> list[tuple[ColumnElement[bool], Any]]:
    whens: list[tuple[ColumnElement[bool], Any]] = [
        *unmanaged_whens(),
        (Device.platform.is_(None), literal("the device's platform is not known yet")),
    ]
    for request_type in action.request_types:
        spec = catalogue.get_spec(request_type)
        platforms, supervised_on = list(spec.platforms), list(spec.supervised_required_on)
        if action.renames:
            variant = spec.tree["keys"]["Settings"]["variants"]["DeviceName"]
            platforms, supervised_on = variant.get("platforms") or [], variant.get("supervised_on") or []
        whens.append((Device.platform.not_in(platforms),
                      literal(f"{action.name} is not available on ", String) + Device.platform))
        if supervised_on:
            whens.append((and_(Device.platform.in_(supervised_on), Device.is_supervised.is_not(True)),
                          literal(f"{action.name} needs a supervised device on ", String) + Device.platform))
    if action.lost_mode is True:
        whens.append((Device.lost_mode_enabled.is_not(True), literal("the device is not in lost mode")))
    elif action.lost_mode is False:
        whens.append((Device.lost_mode_enabled.is_(True), literal("the device is already in lost mode")))
    if action.retires:
        whens.append((retirement_pending_condition(),
                      literal("a retirement is already pending (the device has not answered its RemoveProfile)")))
    if action.needs_unlock_token:
        whens.append((Device.unlock_token_encrypted.is_(None),
                      literal("no UnlockToken is stored for the device (needed to clear its passcode)")))
    return whens


#: actions whose viability also reads the inventory: name → the extra ``CASE`` branches, from the
#: session, the version asked for (or None) and the platforms the caller offers the action on
_VIABILITY_WHENS = {
    "update_os": lambda session, version, platforms: os_updates.viability_whens(session, version,
                                                                                 platforms=platforms),
}


def device_actions(session: Session, device: Device) -> list[dict[str, Any]]:
    """Every action with ``is_enabled`` and the reason when not: one SELECT for all of them."""
    columns = [not_applicable_reason(action).label(f"a{i}") for i, action in enumerate(ACTIONS.values())]
    row = session.execute(select(*columns).where(Device.id == device.id)).one()
    return [
        {"name": action.name, "title": action.title, "is_enabled": reason is None, "reason": reason,
         "request_types": list(action.request_types),
         "parameters": sorted(action.schema().fields) if action.schema else []}
        for action, reason in zip(ACTIONS.values(), row, strict=True)
    ]


# --- parameters -----------------------------------------------------------------------------------


def load_parameters(action: Action, raw: Any, *, pointer: str = "/parameters") -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UnprocessableEntity("parameters must be an object", pointer=pointer)
    if action.schema is None:
        if raw:
            raise UnprocessableEntity(f"the {action.name} action takes no parameters", pointer=pointer)
        return {}
    try:
        return action.schema().load(raw)
    except ValidationError as exc:
        raise UnprocessableEntity(f"invalid parameters for {action.name}",
                                  errors=marshmallow_errors(exc.messages, base=pointer)) from None


#: members of an action body that name the action itself (ManageEngine's ``action_name``, ``command_name``)
NAMING_MEMBERS = ("action_name", "command_name")


@dataclass
class BodyParameters:
    """An action body's parameters (our names, not yet validated) and the documented members ignored."""

    raw: dict[str, Any] | None
    ignored: list[str]


def body_parameters(action: Action, body: dict[str, Any]) -> BodyParameters:
    """The parameters of an action body (selection members already taken out): ``{"parameters": {…}}``,
    or flat members, by our parameter names (``message``, ``pin``) or ManageEngine's (``lock_message``,
    ``unlock_pin``, ``wipe_lock_pin``...; its ``"--"`` means no value). ManageEngine's documented members
    with no Apple equivalent are accepted and listed in ``ignored``; any other member is a 422 at its
    pointer, as is an ``action_name``/``command_name`` naming another action."""
    body = dict(body)
    for member in NAMING_MEMBERS:
        if member in body:
            named = body.pop(member)
            if not isinstance(named, str) or ACTIONS.get(COMMAND_NAMES.get(named, named)) is not action:
                raise UnprocessableEntity(f"{member} {named!r} is not the action of the path ({action.name})",
                                          pointer=f"/{member}")
    if "parameters" in body:
        extra = sorted(set(body) - {"parameters"})
        if extra:
            raise UnprocessableEntity("give the parameters either in parameters or as members of the body, "
                                      "not both", pointer=f"/{extra[0]}")
        return BodyParameters(body["parameters"], [])
    own = set(action.schema().fields) if action.schema else set()
    raw: dict[str, Any] = {}
    source: dict[str, str] = {}  # our parameter → the member that gave it
    ignored: list[str] = []
    faults: list[dict[str, str]] = []
    for member, value in body.items():
        target = member if member in own else FLAT_ARGUMENTS.get(member, {}).get(action.name)
        if target is None:
            if member in FLAT_ARGUMENTS or member in IGNORED_ARGUMENTS:
                ignored.append(member)
            else:
                faults.append({"detail": "unknown member", "pointer": f"/{member}"})
            continue
        if value == NO_VALUE or value is None:
            continue
        if target in source:
            faults.append({"detail": f"{target} is already given by {source[target]}", "pointer": f"/{member}"})
            continue
        if target == "pin" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        raw[target], source[target] = value, member
    if faults:
        raise UnprocessableEntity(f"invalid parameters for {action.name}", errors=faults)
    try:
        load_parameters(action, raw, pointer="")
    except UnprocessableEntity as exc:  # point at the member the caller sent
        for fault in exc.errors or []:
            head, _, rest = (fault.get("pointer") or "")[1:].partition("/")
            fault["pointer"] = "/" + "/".join(p for p in (source.get(head, head), rest) if p)
        raise
    return BodyParameters(raw, sorted(ignored))


def _plans(action: Action, params: dict[str, Any], mdm_profile: str = "") -> list[tuple[CommandPlan, dict[str, Any]]]:
    return [(plan, validate_command(plan.request_type, plan.parameters)) for plan in action.plan(params, mdm_profile)]


Batch = tuple[list[int], list[tuple[CommandPlan, dict[str, Any]]]]


def _batches(session: Session, action: Action, params: dict[str, Any], ids: list[int]) -> list[Batch]:
    """The devices and their command plans: one batch, or for a retirement one per enrollment profile."""
    if not action.retires:
        return [(ids, _plans(action, params))]
    by_identifier: dict[str, list[int]] = {}
    for device_id, identifier in mdm_profile_identifiers(session, ids).items():
        by_identifier.setdefault(identifier, []).append(device_id)
    return [(device_ids, _plans(action, params, identifier)) for identifier, device_ids in sorted(by_identifier.items())]


def mdm_profile_identifiers(session: Session, ids: Sequence[int]) -> dict[int, str]:
    """device id → the identifier of its MDM enrollment profile, for RemoveProfile (one SELECT).

    The device's own ProfileList (reported since it last enrolled) names the installed profile that
    carries the ``com.apple.mdm`` payload; that wins, so a device enrolled under an older payload
    prefix is still unenrolled. Without one, the identifier this server gives enrollment profiles.
    """
    fallback = enrollment_profile_identifier(get_organization(session).payload_prefix)
    found: dict[int, str] = {}
    rows = session.execute(
        select(InstalledProfile.device_id, InstalledProfile.identifier, InstalledProfile.payloads)
        .join(Device, Device.id == InstalledProfile.device_id)
        .where(
            in_values(session, InstalledProfile.device_id, ids, integer=True),
            InstalledProfile.identifier.is_not(None),
            or_(Device.enrolled_at.is_(None), InstalledProfile.reported_at >= Device.enrolled_at),
            cast(InstalledProfile.payloads, Text).like(f"%{MDM_PAYLOAD_TYPE}%"),
        )
        .order_by(InstalledProfile.device_id, InstalledProfile.id)
    )
    for device_id, identifier, payloads in rows:
        carries_mdm = any(isinstance(p, dict) and p.get("type") == MDM_PAYLOAD_TYPE for p in payloads or [])
        if carries_mdm and (device_id not in found or identifier == fallback):
            found[device_id] = identifier
    return {device_id: found.get(device_id, fallback) for device_id in ids}



# --- running an action ----------------------------------------------------------------------------


@dataclass
class Outcome:
    action: str
    success: list[dict[str, Any]]
    not_applicable: list[dict[str, Any]]

    def as_result(self) -> dict[str, Any]:
        """ManageEngine's bulk result shape."""
        return {
            "action": self.action,
            "total_count": len(self.success) + len(self.not_applicable),
            "success_count": len(self.success),
            "not_applicable_count": len(self.not_applicable),
            "success_list": self.success,
            "na_list": self.not_applicable,
        }


#: the members of a bulk-action body that say which devices (``select_targets``' arguments)
SELECTION_MEMBERS = ("devices", "groups", "filter", "all_devices")


def run_bulk(session: Session, action: Action, body: dict[str, Any], *, actor: str | None,
             box: SecretBox) -> dict[str, Any]:
    """A bulk-action body, loaded by ``BulkActionSchema``: its selection members name the targets, the
    rest are the action's parameters. ManageEngine's result shape, with ``ignored`` when members with no
    Apple equivalent were given."""
    body = dict(body)
    selection = {member: body.pop(member, None) for member in SELECTION_MEMBERS}
    given = body_parameters(action, body)
    target = select_targets(session, devices=selection["devices"], groups=selection["groups"],
                            filter_=selection["filter"], all_devices=selection["all_devices"])
    result = run_action(session, action, target, given.raw, actor=actor, box=box).as_result()
    if given.ignored:
        result["ignored"] = given.ignored
    return result


def classify(session: Session, action: Action, target: Targets, params: dict[str, Any] | None) -> list[Any]:
    """(id, udid, serial_number, name, reason, platform) of every targeted device, in id order: one SELECT."""
    return session.execute(
        select(Device.id, Device.udid, Device.serial_number, Device.device_name,
               not_applicable_reason(action, params), Device.platform)
        .where(target.condition)
        .order_by(Device.id)
    ).all()


def run_action(
    session: Session, action: Action, target: Targets, raw_params: Any, *, actor: str | None, box: SecretBox
) -> Outcome:
    """Queue the action's commands for every eligible targeted device; report the others with a remark."""
    params = load_parameters(action, raw_params)
    generated_pin = None
    if action.generates_mac_pin and "pin" not in params:
        # one PIN per request (per device when locking one device), sent to the Macs only; it is kept
        # sealed in the DeviceLock command's parameters (read back with scope ``secrets``)
        params["pin"] = generated_pin = f"{secrets.randbelow(1_000_000):06d}"
    if not action.retires:
        _plans(action, params)  # invalid parameters: 422 before anything is looked at
    rows = [tuple(row) for row in classify(session, action, target, params)]  # (id, udid, serial, name, reason, platform)
    eligible = [row for row in rows if row[4] is None]
    not_applicable = [{"device_id": str(i), "udid": u, "serial_number": s, "name": n, "remarks": r}
                      for i, u, s, n, r, _ in rows if r is not None]
    not_applicable += [{"device_id": None, "device": name, "remarks": "no such device"} for name in target.missing]
    commands: dict[int, list[str]] = {}
    if eligible:
        ids = [row[0] for row in eligible]
        now = utcnow()
        # every plan's parameters stored (or found) at once, one INSERT … SELECT per plan and the push
        # outbox: a constant statement count per action
        plans = [
            QueuePlan(plan.request_type, apple_params, condition=_plan_condition(session, batch_ids, plan))
            for batch_ids, batch_plans in _batches(session, action, params, ids)
            for plan, apple_params in batch_plans
        ]
        for queued in enqueue_where(session, true(), plans, actor=actor, now=now, box=box):
            for device_id, uuid in queued:
                commands.setdefault(device_id, []).append(uuid)
        if action.retires:
            _record_retirements(session, commands, actor, now)
        if action.renames:
            devices.rename_devices(session, in_values(session, Device.id, ids, integer=True), params["name"], now)
    success = [{"device_id": str(i), "udid": u, "serial_number": s, "name": n, "command_uuids": commands.get(i, []),
                **({"pin": generated_pin} if generated_pin and platform == "macos" else {})}
               for i, u, s, n, _, platform in eligible]
    record_event(session, f"device:command:{action.name}", "devices",
                 success[0]["device_id"] if len(success) == 1 else "bulk",
                 {"success_count": len(success), "not_applicable_count": len(not_applicable),
                  "parameters": _public(params)})
    return Outcome(action.name, success, not_applicable)


def perform_on_device(
    session: Session, action: Action, device: Device, raw_params: Any, *, actor: str | None, box: SecretBox
) -> dict[str, Any]:
    """Queue the action for one device; 409 with the reason when it does not apply (nothing is written).
    Returns the device's success entry: ``command_uuids`` (and the generated ``pin`` of a locked Mac)."""
    params = load_parameters(action, raw_params)
    target = select_targets(session, devices=[device.id])
    for row in classify(session, action, target, params):
        if row.reason is not None:
            raise Conflict(f"{action.name} does not apply to device {device.id}: {row.reason}", code="not_applicable")
    outcome = run_action(session, action, target, raw_params, actor=actor, box=box)
    return outcome.success[0]


def _public(params: dict[str, Any]) -> dict[str, Any]:
    """An action's own parameters for the audit log, secrets (the lock ``pin``...) redacted."""
    return redact(params)


def _plan_condition(session: Session, ids: Sequence[int], plan: CommandPlan) -> ColumnElement[bool]:
    """SQL on ``Device``: the devices of ``ids`` the plan is for (by platform)."""
    condition = in_values(session, Device.id, ids, integer=True)
    if plan.only_platforms:
        condition = and_(condition, Device.platform.in_(plan.only_platforms))
    if plan.except_platforms:
        condition = and_(condition, Device.platform.not_in(plan.except_platforms))
    return condition


def _record_retirements(session: Session, commands: dict[int, list[str]], actor: str | None, now) -> None:
    """One retirement row per device, naming the RemoveProfile just queued (the device counts as
    retired once it acknowledges that command, see ``retired_condition``)."""
    ids = list(commands)
    session.execute(delete(DeviceRetirement).where(in_values(session, DeviceRetirement.device_id, ids, integer=True)))
    session.execute(insert(DeviceRetirement), [
        {"device_id": device_id, "command_uuid": uuids[0], "requested_by": actor, "requested_at": now}
        for device_id, uuids in commands.items()
    ])


def retirement_pending_condition() -> ColumnElement[bool]:
    """SQL on ``Device``: its retirement's RemoveProfile is still waiting for the device's answer."""
    return exists().where(
        DeviceRetirement.device_id == Device.id,
        Command.uuid == DeviceRetirement.command_uuid,
        Command.status.in_([s.value for s in ACTIVE_STATUSES]),
    )


#: the RemoveProfile command's final status → the retirement's state (any other status: pending)
_RETIREMENT_STATES = {
    CommandStatus.ACKNOWLEDGED: RetirementState.COMPLETED,
    CommandStatus.ERROR: RetirementState.FAILED,
    CommandStatus.COMMAND_FORMAT_ERROR: RetirementState.FAILED,
    CommandStatus.CANCELLED: RetirementState.FAILED,
    CommandStatus.EXPIRED: RetirementState.FAILED,
}


def retirement_state(session: Session, device: Device) -> dict[str, Any] | None:
    """The device's latest retirement: pending, completed or failed, and the device's reason when it
    refused (its ErrorChain). ``None`` when it was never retired."""
    row = session.execute(
        select(DeviceRetirement, Command.status, Command.error_chain)
        .outerjoin(Command, Command.uuid == DeviceRetirement.command_uuid)
        .where(DeviceRetirement.device_id == device.id)
    ).first()
    if row is None:
        return None
    retirement, command_status, error_chain = row
    state = _RETIREMENT_STATES.get(command_status or "", RetirementState.PENDING)
    checked_out = (not device.enrolled and device.unenrolled_at is not None
                   and device.unenrolled_at >= retirement.requested_at)
    if checked_out:
        state = RetirementState.COMPLETED
    detail = None
    if state is RetirementState.FAILED:
        reasons = [item.get("localized_description") or item.get("us_english_description")
                   for item in error_chain or [] if isinstance(item, dict)]
        detail = "; ".join(r for r in reasons if r) or f"the RemoveProfile command is {command_status}"
    return {"status": state.value, "requested_at": retirement.requested_at, "requested_by": retirement.requested_by,
            "command_uuid": retirement.command_uuid, "command_status": command_status, "detail": detail}


def viability(session: Session, action: Action, target: Targets, *, version: str | None = None,
              platforms: Sequence[str] | None = None) -> dict[str, Any]:
    """Ivanti's checkViability: which targeted devices would not be eligible, and why (nothing is
    queued). Beyond what :func:`run_action` checks, an action may read the inventory
    (``update_os``: the version asked for, the updates the device is offered, an update pending);
    ``platforms`` narrows the platforms the caller offers the action on (Ivanti's iOS-only OS update)."""
    if version is not None and action.name not in _VIABILITY_WHENS:
        raise BadRequest(f"version applies to the OS update's viability, not to {action.name}", parameter="version")
    if version is not None:
        try:
            version_key(version)
        except ValueError as exc:
            raise BadRequest(str(exc), parameter="version") from None
    extra = _VIABILITY_WHENS.get(action.name)
    whens = _not_applicable_whens(action) + (extra(session, version, platforms) if extra else [])
    rows = session.execute(
        select(Device.id, Device.udid, Device.serial_number, Device.device_name,
               case(*whens, else_=null()).label("reason"))
        .where(target.condition)
        .order_by(Device.id)
    ).all()
    blocked = [{"device_id": str(r.id), "udid": r.udid, "serial_number": r.serial_number, "name": r.device_name,
                "remarks": r.reason} for r in rows if r.reason is not None]
    blocked += [{"device_id": None, "device": name, "remarks": "no such device"} for name in target.missing]
    return {
        "action": action.name,
        "total_count": len(rows) + len(target.missing),
        "eligible_count": sum(1 for r in rows if r.reason is None),
        "not_eligible_count": len(blocked),
        "not_eligible": blocked,
    }


# --- scheduled actions ----------------------------------------------------------------------------

#: the most due scheduled actions one upkeep run queues (the rest wait for the next run)
DUE_BATCH = 100
#: the actor of a scheduled action whose creator is not known
SCHEDULER_ACTOR = "scheduler"
_SEAL_CONTEXT = b"mdmserver.scheduled_action.parameters"


def schedule_action(
    session: Session, action: Action, selection: dict[str, Any], raw_params: Any, *, not_before: datetime,
    window: dict[str, Any] | None, actor: str | None, box: SecretBox,
) -> ScheduledAction:
    """Store an action to be queued at ``not_before`` (inside ``window`` when given). Everything that can
    be checked now is (parameters, groups, filter: 422); which devices it reaches and whether the action
    applies to each is decided when it runs. The parameters are sealed (a lock PIN is a secret)."""
    params = load_parameters(action, raw_params)
    if not action.retires:
        _plans(action, params)
    select_targets(session, devices=selection.get("devices"), groups=selection.get("groups"),
                   filter_=selection.get("filter"), all_devices=bool(selection.get("all_devices")))
    sealed = box.encrypt(json.dumps(raw_params or {}).encode(), associated_data=_SEAL_CONTEXT)
    row = ScheduledAction(action=action.name, selection={k: v for k, v in selection.items() if v not in (None, False)},
                          parameters_sealed=sealed, not_before=not_before, window=window,
                          status=ScheduleStatus.SCHEDULED.value, created_by=actor)
    session.add(row)
    session.flush()
    record_event(session, f"device:schedule:{action.name}", "scheduled_actions", row.id,
                 {"not_before": not_before.isoformat(), "window": window, "selection": row.selection,
                  "parameters": _public(params)})
    return row


def get_scheduled(session: Session, schedule_id: int) -> ScheduledAction:
    row = session.get(ScheduledAction, schedule_id)
    if row is None:
        raise NotFound(f"no scheduled action {schedule_id}")
    return row


def scheduled_query():
    return select(ScheduledAction)


def cancel_scheduled(session: Session, row: ScheduledAction) -> ScheduledAction:
    """Cancel a scheduled action that has not run: 409 once a worker claimed it (the same conditional
    UPDATE the worker's claim uses, so the two never both win)."""
    cancelled = session.execute(
        update(ScheduledAction)
        .where(ScheduledAction.id == row.id, ScheduledAction.status == ScheduleStatus.SCHEDULED.value)
        .values(status=ScheduleStatus.CANCELLED.value)
        .returning(ScheduledAction.id)
        .execution_options(synchronize_session=False)
    ).first()
    session.refresh(row)
    if cancelled is None:
        raise Conflict(f"scheduled action {row.id} is {row.status}; only a scheduled one can be cancelled",
                       code="not_scheduled")
    record_event(session, "device:schedule:cancel", "scheduled_actions", row.id, {"action": row.action})
    return row


def run_due_schedules(session: Session, *, box: SecretBox, now: datetime | None = None) -> dict[int, str]:
    """Queue the scheduled actions that are due: ``not_before`` passed and, with a window, inside it.
    Each is claimed with ``UPDATE … WHERE status = 'scheduled' RETURNING``: with several workers on
    PostgreSQL the second waits on the row lock and then finds it claimed, so each runs exactly once.
    Returns id → final status; the caller commits."""
    now = now or utcnow()
    candidates = session.execute(
        select(ScheduledAction.id, ScheduledAction.window)
        .where(ScheduledAction.status == ScheduleStatus.SCHEDULED.value, ScheduledAction.not_before <= now)
        .order_by(ScheduledAction.not_before, ScheduledAction.id)
        .limit(DUE_BATCH)
    ).all()
    due = [row.id for row in candidates if in_window(row.window, now)]
    if not due:
        return {}
    claimed = session.scalars(
        update(ScheduledAction)
        .where(ScheduledAction.id.in_(due), ScheduledAction.status == ScheduleStatus.SCHEDULED.value)
        .values(status=ScheduleStatus.QUEUED.value, queued_at=now)
        .returning(ScheduledAction.id)
        .execution_options(synchronize_session=False)
    ).all()
    done: dict[int, str] = {}
    for schedule_id in sorted(claimed):
        row = session.get(ScheduledAction, schedule_id, populate_existing=True)
        try:
            with session.begin_nested():
                result = _run_scheduled(session, row, box)
            row.result = result
        except AppError as exc:  # its group was deleted, its filter no longer applies...
            row.status, row.detail = ScheduleStatus.FAILED.value, exc.detail
            log.warning("scheduled action %s (%s) failed: %s", row.id, row.action, exc.detail)
        done[row.id] = row.status
    session.flush()
    return done


def _run_scheduled(session: Session, row: ScheduledAction, box: SecretBox) -> dict[str, Any]:
    action = get_action(row.action)
    params = json.loads(box.decrypt(row.parameters_sealed, associated_data=_SEAL_CONTEXT)) if row.parameters_sealed else {}
    selection = row.selection or {}
    target = select_targets(session, devices=selection.get("devices"), groups=selection.get("groups"),
                            filter_=selection.get("filter"), all_devices=bool(selection.get("all_devices")))
    outcome = run_action(session, action, target, params, actor=row.created_by or SCHEDULER_ACTOR, box=box)
    result = outcome.as_result()
    return {"success_count": result["success_count"], "not_applicable_count": result["not_applicable_count"],
            "command_uuids": [uuid for entry in outcome.success for uuid in entry["command_uuids"]][:1000],
            "na_list": result["na_list"][:100]}
