"""User (device owner) resources and bodies."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, post_load, validate

from mdmserver.api.apidoc import ApiDoc, Body, IdField, LinkageSchema, Reply, listing
from mdmserver.api.jsonapi import resource
from mdmserver.db import isoformat
from mdmserver.records.users import User


class UserCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    email = fields.Email(required=True, validate=validate.Length(max=255))
    uid = fields.String(allow_none=True, validate=validate.Length(min=1, max=255))

    @post_load
    def _normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if "email" in data:
            data["email"] = data["email"].strip().lower()
        return data


class UserUpdateSchema(UserCreateSchema):
    name = fields.String(validate=validate.Length(min=1, max=255))
    email = fields.Email(validate=validate.Length(max=255))


def user_resource(user: User) -> dict[str, Any]:
    attributes = {"name": user.name, "email": user.email, "uid": user.uid,
                  "created_at": isoformat(user.created_at), "updated_at": isoformat(user.updated_at)}
    return resource("users", user.id, attributes,
                    relationships={"devices": {"links": {"related": f"/api/v1/users/{user.id}/devices"}}},
                    links={"self": f"/api/v1/users/{user.id}"})

class UserLinkageSchema(LinkageSchema):
    """A user in a resource linkage: ``{"type": "users", "id": …}``."""

    type = fields.String(required=True, validate=validate.Equal("users", error="type must be 'users'"),
                         metadata={"enum": ["users"]})
    id = IdField(required=True)


class OwnerSchema(Schema):
    """The body of setting a device's owner: ``{"data": {"type": "users", "id": …}}`` or ``{"data": null}``."""

    class Meta:
        unknown = RAISE
        # OpenAPI 3.0 cannot mark a $ref nullable (apispec's anyOf would accept any object)
        openapi = {"properties": {"data": {"oneOf": [{"$ref": "#/components/schemas/UserLinkage"},
                                                     {"type": "object", "nullable": True, "enum": [None]}]}}}

    data = fields.Nested(UserLinkageSchema, required=True, allow_none=True)


OPENAPI: dict[str, ApiDoc] = {
    "users.list_users": listing("users", filters=("email", "name", "uid"), sorts=("id", "name", "email", "created_at")),
    "users.create_user": ApiDoc(body=UserCreateSchema, type="users", status=201, errors=(409,)),
    "users.get_user": ApiDoc(type="users"),
    "users.update_user": ApiDoc(body=UserUpdateSchema, type="users"),
    "users.delete_user": ApiDoc(type="users", reply=Reply.EMPTY),
    "users.get_owner": ApiDoc(type="users"),
    "users.set_owner": ApiDoc(body=OwnerSchema, body_kind=Body.JSON, type="users"),
}
