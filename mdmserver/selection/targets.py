"""The devices a bulk request targets: named devices, groups (smart included), a filter, or all of
them, as one SQL condition on ``devices`` (never a list of ids in Python)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, select, true
from sqlalchemy.orm import Session

from mdmserver.api.jsonapi import is_id
from mdmserver.devices.models import Device
from mdmserver.errors import UnprocessableEntity
from mdmserver.groups.models import DeviceGroup
from mdmserver.selection.filters import conditions_from_mapping, group_condition
from mdmserver.selection.resolve import MAX_NAMED_DEVICES, resolve_devices
from mdmserver.selection.sql import in_values

#: Most groups one request may name.
MAX_GROUPS = 100


@dataclass
class Targets:
    condition: ColumnElement[bool]
    missing: list[str] = field(default_factory=list)



def select_targets(
    session: Session, *, devices: Any = None, groups: Any = None, filter_: Any = None, all_devices: bool = False
) -> Targets:
    clauses: list[ColumnElement[bool]] = []
    missing: list[str] = []
    if all_devices:
        clauses.append(true())
    if devices is not None:
        if not isinstance(devices, list) or len(devices) > MAX_NAMED_DEVICES:
            raise UnprocessableEntity(f"devices must be an array of at most {MAX_NAMED_DEVICES} ids, UDIDs or "
                                      "serial numbers", pointer="/devices")
        for index, item in enumerate(devices):
            if isinstance(item, bool) or not isinstance(item, str | int) or not str(item).strip():
                raise UnprocessableEntity("a device is named by its id, UDID or serial number",
                                          pointer=f"/devices/{index}")
        resolved = resolve_devices(session, devices, pointer="/devices")
        missing = resolved.missing
        clauses.append(in_values(session, Device.id, resolved.ids, integer=True) if resolved.ids else false())
    if groups is not None:
        if not isinstance(groups, list) or len(groups) > MAX_GROUPS:
            raise UnprocessableEntity(f"groups must be an array of at most {MAX_GROUPS} group ids", pointer="/groups")
        ids = []
        for index, item in enumerate(groups):
            text = str(item).strip() if isinstance(item, str | int) and not isinstance(item, bool) else ""
            if not is_id(text):
                raise UnprocessableEntity("a group is named by its id", pointer=f"/groups/{index}")
            ids.append(int(text))
        known = set(session.scalars(select(DeviceGroup.id).where(DeviceGroup.id.in_(ids))))
        absent = [(i, g) for i, g in enumerate(ids) if g not in known]
        if absent:
            raise UnprocessableEntity("unknown device groups; nothing was done", errors=[
                {"detail": f"no device group {g}", "pointer": f"/groups/{i}"} for i, g in absent])
        for group_id in dict.fromkeys(ids):
            try:
                clauses.append(group_condition(session, group_id))
            except ValueError as exc:
                raise UnprocessableEntity(str(exc), pointer="/groups") from None
    if filter_ is not None:
        if not isinstance(filter_, dict) or not filter_:
            raise UnprocessableEntity("filter must be a non-empty object (use all_devices for every device)",
                                      pointer="/filter")
        try:
            clauses.append(and_(true(), *conditions_from_mapping(session, filter_)))
        except ValueError as exc:
            raise UnprocessableEntity(str(exc), pointer="/filter") from None
    return Targets(condition=or_(*clauses) if clauses else false(), missing=missing)
