"""``/api/v1/devices/<id>/custom_attributes`` (GET, POST replace, PATCH merge, DELETE) and the bulk delete."""

from __future__ import annotations

from flask import Blueprint, request

from mdmserver import workflows
from mdmserver.api.auth import current_actor
from mdmserver.api.jsonapi import (
    document,
    jsonapi_response,
    load_attributes,
    load_query,
    parse_resource_body,
    resource,
)
from mdmserver.attributes import service
from mdmserver.attributes.schemas import (
    AttributeChangesSchema,
    AttributeNamesQuerySchema,
    AttributeValuesSchema,
    BulkDeleteQuerySchema,
    attributes_resource,
)
from mdmserver.collaborators import public_url, secret_box
from mdmserver.db import db
from mdmserver.errors import BadRequest
from mdmserver.selection import resolve

bp = Blueprint("attributes", __name__, url_prefix="/api/v1")

TYPE = "custom_attributes"


def _changed(device_id: int, values: dict[str, str]):
    """After a write: react (smart groups), commit, answer with the device's attributes."""
    workflows.custom_attributes_changed(db.session, actor=current_actor(), box=secret_box(), public_url=public_url())
    db.session.commit()
    return jsonapi_response(document(attributes_resource(device_id, values)))


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
    values = load_attributes(AttributeValuesSchema(), values, "custom attributes")
    return _changed(device.id, service.replace_attributes(db.session, device, values))


@bp.patch("/devices/<ident>/custom_attributes")
def merge_attributes(ident: str):
    """Merge custom attributes: keep the others, update and add these; null deletes one."""
    _only()
    device = resolve.get_device(db.session, ident)
    _, values = parse_resource_body(None, TYPE)
    values = load_attributes(AttributeChangesSchema(), values, "custom attributes")
    return _changed(device.id, service.merge_attributes(db.session, device, values))


@bp.delete("/devices/<ident>/custom_attributes")
def delete_attributes(ident: str):
    """Delete all the device's custom attributes, or those in ?names=."""
    query = load_query(AttributeNamesQuerySchema(), request.args)
    device = resolve.get_device(db.session, ident)
    names = list(dict.fromkeys(query["names"])) if "names" in query else None
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
    query = load_query(BulkDeleteQuerySchema(), request.args)
    names = list(dict.fromkeys(query["names"]))
    device_ids, missing = None, []
    if "devices" in query:
        resolved = resolve.resolve_devices(db.session, query["devices"], parameter="devices")
        device_ids, missing = resolved.ids, resolved.missing
    deleted = service.bulk_delete(db.session, names, device_ids)
    workflows.custom_attributes_changed(db.session, actor=current_actor(), box=secret_box(), public_url=public_url())
    db.session.commit()
    return jsonapi_response(document(None, meta={"deleted": deleted, "names": names, "not_found": missing}))
