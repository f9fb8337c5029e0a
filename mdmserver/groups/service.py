"""Device groups: nesting, static members, smart filters, membership both ways."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, insert, literal, select, true
from sqlalchemy.orm import Session

from mdmserver.api.jsonapi import is_id
from mdmserver.audit.service import record_event
from mdmserver.db import utcnow
from mdmserver.errors import Conflict, NotFound, UnprocessableEntity
from mdmserver.records.devices import Device
from mdmserver.records.groups import DeviceGroup, GroupKind, GroupMember
from mdmserver.selection.filters import conditions_from_mapping, group_condition
from mdmserver.selection.sql import in_values

POINTER = "/data/attributes"


def get_group(session: Session, group_id: Any) -> DeviceGroup:
    text = str(group_id).strip()
    group = session.get(DeviceGroup, int(text)) if is_id(text) else None
    if group is None:
        raise NotFound(f"no device group {text!r}")
    return group


def groups_query() -> Select:
    return select(DeviceGroup)


def members_condition(session: Session, group: DeviceGroup) -> ColumnElement[bool]:
    """The SQL condition on ``Device`` selecting the group's members (subgroups included)."""
    try:
        return group_condition(session, group.id)
    except ValueError as exc:
        raise Conflict(f"the group's membership cannot be evaluated: {exc}") from None


def _check_filter(session: Session, kind: str, value: Any) -> dict[str, Any] | None:
    if kind == GroupKind.STATIC:
        if value:
            raise UnprocessableEntity("a static group has no filter; use kind=smart",
                                      pointer=f"{POINTER}/filter")
        return None
    if not value:
        raise UnprocessableEntity("a smart group needs a non-empty device filter", pointer=f"{POINTER}/filter")
    try:
        conditions_from_mapping(session, value)
    except ValueError as exc:
        raise UnprocessableEntity(str(exc), pointer=f"{POINTER}/filter") from None
    return {key: (str(v).lower() if isinstance(v, bool) else str(v)) for key, v in value.items()}


def _check_parent(session: Session, group: DeviceGroup | None, parent_id: int | None) -> None:
    if parent_id is None:
        return
    parent = session.get(DeviceGroup, parent_id)
    if parent is None:
        raise UnprocessableEntity(f"no device group {parent_id} to be the parent", pointer=f"{POINTER}/parent_id")
    if group is None:
        return
    parents = dict(session.execute(select(DeviceGroup.id, DeviceGroup.parent_id)).all())
    current: int | None = parent_id
    while current is not None:
        if current == group.id:
            raise UnprocessableEntity("a group cannot be nested inside itself or its subgroups",
                                      pointer=f"{POINTER}/parent_id")
        current = parents.get(current)


def _check_name(session: Session, name: str, group: DeviceGroup | None) -> None:
    existing = session.scalar(select(DeviceGroup.id).where(DeviceGroup.name == name))
    if existing is not None and (group is None or existing != group.id):
        raise Conflict(f"a device group named {name!r} exists", pointer=f"{POINTER}/name")


def _check_no_cycles(session: Session) -> None:
    """Every group's membership can be evaluated (no smart group reaches itself through ``group``)."""
    roots = session.scalars(select(DeviceGroup.id).where(DeviceGroup.parent_id.is_(None))).all()
    for root in roots:
        try:
            group_condition(session, root)
        except ValueError as exc:
            raise UnprocessableEntity(str(exc), pointer=f"{POINTER}/filter") from None


def create_group(session: Session, values: dict[str, Any]) -> DeviceGroup:
    _check_name(session, values["name"], None)
    _check_parent(session, None, values.get("parent_id"))
    kind = values.get("kind", GroupKind.STATIC.value)
    group = DeviceGroup(
        name=values["name"], description=values.get("description"), kind=kind,
        parent_id=values.get("parent_id"), filter=_check_filter(session, kind, values.get("filter")),
    )
    session.add(group)
    session.flush()
    _check_no_cycles(session)
    record_event(session, "device_group:create", "device_groups", group.id,
                 {"name": group.name, "kind": kind, "filter": group.filter, "parent_id": group.parent_id})
    return group


