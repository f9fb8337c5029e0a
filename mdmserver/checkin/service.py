"""Device-facing protocol handlers: enrollment profile, check-in messages, the command channel.

Functions take a session and explicit arguments and return the response body (``None`` for an
empty 200). Refusals are ``Forbidden`` with a generic body; the reason is logged here.
"""

from __future__ import annotations

import json
import logging
import secrets
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from mdmserver.admission import service as admission
from mdmserver.admission.models import AdmissionStatus
from mdmserver.assignments import service as assignments
from mdmserver.audit.service import record_event
from mdmserver.checkin.auth import DeviceIdentity
from mdmserver.commands import service as commands
from mdmserver.commands.models import CommandStatus
from mdmserver.db import utcnow
from mdmserver.devices import service as devices
from mdmserver.devices.models import Device
from mdmserver.errors import BadRequest, Forbidden, Gone, ServiceUnavailable
from mdmserver.organization.service import enrollment_profile_identifier
from mdmserver.pki import cms, x509
from mdmserver.pki import service as pki
from mdmserver.pki.secretbox import SecretBox
from mdmserver.protocol import checkin as msgs
from mdmserver.protocol.plist import dump_plist
from mdmserver.protocol.results import CommandResult, ResultStatus, command_envelope

log = logging.getLogger("mdmserver.checkin")

ACCESS_RIGHTS_ALL = 8191
REFUSED = admission.REFUSED
#: ``enqueued_by`` of the profile commands a device's own check-in causes
RECONCILE_ACTOR = "assignments"


class RecordedRefusal(Forbidden):
    """A refusal that leaves a record an administrator must see (a rejected device's new
    enrollment): the caller commits before answering 403."""


def refuse(reason: str, *args, record: bool = False) -> Forbidden:
    log.warning("device request refused: " + reason, *args)
    return RecordedRefusal("forbidden") if record else Forbidden("forbidden")


# --- enrollment ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnrollmentProfile:
    signed: bytes
    certificate_id: int
    fingerprint: str


def build_enrollment_profile(
    session: Session, *, public_url: str, topic: str | None, organization: str, prefix: str, box: SecretBox
) -> EnrollmentProfile:
    """Issue a fresh device identity and return the signed enrollment profile.

    Only the certificate is stored (to recognise it at ``Authenticate``); the device's private key
    exists only inside the profile's PKCS#12; the server never needs it again.
    """
    if not topic:
        raise ServiceUnavailable(
            "no APNs push certificate: import one with `mdmserver push-cert import FILE` "
            "or PUT /api/v1/push_certificate before enrolling devices"
        )
    ca_cert, ca_key = pki.get_ca(session, box)
    server_cert, server_key = pki.get_server_identity(session, box)
    key = x509.generate_private_key()
    enrollment_id = str(uuidlib.uuid4()).upper()
    cert = x509.issue_certificate(
        ca_cert, ca_key, common_name=f"mdmserver device {enrollment_id}", public_key=key.public_key(),
        days=365 * 2, usage="client", organization=organization,
    )
    row = pki.store_certificate(session, cert, pki.PURPOSE_DEVICE)
    password = secrets.token_urlsafe(24)
    p12 = x509.build_pkcs12(cert, key, password=password.encode(), friendly_name=b"MDM identity")
    identity_uuid = str(uuidlib.uuid4()).upper()
    ca_uuid = str(uuidlib.uuid4()).upper()
    mdm_uuid = str(uuidlib.uuid4()).upper()
    prefix = enrollment_profile_identifier(prefix)
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": prefix,
        "PayloadUUID": str(uuidlib.uuid4()).upper(),
        "PayloadDisplayName": f"{organization} MDM enrollment",
        "PayloadDescription": "Enrolls this device in mobile device management",
        "PayloadOrganization": organization,
        "PayloadScope": "System",
        "PayloadContent": [
            {
                "PayloadType": "com.apple.security.root",
                "PayloadVersion": 1,
                "PayloadIdentifier": f"{prefix}.ca",
                "PayloadUUID": ca_uuid,
                "PayloadDisplayName": f"{organization} MDM CA",
                "PayloadContent": x509.cert_to_der(ca_cert),
            },
            {
                "PayloadType": "com.apple.security.pkcs12",
                "PayloadVersion": 1,
                "PayloadIdentifier": f"{prefix}.identity",
                "PayloadUUID": identity_uuid,
                "PayloadDisplayName": "MDM device identity",
                "Password": password,
                "PayloadContent": p12,
            },
            {
                "PayloadType": "com.apple.mdm",
                "PayloadVersion": 1,
                "PayloadIdentifier": f"{prefix}.mdm",
                "PayloadUUID": mdm_uuid,
                "PayloadDisplayName": "Mobile device management",
                "ServerURL": f"{public_url}/mdm/connect",
                "CheckInURL": f"{public_url}/mdm/checkin",
                "Topic": topic,
                "IdentityCertificateUUID": identity_uuid,
                "SignMessage": True,
                "AccessRights": ACCESS_RIGHTS_ALL,
                "CheckOutWhenRemoved": True,
                "ServerCapabilities": ["com.apple.mdm.per-user-connections", "com.apple.mdm.bootstraptoken"],
            },
        ],
    }
    signed = cms.sign(dump_plist(profile), server_cert, server_key)
    return EnrollmentProfile(signed=signed, certificate_id=row.id, fingerprint=row.fingerprint_sha256)


