"""The SQL conditions on ``devices`` every feature shares: "can this device receive commands?"
(manageable), "can it be pushed now?" (pushable), retired, refused admission.

Defined once here, on the models only (no service imports), so the command queue, bulk actions,
assignments and the push outbox agree. Each needs ``devices`` in the FROM clause.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, String, and_, case, exists, literal, not_, null, or_

from mdmserver.records.admission import AdmissionStatus
from mdmserver.records.commands import Command, CommandStatus
from mdmserver.records.devices import Device
from mdmserver.records.push import DevicePushState
from mdmserver.records.retirement import DeviceRetirement

#: Admission states whose devices are refused every request (and get no command).
REFUSED_ADMISSION = (AdmissionStatus.REJECTED.value, AdmissionStatus.DECOMMISSIONED.value)


def refused() -> ColumnElement[bool]:
    """The device's admission was refused (rejected or decommissioned)."""
    return Device.admission_status.in_(REFUSED_ADMISSION)


def checked_out() -> ColumnElement[bool]:
    """The device checked out (it was enrolled and is no longer)."""
    return and_(Device.enrolled.is_(False), Device.unenrolled_at.is_not(None))


def retired() -> ColumnElement[bool]:
    """The device left management at an administrator's request, since it last enrolled (enrolling
    again un-retires it): it acknowledged the RemoveProfile of its enrollment profile, or checked
    out after the retirement was requested. A RemoveProfile still waiting for an answer, or refused,
    does not retire it: the device is still managed and every action still applies."""
    acknowledged = exists().where(
        Command.uuid == DeviceRetirement.command_uuid, Command.status == CommandStatus.ACKNOWLEDGED.value
    )
    left = and_(Device.enrolled.is_(False), Device.unenrolled_at >= DeviceRetirement.requested_at)
    return exists().where(
        DeviceRetirement.device_id == Device.id,
        or_(Device.enrolled_at.is_(None), DeviceRetirement.requested_at >= Device.enrolled_at),
        or_(acknowledged, left),
    )


def unmanaged_whens() -> list[tuple[ColumnElement[bool], Any]]:
    """``CASE`` branches (condition, reason) for a device that cannot receive commands, in the
    order their reasons are reported."""
    return [
        (retired(), literal("the device is retired (management removal was requested)")),
        (refused(), literal("the device's admission status is ", String) + Device.admission_status),
        (checked_out(), literal("the device is no longer enrolled (it checked out)")),
    ]


def unmanaged_reason() -> ColumnElement[str | None]:
    """SQL: why the device cannot receive commands, or NULL when it can (:func:`manageable`)."""
    return case(*unmanaged_whens(), else_=null())


def manageable() -> ColumnElement[bool]:
    """SQL: the device can receive commands (not retired, not refused, not checked out)."""
    return not_(or_(*(condition for condition, _ in unmanaged_whens())))


def token_refused() -> ColumnElement[bool]:
    """APNs refused the device's push token since its last TokenUpdate."""
    return exists().where(
        DevicePushState.device_id == Device.id,
        DevicePushState.token_invalid_at.is_not(None),
        or_(Device.token_updated_at.is_(None), DevicePushState.token_invalid_at >= Device.token_updated_at),
    )


def push_requirements() -> list[tuple[str, ColumnElement[bool]]]:
    """(code, condition) for each thing a device needs to be pushed now, in the order a missing one
    is reported: accepted, enrolled, a push token and magic, a token APNs has not refused."""
    return [
        ("admission", Device.admission_status == AdmissionStatus.ACCEPTED.value),
        ("not_enrolled", Device.enrolled.is_(True)),
        ("no_token", and_(Device.push_token.is_not(None), Device.push_magic.is_not(None))),
        ("token_refused", not_(token_refused())),
    ]


def pushable() -> ColumnElement[bool]:
    """SQL: the device can be pushed now (every one of :func:`push_requirements`)."""
    return and_(*(condition for _, condition in push_requirements()))


def push_blocker() -> ColumnElement[str | None]:
    """SQL: the code of the first push requirement the device misses, or NULL when it is pushable."""
    return case(*((not_(condition), literal(code, String)) for code, condition in push_requirements()),
                else_=null())
