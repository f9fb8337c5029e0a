"""Device resources for the list, and the asset-field update schema."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from mdmserver.api.jsonapi import resource
from mdmserver.db import isoformat
from mdmserver.devices.models import Device

#: Device attributes shown by the API (secrets and push credentials are never among them).
DEVICE_ATTRIBUTES = (
    "udid", "serial_number", "name", "platform", "model", "model_name", "product_name", "os_version",
    "build_version", "imei", "meid", "supervised", "admission_status", "enrolled", "enrolled_at",
    "unenrolled_at", "last_seen_at", "created_at", "updated_at", "awaiting_configuration",
    "has_unlock_token", "capacity_gb", "available_capacity_gb", "battery_level", "wifi_mac",
    "bluetooth_mac", "activation_lock_enabled", "lost_mode_enabled", "find_my_enabled", "phone_number",
    "iccid", "hostname", "local_hostname", "inventory_updated_at", "asset_tag", "description", "office",
    "asset_owner", "purchase_type", "purchase_date", "purchase_price", "purchase_order_number",
    "warranty_number", "warranty_type", "warranty_expiration",
)

_RENAMED = {"name": "device_name", "supervised": "is_supervised"}
_TIMES = {"enrolled_at", "unenrolled_at", "last_seen_at", "created_at", "updated_at", "inventory_updated_at"}
_DATES = {"purchase_date", "warranty_expiration"}


def device_attributes(device: Device) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in DEVICE_ATTRIBUTES:
        if name == "has_unlock_token":
            out[name] = device.unlock_token_encrypted is not None
            continue
        value = getattr(device, _RENAMED.get(name, name))
        if name in _TIMES:
            value = isoformat(value)
        elif name in _DATES:
            value = value.isoformat() if value is not None else None
        elif isinstance(value, Decimal):
            value = f"{value:.2f}"
        out[name] = value
    return out


def device_resource(
    device: Device, *, owner_id: int | None = None, fields_: set[str] | None = None
) -> dict[str, Any]:
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
        relationships = {k: v for k, v in relationships.items() if k in fields_} or None
    return resource(
        "devices",
        device.id,
        device_attributes(device),
        relationships=relationships,
        links={"self": f"/api/v1/devices/{device.id}"},
        fields=fields_,
    )


def _text(max_len: int) -> fields.String:
    return fields.String(allow_none=True, validate=validate.Length(max=max_len))


class DeviceUpdateSchema(Schema):
    """Asset fields an administrator may change with PATCH (``name`` also renames the device)."""

    class Meta:
        unknown = RAISE

    name = fields.String(validate=validate.Length(min=1, max=255))
    asset_tag = _text(100)
    description = _text(10000)
    office = _text(255)
    asset_owner = _text(255)
    purchase_type = _text(50)
    purchase_date = fields.Date(allow_none=True)
    purchase_price = fields.Decimal(
        allow_none=True, places=2, validate=validate.Range(min=0, max=Decimal("9999999999.99"))
    )
    purchase_order_number = _text(100)
    warranty_number = _text(100)
    warranty_type = _text(100)
    warranty_expiration = fields.Date(allow_none=True)
