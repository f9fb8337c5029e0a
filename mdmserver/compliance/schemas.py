"""Compliance policy bodies (each rule's parameters), the policy and device-compliance resources."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from mdmserver.api.apidoc import ApiDoc, Body, IdField, Reply, StrictBoolean, listing
from mdmserver.api.jsonapi import marshmallow_errors, resource
from mdmserver.compliance.models import (
    ComplianceHistory,
    CompliancePolicy,
    CompliancePolicyTarget,
    DevicePolicyResult,
    RemediationType,
    RuleType,
)
from mdmserver.db import isoformat
from mdmserver.errors import UnprocessableEntity
from mdmserver.records.attributes import ATTRIBUTE_NAME
from mdmserver.records.compliance import DeviceCompliance
from mdmserver.records.devices import Platform

MAX_GRACE_MINUTES = 60 * 24 * 365
MAX_CHECKIN_HOURS = 24 * 3650


def _version(value: str) -> None:
    parts = value.strip().split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isascii() and p.isdigit() and len(p) <= 6 for p in parts):
        raise ValidationError("a version is one to three numbers of at most 6 digits (17, 17.4, 17.4.1)")


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class OsVersionMinSchema(_Strict):
    """``{"versions": {"ios": "17.4", "macos": "14.5"}}``: the minimum OS per platform (compared
    numerically: 17.10 is above 17.9); devices of other platforms are outside the policy."""

    versions = fields.Dict(
        keys=fields.String(validate=validate.OneOf([p.value for p in Platform])),
        values=fields.String(validate=_version), required=True,
        validate=validate.Length(min=1, error="name at least one platform"))


class PasscodeSchema(_Strict):
    """A passcode is set and compliant; ``with_profiles``: also compliant with the profiles' rules."""

    with_profiles = StrictBoolean(load_default=False)


class NoParametersSchema(_Strict):
    """The rule takes no parameters."""


class LastCheckinSchema(_Strict):
    """The device checked in within the last ``hours``."""

    hours = fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=MAX_CHECKIN_HOURS))


class IdentifierSchema(_Strict):
    """A profile (``PayloadIdentifier``) or app (bundle id) the device reports as installed."""

    identifier = fields.String(required=True, validate=validate.Length(min=1, max=255))


class CustomAttributeSchema(_Strict):
    """The device has custom attribute ``name`` with ``value`` among its values."""

    name = fields.String(required=True, validate=validate.Regexp(ATTRIBUTE_NAME, error="not a valid attribute name"))
    value = fields.String(required=True, validate=validate.Length(min=1, max=512))


#: rule type → the schema of its parameters
RULE_PARAMETERS: dict[str, type[Schema]] = {
    RuleType.OS_VERSION_MIN: OsVersionMinSchema,
    RuleType.PASSCODE: PasscodeSchema,
    RuleType.ENCRYPTION: NoParametersSchema,
    RuleType.SUPERVISED: NoParametersSchema,
    RuleType.LAST_CHECKIN: LastCheckinSchema,
    RuleType.PROFILE_INSTALLED: IdentifierSchema,
    RuleType.APP_INSTALLED: IdentifierSchema,
    RuleType.CUSTOM_ATTRIBUTE: CustomAttributeSchema,
    RuleType.OS_UPDATE_DEADLINE: NoParametersSchema,
}


class RemediationSchema(_Strict):
    """What to do on a transition to non_compliant, after the grace period: ``scan`` (the inventory
    queries), ``lock`` (with ``message``), ``install_profile`` (``profile_id``, assigned to the device),
    ``add_to_group`` (``group_id``, a static group)."""

    action = fields.String(required=True, validate=validate.OneOf([r.value for r in RemediationType]))
    message = fields.String(validate=validate.Length(min=1, max=1000))
    profile_id = IdField()
    group_id = IdField()

    @validates_schema
    def _needs(self, data: dict[str, Any], **_: Any) -> None:
        needed = {RemediationType.INSTALL_PROFILE: "profile_id", RemediationType.ADD_TO_GROUP: "group_id"}
        member = needed.get(data.get("action"))
        if member and member not in data:
            raise ValidationError(f"{data['action']} needs {member}", member)
        allowed = {"action", *([member] if member else []), *(["message"] if data.get("action") == "lock" else [])}
        for extra in sorted(set(data) - allowed):
            raise ValidationError(f"not a member of a {data.get('action')} remediation", extra)


class PolicyCreateSchema(_Strict):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    description = fields.String(allow_none=True, validate=validate.Length(max=10000))
    rule = fields.String(required=True, validate=validate.OneOf([r.value for r in RuleType]))
    parameters = fields.Dict(keys=fields.String(), values=fields.Raw(), load_default=dict)
    enabled = StrictBoolean(load_default=True)
    all_devices = StrictBoolean(load_default=False)
    remediation = fields.Nested(RemediationSchema, allow_none=True)
    grace_minutes = fields.Integer(strict=True, load_default=0, validate=validate.Range(min=0, max=MAX_GRACE_MINUTES))


