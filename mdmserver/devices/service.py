"""Devices: lookups, check-in state changes and inventory from command results."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, case, delete, insert, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from mdmserver.admission.models import AdmissionStatus, AuthSet
from mdmserver.api.jsonapi import is_id
from mdmserver.commands import service as commands
from mdmserver.db import utcnow
from mdmserver.devices.models import (
    AvailableOSUpdate,
    Device,
    DeviceCertificate,
    DeviceLocation,
    DeviceSecurityInfo,
    DeviceUser,
    InstalledApplication,
    InstalledProfile,
    Platform,
)
from mdmserver.errors import Conflict, NotFound
from mdmserver.pki.secretbox import SecretBox
from mdmserver.protocol import inventory
from mdmserver.protocol.checkin import Authenticate, SetBootstrapToken, TokenUpdate
from mdmserver.protocol.plist import ProtocolError

log = logging.getLogger("mdmserver.devices")

LAST_SEEN_RESOLUTION = timedelta(minutes=1)

_MAC_PREFIXES = ("Mac", "iMac", "VirtualMac")


def platform_for(product_name: str | None, model: str | None = None, model_name: str | None = None) -> str | None:
    """Our platform value from what Authenticate tells (``iPad7,5`` → ipados, ``MacBookPro11,5`` → macos)."""
    for value in (product_name, model, model_name):
        if not value:
            continue
        if value.startswith("iPad"):
            return Platform.IPADOS.value
        if value.startswith(("iPhone", "iPod")):
            return Platform.IOS.value
        if value.startswith(_MAC_PREFIXES) or value.startswith("Xserve"):
            return Platform.MACOS.value
        if value.startswith("AppleTV"):
            return Platform.TVOS.value
        if value.startswith("Watch"):
            return Platform.WATCHOS.value
        if value.startswith("RealityDevice"):
            return Platform.VISIONOS.value
    return None


def get_device_by_udid(session: Session, udid: str) -> Device | None:
    return session.scalar(select(Device).where(Device.udid == udid))


#: how many devices one ambiguous identifier may name in a 409's detail
_AMBIGUITY_SAMPLE = 10
#: ``<key>:<value>`` names a device by that key alone (``id:12``, ``udid:…``, ``serial_number:…``)
IDENT_KEYS = ("id", "udid", "serial_number")


def get_device(session: Session, ident: str | int) -> Device:
    """A device by id, UDID or serial number, in one query; 404 when none matches.

    A device chooses its own UDID and serial number, so one identifier can name several devices
    (one's UDID is another's serial number, a serial number that is another's id, two devices
    claiming the same serial number). Guessing would send an administrator's lock or wipe to
    whichever device sorts first, so that is a 409 naming the matching devices and keys; the
    caller then names the device by one key, ``id:<id>`` (which no device can claim).
    """
    text = str(ident).strip()
    key, sep, value = text.partition(":")
    if sep and key in IDENT_KEYS:
        keys, text = (key,), value.strip()
    else:
        keys = IDENT_KEYS
    if not text:
        raise NotFound("no device '' (looked up by id, UDID and serial number)")
    clauses = []
    if "id" in keys and is_id(text):
        clauses.append(Device.id == int(text))
    if "udid" in keys:
        clauses.append(Device.udid == text)
    if "serial_number" in keys:
        clauses.append(Device.serial_number == text)
    if not clauses:
        raise NotFound(f"no device {text!r} ({text!r} is not a device id)")
    rows = list(session.scalars(select(Device).where(or_(*clauses)).order_by(Device.id)
                                .limit(_AMBIGUITY_SAMPLE + 1)))
    if not rows:
        looked_up = ", ".join(k.replace("_", " ") for k in keys)
        raise NotFound(f"no device {text!r} (looked up by {looked_up})")
    if len(rows) == 1:
        return rows[0]
    matches = [{"id": str(d.id), "keys": _matching_keys(d, text, keys)} for d in rows[:_AMBIGUITY_SAMPLE]]
    named = "; ".join(f"device {m['id']} by {' and '.join(m['keys'])}" for m in matches)
    raise Conflict(
        f"{text!r} names more than one device ({named}); name it by one key, e.g. id:{rows[0].id}",
        code="ambiguous_device", meta={"matches": matches},
    )


def _matching_keys(device: Device, text: str, keys: tuple[str, ...]) -> list[str]:
    found = []
    if "id" in keys and is_id(text) and device.id == int(text):
        found.append("id")
    if "udid" in keys and device.udid == text:
        found.append("udid")
    if "serial_number" in keys and device.serial_number == text:
        found.append("serial_number")
    return found


def device_bound_to(session: Session, fingerprint: str) -> Device | None:
    return session.scalar(select(Device).where(Device.identity_fingerprint == fingerprint))


def apply_authenticate(session: Session, message: Authenticate, fingerprint: str) -> Device:
    """Create or update the device from Authenticate and bind the identity certificate to it.

    Binding a different certificate forgets the secrets the previous enrollment gave (UnlockToken,
    BootstrapToken) and its user channels: they must never reach whoever holds the new one.
    """
    device = get_device_by_udid(session, message.udid)
    now = utcnow()
    if device is None:
        device = Device(udid=message.udid, created_at=now, admission_status=AdmissionStatus.PENDING.value)
        session.add(device)
    for attr in ("serial_number", "model", "model_name", "product_name", "os_version", "build_version",
                 "imei", "meid", "device_name", "topic"):
        value = getattr(message, attr)
        if value is not None:
            setattr(device, attr, value)
    device.platform = platform_for(device.product_name, device.model, device.model_name) or device.platform
    if device.identity_fingerprint != fingerprint:
        if device.identity_fingerprint is not None:
            forget_enrollment_secrets(session, device)
        device.identity_fingerprint = fingerprint
    # A new Authenticate starts a new enrollment: old push details are no longer valid.
    device.push_token = None
    device.push_magic = None
    device.enrolled = False
    device.unenrolled_at = None
    device.last_seen_at = now
    session.flush()
    return device


def forget_enrollment_secrets(session: Session, device: Device) -> None:
    """Drop what the device's enrollment entrusted to the server: UnlockToken, BootstrapToken and
    the user channels (their push tokens)."""
    device.unlock_token_encrypted = None
    device.bootstrap_token_encrypted = None
    if device.id is not None:
        session.execute(delete(DeviceUser).where(DeviceUser.device_id == device.id))


def apply_token_update(session: Session, device: Device, message: TokenUpdate, box: SecretBox) -> None:
    """Store push token, PushMagic, UnlockToken (encrypted) and AwaitingConfiguration."""
    now = utcnow()
    if message.is_user_channel:
        user = session.scalar(
            select(DeviceUser).where(DeviceUser.device_id == device.id, DeviceUser.user_id == message.user_id)
        )
        if user is None:
            user = DeviceUser(device_id=device.id, user_id=message.user_id)
            session.add(user)
        user.short_name = message.user_short_name
        user.long_name = message.user_long_name
        user.push_token = message.token
        user.push_magic = message.push_magic
        user.not_on_console = message.not_on_console
        user.updated_at = now
        return
    first = not device.enrolled
    if message.token is not None:
        device.push_token = message.token
    if message.push_magic is not None:
        device.push_magic = message.push_magic
    if message.unlock_token is not None:
        device.unlock_token_encrypted = seal_unlock_token(device.udid, message.unlock_token, box)
    if message.topic is not None:
        device.topic = message.topic
    device.awaiting_configuration = message.awaiting_configuration
    device.token_updated_at = now
    device.enrolled = True
    device.unenrolled_at = None
    if first or device.enrolled_at is None:
        device.enrolled_at = now


def move_binding(session: Session, device: Device, auth_set: AuthSet) -> str | None:
    """Bind the certificate of a held auth set to the device (an administrator accepted it).

    What the previous enrollment gave goes (UnlockToken, BootstrapToken, user channels, push token);
    what the held enrollment sent takes its place: its push token, PushMagic and topic, its sealed
    UnlockToken, and the serial number and model its auth set names. Without a held TokenUpdate the
    device is not enrolled until the new holder sends one. Returns the previous fingerprint.
    """
    previous = device.identity_fingerprint
    now = utcnow()
    forget_enrollment_secrets(session, device)
    device.identity_fingerprint = auth_set.fingerprint
    device.unlock_token_encrypted = auth_set.held_unlock_token_encrypted
    device.push_token = auth_set.held_push_token
    device.push_magic = auth_set.held_push_magic
    if auth_set.held_topic is not None:
        device.topic = auth_set.held_topic
    device.awaiting_configuration = bool(auth_set.held_awaiting_configuration)
    held_token_update = auth_set.held_token_updated_at is not None
    # the token became the device's now: an APNs refusal of the previous token does not stick to it
    device.token_updated_at = now if held_token_update else None
    device.enrolled = held_token_update
    device.enrolled_at = auth_set.held_token_updated_at if held_token_update else device.enrolled_at
    device.unenrolled_at = None
    claimed = _claimed_identity(auth_set.identity_data)
    for attr in ("serial_number", "model"):
        if claimed.get(attr):
            setattr(device, attr, claimed[attr])
    session.flush()
    return previous


def _claimed_identity(identity_data: str) -> dict[str, Any]:
    try:
        claimed = json.loads(identity_data)
    except ValueError:
        return {}
    return claimed if isinstance(claimed, dict) else {}


def apply_checkout(session: Session, device: Device, user_id: str | None = None) -> None:
    """The device (or one user channel) left management."""
    if user_id is not None:
        session.execute(delete(DeviceUser).where(DeviceUser.device_id == device.id, DeviceUser.user_id == user_id))
        return
    device.enrolled = False
    device.unenrolled_at = utcnow()
    device.push_token = None
    device.push_magic = None


def _aad(device: Device, purpose: str) -> bytes:
    return _udid_aad(device.udid, purpose)


def _udid_aad(udid: str, purpose: str) -> bytes:
    return f"device:{udid}:{purpose}".encode()


def seal_unlock_token(udid: str, token: bytes, box: SecretBox) -> bytes:
    """The UnlockToken as stored for the device ``udid`` (held enrollments seal theirs the same way,
    so accepting one moves the sealed bytes as they are)."""
    return box.encrypt(token, associated_data=_udid_aad(udid, "unlock"))


def unlock_token(device: Device, box: SecretBox) -> bytes | None:
    if device.unlock_token_encrypted is None:
        return None
    return box.decrypt(device.unlock_token_encrypted, associated_data=_aad(device, "unlock"))


def set_bootstrap_token(device: Device, message: SetBootstrapToken, box: SecretBox) -> None:
    if message.bootstrap_token is None:
        device.bootstrap_token_encrypted = None
    else:
        device.bootstrap_token_encrypted = box.encrypt(
            message.bootstrap_token, associated_data=_aad(device, "bootstrap")
        )


def bootstrap_token(device: Device, box: SecretBox) -> bytes | None:
    if device.bootstrap_token_encrypted is None:
        return None
    return box.decrypt(device.bootstrap_token_encrypted, associated_data=_aad(device, "bootstrap"))


def touch_last_seen(session: Session, device: Any, now: datetime) -> None:
    """Record that the device was seen, at most once a minute (one UPDATE, no ORM flush).

    ``device`` is a ``Device`` or anything with ``id`` and ``last_seen_at`` (the connect path's state).
    """
    if device.last_seen_at is not None and now - device.last_seen_at < LAST_SEEN_RESOLUTION:
        return
    session.execute(update(Device).where(Device.id == device.id).values(last_seen_at=now))
    if isinstance(device, Device):
        set_committed_value(device, "last_seen_at", now)
    else:
        device.last_seen_at = now


# --- inventory -------------------------------------------------------------------------------------


def _fit(model, row: dict[str, Any]) -> dict[str, Any]:
    """Cut device-reported strings to their column's length (inventory is informational; a
    device must not be able to make the write fail)."""
    table = model.__table__
    out = {}
    for key, value in row.items():
        column_type = table.c[key].type if key in table.c else None
        length = getattr(column_type, "length", None)
        if isinstance(value, str) and length and len(value) > length:
            value = value[:length]
        elif isinstance(value, int) and not isinstance(value, bool) and column_type is not None:
            limit = 2**63 - 1 if isinstance(column_type, BigInteger) else 2**31 - 1
            if not -limit <= value <= limit:
                value = None
        out[key] = value
    return out


def _replace(session: Session, model, device_id: int, rows: list[dict[str, Any]], now: datetime) -> None:
    session.execute(delete(model).where(model.device_id == device_id))
    if rows:
        session.execute(
            insert(model), [_fit(model, {**row, "device_id": device_id, "reported_at": now}) for row in rows]
        )


LOST_MODE_STATE = {"EnableLostMode": True, "DisableLostMode": False}

#: device-reported columns that device filters (hence smart groups) read: a change of one of them can
#: move the device into or out of a group (tests compare this with the filter language)
GROUP_FILTER_COLUMNS = frozenset({
    "device_name", "serial_number", "model", "model_name", "product_name", "os_version", "imei",
    "is_supervised", "lost_mode_enabled", "hostname", "platform",
})


@dataclass(frozen=True)
class InventoryUpdate:
    """What applying a command result did: ``applied`` (a handler took it), and whether a field in
    ``GROUP_FILTER_COLUMNS`` changed (then group membership may have changed)."""

    applied: bool
    group_fields_changed: bool = False


def apply_inventory(session: Session, device_id: int, request_type: str, answer: dict[str, Any]) -> InventoryUpdate:
    """Apply an acknowledged answer to the inventory (``applied`` false when there is no handler).

    A malformed answer is logged and left out of the inventory (the raw result stays with the command).
    Telling whether a group field changed costs no statement: the UPDATE compares old and new values
    itself and returns the verdict.
    """
    if request_type in LOST_MODE_STATE:
        # these answers carry no data: the acknowledgement itself is the new state
        state = LOST_MODE_STATE[request_type]
        changed = session.execute(
            update(Device).where(Device.id == device_id, Device.lost_mode_enabled.is_distinct_from(state))
            .values(lost_mode_enabled=state).returning(Device.id)
        ).first()
        return InventoryUpdate(True, group_fields_changed=changed is not None)
    try:
        data = inventory.parse_inventory(request_type, answer)
    except ProtocolError as exc:
        log.warning("device %s: %s answer not applied to inventory: %s", device_id, request_type, exc.message)
        return InventoryUpdate(False)
    if data is None:
        return InventoryUpdate(False)
    now = utcnow()
    if request_type == "DeviceInformation":
        values = dict(data["columns"])
        values.update(device_information=data["query_responses"], inventory_updated_at=now)
        if "product_name" in values or "model" in values:
            platform = platform_for(values.get("product_name"), values.get("model"), values.get("model_name"))
            if platform:
                values["platform"] = platform
        values = _fit(Device, values)
        # SET expressions read the row's old values: the CASE stamps the change time only when a
        # group field differs, and RETURNING tells us (one statement, as before)
        differs = [Device.__table__.c[name].is_distinct_from(values[name])
                   for name in sorted(GROUP_FILTER_COLUMNS) if name in values]
        stamp = case((or_(*differs), now), else_=Device.group_fields_changed_at) if differs \
            else Device.group_fields_changed_at
        stamped = session.execute(
            update(Device).where(Device.id == device_id).values(**values, group_fields_changed_at=stamp)
            .returning(Device.group_fields_changed_at)
        ).scalar()
        return InventoryUpdate(True, group_fields_changed=stamped == now)
    elif request_type == "SecurityInfo":
        session.execute(delete(DeviceSecurityInfo).where(DeviceSecurityInfo.device_id == device_id))
        session.execute(insert(DeviceSecurityInfo).values(device_id=device_id, updated_at=now, **_fit(DeviceSecurityInfo, data)))
    elif request_type == "ProfileList":
        _replace(session, InstalledProfile, device_id, data, now)
    elif request_type == "InstalledApplicationList":
        _replace(session, InstalledApplication, device_id, data, now)
    elif request_type == "ManagedApplicationList":
        for app in data:
            session.execute(
                update(InstalledApplication)
                .where(InstalledApplication.device_id == device_id,
                       InstalledApplication.identifier == app["identifier"])
                .values(**_fit(InstalledApplication, {"managed_status": app["status"]}))
            )
    elif request_type == "CertificateList":
        rows = [{**c, "not_before": _dt(c["not_before"]), "not_after": _dt(c["not_after"])} for c in data]
        _replace(session, DeviceCertificate, device_id, rows, now)
    elif request_type == "DeviceLocation":
        session.execute(insert(DeviceLocation).values(device_id=device_id, received_at=now, **_fit(DeviceLocation, data)))
    elif request_type == "AvailableOSUpdates":
        _replace(session, AvailableOSUpdate, device_id, data, now)
    else:
        return InventoryUpdate(False)
    return InventoryUpdate(True)


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def delete_device(session: Session, device: Device) -> None:
    commands.delete_for_device(session, device.id)
    session.delete(device)
    session.flush()
