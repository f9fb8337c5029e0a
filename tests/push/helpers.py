"""Factories for push tests: pushable devices (the push certificate and topic are in tests/factories.py)."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid

from mdmserver.db import utcnow
from mdmserver.records.devices import Device
from tests.factories import TOPIC


def make_device(session, **overrides) -> Device:
    """An enrolled, accepted device with a push token (pushable), unless overridden."""
    now = utcnow()
    values = {
        "udid": secrets.token_hex(20).upper(),
        "serial_number": secrets.token_hex(6).upper(),
        "platform": "ios",
        "topic": TOPIC,
        "admission_status": "accepted",
        "enrolled": True,
        "enrolled_at": now,
        "push_token": secrets.token_bytes(32),
        "push_magic": str(uuid.uuid4()).upper(),
        "token_updated_at": now - dt.timedelta(minutes=1),
    }
    values.update(overrides)
    device = Device(**values)
    session.add(device)
    session.flush()
    return device


def make_devices(session, count: int, **overrides) -> list[int]:
    """Many pushable devices, inserted set-based; returns their ids."""
    from sqlalchemy import insert, select

    now = utcnow()
    prefix = secrets.token_hex(4).upper()
    rows = [
        {
            "udid": f"{prefix}-{i:08d}",
            "platform": "ios",
            "topic": TOPIC,
            "admission_status": "accepted",
            "enrolled": True,
            "push_token": secrets.token_bytes(32),
            "push_magic": f"MAGIC-{i}",
            "token_updated_at": now - dt.timedelta(minutes=1),
            "awaiting_configuration": False,
            "created_at": now,
            "updated_at": now,
            **overrides,
        }
        for i in range(count)
    ]
    for start in range(0, len(rows), 5000):
        session.execute(insert(Device), rows[start : start + 5000])
    return list(session.scalars(select(Device.id).where(Device.udid.like(f"{prefix}-%")).order_by(Device.id)))
