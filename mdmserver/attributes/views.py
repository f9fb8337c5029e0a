"""``/api/v1/devices/<id>/custom_attributes`` (GET, POST replace, PATCH merge, DELETE) and the bulk delete."""

from __future__ import annotations

from flask import Blueprint, request

from mdmserver.api.auth import current_actor
from mdmserver.api.jsonapi import document, jsonapi_response, parse_resource_body, resource
from mdmserver.assignments import service as assignments
from mdmserver.attributes import service
from mdmserver.attributes.schemas import attributes_resource, validate_values
from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.errors import BadRequest
from mdmserver.selection import resolve
from mdmserver.selection.filters import ATTRIBUTE_NAME

bp = Blueprint("attributes", __name__, url_prefix="/api/v1")

TYPE = "custom_attributes"


def _reconcile() -> None:
    """Smart groups may filter on custom attributes: bring group-assigned profiles in line."""
    assignments.reconcile_all(db.session, actor=current_actor(), box=secret_box(), groups_only=True)


def _changed(device_id: int, values: dict[str, str]):
    """After a write: reconcile group assignments, commit, answer with the device's attributes."""
    _reconcile()
    db.session.commit()
    return jsonapi_response(document(attributes_resource(device_id, values)))


def _names(raw: str | None, parameter: str = "names") -> list[str] | None:
    if raw is None:
        return None
    names = list(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
    if not names:
        raise BadRequest("give at least one attribute name", parameter=parameter)
    for name in names:
        if not ATTRIBUTE_NAME.match(name):
            raise BadRequest(f"{name!r} is not a valid custom attribute name", parameter=parameter)
    return names


def _only(*allowed: str) -> None:
    for name in request.args:
        if name not in allowed:
            raise BadRequest(f"unknown query parameter {name!r}", parameter=name)


@bp.get("/devices/<ident>/custom_attributes")
def get_attributes(ident: str):
    """The device's custom attributes."""
    _only()
    device = resolve.get_device(db.session, ident)
    return jsonapi_response(document(attributes_resource(device.id, service.get_attributes(db.session, device.id))))


@bp.post("/devices/<ident>/custom_attributes")
def replace_attributes(ident: str):
    """Replace all the device's custom attributes (Ivanti's add/replace)."""
    _only()
    device = resolve.get_device(db.session, ident)
    _, values = parse_resource_body(None, TYPE)
    values = validate_values(values, allow_null=False)
    return _changed(device.id, service.replace_attributes(db.session, device, values))


@bp.patch("/devices/<ident>/custom_attributes")
def merge_attributes(ident: str):
    """Merge custom attributes: keep the others, update and add these; null deletes one."""
    _only()
    device = resolve.get_device(db.session, ident)
    _, values = parse_resource_body(None, TYPE)
    values = validate_values(values, allow_null=True)
    return _changed(device.id, service.merge_attributes(db.session, device, values))


@bp.delete("/devices/<ident>/custom_attributes")
def delete_attributes(ident: str):
    """Delete all the device's custom attributes, or those in ?names=."""
    _only("names")
    device = resolve.get_device(db.session, ident)
    names = _names(request.args.get("names"))
    return _changed(device.id, service.delete_attributes(db.session, device, names))


@bp.get("/custom_attributes")
def list_attribute_names():
    """Every custom attribute name in use, with how many devices have it."""
    _only()
    data = [resource("custom_attribute_names", name, {"name": name, "device_count": count})
            for name, count in service.attribute_names(db.session)]
    return jsonapi_response(document(data, meta={"total": len(data)}))


@bp.delete("/custom_attributes")
def bulk_delete():
    """Delete the named attributes (``?names=a,b``) from the devices given (``&devices=id,UDID,serial``),
    or from every device. Devices that do not exist are listed in ``meta.not_found``; the rest proceed."""
    _only("names", "devices")
    names = _names(request.args.get("names"))
    if names is None:
        raise BadRequest("names is required (the attribute names to delete)", parameter="names")
    device_ids, missing = None, []
    raw_devices = request.args.get("devices")
    if raw_devices is not None:
        idents = [p.strip() for p in raw_devices.split(",") if p.strip()]
        if not idents:
            raise BadRequest("devices must name at least one device", parameter="devices")
        resolved = resolve.resolve_devices(db.session, idents, parameter="devices")
        device_ids, missing = resolved.ids, resolved.missing
    deleted = service.bulk_delete(db.session, names, device_ids)
    _reconcile()
    db.session.commit()
    return jsonapi_response(document(None, meta={"deleted": deleted, "names": names, "not_found": missing}))
