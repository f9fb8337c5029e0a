"""Device-facing protocol handlers: enrollment profile, check-in messages, the command channel.

Functions take a session and explicit arguments and return the response body (``None`` for an
empty 200). Refusals are ``Forbidden`` with a generic body; the reason is logged here.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import secrets
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from mdmserver import workflows
from mdmserver.admission import service as admission
from mdmserver.app_assignments import service as app_assignments
from mdmserver.assignments import service as assignments
from mdmserver.audit.service import record_event
from mdmserver.blueprints import service as blueprints
from mdmserver.checkin.auth import DeviceIdentity
from mdmserver.commands import service as commands
from mdmserver.compliance import service as compliance
from mdmserver.db import DriverConnection, session_driver, utcnow
from mdmserver.ddm import service as ddm
from mdmserver.devices import service as devices
from mdmserver.errors import BadRequest, Forbidden, Gone, ServiceUnavailable
from mdmserver.organization.service import enrollment_profile_identifier
from mdmserver.pki import cms, x509
from mdmserver.pki import service as pki
from mdmserver.pki.secretbox import SecretBox
from mdmserver.protocol import checkin as msgs
from mdmserver.protocol.plist import dump_plist
from mdmserver.protocol.results import CommandResult, ResultStatus, command_envelope
from mdmserver.records.admission import REFUSED_STATUSES, AdmissionStatus, AuthSet
from mdmserver.records.commands import CommandStatus
from mdmserver.records.devices import Device
from mdmserver.scep import service as scep
from mdmserver.webhooks import events as webhook_events
from mdmserver.webhooks import outbox as webhook_outbox
from mdmserver.webhooks.events import DeviceRef

log = logging.getLogger("mdmserver.checkin")

ACCESS_RIGHTS_ALL = 8191
#: ``enqueued_by`` of the profile commands a device's own check-in causes
RECONCILE_ACTOR = "assignments"


class RecordedRefusal(Forbidden):
    """A refusal that leaves a record an administrator must see (a rejected device's new
    enrollment): the caller commits before answering 403."""


def refuse(reason: str, *args, record: bool = False) -> Forbidden:
    log.warning("device request refused: " + reason, *args)
    return RecordedRefusal("forbidden") if record else Forbidden("forbidden")


# --- enrollment ------------------------------------------------------------------------------------


class EnrollmentIdentity(enum.StrEnum):
    """How an enrolling device gets its identity (``MDMSERVER_ENROLLMENT_IDENTITY``)."""

    #: the device makes its key and asks ``/scep`` for its certificate with the profile's challenge
    SCEP = "scep"
    #: the server makes the key and certificate and ships both in the profile's PKCS#12
    PKCS12 = "pkcs12"


@dataclass(frozen=True)
class EnrollmentSettings:
    public_url: str
    topic: str | None
    organization: str
    prefix: str
    box: SecretBox
    identity: EnrollmentIdentity = EnrollmentIdentity.SCEP
    scep_challenge_ttl: timedelta = scep.DEFAULT_CHALLENGE_TTL
    #: lifetime of the identity certificate (``identity_lifetime_days``)
    lifetime_days: float = pki.DEVICE_IDENTITY_DAYS
    #: the profile replaces the enrollment profile of the enrolled device with this UDID (identity
    #: renewal, ``checkin/renewal.py``): its identity certificate is marked so
    renews_udid: str | None = None


@dataclass(frozen=True)
class EnrollmentProfile:
    signed: bytes
    #: the enrollment id the device's identity certificate names (``mdmserver device <id>``)
    enrollment_id: str
    #: the identity issued with the profile (PKCS#12 mode); ``None`` in SCEP mode, where the device
    #: gets its certificate from ``/scep`` later
    certificate_id: int | None = None
    fingerprint: str | None = None


#: the SCEP payload's Key Usage: 1 (signing) | 4 (encryption), Apple's values
SCEP_KEY_USAGE = 5
SCEP_KEY_SIZE = 2048
SCEP_RETRIES = 3
SCEP_RETRY_DELAY = 10


def _pkcs12_payload(session: Session, settings: EnrollmentSettings, enrollment_id: str, ca_cert, ca_key,
                    prefix: str) -> tuple[dict, EnrollmentProfile]:
    """The PKCS#12 identity payload: a key made here and its certificate, both inside the profile.
    Only the certificate is stored (to recognise it at ``Authenticate``)."""
    key = x509.generate_private_key()
    cert = x509.issue_certificate(
        ca_cert, ca_key, common_name=pki.device_common_name(enrollment_id), public_key=key.public_key(),
        days=settings.lifetime_days, usage="client", organization=settings.organization,
    )
    row = pki.store_certificate(session, cert, pki.PURPOSE_DEVICE, renews_udid=settings.renews_udid)
    password = secrets.token_urlsafe(24)
    p12 = x509.build_pkcs12(cert, key, password=password.encode(), friendly_name=b"MDM identity")
    payload = {
        "PayloadType": "com.apple.security.pkcs12",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{prefix}.identity",
        "PayloadUUID": str(uuidlib.uuid4()).upper(),
        "PayloadDisplayName": "MDM device identity",
        "Password": password,
        "PayloadContent": p12,
    }
    return payload, EnrollmentProfile(signed=b"", enrollment_id=enrollment_id, certificate_id=row.id,
                                      fingerprint=row.fingerprint_sha256)


def _scep_payload(session: Session, settings: EnrollmentSettings, enrollment_id: str, ca_cert, ca_key,
                  prefix: str) -> tuple[dict, EnrollmentProfile]:
    """The SCEP payload: the device makes its own key and asks ``/scep`` with a single-use challenge.

    No CAFingerprint: Apple's schema does not say which digest it is; the CA certificate payload
    beside it already makes the device trust our CA."""
    challenge = scep.issue_challenge(session, enrollment_id=enrollment_id, ttl=settings.scep_challenge_ttl,
                                     lifetime_days=settings.lifetime_days, renews_udid=settings.renews_udid)
    payload = {
        "PayloadType": "com.apple.security.scep",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{prefix}.identity",
        "PayloadUUID": str(uuidlib.uuid4()).upper(),
        "PayloadDisplayName": "MDM device identity",
        "PayloadContent": {
            "URL": f"{settings.public_url}/scep",
            "Name": settings.organization,
            "Challenge": challenge,
            "Keysize": SCEP_KEY_SIZE,
            "Key Type": "RSA",
            "Key Usage": SCEP_KEY_USAGE,
            "Subject": [[["CN", pki.device_common_name(enrollment_id)]], [["O", settings.organization]]],
            "Retries": SCEP_RETRIES,
            "RetryDelay": SCEP_RETRY_DELAY,
        },
    }
    return payload, EnrollmentProfile(signed=b"", enrollment_id=enrollment_id)


_IDENTITY_PAYLOADS = {
    EnrollmentIdentity.SCEP: _scep_payload,
    EnrollmentIdentity.PKCS12: _pkcs12_payload,
}


def build_enrollment_profile(session: Session, settings: EnrollmentSettings) -> EnrollmentProfile:
    """The signed enrollment profile for one new enrollment: our CA, the device identity (a SCEP
    payload with a fresh challenge, or a PKCS#12 made here: ``settings.identity``) and the MDM payload
    naming that identity."""
    if not settings.topic:
        raise ServiceUnavailable(
            "no APNs push certificate: import one with `mdmserver push-cert import FILE` "
            "or PUT /api/v1/push_certificate before enrolling devices"
        )
    ca_cert, ca_key = pki.get_ca(session, settings.box)
    server_cert, server_key = pki.get_server_identity(session, settings.box)
    enrollment_id = str(uuidlib.uuid4()).upper()
    prefix = enrollment_profile_identifier(settings.prefix)
    identity, result = _IDENTITY_PAYLOADS[settings.identity](session, settings, enrollment_id, ca_cert, ca_key,
                                                             prefix)
    organization = settings.organization
    public_url = settings.public_url
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
                "PayloadUUID": str(uuidlib.uuid4()).upper(),
                "PayloadDisplayName": f"{organization} MDM CA",
                "PayloadContent": x509.cert_to_der(ca_cert),
            },
            identity,
            {
                "PayloadType": "com.apple.mdm",
                "PayloadVersion": 1,
                "PayloadIdentifier": f"{prefix}.mdm",
                "PayloadUUID": str(uuidlib.uuid4()).upper(),
                "PayloadDisplayName": "Mobile device management",
                "ServerURL": f"{public_url}/mdm/connect",
                "CheckInURL": f"{public_url}/mdm/checkin",
                "Topic": settings.topic,
                "IdentityCertificateUUID": identity["PayloadUUID"],
                "SignMessage": True,
                "AccessRights": ACCESS_RIGHTS_ALL,
                "CheckOutWhenRemoved": True,
                "ServerCapabilities": ["com.apple.mdm.per-user-connections", "com.apple.mdm.bootstraptoken"],
            },
        ],
    }
    signed = cms.sign(dump_plist(profile), server_cert, server_key)
    return dataclasses.replace(result, signed=signed)


# --- check-in --------------------------------------------------------------------------------------


def bound_device(session: Session, device: Device | None, udid: str, identity: DeviceIdentity) -> Device:
    """The device this UDID names (``device``, looked up by the caller), provided the request's
    certificate is the one bound to it."""
    if device is None:
        raise refuse("unknown device %s (no Authenticate yet)", udid)
    if device.identity_fingerprint != identity.fingerprint:
        raise refuse("certificate %s is not the one bound to device %s", identity.fingerprint[:16], udid)
    if pki.device_certificate(session, identity.fingerprint) is None:
        raise refuse("certificate %s of device %s is revoked", identity.fingerprint[:16], udid)
    if device.admission_status in REFUSED_STATUSES:
        raise refuse("device %s is %s", udid, device.admission_status)
    return device


@dataclass(frozen=True)
class CheckinSettings:
    admission_policy: str
    preauthorized: Iterable[str]
    push_topic: Callable[[Session], str | None]
    box: SecretBox
    #: the server's public base URL (app manifests queued for a new enrollment point there)
    public_url: str


def handle_checkin(
    session: Session, message: msgs.CheckinMessage, identity: DeviceIdentity, settings: CheckinSettings
) -> bytes | None:
    """Handle one check-in message; the return value is the response body (``None``: empty 200)."""
    if isinstance(message, msgs.Authenticate):
        return _authenticate(session, message, identity, settings)
    device = devices.get_device_by_udid(session, message.udid)
    if isinstance(message, msgs.TokenUpdate):
        held = _held_enrollment(session, device, identity)
        if held is not None:
            return _held_token_update(session, device, held, message, settings)
    device = bound_device(session, device, message.udid, identity)
    devices.touch_last_seen(session, device, utcnow())
    handler = _BOUND_HANDLERS.get(message.message_type)
    if handler is None:
        raise BadRequest(f"unsupported MessageType {message.message_type!r}")
    return handler(session, device, message, settings)


def _token_update(session: Session, device: Device, message: msgs.TokenUpdate, settings: CheckinSettings) -> None:
    _check_topic(session, device.udid, message, settings)
    devices.apply_token_update(session, device, message, settings.box)
    if not message.is_user_channel:
        session.flush()
        workflows.token_updated(session, device.id)
    return None


def _checkout(session: Session, device: Device, message: msgs.CheckOut, settings: CheckinSettings) -> None:
    devices.apply_checkout(session, device, message.user_id)
    if message.user_id is None:
        cancelled = commands.cancel_queue(session, device.id)
        # the device removed its MDM profile and the identity with it: a request signed by that
        # certificate from now on is a replay or a stolen key, refused (enrolling again issues a new one)
        pki.revoke_certificates(session, [device.identity_fingerprint])
        log.info("device %s checked out; %d queued commands cancelled, its identity revoked", device.udid, cancelled)
    return None


def _user_authenticate(
    session: Session, device: Device, message: msgs.UserAuthenticate, settings: CheckinSettings
) -> None:
    raise Gone("user authentication is not supported")


def _set_bootstrap_token(
    session: Session, device: Device, message: msgs.SetBootstrapToken, settings: CheckinSettings
) -> None:
    devices.set_bootstrap_token(device, message, settings.box)
    return None


def _get_bootstrap_token(
    session: Session, device: Device, message: msgs.GetBootstrapToken, settings: CheckinSettings
) -> bytes:
    if device.admission_status != AdmissionStatus.ACCEPTED:
        log.warning("GetBootstrapToken from %s answered without a token: the device is %s",
                    device.udid, device.admission_status)
        return dump_plist({})
    token = devices.bootstrap_token(device, settings.box)
    return dump_plist({"BootstrapToken": token} if token is not None else {})


def _get_token(session: Session, device: Device, message: msgs.GetToken, settings: CheckinSettings) -> None:
    raise BadRequest(f"GetToken for {message.token_service_type or 'an unnamed service'} is not supported")


def _check_topic(session: Session, udid: str, message: msgs.TokenUpdate, settings: CheckinSettings) -> None:
    ours = settings.push_topic(session)
    if ours and message.topic and message.topic != ours:
        raise refuse("TokenUpdate from %s for topic %s, ours is %s", udid, message.topic, ours)


def _held_enrollment(session: Session, device: Device | None, identity: DeviceIdentity) -> AuthSet | None:
    """The held auth set when this certificate's re-binding of the device is held for an
    administrator (the device is still bound to its previous certificate); else ``None``."""
    if device is None or device.identity_fingerprint == identity.fingerprint:
        return None
    auth_set = admission.held_auth_set(session, device, identity.fingerprint)
    if auth_set is None:
        return None
    if pki.device_certificate(session, identity.fingerprint) is None:
        raise refuse("certificate %s of the held enrollment of %s is revoked", identity.fingerprint[:16], device.udid)
    if device.admission_status == AdmissionStatus.DECOMMISSIONED:
        raise refuse("device %s is decommissioned", device.udid)
    if auth_set.status in REFUSED_STATUSES:
        raise refuse("held enrollment of device %s is %s", device.udid, auth_set.status)
    return auth_set


def _held_token_update(
    session: Session, device: Device, auth_set: AuthSet, message: msgs.TokenUpdate, settings: CheckinSettings
) -> None:
    """A held enrollment's TokenUpdate: answered 200 (a device aborts its enrollment otherwise), kept
    on its auth set, no effect on the device. A user channel's is not kept (see docs/security.md)."""
    _check_topic(session, device.udid, message, settings)
    if message.is_user_channel:
        log.info("user channel TokenUpdate of the held enrollment of %s ignored", device.udid)
        return None
    sealed = (devices.seal_unlock_token(device.udid, message.unlock_token, settings.box)
              if message.unlock_token is not None else None)
    admission.hold_token_update(
        auth_set, token=message.token, push_magic=message.push_magic, topic=message.topic,
        unlock_token_sealed=sealed, awaiting_configuration=message.awaiting_configuration,
    )
    log.info("TokenUpdate of the held enrollment of %s kept on auth set %s (not applied: awaiting an "
             "administrator)", device.udid, auth_set.id[:16])
    return None


def _authenticate(
    session: Session, message: msgs.Authenticate, identity: DeviceIdentity, settings: CheckinSettings
) -> None:
    """Bind the certificate to the UDID and admit the device.

    A UDID already bound to another certificate is a re-enrollment *or an impostor*. While the
    previous binding is still valid (its certificate is not expired or revoked, and the device did
    not check out while accepted) the re-binding is held (:func:`_hold_rebinding`): nothing changes
    for the device until an administrator accepts it. Otherwise the binding moves now: the secrets
    the previous enrollment gave are forgotten, commands that would hand over a secret are
    cancelled, and the new auth set is flagged (rejected when the device was rejected).
    """
    if message.is_user_channel:
        raise BadRequest("Authenticate is a device-channel message")
    certificate = pki.device_certificate(session, identity.fingerprint)
    if certificate is None:
        raise refuse("Authenticate for %s with a certificate not issued at enrollment, or revoked", message.udid)
    if certificate.renews_udid is not None and certificate.renews_udid != message.udid:
        raise refuse("certificate %s was issued to renew device %s, not %s",
                     identity.fingerprint[:16], certificate.renews_udid, message.udid)
    holder = devices.device_bound_to(session, identity.fingerprint)
    if holder is not None and holder.udid != message.udid:
        raise refuse("certificate %s is bound to device %s, not %s",
                     identity.fingerprint[:16], holder.udid, message.udid)
    existing = devices.get_device_by_udid(session, message.udid)
    if existing is not None and existing.admission_status == AdmissionStatus.DECOMMISSIONED:
        raise refuse("device %s is decommissioned", message.udid)
    previous = existing.identity_fingerprint if existing is not None else None
    rebinding = previous is not None and previous != identity.fingerprint
    if rebinding and certificate.renews_udid is not None:
        return _renewed_identity(session, existing, message, identity)
    # the previous binding ended when its holder checked out (a request signed with its key) while it
    # was accepted: a CheckOut from a binding an administrator never admitted ends nothing, or an
    # impostor that got a pending device could launder its next identity through the policy (a held
    # re-binding cannot check out at all: only the bound certificate can)
    checked_out = (
        existing is not None and not existing.enrolled and existing.unenrolled_at is not None
        and existing.admission_status == AdmissionStatus.ACCEPTED
    )
    previous_valid = (
        rebinding and not checked_out and pki.is_valid_device_certificate(session, previous, utcnow())
    )
    if previous_valid:
        return _hold_rebinding(session, existing, message, identity)
    device = devices.apply_authenticate(session, message, identity.fingerprint)
    if rebinding:
        cancelled = commands.cancel_secret_bearing(session, device.id, settings.box)
        log.warning(
            "device %s re-bound from certificate %s (no longer valid) to %s: UnlockToken and "
            "BootstrapToken forgotten, %d secret-bearing commands cancelled",
            device.udid, previous[:16], identity.fingerprint[:16], len(cancelled),
        )
        _record_rebind(session, device, previous, identity, previous_valid=False, cancelled=cancelled)
    admission.admit(
        session, device, identity.pubkey_pem,
        policy=settings.admission_policy, preauthorized=settings.preauthorized,
        fingerprint=identity.fingerprint, previous_fingerprint=previous if rebinding else None,
    )
    if device.admission_status in REFUSED_STATUSES:
        raise refuse("device %s is %s", device.udid, device.admission_status, record=rebinding)
    webhook_events.device_enrolled(session, device, rebinding=rebinding)

    # Issue 9 item 6: a new enrollment gets the profiles assigned to it (directly, by group or smart
    # group) in this transaction; a pending device gets them when it is accepted.
    assignments.reconcile_devices(session, [device.id], actor=RECONCILE_ACTOR, box=settings.box,
                                 new_enrollment=True)
    app_assignments.reconcile_devices(session, [device.id], actor=RECONCILE_ACTOR, box=settings.box,
                                      public_url=settings.public_url, new_enrollment=True)
    blueprints.reconcile_devices(session, [device.id], with_=blueprints.Collaborators(
        RECONCILE_ACTOR, settings.box, settings.public_url), new_enrollment=True)

    log.info("device %s authenticated (admission %s)", device.udid, device.admission_status)
    return None


def _renewed_identity(
    session: Session, device: Device, message: msgs.Authenticate, identity: DeviceIdentity
) -> None:
    """The device installed the enrollment profile its identity renewal sent (``checkin/renewal.py``)
    and authenticates with the new certificate: the binding moves now, with nothing forgotten or
    re-queued (the device and its enrollment are the same; only the certificate changed), and the
    previous certificate is revoked.

    The certificate reached only this device: it was made for this UDID and sent inside an
    ``InstallProfile`` over the device's own authenticated command channel (PKCS#12), or its SCEP
    challenge was. A renewal certificate presented for another UDID is refused before this.
    """
    if device.admission_status in REFUSED_STATUSES:
        raise refuse("renewed identity of device %s refused: the device is %s", device.udid, device.admission_status)
    previous = device.identity_fingerprint
    devices.apply_renewed_identity(session, message, device, identity.fingerprint)
    admission.renew(session, device, identity.pubkey_pem, fingerprint=identity.fingerprint,
                    previous_fingerprint=previous)
    pki.revoke_certificates(session, [previous])
    record_event(session, "device:identity:renew", "devices", device.id, {
        "udid": device.udid, "previous_certificate_fingerprint": previous,
        "certificate_fingerprint": identity.fingerprint,
    }, actor=f"device:{device.udid}")
    log.info("device %s renewed its identity: certificate %s replaces %s (revoked)",
             device.udid, identity.fingerprint[:16], previous[:16])
    return None


def _hold_rebinding(
    session: Session, device: Device, message: msgs.Authenticate, identity: DeviceIdentity
) -> None:
    """A new certificate claims a device whose binding is still valid: hold it for an administrator.

    The device keeps its binding, admission status, push token, UnlockToken, BootstrapToken and
    queued commands: the real device (if it holds the previous certificate) goes on working, and an
    impostor's one request costs it nothing. The new certificate's auth set is flagged and held
    (``admission.hold``); its holder is answered 200 here and on TokenUpdate, 403 on everything else,
    until an administrator accepts it (the binding moves then) or rejects it. Queued commands are
    not cancelled: they go to the previous holder, who may still receive them; accepting the held
    auth set cancels the secret-bearing ones.
    """
    if admission.certificate_claimed_elsewhere(session, identity.fingerprint, device.id):
        raise refuse("certificate %s already enrolled another device; refused for %s",
                     identity.fingerprint[:16], device.udid)
    previous = device.identity_fingerprint
    auth_set = admission.hold(
        session, device, identity.pubkey_pem, fingerprint=identity.fingerprint, previous_fingerprint=previous,
        serial_number=message.serial_number or device.serial_number, model=message.model or device.model,
    )
    log.warning(
        "device %s: certificate %s authenticated while certificate %s is still bound and valid; held "
        "for an administrator (auth set %s, %s), nothing changed for the device",
        device.udid, identity.fingerprint[:16], previous[:16], auth_set.id[:16], auth_set.status,
    )
    _record_rebind(session, device, previous, identity, previous_valid=True, cancelled=[], held=auth_set.id)
    if auth_set.status in REFUSED_STATUSES:
        raise refuse("held enrollment of device %s is %s", device.udid, auth_set.status, record=True)
    return None


def _record_rebind(
    session: Session, device: Device, previous: str, identity: DeviceIdentity, *, previous_valid: bool,
    cancelled: list[str], held: str | None = None,
) -> None:
    details = {
        "udid": device.udid, "previous_certificate_fingerprint": previous,
        "certificate_fingerprint": identity.fingerprint, "previous_binding_valid": previous_valid,
        "binding_moved": held is None, "cancelled_commands": cancelled,
    }
    if held is not None:
        details["held_auth_set"] = held
    record_event(session, "device:auth_set:rebind", "devices", device.id, details, actor=f"device:{device.udid}")


def _declarative(
    session: Session, device: Device, message: msgs.DeclarativeManagement, settings: CheckinSettings
) -> bytes | None:
    """Declarative management: the device's sync tokens, declaration items and declarations (its own
    set only), and its status reports (``ddm.service``). The user channel has no declarations here."""
    if message.is_user_channel:
        raise BadRequest("declarative management on the user channel is not supported")
    body = ddm.answer(session, device, message.endpoint, message.data, ddm.Links(settings.public_url, settings.box))
    return None if body is None else json.dumps(body).encode()


#: MessageType → its handler, for every check-in message but Authenticate (which binds the device first)
_BOUND_HANDLERS: dict[str, Callable[[Session, Device, Any, CheckinSettings], bytes | None]] = {
    "TokenUpdate": _token_update,
    "CheckOut": _checkout,
    "UserAuthenticate": _user_authenticate,
    "SetBootstrapToken": _set_bootstrap_token,
    "GetBootstrapToken": _get_bootstrap_token,
    "GetToken": _get_token,
    "DeclarativeManagement": _declarative,
}


# --- command channel -------------------------------------------------------------------------------


@cache
def _result_probes() -> tuple[ColumnElement[bool], ...]:
    """What a result's handling reads with the device (one statement, no more): whether any webhook
    subscription listens and whether any compliance policy is enabled. Without them the result's
    webhook events and the device's compliance evaluation would change nothing: they are skipped, and
    their statements with them. (A subscription or policy committed while the request runs counts from
    the next request, as one committed just after it would.)"""
    return (webhook_outbox.listening(), compliance.policies_enabled())


#: the place of "a webhook subscription listens" among :func:`_result_probes`
_WEBHOOKS_LISTENING = 0


def _connect_state(connection: DriverConnection, result: CommandResult, now: datetime) -> commands.ConnectState | None:
    """The device and its next command for ``result`` (with the result probes after a result)."""
    idle = result.status is ResultStatus.IDLE
    return commands.connect_state(connection, result.udid, after_idle=idle, now=now,
                                  probes=() if idle else _result_probes())


def _refusal(state: commands.ConnectState | None, identity: DeviceIdentity, udid: str) -> tuple[Any, ...] | None:
    """Why a command-channel request of ``udid`` signed by ``identity`` is refused (``refuse``'s
    arguments), or ``None``: the device is known, bound to this certificate, which is not revoked, and
    the device is not refused."""
    if state is None:
        return ("unknown device %s (no Authenticate yet)", udid)
    if state.identity_fingerprint != identity.fingerprint:
        return ("certificate %s is not the one bound to device %s", identity.fingerprint[:16], udid)
    if state.identity_revoked_at is not None:
        return ("certificate %s of device %s is revoked", identity.fingerprint[:16], udid)
    if state.admission_status in REFUSED_STATUSES:
        return ("device %s is %s", udid, state.admission_status)
    return None


@dataclass(frozen=True)
class ConnectRead:
    """A command-channel request's device and next command, read outside any transaction
    (:func:`read_connect`)."""

    state: commands.ConnectState | None
    now: datetime
    #: every check of :func:`handle_connect` passed on this read
    trusted: bool
    #: an Idle answered by the empty 200, nothing to write
    quiet: bool
    #: an Idle whose ``state`` command is to be offered (if still active: :func:`handle_idle`)
    offer: bool
    #: a result stored with the read (PostgreSQL: :func:`read_connect`)
    recorded: bool = False
    #: ``state``'s command marked sent with it
    offered: bool = False


def read_connect(
    connection: DriverConnection, result: CommandResult, identity: DeviceIdentity, raw: bytes, box: SecretBox,
) -> ConnectRead:
    """Read what a command-channel request needs in one statement on ``connection``, outside any
    transaction (no BEGIN or COMMIT: on PostgreSQL two round trips fewer, and on SQLite the read is not
    inside the write lock that the transaction holds). Most Idles of an enrolled fleet are quiet:
    answered there and then, with no transaction at all.

    On PostgreSQL a result that needs nothing but storing (:func:`_record_terms`) is stored in that same
    statement, with its next command marked sent (``recorded``, ``offered``): the whole request is one
    statement, itself a transaction. The terms repeat in SQL this read's checks (:func:`_refusal`), so a
    result is stored only when the read is trusted.

    ``trusted`` (and with it ``quiet`` and ``offer``) is True only when every check :func:`handle_connect`
    makes passes; otherwise :func:`handle_connect` reads again in its transaction and refuses there.
    """
    now = utcnow()
    idle = result.status is ResultStatus.IDLE
    recorded = offered = False
    if idle or connection.dialect.name != "postgresql":
        state = _connect_state(connection, result, now)
    else:
        read = commands.read_and_record(connection, result, raw, box, now=now, probes=_result_probes(),
                                        terms=_record_terms(identity, now), deliver=result.user_id is None)
        state, recorded, offered = read.state, read.recorded, read.offered
    trusted = _refusal(state, identity, result.udid) is None
    if recorded and not trusted:  # the terms are the checks: cannot happen
        raise RuntimeError(f"result of untrusted device {result.udid} stored with its read")
    offers = idle and trusted and _deliverable(state, result)
    quiet = idle and trusted and not offers and not devices.last_seen_due(state, now)
    return ConnectRead(state, now, trusted=trusted, quiet=quiet, offer=offers, recorded=recorded, offered=offered)


def _record_terms(identity: DeviceIdentity, now: datetime) -> commands.RecordTerms:
    """When a result is stored with its read: the checks of :func:`_refusal`, and nothing else to do for it
    (no ``last_seen`` due, no webhook subscription listening, no inventory to apply)."""
    return commands.RecordTerms(
        fingerprint=identity.fingerprint, seen_after=now - devices.LAST_SEEN_RESOLUTION,
        blocking_probes=(_WEBHOOKS_LISTENING,), skip_types=_inventory_types(),
    )


@cache
def _inventory_types() -> tuple[str, ...]:
    return tuple(sorted(devices.INVENTORY_REQUEST_TYPES))


def _deliverable(state: commands.ConnectState, result: CommandResult) -> bool:
    """Whether ``state``'s next command goes to the device on this request (:func:`_deliver`'s conditions)."""
    return (result.user_id is None and state.admission_status == AdmissionStatus.ACCEPTED
            and state.command_id is not None)


def handle_idle(
    session: Session, read: ConnectRead, result: CommandResult, raw: bytes, identity: DeviceIdentity, box: SecretBox,
    public_url: str,
) -> bytes | None:
    """An Idle that :func:`read_connect` found not quiet: its command is offered if still active
    (:func:`_deliver`, guarded); with nothing to offer, :func:`handle_connect` reads and decides again."""
    if not read.offer:
        return handle_connect(session, result, raw, identity, box, public_url)
    devices.touch_last_seen(session, read.state, read.now)
    return _deliver(session, read.state, result, identity, read.now, guarded=True, box=box)


def handle_result(
    session: Session, read: ConnectRead, result: CommandResult, raw: bytes, identity: DeviceIdentity,
    box: SecretBox, public_url: str,
) -> bytes | None:
    """A result (not Idle) whose device :func:`read_connect` read. Stored with the read (PostgreSQL), it
    only needs its next command's plist (read again in a transaction if the read did not mark it). Else,
    when every check passed there, the transaction only writes (the result, then the next command marked
    sent if it is still queued); otherwise :func:`handle_connect` reads again and decides."""
    if not read.trusted:
        return handle_connect(session, result, raw, identity, box, public_url)
    if read.recorded:
        if read.offered:
            return _offer(session, read.state, box)
        if not _deliverable(read.state, result):
            return None
        # its next command was answered by this result, or taken meanwhile: read again and offer
        state = _read_in_transaction(session, result, identity, read.now)
        return _deliver(session, state, result, identity, read.now, guarded=False, box=box)
    return _answer(session, read.state, result, raw, identity, box, public_url, read.now, read_outside=True)


def _offer(session: Session, state: commands.ConnectState, box: SecretBox) -> bytes:
    """The plist of ``state``'s command, marked sent, as the device receives it."""
    if state.command_request_type != "ClearPasscode":
        return commands.command_plist(state.command_uuid, state.command_request_type, state.command_parameters, box)
    params = commands.command_parameters(state.command_parameters, box)  # unsealed for the wire
    device = session.get(Device, state.id)
    token = devices.unlock_token(device, box) if device is not None else None
    if token is not None:
        params["UnlockToken"] = token
    return dump_plist(command_envelope(state.command_uuid, state.command_request_type, params))


def _read_in_transaction(
    session: Session, result: CommandResult, identity: DeviceIdentity, now: datetime,
) -> commands.ConnectState:
    """The device and its next command read in this transaction (with the result probes after a
    result), refused here if any check fails: the first read of :func:`handle_connect`, or again
    when a read made before the transaction no longer holds."""
    state = _connect_state(session_driver(session), result, now)
    refusal = _refusal(state, identity, result.udid)
    if refusal is not None:
        raise refuse(*refusal)
    return state


def handle_connect(
    session: Session, result: CommandResult, raw: bytes, identity: DeviceIdentity, box: SecretBox,
    public_url: str,
) -> bytes | None:
    """Record a result (if any) and return the next command's plist, or ``None`` for an empty 200.

    One query reads the device and its next command; the statement count does not depend on the
    queue length or the number of devices.
    """
    now = utcnow()
    state = _read_in_transaction(session, result, identity, now)
    if result.status is ResultStatus.IDLE:
        devices.touch_last_seen(session, state, now)
        return _deliver(session, state, result, identity, now, guarded=False, box=box)
    return _answer(session, state, result, raw, identity, box, public_url, now, read_outside=False)


def _answer(
    session: Session, state: commands.ConnectState, result: CommandResult, raw: bytes, identity: DeviceIdentity,
    box: SecretBox, public_url: str, now: datetime, *, read_outside: bool,
) -> bytes | None:
    """Record the result of the trusted device ``state`` and offer its next command. ``read_outside``:
    ``state`` was read before this transaction (:func:`read_connect`), so its next command is marked
    sent only if it is still queued."""
    devices.touch_last_seen(session, state, now)
    webhooks_listening, compliance_policies = state.probes
    answered = commands.record_result(session, state.id, result, raw, box, serial_number=state.serial_number,
                                      webhooks_listening=webhooks_listening)
    queued_now = False
    if answered is not None and answered.status == CommandStatus.ACKNOWLEDGED:
        inventory_update = devices.apply_inventory(session, state.id, answered.request_type, result.raw)
        if inventory_update.applied and compliance_policies:
            workflows.inventory_applied(session, state.id, answered.request_type)
        if inventory_update.group_fields_changed:
            if webhooks_listening:
                webhook_events.inventory_changed(session, DeviceRef(state.id, state.udid, state.serial_number),
                                                 request_type=answered.request_type)
            # it may have entered or left a smart group: its assignments follow, for this device only
            counts = assignments.reconcile_devices(session, [state.id], actor=RECONCILE_ACTOR, box=box)
            apps = app_assignments.reconcile_devices(session, [state.id], actor=RECONCILE_ACTOR, box=box,
                                                     public_url=public_url)
            plans = blueprints.reconcile_devices(session, [state.id], with_=blueprints.Collaborators(
                RECONCILE_ACTOR, box, public_url))
            queued_now = any((counts["install_queued"], counts["removal_queued"], apps["install_queued"],
                              apps["removal_queued"], *(v for k, v in plans.items() if k != "blueprints")))
    if answered is not None and (answered.id == state.command_id or queued_now):
        # the device answered a command it was never offered, or a profile command was just
        # queued for it: look again
        session.flush()
        state = _read_in_transaction(session, result, identity, now)
        read_outside = False
    return _deliver(session, state, result, identity, now, guarded=read_outside, box=box)


def _deliver(
    session: Session, state: commands.ConnectState, result: CommandResult, identity: DeviceIdentity, now: datetime,
    *, guarded: bool, box: SecretBox,
) -> bytes | None:
    """Mark ``state``'s next command sent and return its plist (``None``: nothing to offer). ``guarded``:
    ``state`` was read outside this transaction, so the command is marked only if it is still a candidate
    (one guarded UPDATE: the same statements as reading and marking in one transaction); if it is not
    (answered, canceled or expired, or offered to a concurrent request of the device since), the queue
    is read again here."""
    if not _deliverable(state, result):
        return None
    if guarded:
        if commands.mark_sent_if_active(session, state.command_id, now, after_idle=result.status is ResultStatus.IDLE):
            return _offer(session, state, box)
        state = _read_in_transaction(session, result, identity, now)
        return _deliver(session, state, result, identity, now, guarded=False, box=box)
    commands.mark_sent(session, state.command_id, now)
    return _offer(session, state, box)
