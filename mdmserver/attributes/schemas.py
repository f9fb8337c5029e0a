"""Validation of custom attribute documents: ``{"name": "value" | ["value", …], …}``."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import (
    INCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from mdmserver.api.apidoc import ApiDoc, CommaList, NameField, Reply
from mdmserver.api.jsonapi import resource
from mdmserver.records.attributes import ATTRIBUTE_NAME, MAX_VALUES

MAX_ATTRIBUTES = 200
MAX_VALUE_LENGTH = 512
#: Ivanti's mark of a numerical attribute: ``floor_#`` names the attribute ``floor`` and its values
#: must be numbers.
NUMERIC_SUFFIX = "_#"
_NUMBER = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")

_VALUE_SCHEMA = {"oneOf": [{"type": "string", "maxLength": MAX_VALUE_LENGTH},
                           {"type": "array", "minItems": 1, "maxItems": MAX_VALUES,
                            "items": {"type": "string", "maxLength": MAX_VALUE_LENGTH}}]}


class AttributeValuesSchema(Schema):
    """A device's custom attributes, the mapping itself: names like ``dept`` or ``site.floor``; each
    value a string or a list of strings (Ivanti's ``{"cityid": ["SF"]}``; at most 50, each at most 512
    characters). A name ending in ``_#`` is a numerical attribute (the suffix is not part of the name;
    its values must be numbers). Loads to ``{name: [values]}``; every fault is reported, with its
    pointer."""

    class Meta:
        unknown = INCLUDE
        openapi = {"additionalProperties": _VALUE_SCHEMA, "maxProperties": MAX_ATTRIBUTES}

    allow_null = False

    @validates_schema(pass_original=True)
    def _values(self, _data: dict[str, Any], values: dict[str, Any], **_kwargs: Any) -> None:
        faults: dict[str, list[str]] = {}
        if len(values) > MAX_ATTRIBUTES:
            faults["_schema"] = [f"at most {MAX_ATTRIBUTES} custom attributes per device"]
        names: dict[str, str] = {}
        for name, value in values.items():
            fault = _fault(name, value, self.allow_null)
            base = _base_name(name)
            if fault is None and base in names:
                fault = f"names the same attribute as {names[base]!r}"
            names.setdefault(base, name)
            if fault is not None:
                faults[name] = [fault]
        if faults:
            raise ValidationError(faults)

    @post_load(pass_original=True)
    def _as_lists(self, _data: dict[str, Any], values: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        return {_base_name(name): None if value is None else list(dict.fromkeys(
                    [value] if isinstance(value, str) else value))
                for name, value in values.items()}


def _base_name(name: str) -> str:
    return name[: -len(NUMERIC_SUFFIX)] if name.endswith(NUMERIC_SUFFIX) else name


def _fault(name: str, value: Any, allow_null: bool) -> str | None:
    numeric = name.endswith(NUMERIC_SUFFIX)
    if not ATTRIBUTE_NAME.match(_base_name(name)):
        return _NAME_RULE
    if value is None:
        return None if allow_null else "a value is required (null deletes only in a PATCH)"
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        return "values are strings or lists of strings"
    if not items:
        return "list at least one value"
    if len(items) > MAX_VALUES:
        return f"at most {MAX_VALUES} values per attribute"
    if any(len(item) > MAX_VALUE_LENGTH for item in items):
        return f"values are at most {MAX_VALUE_LENGTH} characters"
    if numeric and not all(_NUMBER.match(item) for item in items):
        return "a numerical attribute (name ending in _#) takes numbers"
    return None


class AttributeChangesSchema(AttributeValuesSchema):
    """Custom attributes to merge: as :class:`AttributeValuesSchema`, and ``null`` deletes one."""

    class Meta:
        unknown = INCLUDE
        openapi = {"additionalProperties": {"oneOf": [
            {"type": "string", "maxLength": MAX_VALUE_LENGTH, "nullable": True}, _VALUE_SCHEMA["oneOf"][1]]},
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


def shown(values: dict[str, list[str]]) -> dict[str, str | list[str]]:
    """The JSON:API form: one value as a string (as before lists), several as a list."""
    return {name: items[0] if len(items) == 1 else items for name, items in sorted(values.items())}


def attributes_resource(device_id: int, values: dict[str, list[str]]) -> dict[str, Any]:
    return resource("custom_attributes", device_id, shown(values),
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
