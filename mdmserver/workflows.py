"""Use cases that span features: what happens when something changes.

The one floor where a change in one feature reacts in another: views call these functions (they never
trigger another feature's side effect themselves), and each function names its reactions in order.
Below it: the features' services, the command queue, the records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_
from sqlalchemy.orm import Session

from mdmserver.admission import service as admission
from mdmserver.app_assignments import service as app_assignments
from mdmserver.apps.models import App
from mdmserver.assignments import service as assignments
from mdmserver.audit.service import record_event
from mdmserver.blueprints import service as blueprints
from mdmserver.commands import service as commands
from mdmserver.commands.service import QueuePlan, enqueue_where, validate_command
from mdmserver.compliance import service as compliance
from mdmserver.compliance.service import Transition
from mdmserver.db import utcnow
from mdmserver.devices import service as devices
from mdmserver.errors import Conflict
from mdmserver.pki import service as pki
from mdmserver.pki.secretbox import SecretBox
from mdmserver.profiles import service as profiles
from mdmserver.profiles.models import Profile
from mdmserver.protocol import catalogue
from mdmserver.records.admission import AdmissionStatus, AuthSet
from mdmserver.records.devices import Device
from mdmserver.selection.conditions import manageable
from mdmserver.webhooks import events as webhook_events

# -- devices: asset fields (a new name renames the device), deletion ---------------------------

def rename_applicability(platform: str | None, supervised: bool | None) -> tuple[bool, str | None]:
    """Whether the Settings ``DeviceName`` item can rename a device of this platform and supervision."""
    variant = catalogue.get_spec("Settings").tree["keys"]["Settings"]["variants"]["DeviceName"]
    platforms = variant.get("platforms") or []
    if not platform:
        return False, "the device's platform is not known yet"
    if platform not in platforms:
        return False, f"renaming is not available on {platform}"
    if platform in (variant.get("supervised_on") or []) and not supervised:
        return False, f"renaming needs a supervised device on {platform}"
    return True, None


def rename_parameters(name: str) -> dict[str, Any]:
    return {"Settings": [{"Item": "DeviceName", "DeviceName": name}]}


def update_device(
    session: Session, device: Device, changes: dict[str, Any], *, actor: str | None, box: SecretBox,
    public_url: str,
) -> tuple[Device, dict[str, Any]]:
    """Apply asset-field changes; a new name also queues the rename command where the platform allows.

    Returns the device and a ``meta`` dict telling whether a rename command was queued and why not.
    """
    meta: dict[str, Any] = {}
    change = devices.update_asset_fields(session, device, changes)
    if "device_name" in changes and change["before"]["device_name"] != changes["device_name"]:
        ok, reason = rename_applicability(device.platform, device.is_supervised)
        if ok and device.enrolled:
            plan = QueuePlan("Settings", validate_command("Settings", rename_parameters(changes["device_name"])))
            (queued,) = enqueue_where(session, and_(Device.id == device.id, manageable()), [plan], actor=actor,
                                      now=utcnow(), box=box)
            if queued:
                meta["rename_command"] = queued[0][1]
            else:
                meta["rename_not_sent"] = "the device cannot receive commands (retired or refused)"
        else:
            meta["rename_not_sent"] = reason or "the device is not enrolled"
    session.flush()
    record_event(
        session, "device:update", "devices", device.id,
        {**change, **meta},
    )
    # smart groups may match the device anew
    group_membership_changed(session, actor=actor, box=box, public_url=public_url)
    return device, meta


def delete_device(session: Session, device: Device) -> None:
    """Forget a device: its commands, inventory, attributes, memberships and auth sets go with it.

    Every enrollment certificate it used is revoked, so that it cannot re-create itself with an
    ``Authenticate``; enrolling it again takes a new enrollment profile (and admission).
    """
    details = {"udid": device.udid, "serial_number": device.serial_number}
    device_id = device.id
    fingerprints = [device.identity_fingerprint, *admission.certificate_fingerprints(session, device_id)]
    revoked = pki.revoke_certificates(session, fingerprints)
    commands.delete_for_device(session, device_id)
    devices.delete_device(session, device)
    record_event(session, "device:delete", "devices", device_id, {**details, "certificates_revoked": revoked})


# -- groups: which devices are in which group ------------------------------------------------------

def group_membership_changed(
    session: Session, *, actor: str | None, box: SecretBox, public_url: str
) -> dict[str, int]:
    """Which devices are in which group may have changed: a group was created, changed (its filter,
    its parent) or deleted, static members were added or removed, or something smart groups filter on
    changed (custom attributes, asset fields, the inventory devices report). Bring the profiles, then
    the apps, assigned to groups in line (InstallProfile / RemoveProfile, InstallApplication /
    InstallEnterpriseApplication / RemoveApplication queued, set-based); returns the profile reconcile
    counts and the apps' as ``app_install_queued`` / ``app_removal_queued``. Then every blueprint, in
    ``apply_order`` (their smart-group scopes, and those whose ``start_on`` has come: the upkeep job calls
    this periodically), its counts as ``blueprints``. ``public_url``: the base of the app manifests' URLs."""
    counts = assignments.reconcile_all(session, actor=actor, box=box, groups_only=True)
    apps = app_assignments.reconcile_all(session, actor=actor, box=box, public_url=public_url, groups_only=True)
    plans = blueprints.reconcile_all(session, with_=blueprints.Collaborators(actor, box, public_url))
    reevaluate_compliance(session)  # compliance policies are scoped to groups, and judge custom attributes
    return {**counts, "app_install_queued": apps["install_queued"], "app_removal_queued": apps["removal_queued"],
            "blueprints": plans}


