"""``/api/v1/blueprints``: scoped bundles of profiles, apps and an OS-update target, and their state per
device (``/api/v1/blueprints/<id>/devices``, ``/api/v1/devices/<id>/blueprints``)."""

from __future__ import annotations

from flask import Blueprint as FlaskBlueprint
from flask import request

from mdmserver.api.auth import current_actor
from mdmserver.api.jsonapi import (
    document,
    is_id,
    jsonapi_response,
    list_document,
    load_attributes,
    paginate,
    parse_bool,
    parse_list_query,
    parse_resource_body,
    plain_response,
    refuse_query_params,
)
from mdmserver.api.transactions import writes
from mdmserver.blueprints import service
from mdmserver.blueprints.schemas import (
    BlueprintSchema,
    BlueprintUpdateSchema,
    blueprint_resource,
    device_state_resource,
)
from mdmserver.collaborators import public_url, secret_box
from mdmserver.db import db
from mdmserver.errors import NotFound
from mdmserver.records.blueprints import Blueprint, BlueprintMember, MemberStatus
from mdmserver.selection import resolve
from mdmserver.selection.filters import contains, one_of

bp = FlaskBlueprint("blueprints", __name__, url_prefix="/api/v1")

TYPE = "blueprints"
MEMBERSHIPS = tuple(s.value for s in MemberStatus)


def _with() -> service.Collaborators:
    return service.Collaborators(actor=current_actor(), box=secret_box(), public_url=public_url())


def _blueprint(blueprint_id: str) -> Blueprint:
    if not is_id(blueprint_id):
        raise NotFound(f"no blueprint with id {blueprint_id!r}")
    return service.get_blueprint(db.session, int(blueprint_id))


def _resource(blueprint: Blueprint) -> dict:
    return blueprint_resource(blueprint, service.contents(db.session, [blueprint.id])[blueprint.id])


@bp.get("/blueprints")
def list_blueprints():
    """Blueprints, filterable by name (substring) and enabled."""
    query = parse_list_query(
        request.args,
        filters={"name": lambda v: contains(Blueprint.name, v), "enabled": lambda v: Blueprint.enabled == parse_bool(v)},
        sorts={"id": Blueprint.id, "name": Blueprint.name, "apply_order": Blueprint.apply_order},
        default_sort=[Blueprint.apply_order, Blueprint.id],
    )
    page = paginate(db.session, service.blueprints_query(), query)
    items = service.contents(db.session, [b.id for b in page.items])
    return jsonapi_response(list_document(page, [blueprint_resource(b, items[b.id]) for b in page.items]))


@bp.post("/blueprints")
def create_blueprint():
    """Create a blueprint; what it says is queued at once where it applies (unless its start_on is to come)."""
    _, attributes = parse_resource_body(None, TYPE)
    values = load_attributes(BlueprintSchema(), attributes, "blueprint")
    blueprint, counts = service.create_blueprint(db.session, values, with_=_with())
    db.session.commit()
    doc = document(_resource(blueprint), meta={"reconcile": counts})
    return jsonapi_response(doc, status=201, headers={"Location": f"/api/v1/blueprints/{blueprint.id}"})


@bp.get("/blueprints/<blueprint_id>")
def get_blueprint(blueprint_id: str):
    """One blueprint."""
    refuse_query_params(request.args)
    return jsonapi_response(document(_resource(_blueprint(blueprint_id))))


@bp.patch("/blueprints/<blueprint_id>")
def update_blueprint(blueprint_id: str):
    """Change a blueprint (lists given replace the old ones whole); the devices follow at once."""
    blueprint = _blueprint(blueprint_id)
    _, attributes = parse_resource_body(None, TYPE, require_id=blueprint.id)
    values = load_attributes(BlueprintUpdateSchema(), attributes, "blueprint")
    blueprint, counts = service.update_blueprint(db.session, blueprint, values, with_=_with())
    db.session.commit()
    return jsonapi_response(document(_resource(blueprint), meta={"reconcile": counts}))


@bp.delete("/blueprints/<blueprint_id>")
def delete_blueprint(blueprint_id: str):
    """Delete a blueprint: its items are removed where nothing else (an assignment, another blueprint)
    wants them."""
    counts = service.delete_blueprint(db.session, _blueprint(blueprint_id), with_=_with())
    db.session.commit()
    return plain_response({"blueprint_id": blueprint_id, **counts})


@bp.post("/blueprints/<blueprint_id>/reconcile")
def reconcile_blueprint(blueprint_id: str):
    """Re-evaluate the blueprint's scope (smart groups), its start and its OS target now."""
    blueprint = _blueprint(blueprint_id)
    counts = service.reconcile(db.session, blueprint, with_=_with())
    db.session.commit()
    return plain_response({"blueprint_id": str(blueprint.id), **counts})


def _states(blueprint: Blueprint | None, device_id: int | None):
    query = parse_list_query(
        request.args, filters={"membership": one_of(BlueprintMember.status, MEMBERSHIPS)},
        sorts={"device_id": BlueprintMember.device_id, "blueprint_id": BlueprintMember.blueprint_id},
        default_sort=[BlueprintMember.blueprint_id, BlueprintMember.device_id])
    stmt = service.members_query(blueprint.id if blueprint else None, device_id)
    page = paginate(db.session, stmt, query)
    if page.items:
        service.refresh_states(db.session, sorted({m.blueprint_id for m in page.items}),
                               sorted({m.device_id for m in page.items}), secret_box())
    states = service.device_states(db.session, page.items)
    db.session.commit()  # the refreshed states are a cache of command results, not an admin change
    return jsonapi_response(list_document(page, [device_state_resource(s) for s in states]))


@bp.get("/blueprints/<blueprint_id>/devices")
@writes  # refreshes the states from command results
def blueprint_devices(blueprint_id: str):
    """The devices a blueprint reached, each with its membership and every item's state (pending,
    queued, installed, failed with the device's error, removal_queued, removed)."""
    return _states(_blueprint(blueprint_id), None)


@bp.get("/devices/<ident>/blueprints")
@writes  # refreshes the states from command results
def device_blueprints(ident: str):
    """The blueprints that reached this device, with every item's state."""
    return _states(None, resolve.get_device(db.session, ident).id)