# --- check-in --------------------------------------------------------------------------------------


def bound_device(session: Session, udid: str, identity: DeviceIdentity) -> Device:
    """The device this UDID names, provided the request's certificate is the one bound to it."""
    device = devices.get_device_by_udid(session, udid)
    if device is None:
        raise refuse("unknown device %s (no Authenticate yet)", udid)
    if device.identity_fingerprint != identity.fingerprint:
        raise refuse("certificate %s is not the one bound to device %s", identity.fingerprint[:16], udid)
    if pki.device_certificate(session, identity.fingerprint) is None:
        raise refuse("certificate %s of device %s is revoked", identity.fingerprint[:16], udid)
    if device.admission_status in REFUSED:
        raise refuse("device %s is %s", udid, device.admission_status)
    return device


@dataclass(frozen=True)
class CheckinSettings:
    admission_policy: str
    preauthorized: Iterable[str]
    push_topic: Callable[[Session], str | None]
    box: SecretBox


def handle_checkin(
    session: Session, message: msgs.CheckinMessage, identity: DeviceIdentity, settings: CheckinSettings
) -> bytes | None:
    """Handle one check-in message; the return value is the response body (``None``: empty 200)."""
    if isinstance(message, msgs.Authenticate):
        return _authenticate(session, message, identity, settings)
    device = bound_device(session, message.udid, identity)
    devices.touch_last_seen(session, device, utcnow())
    if isinstance(message, msgs.TokenUpdate):
        ours = settings.push_topic(session)
        if ours and message.topic and message.topic != ours:
            raise refuse("TokenUpdate from %s for topic %s, ours is %s", device.udid, message.topic, ours)
        devices.apply_token_update(session, device, message, settings.box)
        if not message.is_user_channel:
            session.flush()
            commands.request_push_if_queued(session, device.id, reason="token_update")
        return None
    if isinstance(message, msgs.CheckOut):
        devices.apply_checkout(session, device, message.user_id)
        if message.user_id is None:
            cancelled = commands.cancel_queue(session, device.id)
            log.info("device %s checked out; %d queued commands cancelled", device.udid, cancelled)
        return None
    if isinstance(message, msgs.UserAuthenticate):
        raise Gone("user authentication is not supported")
    if isinstance(message, msgs.SetBootstrapToken):
        devices.set_bootstrap_token(device, message, settings.box)
        return None
    if isinstance(message, msgs.GetBootstrapToken):
        if device.admission_status != AdmissionStatus.ACCEPTED:
            log.warning("GetBootstrapToken from %s answered without a token: the device is %s",
                        device.udid, device.admission_status)
            return dump_plist({})
        token = devices.bootstrap_token(device, settings.box)
        return dump_plist({"BootstrapToken": token} if token is not None else {})
    if isinstance(message, msgs.GetToken):
        raise BadRequest(f"GetToken for {message.token_service_type or 'an unnamed service'} is not supported")
    if isinstance(message, msgs.DeclarativeManagement):
        return _declarative(device, message)
    raise BadRequest(f"unsupported MessageType {message.message_type!r}")


