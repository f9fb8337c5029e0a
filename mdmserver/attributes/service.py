"""Custom attributes with Ivanti's semantics: replace all, merge (keep, update, add), delete."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from mdmserver.audit.service import record_event
from mdmserver.db import utcnow
from mdmserver.errors import UnprocessableEntity
from mdmserver.records.attributes import MAX_VALUES, CustomAttribute
from mdmserver.records.devices import Device
from mdmserver.selection.sql import in_values

Values = dict[str, list[str]]


def get_attributes(session: Session, device_id: int) -> Values:
    """name → its values, in the order they were written."""
    rows = session.execute(
        select(CustomAttribute.name, CustomAttribute.value)
        .where(CustomAttribute.device_id == device_id)
        .order_by(CustomAttribute.id)
    )
    out: Values = {}
    for name, value in rows:
        out.setdefault(name, []).append(value)
    return out


def attributes_of(session: Session, device_ids: Sequence[int]) -> dict[int, Values]:
    """device id → its attributes, for one page of devices (one query)."""
    out: dict[int, Values] = {}
    if device_ids:
        rows = session.execute(
            select(CustomAttribute.device_id, CustomAttribute.name, CustomAttribute.value)
            .where(in_values(session, CustomAttribute.device_id, list(device_ids), integer=True))
            .order_by(CustomAttribute.id)
        )
        for device_id, name, value in rows:
            out.setdefault(device_id, {}).setdefault(name, []).append(value)
    return out


def replace_attributes(session: Session, device: Device, values: Values) -> Values:
    """The device's attributes become exactly ``values``."""
    session.execute(delete(CustomAttribute).where(CustomAttribute.device_id == device.id))
    _insert(session, device.id, values)
    record_event(session, "device:custom_attributes:replace", "devices", device.id, {"names": sorted(values)})
    return get_attributes(session, device.id)


def merge_attributes(session: Session, device: Device, values: dict[str, list[str] | None], *,
                     append: bool = False) -> Values:
    """Keep the attributes not named, add new ones, and for those named: replace their values, or with
    ``append`` add the values they lack (Ivanti's ``forceOverwrite: false``); ``None`` deletes one."""
    current = get_attributes(session, device.id)
    removed = [name for name, items in values.items() if items is None and name in current]
    added = {n: items for n, items in values.items() if items is not None and n not in current}
    kept = {n: items for n, items in values.items() if items is not None and n in current}
    if append:  # only the values each lacks
        changed = {n: missing for n, items in kept.items() if (missing := [v for v in items if v not in current[n]])}
        full = [n for n, items in changed.items() if len(current[n]) + len(items) > MAX_VALUES]
        if full:
            raise UnprocessableEntity(f"at most {MAX_VALUES} values per attribute",
                                      errors=[{"detail": f"at most {MAX_VALUES} values per attribute",
                                               "pointer": f"/{n}"} for n in full])
    else:  # the values replace the current ones
        changed = {n: items for n, items in kept.items() if current[n] != items}
        removed_values = list(changed)
        if removed_values:
            session.execute(delete(CustomAttribute).where(
                CustomAttribute.device_id == device.id, CustomAttribute.name.in_(removed_values)))
    if removed:
        session.execute(
            delete(CustomAttribute).where(CustomAttribute.device_id == device.id, CustomAttribute.name.in_(removed))
        )
    _insert(session, device.id, changed)
    _insert(session, device.id, added)
    record_event(session, "device:custom_attributes:merge", "devices", device.id,
                 {"added": sorted(added), "updated": sorted(changed), "removed": sorted(removed),
                  "append": append})
    return get_attributes(session, device.id)


def delete_attributes(session: Session, device: Device, names: Sequence[str] | None) -> Values:
    """Delete all the device's attributes, or only ``names``."""
    stmt = delete(CustomAttribute).where(CustomAttribute.device_id == device.id)
    if names is not None:
        stmt = stmt.where(CustomAttribute.name.in_(list(names)))
    session.execute(stmt)
    record_event(session, "device:custom_attributes:delete", "devices", device.id,
                 {"names": None if names is None else sorted(names)})
    return get_attributes(session, device.id)


def bulk_delete(session: Session, names: Sequence[str], device_ids: Iterable[int] | None) -> int:
    """Delete the named attributes from the given devices (or from every device): one DELETE."""
    stmt = delete(CustomAttribute).where(CustomAttribute.name.in_(list(names)))
    ids = None if device_ids is None else list(device_ids)
    if ids is not None:
        stmt = stmt.where(in_values(session, CustomAttribute.device_id, ids, integer=True))
    count = session.execute(stmt).rowcount or 0
    record_event(session, "custom_attributes:bulk_delete", "custom_attributes", ",".join(sorted(names)),
                 {"names": sorted(names), "devices": None if ids is None else len(ids), "deleted": count})
    return count


def attribute_names(session: Session) -> list[tuple[str, int]]:
    """Every attribute name in use, with the number of devices that have it (one GROUP BY)."""
    rows = session.execute(
        select(CustomAttribute.name, func.count())
        .group_by(CustomAttribute.name)
        .order_by(CustomAttribute.name)
    )
    return [(name, count) for name, count in rows]


def _insert(session: Session, device_id: int, values: Values) -> None:
    rows = [{"device_id": device_id, "name": n, "value": v, "updated_at": utcnow()}
            for n, items in values.items() for v in items]
    if rows:
        session.execute(insert(CustomAttribute), rows)
