"""Device owners: users and the device → owner assignment (Ivanti's updateAccount)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.orm import Session

from mdmserver.api.jsonapi import is_id
from mdmserver.audit.service import record_event
from mdmserver.errors import Conflict, NotFound
from mdmserver.records.devices import Device
from mdmserver.records.users import DeviceOwnership, User

POINTER = "/data/attributes"


def get_user(session: Session, user_id: Any) -> User:
    text = str(user_id).strip()
    user = session.get(User, int(text)) if is_id(text) else None
    if user is None:
        raise NotFound(f"no user {text!r}")
    return user


def _check_unique(session: Session, values: dict[str, Any], user: User | None) -> None:
    for column in ("email", "uid"):
        value = values.get(column)
        if value is None:
            continue
        existing = session.scalar(select(User.id).where(getattr(User, column) == value))
        if existing is not None and (user is None or existing != user.id):
            raise Conflict(f"a user with this {column} exists (id {existing})", pointer=f"{POINTER}/{column}")


def create_user(session: Session, values: dict[str, Any]) -> User:
    _check_unique(session, values, None)
    user = User(**values)
    session.add(user)
    session.flush()
    record_event(session, "user:create", "users", user.id, {"email": user.email})
    return user


def update_user(session: Session, user: User, values: dict[str, Any]) -> User:
    _check_unique(session, values, user)
    for key, value in values.items():
        setattr(user, key, value)
    session.flush()
    record_event(session, "user:update", "users", user.id, dict(values))
    return user


def delete_user(session: Session, user: User) -> None:
    """Delete a user; the devices they owned are left without an owner."""
    record_event(session, "user:delete", "users", user.id, {"email": user.email})
    session.execute(delete(DeviceOwnership).where(DeviceOwnership.user_id == user.id))
    session.delete(user)
    session.flush()


def owner_of(session: Session, device: Device) -> User | None:
    return session.scalar(
        select(User).join(DeviceOwnership, DeviceOwnership.user_id == User.id)
        .where(DeviceOwnership.device_id == device.id)
    )


def set_owner(session: Session, device: Device, user: User | None) -> User | None:
    """Assign the device to ``user`` (replacing any owner), or leave it without one (``None``)."""
    previous = owner_of(session, device)
    session.execute(delete(DeviceOwnership).where(DeviceOwnership.device_id == device.id))
    if user is not None:
        session.add(DeviceOwnership(device_id=device.id, user_id=user.id))
    session.flush()
    record_event(session, "device:owner:set", "devices", device.id,
                 {"from": previous.id if previous else None, "to": user.id if user else None})
    return user


def owned_by_condition(user: User) -> ColumnElement[bool]:
    return Device.id.in_(select(DeviceOwnership.device_id).where(DeviceOwnership.user_id == user.id))
