"""Validation of custom attribute documents: ``{"name": "value", …}`` with string values."""

from __future__ import annotations

from typing import Any

from mdmserver.api.apidoc import ApiDoc, Reply
from mdmserver.api.jsonapi import resource
from mdmserver.errors import UnprocessableEntity
from mdmserver.selection.filters import ATTRIBUTE_NAME

MAX_ATTRIBUTES = 200
MAX_VALUE_LENGTH = 512


def validate_values(values: dict[str, Any], *, allow_null: bool, base: str = "/data/attributes") -> dict[str, Any]:
    """Names like ``dept`` or ``site.floor``; values strings of at most 512 characters (``null`` deletes in
    a merge). Every fault is reported, with its pointer."""
    faults = []
    if len(values) > MAX_ATTRIBUTES:
        faults.append({"detail": f"at most {MAX_ATTRIBUTES} custom attributes per device", "pointer": base})
    for name, value in values.items():
        pointer = f"{base}/{name.replace('~', '~0').replace('/', '~1')}"
        if not ATTRIBUTE_NAME.match(name):
            faults.append({"detail": "names are 1 to 64 letters, digits, '_', '-' or '.', not starting with '.'",
                           "pointer": pointer})
        elif value is None:
            if not allow_null:
                faults.append({"detail": "a value is required (null deletes only in a PATCH)", "pointer": pointer})
        elif not isinstance(value, str):
            faults.append({"detail": "values are strings", "pointer": pointer})
        elif len(value) > MAX_VALUE_LENGTH:
            faults.append({"detail": f"values are at most {MAX_VALUE_LENGTH} characters", "pointer": pointer})
    if faults:
        raise UnprocessableEntity("invalid custom attributes", errors=faults)
    return values


def attributes_resource(device_id: int, values: dict[str, str]) -> dict[str, Any]:
    return resource("custom_attributes", device_id, dict(sorted(values.items())),
                    relationships={"device": {"data": {"type": "devices", "id": str(device_id)}}},
                    links={"self": f"/api/v1/devices/{device_id}/custom_attributes"})

#: The attributes of a ``custom_attributes`` body are the mapping itself: name → string value (``null``
#: deletes one on PATCH); ``validate_values`` checks it.
_VALUES = {"type": "object", "additionalProperties": {"type": "string", "nullable": True}}

OPENAPI: dict[str, ApiDoc] = {
    "attributes.get_attributes": ApiDoc(type="custom_attributes"),
    "attributes.replace_attributes": ApiDoc(body=_VALUES, type="custom_attributes"),
    "attributes.merge_attributes": ApiDoc(body=_VALUES, type="custom_attributes"),
    "attributes.delete_attributes": ApiDoc(type="custom_attributes",
                                           query={"names": "comma-separated attribute names (all when absent)"}),
    "attributes.list_attribute_names": ApiDoc(type="custom_attribute_names", reply=Reply.COLLECTION),
    "attributes.bulk_delete": ApiDoc(reply=Reply.META, query={
        "names": "comma-separated attribute names to delete (required)",
        "devices": "comma-separated device ids, UDIDs or serial numbers (all devices when absent)",
    }),
}
