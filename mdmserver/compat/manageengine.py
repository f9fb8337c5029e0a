"""ManageEngine MDM's Devices API (``/api/v1/mdm/devices…``, ``/api/v1/mdm/actions/…``) as thin adapters.

Every route reads or changes through the same services as the native routes (devices, selection,
actions, commands, assignments) and answers in ManageEngine's shapes: plain JSON, ids as numbers,
times as epoch milliseconds (``-1`` when unknown, as ManageEngine does). Errors stay the server's one
error shape (JSON:API errors with ``meta.request_id``). docs/api-mapping.md lists every documented
operation and how it is served.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, request
from marshmallow import RAISE, Schema, ValidationError, fields, pre_load, validate
from sqlalchemy import and_, func, select

from mdmserver import workflows
from mdmserver.actions import service as actions
from mdmserver.actions.schemas import BulkActionSchema, PerformSchema
from mdmserver.api.apidoc import ApiDoc, Body, IdField, Reply
from mdmserver.api.auth import current_actor, requires_scope
from mdmserver.api.jsonapi import load_body, load_query, marshmallow_errors, plain_response
from mdmserver.app_assignments import service as app_assignments
from mdmserver.app_assignments.models import AppAssignment, DeviceAppState
from mdmserver.apps import service as apps
from mdmserver.apps.models import App
from mdmserver.assignments import service as assignments
from mdmserver.assignments.models import DeviceProfileState
from mdmserver.assignments.schemas import ProfileIdsSchema
from mdmserver.audit.service import record_event
from mdmserver.collaborators import public_url, secret_box
from mdmserver.commands import queries as command_queries
from mdmserver.commands import service as commands
from mdmserver.db import db
from mdmserver.devices import schemas as device_schemas
from mdmserver.errors import BadRequest, NotFound, UnprocessableEntity
from mdmserver.groups import service as groups
from mdmserver.profiles.models import Profile
from mdmserver.records.commands import Command, CommandStatus
from mdmserver.records.devices import (
    Device,
    DeviceCertificate,
    DeviceLocation,
    DeviceSecurityInfo,
    InstalledApplication,
)
from mdmserver.selection.filters import device_filters
from mdmserver.selection.resolve import get_device
from mdmserver.users import service as users

bp = Blueprint("compat_manageengine", __name__, url_prefix="/api/v1/mdm")

#: ManageEngine's platform_type_id: 1 is Apple (iOS, iPadOS, macOS, tvOS)
APPLE = 1
MAX_LIMIT = 500



def _ms(value: datetime | date | None) -> int:
    """Epoch milliseconds, ManageEngine's time format; -1 when unknown."""
    if value is None:
        return -1
    if not isinstance(value, datetime):
        value = datetime.combine(value, time.min, tzinfo=UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def _number(value: Decimal | float | None) -> float | None:
    return float(value) if value is not None else None


# --- devices ----------------------------------------------------------------------------------------


def _counts(session, ids: list[int], model, column) -> dict[int, int]:
    if not ids:
        return {}
    return dict(session.execute(select(column, func.count()).where(column.in_(ids)).group_by(column)).all())


def _summaries(devices: list[Device]) -> dict[int, dict[str, Any]]:
    """ManageEngine's ``summary`` per device: profiles (assigned), apps (installed), groups, docs (none)."""
    ids = [d.id for d in devices]
    profiles = _counts(db.session, ids, DeviceProfileState, DeviceProfileState.device_id)
    installed = _counts(db.session, ids, InstalledApplication, InstalledApplication.device_id)
    return {d.id: {"profile_count": profiles.get(d.id, 0), "app_count": installed.get(d.id, 0), "doc_count": 0,
                   "group_count": len(groups.groups_of_device(db.session, d))} for d in devices}


def _user(device: Device) -> dict[str, Any] | None:
    owner = users.owner_of(db.session, device)
    if owner is None:
        return None
    return {"user_name": owner.name, "user_id": owner.id, "user_email": owner.email}


def _device_row(device: Device, summary: dict[str, Any]) -> dict[str, Any]:
    """One device of ``GET /api/v1/mdm/devices`` (ManageEngine's "Devices Meta information")."""
    return {
        "device_id": device.id,
        "os_version": device.os_version,
        "is_lost_mode_enabled": bool(device.lost_mode_enabled),
        "is_removed": not device.enrolled,
        "product_name": device.product_name,
        "device_name": device.device_name,
        "platform_type": device.platform,
        "platform_type_id": APPLE,
        "udid": device.udid,
        "serial_number": device.serial_number,
        "model": device.model,
        "user": _user(device),
        "imei": device.imei,
        "summary": summary,
    }


def _battery(level: float | None) -> int | None:
    """Apple reports 0.0–1.0, ManageEngine a percentage."""
    if level is None:
        return None
    return round(level * 100) if level <= 1 else round(level)


def _device_details(device: Device) -> dict[str, Any]:
    """``GET /api/v1/mdm/devices/{device_id}``: the fields Apple devices report or the admin sets."""
    summary = _summaries([device])[device.id]
    security = db.session.get(DeviceSecurityInfo, device.id)
    used = (device.capacity_gb - device.available_capacity_gb
            if device.capacity_gb is not None and device.available_capacity_gb is not None else None)
    return {
        **_device_row(device, summary),
        "model_name": device.model_name,
        "meid": device.meid,
        "is_supervised": bool(device.is_supervised),
        "is_activation_lock_enabled": bool(device.activation_lock_enabled),
        "is_device_locator_enabled": bool(device.find_my_enabled),
        "battery_level": _battery(device.battery_level),
        "device_capacity": device.capacity_gb,
        "available_device_capacity": device.available_capacity_gb,
        "used_device_space": used,
        "managed_status": 2 if device.enrolled else 4,
        "registered_time": _ms(device.enrolled_at),
        "added_time": _ms(device.created_at),
        "unregistered_time": _ms(device.unenrolled_at) if not device.enrolled else -1,
        "last_contact_time": _ms(device.last_seen_at),
        "asset_tag": device.asset_tag,
        "asset_owner": device.asset_owner,
        "description": device.description,
        "office": device.office,
        "purchase_type": device.purchase_type,
        "purchase_order_number": device.purchase_order_number,
        "purchase_price": _number(device.purchase_price),
        "purchase_date": _ms(device.purchase_date),
        "warranty_number": device.warranty_number,
        "warranty_type": device.warranty_type,
        "warranty_expiration_date": _ms(device.warranty_expiration),
        "sims": [{"iccid": device.iccid, "imei": device.imei}] if device.iccid else [],
        "os": {"platform_type": device.platform, "build_version": device.build_version,
               "os_version": device.os_version, "serial_number": device.serial_number},
        "security": None if security is None else {
            "passcode_present": security.passcode_present,
            "passcode_complaint": security.passcode_compliant,
            "passcode_complaint_profiles": security.passcode_compliant_with_profiles,
            "hardware_encryption_caps": security.hardware_encryption_caps,
            "storage_encryption": security.fde_enabled,
            "device_rooted": False,
        },
    }


#: ManageEngine's device-list query parameters' values → our platforms
_PLATFORMS = {"ios": ("ios", "ipados"), "ipados": ("ipados",), "macos": ("macos",), "tvos": ("tvos",),
              "watchos": ("watchos",), "visionos": ("visionos",), "android": (), "windows": (), "chrome": ()}
_DEVICE_TYPES = {"smartphone": ("ios",), "tablet": ("ipados",), "laptop": ("macos",), "desktop": ("macos",),
                 "tv": ("tvos",), "watch": ("watchos",)}


class DeviceListQuery(Schema):
    """``GET /api/v1/mdm/devices``: ManageEngine's search and paging parameters."""

    class Meta:
        unknown = RAISE

    search = fields.String(validate=validate.Length(min=1))
    platform = fields.String(validate=validate.OneOf(_PLATFORMS, error="platform is one of iOS, iPadOS, macOS, "
                                                                       "tvOS, watchOS, visionOS, Android, Windows"))
    device_type = fields.String(validate=validate.OneOf(_DEVICE_TYPES, error="device_type is one of smartphone, "
                                                                             "Tablet, Laptop, Desktop, Tv"))
    serial_number = fields.String()
    udid = fields.String()
    imei = fields.String()
    email = fields.String()
    skip = fields.Integer(load_default=0, validate=validate.Range(min=0))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_LIMIT))

    @pre_load
    def _lower(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {k: v.lower() if k in ("platform", "device_type") and isinstance(v, str) else v
                for k, v in data.items()}


def _paging(skip: int, limit: int, total: int) -> dict[str, str]:
    base = request.base_url
    args = {k: v for k, v in request.args.items() if k not in ("skip", "limit")}
    paging = {}

    def link(at: int) -> str:
        return f"{base}?{urlencode({**args, 'skip': at, 'limit': limit})}"

    if skip + limit < total:
        paging["next"] = link(skip + limit)
    if skip > 0:
        paging["previous"] = link(max(0, skip - limit))
    return paging


@bp.get("/devices")
def list_devices():
    """ManageEngine's "Get device list": ``{"devices": […]}`` (plus ``metadata.total_record_count`` and
    ``paging``), with ``search``, ``platform``, ``device_type``, ``serial_number``, ``udid``, ``imei``,
    ``email``, ``skip`` and ``limit``."""
    query = load_query(DeviceListQuery(), request.args)
    named = device_filters(db.session)
    conditions = []
    try:
        for ours, theirs in (("q", "search"), ("serial_number", "serial_number"), ("udid", "udid"),
                             ("q", "imei"), ("owner_email", "email")):
            if theirs in query:
                conditions.append(named[ours](query[theirs]))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    for key, table in (("platform", _PLATFORMS), ("device_type", _DEVICE_TYPES)):
        if key in query:
            conditions.append(Device.platform.in_(table[query[key]]))
    total = db.session.scalar(select(func.count()).select_from(Device).where(*conditions))
    devices = list(db.session.scalars(select(Device).where(*conditions).order_by(Device.id)
                                      .offset(query["skip"]).limit(query["limit"])))
    summaries = _summaries(devices)
    return plain_response({"devices": [_device_row(d, summaries[d.id]) for d in devices],
                   "metadata": {"total_record_count": total},
                   "paging": _paging(query["skip"], query["limit"], total)})


@bp.get("/devices/<ident>")
def device_details(ident: str):
    """ManageEngine's "Get device details"."""
    return plain_response(_device_details(get_device(db.session, ident)))


def _date_from_ms(value: Any) -> date | None:
    if value in (-1, "", None):
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("a date is epoch milliseconds (or -1 to clear it)")
    return datetime.fromtimestamp(value / 1000, UTC).date()


class EpochDate(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return _date_from_ms(value)
        except (OverflowError, OSError, ValueError):
            raise ValidationError("not a valid epoch milliseconds date") from None


#: ManageEngine's update fields → ours
_UPDATE_FIELDS = {"name": "device_name", "asset_tag": "asset_tag", "description": "description", "office": "office",
                  "asset_owner": "asset_owner", "purchase_type": "purchase_type", "purchase_date": "purchase_date",
                  "purchase_price": "purchase_price", "purchase_order_number": "purchase_order_number",
                  "warranty_number": "warranty_number", "warranty_type": "warranty_type",
                  "warranty_expiration_date": "warranty_expiration"}
#: documented update fields with no Apple equivalent (Android APN credentials): accepted, not stored
_IGNORED_UPDATE_FIELDS = ("apn_username", "apn_password")


class DeviceUpdateBody(Schema):
    """``PUT /api/v1/mdm/devices/{device_id}``: ManageEngine's field names; ``""`` or ``-1`` clears a field."""

    class Meta:
        unknown = RAISE

    name = fields.String(validate=validate.Length(min=1, max=255))
    asset_tag = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    office = fields.String(allow_none=True)
    asset_owner = fields.String(allow_none=True)
    purchase_type = fields.String(allow_none=True)
    purchase_date = EpochDate(allow_none=True)
    purchase_price = fields.Raw(allow_none=True)
    purchase_order_number = fields.String(allow_none=True)
    warranty_number = fields.String(allow_none=True)
    warranty_type = fields.String(allow_none=True)
    warranty_expiration_date = EpochDate(allow_none=True)
    apn_username = fields.Raw(allow_none=True)
    apn_password = fields.Raw(allow_none=True)


@bp.put("/devices/<ident>")
def update_device(ident: str):
    """ManageEngine's "Update device details": the native asset-field update (the native schema checks
    the values), answering with the device details."""
    device = get_device(db.session, ident)
    body = load_body(DeviceUpdateBody(), "device details")
    changes = {_UPDATE_FIELDS[k]: (None if v in ("", -1) else v) for k, v in body.items() if k in _UPDATE_FIELDS}
    for key in ("purchase_date", "warranty_expiration"):
        if isinstance(changes.get(key), date):
            changes[key] = changes[key].isoformat()
    ours = {v: k for k, v in _UPDATE_FIELDS.items()}
    try:
        checked = device_schemas.DeviceUpdateSchema().load(changes)
    except ValidationError as exc:
        messages = {ours.get(k, k): v for k, v in exc.messages.items()}
        raise UnprocessableEntity("invalid device details", errors=marshmallow_errors(messages, base="")) from None
    workflows.update_device(db.session, device, checked, actor=current_actor(), box=secret_box(), public_url=public_url())
    db.session.commit()
    result = _device_details(device)
    ignored = [k for k in _IGNORED_UPDATE_FIELDS if k in body]
    if ignored:
        result["ignored"] = ignored
    return plain_response(result)


@bp.get("/devices/<ident>/summary")
def device_summary(ident: str):
    """ManageEngine's "Get device Summary"."""
    device = get_device(db.session, ident)
    summary = _summaries([device])[device.id]
    return plain_response({**summary, "device_id": device.id, "device_name": device.device_name,
                   "platform_type": device.platform, "last_contact_time": _ms(device.last_seen_at),
                   "agent_version": None,
                   "group": [{"group_id": g.id, "group_name": g.name} for g in groups.groups_of_device(db.session, device)]})


def _certificate(row: DeviceCertificate) -> dict[str, Any]:
    return {"certificatename": row.common_name, "certificatesubjectname": row.subject,
            "certificateissuername": row.issuer, "serialnumber": row.serial_number,
            "certificateexpiry": _ms(row.not_after), "isidentity": row.is_identity}


@bp.get("/devices/<ident>/certificates")
def device_certificates(ident: str):
    """ManageEngine's "Get Device Certificates": the device's CertificateList, all under
    ``unmanagedcertificates`` (the list does not say which profile installed a certificate)."""
    device = get_device(db.session, ident)
    rows = db.session.scalars(select(DeviceCertificate).where(DeviceCertificate.device_id == device.id)
                              .order_by(DeviceCertificate.id))
    return plain_response({"certificates": {"managedcertificates": [], "unmanagedcertificates": [_certificate(r) for r in rows]}})


@bp.get("/devices/<ident>/filevault")
def device_filevault(ident: str):
    """ManageEngine's "Get FileVault details", from the Mac's SecurityInfo."""
    device = get_device(db.session, ident)
    row = db.session.get(DeviceSecurityInfo, device.id)
    if row is None:
        raise NotFound(f"device {device.id} has not reported SecurityInfo yet")
    return plain_response({"filevault": {"is_encryption_enabled": row.fde_enabled,
                                 "is_personal_recovery_key": row.fde_has_personal_recovery_key,
                                 "is_institution_recovery_key": row.fde_has_institutional_recovery_key,
                                 "resource_id": device.id}})


#: SecurityInfo's FirmwarePasswordStatus.Mode → ManageEngine's firmware_mode (0 none, 1 command, 2 full)
_FIRMWARE_MODES = {"none": 0, "command": 1, "full": 2}


@bp.get("/devices/<ident>/firmware")
def device_firmware(ident: str):
    """ManageEngine's "Get firmware details", from the FirmwarePasswordStatus of the Mac's SecurityInfo
    (Intel Macs report it; 404 before the device reported one)."""
    device = get_device(db.session, ident)
    row = db.session.get(DeviceSecurityInfo, device.id)
    status = (row.details or {}).get("FirmwarePasswordStatus") if row is not None else None
    if not isinstance(status, dict):
        raise NotFound(f"device {device.id} has not reported a firmware password status")
    mode = status.get("Mode")
    return plain_response({"is_firmware_change_pending": bool(status.get("ChangePending", False)),
                   "is_roms_allowed": bool(status.get("AllowOroms", False)),
                   "is_firmware_password_exists": bool(status.get("PasswordExists", False)),
                   "firmware_mode": _FIRMWARE_MODES.get(mode.lower(), -1) if isinstance(mode, str) else -1,
                   "managed_password_id": -1})


@bp.get("/devices/<ident>/firmware/password")
@requires_scope("secrets")
def device_firmware_password(ident: str):
    """ManageEngine's "Get firmware password": the NewPassword of the latest SetFirmwarePassword command
    the Mac acknowledged (kept sealed in the command's parameters); scope ``secrets``; 404 when no
    password was set through this server (or the latest one cleared it)."""
    device = get_device(db.session, ident)
    command = db.session.scalar(select(Command).where(
        Command.device_id == device.id, Command.request_type == "SetFirmwarePassword",
        Command.status == CommandStatus.ACKNOWLEDGED.value).order_by(Command.id.desc()).limit(1))
    password = commands.command_parameters(command, secret_box()).get("NewPassword") if command else None
    if not password:
        raise NotFound(f"no firmware password of device {device.id} was set through this server")
    record_event(db.session, "command:secrets:read", "commands", command.uuid,
                 {"device_id": device.id, "request_type": command.request_type})
    db.session.commit()
    return plain_response({"firmware_password": password, "resource_id": device.id})


@bp.get("/devices/<ident>/locations")
def device_locations(ident: str):
    """ManageEngine's "Get device location": the fixes the device reported (lost mode), newest first."""
    device = get_device(db.session, ident)
    rows = db.session.scalars(select(DeviceLocation).where(DeviceLocation.device_id == device.id)
                              .order_by(DeviceLocation.received_at.desc(), DeviceLocation.id.desc()))
    return plain_response({"locations": [{"latitude": r.latitude, "longitude": r.longitude, "located_time": _ms(r.timestamp),
                                  "added_time": _ms(r.received_at)} for r in rows]})


#: our profile states → ManageEngine's profile status
_PROFILE_STATUS = {"scheduled": "SCHEDULED", "installed": "INSTALLED", "failed": "FAILED",
                   "removal_scheduled": "REMOVAL_SCHEDULED", "removed": "REMOVED"}


def _profile_row(state: DeviceProfileState, profile: Profile) -> dict[str, Any]:
    return {"profile_id": profile.id, "profile_name": profile.display_name,
            "profile_description": profile.description, "status": _PROFILE_STATUS.get(state.status, state.status.upper()),
            "remarks": state.detail, "applied_time": _ms(state.updated_at), "platform_type": "apple",
            "latest_version": profile.revision, "executed_version": state.revision}


def _profile_states(device: Device, profile_id: int | None = None) -> list[dict[str, Any]]:
    assignments.refresh_states(db.session, None)
    db.session.commit()  # the refreshed states are a cache of command results
    stmt = (select(DeviceProfileState, Profile).join(Profile, Profile.id == DeviceProfileState.profile_id)
            .where(DeviceProfileState.device_id == device.id).order_by(Profile.id))
    if profile_id is not None:
        stmt = stmt.where(Profile.id == profile_id)
    return [_profile_row(state, profile) for state, profile in db.session.execute(stmt)]


@bp.get("/devices/<ident>/profiles")
def device_profiles(ident: str):
    """ManageEngine's "Get device profiles": the profiles assigned to the device and their state."""
    return plain_response({"profiles": _profile_states(get_device(db.session, ident))})


@bp.get("/devices/<ident>/profiles/<int:profile_id>")
def device_profile(ident: str, profile_id: int):
    """ManageEngine's "Get a details of profiles on device"."""
    rows = _profile_states(get_device(db.session, ident), profile_id)
    if not rows:
        raise NotFound(f"profile {profile_id} is not assigned to this device")
    return plain_response(rows[0])


def _change_profiles(ident: str, change) -> Response:
    device = get_device(db.session, ident)
    profiles = assignments.resolve_profiles(db.session, load_body(ProfileIdsSchema(), "profile ids")["profile_ids"])
    box = secret_box()
    for profile in profiles:
        change(db.session, profile, devices=[device.id], actor=current_actor(), box=box)
    db.session.commit()
    return Response(status=204)


@bp.post("/devices/<ident>/profiles")
def associate_profiles(ident: str):
    """ManageEngine's "Associate profiles to devices": ``{"profile_ids": […]}`` → 204."""
    return _change_profiles(ident, assignments.assign)


@bp.delete("/devices/<ident>/profiles")
def disassociate_profiles(ident: str):
    """ManageEngine's "Disassociate Profiles To Device": ``{"profile_ids": […]}`` → 204."""
    return _change_profiles(ident, assignments.unassign)


def _app(row: InstalledApplication) -> dict[str, Any]:
    return {"app_id": row.id, "app_name": row.name, "identifier": row.identifier,
            "app_version": row.short_version or row.version, "app_version_code": row.version,
            "platform_type": "apple", "added_time": _ms(row.reported_at)}


#: our install states → ManageEngine's app status on a device
_APP_STATUS = {"scheduled": "SCHEDULED", "installing": "INSTALLING", "installed": "INSTALLED", "failed": "FAILED",
               "removal_scheduled": "REMOVAL_SCHEDULED", "removed": "REMOVED"}


def _distributed(device_id: int, app_id: int | None = None) -> list[tuple[DeviceAppState, App, str | None]]:
    """The catalogue apps the server distributes to the device: (state, app, who assigned it directly)."""
    statement = (
        select(DeviceAppState, App, AppAssignment.created_by)
        .join(App, App.id == DeviceAppState.app_id)
        .outerjoin(AppAssignment, and_(AppAssignment.app_id == App.id, AppAssignment.device_id == device_id))
        .where(DeviceAppState.device_id == device_id)
        .order_by(App.name, App.id)
    )
    if app_id is not None:
        statement = statement.where(App.id == app_id)
    return [tuple(row) for row in db.session.execute(statement)]


def _distributed_app(state: DeviceAppState, app: App) -> dict[str, Any]:
    return {"app_id": app.id, "app_name": app.name, "identifier": app.bundle_id, "app_version": app.version,
            "app_version_code": app.build_version, "platform_type": "apple", "added_time": _ms(app.created_at),
            "modified_time": _ms(app.updated_at)}


@bp.get("/devices/<ident>/apps")
def device_apps(ident: str):
    """ManageEngine's "Get device app list": ``installed_apps`` is the device's InstalledApplicationList
    inventory (``app_id``: the inventory row), ``apps`` the catalogue apps the server distributes to it
    (``app_id``: the catalogue entry, as in ``…/apps/{app_id}``)."""
    device = get_device(db.session, ident)
    app_assignments.refresh_states(db.session, device_ids=[device.id], box=secret_box())
    rows = db.session.scalars(select(InstalledApplication).where(InstalledApplication.device_id == device.id)
                              .order_by(InstalledApplication.name, InstalledApplication.id))
    distributed = [_distributed_app(state, app) for state, app, _by in _distributed(device.id)]
    db.session.commit()
    return plain_response({"installed_apps": [_app(r) for r in rows], "apps": distributed})


@bp.get("/devices/<ident>/apps/<int:app_id>")
def device_app(ident: str, app_id: int):
    """ManageEngine's "Get a details of app on the device distributed through MDM": a catalogue app the
    server distributes to the device, with its install status."""
    device = get_device(db.session, ident)
    app_assignments.refresh_states(db.session, app_ids=[app_id], device_ids=[device.id], box=secret_box())
    found = _distributed(device.id, app_id)
    db.session.commit()
    if not found:
        raise NotFound(f"the server distributes no app {app_id} to device {device.id}")
    state, app, assigned_by = found[0]
    latest = state.installed_version is None or state.installed_version in (app.version, app.build_version)
    return plain_response({**_distributed_app(state, app), "islatestver": latest, "latest_version": app.revision,
                   "executed_version": state.revision, "associated_by": assigned_by,
                   "associated_on": _ms(state.updated_at), "status": _APP_STATUS.get(state.status, state.status),
                   "remarks": state.detail or "--", "localized_remark": state.detail or "--"})


class AppDetail(Schema):
    app_id = IdField(required=True)
    release_label_id = fields.Raw()  # ManageEngine's release channel: one channel here, accepted and ignored


class AssociateAppsBody(Schema):
    """ManageEngine's "Associate apps to device" body. ``app_details`` name the catalogue apps; the
    notification and silent-install flags have no Apple equivalent (an MDM install on a supervised
    device is silent; otherwise the user is asked), and ``do_not_uninstall`` has none here (an app is
    removed when its last assignment goes): all are accepted and ignored."""

    class Meta:
        unknown = RAISE

    app_details = fields.List(fields.Nested(AppDetail), required=True, validate=validate.Length(
        min=1, error="app_details must be a non-empty array of objects with app_id"))
    id = fields.Raw()
    invite_user = fields.Boolean()
    notify_user_via_email = fields.Boolean()
    silent_install = fields.Boolean()
    do_not_uninstall = fields.Boolean()


class AppIdsBody(Schema):
    """``{"app_ids": [id…]}``: catalogue apps (dissociate, refresh status)."""

    class Meta:
        unknown = RAISE

    app_ids = fields.List(IdField(), required=True, validate=validate.Length(
        min=1, error="app_ids must be a non-empty array of app ids"))


def _catalogue_apps(ids: Iterable[int]) -> list[App]:
    """The catalogue entries, each once, in the order given; 404 names the first unknown id."""
    return [apps.get_app(db.session, int(app_id)) for app_id in dict.fromkeys(ids)]


@bp.post("/devices/<ident>/apps")
def associate_apps(ident: str):
    """ManageEngine's "Associate apps to device" → 204: each app is assigned to the device (a direct
    assignment, default install options)."""
    device = get_device(db.session, ident)
    body = load_body(AssociateAppsBody(), "app details")
    for app in _catalogue_apps(detail["app_id"] for detail in body["app_details"]):
        app_assignments.assign(db.session, app, devices=[device.id], actor=current_actor(), box=secret_box(),
                               public_url=public_url())
    db.session.commit()
    return Response(status=204)


@bp.delete("/devices/<ident>/apps")
def dissociate_apps(ident: str):
    """ManageEngine's "Dissociate apps from devices" → 204: the device's direct assignment of each app is
    deleted (RemoveApplication follows unless a group still assigns the app); 404 when an app is not
    assigned to the device directly."""
    device = get_device(db.session, ident)
    for app in _catalogue_apps(load_body(AppIdsBody(), "app ids")["app_ids"]):
        assignment = db.session.scalar(select(AppAssignment).where(AppAssignment.app_id == app.id,
                                                                   AppAssignment.device_id == device.id))
        if assignment is None:
            raise NotFound(f"app {app.id} is not assigned to device {device.id} directly")
        app_assignments.unassign(db.session, app, assignment, actor=current_actor(), box=secret_box(),
                                 public_url=public_url())
    db.session.commit()
    return Response(status=204)


@bp.post("/devices/<ident>/apps/refreshstatus")
def refresh_app_status(ident: str):
    """ManageEngine's "Refresh App Status For Device" → 204: the device is asked for its managed apps'
    status and its installed apps (ManagedApplicationList, InstalledApplicationList); the answers
    update the states."""
    device = get_device(db.session, ident)
    for app in _catalogue_apps(load_body(AppIdsBody(), "app ids")["app_ids"]):
        app_assignments.request_refresh(db.session, app, device_ids=[device.id], actor=current_actor(),
                                        box=secret_box())
    db.session.commit()
    return Response(status=204)


# --- actions and commands -----------------------------------------------------------------------------

#: our command statuses → ManageEngine's status_code and status_description (0 failed, 1 initiated, 2 success)
_FAILED, _INITIATED, _SUCCESS = (0, "Command Failed"), (1, "Command Initiated"), (2, "Command Success")
_STATUS_CODES = {CommandStatus.ACKNOWLEDGED: _SUCCESS, CommandStatus.ERROR: _FAILED,
                 CommandStatus.COMMAND_FORMAT_ERROR: _FAILED, CommandStatus.EXPIRED: _FAILED,
                 CommandStatus.CANCELLED: _FAILED}


def _status(command: Command) -> tuple[int, str]:
    return _STATUS_CODES.get(command.status, _INITIATED)


@bp.get("/devices/<ident>/actions")
def applicable_actions(ident: str):
    """ManageEngine's "Get device applicable actions" (``knox_actions`` is always empty)."""
    device = get_device(db.session, ident)
    rows = actions.device_actions(db.session, device)
    return plain_response({"actions": [{"name": a["name"], "localized_name": a["title"], "is_enabled": a["is_enabled"],
                                "action_info": a["reason"] or "--", "localized_action_info": a["reason"] or "--"}
                               for a in rows],
                   "knox_actions": []})


@bp.post("/devices/<ident>/actions/<name>")
def perform_action(ident: str, name: str):
    """ManageEngine's "Perform Action on device": the document's flat body → 202 with the commands queued
    (and the PIN generated for a Mac locked without one)."""
    device = get_device(db.session, ident)
    action = actions.get_action(name)
    given = actions.body_parameters(action, load_body(PerformSchema(), "action", optional=True))
    entry = actions.perform_on_device(db.session, action, device, given.raw, actor=current_actor(), box=secret_box())
    db.session.commit()
    answer = {"action_name": action.name, "device_id": device.id, "command_uuids": entry["command_uuids"]}
    if "pin" in entry:
        answer["pin"] = entry["pin"]
    if given.ignored:
        answer["ignored"] = given.ignored
    return plain_response(answer, status=202)


@bp.delete("/devices/<ident>/actions/<name>")
def remove_action(ident: str, name: str):
    """ManageEngine's "Remove action": cancel the action's commands the device has not fetched yet → 204;
    404 when none is waiting (409 from the queue when one was sent meanwhile)."""
    device = get_device(db.session, ident)
    action = actions.get_action(name)
    waiting = list(db.session.scalars(select(Command.uuid).where(
        Command.device_id == device.id, Command.request_type.in_(action.request_types),
        Command.status == CommandStatus.QUEUED.value)))
    if not waiting:
        raise NotFound(f"device {device.id} has no {action.name} command waiting to be sent")
    for uuid in waiting:
        commands.cancel_command(db.session, uuid, device_id=device.id)
    db.session.commit()
    return Response(status=204)


def _latest(device: Device, request_types: Iterable[str] | None = None) -> Command:
    stmt = select(Command).where(Command.device_id == device.id).order_by(Command.id.desc()).limit(1)
    if request_types is not None:
        stmt = stmt.where(Command.request_type.in_(list(request_types)))
    command = db.session.scalar(stmt)
    if command is None:
        raise NotFound(f"device {device.id} has no such command")
    return command


@bp.get("/devices/<ident>/scan")
def scan_status(ident: str):
    """ManageEngine's "Get Scan Status": the device's latest inventory command."""
    code, description = _status(_latest(get_device(db.session, ident), actions.get_action("scan").request_types))
    return plain_response({"status_code": code, "status_description": description})


@bp.get("/devices/<ident>/actions/recent_command")
def recent_command(ident: str):
    """ManageEngine's "Get last initiated command status for device"."""
    device = get_device(db.session, ident)
    command = command_queries.latest_for_device(db.session, device)
    code, description = _status(command)
    return plain_response({"status_code": code, "status_description": description, "command_name": command.request_type})


class HistoryQuery(Schema):
    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_LIMIT))
    skip_token = fields.String(data_key="skip-token")


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _offset(token: str | None) -> int:
    if token is None:
        return 0
    try:
        kind, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind == "offset" and value.isdigit():
            return int(value)
    except (ValueError, UnicodeDecodeError):
        pass
    raise BadRequest("not a skip-token of this server", parameter="skip-token")


