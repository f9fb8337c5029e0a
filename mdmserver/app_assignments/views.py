"""``/api/v1/apps/<id>/assignments``, ``/api/v1/apps/<id>/devices``, ``/api/v1/devices/<id>/apps``,
and the refresh actions that ask the devices for their apps."""

from __future__ import annotations

from flask import Blueprint, Response, request

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
from mdmserver.app_assignments import service
from mdmserver.app_assignments.models import AppInstallStatus, DeviceAppState
from mdmserver.app_assignments.schemas import (
    AssignSchema,
    RefreshSchema,
    assignment_resource,
    state_resource,
)
from mdmserver.apps import service as apps
from mdmserver.apps.models import App
from mdmserver.collaborators import public_url, secret_box
from mdmserver.db import db
from mdmserver.errors import NotFound
from mdmserver.selection import resolve
from mdmserver.selection.filters import one_of

bp = Blueprint("app_assignments", __name__, url_prefix="/api/v1")

STATUSES = tuple(s.value for s in AppInstallStatus)


def _app(app_id: str) -> App:
    if not is_id(app_id):
        raise NotFound(f"no app with id {app_id!r}")
    return apps.get_app(db.session, int(app_id))





@bp.get("/apps/<app_id>/assignments")
def list_assignments(app_id: str):
    """The devices and groups an app is assigned to, with their install options."""
    refuse_query_params(request.args)
    rows = service.list_assignments(db.session, _app(app_id))
    return jsonapi_response(document([assignment_resource(r) for r in rows], meta={"total": len(rows)}))


@bp.post("/apps/<app_id>/assignments")
def assign(app_id: str):
    """Assign to ``{"devices": […], "groups": […], "options": {…}}``; the install is queued for every
    new target of the app's platform."""
    app = _app(app_id)
    body = load_body(AssignSchema(), "assignment")
    counts = service.assign(db.session, app, devices=body.get("devices"), groups=body.get("groups"),
                            options=body.get("options"), actor=current_actor(), box=secret_box(),
                            public_url=public_url())
    db.session.commit()
    return plain_response({"app_id": str(app.id), **counts})


@bp.delete("/apps/<app_id>/assignments/<assignment_id>")
def unassign(app_id: str, assignment_id: str):
    """Delete one assignment; RemoveApplication is queued where the app is no longer wanted."""
    app = _app(app_id)
    if not is_id(assignment_id):
        raise NotFound(f"app {app.id} has no assignment {assignment_id!r}")
    assignment = service.get_assignment(db.session, app, int(assignment_id))
    counts = service.unassign(db.session, app, assignment, actor=current_actor(), box=secret_box(),
                              public_url=public_url())
    db.session.commit()
    return plain_response({"app_id": str(app.id), **counts})


def _states(app: App | None, device_id: int | None) -> Response:
    service.refresh_states(db.session, [app.id] if app is not None else None,
                           [device_id] if device_id is not None else None, box=secret_box())
    db.session.commit()  # the refreshed states are a cache of the devices' answers, not an admin change
    query = parse_list_query(request.args, filters={"status": one_of(DeviceAppState.status, STATUSES)},
                             sorts={"device_id": DeviceAppState.device_id, "app_id": DeviceAppState.app_id,
                                    "updated_at": DeviceAppState.updated_at},
                             default_sort=[DeviceAppState.app_id, DeviceAppState.device_id])
    page = paginate(db.session, service.states_query(app.id if app else None, device_id), query)
    facts = service.app_facts(db.session, (row.app_id for row in page.items))
    return jsonapi_response(list_document(page, [state_resource(r, facts.get(r.app_id)) for r in page.items]))


@bp.get("/apps/<app_id>/devices")
@writes  # refreshes the states from the devices' answers
def app_devices(app_id: str):
    """Each device's state for the app: scheduled, installing, installed (with its version), failed
    (with the device's reason), removal_scheduled, removed."""
    return _states(_app(app_id), None)


@bp.get("/devices/<ident>/apps")
@writes  # refreshes the states from the devices' answers
def device_apps(ident: str):
    """The apps assigned to this device with their state, installed version and drift (the catalogue's
    version differs from the installed one). Everything the device reports is ``installed_applications``."""
    device = resolve.get_device(db.session, ident)
    return _states(None, device.id)


@bp.post("/apps/<app_id>/refresh")
def refresh(app_id: str):
    """Ask the devices that have the app (or ``{"devices": […]}`` of them) for their managed and installed
    apps; their answers update the states."""
    app = _app(app_id)
    body = load_body(RefreshSchema(), "refresh", optional=True)
    device_ids = None
    if body.get("devices") is not None:
        device_ids, _ = resolve.resolve_targets(db.session, body["devices"], None)
    counts = service.request_refresh(db.session, app, device_ids=device_ids, actor=current_actor(), box=secret_box())
    db.session.commit()
    return plain_response({"app_id": str(app.id), **counts}, status=202)


@bp.post("/apps/<app_id>/update")
def update(app_id: str):
    """Send the install again to the assigned devices (or ``{"devices": […]}`` of them) whose reported
    version is not the catalogue's (``drift``) or whose last install failed; devices already at the
    catalogue version, or with an install under way, get nothing. InstallApplication of a managed app
    updates it."""
    app = _app(app_id)
    body = load_body(RefreshSchema(), "update", optional=True)
    device_ids = None
    if body.get("devices") is not None:
        device_ids, _ = resolve.resolve_targets(db.session, body["devices"], None)
    counts = service.reconcile(db.session, app, actor=current_actor(), box=secret_box(), public_url=public_url(),
                               device_ids=device_ids, update_drifted=True)
    db.session.commit()
    return plain_response({"app_id": str(app.id), **counts}, status=202)


@bp.post("/devices/<ident>/apps/refresh")
def refresh_device(ident: str):
    """Ask one device for its managed and installed apps."""
    device = resolve.get_device(db.session, ident)
    counts = service.request_refresh(db.session, None, device_ids=[device.id], actor=current_actor(),
                                     box=secret_box())
    db.session.commit()
    return plain_response({"device_id": str(device.id), **counts}, status=202)
