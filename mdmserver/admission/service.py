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

While the previous binding is still valid a re-binding is *held* (:func:`hold`): the binding stays
with the previous certificate, so the device keeps working, and the new certificate's auth set waits
(pending, or rejected) with what its enrollment sent (:func:`hold_token_update`). Accepting a held
auth set moves the binding (:func:`set_auth_set_status`); rejecting it changes nothing for the device.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from sqlalchemy import ColumnElement, case, select, update
from sqlalchemy.orm import Session

from mdmserver.db import utcnow
from mdmserver.devices import service as devices
from mdmserver.errors import NotFound, UnprocessableEntity
from mdmserver.records.admission import AdmissionStatus, AuthSet, Preauthorization
from mdmserver.records.devices import Device

POLICIES = ("manual", "auto")
PREAUTH_KINDS = ("serial_number", "udid")
#: Auth set statuses that let a device in; a device has one such auth set, the bound certificate's.
ADMITTED = frozenset({AdmissionStatus.ACCEPTED.value, AdmissionStatus.PREAUTHORIZED.value})


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
) -> AuthSet:
    """Record (or find) the auth set for the device's current identity, the certificate now bound
    to it, and update the device's status from it.

    A new identity (new enrollment key) creates a new auth set: accepted when the device is
    preauthorized or the policy is ``auto``, else pending. A decommissioned device stays so.

    ``previous_fingerprint`` names the certificate the device was bound to before this one (a
    re-binding whose previous binding had ended: one still valid is held instead, :func:`hold`): the
    auth set is flagged with it and, whether new or already known, is ``rejected`` when the device
    was rejected.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown admission policy {policy!r}")
    identity = identity_data(device.udid, device.serial_number, device.model)
    set_id = auth_set_id(identity, pubkey_pem)
    auth_set = session.get(AuthSet, set_id)
    held = _refused_rebinding(device, previous_fingerprint)
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
    release_hold(auth_set)  # its certificate is the bound one now: nothing is held any more
    devices.set_admission_status(session, device, effective_status(auth_set.status))
    return auth_set


def renew(session: Session, device: Device, pubkey_pem: str, *, fingerprint: str, previous_fingerprint: str) -> AuthSet:
    """Record the auth set of a renewed identity (``checkin/renewal.py``): the same device, proven by
    its current identity, so the new auth set carries the current one's status instead of starting
    pending; the device's status is unchanged."""
    identity = identity_data(device.udid, device.serial_number, device.model)
    set_id = auth_set_id(identity, pubkey_pem)
    current = current_auth_set(session, device)
    status = current.status if current is not None else device.admission_status
    auth_set = session.get(AuthSet, set_id)
    if auth_set is None:
        auth_set = AuthSet(id=set_id, device_id=device.id, identity_data=identity, pubkey=pubkey_pem, status=status)
        session.add(auth_set)
    else:
        auth_set.status = status
        auth_set.updated_at = utcnow()
    auth_set.fingerprint = fingerprint
    auth_set.previous_fingerprint = previous_fingerprint
    release_hold(auth_set)
    return auth_set


def certificate_claimed_elsewhere(session: Session, fingerprint: str, device_id: int) -> bool:
    """The certificate already has an auth set for another device (one enrollment, one device)."""
    return session.scalar(
        select(AuthSet.id).where(AuthSet.fingerprint == fingerprint, AuthSet.device_id != device_id).limit(1)
    ) is not None


def hold(
    session: Session,
    device: Device,
    pubkey_pem: str,
    *,
    fingerprint: str,
    previous_fingerprint: str,
    serial_number: str | None,
    model: str | None,
) -> AuthSet:
    """Record a re-binding held for an administrator: the device keeps its binding, its status, its
    secrets and its push token; the new certificate's auth set is flagged and ``held``.

    Its status: ``rejected`` when the device is rejected or this auth set was rejected already (an
    administrator's refusal is not lifted by authenticating again), else ``pending``, whatever the
    policy or a preauthorization says. ``serial_number`` and ``model`` are what the new enrollment
    claims (the auth set's identity data shows the administrator that claim). A new
    ``Authenticate`` starts a new enrollment, so what an earlier one held is dropped.
    """
    identity = identity_data(device.udid, serial_number, model)
    set_id = auth_set_id(identity, pubkey_pem)
    auth_set = session.get(AuthSet, set_id)
    refused = device.admission_status == AdmissionStatus.REJECTED or (
        auth_set is not None and auth_set.status == AdmissionStatus.REJECTED
    )
    status = (AdmissionStatus.REJECTED if refused else AdmissionStatus.PENDING).value
    if auth_set is None:
        auth_set = AuthSet(id=set_id, device_id=device.id, identity_data=identity, pubkey=pubkey_pem, status=status)
        session.add(auth_set)
    else:
        auth_set.status = status
        auth_set.updated_at = utcnow()
    auth_set.fingerprint = fingerprint
    auth_set.rebinding = True
    auth_set.previous_fingerprint = previous_fingerprint
    release_hold(auth_set)
    auth_set.held = True
    session.flush()
    return auth_set


def held_auth_set(session: Session, device: Device, fingerprint: str) -> AuthSet | None:
    """The auth set held for this device and certificate, if any (the most recent one)."""
    return session.scalar(
        select(AuthSet)
        .where(AuthSet.device_id == device.id, AuthSet.fingerprint == fingerprint, AuthSet.held.is_(True))
        .order_by(AuthSet.updated_at.desc(), AuthSet.created_at.desc())
        .limit(1)
    )


