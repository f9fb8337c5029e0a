"""Device group resources and the create/update schemas."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from mdmserver.api.jsonapi import resource
from mdmserver.db import isoformat
from mdmserver.groups.models import DeviceGroup, GroupKind


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
