"""One function per webhook event, called where the event happens, in the transaction that causes it.

Each builds the event's data from ids the admin API uses (device id, UDID, serial number, command
UUID and type, statuses) and hands it to the outbox. Nothing secret goes in: no tokens, no command
parameters or results (the error chain of a failed command is the device's own description of the
failure). ``docs/webhooks.md`` shows every event's data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mdmserver.db import isoformat
from mdmserver.records.commands import CommandStatus
from mdmserver.records.devices import Device
from mdmserver.records.push import PushCertificate
from mdmserver.webhooks.models import EventType, WebhookNotice
from mdmserver.webhooks.outbox import Event, emit, emit_many

#: a command's new status → the event that tells it
_COMMAND_EVENTS = {
    CommandStatus.ACKNOWLEDGED.value: EventType.COMMAND_ACKNOWLEDGED,
    CommandStatus.ERROR.value: EventType.COMMAND_ERROR,
    CommandStatus.COMMAND_FORMAT_ERROR.value: EventType.COMMAND_ERROR,
    CommandStatus.NOT_NOW.value: EventType.COMMAND_NOT_NOW,
}

#: days before a push certificate's expiry at which ``push_certificate.expiring`` is sent (once each)
EXPIRY_THRESHOLDS_DAYS = (30, 14, 7, 1)


@dataclass(frozen=True)
class DeviceRef:
    """What an event says about its device."""

    id: int
    udid: str
    serial_number: str | None

    @classmethod
    def of(cls, device: Device) -> DeviceRef:
        return cls(device.id, device.udid, device.serial_number)

    @property
    def subject(self) -> str:
        return f"device:{self.id}"

    def as_data(self) -> dict[str, Any]:
        return {"id": str(self.id), "udid": self.udid, "serial_number": self.serial_number}


def device_enrolled(session: Session, device: Device, *, rebinding: bool) -> None:
    """Authenticate was accepted: the device is bound to its new identity certificate."""
    ref = DeviceRef.of(device)
    emit(session, EventType.DEVICE_ENROLLED, ref.subject, {
        "device": ref.as_data(), "admission_status": device.admission_status, "platform": device.platform,
        "model": device.model, "os_version": device.os_version, "rebinding": rebinding,
    })


def device_checked_out(session: Session, device: Device, at: datetime) -> None:
    """The device sent CheckOut: it left management."""
    ref = DeviceRef.of(device)
    emit(session, EventType.DEVICE_CHECKED_OUT, ref.subject,
         {"device": ref.as_data(), "unenrolled_at": isoformat(at)})


def admission_changed(session: Session, device: Device, previous: str, status: str) -> None:
    """The device's admission status changed (accepted, rejected, pending, decommissioned)."""
    ref = DeviceRef.of(device)
    emit(session, EventType.DEVICE_ADMISSION_CHANGED, ref.subject,
         {"device": ref.as_data(), "previous_status": previous, "status": status})


def command_answered(
    session: Session, device: DeviceRef, *, command_uuid: str, request_type: str, status: str,
    error_chain: Iterable[dict[str, Any]] = (),
) -> None:
    """The device answered a command: Acknowledged, Error, CommandFormatError or NotNow."""
    event_type = _COMMAND_EVENTS.get(status)
    if event_type is None:
        return
    data: dict[str, Any] = {"device": device.as_data(),
                            "command": {"uuid": command_uuid, "request_type": request_type, "status": status}}
    if event_type is EventType.COMMAND_ERROR:
        data["command"]["error_chain"] = list(error_chain)
    emit(session, event_type, device.subject, data)


def inventory_changed(session: Session, device: DeviceRef, *, request_type: str) -> None:
    """An acknowledged query changed a stored inventory field groups select on (OS version, model,
    supervision…): the answer to ``request_type``."""
    emit(session, EventType.INVENTORY_CHANGED, device.subject, {"device": device.as_data(), "source": request_type})


@dataclass(frozen=True)
class FailedInstall:
    device: DeviceRef
    app_id: int
    bundle_id: str | None
    name: str
    detail: str | None


def app_installs_failed(session: Session, failures: Iterable[FailedInstall]) -> None:
    """App installs that the device reported failed (an Error answer, or a Failed state)."""
    emit_many(session, [
        Event(EventType.APP_INSTALL_FAILED, f.device.subject, {
            "device": f.device.as_data(),
            "app": {"id": str(f.app_id), "bundle_id": f.bundle_id, "name": f.name},
            "detail": f.detail,
        })
        for f in failures
    ])


@dataclass(frozen=True)
class ComplianceChange:
    device: DeviceRef
    from_state: str | None
    to_state: str


def compliance_changed(session: Session, changes: Iterable[ComplianceChange]) -> None:
    """Devices' overall compliance states changed (``from_state`` None: the device's first evaluation)."""
    emit_many(session, [
        Event(EventType.COMPLIANCE_CHANGED, c.device.subject,
              {"device": c.device.as_data(), "from": c.from_state, "to": c.to_state})
        for c in changes
    ])


def _insert_notice(session: Session, key: str, now: datetime) -> bool:
    """Insert the notice ``key``; false when it was there already (by any worker, any time)."""
    dialect = session.get_bind().dialect.name
    builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (builder(WebhookNotice).values(key=key, created_at=now)
                 .on_conflict_do_nothing(index_elements=["key"]).returning(WebhookNotice.key))
    return session.execute(statement).first() is not None


def push_certificate_expiring(session: Session, certificate: PushCertificate, now: datetime) -> int | None:
    """Emit ``push_certificate.expiring`` when the certificate has crossed a threshold (30, 14, 7, 1 days
    left) not yet told, once per certificate and threshold; returns the threshold told, if any."""
    left = certificate.not_after - now
    crossed = [days for days in EXPIRY_THRESHOLDS_DAYS if left.total_seconds() <= days * 86400]
    if not crossed:
        return None
    threshold = min(crossed)
    if not _insert_notice(session, f"push_certificate.expiring:{certificate.fingerprint_sha256}:{threshold}", now):
        return None
    emit(session, EventType.PUSH_CERTIFICATE_EXPIRING, f"push_certificate:{certificate.fingerprint_sha256}", {
        "push_certificate": {"topic": certificate.topic, "serial": certificate.serial,
                             "fingerprint_sha256": certificate.fingerprint_sha256,
                             "not_after": isoformat(certificate.not_after)},
        "threshold_days": threshold,
        "days_left": max(0, int(left.total_seconds() // 86400)),
        "expired": left.total_seconds() <= 0,
    })
    return threshold
