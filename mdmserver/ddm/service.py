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

import hmac
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, select, true
from sqlalchemy.orm import Session

from mdmserver.commands.service import enqueue_each, validate_command
from mdmserver.db import isoformat, utcnow
from mdmserver.ddm.models import DDMDeclarationStatus, DDMDevice, DDMStatusItem
from mdmserver.errors import Forbidden, NotFound
from mdmserver.pki.secretbox import SecretBox
from mdmserver.profiles.models import Profile
from mdmserver.profiles.service import profile_bytes
from mdmserver.protocol import ddm
from mdmserver.protocol.plist import ProtocolError
from mdmserver.protocol.versions import version_tuple
from mdmserver.records.admission import AdmissionStatus
from mdmserver.records.blueprints import (
    LATEST,
    Blueprint,
    BlueprintOSUpdate,
    BlueprintProfile,
    OSUpdateStatus,
)
from mdmserver.records.commands import Command, CommandStatus
from mdmserver.records.devices import AvailableOSUpdate, Device
from mdmserver.selection.blueprints import (
    declarative_profile_blueprints,
    enforced_condition,
    is_active,
)
from mdmserver.selection.conditions import manageable
from mdmserver.selection.sql import in_values

log = logging.getLogger("mdmserver.ddm")

REQUEST_TYPE = "DeclarativeManagement"
#: a DeclarativeManagement command in these states will still reach the device, which then reads the
#: current token: no second one is queued (``sent`` is not: the device may have synced already)
_NOT_YET_TAKEN = (CommandStatus.QUEUED.value, CommandStatus.NOT_NOW.value)
#: status items one device may have stored (a report that would go past it is refused)
MAX_ITEMS_PER_DEVICE = 1000
DDM_PLATFORMS = tuple(ddm.DDM_MINIMUM)

STATUS_SUBSCRIPTION_ID = "mdmserver.status-subscriptions"
STATUS_ACTIVATION_ID = "mdmserver.activation.status"


def enforcement_id(blueprint_id: int) -> str:
    return f"mdmserver.blueprint.{blueprint_id}.softwareupdate"


def legacy_profile_id(blueprint_id: int, profile_id: int) -> str:
    return f"mdmserver.blueprint.{blueprint_id}.profile.{profile_id}"


def activation_id(blueprint_id: int) -> str:
    return f"mdmserver.blueprint.{blueprint_id}.activation"


@dataclass(frozen=True)
class OSTarget:
    """A blueprint's OS target on one device, as its declaration says it."""

    blueprint_id: int
    version: str
    deadline: str


def _capable(session: Session, condition, *, accepted: bool = True) -> list[Any]:
    """(id, platform, os_version) of the manageable devices meeting ``condition`` that are managed
    declaratively; ``accepted``: admitted ones only (only those have declarations: a pending device is
    served none, it gets them once accepted)."""
    admitted = Device.admission_status == AdmissionStatus.ACCEPTED.value if accepted else true()
    rows = session.execute(
        select(Device.id, Device.platform, Device.os_version)
        .where(condition, manageable(), admitted, Device.platform.in_(DDM_PLATFORMS))
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
               now: datetime, *, accepted: bool = True) -> dict[int, str | None]:
    """The devices (among ``device_ids``) that get this blueprint's OS target declaratively, with the
    version their declaration names (``None``: ``latest`` and no newer version known yet). Empty when
    the target goes by MDM command to everyone. ``accepted=False``: pending devices too (they will get
    it declaratively once accepted: the MDM path must leave them out). Three statements at most, whatever
    the number of devices."""
    if (blueprint.os_update_version is None or blueprint.os_update_deadline is None
            or not is_active(blueprint, now)):
        return {}
    scope = in_values(session, Device.id, device_ids, integer=True) if device_ids is not None else true()
    devices = _capable(session, and_(scope, enforced_condition(session, blueprint, now)), accepted=accepted)
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
    reported = {r.id: version_tuple(r.os_version) for r in devices}
    newest: dict[int, tuple[tuple[int, ...], str]] = {}
    for device_id, version in session.execute(
        select(AvailableOSUpdate.device_id, AvailableOSUpdate.version)
        .where(in_values(session, AvailableOSUpdate.device_id, list(targets), integer=True))
    ):
        offered = version_tuple(version)
        current = reported.get(device_id)
        if offered is None or current is None or offered <= current:
            continue
        if device_id not in newest or offered > newest[device_id][0]:
            newest[device_id] = (offered, version)
    targets.update({d: v for d, (_, v) in newest.items()})
    return {d: v for d, v in targets.items() if (d, v) not in by_command}


@dataclass(frozen=True)
class Links:
    """What building declarations needs besides the session: the public URL (legacy profiles are
    downloaded from it) and the secret box (its keyed digest makes their URLs unguessable)."""

    public_url: str
    box: SecretBox


