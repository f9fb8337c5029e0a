"""Command history queries: filters, sorts and remarks of ``/api/v1/commands`` and a device's commands
(read-only; every write to the queue is in :mod:`mdmserver.commands.service`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from mdmserver.api.jsonapi import is_id, parse_bool
from mdmserver.db import utcnow
from mdmserver.errors import NotFound
from mdmserver.records.commands import ACTIVE_STATUSES, Command, CommandStatus
from mdmserver.records.devices import Device
from mdmserver.selection.filters import group_condition, parse_datetime, split_list
from mdmserver.selection.resolve import resolve_devices
from mdmserver.selection.sql import in_values

STATUSES = tuple(s.value for s in CommandStatus)
_ACTIVE = tuple(s.value for s in ACTIVE_STATUSES)

_REMARKS = {
    CommandStatus.QUEUED: "waiting for the device to connect",
    CommandStatus.SENT: "sent to the device, no answer yet",
    CommandStatus.ACKNOWLEDGED: "the device acknowledged the command",
    CommandStatus.NOT_NOW: "the device answered NotNow; it will be offered again",
    CommandStatus.CANCELLED: "cancelled before it was sent",
    CommandStatus.EXPIRED: "expired before the device answered",
    CommandStatus.COMMAND_FORMAT_ERROR: "the device could not parse the command",
    CommandStatus.ERROR: "the device reported an error",
}


def remarks(command: Command, status: str) -> str:
    """A one-line explanation, with the device's own words for an error (ManageEngine's remarks)."""
    for item in command.error_chain or []:
        text = item.get("localized_description") or item.get("us_english_description")
        if text:
            return f"{_REMARKS.get(status, status)}: {text}"
    return _REMARKS.get(status, status)


def status_condition(value: str) -> ColumnElement[bool]:
    wanted = split_list(value)
    for item in wanted:
        if item not in STATUSES:
            raise ValueError(f"unknown status {item!r}; allowed: {', '.join(STATUSES)}")
    clauses: list[ColumnElement[bool]] = [Command.status.in_(wanted)]
    if CommandStatus.EXPIRED in wanted:  # active commands past their expiry show as expired
        clauses.append(and_(Command.status.in_(_ACTIVE), Command.expires_at.is_not(None),
                            Command.expires_at <= utcnow()))
    return or_(*clauses)


def latest_condition(value: str) -> ColumnElement[bool]:
    if not parse_bool(value):
        return Command.id.is_not(None)
    return Command.id.in_(select(func.max(Command.id)).group_by(Command.device_id))


def command_filters(session: Session) -> dict[str, Callable[[str], ColumnElement[bool]]]:
    def device(value: str) -> ColumnElement[bool]:
        resolved = resolve_devices(session, split_list(value), parameter="filter[device]")
        if resolved.missing:
            raise ValueError(f"no device {resolved.missing[0]!r}")
        return in_values(session, Command.device_id, resolved.ids, integer=True)

    def group(value: str) -> ColumnElement[bool]:
        value = value.strip()
        if not is_id(value):
            raise ValueError(f"{value!r} is not a group id")
        return Command.device_id.in_(select(Device.id).where(group_condition(session, int(value))))

    return {
        "status": status_condition,
        "request_type": lambda v: Command.request_type.in_(split_list(v)),
        "device": device,
        "group": group,
        "enqueued_by": lambda v: Command.enqueued_by == v.strip(),
        "created_after": lambda v: Command.created_at >= parse_datetime(v),
        "created_before": lambda v: Command.created_at < parse_datetime(v),
        "completed_after": lambda v: Command.completed_at >= parse_datetime(v),
        "completed_before": lambda v: Command.completed_at < parse_datetime(v),
        "latest": latest_condition,
    }


COMMAND_SORTS: dict[str, Any] = {
    "id": Command.id,
    "created_at": Command.created_at,
    "sent_at": Command.sent_at,
    "completed_at": Command.completed_at,
    "status": Command.status,
    "request_type": Command.request_type,
    "device_id": Command.device_id,
}


def commands_query(device_id: int | None = None) -> Select:
    stmt = select(Command)
    if device_id is not None:
        stmt = stmt.where(Command.device_id == device_id)
    return stmt


def latest_for_device(session: Session, device: Device) -> Command:
    command = session.scalar(
        select(Command).where(Command.device_id == device.id).order_by(Command.id.desc()).limit(1)
    )
    if command is None:
        raise NotFound(f"device {device.id} has no commands")
    return command