@bp.get("/devices/<ident>/commandhistory")
def command_history(ident: str):
    """ManageEngine's "Get command history for device": newest first, paged with ``limit`` and the
    opaque ``skip-token`` of ``paging.next``/``previous``."""
    device = get_device(db.session, ident)
    query = load_query(HistoryQuery(), request.args)
    offset, limit = _offset(query.get("skip_token")), query["limit"]
    stmt = command_queries.commands_query(device.id)
    total = db.session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = db.session.scalars(stmt.order_by(Command.id.desc()).offset(offset).limit(limit))
    paging = {}
    if offset + limit < total:
        paging["next"] = f"{request.base_url}?{urlencode({'limit': limit, 'skip-token': _token(offset + limit)})}"
    if offset > 0:
        paging["previous"] = f"{request.base_url}?{urlencode({'limit': limit, 'skip-token': _token(max(0, offset - limit))})}"
    history = []
    for command in rows:
        code, description = _status(command)
        remarks = command_queries.remarks(command, command.status)
        life = [{"command_id": command.uuid, "command_name": command.request_type, "status_code": code,
                 "status_description": description, "updated_time": _ms(command.completed_at or command.sent_at
                                                                         or command.created_at),
                 "added_by_name": command.enqueued_by, "remarks": remarks}]
        history.append({"command_id": command.uuid, "command_history_id": command.id,
                        "command_name": command.request_type, "command_status": code, "device_id": device.id,
                        "added_time": _ms(command.created_at), "added_by_name": command.enqueued_by,
                        "managed_status": 2 if device.enrolled else 4, "command_life": life,
                        "remarks": remarks, "remarks_args": None})
    return plain_response({"metadata": {"total_record_count": total}, "paging": paging, "commands": history})


