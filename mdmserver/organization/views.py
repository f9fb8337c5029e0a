from __future__ import annotations

from flask import Blueprint

from mdmserver.api.jsonapi import (
    document,
    jsonapi_response,
    load_attributes,
    parse_resource_body,
)
from mdmserver.db import db
from mdmserver.organization import service
from mdmserver.organization.schemas import OrganizationUpdateSchema, organization_resource

bp = Blueprint("organization", __name__, url_prefix="/api/v1")


@bp.get("/organization")
def get_organization():
    return jsonapi_response(document(organization_resource(service.get_organization(db.session))))


@bp.patch("/organization")
def update_organization():
    _, attributes = parse_resource_body(None, "organizations")
    changes = load_attributes(OrganizationUpdateSchema(), attributes, "organization")
    row = service.update_organization(db.session, changes)
    return jsonapi_response(document(organization_resource(row)))