def update_group(session: Session, group: DeviceGroup, values: dict[str, Any]) -> DeviceGroup:
    if "kind" in values and values["kind"] != group.kind:
        raise UnprocessableEntity("a group's kind cannot change; create a new group", pointer=f"{POINTER}/kind")
    if "name" in values:
        _check_name(session, values["name"], group)
        group.name = values["name"]
    if "description" in values:
        group.description = values["description"]
    if "parent_id" in values:
        _check_parent(session, group, values["parent_id"])
        group.parent_id = values["parent_id"]
    if "filter" in values:
        group.filter = _check_filter(session, group.kind, values["filter"])
    group.updated_at = utcnow()
    session.flush()
    _check_no_cycles(session)
    record_event(session, "device_group:update", "device_groups", group.id, dict(values))
    return group


def delete_group(session: Session, group: DeviceGroup) -> None:
    if session.scalar(select(DeviceGroup.id).where(DeviceGroup.parent_id == group.id).limit(1)) is not None:
        raise Conflict("the group has subgroups; delete or move them first")
    for other in session.scalars(select(DeviceGroup).where(DeviceGroup.kind == GroupKind.SMART)):
        if other.id != group.id and str((other.filter or {}).get("group", "")) == str(group.id):
            raise Conflict(f"smart group {other.id} ({other.name}) filters on this group")
    record_event(session, "device_group:delete", "device_groups", group.id, {"name": group.name})
    session.delete(group)
    session.flush()


def _require_static(group: DeviceGroup) -> None:
    if group.kind != GroupKind.STATIC:
        raise Conflict("a smart group's members come from its filter; they cannot be added or removed")


def add_members(session: Session, group: DeviceGroup, device_ids: Sequence[int]) -> int:
    """Add static members (already present ones are skipped): one SELECT and one executemany INSERT."""
    _require_static(group)
    wanted = list(dict.fromkeys(device_ids))
    present = set(session.scalars(
        select(GroupMember.device_id).where(GroupMember.group_id == group.id,
                                            in_values(session, GroupMember.device_id, wanted, integer=True))
    ))
    new = [device_id for device_id in wanted if device_id not in present]
    if new:
        now = utcnow()
        session.execute(insert(GroupMember), [{"group_id": group.id, "device_id": d, "added_at": now} for d in new])
    record_event(session, "device_group:members:add", "device_groups", group.id, {"added": len(new)})
    return len(new)


def remove_members(session: Session, group: DeviceGroup, device_ids: Sequence[int]) -> int:
    _require_static(group)
    count = session.execute(
        delete(GroupMember).where(GroupMember.group_id == group.id,
                                  in_values(session, GroupMember.device_id, list(device_ids), integer=True))
    ).rowcount or 0
    record_event(session, "device_group:members:remove", "device_groups", group.id, {"removed": count})
    return count


def groups_of_device(session: Session, device: Device) -> list[DeviceGroup]:
    """Every group the device belongs to: static memberships, matching smart groups, and their ancestors.

    One query for static memberships, one evaluating every smart group's filter for this device.
    """
    groups = list(session.scalars(select(DeviceGroup)))
    by_id = {g.id: g for g in groups}
    direct = set(session.scalars(select(GroupMember.group_id).where(GroupMember.device_id == device.id)))
    smart = [g for g in groups if g.kind == GroupKind.SMART]
    if smart:
        checked, columns = [], []
        for g in smart:
            try:
                condition = and_(true(), *conditions_from_mapping(session, g.filter or {}, _seen=frozenset({g.id})))
            except ValueError:
                continue  # a broken filter matches nothing here; the group's own endpoints say why
            checked.append(g.id)
            columns.append(select(literal(g.id)).where(Device.id == device.id, condition).exists().label(f"g{g.id}"))
        if columns:
            row = session.execute(select(*columns)).one()
            direct.update(gid for gid, matched in zip(checked, row, strict=True) if matched)
    member_of = set()
    for gid in direct:
        current = by_id.get(gid)
        while current is not None and current.id not in member_of:
            member_of.add(current.id)
            current = by_id.get(current.parent_id) if current.parent_id is not None else None
    return sorted((by_id[i] for i in member_of), key=lambda g: g.id)