@bp.post("/actions/<name>")
def bulk_action(name: str):
    """ManageEngine's "Execute command for bulk resources": ``{"devices", "groups", "command_name"}`` (and
    the action's flat arguments) → 200 with ``success_list``, ``na_list`` and the counts."""
    action = actions.get_action(name)
    body = load_body(BulkActionSchema(), "bulk action")
    result = actions.run_bulk(db.session, action, body, actor=current_actor(), box=secret_box())
    db.session.commit()
    for entry in result["success_list"]:
        entry.update(device_id=int(entry["device_id"]), status="SCHEDULED", remarks="the command is queued")
    for entry in result["na_list"]:
        entry.update(device_id=int(entry["device_id"]) if entry["device_id"] is not None else None,
                     status="NOT_APPLICABLE")
    return plain_response(result)



_E = "compat_manageengine."
OPENAPI: dict[str, ApiDoc] = {
    _E + "list_devices": ApiDoc(reply=Reply.JSON, query=DeviceListQuery, errors=(400,)),
    _E + "device_details": ApiDoc(reply=Reply.JSON),
    _E + "update_device": ApiDoc(body=DeviceUpdateBody, body_kind=Body.JSON, reply=Reply.JSON),
    _E + "device_summary": ApiDoc(reply=Reply.JSON),
    _E + "device_certificates": ApiDoc(reply=Reply.JSON),
    _E + "device_filevault": ApiDoc(reply=Reply.JSON),
    _E + "device_firmware": ApiDoc(reply=Reply.JSON),
    _E + "device_firmware_password": ApiDoc(reply=Reply.JSON),
    _E + "device_locations": ApiDoc(reply=Reply.JSON),
    _E + "device_profiles": ApiDoc(reply=Reply.JSON),
    _E + "device_profile": ApiDoc(reply=Reply.JSON),
    _E + "associate_profiles": ApiDoc(body=ProfileIdsSchema, body_kind=Body.JSON, reply=Reply.EMPTY, status=204),
    _E + "disassociate_profiles": ApiDoc(body=ProfileIdsSchema, body_kind=Body.JSON, reply=Reply.EMPTY, status=204),
    _E + "associate_apps": ApiDoc(body=AssociateAppsBody, body_kind=Body.JSON, reply=Reply.EMPTY, status=204),
    _E + "dissociate_apps": ApiDoc(body=AppIdsBody, body_kind=Body.JSON, reply=Reply.EMPTY, status=204),
    _E + "refresh_app_status": ApiDoc(body=AppIdsBody, body_kind=Body.JSON, reply=Reply.EMPTY, status=204),
    _E + "device_apps": ApiDoc(reply=Reply.JSON),
    _E + "device_app": ApiDoc(reply=Reply.JSON),
    _E + "applicable_actions": ApiDoc(reply=Reply.JSON),
    _E + "perform_action": ApiDoc(body=PerformSchema, body_kind=Body.JSON, reply=Reply.JSON, status=202,
                                  errors=(409,)),
    _E + "remove_action": ApiDoc(body_kind=Body.NONE, reply=Reply.EMPTY, status=204, errors=(409,)),
    _E + "scan_status": ApiDoc(reply=Reply.JSON),
    _E + "recent_command": ApiDoc(reply=Reply.JSON),
    _E + "command_history": ApiDoc(reply=Reply.JSON, query=HistoryQuery, errors=(400,)),
    _E + "bulk_action": ApiDoc(body=BulkActionSchema, body_kind=Body.JSON, reply=Reply.JSON),
}
