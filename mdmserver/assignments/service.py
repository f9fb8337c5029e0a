"""Profile assignment and reconciliation, set-based.

A profile's *desired* devices are those assigned directly plus the members of its assigned groups
(subgroups and smart groups included) plus those a blueprint wants it on (``selection/blueprints.py``). ``reconcile`` compares them with each device's state and
queues, with one ``INSERT … SELECT`` each, InstallProfile for devices that should have the current
revision and do not, and RemoveProfile for devices that have it and should not. States follow the
commands' results and the devices' ProfileList answers (``refresh_states``).

Call ``reconcile`` after anything that can change membership or content: assignment changes (done
here), group and custom-attribute changes (done by those views), a new profile revision. Changes of
one device reconcile that device only (``reconcile_devices``): its enrollment (check-in's
Authenticate), its admission (the Mender API's accept) and command results that change a field device
groups filter on (the connect path), each in the transaction of the change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    exists,
    insert,
    not_,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.orm import Session, aliased

from mdmserver.assignments.models import (
    HELD,
    AssignmentStatus,
    DeviceProfileState,
    ProfileAssignment,
)
from mdmserver.audit.service import record_event
from mdmserver.commands.service import QueuePlan, enqueue_where, validate_command
from mdmserver.db import utcnow
from mdmserver.errors import Conflict, UnprocessableEntity
from mdmserver.pki.secretbox import SecretBox
from mdmserver.profiles.models import Profile
from mdmserver.profiles.service import profile_bytes
from mdmserver.records.admission import AdmissionStatus
from mdmserver.records.commands import Command, CommandStatus
from mdmserver.records.devices import Device, InstalledProfile
from mdmserver.selection.blueprints import delivered_declaratively, profile_wanted
from mdmserver.selection.conditions import manageable
from mdmserver.selection.filters import group_condition
from mdmserver.selection.resolve import resolve_targets
from mdmserver.selection.sql import in_values

log = logging.getLogger("mdmserver.assignments")



# --- assignments ----------------------------------------------------------------------------------


def list_assignments(session: Session, profile: Profile) -> list[ProfileAssignment]:
    return list(session.scalars(
        select(ProfileAssignment).where(ProfileAssignment.profile_id == profile.id).order_by(ProfileAssignment.id)
    ))


def assign(
    session: Session, profile: Profile, *, devices: Sequence[str | int] | None = None,
    groups: Sequence[int] | None = None, actor: str | None, box: SecretBox,
) -> dict[str, int]:
    """Assign the profile to devices and groups (already assigned ones are skipped), then reconcile."""
    device_ids, group_ids = resolve_targets(session, devices, groups)
    existing = session.execute(
        select(ProfileAssignment.device_id, ProfileAssignment.group_id).where(ProfileAssignment.profile_id == profile.id)
    ).all()
    have_devices = {r.device_id for r in existing if r.device_id is not None}
    have_groups = {r.group_id for r in existing if r.group_id is not None}
    now = utcnow()
    rows = [{"profile_id": profile.id, "device_id": d, "group_id": None, "created_by": actor, "created_at": now}
            for d in device_ids if d not in have_devices]
    rows += [{"profile_id": profile.id, "device_id": None, "group_id": g, "created_by": actor, "created_at": now}
             for g in group_ids if g not in have_groups]
    if rows:
        session.execute(insert(ProfileAssignment), rows)
    record_event(session, "profile:assign", "profiles", profile.id,
                 {"devices": len(device_ids), "groups": group_ids, "new": len(rows)})
    return {"assigned": len(rows), **reconcile(session, profile, actor=actor, box=box)}


def unassign(
    session: Session, profile: Profile, *, devices: Sequence[str | int] | None = None,
    groups: Sequence[int] | None = None, actor: str | None, box: SecretBox,
) -> dict[str, int]:
    """Remove assignments, then reconcile (RemoveProfile where the profile is no longer wanted)."""
    device_ids, group_ids = resolve_targets(session, devices, groups)
    clauses = []
    if device_ids:
        clauses.append(in_values(session, ProfileAssignment.device_id, device_ids, integer=True))
    if group_ids:
        clauses.append(ProfileAssignment.group_id.in_(group_ids))
    removed = 0
    if clauses:
        removed = session.execute(
            delete(ProfileAssignment).where(ProfileAssignment.profile_id == profile.id, or_(*clauses))
        ).rowcount or 0
    record_event(session, "profile:unassign", "profiles", profile.id,
                 {"devices": len(device_ids), "groups": group_ids, "removed": removed})
    return {"unassigned": removed, **reconcile(session, profile, actor=actor, box=box)}


# --- reconciliation -------------------------------------------------------------------------------


def desired_condition(session: Session, profile: Profile) -> ColumnElement[bool]:
    """SQL on ``Device``: the profile should be on this device (assigned directly, through a group, or
    wanted by a blueprint: ``blueprints.scope``)."""
    group_ids = session.scalars(
        select(ProfileAssignment.group_id)
        .where(ProfileAssignment.profile_id == profile.id, ProfileAssignment.group_id.is_not(None))
    ).all()
    clauses: list[ColumnElement[bool]] = [Device.id.in_(
        select(ProfileAssignment.device_id)
        .where(ProfileAssignment.profile_id == profile.id, ProfileAssignment.device_id.is_not(None))
    )]
    for group_id in group_ids:
        try:
            clauses.append(group_condition(session, group_id))
        except ValueError as exc:
            raise Conflict(f"group {group_id} cannot be evaluated: {exc}") from None
    holds = exists().where(DeviceProfileState.device_id == Device.id, DeviceProfileState.profile_id == profile.id,
                           DeviceProfileState.status.in_(HELD))
    wanted = profile_wanted(session, profile.id, holds)  # the blueprints that hold the profile
    if wanted is not None:
        clauses.append(wanted)
    return or_(*clauses)


def refresh_states(
    session: Session, profile_ids: Sequence[int] | None = None, device_ids: Sequence[int] | None = None
) -> None:
    """Bring states up to date from command results and ProfileList answers (a few UPDATEs)."""
    state = DeviceProfileState
    now = utcnow()

    def command_in(statuses: Sequence[str]) -> ColumnElement[bool]:
        return exists().where(Command.uuid == state.command_uuid, Command.status.in_(list(statuses)))

    scope = state.profile_id.in_(list(profile_ids)) if profile_ids is not None else true()
    if device_ids is not None:
        scope = and_(scope, in_values(session, state.device_id, device_ids, integer=True))
    failed = (CommandStatus.ERROR.value, CommandStatus.COMMAND_FORMAT_ERROR.value)
    dropped = (CommandStatus.CANCELLED.value, CommandStatus.EXPIRED.value)
    steps = [
        (AssignmentStatus.SCHEDULED, [CommandStatus.ACKNOWLEDGED.value], AssignmentStatus.INSTALLED, None),
        (AssignmentStatus.SCHEDULED, failed, AssignmentStatus.FAILED, "the device refused InstallProfile"),
        (AssignmentStatus.SCHEDULED, dropped, AssignmentStatus.FAILED, "InstallProfile was cancelled or expired"),
        (AssignmentStatus.REMOVAL_SCHEDULED, [CommandStatus.ACKNOWLEDGED.value], AssignmentStatus.REMOVED, None),
        (AssignmentStatus.REMOVAL_SCHEDULED, failed + dropped, AssignmentStatus.FAILED,
         "RemoveProfile failed, was cancelled or expired"),
    ]
    for before, command_statuses, after, detail in steps:
        session.execute(
            update(state)
            .where(scope, state.status == before.value, command_in(command_statuses))
            .values(status=after.value, detail=detail, updated_at=now)
        )
    # the device's own ProfileList says it is installed
    reported = exists().where(
        InstalledProfile.device_id == state.device_id,
        Profile.id == state.profile_id,
        InstalledProfile.identifier == Profile.identifier,
        InstalledProfile.reported_at >= state.updated_at,
    )
    session.execute(
        update(state)
        .where(scope, state.status.in_([AssignmentStatus.SCHEDULED.value, AssignmentStatus.FAILED.value]), reported)
        .values(status=AssignmentStatus.INSTALLED.value, detail="reported by ProfileList", updated_at=now)
    )


_RECONCILE_LOCK_NAMESPACE = 0x4D444D00  # "MDM\0": keeps our advisory keys apart from other users'


def _serialize_reconciles(session: Session, profile_id: int) -> None:
    """Let one reconcile of a profile run at a time, until its transaction ends.

    Two concurrent reconciles would each see the other's devices as not yet scheduled and queue
    InstallProfile twice. PostgreSQL gets a transaction-scoped advisory lock per profile; SQLite
    transactions already hold the database write lock (``BEGIN IMMEDIATE``).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:namespace, :profile_id)"),
            {"namespace": _RECONCILE_LOCK_NAMESPACE, "profile_id": profile_id},
        )


