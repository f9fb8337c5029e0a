"""Remediation of non-compliant devices: the policy's action, once per transition, after the grace period.

The upkeep job calls :func:`remediate`: the due results are claimed with one ``UPDATE … RETURNING``
(:func:`mdmserver.compliance.service.claim_remediations`), then each policy's action runs once for all
of its claimed devices through the existing services: a ``scan`` or ``lock`` is a bulk action
(``actions.service.run_action``: eligibility, the queue and the push outbox), ``install_profile``
assigns the profile to the devices (``assignments.service.assign``: InstallProfile queued),
``add_to_group`` adds them to a static group (then group membership changed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from mdmserver import workflows
from mdmserver.actions import service as actions
from mdmserver.assignments import service as assignments
from mdmserver.audit.service import record_event
from mdmserver.compliance import service as compliance
from mdmserver.compliance.models import CompliancePolicy, RemediationType
from mdmserver.errors import AppError
from mdmserver.groups import service as groups
from mdmserver.pki.secretbox import SecretBox
from mdmserver.profiles.models import Profile
from mdmserver.records.devices import Device
from mdmserver.selection.sql import in_values
from mdmserver.selection.targets import Targets

log = logging.getLogger("mdmserver.compliance")

#: the actor of the commands a remediation queues (audit log, ``enqueued_by``)
REMEDIATION_ACTOR = "compliance"

Remedy = Callable[[Session, dict[str, Any], list[int], SecretBox, str], dict[str, Any]]


def _action(name: str, parameters: Callable[[dict[str, Any]], dict[str, Any]]) -> Remedy:
    def run(session: Session, remediation: dict[str, Any], ids: list[int], box: SecretBox,
            public_url: str) -> dict[str, Any]:
        target = Targets(condition=in_values(session, Device.id, ids, integer=True))
        outcome = actions.run_action(session, actions.get_action(name), target, parameters(remediation),
                                     actor=REMEDIATION_ACTOR, box=box)
        return {"queued": len(outcome.success), "not_applicable": len(outcome.not_applicable)}
    return run


def _install_profile(session: Session, remediation: dict[str, Any], ids: list[int], box: SecretBox,
                     public_url: str) -> dict[str, Any]:
    profile = session.get(Profile, remediation["profile_id"])
    if profile is None:
        return {"skipped": f"profile {remediation['profile_id']} no longer exists"}
    counts = assignments.assign(session, profile, devices=ids, actor=REMEDIATION_ACTOR, box=box)
    return {"assigned": counts["assigned"], "queued": counts.get("install_queued", 0)}


def _add_to_group(session: Session, remediation: dict[str, Any], ids: list[int], box: SecretBox,
                  public_url: str) -> dict[str, Any]:
    try:
        group = groups.get_group(session, remediation["group_id"])
        added = groups.add_members(session, group, ids)
    except AppError as exc:  # the group was deleted, or made smart, since the policy named it
        return {"skipped": exc.detail}
    workflows.group_membership_changed(session, actor=REMEDIATION_ACTOR, box=box, public_url=public_url)
    return {"added": added}


#: remediation action → what it does for the claimed devices of one policy
REMEDIES: dict[str, Remedy] = {
    RemediationType.SCAN: _action("scan", lambda r: {}),
    RemediationType.LOCK: _action("lock", lambda r: {"message": r["message"]} if r.get("message") else {}),
    RemediationType.INSTALL_PROFILE: _install_profile,
    RemediationType.ADD_TO_GROUP: _add_to_group,
}


def remediate(session: Session, *, box: SecretBox, public_url: str, now: datetime | None = None) -> dict[int, Any]:
    """Claim the due remediations and run each policy's action for its devices; returns policy id →
    what was done. The caller commits (claims and commands in one transaction)."""
    done: dict[int, Any] = {}
    for claim in compliance.claim_remediations(session, now=now):
        policy = session.get(CompliancePolicy, claim.policy_id)
        if policy is None or not policy.remediation:
            continue
        remediation = policy.remediation
        outcome = REMEDIES[remediation["action"]](session, remediation, claim.device_ids, box, public_url)
        done[policy.id] = outcome
        record_event(session, "compliance_policy:remediate", "compliance_policies", policy.id,
                     {"action": remediation["action"], "devices": claim.device_ids[:100],
                      "device_count": len(claim.device_ids), **outcome}, actor=REMEDIATION_ACTOR)
        log.info("compliance policy %s: %s for %d devices: %s", policy.id, remediation["action"],
                 len(claim.device_ids), outcome)
    return done
