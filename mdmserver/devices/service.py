"""Devices, the one writer of ``devices``: check-in state changes, inventory from command results,
asset fields, the device list's facets and owners. Naming a device is :mod:`mdmserver.selection.resolve`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, case, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from mdmserver.api.jsonapi import ListQuery, Page, paginate
from mdmserver.db import utcnow
from mdmserver.errors import BadRequest
from mdmserver.pki.secretbox import SecretBox
from mdmserver.protocol import inventory
from mdmserver.protocol.checkin import Authenticate, SetBootstrapToken, TokenUpdate
from mdmserver.protocol.plist import ProtocolError
from mdmserver.records.admission import AdmissionStatus, AuthSet
from mdmserver.records.attributes import ATTRIBUTE_NAME, CustomAttribute
from mdmserver.records.devices import (
    AvailableOSUpdate,
    Device,
    DeviceCertificate,
    DeviceLocation,
    DeviceOSUpdateStatus,
    DeviceSecurityInfo,
    DeviceUser,
    InstalledApplication,
    InstalledProfile,
    Platform,
)
from mdmserver.records.users import DeviceOwnership
from mdmserver.selection.filters import CUSTOM_PREFIX, FACETS, JOINED_FACETS
from mdmserver.webhooks import events as webhook_events
from mdmserver.webhooks.events import DeviceRef

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


def device_refs(session: Session, device_ids: Iterable[int]) -> dict[int, DeviceRef]:
    """What events say about these devices (id, UDID, serial number), by id; one SELECT per 5,000."""
    ids = list(dict.fromkeys(device_ids))
    refs: dict[int, DeviceRef] = {}
    for start in range(0, len(ids), 5000):
        rows = session.execute(select(Device.id, Device.udid, Device.serial_number)
                               .where(Device.id.in_(ids[start:start + 5000])))
        refs.update({row.id: DeviceRef(row.id, row.udid, row.serial_number) for row in rows})
    return refs


def device_bound_to(session: Session, fingerprint: str) -> Device | None:
    return session.scalar(select(Device).where(Device.identity_fingerprint == fingerprint))


def _take_reported_facts(device: Device, message: Authenticate) -> None:
    """The inventory facts an Authenticate reports (absent ones leave the stored value)."""
    for attr in ("serial_number", "model", "model_name", "product_name", "os_version", "build_version",
                 "imei", "meid", "device_name", "topic"):
        value = getattr(message, attr)
        if value is not None:
            setattr(device, attr, value)
    device.platform = platform_for(device.product_name, device.model, device.model_name) or device.platform


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
    _take_reported_facts(device, message)
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


def apply_renewed_identity(session: Session, message: Authenticate, device: Device, fingerprint: str) -> Device:
    """Bind a renewed identity (``checkin/renewal.py``): the device stays enrolled with its push
    details and the secrets its enrollment gave, and takes the inventory facts Authenticate reports."""
    _take_reported_facts(device, message)
    device.identity_fingerprint = fingerprint
    device.last_seen_at = utcnow()
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
    webhook_events.device_checked_out(session, device, device.unenrolled_at)


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


def last_seen_due(device: Any, now: datetime) -> bool:
    """Whether seeing the device at ``now`` is to be recorded (:func:`touch_last_seen`)."""
    return device.last_seen_at is None or now - device.last_seen_at >= LAST_SEEN_RESOLUTION


def touch_last_seen(session: Session, device: Any, now: datetime) -> None:
    """Record that the device was seen, at most once a minute (one UPDATE, no ORM flush).

    ``device`` is a ``Device`` or anything with ``id`` and ``last_seen_at`` (the connect path's state).
    """
    if not last_seen_due(device, now):
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
    handler = _INVENTORY_HANDLERS.get(request_type)
    if data is None or handler is None:
        return InventoryUpdate(False)
    return handler(session, device_id, data, utcnow())


def _device_information(session: Session, device_id: int, data: dict[str, Any], now: datetime) -> InventoryUpdate:
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


def _security_info(session: Session, device_id: int, data: dict[str, Any], now: datetime) -> InventoryUpdate:
    session.execute(delete(DeviceSecurityInfo).where(DeviceSecurityInfo.device_id == device_id))
    session.execute(insert(DeviceSecurityInfo).values(device_id=device_id, updated_at=now, **_fit(DeviceSecurityInfo, data)))
    return InventoryUpdate(True)


def _replacing(model) -> Callable[[Session, int, list[dict[str, Any]], datetime], InventoryUpdate]:
    """A handler for an answer that lists the device's rows of ``model`` in full."""

    def handler(session: Session, device_id: int, data: list[dict[str, Any]], now: datetime) -> InventoryUpdate:
        _replace(session, model, device_id, data, now)
        return InventoryUpdate(True)

    return handler


def _managed_applications(session: Session, device_id: int, data: list[dict[str, Any]], now: datetime) -> InventoryUpdate:
    for app in data:
        session.execute(
            update(InstalledApplication)
            .where(InstalledApplication.device_id == device_id,
                   InstalledApplication.identifier == app["identifier"])
            .values(**_fit(InstalledApplication, {"managed_status": app["status"]}))
        )
    return InventoryUpdate(True)


def _certificates(session: Session, device_id: int, data: list[dict[str, Any]], now: datetime) -> InventoryUpdate:
    rows = [{**c, "not_before": _dt(c["not_before"]), "not_after": _dt(c["not_after"])} for c in data]
    _replace(session, DeviceCertificate, device_id, rows, now)
    return InventoryUpdate(True)


def _location(session: Session, device_id: int, data: dict[str, Any], now: datetime) -> InventoryUpdate:
    session.execute(insert(DeviceLocation).values(device_id=device_id, received_at=now, **_fit(DeviceLocation, data)))
    return InventoryUpdate(True)


def _available_os_updates(session: Session, device_id: int, data: list[dict[str, Any]],
                          now: datetime) -> InventoryUpdate:
    """The offered updates, replaced whole, and when the device said so (an empty list is known too)."""
    _replace(session, AvailableOSUpdate, device_id, data, now)
    session.execute(update(Device).where(Device.id == device_id).values(os_updates_reported_at=now))
    return InventoryUpdate(True)


def _os_update_status(session: Session, device_id: int, data: list[dict[str, Any]], now: datetime) -> InventoryUpdate:
    rows = [{**u, "next_scheduled_install": _dt(u["next_scheduled_install"])} for u in data]
    _replace(session, DeviceOSUpdateStatus, device_id, rows, now)
    return InventoryUpdate(True)


#: request type → what its parsed answer (``protocol.inventory.parse_inventory``) does to the inventory
_INVENTORY_HANDLERS: dict[str, Callable[[Session, int, Any, datetime], InventoryUpdate]] = {
    "DeviceInformation": _device_information,
    "SecurityInfo": _security_info,
    "ProfileList": _replacing(InstalledProfile),
    "InstalledApplicationList": _replacing(InstalledApplication),
    "ManagedApplicationList": _managed_applications,
    "CertificateList": _certificates,
    "DeviceLocation": _location,
    "AvailableOSUpdates": _available_os_updates,
    "OSUpdateStatus": _os_update_status,
}


#: The request types whose acknowledged answers :func:`apply_inventory` does something with (a parser
#: with no handler counts: a malformed answer is logged); to any other it does nothing.
INVENTORY_REQUEST_TYPES = frozenset(LOST_MODE_STATE) | frozenset(_INVENTORY_HANDLERS) | frozenset(inventory.PARSERS)


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


# -- the device list: facets and owners (filters are mdmserver.selection.filters) --

MAX_FACETS = 10


def parse_facets(raw: str | None) -> list[str]:
    """``platform,os_version,custom.dept`` → the facet names, validated (400 otherwise)."""
    if raw is None:
        return []
    names = list(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
    if len(names) > MAX_FACETS:
        raise BadRequest(f"at most {MAX_FACETS} facets per request", parameter="facets")
    for name in names:
        if name in FACETS or name in JOINED_FACETS:
            continue
        if name.startswith(CUSTOM_PREFIX) and ATTRIBUTE_NAME.match(name[len(CUSTOM_PREFIX):]):
            continue
        allowed = ", ".join(sorted({*FACETS, *JOINED_FACETS}))
        raise BadRequest(f"unknown facet {name!r}; allowed: {allowed}, custom.<name>", parameter="facets")
    return names


def facet_counts(
    session: Session, conditions: Sequence[ColumnElement[bool]], names: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Counts per value of each facet over the filtered devices: one GROUP BY query per facet."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        if name in FACETS:
            column = FACETS[name]
            stmt = select(column, func.count()).select_from(Device).where(*conditions).group_by(column)
        elif name in JOINED_FACETS:
            joined, on, missing = JOINED_FACETS[name]
            column = func.coalesce(joined, missing)
            stmt = (select(column, func.count()).select_from(Device).outerjoin(joined.table, on)
                    .where(*conditions).group_by(column))
        else:
            attr = name[len(CUSTOM_PREFIX):]
            column = CustomAttribute.value
            stmt = (
                select(column, func.count())
                .select_from(CustomAttribute)
                .join(Device, Device.id == CustomAttribute.device_id)
                .where(CustomAttribute.name == attr, *conditions)
                .group_by(column)
            )
        rows = session.execute(stmt.order_by(func.count().desc(), column)).all()
        out[name] = [{"value": value, "count": count} for value, count in rows]
    return out


def list_devices(session: Session, query: ListQuery) -> Page:
    return paginate(session, select(Device), query)


def owners_of(session: Session, device_ids: Iterable[int]) -> dict[int, int]:
    """device id → owner user id, for one page of devices (one query)."""
    ids = list(device_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(DeviceOwnership.device_id, DeviceOwnership.user_id).where(DeviceOwnership.device_id.in_(ids))
    )
    return {device_id: user_id for device_id, user_id in rows}


def update_asset_fields(session: Session, device: Device, changes: dict[str, Any]) -> dict[str, Any]:
    """Set the administrator-owned fields in ``changes``; returns ``{"before": …, "after": …}`` with
    JSON-safe values (for the audit log)."""
    change = {"before": {key: _jsonable(getattr(device, key)) for key in changes},
              "after": {key: _jsonable(value) for key, value in changes.items()}}
    for key, value in changes.items():
        setattr(device, key, value)
    session.flush()
    return change


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def delete_device(session: Session, device: Device) -> None:
    """Delete the device row; its inventory, attributes, memberships and auth sets go with it (the
    caller deletes its commands first: :func:`mdmserver.workflows.delete_device`)."""
    session.delete(device)
    session.flush()


def create_device(session: Session, *, udid: str, serial_number: str | None, model: str | None) -> Device:
    """A device known before it enrolls (a Mender auth set submitted for it): pending admission."""
    device = Device(udid=udid, serial_number=serial_number, model=model,
                    admission_status=AdmissionStatus.PENDING.value)
    session.add(device)
    session.flush()
    return device


def set_admission_status(session: Session, device: Device, status: str) -> None:
    """The device's admission status, as its bound auth set decides (``admission.effective_status``);
    a change is a ``device.admission_changed`` event."""
    previous = device.admission_status
    device.admission_status = status
    if previous != status:
        webhook_events.admission_changed(session, device, previous, status)


def rename_devices(session: Session, condition: ColumnElement[bool], name: str, now: datetime) -> None:
    """Record the name a rename command was queued with on every device matching ``condition``."""
    session.execute(update(Device).where(condition).values(device_name=name, updated_at=now))
