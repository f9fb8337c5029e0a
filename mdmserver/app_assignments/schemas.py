"""App assignment bodies, install options and the per-device state resources."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from mdmserver.api.apidoc import ApiDoc, Body, IdField, NameField, Reply, StrictBoolean, listing
from mdmserver.api.jsonapi import resource
from mdmserver.app_assignments.models import AppAssignment, DeviceAppState
from mdmserver.db import isoformat

#: ManagementFlags Apple defines: 1 = remove the app with the MDM profile, 4 = prevent backup of its
#: data, 5 = both (0: neither). macOS knows 1 only.
MANAGEMENT_FLAGS = (0, 1, 4, 5)
#: the most nodes (keys, values, items) and the deepest nesting an ``attributes`` or ``configuration``
#: tree may have: counted before anything else walks it
MAX_TREE_NODES = 5000
MAX_TREE_DEPTH = 32


def _bounded_tree(value: Any) -> None:
    """Refuse an option tree larger or deeper than the limits, without recursion (JSON bodies hold no
    shared references, so counting every node is the whole budget)."""
    nodes, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_TREE_NODES:
            raise ValidationError(f"at most {MAX_TREE_NODES} keys and values")
        if depth > MAX_TREE_DEPTH:
            raise ValidationError(f"nested deeper than {MAX_TREE_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            nodes += len(item)
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


class InstallOptionsSchema(Schema):
    """How an assigned app is installed (Apple's InstallApplication / InstallEnterpriseApplication keys).

    - ``removable`` (iOS 14+): false keeps the user from deleting the managed app (``Attributes.Removable``);
    - ``management_flags``: 1 removes the app with the MDM profile, 4 prevents backup of its data, 5 both
      (macOS: 0 or 1);
    - ``attributes`` (iOS): Apple's ``Attributes`` dictionary (``VPNUUID``, ``AssociatedDomains``,
      ``ContentFilterUUID``…), checked against Apple's keys when the command is built;
    - ``configuration``: the app's managed configuration (AppConfig), sent as ``Configuration``; the app
      reads it from ``com.apple.configuration.managed`` in its user defaults;
    - ``install_as_managed`` (macOS 11+, default true): install as a managed app (needed for removal,
      updates and ManagedApplicationList); false installs an ordinary app the server then leaves alone.
    """

    class Meta:
        unknown = RAISE

    removable = StrictBoolean()
    management_flags = fields.Integer(strict=True, validate=validate.OneOf(
        MANAGEMENT_FLAGS, error="management_flags must be one of 0, 1, 4, 5"))
    attributes = fields.Dict(keys=fields.String(), validate=_bounded_tree)
    configuration = fields.Dict(keys=fields.String(), validate=_bounded_tree)
    install_as_managed = StrictBoolean()


class AssignSchema(Schema):
    """``{"devices": [id | UDID | serial…], "groups": [group id…], "options": {…}}``: assign an app."""

    class Meta:
        unknown = RAISE

    devices = fields.List(NameField(), error_messages={
        "invalid": "devices must be an array of ids, UDIDs or serial numbers"})
    groups = fields.List(IdField(), error_messages={"invalid": "groups must be an array of group ids"})
    options = fields.Nested(InstallOptionsSchema)

    @validates_schema
    def _names_targets(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data.get("devices") is None and data.get("groups") is None:
            raise ValidationError("give devices and/or groups")


class RefreshSchema(Schema):
    """``{"devices": [id | UDID | serial…]}`` (optional): these devices only (refresh, update)."""

    class Meta:
        unknown = RAISE

    devices = fields.List(NameField(), error_messages={
        "invalid": "devices must be an array of ids, UDIDs or serial numbers"})


def assignment_resource(row: AppAssignment) -> dict[str, Any]:
    target = ({"type": "devices", "id": str(row.device_id)} if row.device_id is not None
              else {"type": "device_groups", "id": str(row.group_id)})
    return resource(
        "app_assignments", row.id,
        {"app_id": row.app_id, "target_type": "device" if row.device_id is not None else "group",
         "device_id": row.device_id, "group_id": row.group_id, "options": row.options or {},
         "created_by": row.created_by, "created_at": isoformat(row.created_at)},
        relationships={"app": {"data": {"type": "apps", "id": str(row.app_id)}}, "target": {"data": target}},
    )


def state_resource(row: DeviceAppState, app_facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """One device's state for one app; ``app_facts``: the catalogue's ``name``, ``bundle_id``,
    ``version`` and ``revision`` (``drift``: the catalogue's version differs from the installed one)."""
    facts = app_facts or {}
    catalogue_version = facts.get("version")
    drift = (row.installed_version is not None and catalogue_version is not None
             and row.installed_version != catalogue_version)
    return resource(
        "device_app_states", f"{row.device_id}-{row.app_id}",
        {"device_id": row.device_id, "app_id": row.app_id, "name": facts.get("name"),
         "bundle_id": facts.get("bundle_id"), "status": row.status, "revision": row.revision,
         "current_revision": facts.get("revision"), "installed_version": row.installed_version,
         "catalogue_version": catalogue_version, "drift": drift, "command_uuid": row.command_uuid,
         "detail": row.detail, "updated_at": isoformat(row.updated_at)},
        relationships={"device": {"data": {"type": "devices", "id": str(row.device_id)}},
                       "app": {"data": {"type": "apps", "id": str(row.app_id)}}},
    )


_STATES = listing("device_app_states", filters=("status",), sorts=("device_id", "app_id", "updated_at"))

OPENAPI: dict[str, ApiDoc] = {
    "app_assignments.list_assignments": ApiDoc(type="app_assignments", reply=Reply.COLLECTION),
    "app_assignments.assign": ApiDoc(body=AssignSchema, body_kind=Body.JSON, reply=Reply.JSON),
    "app_assignments.unassign": ApiDoc(body_kind=Body.NONE, reply=Reply.JSON),
    "app_assignments.app_devices": _STATES,
    "app_assignments.device_apps": _STATES,
    "app_assignments.refresh": ApiDoc(body=RefreshSchema, body_kind=Body.JSON, body_optional=True, reply=Reply.JSON,
                                      status=202),
    "app_assignments.update": ApiDoc(body=RefreshSchema, body_kind=Body.JSON, body_optional=True, reply=Reply.JSON,
                                     status=202),
    "app_assignments.refresh_device": ApiDoc(body_kind=Body.NONE, reply=Reply.JSON, status=202),
}
