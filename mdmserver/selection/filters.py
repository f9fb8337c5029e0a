"""The device filter language, turned into SQL conditions.

One function set serves the device list (``filter[platform]=ios``), smart groups (their stored
``{"platform": "ios"}`` mapping), bulk actions (``{"filter": {...}}``) and the command history's
``filter[group]``. Every builder raises ``ValueError`` for a bad value; callers turn it into a 4xx.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, or_, select, true
from sqlalchemy.orm import Session

from mdmserver.api.jsonapi import is_id, parse_bool
from mdmserver.records.admission import AdmissionStatus
from mdmserver.records.attributes import ATTRIBUTE_NAME, CustomAttribute
from mdmserver.records.compliance import COMPLIANCE_STATES, ComplianceState, DeviceCompliance
from mdmserver.records.devices import Device, Platform
from mdmserver.records.groups import DeviceGroup, GroupKind, GroupMember
from mdmserver.records.users import DeviceOwnership, User
from mdmserver.selection.conditions import retired as retired_condition

FilterFn = Callable[[str], ColumnElement[bool]]


class FilterError(ValueError):
    """A ``ValueError`` whose message already names the filter key at fault (``filter 'x': …``)."""


CUSTOM_PREFIX = "custom."
MAX_LIST_VALUES = 1000
MAX_GROUP_DEPTH = 32

ADMISSION_VALUES = tuple(s.value for s in AdmissionStatus)
PLATFORM_VALUES = tuple(p.value for p in Platform)


def parse_datetime(value: str) -> datetime:
    """An ISO 8601 date or time as an aware UTC datetime (no zone means UTC). ValueError for anything
    else, including times whose UTC value falls outside the years 1 to 9999 (``9999-12-31T23:00-05:00``),
    which the database layer could not store or compare."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"expected an ISO 8601 date or time, not {value!r}") from None
    except OverflowError:
        raise ValueError(f"{value!r} is outside the years 1 to 9999 in UTC") from None


def split_list(value: str) -> list[str]:
    items = [part.strip() for part in value.split(",") if part.strip()]
    if not items:
        raise ValueError("expected at least one value")
    if len(items) > MAX_LIST_VALUES:
        raise ValueError(f"at most {MAX_LIST_VALUES} values")
    return items


def one_of(column: Any, allowed: Iterable[str]) -> Callable[[str], ColumnElement[bool]]:
    """A list-query filter over a status-like column: the value is one of ``allowed``, or a
    comma-separated list of them (``filter[status]=failed,scheduled``)."""
    choices = tuple(allowed)

    def build(value: str) -> ColumnElement[bool]:
        wanted = split_list(value)
        for item in wanted:
            if item not in choices:
                raise ValueError(f"unknown status {item!r}; allowed: {', '.join(choices)}")
        return column.in_(wanted)

    return build


