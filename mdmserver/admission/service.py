"""Admission core: auth sets for Apple enrollments, the manual/auto policy and preauthorization.

A device's ``admission_status`` mirrors its current auth set (the one for the identity it last
authenticated with), so the device-facing paths need no join:

- ``accepted``: normal operation;
- ``pending``: check-ins answered 200, but no commands are delivered and no pushes sent;
- ``rejected`` / ``decommissioned``: every device request gets 403.

Each auth set names the enrollment certificate it was created for (``fingerprint``), and only the
auth set of the certificate bound to the device decides the device's status. A new certificate for a
device that already had one is a *re-binding*: flagged on the auth set with the previous
certificate, never accepted by the policy or a preauthorization while the previous certificate is
still valid, and never lifting a rejection.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from mdmserver.admission.models import AdmissionStatus, AuthSet, Preauthorization
from mdmserver.db import utcnow
from mdmserver.devices.models import Device
from mdmserver.errors import NotFound, UnprocessableEntity

POLICIES = ("manual", "auto")
PREAUTH_KINDS = ("serial_number", "udid")


def identity_data(udid: str, serial_number: str | None, model: str | None) -> str:
    """The auth set's identity data: JSON of ``{"model", "serial_number", "udid"}``, keys sorted."""
    return json.dumps(
        {"model": model, "serial_number": serial_number, "udid": udid},
        sort_keys=True,
        separators=(",", ":"),
    )


def auth_set_id(identity: str, pubkey_pem: str) -> str:
    return hashlib.sha256(identity.encode() + b"\n" + pubkey_pem.encode()).hexdigest()


def is_preauthorized(
    session: Session, udid: str, serial_number: str | None, configured: Iterable[str] = ()
) -> bool:
    """True when the UDID or serial number is in the configured list or a preauthorization row."""
    wanted = {udid, serial_number} - {None}
    if wanted & {value.strip() for value in configured}:
        return True
    clauses = [(Preauthorization.kind == "udid") & (Preauthorization.value == udid)]
    if serial_number:
        clauses.append(
            (Preauthorization.kind == "serial_number") & (Preauthorization.value == serial_number)
        )
    condition = clauses[0] if len(clauses) == 1 else clauses[0] | clauses[1]
    return session.scalar(select(Preauthorization.id).where(condition).limit(1)) is not None


def admit(
    session: Session,
    device: Device,
    pubkey_pem: str,
    *,
    policy: str,
    preauthorized: Iterable[str] = (),
    fingerprint: str | None = None,
    previous_fingerprint: str | None = None,
    previous_valid: bool = False,
) -> AuthSet:
    """Record (or find) the auth set for the device's current identity and update its status.

    A new identity (new enrollment key) creates a new auth set: accepted when the device is
    preauthorized or the policy is ``auto``, else pending. A decommissioned device stays so.

    ``previous_fingerprint`` names the certificate the device was bound to before this one (a
    re-binding): the auth set is flagged with it and, whether new or already known, is ``rejected``
    when the device was rejected, else ``pending`` while the previous certificate is still valid
    (``previous_valid``) whatever the policy or preauthorization says.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown admission policy {policy!r}")
    identity = identity_data(device.udid, device.serial_number, device.model)
    set_id = auth_set_id(identity, pubkey_pem)
    auth_set = session.get(AuthSet, set_id)
    held = _held_status(device, previous_fingerprint, previous_valid)
    if auth_set is None:
        if device.admission_status == AdmissionStatus.DECOMMISSIONED:
            status = AdmissionStatus.DECOMMISSIONED
        elif held is not None:
            status = held
        elif policy == "auto" or is_preauthorized(session, device.udid, device.serial_number, preauthorized):
            status = AdmissionStatus.ACCEPTED
        else:
            status = AdmissionStatus.PENDING
        auth_set = AuthSet(
            id=set_id, device_id=device.id, identity_data=identity, pubkey=pubkey_pem, status=status.value
        )
        session.add(auth_set)
    elif held is not None:
        auth_set.status = held.value
        auth_set.updated_at = utcnow()
    if fingerprint is not None:
        auth_set.fingerprint = fingerprint
    if previous_fingerprint is not None:
        auth_set.rebinding = True
        auth_set.previous_fingerprint = previous_fingerprint
    device.admission_status = effective_status(auth_set.status)
    return auth_set


def _held_status(device: Device, previous_fingerprint: str | None, previous_valid: bool) -> AdmissionStatus | None:
    """The status a re-binding is held at, whatever the policy (``None``: not held)."""
    if previous_fingerprint is None:
        return None
    if device.admission_status == AdmissionStatus.REJECTED:
        return AdmissionStatus.REJECTED
    if previous_valid:
        return AdmissionStatus.PENDING
    return None


def effective_status(auth_set_status: str) -> str:
    """The device-facing status of an auth set status (preauthorized counts as accepted)."""
    if auth_set_status == AdmissionStatus.PREAUTHORIZED:
        return AdmissionStatus.ACCEPTED.value
    return auth_set_status


def current_auth_set(session: Session, device: Device) -> AuthSet | None:
    """The auth set of the certificate bound to the device (else, for auth sets recorded without
    their certificate, the most recently changed one)."""
    order = [AuthSet.updated_at.desc(), AuthSet.created_at.desc()]
    if device.identity_fingerprint is not None:
        order.insert(0, case((AuthSet.fingerprint == device.identity_fingerprint, 0), else_=1))
    return session.scalar(select(AuthSet).where(AuthSet.device_id == device.id).order_by(*order).limit(1))


def certificate_fingerprints(session: Session, device_id: int) -> list[str]:
    """The fingerprints of every enrollment certificate the device's auth sets were created for."""
    return [
        f for f in session.scalars(
            select(AuthSet.fingerprint).where(AuthSet.device_id == device_id, AuthSet.fingerprint.is_not(None))
        )
    ]


