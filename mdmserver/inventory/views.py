"""``GET /api/v1/devices`` (filters, sort, paging, sparse fieldsets, facets), ``PATCH``/``DELETE`` one."""

from __future__ import annotations

from collections.abc import Sequence

from flask import Blueprint, request
from sqlalchemy import ColumnElement

from mdmserver.api.auth import current_actor
from mdmserver.api.jsonapi import (
    document,
    jsonapi_response,
    list_document,
    load_attributes,
    parse_list_query,
    parse_resource_body,
)
from mdmserver.assignments import service as assignments
from mdmserver.db import db
from mdmserver.devices.models import Device
from mdmserver.errors import BadRequest
from mdmserver.inventory import service
from mdmserver.inventory.filters import DEVICE_SORTS, DYNAMIC_FILTERS, device_filters
from mdmserver.inventory.schemas import DEVICE_ATTRIBUTES, DeviceUpdateSchema, device_resource
from mdmserver.push.service import PUSH_ATTRIBUTES, add_push_attributes

bp = Blueprint("inventory", __name__, url_prefix="/api/v1")

_RELATIONSHIPS = {"owner", "custom_attributes", "groups", "commands"}


def sparse_fields(requested: dict[str, set[str]]) -> set[str] | None:
    unknown_types = set(requested) - {"devices"}
    if unknown_types:
        raise BadRequest(f"no fieldset for type {sorted(unknown_types)[0]!r}", parameter="fields")
    wanted = requested.get("devices")
    if wanted is None:
        return None
    unknown = wanted - set(DEVICE_ATTRIBUTES) - set(PUSH_ATTRIBUTES) - _RELATIONSHIPS
    if unknown:
        raise BadRequest(f"devices have no field {sorted(unknown)[0]!r}", parameter="fields[devices]")
    return wanted


@bp.get("/devices")
def list_devices():
    """The device inventory: filters (filter[platform], filter[custom.<name>], filter[q]…), sort, paging, fields[devices] and ?facets= counts."""
    return device_list_response()


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
    data = [device_resource(d, owner_id=owners.get(d.id), fields_=fields_) for d in page.items]
    add_push_attributes(db.session, data, fields_)
    meta = {}
    if facets:
        meta["facets"] = service.facet_counts(db.session, query.filters, facets)
    return jsonapi_response(list_document(page, data, meta=meta))


@bp.patch("/devices/<ident>")
def update_device(ident: str):
    """Change a device's asset fields; a new device_name also queues the rename command where the platform allows."""
    device = service.get_device(db.session, ident)
    _, attributes = parse_resource_body(None, "devices", require_id=device.id)
    changes = load_attributes(DeviceUpdateSchema(), attributes, "device attributes")
    device, meta = service.update_device(db.session, device, changes, actor=current_actor())
    assignments.reconcile_all(db.session, actor=current_actor(), groups_only=True)  # smart groups may match anew
    db.session.commit()
    owners = service.owners_of(db.session, [device.id])
    return jsonapi_response(document(device_resource(device, owner_id=owners.get(device.id)), meta=meta or None))


@bp.delete("/devices/<ident>")
def delete_device(ident: str):
    """Forget a device with its commands, inventory, attributes and memberships."""
    device = service.get_device(db.session, ident)
    service.delete_device(db.session, device)
    db.session.commit()
    return jsonapi_response(None, status=204)
