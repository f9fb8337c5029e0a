"""Custom attributes with Ivanti's semantics: replace all, merge (keep, update, add), delete."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from mdmserver.attributes.models import CustomAttribute
from mdmserver.audit.service import record_event
from mdmserver.db import utcnow
from mdmserver.devices.models import Device
from mdmserver.selection.sql import in_values


def get_attributes(session: Session, device_id: int) -> dict[str, str]:
    rows = session.execute(
        select(CustomAttribute.name, CustomAttribute.value).where(CustomAttribute.device_id == device_id)
    )
    return {name: value for name, value in rows}


def replace_attributes(session: Session, device: Device, values: dict[str, str]) -> dict[str, str]:
    """The device's attributes become exactly ``values``."""
    session.execute(delete(CustomAttribute).where(CustomAttribute.device_id == device.id))
    _insert(session, device.id, values)
    record_event(session, "device:custom_attributes:replace", "devices", device.id, {"names": sorted(values)})
    return get_attributes(session, device.id)


def merge_attributes(session: Session, device: Device, values: dict[str, Any]) -> dict[str, str]:
    """Keep the attributes not named, update those named, add new ones; a ``null`` value deletes."""
    current = get_attributes(session, device.id)
    removed = [name for name, value in values.items() if value is None]
    changed = {n: v for n, v in values.items() if v is not None and n in current and current[n] != v}
    added = {n: v for n, v in values.items() if v is not None and n not in current}
    if removed:
        session.execute(
            delete(CustomAttribute).where(CustomAttribute.device_id == device.id, CustomAttribute.name.in_(removed))
        )
    now = utcnow()
    for name, value in changed.items():
        session.execute(
            update(CustomAttribute)
            .where(CustomAttribute.device_id == device.id, CustomAttribute.name == name)
            .values(value=value, updated_at=now)
        )
    _insert(session, device.id, added)
    record_event(session, "device:custom_attributes:merge", "devices", device.id,
                 {"added": sorted(added), "updated": sorted(changed), "removed": sorted(removed)})
    return get_attributes(session, device.id)


def delete_attributes(session: Session, device: Device, names: Sequence[str] | None) -> dict[str, str]:
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


def _insert(session: Session, device_id: int, values: dict[str, str]) -> None:
    if values:
        now = utcnow()
        session.execute(
            insert(CustomAttribute),
            [{"device_id": device_id, "name": n, "value": v, "updated_at": now} for n, v in values.items()],
        )