def _authenticate(
    session: Session, message: msgs.Authenticate, identity: DeviceIdentity, settings: CheckinSettings
) -> None:
    """Bind the certificate to the UDID and admit the device.

    A UDID already bound to another certificate is a re-enrollment *or an impostor*: the secrets the
    previous enrollment gave are forgotten, commands that would hand over a secret are cancelled, and
    the new auth set is flagged and held (pending while the previous binding is still valid: its
    certificate is not expired or revoked and the device did not check out; rejected when the device
    was rejected) for an administrator to decide.
    """
    if message.is_user_channel:
        raise BadRequest("Authenticate is a device-channel message")
    if pki.device_certificate(session, identity.fingerprint) is None:
        raise refuse("Authenticate for %s with a certificate not issued at enrollment, or revoked", message.udid)
    holder = devices.device_bound_to(session, identity.fingerprint)
    if holder is not None and holder.udid != message.udid:
        raise refuse("certificate %s is bound to device %s, not %s",
                     identity.fingerprint[:16], holder.udid, message.udid)
    existing = devices.get_device_by_udid(session, message.udid)
    if existing is not None and existing.admission_status == AdmissionStatus.DECOMMISSIONED:
        raise refuse("device %s is decommissioned", message.udid)
    previous = existing.identity_fingerprint if existing is not None else None
    rebinding = previous is not None and previous != identity.fingerprint
    # the previous binding ended when its holder checked out (a request signed with its key) while it
    # was accepted: a CheckOut from a binding still held for an administrator (an impostor's pending
    # re-binding) ends nothing, or the impostor's next identity would be admitted by the policy
    checked_out = (
        existing is not None and not existing.enrolled and existing.unenrolled_at is not None
        and existing.admission_status == AdmissionStatus.ACCEPTED
    )
    previous_valid = (
        rebinding and not checked_out and pki.is_valid_device_certificate(session, previous, utcnow())
    )
    device = devices.apply_authenticate(session, message, identity.fingerprint)
    if rebinding:
        cancelled = commands.cancel_secret_bearing(session, device.id, settings.box)
        log.warning(
            "device %s re-bound from certificate %s (%s) to %s: UnlockToken and BootstrapToken "
            "forgotten, %d secret-bearing commands cancelled",
            device.udid, previous[:16], "still valid: held for an administrator" if previous_valid
            else "no longer valid", identity.fingerprint[:16], len(cancelled),
        )
        record_event(session, "device:auth_set:rebind", "devices", device.id, {
            "udid": device.udid, "previous_certificate_fingerprint": previous,
            "certificate_fingerprint": identity.fingerprint, "previous_binding_valid": previous_valid,
            "cancelled_commands": cancelled,
        }, actor=f"device:{device.udid}")
    admission.admit(
        session, device, identity.pubkey_pem,
        policy=settings.admission_policy, preauthorized=settings.preauthorized,
        fingerprint=identity.fingerprint, previous_fingerprint=previous if rebinding else None,
        previous_valid=previous_valid,
    )
    if device.admission_status in REFUSED:
        raise refuse("device %s is %s", device.udid, device.admission_status, record=rebinding)

    # Issue 9 item 6: a new enrollment gets the profiles assigned to it (directly, by group or smart
    # group) in this transaction; a pending device gets them when it is accepted.
    assignments.reconcile_devices(session, [device.id], actor=RECONCILE_ACTOR, box=settings.box,
                                 new_enrollment=True)

    log.info("device %s authenticated (admission %s)", device.udid, device.admission_status)
    return None


