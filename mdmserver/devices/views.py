"""Device detail and the inventory read-backs (JSON:API, paged)."""

from __future__ import annotations

from flask import Blueprint, request
from sqlalchemy import select

from mdmserver.api.jsonapi import (
    document,
    jsonapi_response,
    list_document,
    paginate,
    parse_bool,
    parse_list_query,
    resource,
)
from mdmserver.db import db
from mdmserver.devices import schemas
from mdmserver.devices.models import (
    AvailableOSUpdate,
    DeviceCertificate,
    DeviceLocation,
    DeviceSecurityInfo,
    InstalledApplication,
    InstalledProfile,
)
from mdmserver.devices.service import get_device
from mdmserver.errors import NotFound
from mdmserver.push.service import add_push_attributes

bp = Blueprint("devices", __name__)


@bp.get("/api/v1/devices/<ident>")
def show(ident: str):
    """One device by id, UDID or serial number, with its inventory and push status."""
    device = get_device(db.session, ident)
    fields_ = request.args.get("fields[devices]")
    chosen = {f.strip() for f in fields_.split(",") if f.strip()} if fields_ else None
    data = schemas.device_resource(device, detail=True, fields_=chosen)
    add_push_attributes(db.session, [data], chosen)
    return jsonapi_response(document(data))


def _inventory_list(ident: str, model, type_: str, schema, *, filters, sorts, default_sort):
    device = get_device(db.session, ident)
    query = parse_list_query(request.args, filters=filters, sorts=sorts, default_sort=default_sort)
    page = paginate(db.session, select(model).where(model.device_id == device.id), query)
    dump = schema()
    data = [resource(type_, row.id, dump.dump(row)) for row in page.items]
    return jsonapi_response(list_document(page, data, request))


def _like(column):
    def build(value: str):
        return column.ilike(f"%{value}%")

    return build


def _bool(column):
    def build(value: str):
        return column.is_(parse_bool(value))

    return build


@bp.get("/api/v1/devices/<ident>/installed_profiles")
def installed_profiles(ident: str):
    return _inventory_list(
        ident, InstalledProfile, "installed_profiles", schemas.InstalledProfileSchema,
        filters={"identifier": _like(InstalledProfile.identifier), "is_managed": _bool(InstalledProfile.is_managed)},
        sorts={"identifier": InstalledProfile.identifier, "display_name": InstalledProfile.display_name},
        default_sort=[InstalledProfile.identifier, InstalledProfile.id],
    )


@bp.get("/api/v1/devices/<ident>/installed_applications")
def installed_applications(ident: str):
    return _inventory_list(
        ident, InstalledApplication, "installed_applications", schemas.InstalledApplicationSchema,
        filters={"identifier": _like(InstalledApplication.identifier), "name": _like(InstalledApplication.name)},
        sorts={"identifier": InstalledApplication.identifier, "name": InstalledApplication.name,
               "bundle_size": InstalledApplication.bundle_size},
        default_sort=[InstalledApplication.name, InstalledApplication.id],
    )


@bp.get("/api/v1/devices/<ident>/certificates")
def certificates(ident: str):
    return _inventory_list(
        ident, DeviceCertificate, "device_certificates", schemas.DeviceCertificateSchema,
        filters={"common_name": _like(DeviceCertificate.common_name),
                 "is_identity": _bool(DeviceCertificate.is_identity)},
        sorts={"common_name": DeviceCertificate.common_name, "not_after": DeviceCertificate.not_after},
        default_sort=[DeviceCertificate.id],
    )


@bp.get("/api/v1/devices/<ident>/locations")
def locations(ident: str):
    return _inventory_list(
        ident, DeviceLocation, "device_locations", schemas.DeviceLocationSchema,
        filters={}, sorts={"received_at": DeviceLocation.received_at, "timestamp": DeviceLocation.timestamp},
        default_sort=[DeviceLocation.received_at.desc(), DeviceLocation.id.desc()],
    )


@bp.get("/api/v1/devices/<ident>/os_updates")
def os_updates(ident: str):
    return _inventory_list(
        ident, AvailableOSUpdate, "os_updates", schemas.OSUpdateSchema,
        filters={"is_critical": _bool(AvailableOSUpdate.is_critical)},
        sorts={"version": AvailableOSUpdate.version, "product_key": AvailableOSUpdate.product_key},
        default_sort=[AvailableOSUpdate.id],
    )


@bp.get("/api/v1/devices/<ident>/security")
def security(ident: str):
    device = get_device(db.session, ident)
    row = db.session.get(DeviceSecurityInfo, device.id)
    if row is None:
        raise NotFound(f"device {device.id} has not reported SecurityInfo yet")
    return jsonapi_response(document(resource("security_info", device.id, schemas.SecurityInfoSchema().dump(row))))