PROFILE_URL_CONTEXT = b"mdmserver.ddm.legacy-profile-url"
PROFILE_PATH = "/mdm/ddm/profiles/"


def _profile_mac(box: SecretBox, udid: str, profile_id: int, revision: int) -> str:
    return box.digest(f"{udid}\n{profile_id}\n{revision}".encode(), context=PROFILE_URL_CONTEXT)


def profile_url(links: Links, device_id: int, udid: str, profile_id: int, revision: int) -> str:
    """The URL a device downloads one of its legacy profiles from: bound to the device, the profile and
    its revision by a keyed digest (HMAC with the server's key), so it cannot be guessed or moved to
    another device, and changes (with the declaration's server token) when the profile does."""
    mac = _profile_mac(links.box, udid, profile_id, revision)
    return f"{links.public_url}{PROFILE_PATH}{device_id}-{profile_id}-{revision}-{mac}"


@dataclass
class _DeviceSet:
    udid: str
    os: dict[int, OSTarget] = field(default_factory=dict)
    profiles: dict[int, list[int]] = field(default_factory=dict)  # blueprint id → profile ids, in order


def _build(device_id: int, entry: _DeviceSet, order: list[int], revisions: dict[int, int],
           links: Links) -> list[ddm.Declaration]:
    """One device's declarations, blueprint by blueprint in ``order``."""
    result: list[ddm.Declaration] = []
    for blueprint_id in order:
        configs: list[ddm.Declaration] = []
        target = entry.os.get(blueprint_id)
        if target is not None:
            configs.append(ddm.Declaration(
                ddm.Kind.CONFIGURATION, ddm.SOFTWARE_UPDATE_ENFORCEMENT, enforcement_id(blueprint_id),
                {"TargetOSVersion": target.version, "TargetLocalDateTime": target.deadline}))
        for profile_id in entry.profiles.get(blueprint_id, []):
            configs.append(ddm.Declaration(
                ddm.Kind.CONFIGURATION, ddm.LEGACY_PROFILE, legacy_profile_id(blueprint_id, profile_id),
                {"ProfileURL": profile_url(links, device_id, entry.udid, profile_id, revisions[profile_id])}))
        if configs:
            result += configs
            result.append(ddm.Declaration(ddm.Kind.ACTIVATION, ddm.ACTIVATION_SIMPLE, activation_id(blueprint_id),
                                          {"StandardConfigurations": [c.identifier for c in configs]}))
    if result:
        result += _STATUS_DECLARATIONS
    return result


_STATUS_DECLARATIONS = [
    ddm.Declaration(ddm.Kind.CONFIGURATION, ddm.STATUS_SUBSCRIPTIONS, STATUS_SUBSCRIPTION_ID,
                    {"StatusItems": [{"Name": name} for name in ddm.SUBSCRIBED_ITEMS]}),
    ddm.Declaration(ddm.Kind.ACTIVATION, ddm.ACTIVATION_SIMPLE, STATUS_ACTIVATION_ID,
                    {"StandardConfigurations": [STATUS_SUBSCRIPTION_ID]}),
]


def declaration_sets(session: Session, device_ids: Sequence[int] | None, links: Links,
                     now: datetime | None = None) -> dict[int, list[ddm.Declaration]]:
    """Each device's declaration set (devices with none are left out). A few statements per blueprint
    that has an OS target or declarative profiles, whatever the number of devices."""
    now = now or utcnow()
    scope = in_values(session, Device.id, device_ids, integer=True) if device_ids is not None else true()
    per_device: dict[int, _DeviceSet] = {}
    order: dict[int, tuple[int, int]] = {}
    for blueprint in declarative_os_blueprints(session, now):
        for device_id, version in os_targets(session, blueprint, device_ids, now).items():
            if version is not None:
                per_device.setdefault(device_id, _DeviceSet("")).os[blueprint.id] = OSTarget(
                    blueprint.id, version, blueprint.os_update_deadline)
                order[blueprint.id] = (blueprint.apply_order, blueprint.id)
    profile_blueprints = declarative_profile_blueprints(session, now)
    if profile_blueprints:
        held: dict[int, list[int]] = {}
        for blueprint_id, profile_id in session.execute(
            select(BlueprintProfile.blueprint_id, BlueprintProfile.profile_id)
            .where(BlueprintProfile.blueprint_id.in_([b.id for b in profile_blueprints]))
            .order_by(BlueprintProfile.blueprint_id, BlueprintProfile.position)
        ):
            held.setdefault(blueprint_id, []).append(profile_id)
        for blueprint in profile_blueprints:
            for row in _capable(session, and_(scope, enforced_condition(session, blueprint, now))):
                per_device.setdefault(row.id, _DeviceSet("")).profiles[blueprint.id] = held.get(blueprint.id, [])
                order[blueprint.id] = (blueprint.apply_order, blueprint.id)
    if not per_device:
        return {}
    ids = list(per_device)
    for device_id, udid in session.execute(select(Device.id, Device.udid)
                                           .where(in_values(session, Device.id, ids, integer=True))):
        per_device[device_id].udid = udid
    profile_ids = {p for entry in per_device.values() for ps in entry.profiles.values() for p in ps}
    revisions = dict(session.execute(select(Profile.id, Profile.revision).where(Profile.id.in_(profile_ids)))
                     .all()) if profile_ids else {}
    ordered = sorted(order, key=order.__getitem__)
    return {device_id: _build(device_id, entry, ordered, revisions, links)
            for device_id, entry in per_device.items()}


