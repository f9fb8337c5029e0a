"""The devices a bulk request targets: named devices, groups (smart included), a filter, or all of
them, as one SQL condition on ``devices`` (never a list of ids in Python)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, select, true
from sqlalchemy.orm import Session

from mdmserver.errors import UnprocessableEntity
from mdmserver.records.devices import Device
from mdmserver.records.groups import DeviceGroup
from mdmserver.selection.filters import conditions_from_mapping, group_condition
from mdmserver.selection.resolve import resolve_devices
from mdmserver.selection.sql import in_values

#: Most groups one request may name.
MAX_GROUPS = 100


@dataclass
class Targets:
    condition: ColumnElement[bool]
    missing: list[str] = field(default_factory=list)



def select_targets(
    session: Session,
    *,
    devices: Sequence[str | int] | None = None,
    groups: Sequence[int] | None = None,
    filter_: Mapping[str, Any] | None = None,
    all_devices: bool = False,
) -> Targets:
    """The devices named (ids, UDIDs or serial numbers), in the groups, matching the filter, or all of them.

    The arguments are already shaped (the request's schema loaded them); unknown groups or a filter that
    does not apply are 422 (nothing is done), unknown devices are reported back in ``missing``.
    """
    clauses: list[ColumnElement[bool]] = []
    missing: list[str] = []
    if all_devices:
        clauses.append(true())
    if devices is not None:
        resolved = resolve_devices(session, devices, pointer="/devices")
        missing = resolved.missing
        clauses.append(in_values(session, Device.id, resolved.ids, integer=True) if resolved.ids else false())
    if groups is not None:
        if len(groups) > MAX_GROUPS:
            raise UnprocessableEntity(f"groups must be an array of at most {MAX_GROUPS} group ids", pointer="/groups")
        known = set(session.scalars(select(DeviceGroup.id).where(DeviceGroup.id.in_(groups))))
        absent = [(i, g) for i, g in enumerate(groups) if g not in known]
        if absent:
            raise UnprocessableEntity("unknown device groups; nothing was done", errors=[
                {"detail": f"no device group {g}", "pointer": f"/groups/{i}"} for i, g in absent])
        for group_id in dict.fromkeys(groups):
            try:
                clauses.append(group_condition(session, group_id))
            except ValueError as exc:
                raise UnprocessableEntity(str(exc), pointer="/groups") from None
    if filter_ is not None:
        try:
            clauses.append(and_(true(), *conditions_from_mapping(session, filter_)))
        except ValueError as exc:
            raise UnprocessableEntity(str(exc), pointer="/filter") from None
    return Targets(condition=or_(*clauses) if clauses else false(), missing=missing)