def _choice_list(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(value: str) -> list[str]:
        items = split_list(value)
        unknown = [item for item in items if item not in allowed]
        if unknown:
            raise ValueError(f"unknown value {unknown[0]!r}; allowed: {', '.join(allowed)}")
        return items

    return parse


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def contains(column, value: str) -> ColumnElement[bool]:
    """Case-insensitive substring match (LIKE with escaped wildcards)."""
    return func.lower(column).like(f"%{_like_escape(value.strip().lower())}%", escape="\\")


def _exact_or_prefix(column, value: str) -> ColumnElement[bool]:
    """``17.4`` matches exactly, ``17.*`` by prefix."""
    value = value.strip()
    if not value:
        raise ValueError("expected a value")
    if value.endswith("*"):
        return column.like(f"{_like_escape(value[:-1])}%", escape="\\")
    return column == value


def _ids(value: str) -> list[int]:
    out = []
    for item in split_list(value):
        if not is_id(item):
            raise ValueError(f"{item!r} is not a device id")
        out.append(int(item))
    return out


def custom_attribute_condition(name: str, value: str) -> ColumnElement[bool]:
    """``filter[custom.<name>]=<value>``: the device has the attribute with that value (``*``: any value)."""
    if not ATTRIBUTE_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid custom attribute name")
    clause = and_(CustomAttribute.device_id == Device.id, CustomAttribute.name == name)
    if value != "*":
        clause = and_(clause, CustomAttribute.value == value)
    return exists().where(clause)


def compliance_state_condition(value: str) -> ColumnElement[bool]:
    """``filter[compliance_state]=non_compliant`` (or a comma-separated list): through the indexed
    ``device_compliance.state``; a device never evaluated counts as ``unknown``."""
    wanted = _choice_list(COMPLIANCE_STATES)(value)
    condition = Device.id.in_(select(DeviceCompliance.device_id).where(DeviceCompliance.state.in_(wanted)))
    if ComplianceState.UNKNOWN.value in wanted:
        condition = or_(condition, ~exists().where(DeviceCompliance.device_id == Device.id))
    return condition


def owner_email_condition(value: str) -> ColumnElement[bool]:
    email = value.strip().lower()
    if not email:
        raise ValueError("expected an email address")
    return Device.id.in_(
        select(DeviceOwnership.device_id)
        .join(User, User.id == DeviceOwnership.user_id)
        .where(func.lower(User.email) == email)
    )


def owner_uid_condition(value: str) -> ColumnElement[bool]:
    """``filter[owner_uid]=<uid>``: the owner's uid (the directory's user id, e.g. Ivanti's ``UID``), exact."""
    uid = value.strip()
    if not uid:
        raise ValueError("expected a user uid")
    return Device.id.in_(
        select(DeviceOwnership.device_id)
        .join(User, User.id == DeviceOwnership.user_id)
        .where(User.uid == uid)
    )


def free_text_condition(value: str) -> ColumnElement[bool]:
    text = value.strip()
    if not text:
        raise ValueError("expected some text to search for")
    columns = (Device.device_name, Device.serial_number, Device.udid, Device.model, Device.model_name,
               Device.product_name, Device.asset_tag, Device.imei, Device.office, Device.asset_owner,
               Device.hostname)
    return or_(*(contains(column, text) for column in columns))


def group_condition(session: Session, group_id: int, _seen: frozenset[int] = frozenset()) -> ColumnElement[bool]:
    """Membership of a group: its static members and smart matches, and those of every subgroup."""
    rows = session.execute(
        select(DeviceGroup.id, DeviceGroup.parent_id, DeviceGroup.kind, DeviceGroup.filter)
    ).all()
    by_id = {row.id: row for row in rows}
    if group_id not in by_id:
        raise ValueError(f"no device group {group_id}")
    children: dict[int, list[int]] = {}
    for row in rows:
        if row.parent_id is not None:
            children.setdefault(row.parent_id, []).append(row.id)
    subtree, stack = [], [group_id]
    while stack:
        current = stack.pop()
        if current in subtree:
            continue
        subtree.append(current)
        stack.extend(children.get(current, ()))
    static_ids = [gid for gid in subtree if by_id[gid].kind == GroupKind.STATIC]
    clauses: list[ColumnElement[bool]] = []
    if static_ids:
        clauses.append(
            Device.id.in_(select(GroupMember.device_id).where(GroupMember.group_id.in_(static_ids)))
        )
    for gid in subtree:
        row = by_id[gid]
        if row.kind != GroupKind.SMART:
            continue
        if gid in _seen or len(_seen) > MAX_GROUP_DEPTH:
            raise ValueError(f"smart group {gid} refers to itself through its filter")
        conditions = conditions_from_mapping(session, row.filter or {}, _seen=_seen | {gid})
        clauses.append(and_(true(), *conditions))
    return or_(*clauses) if clauses else false()


def device_filters(session: Session, _seen: frozenset[int] = frozenset()) -> dict[str, FilterFn]:
    """The named device filters, for ``parse_list_query`` and stored filter mappings."""

    def group(value: str) -> ColumnElement[bool]:
        value = value.strip()
        if not is_id(value):
            raise ValueError(f"{value!r} is not a group id")
        return group_condition(session, int(value), _seen)

    return {
        "id": lambda v: Device.id.in_(_ids(v)),
        "udid": lambda v: Device.udid.in_(split_list(v)),
        "serial_number": lambda v: Device.serial_number.in_(split_list(v)),
        "name": lambda v: contains(Device.device_name, v),
        "platform": lambda v: Device.platform.in_(_choice_list(PLATFORM_VALUES)(v)),
        "model": lambda v: or_(Device.model == v.strip(), Device.model_name == v.strip(),
                               Device.product_name == v.strip()),
        "os_version": lambda v: _exact_or_prefix(Device.os_version, v),
        "supervised": lambda v: Device.is_supervised.is_(True) if parse_bool(v)
        else or_(Device.is_supervised.is_(False), Device.is_supervised.is_(None)),
        "enrolled": lambda v: Device.enrolled.is_(parse_bool(v)),
        "lost_mode": lambda v: Device.lost_mode_enabled.is_(True) if parse_bool(v)
        else or_(Device.lost_mode_enabled.is_(False), Device.lost_mode_enabled.is_(None)),
        "admission_status": lambda v: Device.admission_status.in_(_choice_list(ADMISSION_VALUES)(v)),
        "owner_email": owner_email_condition,
        "compliance_state": compliance_state_condition,
        "owner_uid": owner_uid_condition,
        "group": group,
        "last_seen_before": lambda v: Device.last_seen_at < parse_datetime(v),
        "last_seen_after": lambda v: Device.last_seen_at >= parse_datetime(v),
        "enrolled_after": lambda v: Device.enrolled_at >= parse_datetime(v),
        "asset_tag": lambda v: Device.asset_tag.in_(split_list(v)),
        "office": lambda v: Device.office == v.strip(),
        "purchase_type": lambda v: Device.purchase_type == v.strip(),
        "retired": lambda v: retired_condition() if parse_bool(v) else ~retired_condition(),
        "q": free_text_condition,
    }


DYNAMIC_FILTERS = {CUSTOM_PREFIX: custom_attribute_condition}


def conditions_from_mapping(
    session: Session, mapping: Any, *, _seen: frozenset[int] = frozenset()
) -> list[ColumnElement[bool]]:
    """Conditions for a stored or posted filter object ``{"platform": "ios", "custom.dept": "IT"}``.

    Raises ``ValueError`` naming the offending key.
    """
    if not isinstance(mapping, Mapping):
        raise ValueError("a device filter must be an object of filter names to string values")
    builders = device_filters(session, _seen)
    conditions = []
    for key, value in mapping.items():
        if not isinstance(value, str | int | bool) or isinstance(value, float):
            raise FilterError(f"filter {key!r}: the value must be a string")
        text = str(value).lower() if isinstance(value, bool) else str(value)
        build = builders.get(key)
        if build is None and key.startswith(CUSTOM_PREFIX) and len(key) > len(CUSTOM_PREFIX):
            name = key[len(CUSTOM_PREFIX):]
            conditions.append(_wrap(key, lambda n=name, t=text: custom_attribute_condition(n, t)))
            continue
        if build is None:
            raise ValueError(f"unknown filter {key!r}; allowed: {', '.join(sorted(builders))}, custom.<name>")
        conditions.append(_wrap(key, lambda b=build, t=text: b(t)))
    return conditions


def _wrap(key: str, build: Callable[[], ColumnElement[bool]]) -> ColumnElement[bool]:
    try:
        return build()
    except FilterError:
        raise  # a nested smart group's filter already named its key
    except ValueError as exc:
        raise FilterError(f"filter {key!r}: {exc}") from None


DEVICE_SORTS: dict[str, Any] = {
    "id": Device.id,
    "name": Device.device_name,
    "device_name": Device.device_name,
    "serial_number": Device.serial_number,
    "udid": Device.udid,
    "platform": Device.platform,
    "model": Device.model,
    "os_version": Device.os_version,
    "admission_status": Device.admission_status,
    "last_seen_at": Device.last_seen_at,
    "enrolled_at": Device.enrolled_at,
    "created_at": Device.created_at,
    "updated_at": Device.updated_at,
    "asset_tag": Device.asset_tag,
    "office": Device.office,
}

#: facets over a table beside ``devices``: name → (column, the join condition); a device without a row
#: counts under the value given
JOINED_FACETS: dict[str, tuple[Any, Any, str]] = {
    "compliance_state": (DeviceCompliance.state, DeviceCompliance.device_id == Device.id, ComplianceState.UNKNOWN.value),
}

#: facet name → column (``custom.<name>`` facets are handled separately)
FACETS: dict[str, Any] = {
    "platform": Device.platform,
    "os_version": Device.os_version,
    "model": Device.model,
    "model_name": Device.model_name,
    "product_name": Device.product_name,
    "admission_status": Device.admission_status,
    "supervised": Device.is_supervised,
    "enrolled": Device.enrolled,
    "lost_mode": Device.lost_mode_enabled,
    "office": Device.office,
    "purchase_type": Device.purchase_type,
    "warranty_type": Device.warranty_type,
}
