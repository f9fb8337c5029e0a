"""Declarative device management, server side: each device's declaration set (computed from the
blueprints, never stored), the check-in endpoints, telling devices that their set changed (the
``DeclarativeManagement`` command, through the queue), and the status reports they send.

The set of a device, for every active blueprint that enforces an OS target with a deadline on it
(docs/ddm.md):

- ``mdmserver.blueprint.<id>.softwareupdate``: ``com.apple.configuration.softwareupdate.enforcement.specific``
  (``TargetOSVersion`` the blueprint's version, or for ``latest`` the newest the device is offered in
  ``AvailableOSUpdates``: omitted until one is known; ``TargetLocalDateTime`` the deadline);
- ``mdmserver.blueprint.<id>.activation``: ``com.apple.activation.simple`` naming it;
- once per device with any of those: ``mdmserver.status-subscriptions`` (the items this server reads)
  and its activation ``mdmserver.activation.status``.

Only devices that :func:`protocol.ddm.supports_ddm` (by their inventory) get a set; the others get the
same blueprint through MDM commands (``blueprints.service``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, select, true
from sqlalchemy.orm import Session

from mdmserver.commands.service import QueuePlan, enqueue_where, validate_command
from mdmserver.db import isoformat, utcnow
from mdmserver.ddm.models import DDMDeclarationStatus, DDMDevice, DDMStatusItem
from mdmserver.errors import NotFound
from mdmserver.pki.secretbox import SecretBox
from mdmserver.protocol import ddm
from mdmserver.protocol.plist import ProtocolError
from mdmserver.records.admission import AdmissionStatus
from mdmserver.records.blueprints import LATEST, Blueprint, BlueprintOSUpdate, OSUpdateStatus
from mdmserver.records.commands import Command, CommandStatus
from mdmserver.records.devices import AvailableOSUpdate, Device
from mdmserver.selection.blueprints import enforced_condition, is_active
from mdmserver.selection.conditions import manageable
from mdmserver.selection.sql import in_values

log = logging.getLogger("mdmserver.ddm")

REQUEST_TYPE = "DeclarativeManagement"
#: status items one device may have stored (a report that would go past it is refused)
MAX_ITEMS_PER_DEVICE = 1000
DDM_PLATFORMS = tuple(ddm.DDM_MINIMUM)

STATUS_SUBSCRIPTION_ID = "mdmserver.status-subscriptions"
STATUS_ACTIVATION_ID = "mdmserver.activation.status"


def enforcement_id(blueprint_id: int) -> str:
    return f"mdmserver.blueprint.{blueprint_id}.softwareupdate"


def activation_id(blueprint_id: int) -> str:
    return f"mdmserver.blueprint.{blueprint_id}.activation"


@dataclass(frozen=True)
class OSTarget:
    """A blueprint's OS target on one device, as its declaration says it."""

    blueprint_id: int
    version: str
    deadline: str


def _capable(session: Session, condition) -> list[Any]:
    """(id, platform, os_version) of the accepted, manageable devices meeting ``condition`` that are
    managed declaratively."""
    rows = session.execute(
        select(Device.id, Device.platform, Device.os_version)
        .where(condition, manageable(), Device.admission_status == AdmissionStatus.ACCEPTED.value,
               Device.platform.in_(DDM_PLATFORMS))
    ).all()
    return [r for r in rows if ddm.supports_ddm(r.platform, r.os_version)]


def declarative_os_blueprints(session: Session, now: datetime) -> list[Blueprint]:
    """The active blueprints whose OS target goes declaratively where it can: a version and a deadline
    (``TargetLocalDateTime`` is required by Apple; without a deadline every device gets ScheduleOSUpdate)."""
    rows = session.scalars(
        select(Blueprint).where(Blueprint.enabled.is_(True), Blueprint.os_update_version.is_not(None),
                                Blueprint.os_update_deadline.is_not(None))
        .order_by(Blueprint.apply_order, Blueprint.id)
    ).all()
    return [b for b in rows if is_active(b, now)]


