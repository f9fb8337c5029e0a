"""Mender-compatible admission: listing auth sets, submitting, status transitions, decommission.

Mender's rules for ``PUT /devices/<id>/status``: pending→accepted, pending→rejected, rejected→accepted
and accepted→rejected are allowed; setting the status an auth set already has is a no-op; any other
change (back to pending, to preauthorized, an unknown status) is refused with 400. A preauthorized
auth set may be accepted or rejected.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from mdmserver import workflows
from mdmserver.admission import service as admission
from mdmserver.api.jsonapi import is_id
from mdmserver.audit.service import record_event
from mdmserver.devices import service as devices
from mdmserver.errors import BadRequest, NotFound
from mdmserver.mender.schemas import MAX_PER_PAGE, STATUSES
from mdmserver.pki.secretbox import SecretBox
from mdmserver.protocol.fields import has_identifier_forbidden_character
from mdmserver.records.admission import AdmissionStatus, AuthSet, Preauthorization
from mdmserver.records.devices import Device

_PENDING, _ACCEPTED, _REJECTED, _PREAUTHORIZED = (
    AdmissionStatus.PENDING, AdmissionStatus.ACCEPTED, AdmissionStatus.REJECTED, AdmissionStatus.PREAUTHORIZED
)
TRANSITIONS = {
    (_PENDING, _ACCEPTED), (_PENDING, _REJECTED), (_REJECTED, _ACCEPTED), (_ACCEPTED, _REJECTED),
    (_PREAUTHORIZED, _ACCEPTED), (_PREAUTHORIZED, _REJECTED),
}
#: an Apple enrollment's own identity attributes
IDENTITY_KEYS = frozenset({"udid", "serial_number", "model"})
#: the attributes that name a serial number: ours, and Mender's example ``sn``
SERIAL_KEYS = ("serial_number", "sn")
#: the attributes that name an Apple device (stored in the device's 64-character columns)
DEVICE_KEYS = frozenset({"udid", *SERIAL_KEYS})
DEVICE_IDENTIFIER_CHARS = 64
MAX_IDENTITY_ATTRIBUTES = 32
MAX_IDENTITY_NAME = 64
MAX_IDENTITY_VALUE = 256
MAX_IDENTITY_CHARS = 4096


@dataclass
class AuthSetPage:
    items: list[AuthSet]
    has_next: bool


@dataclass
class PreauthorizationPage:
    items: list[Preauthorization]
    has_next: bool


def _visible():
    """Auth sets of decommissioned devices are gone, as in Mender."""
    return select(AuthSet).join(Device, Device.id == AuthSet.device_id).where(
        Device.admission_status != AdmissionStatus.DECOMMISSIONED.value
    )


def list_auth_sets(
    session: Session, *, status: str | None, device_id: str | None, page: int, per_page: int
) -> AuthSetPage:
    stmt = _visible()
    if status is not None:
        stmt = stmt.where(AuthSet.status == status)
    if device_id is not None:
        if not is_id(device_id):
            return AuthSetPage([], False)
        stmt = stmt.where(AuthSet.device_id == int(device_id))
    rows = list(session.scalars(
        stmt.order_by(AuthSet.created_at, AuthSet.id).limit(per_page + 1).offset((page - 1) * per_page)
    ))
    return AuthSetPage(rows[:per_page], len(rows) > per_page)


def get_auth_set(session: Session, auth_set_id: str) -> AuthSet:
    auth_set = session.scalar(_visible().where(AuthSet.id == auth_set_id))
    if auth_set is None:
        raise NotFound(f"device {auth_set_id} not found")
    return auth_set


def auth_set_document(auth_set: AuthSet) -> dict[str, Any]:
    try:
        attributes = json.loads(auth_set.identity_data)
    except ValueError:
        attributes = {}
    return {
        "id": auth_set.id,
        "device_id": str(auth_set.device_id),
        "device_identity": auth_set.identity_data,
        "key": auth_set.pubkey,
        "status": auth_set.status,
        "attributes": attributes if isinstance(attributes, dict) else {},
        "request_time": auth_set.created_at.isoformat().replace("+00:00", "Z"),
        # which enrollment certificate this is, and whether it took the device over from another
        "certificate_fingerprint": auth_set.fingerprint,
        "rebinding": bool(auth_set.rebinding),
        "previous_certificate_fingerprint": auth_set.previous_fingerprint,
        # a re-binding held while the previous binding is valid: accepting it moves the binding
        "held": bool(auth_set.held),
    }


def set_status(
    session: Session, auth_set: AuthSet, status: Any, *, actor: str | None = None, box: SecretBox,
    public_url: str,
) -> AuthSet:
    if status not in STATUSES:
        raise BadRequest(f"status must be one of accepted, rejected (not {status!r})")
    if status == auth_set.status:
        return auth_set
    if (auth_set.status, status) not in TRANSITIONS:
        raise BadRequest(f"invalid status transition from {auth_set.status} to {status}")
    before = auth_set.status
    change = workflows.decide_admission(session, auth_set, status, actor=actor, box=box,
                                         public_url=public_url)
    moved = change.moved_from is not None
    verb = "accept" if status == AdmissionStatus.ACCEPTED else "reject"
    details: dict[str, Any] = {"device_id": auth_set.device_id, "from": before, "to": status}
    if moved:
        details.update(binding_moved=True, previous_certificate_fingerprint=change.moved_from,
                       certificate_fingerprint=auth_set.fingerprint, cancelled_commands=change.cancelled,
                       rejected_auth_sets=change.rejected)
    record_event(session, f"device:auth_set:{verb}", "auth_sets", auth_set.id, details)
    return auth_set


def decommission(session: Session, auth_set: AuthSet) -> None:
    device = session.get(Device, auth_set.device_id)
    admission.decommission(session, device)
    record_event(session, "device:decommission", "devices", device.id, {"auth_set": auth_set.id, "udid": device.udid})


def parse_identity(raw: Any) -> dict[str, str | None]:
    """Mender's ``device_identity``: a JSON string of an object of vendor-specific attributes (the seed's
    example is ``{"mac", "sku", "sn"}``; an Apple enrollment's is ``{"model", "serial_number", "udid"}``).

    Any attribute is kept, within bounds: at most ``MAX_IDENTITY_ATTRIBUTES`` names of 1 to
    ``MAX_IDENTITY_NAME`` characters, each value a string of 1 to ``MAX_IDENTITY_VALUE`` characters (or
    null), no control characters, the whole string at most ``MAX_IDENTITY_CHARS`` characters. The values
    that name an Apple device (``udid``, ``serial_number`` and its alias ``sn``) fit the device's columns.
    """
    if not isinstance(raw, str):
        raise BadRequest("device_identity must be a JSON string")
    if len(raw) > MAX_IDENTITY_CHARS:
        raise BadRequest(f"device_identity is longer than {MAX_IDENTITY_CHARS} characters")
    try:
        identity = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("device_identity is not valid JSON") from None
    if not isinstance(identity, dict) or not identity:
        raise BadRequest("device_identity must be a JSON object with at least one attribute")
    if len(identity) > MAX_IDENTITY_ATTRIBUTES:
        raise BadRequest(f"device_identity has more than {MAX_IDENTITY_ATTRIBUTES} attributes")
    for key, value in identity.items():
        if not key.strip() or len(key) > MAX_IDENTITY_NAME or has_identifier_forbidden_character(key):
            raise BadRequest(f"identity attribute names are 1 to {MAX_IDENTITY_NAME} characters without "
                             "control characters")
        limit = DEVICE_IDENTIFIER_CHARS if key in DEVICE_KEYS else MAX_IDENTITY_VALUE
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > limit):
            raise BadRequest(f"identity attribute {key!r} must be a string of 1 to {limit} characters")
        if value is not None and has_identifier_forbidden_character(value):
            raise BadRequest(f"identity attribute {key!r} contains a control character")
    serials = {identity[k] for k in SERIAL_KEYS if identity.get(k) is not None}
    if len(serials) > 1:
        raise BadRequest("identity attributes serial_number and sn name different serial numbers")
    return identity


def identity_serial(identity: Mapping[str, str | None]) -> str | None:
    """The serial number an identity names: ``serial_number``, or its alias ``sn``."""
    return next((identity[k] for k in SERIAL_KEYS if identity.get(k)), None)


def canonical_identity(identity: Mapping[str, str | None]) -> str:
    """The identity data stored (and hashed into the auth set id) for a submitted identity.

    An identity of an Apple enrollment's own attributes (a ``udid``, optionally ``serial_number`` and
    ``model``) is stored exactly as enrollments store theirs (so its id is the one its enrollment
    gets); any other is its attributes as given, as JSON with sorted keys.
    """
    if set(identity) <= IDENTITY_KEYS and identity.get("udid"):
        return admission.identity_data(identity["udid"], identity.get("serial_number"), identity.get("model"))
    return json.dumps(dict(identity), sort_keys=True, separators=(",", ":"))


def parse_key(raw: Any) -> str:
    """A PEM public key, normalised (SubjectPublicKeyInfo PEM)."""
    if not isinstance(raw, str) or not raw.strip():
        raise BadRequest("key must be a PEM public key")
    try:
        key = serialization.load_pem_public_key(raw.strip().encode())
    except (ValueError, TypeError):
        raise BadRequest("key is not a valid PEM public key") from None
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def submit(session: Session, auth_set_id: str, body: Mapping[str, Any]) -> AuthSet:
    """Submit an auth set (``PUT /devices/<id>``, ``schemas.AuthSetSchema``): a new one is pending; an
    existing one keeps its status.

    The identity's attributes are kept as given (:func:`parse_identity`). It belongs to the device its
    ``udid`` names (a device not seen yet is created: pending until accepted), else the device with its
    serial number (``serial_number`` or ``sn``), else the device ``device_id`` names; a ``device_id``
    that is given must be that device's id. The id must be the SHA-256 of identity data and key as the
    server computes it (:func:`canonical_identity`, ``admission.auth_set_id``); a body's ``id``, when
    given, must be the path's.
    """
    if body.get("id") is not None and body["id"] != auth_set_id:
        raise BadRequest("id does not match the path")
    identity = parse_identity(body.get("device_identity"))
    pubkey = parse_key(body.get("key"))
    udid, serial = identity.get("udid"), identity_serial(identity)
    device = _identified_device(session, udid, serial, body.get("device_id"))
    if device is None and not udid:
        raise BadRequest("device_identity names no device of this server: give its udid (a new device is "
                         "pending until accepted), or the serial_number (sn) or device_id of a known device")
    if body.get("device_id") is not None and (device is None or str(body["device_id"]) != str(device.id)):
        raise BadRequest("device_id does not match the device this identity names")
    if device is not None and serial and device.serial_number and device.serial_number != serial:
        raise BadRequest(f"device {device.id} has another serial number than the identity's")
    if device is not None and device.admission_status == AdmissionStatus.DECOMMISSIONED:
        raise BadRequest("the device was decommissioned")
    canonical = canonical_identity(identity)
    expected = admission.auth_set_id(canonical, pubkey)
    if auth_set_id != expected:
        raise BadRequest(f"the id of this auth set is {expected} (SHA-256 of identity data and key)")
    existing = session.get(AuthSet, expected)
    if existing is not None:
        return existing
    if device is None:
        device = devices.create_device(session, udid=udid, serial_number=serial, model=identity.get("model"))
    auth_set = admission.submit_auth_set(session, device, auth_set_id=expected, identity_data=canonical, pubkey=pubkey)
    record_event(session, "device:auth_set:submit", "auth_sets", auth_set.id, {"device_id": device.id})
    return auth_set


def _identified_device(session: Session, udid: str | None, serial: str | None, device_id: Any) -> Device | None:
    """The device an identity names: by UDID, else by serial number (one device only), else by id."""
    if udid:
        return devices.get_device_by_udid(session, udid)
    if serial:
        found = list(session.scalars(select(Device).where(Device.serial_number == serial).limit(2)))
        if len(found) > 1:
            raise BadRequest(f"several devices have serial number {serial}: name the device by udid or device_id")
        if found:
            return found[0]
    if device_id is not None and is_id(str(device_id)):
        return session.get(Device, int(device_id))
    return None


def preauthorize(session: Session, body: Mapping[str, Any]) -> list[Preauthorization]:
    """``POST /devices`` (``schemas.PreauthorizationSchema``): preauthorize the serial number (``serial_number``
    or its alias ``sn``) and/or the UDID of ``device_identity``; an Apple device that enrolls with one of
    them is accepted. The identity is kept as given (Mender's ``mac``, ``sku``… included) and shown with
    the preauthorization (:func:`preauthorization_document`).

    Apple devices get their key at enrollment, so a key, when given, is checked but not required.
    """
    identity = parse_identity(body.get("device_identity"))
    if body.get("key") is not None:
        parse_key(body["key"])
    named = {"udid": identity.get("udid"), "serial_number": identity_serial(identity)}
    kinds = [(kind, value) for kind, value in named.items() if value]
    if not kinds:
        raise BadRequest("device_identity must contain a udid or a serial_number (sn) to preauthorize")
    rows = [admission.preauthorize(session, kind, value, identity_data=body["device_identity"])
            for kind, value in kinds]
    record_event(session, "device:preauthorize", "preauthorizations", ",".join(str(r.id) for r in rows),
                 {kind: value for kind, value in kinds})
    return rows


def list_preauthorizations(
    session: Session, *, page: int = 1, per_page: int = MAX_PER_PAGE
) -> PreauthorizationPage:
    """One page of preauthorizations, oldest first."""
    rows = list(session.scalars(
        select(Preauthorization).order_by(Preauthorization.id).limit(per_page + 1).offset((page - 1) * per_page)
    ))
    return PreauthorizationPage(rows[:per_page], len(rows) > per_page)


def preauthorization_document(row: Preauthorization) -> dict[str, Any]:
    """A preauthorization as the API shows it: what is preauthorized (``kind``, ``value``) and the identity
    it was given with, in the shape of Mender's auth sets (``device_identity`` as given, ``attributes``
    parsed); both null for one made without an identity (configuration, native route)."""
    attributes = None
    if row.identity_data is not None:
        try:
            attributes = json.loads(row.identity_data)
        except ValueError:
            attributes = None
    return {"id": str(row.id), "kind": row.kind, "value": row.value, "device_identity": row.identity_data,
            "attributes": attributes if isinstance(attributes, dict) else None,
            "created_ts": row.created_at.isoformat().replace("+00:00", "Z")}


def delete_preauthorization(session: Session, preauth_id: str) -> None:
    row = session.get(Preauthorization, int(preauth_id)) if is_id(preauth_id) else None
    if row is None:
        raise NotFound(f"preauthorization {preauth_id} not found")
    record_event(session, "device:preauthorization:delete", "preauthorizations", row.id,
                 {"kind": row.kind, "value": row.value})
    session.delete(row)
    session.flush()
