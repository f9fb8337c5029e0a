"""``/api/v1/profiles/<id>/assignments`` and ManageEngine's ``/api/v1/devices/<id>/profiles``."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response, request
from sqlalchemy import select

from mdmserver.api.auth import current_actor
from mdmserver.api.jsonapi import (
    document,
    is_id,
    jsonapi_response,
    list_document,
    load_body,
    paginate,
    parse_list_query,
    plain_response,
    refuse_query_params,
)
from mdmserver.api.transactions import writes
from mdmserver.assignments import service
from mdmserver.assignments.models import AssignmentStatus, DeviceProfileState
from mdmserver.assignments.schemas import (
    ProfileIdsSchema,
    TargetsSchema,
    assignment_resource,
    state_resource,
)
from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.errors import NotFound
from mdmserver.profiles.models import Profile
from mdmserver.profiles.service import get_profile
from mdmserver.selection import resolve
from mdmserver.selection.filters import one_of

bp = Blueprint("assignments", __name__, url_prefix="/api/v1")

STATUSES = tuple(s.value for s in AssignmentStatus)


def _profile(profile_id: str) -> Profile:
    if not is_id(profile_id):
        raise NotFound(f"no profile with id {profile_id!r}")
    return get_profile(db.session, int(profile_id))





@bp.get("/profiles/<profile_id>/assignments")
def list_assignments(profile_id: str):
    """The devices and groups a profile is assigned to."""
    refuse_query_params(request.args)
    profile = _profile(profile_id)
    rows = service.list_assignments(db.session, profile)
    return jsonapi_response(document([assignment_resource(r) for r in rows], meta={"total": len(rows)}))


def _change_targets(profile_id: str, change: Callable[..., dict[str, int]]) -> Response:
    """``service.assign`` or ``unassign`` of the body's devices and groups; commit; answer the counts."""
    profile = _profile(profile_id)
    body = load_body(TargetsSchema(), "targets")
    counts = change(db.session, profile, devices=body.get("devices"), groups=body.get("groups"),
                    actor=current_actor(), box=secret_box())
    db.session.commit()
    return plain_response({"profile_id": str(profile.id), **counts})


@bp.post("/profiles/<profile_id>/assignments")
def assign(profile_id: str):
    """Assign to ``{"devices": […], "groups": […]}``; InstallProfile is queued for every new target."""
    return _change_targets(profile_id, service.assign)


@bp.delete("/profiles/<profile_id>/assignments")
def unassign(profile_id: str):
    """Unassign devices and groups; RemoveProfile is queued where the profile is no longer wanted."""
    return _change_targets(profile_id, service.unassign)


@bp.post("/profiles/<profile_id>/assignments/reconcile")
def reconcile(profile_id: str):
    """Re-evaluate (smart) group membership and the profile's revision now."""
    profile = _profile(profile_id)
    counts = service.reconcile(db.session, profile, actor=current_actor(), box=secret_box())
    db.session.commit()
    return plain_response({"profile_id": str(profile.id), **counts})


@bp.post("/assignments/reconcile")
def reconcile_all():
    """Reconcile every assigned profile now."""
    counts = service.reconcile_all(db.session, actor=current_actor(), box=secret_box())
    db.session.commit()
    return plain_response(counts)


def _states(profile: Profile | None, device_id: int | None):
    service.refresh_states(db.session, [profile.id] if profile is not None else None)
    db.session.commit()  # the refreshed states are a cache of command results, not an admin change
    query = parse_list_query(request.args, filters={"status": one_of(DeviceProfileState.status, STATUSES)},
                             sorts={"device_id": DeviceProfileState.device_id,
                                    "profile_id": DeviceProfileState.profile_id,
                                    "updated_at": DeviceProfileState.updated_at},
                             default_sort=[DeviceProfileState.profile_id, DeviceProfileState.device_id])
    page = paginate(db.session, service.states_query(profile.id if profile else None, device_id), query)
    revisions = dict(db.session.execute(select(Profile.id, Profile.revision).where(
        Profile.id.in_({row.profile_id for row in page.items}))).all())
    return jsonapi_response(list_document(page, [state_resource(r, revisions.get(r.profile_id)) for r in page.items]))


@bp.get("/profiles/<profile_id>/assignments/status")
@writes  # refreshes the states from command results
def profile_states(profile_id: str):
    """Per-device state of a profile (scheduled, installed, failed, removal_scheduled, removed)."""
    return _states(_profile(profile_id), None)


@bp.get("/devices/<ident>/profiles")
@writes  # refreshes the states from command results
def device_profiles(ident: str):
    """The assigned profiles' states on this device (what the device reports is ``installed_profiles``)."""
    device = resolve.get_device(db.session, ident)
    return _states(None, device.id)


def _profile_ids() -> list[Profile]:
    return service.resolve_profiles(db.session, load_body(ProfileIdsSchema(), "profile ids")["profile_ids"])


def _change_device_profiles(ident: str, change: Callable[..., dict[str, int]]) -> Response:
    """Run ``service.assign`` or ``service.unassign`` of each profile in the body for this device, commit."""
    device = resolve.get_device(db.session, ident)
    box = secret_box()
    results = [{"profile_id": str(p.id), **change(db.session, p, devices=[device.id], actor=current_actor(), box=box)}
               for p in _profile_ids()]
    db.session.commit()
    return plain_response({"device_id": str(device.id), "profiles": results})


@bp.post("/devices/<ident>/profiles")
def device_assign(ident: str):
    """ManageEngine's "associate profiles to a device": assign each profile to this device."""
    return _change_device_profiles(ident, service.assign)


@bp.delete("/devices/<ident>/profiles")
def device_unassign(ident: str):
    """ManageEngine's disassociate profiles from a device ({"profile_ids": […]})."""
    return _change_device_profiles(ident, service.unassign)