class PolicyUpdateSchema(PolicyCreateSchema):
    name = fields.String(validate=validate.Length(min=1, max=255))
    rule = fields.String(validate=validate.OneOf([r.value for r in RuleType]))
    parameters = fields.Dict(keys=fields.String(), values=fields.Raw())
    enabled = StrictBoolean()
    all_devices = StrictBoolean()
    grace_minutes = fields.Integer(strict=True, validate=validate.Range(min=0, max=MAX_GRACE_MINUTES))


def load_rule_parameters(rule: str, parameters: Any, base: str = "/data/attributes/parameters") -> dict[str, Any]:
    """The rule's parameters loaded by its schema: 422 at each faulty member."""
    try:
        return RULE_PARAMETERS[rule]().load(parameters or {})
    except ValidationError as exc:
        raise UnprocessableEntity(f"invalid parameters for the {rule} rule",
                                  errors=marshmallow_errors(exc.messages, base)) from None


class PolicyTargetsSchema(_Strict):
    """``{"devices": [ids, UDIDs or serial numbers], "groups": [group ids]}``."""

    devices = fields.List(fields.Raw(), validate=validate.Length(max=10000))
    groups = fields.List(IdField(), validate=validate.Length(max=1000))

    @validates_schema
    def _some(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("devices") and not data.get("groups"):
            raise ValidationError("name devices or groups", "devices")


def policy_resource(policy: CompliancePolicy, counts: dict[str, int] | None = None) -> dict[str, Any]:
    attributes = {
        "name": policy.name,
        "description": policy.description,
        "rule": policy.rule,
        "parameters": policy.parameters,
        "enabled": policy.enabled,
        "all_devices": policy.all_devices,
        "remediation": policy.remediation,
        "grace_minutes": policy.grace_minutes,
        "created_by": policy.created_by,
        "created_at": isoformat(policy.created_at),
        "updated_at": isoformat(policy.updated_at),
    }
    if counts is not None:
        attributes["device_counts"] = counts
    return resource("compliance_policies", policy.id, attributes,
                    links={"self": f"/api/v1/compliance_policies/{policy.id}"})


def target_resource(target: CompliancePolicyTarget) -> dict[str, Any]:
    return resource("compliance_policy_targets", target.id, {
        "policy_id": str(target.policy_id),
        "device_id": None if target.device_id is None else str(target.device_id),
        "group_id": None if target.group_id is None else str(target.group_id),
    })


def result_entry(result: DevicePolicyResult, policy: CompliancePolicy) -> dict[str, Any]:
    return {
        "policy_id": str(policy.id),
        "name": policy.name,
        "rule": policy.rule,
        "status": result.status,
        "observed": result.observed,
        "since": isoformat(result.changed_at),
        "violated_at": isoformat(result.violated_at),
        "remediated_at": isoformat(result.remediated_at),
    }


def device_compliance_resource(
    device_id: int, state: DeviceCompliance | None, results: list[tuple[DevicePolicyResult, CompliancePolicy]]
) -> dict[str, Any]:
    """A device's compliance: its state (``unknown`` before its first evaluation), the violated
    policies with the observed values, and every policy that applies with its status."""
    entries = [result_entry(r, p) for r, p in results]
    return resource("device_compliance", device_id, {
        "compliance_state": state.state if state is not None else "unknown",
        "violation_count": state.violation_count if state is not None else 0,
        "changed_at": isoformat(state.changed_at) if state is not None else None,
        "violated_policies": [e for e in entries if e["status"] == "non_compliant"],
        "policies": entries,
    }, links={"self": f"/api/v1/devices/{device_id}/compliance"})


def history_resource(entry: ComplianceHistory) -> dict[str, Any]:
    return resource("compliance_history", entry.id, {
        "device_id": str(entry.device_id),
        "from_state": entry.from_state,
        "to_state": entry.to_state,
        "violation_count": entry.violation_count,
        "changed_at": isoformat(entry.changed_at),
    })


OPENAPI: dict[str, ApiDoc] = {
    "compliance.list_policies": listing("compliance_policies", filters=("name", "rule", "enabled"),
                                        sorts=("id", "name", "created_at")),
    "compliance.create_policy": ApiDoc(body=PolicyCreateSchema, type="compliance_policies", status=201),
    "compliance.get_policy": ApiDoc(type="compliance_policies"),
    "compliance.update_policy": ApiDoc(body=PolicyUpdateSchema, type="compliance_policies"),
    "compliance.delete_policy": ApiDoc(type="compliance_policies", reply=Reply.EMPTY),
    "compliance.list_targets": ApiDoc(type="compliance_policy_targets", reply=Reply.COLLECTION),
    "compliance.add_targets": ApiDoc(body=PolicyTargetsSchema, body_kind=Body.JSON, reply=Reply.META),
    "compliance.remove_targets": ApiDoc(body=PolicyTargetsSchema, body_kind=Body.JSON, reply=Reply.META),
    "compliance.evaluate_all": ApiDoc(body_kind=Body.NONE, reply=Reply.META),
    "compliance.device_compliance": ApiDoc(type="device_compliance"),
    "compliance.device_history": listing("compliance_history", sorts=("changed_at",)),
}