def custom_attributes_changed(session: Session, *, actor: str | None, box: SecretBox, public_url: str) -> None:
    """Devices' custom attributes were written or deleted: smart groups may filter on them."""
    group_membership_changed(session, actor=actor, box=box, public_url=public_url)


# -- profiles: a new revision, deletion ----------------------------------------------------------

def profile_revised(session: Session, profile: Profile, *, actor: str | None, box: SecretBox,
                    public_url: str) -> dict[str, int]:
    """A new revision of the profile (its keys or payloads changed, or a replacing upload): install it
    where the profile is assigned (InstallProfile queued, set-based), and tell the devices that get it as
    a declaration. Returns the reconcile counts, which the profile replies show as ``meta.assignments``."""
    counts = assignments.reconcile(session, profile, actor=actor, box=box)
    blueprints.profile_revised(session, with_=blueprints.Collaborators(actor, box, public_url))
    return counts


# -- apps: a new revision --------------------------------------------------------------------------

def app_revised(session: Session, app: App, *, actor: str | None, box: SecretBox, public_url: str) -> dict[str, int]:
    """A new package of an enterprise app was uploaded (its ``revision`` went up): queue the install
    again where the app is installed from an older revision (InstallApplication of a managed app
    updates it). Returns the reconcile counts. Deleting an app needs no reaction: the catalogue refuses
    to delete an assigned app."""
    return app_assignments.reconcile(session, app, actor=actor, box=box, public_url=public_url)


def delete_profile(session: Session, profile: Profile, *, actor: str | None, box: SecretBox, public_url: str) -> None:
    """Delete a profile; where it was assigned (or in a blueprint) and installed, RemoveProfile is queued
    first (DeclarativeManagement where a blueprint sent it as a declaration)."""
    blueprints.drop_profile(session, profile, with_=blueprints.Collaborators(actor, box, public_url))
    assigned = assignments.list_assignments(session, profile)
    if assigned:
        assignments.unassign(
            session, profile,
            devices=[a.device_id for a in assigned if a.device_id is not None],
            groups=[a.group_id for a in assigned if a.group_id is not None],
            actor=actor, box=box,
        )
    profiles.delete_profile(session, profile)


# -- admission and push tokens: when a device can be woken -----------------------------------------