def reconcile(
    session: Session, profile: Profile, *, actor: str | None, box: SecretBox,
    device_ids: Sequence[int] | None = None,
) -> dict[str, int]:
    """Queue InstallProfile / RemoveProfile so the devices match the profile's assignments.

    ``device_ids`` limits the work to those devices (one device's enrollment or inventory change):
    the same statements, restricted, and the profile is only signed when one of them needs it.
    ``box`` opens the profile's sealed secrets and the signing key, and seals the queued command.
    A failed install of the current revision is not retried automatically (a new revision, or
    unassigning and assigning again, retries it).
    """
    _serialize_reconciles(session, profile.id)
    refresh_states(session, [profile.id], device_ids)
    scope = in_values(session, Device.id, device_ids, integer=True) if device_ids is not None else true()
    state = aliased(DeviceProfileState)
    desired = desired_condition(session, profile)
    holds_current = exists().where(
        state.device_id == Device.id, state.profile_id == profile.id, state.status.in_(HELD),
        state.revision >= profile.revision,
    )
    holds_any = exists().where(state.device_id == Device.id, state.profile_id == profile.id,
                               state.status.in_(HELD))
    now = utcnow()
    declarative = delivered_declaratively(session, profile.id, within=scope if device_ids is not None else None)
    if declarative is not None:
        # where a declarative blueprint delivers it (a legacy-profile declaration), MDM leaves it alone
        scope = and_(scope, not_(declarative))
    to_install = and_(scope, desired, manageable(), not_(holds_current))
    plans: list[QueuePlan] = []
    if device_ids is None or session.scalar(select(Device.id).where(to_install).limit(1)) is not None:
        install = validate_command("InstallProfile", {"Payload": profile_bytes(session, profile, box, signed=True)})
        plans.append(QueuePlan("InstallProfile", install, condition=to_install))
    if profile.identifier:
        plans.append(QueuePlan("RemoveProfile", {"Identifier": profile.identifier},
                               condition=and_(scope, not_(desired), manageable(), holds_any)))
    queued = dict(zip((plan.request_type for plan in plans), enqueue_where(session, true(), plans, actor=actor,
                                                                         now=now, box=box), strict=True))
    installed = queued.get("InstallProfile", [])
    to_remove = queued.get("RemoveProfile", [])
    # devices that left management keep no claim on the profile
    session.execute(
        update(DeviceProfileState)
        .where(DeviceProfileState.profile_id == profile.id, DeviceProfileState.status.in_(HELD),
               DeviceProfileState.device_id.in_(select(Device.id).where(scope, not_(manageable()))))
        .values(status=AssignmentStatus.REMOVED.value, detail="the device left management", updated_at=now)
    )
    touched = [device_id for device_id, _ in installed + to_remove]
    if touched:
        session.execute(delete(DeviceProfileState).where(
            DeviceProfileState.profile_id == profile.id,
            in_values(session, DeviceProfileState.device_id, touched, integer=True),
        ))
        session.execute(insert(DeviceProfileState), [
            {"device_id": d, "profile_id": profile.id, "status": AssignmentStatus.SCHEDULED.value,
             "revision": profile.revision, "command_uuid": u, "detail": None, "updated_at": now}
            for d, u in installed
        ] + [
            {"device_id": d, "profile_id": profile.id, "status": AssignmentStatus.REMOVAL_SCHEDULED.value,
             "revision": profile.revision, "command_uuid": u, "detail": None, "updated_at": now}
            for d, u in to_remove
        ])
    if installed or to_remove:
        record_event(session, "profile:reconcile", "profiles", profile.id,
                     {"revision": profile.revision, "install_queued": len(installed),
                      "removal_queued": len(to_remove), **({"devices": len(device_ids)} if device_ids else {})},
                     actor=actor)
    return {"install_queued": len(installed), "removal_queued": len(to_remove)}