def _declarative(device: Device, message: msgs.DeclarativeManagement) -> bytes | None:
    """Minimal declarative management: no declarations are managed by this server."""
    endpoint = message.endpoint or ""
    token = "mdmserver-no-declarations"
    if endpoint == "status":
        if message.data is not None:
            try:
                json.loads(message.data)
            except (ValueError, RecursionError):
                raise BadRequest("DeclarativeManagement status Data is not JSON") from None
        log.info("device %s sent a declarative status report (not stored: no declarations managed)",
                 device.udid)
        return None
    if endpoint == "tokens":
        body = {"SyncTokens": {"DeclarationsToken": token, "Timestamp": "2000-01-01T00:00:00Z"}}
    elif endpoint == "declaration-items":
        body = {"Declarations": {"Activations": [], "Assets": [], "Configurations": [], "Management": []},
                "DeclarationsToken": token}
    else:
        raise BadRequest(f"unknown declarative management endpoint {endpoint!r}")
    return json.dumps(body).encode()


# --- command channel -------------------------------------------------------------------------------


def handle_connect(
    session: Session, result: CommandResult, raw: bytes, identity: DeviceIdentity, box: SecretBox
) -> bytes | None:
    """Record a result (if any) and return the next command's plist, or ``None`` for an empty 200.

    One query reads the device and its next command; the statement count does not depend on the
    queue length or the number of devices.
    """
    now = utcnow()
    idle = result.status is ResultStatus.IDLE
    state = commands.connect_state(session, result.udid, after_idle=idle, now=now)
    if state is None:
        raise refuse("unknown device %s (no Authenticate yet)", result.udid)
    if state.identity_fingerprint != identity.fingerprint:
        raise refuse("certificate %s is not the one bound to device %s", identity.fingerprint[:16], result.udid)
    if state.identity_revoked_at is not None:
        raise refuse("certificate %s of device %s is revoked", identity.fingerprint[:16], result.udid)
    if state.admission_status in REFUSED:
        raise refuse("device %s is %s", result.udid, state.admission_status)
    devices.touch_last_seen(session, state, now)
    if not idle:
        answered = commands.record_result(session, state.id, result, raw, box)
        queued_now = False
        if answered is not None and answered.status == CommandStatus.ACKNOWLEDGED:
            inventory_update = devices.apply_inventory(session, state.id, answered.request_type, result.raw)
            if inventory_update.group_fields_changed:
                # it may have entered or left a smart group: its assignments follow, for this device only
                counts = assignments.reconcile_devices(session, [state.id], actor=RECONCILE_ACTOR, box=box)
                queued_now = bool(counts["install_queued"] or counts["removal_queued"])
        if answered is not None and (answered.id == state.command_id or queued_now):
            # the device answered a command it was never offered, or a profile command was just
            # queued for it: look again
            session.flush()
            state = commands.connect_state(session, result.udid, after_idle=False, now=now)
    if result.user_id is not None or state.admission_status != AdmissionStatus.ACCEPTED:
        return None
    if state.command_id is None:
        return None
    commands.mark_sent(session, state.command_id, now)
    params = commands.command_parameters(state.command_parameters, box)  # unsealed for the wire
    if state.command_request_type == "ClearPasscode":
        device = session.get(Device, state.id)
        token = devices.unlock_token(device, box) if device is not None else None
        if token is not None:
            params["UnlockToken"] = token
    return dump_plist(command_envelope(state.command_uuid, state.command_request_type, params))
