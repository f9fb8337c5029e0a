"""Which devices a blueprint wants its items on, as SQL conditions on ``Device``.

The blueprint tables live in ``records/blueprints.py`` and these conditions here, below the features, for
the same reason as the other tables selection reads: the profile and app reconciles
(``assignments.service``, ``app_assignments.service``) read them, and ``blueprints.service`` builds on
those reconciles. The reconciles add these to the devices their direct and group assignments want, so an item is installed where anything wants it and
removed only where nothing does: overlaps resolve in one place (docs/blueprints.md).

A blueprint wants its items on a device when

- it is *active* (enabled, and its ``start_on`` has passed) and the device is in its scope (global, or
  one of its devices, or a member of one of its groups, smart groups and subgroups included); or
- the device was unscoped once the blueprint was applied (``unscope_if_applied``) and holds the item:
  it keeps what it got, and gets nothing more from this blueprint; or
- the device was ever in its scope, holds the item, and the blueprint keeps its items when a device
  leaves the scope (``remove_if_no_scope`` false), whether the device left or the blueprint was
  disabled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true
from sqlalchemy.orm import Session

from mdmserver.db import utcnow
from mdmserver.errors import Conflict
from mdmserver.protocol.ddm import DDM_MINIMUM, supports_ddm
from mdmserver.records.blueprints import (
    Blueprint,
    BlueprintApp,
    BlueprintMember,
    BlueprintProfile,
    BlueprintTarget,
    MemberStatus,
)
from mdmserver.records.devices import Device
from mdmserver.selection.filters import group_condition
from mdmserver.selection.sql import in_values

_NOTHING = false()


def is_active(blueprint: Blueprint, now: datetime) -> bool:
    """Enabled, and started (nothing is queued before ``start_on``)."""
    return blueprint.enabled and (blueprint.start_on is None or blueprint.start_on <= now)


def scope_condition(session: Session, blueprint: Blueprint) -> ColumnElement[bool]:
    """SQL on ``Device``: in the blueprint's scope (whatever its state and its members)."""
    if blueprint.is_global:
        return true()
    rows = session.execute(select(BlueprintTarget.device_id, BlueprintTarget.group_id)
                           .where(BlueprintTarget.blueprint_id == blueprint.id)).all()
    clauses: list[ColumnElement[bool]] = []
    device_ids = [r.device_id for r in rows if r.device_id is not None]
    if device_ids:
        clauses.append(Device.id.in_(device_ids))
    for row in rows:
        if row.group_id is None:
            continue
        try:
            clauses.append(group_condition(session, row.group_id))
        except ValueError as exc:
            raise Conflict(f"group {row.group_id} of blueprint {blueprint.id} cannot be evaluated: {exc}") from None
    return or_(*clauses) if clauses else false()


def member_in(blueprint_id: int, statuses: Sequence[str] | None = None) -> ColumnElement[bool]:
    """SQL on ``Device``: the device has a member row of the blueprint (in one of ``statuses``)."""
    condition = exists().where(BlueprintMember.blueprint_id == blueprint_id, BlueprintMember.device_id == Device.id)
    if statuses is not None:
        condition = exists().where(BlueprintMember.blueprint_id == blueprint_id,
                                   BlueprintMember.device_id == Device.id, BlueprintMember.status.in_(list(statuses)))
    return condition


def enforced_condition(session: Session, blueprint: Blueprint, now: datetime) -> ColumnElement[bool]:
    """SQL on ``Device``: the blueprint applies to the device now (active, in scope, not unscoped)."""
    if not is_active(blueprint, now):
        return _NOTHING
    return and_(scope_condition(session, blueprint),
                ~member_in(blueprint.id, [MemberStatus.UNSCOPED.value]))


def wants_condition(
    session: Session, blueprint: Blueprint, now: datetime, holds: ColumnElement[bool]
) -> ColumnElement[bool]:
    """SQL on ``Device``: the blueprint wants an item on the device (the module's three cases).
    ``holds``: the device has the item (queued or installed); a device out of the scope keeps what it
    holds, and gets nothing new."""
    keeps = and_(member_in(blueprint.id) if not blueprint.remove_if_no_scope
                 else member_in(blueprint.id, [MemberStatus.UNSCOPED.value]), holds)
    enforced = enforced_condition(session, blueprint, now)
    return keeps if enforced is _NOTHING else or_(enforced, keeps)


