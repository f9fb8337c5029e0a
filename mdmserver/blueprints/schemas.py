"""Blueprint resources, their bodies, and the per-device state resources."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates,
    validates_schema,
)

from mdmserver.api.apidoc import ApiDoc, Body, IdField, NameField, Reply, StrictBoolean, listing
from mdmserver.api.jsonapi import resource
from mdmserver.app_assignments.schemas import InstallOptionsSchema
from mdmserver.db import isoformat
from mdmserver.protocol.versions import VERSION_PATTERN
from mdmserver.records.blueprints import LATEST, Blueprint, FirstItem, InstallAction


class ScopeSchema(Schema):
    """``{"devices": [id | UDID | serial…], "groups": [group id…]}`` (ignored while ``is_global``)."""

    class Meta:
        unknown = RAISE

    devices = fields.List(NameField(), load_default=list)
    groups = fields.List(IdField(), load_default=list)


class AppItemSchema(Schema):
    """An app of the blueprint with its install options (as an app assignment's)."""

    class Meta:
        unknown = RAISE

    app_id = IdField(required=True)
    options = fields.Nested(InstallOptionsSchema, load_default=dict)


def _local_date_time(value: str) -> None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError("expected a local date-time, YYYY-MM-DDTHH:MM:SS") from None
    if parsed.tzinfo is not None or len(value) != 19:
        raise ValidationError("expected a local date-time without a zone, YYYY-MM-DDTHH:MM:SS "
                              "(the device's own time, as Apple's TargetLocalDateTime)")


class OSUpdateTargetSchema(Schema):
    """The OS-update target: a version (``17.5.1``) or ``latest``, a deadline in the device's local time,
    and ``ScheduleOSUpdate``'s ``InstallAction``."""

    class Meta:
        unknown = RAISE

    version = fields.String(required=True, validate=validate.Regexp(
        rf"{VERSION_PATTERN}|^{LATEST}$", error="version must be a version such as 17.5.1, or latest"))
    deadline = fields.String(load_default=None, allow_none=True, validate=_local_date_time)
    install_action = fields.String(load_default=InstallAction.DEFAULT.value,
                                   validate=validate.OneOf([a.value for a in InstallAction]))


class BlueprintSchema(Schema):
    """A blueprint's attributes (create: ``name`` required; update: every field optional, lists replaced)."""

    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(allow_none=True, validate=validate.Length(max=10000))
    enabled = StrictBoolean()
    is_global = StrictBoolean()
    apply_order = fields.Integer(strict=True, validate=validate.Range(min=-1_000_000, max=1_000_000))
    first_item = fields.String(validate=validate.OneOf([f.value for f in FirstItem]))
    remove_if_no_scope = StrictBoolean()
    unscope_if_applied = StrictBoolean()
    declarative_profiles = StrictBoolean()
    start_on = fields.AwareDateTime(allow_none=True, default_timezone=None)
    scope = fields.Nested(ScopeSchema)
    profiles = fields.List(IdField(), validate=validate.Length(max=200))
    apps = fields.List(fields.Nested(AppItemSchema), validate=validate.Length(max=200))
    os_update = fields.Nested(OSUpdateTargetSchema, allow_none=True)

    @validates("profiles")
    def _distinct_profiles(self, value: list[int], **_kwargs: Any) -> None:
        if len(set(value)) != len(value):
            raise ValidationError("a profile is listed twice")

    @validates("apps")
    def _distinct_apps(self, value: list[dict[str, Any]], **_kwargs: Any) -> None:
        if len({a["app_id"] for a in value}) != len(value):
            raise ValidationError("an app is listed twice")

    @validates_schema
    def _global_or_scope(self, data: dict[str, Any], **_kwargs: Any) -> None:
        scope = data.get("scope")
        if data.get("is_global") and scope and (scope.get("devices") or scope.get("groups")):
            raise ValidationError("a global blueprint has no devices or groups in its scope", "scope")


class BlueprintUpdateSchema(BlueprintSchema):
    """A change: every field optional; the lists given replace the old ones whole."""

    name = fields.String(validate=validate.Length(min=1, max=200))


def blueprint_resource(row: Blueprint, items: Any) -> dict[str, Any]:
    """``items``: the blueprint's ``service.Contents``."""
    os_update = None if row.os_update_version is None else {
        "version": row.os_update_version, "deadline": row.os_update_deadline,
        "install_action": row.os_update_install_action}
    return resource("blueprints", row.id, {
        "name": row.name, "description": row.description, "enabled": row.enabled, "is_global": row.is_global,
        "apply_order": row.apply_order, "first_item": row.first_item, "remove_if_no_scope": row.remove_if_no_scope,
        "unscope_if_applied": row.unscope_if_applied, "declarative_profiles": row.declarative_profiles,
        "start_on": isoformat(row.start_on),
        "scope": {"devices": [str(d) for d in items.device_ids], "groups": [str(g) for g in items.group_ids]},
        "profiles": [str(p) for p in items.profile_ids],
        "apps": [{"app_id": str(a["app_id"]), "options": a["options"]} for a in items.apps],
        "os_update": os_update, "created_by": row.created_by, "created_at": isoformat(row.created_at),
        "updated_at": isoformat(row.updated_at),
    })


def device_state_resource(state: dict[str, Any]) -> dict[str, Any]:
    """One device's standing in one blueprint (``service.device_states``)."""
    attributes = {**state, "blueprint_id": str(state["blueprint_id"]), "device_id": str(state["device_id"]),
                  "entered_at": isoformat(state["entered_at"])}
    return resource("blueprint_device_states", f"{state['blueprint_id']}-{state['device_id']}", attributes,
        relationships={"blueprint": {"data": {"type": "blueprints", "id": str(state["blueprint_id"])}},
                       "device": {"data": {"type": "devices", "id": str(state["device_id"])}}})


_STATES = listing("blueprint_device_states", filters=("membership",), sorts=("device_id", "blueprint_id"))

OPENAPI: dict[str, ApiDoc] = {
    "blueprints.list_blueprints": listing("blueprints", filters=("name", "enabled"),
                                          sorts=("id", "name", "apply_order")),
    "blueprints.create_blueprint": ApiDoc(type="blueprints", body=BlueprintSchema, reply=Reply.RESOURCE,
                                          status=201),
    "blueprints.get_blueprint": ApiDoc(type="blueprints", reply=Reply.RESOURCE),
    "blueprints.update_blueprint": ApiDoc(type="blueprints", body=BlueprintUpdateSchema, reply=Reply.RESOURCE),
    "blueprints.delete_blueprint": ApiDoc(body_kind=Body.NONE, reply=Reply.META),
    "blueprints.reconcile_blueprint": ApiDoc(body_kind=Body.NONE, reply=Reply.META),
    "blueprints.blueprint_devices": _STATES,
    "blueprints.device_blueprints": _STATES,
}
