"""Serialisers for devices and their inventory (shared by the device list of the admin API)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from mdmserver.api.apidoc import ApiDoc, Reply, listing
from mdmserver.api.jsonapi import UTCField, resource


class DeviceSchema(Schema):
    udid = fields.String()
    serial_number = fields.String()
    platform = fields.String()
    model = fields.String()
    model_name = fields.String()
    product_name = fields.String()
    os_version = fields.String()
    build_version = fields.String()
    device_name = fields.String()
    imei = fields.String()
    meid = fields.String()
    topic = fields.String()
    admission_status = fields.String()
    enrolled = fields.Boolean()
    enrolled_at = UTCField()
    unenrolled_at = UTCField()
    last_seen_at = UTCField()
    awaiting_configuration = fields.Boolean()
    has_push_token = fields.Method("_has_push_token")
    has_unlock_token = fields.Boolean()
    has_bootstrap_token = fields.Method("_has_bootstrap_token")
    token_updated_at = UTCField()
    capacity_gb = fields.Float()
    available_capacity_gb = fields.Float()
    battery_level = fields.Float()
    is_supervised = fields.Boolean()
    wifi_mac = fields.String()
    bluetooth_mac = fields.String()
    activation_lock_enabled = fields.Boolean()
    lost_mode_enabled = fields.Boolean()
    find_my_enabled = fields.Boolean()
    phone_number = fields.String()
    iccid = fields.String()
    hostname = fields.String()
    local_hostname = fields.String()
    inventory_updated_at = UTCField()
    asset_tag = fields.String()
    description = fields.String()
    office = fields.String()
    asset_owner = fields.String()
    purchase_type = fields.String()
    purchase_date = fields.Date()
    purchase_price = fields.Decimal(as_string=True)
    purchase_order_number = fields.String()
    warranty_number = fields.String()
    warranty_type = fields.String()
    warranty_expiration = fields.Date()
    created_at = UTCField()
    updated_at = UTCField()

    def _has_push_token(self, device) -> bool:
        return device.push_token is not None

    def _has_bootstrap_token(self, device) -> bool:
        return device.bootstrap_token_encrypted is not None


class DeviceDetailSchema(DeviceSchema):
    """The detail view adds the full DeviceInformation answer."""

    device_information = fields.Raw()


class InstalledProfileSchema(Schema):
    identifier = fields.String()
    uuid = fields.String()
    display_name = fields.String()
    description = fields.String()
    organization = fields.String()
    version = fields.Integer()
    is_managed = fields.Boolean()
    is_encrypted = fields.Boolean()
    removal_disallowed = fields.Boolean()
    has_removal_passcode = fields.Boolean()
    payloads = fields.Raw()
    reported_at = UTCField()


class InstalledApplicationSchema(Schema):
    identifier = fields.String()
    name = fields.String()
    version = fields.String()
    short_version = fields.String()
    bundle_size = fields.Integer()
    dynamic_size = fields.Integer()
    external_version_identifier = fields.Integer()
    is_validated = fields.Boolean()
    installing = fields.Boolean()
    app_store_vendable = fields.Boolean()
    beta_app = fields.Boolean()
    has_update_available = fields.Boolean()
    managed_status = fields.String()
    reported_at = UTCField()


class DeviceCertificateSchema(Schema):
    common_name = fields.String()
    is_identity = fields.Boolean()
    subject = fields.String()
    issuer = fields.String()
    serial_number = fields.String()
    not_before = UTCField()
    not_after = UTCField()
    fingerprint_sha256 = fields.String()
    parse_error = fields.String()
    reported_at = UTCField()


class DeviceLocationSchema(Schema):
    latitude = fields.Float()
    longitude = fields.Float()
    horizontal_accuracy = fields.Float()
    vertical_accuracy = fields.Float()
    altitude = fields.Float()
    speed = fields.Float()
    course = fields.Float()
    timestamp = UTCField()
    received_at = UTCField()


class SecurityInfoSchema(Schema):
    passcode_present = fields.Boolean()
    passcode_compliant = fields.Boolean()
    passcode_compliant_with_profiles = fields.Boolean()
    hardware_encryption_caps = fields.Integer()
    fde_enabled = fields.Boolean()
    fde_has_personal_recovery_key = fields.Boolean()
    fde_has_institutional_recovery_key = fields.Boolean()
    sip_enabled = fields.Boolean()
    firewall_enabled = fields.Boolean()
    enrolled_via_dep = fields.Boolean()
    user_approved_enrollment = fields.Boolean()
    is_user_enrollment = fields.Boolean()
    recovery_lock_enabled = fields.Boolean()
    details = fields.Raw()
    updated_at = UTCField()


class OSUpdateSchema(Schema):
    product_key = fields.String()
    human_readable_name = fields.String()
    product_name = fields.String()
    version = fields.String()
    build = fields.String()
    download_size = fields.Integer()
    install_size = fields.Integer()
    is_critical = fields.Boolean()
    is_config_data_update = fields.Boolean()
    is_firmware_update = fields.Boolean()
    is_major_os_update = fields.Boolean()
    restart_required = fields.Boolean()
    allows_install_later = fields.Boolean()
    reported_at = UTCField()


device_schema = DeviceSchema()
device_detail_schema = DeviceDetailSchema()


#: Device attributes of the list (the detail adds the inventory answers).
DEVICE_ATTRIBUTES = tuple(DeviceSchema().fields)


def device_resource(
    device, *, detail: bool = False, owner_id: int | None = None, fields_: set[str] | None = None
) -> dict[str, Any]:
    """The JSON:API resource object of a device (``type`` ``devices``, ``id`` the numeric id), with
    links to the admin resources around it; ``detail`` adds the raw inventory answers."""
    schema = device_detail_schema if detail else device_schema
    obj = resource("devices", device.id, schema.dump(device),
                   links={"self": f"/api/v1/devices/{device.id}"}, fields=fields_)
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
    reply_schema=DeviceSchema,
)

OPENAPI: dict[str, ApiDoc] = {
    "devices.list_devices": DEVICE_LIST,
    "devices.group_devices": DEVICE_LIST,
    "devices.user_devices": DEVICE_LIST,
    "devices.update_device": ApiDoc(body=DeviceUpdateSchema, type="devices", reply_schema=DeviceDetailSchema),
    "devices.delete_device": ApiDoc(type="devices", reply=Reply.EMPTY),
    "devices.show": ApiDoc(type="devices", reply_schema=DeviceDetailSchema, fields=True),
    "devices.installed_profiles": listing("installed_profiles", filters=("identifier", "is_managed"),
                                          sorts=("identifier", "display_name"), reply_schema=InstalledProfileSchema),
    "devices.installed_applications": listing("installed_applications", filters=("identifier", "name"),
                                              sorts=("identifier", "name"), reply_schema=InstalledApplicationSchema),
    "devices.certificates": listing("device_certificates", filters=("common_name", "is_identity"),
                                    sorts=("common_name", "not_after"), reply_schema=DeviceCertificateSchema),
    "devices.locations": listing("device_locations", sorts=("received_at", "timestamp"),
                                 reply_schema=DeviceLocationSchema),
    "devices.os_updates": listing("os_updates", filters=("is_critical",), sorts=("version", "product_key"),
                                  reply_schema=OSUpdateSchema),
    "devices.security": ApiDoc(type="security_info", reply=Reply.RESOURCE, reply_schema=SecurityInfoSchema),
}