def os_targets(session: Session, blueprint: Blueprint, device_ids: Sequence[int] | None,
               now: datetime) -> dict[int, str | None]:
    """The devices (among ``device_ids``) that get this blueprint's OS target declaratively, with the
    version their declaration names (``None``: ``latest`` and no newer version known yet). Empty when
    the target goes by MDM command to everyone. Three statements at most, whatever the number of devices."""
    if (blueprint.os_update_version is None or blueprint.os_update_deadline is None
            or not is_active(blueprint, now)):
        return {}
    scope = in_values(session, Device.id, device_ids, integer=True) if device_ids is not None else true()
    devices = _capable(session, and_(scope, enforced_condition(session, blueprint, now)))
    if not devices:
        return {}
    # a target already sent by ScheduleOSUpdate (before the device could take declarations) stays on
    # that path: never both ways to one device
    by_command = set(session.execute(
        select(BlueprintOSUpdate.device_id, BlueprintOSUpdate.target_version)
        .where(BlueprintOSUpdate.blueprint_id == blueprint.id, BlueprintOSUpdate.command_uuid.is_not(None),
               in_values(session, BlueprintOSUpdate.device_id, [r.id for r in devices], integer=True))).all())
    if blueprint.os_update_version != LATEST:
        return {r.id: blueprint.os_update_version for r in devices
                if (r.id, blueprint.os_update_version) not in by_command}
    targets: dict[int, str | None] = {r.id: None for r in devices}
    reported = {r.id: ddm.version_tuple(r.os_version) for r in devices}
    newest: dict[int, tuple[tuple[int, ...], str]] = {}
    for device_id, version in session.execute(
        select(AvailableOSUpdate.device_id, AvailableOSUpdate.version)
        .where(in_values(session, AvailableOSUpdate.device_id, list(targets), integer=True))
    ):
        offered = ddm.version_tuple(version)
        current = reported.get(device_id)
        if offered is None or current is None or offered <= current:
            continue
        if device_id not in newest or offered > newest[device_id][0]:
            newest[device_id] = (offered, version)
    targets.update({d: v for d, (_, v) in newest.items()})
    return {d: v for d, v in targets.items() if (d, v) not in by_command}


def _build(targets: tuple[OSTarget, ...]) -> list[ddm.Declaration]:
    """The declarations for one combination of OS targets."""
    if not targets:
        return []
    result: list[ddm.Declaration] = []
    for target in targets:
        config = ddm.Declaration(ddm.Kind.CONFIGURATION, ddm.SOFTWARE_UPDATE_ENFORCEMENT,
                                 enforcement_id(target.blueprint_id),
                                 {"TargetOSVersion": target.version, "TargetLocalDateTime": target.deadline})
        result.append(config)
        result.append(ddm.Declaration(ddm.Kind.ACTIVATION, ddm.ACTIVATION_SIMPLE, activation_id(target.blueprint_id),
                                      {"StandardConfigurations": [config.identifier]}))
    result.append(ddm.Declaration(ddm.Kind.CONFIGURATION, ddm.STATUS_SUBSCRIPTIONS, STATUS_SUBSCRIPTION_ID,
                                  {"StatusItems": [{"Name": name} for name in ddm.SUBSCRIBED_ITEMS]}))
    result.append(ddm.Declaration(ddm.Kind.ACTIVATION, ddm.ACTIVATION_SIMPLE, STATUS_ACTIVATION_ID,
                                  {"StandardConfigurations": [STATUS_SUBSCRIPTION_ID]}))
    return result


