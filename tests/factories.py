"""Set-based seeding of device rows, for benchmarks, demos and tests.

Devices made here have not enrolled through the protocol (no identity certificate, no push token);
they are inventory rows that behave like enrolled devices for the admin API.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from mdmserver.db import utcnow
from mdmserver.devices.models import Device

_PROFILES = (
    ("ios", "iPhone15,2", "iPhone", "17.4"),
    ("ipados", "iPad13,4", "iPad", "17.3"),
    ("macos", "Mac14,2", "MacBook Air", "14.4"),
    ("ios", "iPhone14,7", "iPhone", "16.7"),
)
CHUNK = 10000


def device_row(index: int, **overrides: Any) -> dict[str, Any]:
    platform, product, model_name, os_version = _PROFILES[index % len(_PROFILES)]
    now = utcnow()
    row = {
        "udid": str(uuid.uuid4()).upper(),
        "serial_number": f"SEED{index:08d}",
        "platform": platform,
        "product_name": product,
        "model": product,
        "model_name": model_name,
        "os_version": os_version,
        "device_name": f"Device {index}",
        "admission_status": "accepted",
        "enrolled": True,
        "enrolled_at": now,
        "is_supervised": index % 3 != 0,
        "lost_mode_enabled": False,
        "awaiting_configuration": False,
        "created_at": now,
        "updated_at": now,
    }
    row.update(overrides)
    return row


def seed_devices(session: Session, count: int, *, start: int = 0, **overrides: Any) -> list[int]:
    """Insert ``count`` devices with ``executemany`` in chunks; returns their ids."""
    rows = [device_row(start + i, **overrides) for i in range(count)]
    for offset in range(0, len(rows), CHUNK):
        session.execute(insert(Device), rows[offset : offset + CHUNK])
    udids = [row["udid"] for row in rows]
    ids: list[int] = []
    for offset in range(0, len(udids), CHUNK):
        ids.extend(session.scalars(select(Device.id).where(Device.udid.in_(udids[offset : offset + CHUNK]))))
    return sorted(ids)


def make_device(session: Session, index: int = 0, **overrides: Any) -> Device:
    """One device row (ORM), flushed."""
    values = device_row(index, **overrides)
    if "serial_number" not in overrides:
        values["serial_number"] = f"T{uuid.uuid4().hex[:10].upper()}"
    device = Device(**values)
    session.add(device)
    session.flush()
    return device
