from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates

from mdmserver.api.apidoc import ApiDoc
from mdmserver.api.jsonapi import resource
from mdmserver.db import isoformat
from mdmserver.organization.models import Organization

_REVERSE_DNS = re.compile(r"^[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)+$")


class OrganizationUpdateSchema(Schema):
    """Fields an administrator may change with PATCH."""

    name = fields.String(validate=validate.Length(min=1, max=255))
    email = fields.Email(allow_none=True, validate=validate.Length(max=255))
    phone = fields.String(allow_none=True, validate=validate.Length(max=64))
    address = fields.String(allow_none=True, validate=validate.Length(max=2000))
    payload_prefix = fields.String(validate=validate.Length(min=3, max=255))
    x509_ou = fields.String(allow_none=True, validate=validate.Length(max=64))
    x509_o = fields.String(allow_none=True, validate=validate.Length(max=64))
    x509_st = fields.String(allow_none=True, validate=validate.Length(max=128))
    x509_c = fields.String(allow_none=True, validate=validate.Length(equal=2))

    @validates("payload_prefix")
    def _reverse_dns(self, value: str, **_: Any) -> None:
        if not _REVERSE_DNS.match(value):
            raise ValidationError("must be a reverse-DNS identifier such as com.example.mdm")


def organization_resource(row: Organization) -> dict[str, Any]:
    return resource(
        "organizations",
        row.id,
        {
            "name": row.name,
            "email": row.email,
            "phone": row.phone,
            "address": row.address,
            "payload_prefix": row.payload_prefix,
            "x509_ou": row.x509_ou,
            "x509_o": row.x509_o,
            "x509_st": row.x509_st,
            "x509_c": row.x509_c,
            "created_at": isoformat(row.created_at),
            "updated_at": isoformat(row.updated_at),
        },
        links={"self": "/api/v1/organization"},
    )

OPENAPI: dict[str, ApiDoc] = {
    "organization.get_organization": ApiDoc(type="organizations"),
    "organization.update_organization": ApiDoc(body=OrganizationUpdateSchema, type="organizations"),
}
