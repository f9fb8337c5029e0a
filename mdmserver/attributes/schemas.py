"""Validation of custom attribute documents: ``{"name": "value", …}`` with string values."""

from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from mdmserver.api.apidoc import ApiDoc, CommaList, NameField, Reply
from mdmserver.api.jsonapi import resource
from mdmserver.attributes.models import ATTRIBUTE_NAME

MAX_ATTRIBUTES = 200
MAX_VALUE_LENGTH = 512


class AttributeValuesSchema(Schema):
    """A device's custom attributes, the mapping itself: names like ``dept`` or ``site.floor``, values
    strings of at most 512 characters. Every fault is reported, with its pointer."""

    class Meta:
        unknown = INCLUDE
        openapi = {"additionalProperties": {"type": "string", "maxLength": MAX_VALUE_LENGTH},
                   "maxProperties": MAX_ATTRIBUTES}

    allow_null = False

    @validates_schema(pass_original=True)
    def _values(self, _data: dict[str, Any], values: dict[str, Any], **_kwargs: Any) -> None:
        faults: dict[str, list[str]] = {}
        if len(values) > MAX_ATTRIBUTES:
            faults["_schema"] = [f"at most {MAX_ATTRIBUTES} custom attributes per device"]
        for name, value in values.items():
            if not ATTRIBUTE_NAME.match(name):
                faults[name] = [_NAME_RULE]
            elif value is None:
                if not self.allow_null:
                    faults[name] = ["a value is required (null deletes only in a PATCH)"]
            elif not isinstance(value, str):
                faults[name] = ["values are strings"]
            elif len(value) > MAX_VALUE_LENGTH:
                faults[name] = [f"values are at most {MAX_VALUE_LENGTH} characters"]
        if faults:
            raise ValidationError(faults)


class AttributeChangesSchema(AttributeValuesSchema):
    """Custom attributes to merge: as :class:`AttributeValuesSchema`, and ``null`` deletes one."""

    class Meta:
        unknown = INCLUDE
        openapi = {"additionalProperties": {"type": "string", "maxLength": MAX_VALUE_LENGTH, "nullable": True},
                   "maxProperties": MAX_ATTRIBUTES}

    allow_null = True


_NAME_RULE = "names are 1 to 64 letters, digits, '_', '-' or '.', not starting with '.'"


class AttributeNamesQuerySchema(Schema):
    """``?names=a,b``: the custom attributes to delete (all of the device's when absent)."""

    class Meta:
        unknown = RAISE

    names = CommaList(fields.String(validate=validate.Regexp(ATTRIBUTE_NAME, error=_NAME_RULE)),
                      metadata={"description": "comma-separated attribute names (all when absent)"})


class BulkDeleteQuerySchema(Schema):
    """``?names=a,b&devices=…``: the attributes to delete, from the devices named (every device when
    absent). More devices than ``selection.resolve.MAX_NAMED_DEVICES`` is a 422."""

    class Meta:
        unknown = RAISE

    names = CommaList(fields.String(validate=validate.Regexp(ATTRIBUTE_NAME, error=_NAME_RULE)), required=True,
                      metadata={"description": "comma-separated attribute names to delete (required)"})
    devices = CommaList(NameField(), metadata={
        "description": "comma-separated device ids, UDIDs or serial numbers (all devices when absent)"})


def attributes_resource(device_id: int, values: dict[str, str]) -> dict[str, Any]:
    return resource("custom_attributes", device_id, dict(sorted(values.items())),
                    relationships={"device": {"data": {"type": "devices", "id": str(device_id)}}},
                    links={"self": f"/api/v1/devices/{device_id}/custom_attributes"})

OPENAPI: dict[str, ApiDoc] = {
    "attributes.get_attributes": ApiDoc(type="custom_attributes"),
    "attributes.replace_attributes": ApiDoc(body=AttributeValuesSchema, type="custom_attributes"),
    "attributes.merge_attributes": ApiDoc(body=AttributeChangesSchema, type="custom_attributes"),
    "attributes.delete_attributes": ApiDoc(type="custom_attributes", query=AttributeNamesQuerySchema),
    "attributes.list_attribute_names": ApiDoc(type="custom_attribute_names", reply=Reply.COLLECTION),
    "attributes.bulk_delete": ApiDoc(reply=Reply.META, query=BulkDeleteQuerySchema),
}
