"""Use cases that span features: what happens when something changes.

The one floor where a change in one feature reacts in another: views call these functions (they never
trigger another feature's side effect themselves), and each function names its reactions in order.
Below it: the features' services, the command queue, the records.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_
from sqlalchemy.orm import Session

from mdmserver.admission import service as admission
from mdmserver.assignments import service as assignments
from mdmserver.audit.service import record_event
from mdmserver.commands import service as commands
from mdmserver.commands.service import QueuePlan, enqueue_where, validate_command
from mdmserver.db import utcnow
from mdmserver.devices import service as devices
from mdmserver.devices.models import Device
from mdmserver.pki import service as pki
from mdmserver.pki.secretbox import SecretBox
from mdmserver.protocol import catalogue
from mdmserver.selection.conditions import manageable

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
    session: Session, device: Device, changes: dict[str, Any], *, actor: str | None, box: SecretBox
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
    # smart groups may match the device anew: bring their profile assignments in line
    assignments.reconcile_all(session, actor=actor, box=box, groups_only=True)
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
