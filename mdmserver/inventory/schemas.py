"""Device resources for the list, and the asset-field update schema."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from mdmserver.api.apidoc import ApiDoc, Reply, listing
from mdmserver.devices import schemas as devices_schemas
from mdmserver.devices.models import Device

#: Device attributes of the list (the protocol's device serialiser, so list and detail agree).
DEVICE_ATTRIBUTES = tuple(devices_schemas.DeviceSchema().fields)


def device_resource(
    device: Device, *, owner_id: int | None = None, fields_: set[str] | None = None
) -> dict[str, Any]:
    """The device detail's resource object (without the raw DeviceInformation answer), plus links to
    the admin resources around a device."""
    obj = devices_schemas.device_resource(device, fields_=fields_)
    relationships = {
        "owner": {
            "data": {"type": "users", "id": str(owner_id)} if owner_id is not None else None,
            "links": {"related": f"/api/v1/devices/{device.id}/owner"},
        },
        "custom_attributes": {"links": {"related": f"/api/v1/devices/{device.id}/custom_attributes"}},
        "groups": {"links": {"related": f"/api/v1/devices/{device.id}/groups"}},
        "commands": {"links": {"related": f"/api/v1/devices/{device.id}/commands"}},
    }
    if fields_ is not None:
        relationships = {k: v for k, v in relationships.items() if k in fields_}
    if relationships:
        obj["relationships"] = relationships
    return obj


class _Money(fields.Decimal):
    """A price: a number or a numeric string, never a boolean."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("Not a valid number.")
        return super()._deserialize(value, attr, data, **kwargs)


def _text(max_len: int) -> fields.String:
    return fields.String(allow_none=True, validate=validate.Length(max=max_len))


class DeviceUpdateSchema(Schema):
    """Asset fields an administrator may change with PATCH (``device_name`` also renames the device)."""

    class Meta:
        unknown = RAISE

    device_name = fields.String(validate=validate.Length(min=1, max=255))
    asset_tag = _text(100)
    description = _text(10000)
    office = _text(255)
    asset_owner = _text(255)
    purchase_type = _text(50)
    purchase_date = fields.Date(allow_none=True)
    purchase_price = _Money(
        allow_none=True, places=2, validate=validate.Range(min=0, max=Decimal("9999999999.99"))
    )
    purchase_order_number = _text(100)
    warranty_number = _text(100)
    warranty_type = _text(100)
    warranty_expiration = fields.Date(allow_none=True)

#: Every device list (all devices, a group's members, a user's devices) takes the same parameters.
DEVICE_LIST = listing(
    "devices", open_filters=True, facets=True, fields=True,
    sorts=("id", "name", "device_name", "serial_number", "udid", "platform", "model", "os_version",
           "admission_status", "last_seen_at", "enrolled_at", "created_at", "updated_at", "asset_tag", "office"),
    reply_schema=devices_schemas.DeviceSchema,
)

OPENAPI: dict[str, ApiDoc] = {
    "inventory.list_devices": DEVICE_LIST,
    "inventory.update_device": ApiDoc(body=DeviceUpdateSchema, type="devices",
                                      reply_schema=devices_schemas.DeviceDetailSchema),
    "inventory.delete_device": ApiDoc(type="devices", reply=Reply.EMPTY),
}