def declaration_sets(session: Session, device_ids: Sequence[int] | None,
                     now: datetime | None = None) -> dict[int, list[ddm.Declaration]]:
    """Each device's declaration set (devices with none are left out). One or two statements per
    blueprint with an OS target, whatever the number of devices; the declarations are built once per
    distinct combination of targets."""
    now = now or utcnow()
    per_device: dict[int, list[OSTarget]] = {}
    for blueprint in declarative_os_blueprints(session, now):
        for device_id, version in os_targets(session, blueprint, device_ids, now).items():
            if version is not None:
                per_device.setdefault(device_id, []).append(
                    OSTarget(blueprint.id, version, blueprint.os_update_deadline))
    built: dict[tuple[OSTarget, ...], list[ddm.Declaration]] = {}
    result = {}
    for device_id, targets in per_device.items():
        key = tuple(targets)
        if key not in built:
            built[key] = _build(key)
        result[device_id] = built[key]
    return result


def device_declarations(session: Session, device_id: int) -> list[ddm.Declaration]:
    return declaration_sets(session, [device_id]).get(device_id, [])


# --- telling the devices ----------------------------------------------------------------------------


def sync(session: Session, device_ids: Sequence[int] | None, *, actor: str | None, box: SecretBox) -> int:
    """Queue ``DeclarativeManagement`` (``Data``: the new ``SyncTokens``) for every device (among
    ``device_ids``, else all) whose declaration set changed since it was last told, once: not for a
    device that still has one queued (it reads the current token when it syncs). Returns how many were
    queued. A constant number of statements whatever the number of devices (one plan per distinct token)."""
    now = utcnow()
    sets = declaration_sets(session, device_ids, now)
    scope = (in_values(session, DDMDevice.device_id, device_ids, integer=True) if device_ids is not None
             else true())
    known = dict(session.execute(select(DDMDevice.device_id, DDMDevice.declarations_token).where(scope)).all())
    tokens = {d: ddm.declarations_token(s) for d, s in sets.items()}
    changed = {d: tokens.get(d, ddm.EMPTY_TOKEN) for d in set(known) | set(tokens)}
    changed = {d: t for d, t in changed.items() if t != known.get(d, ddm.EMPTY_TOKEN)}
    if not changed:
        return 0
    table = DDMDevice.__table__
    new = [{"device_id": d, "declarations_token": t, "token_changed_at": now} for d, t in changed.items()
           if d not in known]
    if new:
        session.execute(insert(DDMDevice), new)
    old = [{"d": d, "t": t, "at": now} for d, t in changed.items() if d in known]
    if old:
        session.connection().execute(
            table.update().where(table.c.device_id == bindparam("d"))
            .values(declarations_token=bindparam("t"), token_changed_at=bindparam("at")), old)
    pending = set(session.scalars(
        select(Command.device_id).where(Command.request_type == REQUEST_TYPE,
                                        Command.status == CommandStatus.QUEUED.value,
                                        in_values(session, Command.device_id, list(changed), integer=True))))
    by_token: dict[str, list[int]] = {}
    for device_id, token in changed.items():
        if device_id not in pending:
            by_token.setdefault(token, []).append(device_id)
    stamp = isoformat(now)
    plans = [QueuePlan(REQUEST_TYPE, validate_command(REQUEST_TYPE, {"Data": ddm.sync_tokens_data(token, stamp)}),
                       condition=in_values(session, Device.id, ids, integer=True))
             for token, ids in by_token.items()]
    queued = enqueue_where(session, and_(manageable(), Device.admission_status == AdmissionStatus.ACCEPTED.value),
                           plans, actor=actor, now=now, box=box)
    count = sum(len(rows) for rows in queued)
    if count:
        log.info("declaration sets changed on %d devices: DeclarativeManagement queued for %d", len(changed), count)
    return count


# --- the check-in endpoints -------------------------------------------------------------------------


def _token_timestamp(session: Session, device_id: int, token: str) -> str:
    row = session.get(DDMDevice, device_id)
    if row is not None and row.declarations_token == token:
        return isoformat(row.token_changed_at)
    if row is None and token == ddm.EMPTY_TOKEN:
        return "1970-01-01T00:00:00Z"
    return isoformat(utcnow())


