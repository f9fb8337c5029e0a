"""Device group resources and the create/update schemas."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from mdmserver.api.apidoc import ApiDoc, Body, LinkageSchema, Reply, listing
from mdmserver.api.jsonapi import resource
from mdmserver.db import isoformat
from mdmserver.errors import UnprocessableEntity
from mdmserver.records.groups import DeviceGroup, GroupKind


class GroupCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    description = fields.String(allow_none=True, validate=validate.Length(max=10000))
    kind = fields.String(load_default=GroupKind.STATIC.value, validate=validate.OneOf([k.value for k in GroupKind]))
    parent_id = fields.Integer(allow_none=True, strict=True)
    filter = fields.Dict(keys=fields.String(), values=fields.Raw(), allow_none=True)


class GroupUpdateSchema(GroupCreateSchema):
    name = fields.String(validate=validate.Length(min=1, max=255))
    kind = fields.String(validate=validate.OneOf([k.value for k in GroupKind]))


class _ParentLinkageSchema(Schema):
    """``{"type": "device_groups", "id": "<group id>"}``: the parent named by a relationship."""

    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.Equal("device_groups", error="type must be 'device_groups'"))
    id = fields.String(required=True, validate=validate.Regexp(r"^[0-9]{1,18}$", error="id must be a group id"))


class _ParentRelationshipSchema(Schema):
    class Meta:
        unknown = RAISE

    data = fields.Nested(_ParentLinkageSchema, required=True, allow_none=True)


class GroupRelationshipsSchema(Schema):
    """``data.relationships`` of a group body: only ``parent`` (``{"data": null}`` makes a top-level
    group); any other relationship is refused rather than ignored (members have their own route)."""

    class Meta:
        unknown = RAISE

    parent = fields.Nested(_ParentRelationshipSchema)


def parent_from_relationships(loaded: dict[str, Any], attributes: dict[str, Any]) -> dict[str, Any]:
    """The attributes with ``parent_id`` taken from a loaded ``relationships.parent``; both given and
    different is a 422 (never a silent choice of one)."""
    if "parent" not in loaded:
        return attributes
    linkage = loaded["parent"]["data"]
    parent_id = None if linkage is None else int(linkage["id"])
    if "parent_id" in attributes and attributes["parent_id"] != parent_id:
        raise UnprocessableEntity("parent_id and relationships.parent name different groups",
                                  pointer="/data/relationships/parent")
    return {**attributes, "parent_id": parent_id}


def group_resource(group: DeviceGroup) -> dict[str, Any]:
    return resource(
        "device_groups",
        group.id,
        {
            "name": group.name,
            "description": group.description,
            "kind": group.kind,
            "parent_id": group.parent_id,
            "filter": group.filter,
            "created_at": isoformat(group.created_at),
            "updated_at": isoformat(group.updated_at),
        },
        relationships={
            "parent": {"data": {"type": "device_groups", "id": str(group.parent_id)}
                       if group.parent_id is not None else None},
            "devices": {"links": {"related": f"/api/v1/device_groups/{group.id}/devices",
                                  "self": f"/api/v1/device_groups/{group.id}/relationships/devices"}},
        },
        links={"self": f"/api/v1/device_groups/{group.id}"},
    )

class DeviceLinkageSchema(LinkageSchema):
    """A device in a resource linkage: ``{"type": "devices", "id": <id, UDID or serial number>}``."""

    type = fields.String(required=True, validate=validate.Equal("devices", error="type must be 'devices'"),
                         metadata={"enum": ["devices"]})


class GroupMembersSchema(Schema):
    """The body of adding or removing static members: a resource linkage of devices (id, UDID or serial
    number in ``id``). More devices than ``selection.resolve.MAX_NAMED_DEVICES`` is a 422 at ``/data``."""

    class Meta:
        unknown = RAISE

    data = fields.List(fields.Nested(DeviceLinkageSchema), required=True,
                       validate=validate.Length(min=1, error="data must be a non-empty array of device identifiers"))


OPENAPI: dict[str, ApiDoc] = {
    "groups.list_groups": listing("device_groups", filters=("name", "kind", "parent"),
                                  sorts=("id", "name", "created_at")),
    "groups.create_group": ApiDoc(body=GroupCreateSchema, type="device_groups", status=201),
    "groups.get_group": ApiDoc(type="device_groups"),
    "groups.update_group": ApiDoc(body=GroupUpdateSchema, type="device_groups"),
    "groups.delete_group": ApiDoc(type="device_groups", reply=Reply.EMPTY, errors=(409,)),
    "groups.add_members": ApiDoc(body=GroupMembersSchema, body_kind=Body.JSON, reply=Reply.META),
    "groups.remove_members": ApiDoc(body=GroupMembersSchema, body_kind=Body.JSON, reply=Reply.META),
    "groups.device_groups": ApiDoc(type="device_groups", reply=Reply.COLLECTION),
}
