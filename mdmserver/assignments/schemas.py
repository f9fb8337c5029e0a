"""Assignment and per-device state resources."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from mdmserver.api.apidoc import ApiDoc, Body, IdField, NameField, Reply, listing
from mdmserver.api.jsonapi import resource
from mdmserver.assignments.models import DeviceProfileState, ProfileAssignment
from mdmserver.db import isoformat


def assignment_resource(row: ProfileAssignment) -> dict[str, Any]:
    target = ({"type": "devices", "id": str(row.device_id)} if row.device_id is not None
              else {"type": "device_groups", "id": str(row.group_id)})
    return resource(
        "profile_assignments", row.id,
        {"profile_id": row.profile_id, "target_type": "device" if row.device_id is not None else "group",
         "device_id": row.device_id, "group_id": row.group_id, "created_by": row.created_by,
         "created_at": isoformat(row.created_at)},
        relationships={"profile": {"data": {"type": "profiles", "id": str(row.profile_id)}},
                       "target": {"data": target}},
    )


def state_resource(row: DeviceProfileState, current_revision: int | None = None) -> dict[str, Any]:
    return resource(
        "device_profile_states", f"{row.device_id}-{row.profile_id}",
        {"device_id": row.device_id, "profile_id": row.profile_id, "status": row.status,
         "revision": row.revision, "current_revision": current_revision, "command_uuid": row.command_uuid,
         "detail": row.detail, "updated_at": isoformat(row.updated_at)},
        relationships={"device": {"data": {"type": "devices", "id": str(row.device_id)}},
                       "profile": {"data": {"type": "profiles", "id": str(row.profile_id)}}},
    )

class TargetsSchema(Schema):
    """``{"devices": [id | UDID | serial…], "groups": [group id…]}``: whom a profile is (un)assigned to.
    More devices than ``selection.resolve.MAX_NAMED_DEVICES`` is a 422 at ``/devices``."""

    class Meta:
        unknown = RAISE

    devices = fields.List(NameField(), error_messages={
        "invalid": "devices must be an array of ids, UDIDs or serial numbers"})
    groups = fields.List(IdField(), error_messages={"invalid": "groups must be an array of group ids"})

    @validates_schema
    def _names_targets(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data.get("devices") is None and data.get("groups") is None:
            raise ValidationError("give devices and/or groups")


class ProfileIdsSchema(Schema):
    """``{"profile_ids": [id…]}``: the profiles to (un)assign to one device."""

    class Meta:
        unknown = RAISE

    profile_ids = fields.List(IdField(), required=True, validate=validate.Length(
        min=1, error="profile_ids must be a non-empty array of profile ids"))


_STATES = listing("device_profile_states", filters=("status",), sorts=("device_id", "profile_id", "updated_at"))

OPENAPI: dict[str, ApiDoc] = {
    "assignments.list_assignments": ApiDoc(type="profile_assignments", reply=Reply.COLLECTION),
    "assignments.assign": ApiDoc(body=TargetsSchema, body_kind=Body.JSON, reply=Reply.JSON),
    "assignments.unassign": ApiDoc(body=TargetsSchema, body_kind=Body.JSON, reply=Reply.JSON),
    "assignments.reconcile": ApiDoc(body_kind=Body.NONE, reply=Reply.JSON),
    "assignments.reconcile_all": ApiDoc(body_kind=Body.NONE, reply=Reply.JSON),
    "assignments.profile_states": _STATES,
    "assignments.device_profiles": _STATES,
    "assignments.device_assign": ApiDoc(body=ProfileIdsSchema, body_kind=Body.JSON, reply=Reply.JSON),
    "assignments.device_unassign": ApiDoc(body=ProfileIdsSchema, body_kind=Body.JSON, reply=Reply.JSON),
}