@dataclass
class AdmissionDecision:
    """What an admission decision did. ``moved_from``: the certificate the device was bound to before
    accepting a held re-binding moved the binding (``None``: it did not move); ``cancelled``: the
    secret-bearing commands cancelled then; ``rejected``: the device's other auth sets that were
    admitted and are rejected now."""

    auth_set: AuthSet
    moved_from: str | None = None
    cancelled: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def decide_admission(
    session: Session, auth_set: AuthSet, status: str, *, actor: str | None, box: SecretBox, public_url: str
) -> AdmissionDecision:
    """An admin accepts or rejects an auth set (the transition was checked by the admission API).

    1. Accepting a *held* re-binding (a new certificate claimed the device while its previous binding
       was valid) moves the binding: the previous enrollment's secrets are forgotten, the held
       enrollment's push token and UnlockToken take their place, queued commands whose delivery would
       hand over a secret are cancelled (they were meant for the previous holder), and the device's
       other admitted auth sets are rejected. Rejecting one leaves the device as it is.
    2. The auth set's (and the device's) status changes.
    3. An accepted device is owed a push for the commands queued while it waited, and it gets the
       profiles and apps assigned to it in this transaction; after a move, as a new enrollment.
    """
    decision = AdmissionDecision(auth_set)
    if admission.accepting_held_rebinding(session, auth_set, status):
        device = session.get(Device, auth_set.device_id)
        if not pki.is_valid_device_certificate(session, auth_set.fingerprint, utcnow()):
            # moving the binding would cut the device off for a certificate that cannot sign any more
            raise Conflict(f"the certificate of auth set {auth_set.id} expired or was revoked; "
                           "the device has to enroll again")
        bound = devices.device_bound_to(session, auth_set.fingerprint)
        if bound is not None and bound.id != device.id:
            raise Conflict(f"the certificate of auth set {auth_set.id} is bound to another device ({bound.id})")
        decision.moved_from = devices.move_binding(session, device, auth_set)
        decision.cancelled = commands.cancel_secret_bearing(session, device.id, box=box)
        decision.rejected = admission.reject_other_admitted(session, auth_set)
    admission.set_auth_set_status(session, auth_set, status)
    device = session.get(Device, auth_set.device_id)
    if decision.moved_from is not None and device is not None:
        webhook_events.device_enrolled(session, device, rebinding=True)  # the held enrollment completes now
    if device is not None and device.admission_status == AdmissionStatus.ACCEPTED:
        commands.request_push_if_queued(session, device.id, reason="admission")
    assignments.reconcile_devices(session, [auth_set.device_id], actor=actor, box=box,
                                  new_enrollment=decision.moved_from is not None)
    app_assignments.reconcile_devices(session, [auth_set.device_id], actor=actor, box=box, public_url=public_url,
                                      new_enrollment=decision.moved_from is not None)
    blueprints.reconcile_devices(session, [auth_set.device_id], with_=blueprints.Collaborators(actor, box, public_url),
                                 new_enrollment=decision.moved_from is not None)
    return decision


def token_updated(session: Session, device_id: int) -> None:
    """The device sent its (new) push token on the device channel: owe it a push if commands wait."""
    commands.request_push_if_queued(session, device_id, reason="token_update")


# -- compliance: policies judged over the inventory --------------------------------------------------

#: the most transitions one audit event lists (the count is always complete)
AUDITED_TRANSITIONS = 100


def reevaluate_compliance(session: Session, device_ids: list[int] | None = None) -> list[Transition]:
    """Judge the devices (all of them, or ``device_ids``) against every enabled compliance policy,
    set-based; the transitions go to :func:`compliance_changed`. Called after a policy or its scope
    changed, after a device's inventory answer was stored, when group membership may have changed, and
    by the upkeep job (last-check-in rules depend on the time)."""
    transitions = compliance.evaluate(session, device_ids)
    compliance_changed(session, transitions)
    return transitions


def compliance_changed(session: Session, changes: list[Transition]) -> None:
    """Devices' overall compliance states changed (the history rows are written already): one audit
    event naming them, and a ``compliance.changed`` webhook event per device."""
    if not changes:
        return
    record_event(
        session, "compliance:changed", "devices", changes[0].device_id if len(changes) == 1 else "bulk",
        {"count": len(changes),
         "changes": [{"device_id": c.device_id, "from": c.from_state, "to": c.to_state}
                     for c in changes[:AUDITED_TRANSITIONS]]},
        actor="compliance",
    )
    refs = devices.device_refs(session, [c.device_id for c in changes])
    webhook_events.compliance_changed(session, [
        webhook_events.ComplianceChange(refs[c.device_id], c.from_state, c.to_state)
        for c in changes if c.device_id in refs
    ])


def inventory_applied(session: Session, device_id: int, request_type: str) -> None:
    """A device's answer was applied to its inventory: judge that device again when the answer is one
    the compliance rules read."""
    if request_type in compliance.INVENTORY_INPUTS:
        reevaluate_compliance(session, [device_id])
