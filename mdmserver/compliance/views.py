"""``/api/v1/compliance_policies`` (policies and their scope) and ``/api/v1/devices/<id>/compliance``."""

from __future__ import annotations

from flask import Blueprint, request

from mdmserver import workflows
from mdmserver.api.auth import current_actor
from mdmserver.api.jsonapi import (
    document,
    is_id,
    jsonapi_response,
    list_document,
    load_attributes,
    load_body,
    paginate,
    parse_bool,
    parse_list_query,
    parse_resource_body,
    plain_response,
    refuse_query_params,
)
from mdmserver.compliance import service
from mdmserver.compliance.models import ComplianceHistory, CompliancePolicy, RuleType
from mdmserver.compliance.schemas import (
    PolicyCreateSchema,
    PolicyTargetsSchema,
    PolicyUpdateSchema,
    device_compliance_resource,
    history_resource,
    load_rule_parameters,
    policy_resource,
    target_resource,
)
from mdmserver.db import db
from mdmserver.errors import NotFound
from mdmserver.selection import resolve
from mdmserver.selection.filters import contains

bp = Blueprint("compliance", __name__, url_prefix="/api/v1")

TYPE = "compliance_policies"
RULES = tuple(r.value for r in RuleType)


def _policy(policy_id: str) -> CompliancePolicy:
    if not is_id(policy_id):
        raise NotFound(f"no compliance policy {policy_id!r}")
    return service.get_policy(db.session, int(policy_id))


def _rule_filter(value: str):
    if value not in RULES:
        raise ValueError(f"unknown rule; allowed: {', '.join(RULES)}")
    return CompliancePolicy.rule == value


@bp.get("/compliance_policies")
def list_policies():
    """Compliance policies with how many devices are compliant, non-compliant and unknown for each."""
    query = parse_list_query(
        request.args,
        filters={"name": lambda v: contains(CompliancePolicy.name, v), "rule": _rule_filter,
                 "enabled": lambda v: CompliancePolicy.enabled.is_(parse_bool(v))},
        sorts={"id": CompliancePolicy.id, "name": CompliancePolicy.name, "created_at": CompliancePolicy.created_at},
        default_sort=[CompliancePolicy.id.asc()],
    )
    page = paginate(db.session, service.policies_query(), query)
    counts = service.policy_counts(db.session, [p.id for p in page.items])
    return jsonapi_response(list_document(page, [policy_resource(p, counts[p.id]) for p in page.items]))


@bp.post("/compliance_policies")
def create_policy():
    """Create a policy (one rule with its parameters, its scope, an optional remediation); every device
    is judged against it at once."""
    _, attributes = parse_resource_body(None, TYPE)
    values = load_attributes(PolicyCreateSchema(), attributes, "compliance policy")
    values["parameters"] = load_rule_parameters(values["rule"], values["parameters"])
    policy = service.create_policy(db.session, values, actor=current_actor())
    workflows.reevaluate_compliance(db.session)
    db.session.commit()
    counts = service.policy_counts(db.session, [policy.id])[policy.id]
    return jsonapi_response(document(policy_resource(policy, counts)), status=201,
                            headers={"Location": f"/api/v1/compliance_policies/{policy.id}"})


@bp.get("/compliance_policies/<policy_id>")
def get_policy(policy_id: str):
    """One policy with its device counts."""
    refuse_query_params(request.args)
    policy = _policy(policy_id)
    return jsonapi_response(document(policy_resource(policy, service.policy_counts(db.session, [policy.id])[policy.id])))


@bp.patch("/compliance_policies/<policy_id>")
def update_policy(policy_id: str):
    """Change a policy (a new rule needs parameters that fit it); the devices are judged again."""
    policy = _policy(policy_id)
    _, attributes = parse_resource_body(None, TYPE, require_id=policy.id)
    values = load_attributes(PolicyUpdateSchema(), attributes, "compliance policy")
    if "rule" in values or "parameters" in values:
        values["parameters"] = load_rule_parameters(values.get("rule", policy.rule),
                                                    values.get("parameters", policy.parameters))
    service.update_policy(db.session, policy, values)
    workflows.reevaluate_compliance(db.session)
    db.session.commit()
    return jsonapi_response(document(policy_resource(policy, service.policy_counts(db.session, [policy.id])[policy.id])))


@bp.delete("/compliance_policies/<policy_id>")
def delete_policy(policy_id: str):
    """Delete a policy; the devices it judged are judged again without it."""
    service.delete_policy(db.session, _policy(policy_id))
    workflows.reevaluate_compliance(db.session)
    db.session.commit()
    return "", 204


@bp.get("/compliance_policies/<policy_id>/targets")
def list_targets(policy_id: str):
    """The devices and groups the policy is scoped to (``all_devices`` scopes it to every device)."""
    refuse_query_params(request.args)
    rows = service.list_targets(db.session, _policy(policy_id))
    return jsonapi_response(document([target_resource(t) for t in rows], meta={"total": len(rows)}))


@bp.post("/compliance_policies/<policy_id>/targets")
def add_targets(policy_id: str):
    """Scope the policy to more devices and groups: ``{"devices": [...], "groups": [...]}``."""
    policy = _policy(policy_id)
    body = load_body(PolicyTargetsSchema(), "targets")
    added = service.add_targets(db.session, policy, devices=body.get("devices"), groups=body.get("groups"))
    changed = workflows.reevaluate_compliance(db.session)
    db.session.commit()
    return plain_response({"policy_id": str(policy.id), "added": added, "state_changes": len(changed)})


@bp.delete("/compliance_policies/<policy_id>/targets")
def remove_targets(policy_id: str):
    """Take devices and groups out of the policy's scope."""
    policy = _policy(policy_id)
    body = load_body(PolicyTargetsSchema(), "targets")
    removed = service.remove_targets(db.session, policy, devices=body.get("devices"), groups=body.get("groups"))
    changed = workflows.reevaluate_compliance(db.session)
    db.session.commit()
    return plain_response({"policy_id": str(policy.id), "removed": removed, "state_changes": len(changed)})


@bp.post("/compliance_policies/evaluate")
def evaluate_all():
    """Judge every device against every enabled policy now (the upkeep job also does, periodically)."""
    refuse_query_params(request.args)
    changed = workflows.reevaluate_compliance(db.session)
    db.session.commit()
    return plain_response({"state_changes": len(changed)})


@bp.get("/devices/<ident>/compliance")
def device_compliance(ident: str):
    """The device's compliance state, the policies it violates with the observed values, every policy
    that applies to it."""
    refuse_query_params(request.args)
    device = resolve.get_device(db.session, ident)
    state = service.device_state(db.session, device.id)
    results = service.device_results(db.session, device.id)
    return jsonapi_response(document(device_compliance_resource(device.id, state, results)))


@bp.get("/devices/<ident>/compliance/history")
def device_history(ident: str):
    """The device's compliance state changes, newest first by default."""
    device = resolve.get_device(db.session, ident)
    query = parse_list_query(request.args, filters={}, sorts={"changed_at": ComplianceHistory.changed_at},
                             default_sort=[ComplianceHistory.changed_at.desc(), ComplianceHistory.id.desc()])
    page = paginate(db.session, service.history_query(device.id), query)
    return jsonapi_response(list_document(page, [history_resource(h) for h in page.items]))
