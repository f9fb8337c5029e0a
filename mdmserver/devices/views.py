"""The devices resource: the list (filters, sort, paging, sparse fieldsets, facets; also a group's
members and a user's devices), the detail, PATCH, DELETE, and the inventory read-backs."""

from __future__ import annotations

from collections.abc import Sequence

from flask import Blueprint, request
from sqlalchemy import ColumnElement, select

from mdmserver import workflows
from mdmserver.api.auth import current_actor
from mdmserver.api.jsonapi import (
    document,
    jsonapi_response,
    list_document,
    load_attributes,
    paginate,
    parse_bool,
    parse_list_query,
    parse_resource_body,
    resource,
)
from mdmserver.collaborators import public_url, secret_box
from mdmserver.db import db
from mdmserver.devices import schemas, service
from mdmserver.errors import BadRequest, NotFound
from mdmserver.groups import service as groups
from mdmserver.push.service import PUSH_ATTRIBUTES, add_push_attributes
from mdmserver.records.devices import (
    AvailableOSUpdate,
    Device,
    DeviceCertificate,
    DeviceLocation,
    DeviceSecurityInfo,
    InstalledApplication,
    InstalledProfile,
)
from mdmserver.selection.filters import DEVICE_SORTS, DYNAMIC_FILTERS, device_filters
from mdmserver.selection.resolve import get_device
from mdmserver.users import service as users

bp = Blueprint("devices", __name__)


_RELATIONSHIPS = {"owner", "custom_attributes", "groups", "commands"}


def sparse_fields(requested: dict[str, set[str]]) -> set[str] | None:
    unknown_types = set(requested) - {"devices"}
    if unknown_types:
        raise BadRequest(f"no fieldset for type {sorted(unknown_types)[0]!r}", parameter="fields")
    wanted = requested.get("devices")
    if wanted is None:
        return None
    unknown = wanted - set(schemas.DEVICE_ATTRIBUTES) - set(PUSH_ATTRIBUTES) - _RELATIONSHIPS
    if unknown:
        raise BadRequest(f"devices have no field {sorted(unknown)[0]!r}", parameter="fields[devices]")
    return wanted


@bp.get("/api/v1/devices")
def list_devices():
    """The device inventory: filters (filter[platform], filter[custom.<name>], filter[q]…), sort, paging, fields[devices] and ?facets= counts."""
    return device_list_response()


@bp.get("/api/v1/device_groups/<group_id>/devices")
def group_devices(group_id: str):
    """The group's members (subgroups included), with every device-list parameter."""
    group = groups.get_group(db.session, group_id)
    return device_list_response([groups.members_condition(db.session, group)])


@bp.get("/api/v1/users/<user_id>/devices")
def user_devices(user_id: str):
    """The devices a user owns, with every device-list parameter."""
    user = users.get_user(db.session, user_id)
    return device_list_response([users.owned_by_condition(user)])


def device_list_response(extra_conditions: Sequence[ColumnElement[bool]] = ()):
    """The device list document for this request's query, within ``extra_conditions`` (a group...)."""
    query = parse_list_query(
        request.args,
        filters=device_filters(db.session),
        dynamic_filters=DYNAMIC_FILTERS,
        sorts=DEVICE_SORTS,
        default_sort=[Device.id.asc()],
        extra_params=("facets",),
    )
    query.filters.extend(extra_conditions)
    fields_ = sparse_fields(query.fields)
    facets = service.parse_facets(query.extra.get("facets"))
    page = service.list_devices(db.session, query)
    ids = [d.id for d in page.items]
    owners = service.owners_of(db.session, ids)
    data = [schemas.device_resource(d, owner_id=owners.get(d.id), fields_=fields_) for d in page.items]
    add_push_attributes(db.session, data, fields_)
    meta = {}
    if facets:
        meta["facets"] = service.facet_counts(db.session, query.filters, facets)
    return jsonapi_response(list_document(page, data, meta=meta))


@bp.patch("/api/v1/devices/<ident>")
def update_device(ident: str):
    """Change a device's asset fields; a new device_name also queues the rename command where the platform allows."""
    device = get_device(db.session, ident)
    _, attributes = parse_resource_body(None, "devices", require_id=device.id)
    changes = load_attributes(schemas.DeviceUpdateSchema(), attributes, "device attributes")
    device, meta = workflows.update_device(db.session, device, changes, actor=current_actor(), box=secret_box(), public_url=public_url())
    db.session.commit()
    owners = service.owners_of(db.session, [device.id])
    return jsonapi_response(document(schemas.device_resource(device, owner_id=owners.get(device.id)), meta=meta or None))


@bp.delete("/api/v1/devices/<ident>")
def delete_device(ident: str):
    """Forget a device with its commands, inventory, attributes and memberships."""
    workflows.delete_device(db.session, get_device(db.session, ident))
    db.session.commit()
    return jsonapi_response(None, status=204)


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