def profile_wanted(session: Session, profile_id: int, holds: ColumnElement[bool]) -> ColumnElement[bool] | None:
    """SQL on ``Device``: some blueprint wants the profile there (``None``: no blueprint holds it).
    ``holds``: the device holds the profile (its state is queued, installed, or a failure not retried)."""
    blueprints = session.scalars(
        select(Blueprint).join(BlueprintProfile, BlueprintProfile.blueprint_id == Blueprint.id)
        .where(BlueprintProfile.profile_id == profile_id).order_by(Blueprint.apply_order, Blueprint.id)
    ).all()
    if not blueprints:
        return None
    now = utcnow()
    return or_(*(wants_condition(session, b, now, holds) for b in blueprints))


@dataclass(frozen=True)
class AppWant:
    """A blueprint's wish for an app: its install options and the devices it wants it on."""

    blueprint_id: int
    options: dict[str, Any]
    condition: ColumnElement[bool]


def app_wanted(session: Session, app_id: int, holds: ColumnElement[bool]) -> list[AppWant]:
    """The blueprints that hold the app, lowest ``apply_order`` first, with their options. ``holds``: the
    device holds the app (its state is queued, installing, installed, or a failure not retried)."""
    rows = session.execute(
        select(Blueprint, BlueprintApp.options).join(BlueprintApp, BlueprintApp.blueprint_id == Blueprint.id)
        .where(BlueprintApp.app_id == app_id).order_by(Blueprint.apply_order, Blueprint.id)
    ).all()
    now = utcnow()
    return [AppWant(blueprint.id, dict(options or {}), wants_condition(session, blueprint, now, holds))
            for blueprint, options in rows]


def declarative_device_ids(session: Session, condition: ColumnElement[bool]) -> list[int]:
    """The devices meeting ``condition`` that take declarations, by their inventory
    (``protocol.ddm.supports_ddm``): one statement; the version test is done here, not in SQL."""
    rows = session.execute(select(Device.id, Device.platform, Device.os_version)
                           .where(condition, Device.platform.in_(list(DDM_MINIMUM)))).all()
    return [r.id for r in rows if supports_ddm(r.platform, r.os_version)]


def declarative_profile_blueprints(session: Session, now: datetime, profile_id: int | None = None) -> list[Blueprint]:
    """The active blueprints that send their profiles as declarations (``declarative_profiles``) and hold a
    profile (``profile_id``, when given), lowest ``apply_order`` first."""
    stmt = (select(Blueprint).where(Blueprint.declarative_profiles.is_(True), Blueprint.enabled.is_(True),
                                    exists().where(BlueprintProfile.blueprint_id == Blueprint.id,
                                                   *([BlueprintProfile.profile_id == profile_id]
                                                     if profile_id is not None else [])))
            .order_by(Blueprint.apply_order, Blueprint.id))
    return [b for b in session.scalars(stmt) if is_active(b, now)]


def delivered_declaratively(session: Session, profile_id: int,
                            within: ColumnElement[bool] | None = None) -> ColumnElement[bool] | None:
    """SQL on ``Device``: the profile reaches the device as a legacy-profile declaration (a declarative
    blueprint holding it applies to the device now, and the device takes declarations). There, MDM
    commands neither install nor remove it, whoever else wants it (docs/ddm.md). ``within``: only these
    devices are asked about (a reconcile of a few). ``None``: nowhere."""
    blueprints = declarative_profile_blueprints(session, utcnow(), profile_id)
    if not blueprints:
        return None
    now = utcnow()
    condition = or_(*(enforced_condition(session, b, now) for b in blueprints))
    ids = declarative_device_ids(session, condition if within is None else and_(within, condition))
    return in_values(session, Device.id, ids, integer=True)