def device_declarations(session: Session, device_id: int, links: Links) -> list[ddm.Declaration]:
    return declaration_sets(session, [device_id], links).get(device_id, [])


# --- telling the devices ----------------------------------------------------------------------------


def sync(session: Session, device_ids: Sequence[int] | None, *, actor: str | None, links: Links) -> int:
    """Queue ``DeclarativeManagement`` (``Data``: the new ``SyncTokens``) for every device (among
    ``device_ids``, else all) whose declaration set changed since it was last told, once: not for a
    device that still has one queued (it reads the current token when it syncs). Returns how many were
    queued. A constant number of statements whatever the number of devices (``commands.service.enqueue_each``:
    each device's own token, one INSERT)."""
    now = utcnow()
    sets = declaration_sets(session, device_ids, links, now)
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
                                        Command.status.in_(_NOT_YET_TAKEN),
                                        in_values(session, Command.device_id, list(changed), integer=True))))
    stamp = isoformat(now)
    bodies: dict[str, dict[str, Any]] = {}  # one validated body per distinct token
    for token in set(changed.values()):
        bodies[token] = validate_command(REQUEST_TYPE, {"Data": ddm.sync_tokens_data(token, stamp)})
    queued = enqueue_each(session, and_(manageable(), Device.admission_status == AdmissionStatus.ACCEPTED.value),
                          REQUEST_TYPE, {d: bodies[t] for d, t in changed.items() if d not in pending},
                          actor=actor, now=now, box=links.box)
    count = len(queued)
    if count:
        log.info("declaration sets changed on %d devices: DeclarativeManagement queued for %d", len(changed), count)
    return count


def forget_enrollments(session: Session, device_ids: Sequence[int]) -> None:
    """The devices enrolled again: their declarations went with the previous enrollment, so the token
    they were told of is forgotten (the next sync tells them of their set anew)."""
    if device_ids:
        session.execute(delete(DDMDevice).where(in_values(session, DDMDevice.device_id, list(device_ids),
                                                          integer=True)))


# --- the check-in endpoints -------------------------------------------------------------------------


def _token_timestamp(session: Session, device_id: int, token: str) -> str:
    row = session.get(DDMDevice, device_id)
    if row is not None and row.declarations_token == token:
        return isoformat(row.token_changed_at)
    if row is None and token == ddm.EMPTY_TOKEN:
        return "1970-01-01T00:00:00Z"
    return isoformat(utcnow())


def _tokens(session: Session, device: Device, request: ddm.Request, data: bytes | None,
            links: Links) -> dict[str, Any]:
    token = ddm.declarations_token(device_declarations(session, device.id, links))
    return ddm.tokens_body(token, _token_timestamp(session, device.id, token))


def _items(session: Session, device: Device, request: ddm.Request, data: bytes | None,
           links: Links) -> dict[str, Any]:
    declarations = device_declarations(session, device.id, links)
    return ddm.items_body(declarations, ddm.declarations_token(declarations))


def _declaration(session: Session, device: Device, request: ddm.Request, data: bytes | None,
                 links: Links) -> dict[str, Any]:
    for declaration in device_declarations(session, device.id, links):
        if declaration.kind is request.kind and declaration.identifier == request.identifier:
            return declaration.document()
    log.warning("device %s asked for %s declaration %r, which is not in its set", device.udid, request.kind,
                request.identifier)
    raise NotFound(f"no {request.kind} declaration {request.identifier!r} for this device")


def _status(session: Session, device: Device, request: ddm.Request, data: bytes | None, links: Links) -> None:
    report = ddm.parse_status_report(data)
    store_status(session, device.id, report,
                 whole=ddm.declaration_arrays_whole(report, device.platform, device.os_version))
    return None


#: endpoint → its answer (``None``: an empty 200)
_ENDPOINTS = {
    ddm.Endpoint.TOKENS: _tokens,
    ddm.Endpoint.DECLARATION_ITEMS: _items,
    ddm.Endpoint.DECLARATION: _declaration,
    ddm.Endpoint.STATUS: _status,
}