def set_auth_set_status(session: Session, auth_set: AuthSet, status: str) -> AuthSet:
    """Change an auth set's status (transition rules are the admission API's business) and, when it
    is the device's current identity, the device's admission status with it. What follows an admission
    decision (push if queued, profiles) is ``workflows.admission_decided``."""
    valid = {s.value for s in AdmissionStatus} - {AdmissionStatus.DECOMMISSIONED.value}
    if status not in valid:
        raise UnprocessableEntity(f"unknown admission status {status!r}", pointer="/status")
    auth_set.status = status
    auth_set.updated_at = utcnow()
    device = session.get(Device, auth_set.device_id)
    if device is not None and device.identity_fingerprint is not None:
        if auth_set.fingerprint is not None:
            # only the bound certificate's auth set speaks for the device
            bound = auth_set.fingerprint == device.identity_fingerprint
        else:
            newest = current_auth_set(session, device)
            bound = newest is None or newest.id == auth_set.id
        if bound:
            device.admission_status = effective_status(status)
    session.flush()
    return auth_set


def set_device_status(session: Session, device: Device, status: str) -> AuthSet:
    """Set the status of the device's current auth set (accept or reject a device)."""
    auth_set = current_auth_set(session, device)
    if auth_set is None:
        raise NotFound(f"device {device.id} has no auth set yet (it has not authenticated)")
    return set_auth_set_status(session, auth_set, status)


def decommission(session: Session, device: Device) -> None:
    """Refuse every request of the device from now on (Mender's DELETE /devices/<id>)."""
    session.execute(
        update(AuthSet)
        .where(AuthSet.device_id == device.id)
        .values(status=AdmissionStatus.REJECTED.value, updated_at=utcnow())
    )
    device.admission_status = AdmissionStatus.DECOMMISSIONED.value
    session.flush()


def preauthorize(session: Session, kind: str, value: str) -> Preauthorization:
    """Preauthorize a serial number or UDID (idempotent)."""
    if kind not in PREAUTH_KINDS:
        raise UnprocessableEntity(f"kind must be one of {', '.join(PREAUTH_KINDS)}", pointer="/kind")
    value = value.strip()
    if not value or len(value) > 64:
        raise UnprocessableEntity("value must be 1 to 64 characters", pointer="/value")
    existing = session.scalar(
        select(Preauthorization).where(Preauthorization.kind == kind, Preauthorization.value == value)
    )
    if existing is not None:
        return existing
    row = Preauthorization(kind=kind, value=value)
    session.add(row)
    session.flush()
    return row