def reconcile_devices(
    session: Session, device_ids: Sequence[int], *, actor: str | None, box: SecretBox,
    new_enrollment: bool = False,
) -> dict[str, int]:
    """Reconcile every assignment that can concern these devices, for these devices only.

    Set-based over the devices (one reconcile per assigned profile, restricted to them), so
    enrollment, admission and inventory changes of a few devices never walk the whole fleet. Only
    admitted devices get commands here: a pending device receives its profiles when it is accepted
    (no profile, with the secrets it may carry, waits in the queue of an unadmitted device).
    ``new_enrollment``: the devices just enrolled (again), so what an earlier enrollment installed
    is gone with it and is queued anew.
    """
    ids = list(dict.fromkeys(device_ids))
    totals = {"profiles": 0, "install_queued": 0, "removal_queued": 0}
    if not ids:
        return totals
    if new_enrollment:
        session.execute(
            update(DeviceProfileState)
            .where(in_values(session, DeviceProfileState.device_id, ids, integer=True),
                   DeviceProfileState.status != AssignmentStatus.REMOVED.value)
            .values(status=AssignmentStatus.REMOVED.value, detail="the device enrolled again", updated_at=utcnow())
        )
    admitted = list(session.scalars(
        select(Device.id).where(in_values(session, Device.id, ids, integer=True),
                                Device.admission_status == AdmissionStatus.ACCEPTED.value)
    ))
    if not admitted:
        return totals
    profile_ids = session.scalars(
        select(ProfileAssignment.profile_id).distinct()
        .where(or_(ProfileAssignment.group_id.is_not(None),
                   in_values(session, ProfileAssignment.device_id, admitted, integer=True)))
        .order_by(ProfileAssignment.profile_id)
    ).all()
    for profile_id in profile_ids:
        try:
            counts = reconcile(session, session.get(Profile, profile_id), actor=actor, box=box, device_ids=admitted)
        except Conflict as exc:
            # a group that cannot be evaluated must not break a device's check-in or an admission:
            # the other profiles still follow, and the admin sees the error when reconciling this one
            log.warning("profile %s not reconciled for devices %s: %s", profile_id, admitted[:10], exc.detail)
            continue
        totals["profiles"] += 1
        totals["install_queued"] += counts["install_queued"]
        totals["removal_queued"] += counts["removal_queued"]
    return totals


