"""Device inventory: list with filters and facets, asset-field updates, delete, bulk device lookup."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from mdmserver.admission import service as admission
from mdmserver.api.jsonapi import ListQuery, Page, paginate
from mdmserver.attributes.models import CustomAttribute
from mdmserver.audit.service import record_event
from mdmserver.commands.service import QueuePlan, enqueue_where, validate_command
from mdmserver.db import utcnow
from mdmserver.devices import service as devices
from mdmserver.devices.conditions import manageable
from mdmserver.devices.models import Device
from mdmserver.devices.service import get_device  # noqa: F401 (re-exported: the lookup every admin view uses)
from mdmserver.errors import BadRequest, Conflict, UnprocessableEntity
from mdmserver.inventory.filters import ATTRIBUTE_NAME, CUSTOM_PREFIX, FACETS, is_id
from mdmserver.inventory.sqlutil import in_values
from mdmserver.pki import service as pki
from mdmserver.protocol import catalogue
from mdmserver.users.models import DeviceOwnership

MAX_FACETS = 10
#: Most devices one request may name one by one (ids, UDIDs or serial numbers). Larger sets are named
#: by group, filter or ``all_devices``; a longer list is a 422 before any lookup (docs/security.md).
MAX_NAMED_DEVICES = 10_000


def parse_facets(raw: str | None) -> list[str]:
    """``platform,os_version,custom.dept`` → the facet names, validated (400 otherwise)."""
    if raw is None:
        return []
    names = list(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
    if len(names) > MAX_FACETS:
        raise BadRequest(f"at most {MAX_FACETS} facets per request", parameter="facets")
    for name in names:
        if name in FACETS:
            continue
        if name.startswith(CUSTOM_PREFIX) and ATTRIBUTE_NAME.match(name[len(CUSTOM_PREFIX):]):
            continue
        allowed = ", ".join(sorted(FACETS))
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


@dataclass
class Resolved:
    """Devices named in a request: ``ids`` in order of first mention, ``missing`` the names not found."""

    ids: list[int]
    missing: list[str]
    by_name: dict[str, int]


def _one_key(text: str) -> tuple[str | None, str]:
    """``id:12``, ``udid:…`` or ``serial_number:…`` names a device by that key alone."""
    key, sep, value = text.partition(":")
    return (key, value) if sep and key in devices.IDENT_KEYS else (None, text)


def resolve_devices(
    session: Session, names: Sequence[Any], *, pointer: str | None = None, parameter: str | None = None
) -> Resolved:
    """Look devices up by id, UDID or serial number in one statement, however many are named.

    Each device counts once however many ways it is named. A name that fits several devices (one's
    serial number is another's UDID or id) is a 409: devices choose their serial numbers, so a
    bulk action must never guess; ``id:``, ``udid:`` and ``serial_number:`` name one key. More than ``MAX_NAMED_DEVICES`` names is a
    422 whose source is ``pointer`` (body) or ``parameter`` (query string).
    """
    if len(names) > MAX_NAMED_DEVICES:
        raise UnprocessableEntity(
            f"at most {MAX_NAMED_DEVICES} devices can be named in one request (name more by group or filter)",
            code="too_many_devices", pointer=pointer, parameter=parameter,
        )
    texts = [str(name).strip() for name in names]
    unique = list(dict.fromkeys(texts))
    keyed = {text: _one_key(text) for text in unique}
    values = list(dict.fromkeys(value for _, value in keyed.values()))
    numeric = [int(v) for v in values if is_id(v)]
    found_ids: set[int] = set()
    by_key: dict[str, dict[str, set[int]]] = {"udid": {}, "serial_number": {}}
    if unique:
        rows = session.execute(
            select(Device.id, Device.udid, Device.serial_number).where(
                or_(
                    in_values(session, Device.id, numeric, integer=True),
                    in_values(session, Device.udid, values, integer=False),
                    in_values(session, Device.serial_number, values, integer=False),
                )
            )
        ).all()
        for row in rows:
            found_ids.add(row.id)
            by_key["udid"].setdefault(row.udid, set()).add(row.id)
            if row.serial_number:
                by_key["serial_number"].setdefault(row.serial_number, set()).add(row.id)
    by_name: dict[str, int] = {}
    missing: dict[str, None] = {}  # insertion-ordered set: names not found, each once
    ambiguous: dict[str, None] = {}
    for text in texts:
        key, value = keyed[text]
        matched: set[int] = set()
        if key in (None, "id") and is_id(value) and int(value) in found_ids:
            matched.add(int(value))
        for column in ("udid", "serial_number"):
            if key in (None, column):
                matched |= by_key[column].get(value, set())
        if not matched:
            missing[text] = None
        elif len(matched) > 1:
            ambiguous[text] = None
        else:
            by_name[text] = next(iter(matched))
    if ambiguous:
        # a device chooses its own serial number: a name that fits several devices must never pick one
        shown = list(ambiguous)
        raise Conflict(
            f"{len(shown)} name(s) match several devices by different keys (id, UDID, serial number): "
            f"{', '.join(shown[:10])}; name each of those devices by one key: id:<n>, udid:<text> or "
            "serial_number:<text>",
            code="ambiguous_device", pointer=pointer, parameter=parameter,
        )
    return Resolved(ids=list(dict.fromkeys(by_name.values())), missing=list(missing), by_name=by_name)


def rename_applicability(platform: str | None, supervised: bool | None) -> tuple[bool, str | None]:
    """Whether the Settings ``DeviceName`` item can rename a device of this platform and supervision."""
    variant = catalogue.get_spec("Settings").tree["keys"]["Settings"]["variants"]["DeviceName"]
    platforms = variant.get("platforms") or []
    if not platform:
        return False, "the device's platform is not known yet"
    if platform not in platforms:
        return False, f"renaming is not available on {platform}"
    if platform in (variant.get("supervised_on") or []) and not supervised:
        return False, f"renaming needs a supervised device on {platform}"
    return True, None


def rename_parameters(name: str) -> dict[str, Any]:
    return {"Settings": [{"Item": "DeviceName", "DeviceName": name}]}


def update_device(
    session: Session, device: Device, changes: dict[str, Any], *, actor: str | None
) -> tuple[Device, dict[str, Any]]:
    """Apply asset-field changes; a new name also queues the rename command where the platform allows.

    Returns the device and a ``meta`` dict telling whether a rename command was queued and why not.
    """
    meta: dict[str, Any] = {}
    before = {}
    for key, value in changes.items():
        before[key] = _jsonable(getattr(device, key))
        setattr(device, key, value)
    if "device_name" in changes and before["device_name"] != changes["device_name"]:
        ok, reason = rename_applicability(device.platform, device.is_supervised)
        if ok and device.enrolled:
            plan = QueuePlan("Settings", validate_command("Settings", rename_parameters(changes["device_name"])))
            (queued,) = enqueue_where(session, and_(Device.id == device.id, manageable()), [plan], actor=actor,
                                      now=utcnow())
            if queued:
                meta["rename_command"] = queued[0][1]
            else:
                meta["rename_not_sent"] = "the device cannot receive commands (retired or refused)"
        else:
            meta["rename_not_sent"] = reason or "the device is not enrolled"
    session.flush()
    record_event(
        session, "device:update", "devices", device.id,
        {"before": before, "after": {k: _jsonable(v) for k, v in changes.items()}, **meta},
    )
    return device, meta


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def delete_device(session: Session, device: Device) -> None:
    """Forget a device: its commands, inventory, attributes, memberships and auth sets go with it.

    Every enrollment certificate it used is revoked, so that it cannot re-create itself with an
    ``Authenticate``; enrolling it again takes a new enrollment profile (and admission).
    """
    details = {"udid": device.udid, "serial_number": device.serial_number}
    device_id = device.id
    fingerprints = [device.identity_fingerprint, *admission.certificate_fingerprints(session, device_id)]
    revoked = pki.revoke_certificates(session, fingerprints)
    devices.delete_device(session, device)
    record_event(session, "device:delete", "devices", device_id, {**details, "certificates_revoked": revoked})