def hold_token_update(
    auth_set: AuthSet,
    *,
    token: bytes | None,
    push_magic: str | None,
    topic: str | None,
    unlock_token_sealed: bytes | None,
    awaiting_configuration: bool,
) -> None:
    """Keep a held enrollment's device-channel TokenUpdate on its auth set (not on the device)."""
    if token is not None:
        auth_set.held_push_token = token
    if push_magic is not None:
        auth_set.held_push_magic = push_magic
    if topic is not None:
        auth_set.held_topic = topic
    if unlock_token_sealed is not None:
        auth_set.held_unlock_token_encrypted = unlock_token_sealed
    auth_set.held_awaiting_configuration = awaiting_configuration
    auth_set.held_token_updated_at = utcnow()


def release_hold(auth_set: AuthSet) -> None:
    """The auth set holds nothing any more (its binding moved, or it was never held)."""
    auth_set.held = False
    auth_set.held_push_token = None
    auth_set.held_push_magic = None
    auth_set.held_topic = None
    auth_set.held_unlock_token_encrypted = None
    auth_set.held_awaiting_configuration = None
    auth_set.held_token_updated_at = None


def _refused_rebinding(device: Device, previous_fingerprint: str | None) -> AdmissionStatus | None:
    """``rejected`` for a re-binding of a rejected device, whatever the policy (``None``: the
    policy decides)."""
    if previous_fingerprint is not None and device.admission_status == AdmissionStatus.REJECTED:
        return AdmissionStatus.REJECTED
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


def submit_auth_set(session: Session, device: Device, *, auth_set_id: str, identity_data: str, pubkey: str) -> AuthSet:
    """A pending auth set submitted through the admission API (Mender's device submission)."""
    auth_set = AuthSet(id=auth_set_id, device_id=device.id, identity_data=identity_data, pubkey=pubkey,
                       status=AdmissionStatus.PENDING.value)
    session.add(auth_set)
    session.flush()
    return auth_set


def set_auth_set_status(session: Session, auth_set: AuthSet, status: str) -> AuthSet:
    """Change an auth set's status (transition rules are the admission API's business) and, when it
    is the device's current identity, the device's admission status with it. What follows an admission
    decision (moving a held re-binding, push if queued, profiles) is ``workflows.decide_admission``."""
    valid = {s.value for s in AdmissionStatus} - {AdmissionStatus.DECOMMISSIONED.value}
    if status not in valid:
        raise UnprocessableEntity(f"unknown admission status {status!r}", pointer="/status")
    device = session.get(Device, auth_set.device_id)
    auth_set.status = status
    auth_set.updated_at = utcnow()
    if device is not None and device.identity_fingerprint is not None:
        if auth_set.fingerprint is not None:
            # only the bound certificate's auth set speaks for the device
            bound = auth_set.fingerprint == device.identity_fingerprint
        else:
            newest = current_auth_set(session, device)
            bound = newest is None or newest.id == auth_set.id
        if bound:
            devices.set_admission_status(session, device, effective_status(status))
    session.flush()
    return auth_set


def accepting_held_rebinding(session: Session, auth_set: AuthSet, status: str) -> bool:
    """Whether setting ``status`` accepts a held re-binding: the device's binding is to move to this
    auth set's certificate (``workflows.decide_admission`` moves it)."""
    device = session.get(Device, auth_set.device_id)
    return (status in ADMITTED and auth_set.held and device is not None
            and auth_set.fingerprint != device.identity_fingerprint)


def _reject_auth_sets(session: Session, device_id: int, *conditions: ColumnElement[bool]) -> list[str]:
    """Reject the device's auth sets that meet ``conditions`` (one UPDATE); returns their ids."""
    statement = (
        update(AuthSet)
        .where(AuthSet.device_id == device_id, *conditions)
        .values(status=AdmissionStatus.REJECTED.value, updated_at=utcnow())
        .returning(AuthSet.id)
    )
    return list(session.scalars(statement))


def reject_other_admitted(session: Session, auth_set: AuthSet) -> list[str]:
    """Reject the device's other admitted auth sets (one accepted auth set per device, as Mender
    does), after its binding moved to ``auth_set``'s certificate; returns their ids."""
    rejected = _reject_auth_sets(session, auth_set.device_id, AuthSet.id != auth_set.id, AuthSet.status.in_(ADMITTED))
    release_hold(auth_set)
    return rejected


def set_device_status(session: Session, device: Device, status: str) -> AuthSet:
    """Set the status of the device's current auth set (accept or reject a device)."""
    auth_set = current_auth_set(session, device)
    if auth_set is None:
        raise NotFound(f"device {device.id} has no auth set yet (it has not authenticated)")
    return set_auth_set_status(session, auth_set, status)


def decommission(session: Session, device: Device) -> None:
    """Refuse every request of the device from now on (Mender's DELETE /devices/<id>)."""
    _reject_auth_sets(session, device.id)
    devices.set_admission_status(session, device, AdmissionStatus.DECOMMISSIONED.value)
    session.flush()


def preauthorize(session: Session, kind: str, value: str, *, identity_data: str | None = None) -> Preauthorization:
    """Preauthorize a serial number or UDID (idempotent); ``identity_data``, when given, is the identity
    it was preauthorized with (kept as given; a repeated preauthorization keeps the latest one)."""
    if kind not in PREAUTH_KINDS:
        raise UnprocessableEntity(f"kind must be one of {', '.join(PREAUTH_KINDS)}", pointer="/kind")
    value = value.strip()
    if not value or len(value) > 64:
        raise UnprocessableEntity("value must be 1 to 64 characters", pointer="/value")
    known = session.scalar(
        select(Preauthorization).where(Preauthorization.kind == kind, Preauthorization.value == value)
    )
    if known is not None:
        if identity_data is not None:
            known.identity_data = identity_data
        return known
    row = Preauthorization(kind=kind, value=value, identity_data=identity_data)
    session.add(row)
    session.flush()
    return row