def answer(session: Session, device: Device, endpoint: str | None, data: bytes | None,
           links: Links) -> dict[str, Any] | None:
    """The answer to a ``DeclarativeManagement`` check-in (a JSON document, or ``None`` for an empty 200)."""
    request = ddm.parse_endpoint(endpoint)
    return _ENDPOINTS[request.endpoint](session, device, request, data, links)


# --- legacy profiles --------------------------------------------------------------------------------

_PROFILE_TOKEN = re.compile(r"^(\d{1,12})-(\d{1,12})-(\d{1,9})-([0-9a-f]{64})$")


def legacy_profile(session: Session, token: str, links: Links) -> bytes:
    """The signed profile a legacy-profile declaration's ``ProfileURL`` names (the same bytes
    InstallProfile would carry), for the device the URL was made for, while the declaration is in its
    set. A URL whose digest does not match (guessed, or moved to another device or profile) is refused
    403; a stale one (the profile changed, or left the device's set) 404."""
    match = _PROFILE_TOKEN.match(token)
    device = session.get(Device, int(match.group(1))) if match else None
    if match is None or device is None:
        log.warning("legacy profile URL refused: malformed or unknown device")
        raise Forbidden("forbidden")
    profile_id, revision = int(match.group(2)), int(match.group(3))
    expected = _profile_mac(links.box, device.udid, profile_id, revision)
    if not hmac.compare_digest(expected, match.group(4)):
        log.warning("legacy profile URL refused: digest does not match device %s, profile %s", device.udid,
                    profile_id)
        raise Forbidden("forbidden")
    url = profile_url(links, device.id, device.udid, profile_id, revision)
    wanted = any(d.type == ddm.LEGACY_PROFILE and d.payload.get("ProfileURL") == url
                 for d in device_declarations(session, device.id, links))
    profile = session.get(Profile, profile_id)
    if not wanted or profile is None:
        raise NotFound("this profile is not (or no longer) in the device's declarations")
    log.info("device %s downloads legacy profile %s (revision %s)", device.udid, profile_id, revision)
    return profile_bytes(session, profile, links.box, signed=True)


# --- status reports ---------------------------------------------------------------------------------


def store_status(session: Session, device_id: int, report: ddm.StatusReport, *, whole: bool) -> None:
    """Merge a status report: its items replace the stored ones of the same path (others stay: Apple
    sends only what changed); its declaration statuses replace the stored ones of the same identifiers
    (an incremental report lists only the declarations whose status changed), and a report whose arrays
    are ``whole`` (``protocol.ddm.declaration_arrays_whole``) replaces each kind it lists; its ``Errors``
    replace the last report's. A report that would take the device past ``MAX_ITEMS_PER_DEVICE`` items
    or declaration statuses is refused before anything is written."""
    now = utcnow()
    identifiers = [d.identifier for d in report.declarations]
    if identifiers and not whole:
        kept = session.scalar(select(func.count()).select_from(DDMDeclarationStatus).where(
            DDMDeclarationStatus.device_id == device_id,
            DDMDeclarationStatus.identifier.not_in(identifiers))) or 0
        if kept + len(identifiers) > MAX_ITEMS_PER_DEVICE:
            raise ProtocolError(f"the device would hold more than {MAX_ITEMS_PER_DEVICE} declaration statuses")
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
        if whole:
            session.execute(delete(DDMDeclarationStatus).where(
                DDMDeclarationStatus.device_id == device_id,
                DDMDeclarationStatus.kind.in_([k.value for k in report.declaration_kinds])))
        if identifiers:
            # an identifier listed under another kind before is replaced too (the key is the identifier)
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


def device_status(session: Session, device_id: int, links: Links) -> DeviceStatus:
    rows = session.execute(select(DDMStatusItem.key_path, DDMStatusItem.value, DDMStatusItem.updated_at)
                           .where(DDMStatusItem.device_id == device_id).order_by(DDMStatusItem.key_path)).all()
    row = session.get(DDMDevice, device_id)
    return DeviceStatus(device_id, {r.key_path: r.value for r in rows}, {r.key_path: r.updated_at for r in rows},
                        list(row.errors or []) if row is not None else [],
                        row.reported_at if row is not None else None,
                        ddm.declarations_token(device_declarations(session, device_id, links)))


def device_declaration_view(session: Session, device_id: int, links: Links) -> list[dict[str, Any]]:
    """The device's current declarations (no payloads), each with the status it last reported for it
    (``reported`` null when it reported none; ``current`` false when the reported server token is not
    the current one)."""
    statuses = {s.identifier: s for s in session.scalars(
        select(DDMDeclarationStatus).where(DDMDeclarationStatus.device_id == device_id))}
    result = []
    for d in sorted(device_declarations(session, device_id, links), key=lambda d: (d.kind.value, d.identifier)):
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