def _tokens(session: Session, device: Device, request: ddm.Request, data: bytes | None) -> dict[str, Any]:
    token = ddm.declarations_token(device_declarations(session, device.id))
    return ddm.tokens_body(token, _token_timestamp(session, device.id, token))


def _items(session: Session, device: Device, request: ddm.Request, data: bytes | None) -> dict[str, Any]:
    declarations = device_declarations(session, device.id)
    return ddm.items_body(declarations, ddm.declarations_token(declarations))


def _declaration(session: Session, device: Device, request: ddm.Request, data: bytes | None) -> dict[str, Any]:
    for declaration in device_declarations(session, device.id):
        if declaration.kind is request.kind and declaration.identifier == request.identifier:
            return declaration.document()
    log.warning("device %s asked for %s declaration %r, which is not in its set", device.udid, request.kind,
                request.identifier)
    raise NotFound(f"no {request.kind} declaration {request.identifier!r} for this device")


def _status(session: Session, device: Device, request: ddm.Request, data: bytes | None) -> None:
    store_status(session, device.id, ddm.parse_status_report(data))
    return None


#: endpoint → its answer (``None``: an empty 200)
_ENDPOINTS = {
    ddm.Endpoint.TOKENS: _tokens,
    ddm.Endpoint.DECLARATION_ITEMS: _items,
    ddm.Endpoint.DECLARATION: _declaration,
    ddm.Endpoint.STATUS: _status,
}


def answer(session: Session, device: Device, endpoint: str | None, data: bytes | None) -> dict[str, Any] | None:
    """The answer to a ``DeclarativeManagement`` check-in (a JSON document, or ``None`` for an empty 200)."""
    request = ddm.parse_endpoint(endpoint)
    return _ENDPOINTS[request.endpoint](session, device, request, data)


# --- status reports ---------------------------------------------------------------------------------


def store_status(session: Session, device_id: int, report: ddm.StatusReport) -> None:
    """Merge a status report: its items replace the stored ones of the same path (others stay: Apple
    sends only what changed), each declaration kind it lists replaces that kind's statuses, and its
    ``Errors`` replace the last report's. A report that would take the device past
    ``MAX_ITEMS_PER_DEVICE`` items is refused before anything is written."""
    now = utcnow()
    paths = list(report.items)
    if paths:
        kept = session.scalar(select(func.count()).select_from(DDMStatusItem).where(
            DDMStatusItem.device_id == device_id, DDMStatusItem.key_path.not_in(paths))) or 0
        if kept + len(paths) > MAX_ITEMS_PER_DEVICE:
            raise ProtocolError(f"the device would hold more than {MAX_ITEMS_PER_DEVICE} status items")
        session.execute(delete(DDMStatusItem).where(DDMStatusItem.device_id == device_id,
                                                    DDMStatusItem.key_path.in_(paths)))
        session.execute(insert(DDMStatusItem), [
            {"device_id": device_id, "key_path": p, "value": v, "updated_at": now} for p, v in report.items.items()])
    if report.declaration_kinds:
        session.execute(delete(DDMDeclarationStatus).where(
            DDMDeclarationStatus.device_id == device_id,
            DDMDeclarationStatus.kind.in_([k.value for k in report.declaration_kinds])))
        # an identifier listed under another kind before is replaced too (the key is the identifier)
        identifiers = [d.identifier for d in report.declarations]
        if identifiers:
            session.execute(delete(DDMDeclarationStatus).where(DDMDeclarationStatus.device_id == device_id,
                                                               DDMDeclarationStatus.identifier.in_(identifiers)))
            session.execute(insert(DDMDeclarationStatus), [
                {"device_id": device_id, "identifier": d.identifier, "kind": d.kind.value,
                 "server_token": d.server_token, "active": d.active, "valid": d.valid, "reasons": d.reasons,
                 "updated_at": now} for d in report.declarations])
    row = session.get(DDMDevice, device_id)
    if row is None:
        session.add(DDMDevice(device_id=device_id, declarations_token=ddm.EMPTY_TOKEN, token_changed_at=now,
                              errors=report.errors, reported_at=now))
    else:
        row.errors, row.reported_at = report.errors, now
    session.flush()


