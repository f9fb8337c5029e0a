"""Naming devices: one device by id, UDID or serial number (:func:`get_device`), or many in one
statement (:func:`resolve_devices`). A device chooses its own UDID and serial number, so a name that
fits several devices is a 409, never a guess."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mdmserver.api.jsonapi import is_id
from mdmserver.errors import Conflict, NotFound, UnprocessableEntity
from mdmserver.records.devices import Device
from mdmserver.records.groups import DeviceGroup
from mdmserver.selection.sql import in_values

#: Most devices one request may name one by one (ids, UDIDs or serial numbers). Larger sets are named
#: by group, filter or ``all_devices``; a longer list is a 422 before any lookup (docs/security.md).
MAX_NAMED_DEVICES = 10_000
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




@dataclass
class Resolved:
    """Devices named in a request: ``ids`` in order of first mention, ``missing`` the names not found."""

    ids: list[int]
    missing: list[str]
    by_name: dict[str, int]


def _one_key(text: str) -> tuple[str | None, str]:
    """``id:12``, ``udid:…`` or ``serial_number:…`` names a device by that key alone."""
    key, sep, value = text.partition(":")
    return (key, value) if sep and key in IDENT_KEYS else (None, text)


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


def resolve_targets(
    session: Session, devices: Sequence[str | int] | None, groups: Sequence[int] | None
) -> tuple[list[int], list[int]]:
    """Device and group ids of an assignment body (``devices``: ids, UDIDs or serial numbers; ``groups``:
    group ids); 422 with a pointer per unknown one, before anything is done."""
    device_ids: list[int] = []
    group_ids: list[int] = []
    if devices is not None:
        resolved = resolve_devices(session, devices, pointer="/devices")
        if resolved.missing:
            missing = set(resolved.missing)
            raise UnprocessableEntity("unknown devices; nothing was changed", errors=[
                {"detail": f"no device {name!r}", "pointer": f"/devices/{i}"}
                for i, name in enumerate(str(d).strip() for d in devices) if name in missing])
        device_ids = resolved.ids
    if groups is not None:
        group_ids = list(dict.fromkeys(groups))
        known = set(session.scalars(select(DeviceGroup.id).where(DeviceGroup.id.in_(group_ids))))
        if len(known) != len(group_ids):
            raise UnprocessableEntity("unknown device groups; nothing was changed", errors=[
                {"detail": f"no device group {g}", "pointer": f"/groups/{i}"}
                for i, g in enumerate(groups) if g not in known])
    return device_ids, group_ids
