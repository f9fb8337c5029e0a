"""``/api/v1/users`` and ``/api/v1/devices/<id>/owner``."""

from __future__ import annotations

from flask import Blueprint, request
from sqlalchemy import func, select

from mdmserver.api.jsonapi import (
    document,
    jsonapi_response,
    list_document,
    load_attributes,
    load_body,
    paginate,
    parse_list_query,
    parse_resource_body,
)
from mdmserver.db import db
from mdmserver.errors import UnprocessableEntity
from mdmserver.records.users import User
from mdmserver.selection import resolve
from mdmserver.selection.filters import contains, split_list
from mdmserver.users import service
from mdmserver.users.schemas import OwnerSchema, UserCreateSchema, UserUpdateSchema, user_resource

bp = Blueprint("users", __name__, url_prefix="/api/v1")

TYPE = "users"


@bp.get("/users")
def list_users():
    """Users (device owners), filterable by email, name and uid."""
    query = parse_list_query(
        request.args,
        filters={
            "email": lambda v: func.lower(User.email).in_([e.lower() for e in split_list(v)]),
            "name": lambda v: contains(User.name, v),
            "uid": lambda v: User.uid.in_(split_list(v)),
        },
        sorts={"id": User.id, "name": User.name, "email": User.email, "created_at": User.created_at},
        default_sort=[User.id.asc()],
    )
    page = paginate(db.session, select(User), query)
    return jsonapi_response(list_document(page, [user_resource(u) for u in page.items]))


@bp.post("/users")
def create_user():
    """Create a user (name, email, uid)."""
    _, attributes = parse_resource_body(None, TYPE)
    user = service.create_user(db.session, load_attributes(UserCreateSchema(), attributes, "user"))
    db.session.commit()
    return jsonapi_response(document(user_resource(user)), status=201, headers={"Location": f"/api/v1/users/{user.id}"})


@bp.get("/users/<user_id>")
def get_user(user_id: str):
    """One user."""
    return jsonapi_response(document(user_resource(service.get_user(db.session, user_id))))


@bp.patch("/users/<user_id>")
def update_user(user_id: str):
    """Change a user's name, email or uid."""
    user = service.get_user(db.session, user_id)
    _, attributes = parse_resource_body(None, TYPE, require_id=user.id)
    user = service.update_user(db.session, user, load_attributes(UserUpdateSchema(), attributes, "user"))
    db.session.commit()
    return jsonapi_response(document(user_resource(user)))


@bp.delete("/users/<user_id>")
def delete_user(user_id: str):
    """Delete a user; their devices are left without an owner."""
    service.delete_user(db.session, service.get_user(db.session, user_id))
    db.session.commit()
    return jsonapi_response(None, status=204)


@bp.get("/devices/<ident>/owner")
def get_owner(ident: str):
    """The device's owner (data is null when it has none)."""
    device = resolve.get_device(db.session, ident)
    owner = service.owner_of(db.session, device)
    return jsonapi_response(document(user_resource(owner) if owner else None))


@bp.put("/devices/<ident>/owner")
def set_owner(ident: str):
    """Assign the device to a user: ``{"data": {"type": "users", "id": "3"}}``, or ``{"data": null}``."""
    device = resolve.get_device(db.session, ident)
    linkage = load_body(OwnerSchema(), "owner")["data"]
    user = None
    if linkage is not None:
        user = db.session.get(User, linkage["id"])
        if user is None:
            raise UnprocessableEntity(f"no user {str(linkage['id'])!r}", pointer="/data/id")
    service.set_owner(db.session, device, user)
    db.session.commit()
    return jsonapi_response(document(user_resource(user) if user else None))
