"""Assignment and per-device state resources."""

from __future__ import annotations

from typing import Any

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