def reconcile_all(
    session: Session, *, actor: str | None, box: SecretBox, groups_only: bool = False
) -> dict[str, int]:
    """Reconcile every assigned profile (or those assigned to a group: after membership changes)."""
    stmt = select(ProfileAssignment.profile_id).distinct()
    if groups_only:
        stmt = stmt.where(ProfileAssignment.group_id.is_not(None))
    totals = {"profiles": 0, "install_queued": 0, "removal_queued": 0}
    for profile_id in session.scalars(stmt.order_by(ProfileAssignment.profile_id)).all():
        counts = reconcile(session, session.get(Profile, profile_id), actor=actor, box=box)
        totals["profiles"] += 1
        totals["install_queued"] += counts["install_queued"]
        totals["removal_queued"] += counts["removal_queued"]
    return totals


def states_query(profile_id: int | None = None, device_id: int | None = None):
    stmt = select(DeviceProfileState)
    if profile_id is not None:
        stmt = stmt.where(DeviceProfileState.profile_id == profile_id)
    if device_id is not None:
        stmt = stmt.where(DeviceProfileState.device_id == device_id)
    return stmt


def resolve_profiles(session: Session, profile_ids: Sequence[int]) -> list[Profile]:
    """``profile_ids`` of ManageEngine's device-profile calls (``schemas.ProfileIdsSchema``); 422 for
    unknown ones."""
    ids = list(dict.fromkeys(profile_ids))
    profiles = {p.id: p for p in session.scalars(select(Profile).where(Profile.id.in_(ids)))}
    missing = [(i, p) for i, p in enumerate(ids) if p not in profiles]
    if missing:
        raise UnprocessableEntity("unknown profiles; nothing was changed", errors=[
            {"detail": f"no profile {p}", "pointer": f"/profile_ids/{i}"} for i, p in missing])
    return [profiles[i] for i in ids]

