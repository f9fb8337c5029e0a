"""``/api/v1/device_groups``: nested static and smart groups, their members, and a device's groups."""

from __future__ import annotations

from flask import Blueprint, request

from mdmserver import workflows
from mdmserver.api.auth import current_actor
from mdmserver.api.jsonapi import (
    document,
    is_id,
    jsonapi_response,
    list_document,
    load_attributes,
    load_body,
    paginate,
    parse_list_query,
    parse_resource_body,
    refuse_query_params,
    request_json,
)
from mdmserver.collaborators import public_url, secret_box
from mdmserver.db import db
from mdmserver.errors import UnprocessableEntity
from mdmserver.groups import service
from mdmserver.groups.schemas import (
    GroupCreateSchema,
    GroupMembersSchema,
    GroupRelationshipsSchema,
    GroupUpdateSchema,
    group_resource,
    parent_from_relationships,
)
from mdmserver.records.groups import DeviceGroup, GroupKind
from mdmserver.selection import resolve
from mdmserver.selection.filters import contains

bp = Blueprint("groups", __name__, url_prefix="/api/v1")

TYPE = "device_groups"


def _parent_filter(value: str):
    value = value.strip()
    if value == "null":
        return DeviceGroup.parent_id.is_(None)
    if not is_id(value):
        raise ValueError("expected a group id or null")
    return DeviceGroup.parent_id == int(value)


def _kind_filter(value: str):
    if value not in {k.value for k in GroupKind}:
        raise ValueError("expected static or smart")
    return DeviceGroup.kind == value


def _with_parent(values: dict) -> dict:
    """``data.relationships.parent`` (the relationship the resource shows) sets ``parent_id`` too."""
    relationships = request_json()["data"].get("relationships")
    if relationships is None:
        return values
    if not isinstance(relationships, dict):
        raise UnprocessableEntity("relationships must be an object", pointer="/data/relationships")
    loaded = load_attributes(GroupRelationshipsSchema(), relationships, "relationships", base="/data/relationships")
    return parent_from_relationships(loaded, values)


@bp.get("/device_groups")
def list_groups():
    """Device groups, filterable by name, kind and parent (filter[parent]=null for top-level groups)."""
    query = parse_list_query(
        request.args,
        filters={"name": lambda v: contains(DeviceGroup.name, v), "kind": _kind_filter, "parent": _parent_filter},
        sorts={"id": DeviceGroup.id, "name": DeviceGroup.name, "created_at": DeviceGroup.created_at},
        default_sort=[DeviceGroup.id.asc()],
    )
    page = paginate(db.session, service.groups_query(), query)
    return jsonapi_response(list_document(page, [group_resource(g) for g in page.items]))


@bp.post("/device_groups")
def create_group():
    """Create a static or smart group (smart: a device filter), optionally inside a parent group."""
    _, attributes = parse_resource_body(None, TYPE)
    values = _with_parent(load_attributes(GroupCreateSchema(), attributes, "device group"))
    group = service.create_group(db.session, values)
    workflows.group_membership_changed(db.session, actor=current_actor(), box=secret_box(), public_url=public_url())
    db.session.commit()
    return jsonapi_response(document(group_resource(group)), status=201,
                            headers={"Location": f"/api/v1/device_groups/{group.id}"})


@bp.get("/device_groups/<group_id>")
def get_group(group_id: str):
    """One device group."""
    return jsonapi_response(document(group_resource(service.get_group(db.session, group_id))))


@bp.patch("/device_groups/<group_id>")
def update_group(group_id: str):
    """Rename, describe, move (parent_id) or change the filter of a group."""
    group = service.get_group(db.session, group_id)
    _, attributes = parse_resource_body(None, TYPE, require_id=group.id)
    values = _with_parent(load_attributes(GroupUpdateSchema(), attributes, "device group"))
    group = service.update_group(db.session, group, values)
    workflows.group_membership_changed(db.session, actor=current_actor(), box=secret_box(), public_url=public_url())
    db.session.commit()
    return jsonapi_response(document(group_resource(group)))


@bp.delete("/device_groups/<group_id>")
def delete_group(group_id: str):
    """Delete a group without subgroups that no smart group filters on."""
    service.delete_group(db.session, service.get_group(db.session, group_id))
    workflows.group_membership_changed(db.session, actor=current_actor(), box=secret_box(), public_url=public_url())
    db.session.commit()
    return jsonapi_response(None, status=204)


def _linkage() -> list[int]:
    linkage = load_body(GroupMembersSchema(), "resource linkage")
    names = [(index, str(item["id"])) for index, item in enumerate(linkage["data"])]
    resolved = resolve.resolve_devices(db.session, [name for _, name in names], pointer="/data")
    if resolved.missing:
        missing = set(resolved.missing)
        raise UnprocessableEntity("unknown devices; nothing was changed", errors=[
            {"detail": f"no device {name!r}", "pointer": f"/data/{index}/id"} for index, name in names
            if name in missing
        ])
    return resolved.ids


@bp.post("/device_groups/<group_id>/relationships/devices")
def add_members(group_id: str):
    """Add static members (resource linkage of devices by id, UDID or serial number)."""
    group = service.get_group(db.session, group_id)
    added = service.add_members(db.session, group, _linkage())
    workflows.group_membership_changed(db.session, actor=current_actor(), box=secret_box(), public_url=public_url())
    db.session.commit()
    return jsonapi_response(document(None, meta={"added": added}))


@bp.delete("/device_groups/<group_id>/relationships/devices")
def remove_members(group_id: str):
    """Remove static members."""
    group = service.get_group(db.session, group_id)
    removed = service.remove_members(db.session, group, _linkage())
    workflows.group_membership_changed(db.session, actor=current_actor(), box=secret_box(), public_url=public_url())
    db.session.commit()
    return jsonapi_response(document(None, meta={"removed": removed}))


@bp.get("/devices/<ident>/groups")
def device_groups(ident: str):
    """Every group the device belongs to (static, smart, and their parent groups)."""
    refuse_query_params(request.args)
    device = resolve.get_device(db.session, ident)
    groups = service.groups_of_device(db.session, device)
    return jsonapi_response(document([group_resource(g) for g in groups], meta={"total": len(groups)}))