# --- OS-update progress ------------------------------------------------------------------------------

#: ``softwareupdate.install-state`` values that say the update is under way
_UNDER_WAY = frozenset({"downloading", "downloaded", "installing", "installed"})


@dataclass(frozen=True)
class OSUpdateReport:
    """What a device's status items say about its OS update: the version it runs, and the blueprint
    OS-item state (``(OSUpdateStatus value, detail)``) they imply, if any."""

    os_version: str | None
    state: tuple[str, str] | None


def _failure_reason(value: Any) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("reason"), str) and value["reason"]:
        return value["reason"]
    return None


def os_update_reports(session: Session, device_ids: Sequence[int]) -> dict[int, OSUpdateReport]:
    """The OS-update progress the devices reported in DDM status (one statement): an install state
    under way → scheduled; ``failed``, or a failure reason → failed with it."""
    keys = ("device.operating-system.version", "softwareupdate.install-state", "softwareupdate.failure-reason")
    items: dict[int, dict[str, Any]] = {}
    for device_id, key, value in session.execute(
        select(DDMStatusItem.device_id, DDMStatusItem.key_path, DDMStatusItem.value)
        .where(in_values(session, DDMStatusItem.device_id, list(device_ids), integer=True),
               DDMStatusItem.key_path.in_(keys))
    ):
        items.setdefault(device_id, {})[key] = value
    result = {}
    for device_id, found in items.items():
        version = found.get(keys[0]) if isinstance(found.get(keys[0]), str) else None
        install_state, reason = found.get(keys[1]), _failure_reason(found.get(keys[2]))
        state = None
        if install_state == "failed" or (reason is not None and install_state not in _UNDER_WAY):
            state = (OSUpdateStatus.FAILED.value, f"softwareupdate.failure-reason: {reason or 'unknown'}")
        elif install_state in _UNDER_WAY:
            state = (OSUpdateStatus.SCHEDULED.value, f"softwareupdate.install-state: {install_state}")
        result[device_id] = OSUpdateReport(version, state)
    return result


# --- reading (the admin API) ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceStatus:
    device_id: int
    items: dict[str, Any]
    updated_at: dict[str, datetime]
    errors: list[Any]
    reported_at: datetime | None
    declarations_token: str


def device_status(session: Session, device_id: int) -> DeviceStatus:
    rows = session.execute(select(DDMStatusItem.key_path, DDMStatusItem.value, DDMStatusItem.updated_at)
                           .where(DDMStatusItem.device_id == device_id).order_by(DDMStatusItem.key_path)).all()
    row = session.get(DDMDevice, device_id)
    return DeviceStatus(device_id, {r.key_path: r.value for r in rows}, {r.key_path: r.updated_at for r in rows},
                        list(row.errors or []) if row is not None else [],
                        row.reported_at if row is not None else None,
                        ddm.declarations_token(device_declarations(session, device_id)))


def device_declaration_view(session: Session, device_id: int) -> list[dict[str, Any]]:
    """The device's current declarations (no payloads), each with the status it last reported for it
    (``reported`` null when it reported none; ``current`` false when the reported server token is not
    the current one)."""
    statuses = {s.identifier: s for s in session.scalars(
        select(DDMDeclarationStatus).where(DDMDeclarationStatus.device_id == device_id))}
    result = []
    for d in sorted(device_declarations(session, device_id), key=lambda d: (d.kind.value, d.identifier)):
        status = statuses.get(d.identifier)
        result.append({
            "identifier": d.identifier, "kind": d.kind.value, "type": d.type, "server_token": d.server_token,
            "reported": None if status is None else {
                "server_token": status.server_token, "current": status.server_token == d.server_token,
                "active": status.active, "valid": status.valid, "reasons": status.reasons,
                "updated_at": status.updated_at,
            },
        })
    return result

