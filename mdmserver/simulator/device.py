"""A simulated Apple device speaking the MDM protocol.

It enrolls through ``/mdm/enroll`` (unwrapping the signed profile; its identity is the PKCS#12 inside,
or a certificate obtained through the profile's SCEP payload for a key made on the device),
signs every message with ``Mdm-Signature``, answers commands with the shapes real devices send
(taken from the conformance messages) and can misbehave on request. Transport-agnostic: give it
anything with ``request(method, path, content=None, headers=None) -> (status, headers, body)``.
"""

from __future__ import annotations

import base64
import hashlib
import plistlib
import random
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography import x509 as cx509

from mdmserver.pki import cms, x509
from mdmserver.protocol.plist import ProtocolError, dump_plist, load_dict, load_plist
from mdmserver.protocol.results import parse_command_envelope
from mdmserver.simulator.apps import (
    MAX_MANIFEST_BYTES,
    PENDING,
    AppStatus,
    DeviceApp,
    InstallFailure,
    InstallMode,
    ManifestPackage,
    external_version_identifier,
    installed_entry,
    parse_manifest,
    verify_package,
)
from mdmserver.simulator.ddm import DDMError, DeclarativeClient
from mdmserver.simulator.errors import ResponseTooLarge, SimulatorError
from mdmserver.simulator.scep import ScepClient, ScepSettings

SCEP_PAYLOAD = "com.apple.security.scep"

#: identity payload type → the method that makes the device's identity out of it
IDENTITY_PAYLOADS = {"com.apple.security.pkcs12": "_pkcs12_identity", SCEP_PAYLOAD: "_scep_identity"}

MISBEHAVIOURS = ("unsigned", "foreign_cert", "other_device_cert", "garbage", "tampered", "bad_signature")


class Transport(Protocol):
    """``path`` is a path on the server, or an absolute ``http(s)://`` URL (an app manifest or package
    the server named); any failure to reach it raises."""

    def request(
        self, method: str, path: str, content: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]: ...


class HttpxTransport:
    """Real HTTP through httpx (the simulator CLI and live-server tests).

    A request that fails on a kept-alive connection before any answer arrived is sent once more on a
    new connection, as a device's URL loading does: the server may close an idle connection (gunicorn
    after its keep-alive timeout) just as the request goes out on it. ``on_reconnect`` is told of each
    such resend. A failure on a new connection is never resent."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, client=None, verify: Any = True,
                 on_reconnect: Callable[[], None] | None = None) -> None:
        """``verify``: as httpx's (an ``ssl.SSLContext`` trusting a test CA, for an ``https://`` server)."""
        import httpx

        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.Client(timeout=timeout, verify=verify)
        self.on_reconnect = on_reconnect

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def _send(self, method: str, url: str, content: bytes | None, headers: dict[str, str] | None, *,
              stream: bool):
        import httpx

        # a reused connection the server had closed: no answer, a reset, or a request it could not take
        closed_under_us = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
        for attempt in (1, 2):
            connected: list[str] = []

            def trace(event: str, _info: dict[str, Any], connected: list[str] = connected) -> None:
                if event == "connection.connect_tcp.started":
                    connected.append(event)

            request = self.client.build_request(method, url, content=content, headers=headers,
                                                extensions={"trace": trace})
            try:
                return self.client.send(request, stream=stream)
            except closed_under_us:
                if attempt == 2 or connected:
                    raise
            if self.on_reconnect is not None:
                self.on_reconnect()
        raise AssertionError("unreachable")

    def request(self, method, path, content=None, headers=None):
        response = self._send(method, self._url(path), content, headers, stream=False)
        return response.status_code, dict(response.headers), response.content

    def request_limited(self, method, path, content=None, headers=None, *, max_bytes: int):
        """As ``request``, reading at most ``max_bytes`` of the answer (``ResponseTooLarge`` past it)."""
        url = self._url(path)
        response = self._send(method, url, content, headers, stream=True)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise ResponseTooLarge(f"{url} answered more than {max_bytes} bytes")
            return response.status_code, dict(response.headers), bytes(body)
        finally:
            response.close()

    def close(self) -> None:
        self.client.close()


class FlaskTransport:
    """A Flask test client as transport (in-process tests); an absolute URL goes to the same app."""

    def __init__(self, client) -> None:
        self.client = client

    def request(self, method, path, content=None, headers=None):
        response = self.client.open(path, method=method, data=content, headers=headers or {})
        return response.status_code, dict(response.headers), response.get_data()


@dataclass
class Identity:
    certificate: cx509.Certificate
    key: Any


#: commands a platform's MDM client does not know: a device of another platform answers them as an
#: unknown request type (a real capture: Error, MCMDMErrorDomain 12021, "… is not a valid request type")
PLATFORM_COMMANDS = {"InstallEnterpriseApplication": frozenset({"macos"})}

#: a command whose keys are missing or of the wrong type: iOS answers ``CommandFormatError`` (no chain)
COMMAND_FORMAT_ERROR = {"Status": "CommandFormatError"}


def error_answer(code: int, text: str, *, domain: str = "MCMDMErrorDomain", **extra: Any) -> dict[str, Any]:
    """An ``Error`` answer with a one-entry ErrorChain, as devices send them."""
    return {"Status": "Error", **extra, "ErrorChain": [{
        "ErrorCode": code, "ErrorDomain": domain, "LocalizedDescription": text, "USEnglishDescription": text}]}


def _hex_udid(rng: random.Random) -> str:
    return str(uuidlib.UUID(int=rng.getrandbits(128))).upper()


_MODELS = {
    "ios": ("iPhone14,5", "iPhone", "MN9J3LL/A", "17.5", "21F79"),
    "ipados": ("iPad13,18", "iPad", "MPQ03LL/A", "17.5", "21F79"),
    "macos": ("MacBookPro18,3", "MacBook Pro", "MKGR3LL/A", "14.5", "23F79"),
}

#: the update each platform is offered at first (AvailableOSUpdates): version, build, name, product name
_OFFERED = {
    "ios": ("17.6", "21G80", "iOS 17.6", "iOS"),
    "ipados": ("17.6", "21G80", "iPadOS 17.6", "iOS"),
    "macos": ("14.6", "23G80", "macOS Sonoma 14.6", "macOS"),
}

#: the install actions that install (the others download, or only notify): Apple's ``InstallAction``
_INSTALLING_ACTIONS = frozenset({"Default", "InstallASAP", "InstallForceRestart", "InstallLater"})
#: Apple documents the shape of a refused update (``UpdateResults[].InstallAction`` ``Error`` with an
#: ``ErrorChain``), not its codes: the simulator's domain and codes are its own
UPDATE_ERROR_DOMAIN = "SimulatedSoftwareUpdateErrorDomain"
UPDATE_NOT_OFFERED, UPDATE_DOWNGRADE = 1, 2


@dataclass
class OSUpdateInProgress:
    """A ScheduleOSUpdate the device accepted: downloading for the first half of its delay, then
    installing; the device runs the new version once the delay has passed."""

    product_key: str
    version: str
    build: str
    install_action: str
    started: float
    delay: float

    def progress(self, now: float) -> float:
        return 1.0 if self.delay <= 0 else min(1.0, max(0.0, (now - self.started) / self.delay))

    def status(self, now: float) -> dict[str, Any]:
        """This update as an ``OSUpdateStatus`` entry (Apple's keys)."""
        downloaded = min(1.0, self.progress(now) * 2)
        installs = self.install_action in _INSTALLING_ACTIONS
        phase = "Downloading" if downloaded < 1.0 else ("Installing" if installs else "Idle")
        return {"ProductKey": self.product_key, "IsDownloaded": downloaded >= 1.0,
                "DownloadPercentComplete": round(downloaded, 4), "Status": phase}


@dataclass
class SimulatedDevice:
    transport: Transport
    platform: str = "ios"
    udid: str = ""
    serial_number: str = ""
    device_name: str = ""
    supervised: bool = True
    topic: str | None = None
    seed: int | None = None
    identity: Identity | None = None
    push_token: bytes = b""
    push_magic: str = ""
    unlock_token: bytes = b""
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: what ``InstalledApplicationList`` reports, by bundle id (Pages is there from the start, unmanaged)
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: every app the server installed (or tried to) through InstallApplication /
    #: InstallEnterpriseApplication, by bundle id: status, flags, configuration, attributes as received
    app_installs: dict[str, DeviceApp] = field(default_factory=dict)
    #: ``sync`` (default): installs finish while the command is answered; ``async``: see ``InstallMode``
    install_mode: InstallMode = InstallMode.SYNC
    #: the simulated App Store, keyed by bundle id or iTunesStoreID: hints with Apple's
    #: InstalledApplicationList keys ("Identifier", "Name", "ShortVersion", "BundleSize",
    #: "ExternalVersionIdentifier") and "Failure" (the store refuses: the install fails with that reason).
    #: Without a hint an app is named "App <id>", at version ``store_version``; an iTunesStoreID alone
    #: installs as bundle id ``com.example.store<id>``
    store_apps: dict[str | int, dict[str, Any]] = field(default_factory=dict)
    store_version: str = "1.0"
    #: refuse a manifest or package URL that is not https: (as real devices do; tests serve plain HTTP)
    require_https: bool = False
    #: every URL fetched for an app install, in order (manifests and packages)
    downloads: list[str] = field(default_factory=list)
    #: why each failed install failed, in order: (bundle id or the manifest URL, reason)
    install_failures: list[tuple[str, str]] = field(default_factory=list)
    #: request type → "NotNow" / "Error" / "CommandFormatError" to answer instead of acknowledging
    answer_overrides: dict[str, str] = field(default_factory=dict)
    handled: list[tuple[str, str, str]] = field(default_factory=list)
    #: every command as the device received it: (request type, parameters)
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: what the device answers to ActivationLockBypassCode, and its escrowed FileVault personal
    #: recovery key (SecurityInfo's FDE_PersonalRecoveryKeyCMS, macOS)
    activation_lock_bypass_code: str = "PFHQ-XMRT-C4LK-8YQ4-J9W8-5RRP"
    filevault_recovery_key_cms: bytes | None = None
    #: server-provided extra headers (e.g. a proxy client-certificate header) instead of signing
    header_auth: Callable[[Identity], dict[str, str]] | None = None
    #: the RSA key a SCEP enrollment uses (made at enrollment, of the payload's Keysize, when None or
    #: of another size): a load generator makes them ahead, since a device's key costs the device
    scep_key: Any = None
    #: how the last enrollment got the identity: "scep" or "pkcs12"
    identity_mode: str | None = None
    #: False once the MDM enrollment profile was removed (the device left management)
    enrolled: bool = False
    #: seconds a scheduled OS update takes from ScheduleOSUpdate to the new version (downloading for the
    #: first half, installing for the second); 0: it installs while ScheduleOSUpdate is answered
    os_update_delay: float = 3.0
    #: the clock the update delay is measured on (tests may drive it)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    #: what AvailableOSUpdates reports (Apple's keys); by default the platform's next minor update
    offered_updates: list[dict[str, Any]] = field(default_factory=list)
    #: the update downloading or installing now (ScheduleOSUpdate accepted, delay not over)
    os_update: OSUpdateInProgress | None = None
    #: set by RemoveProfile of the MDM profile: the device leaves management after acknowledging
    _leaving: bool = field(default=False, init=False, repr=False)
    #: declarative management: the declarations the device holds, its status, a pending OS update
    #: (``mdmserver/simulator/ddm.py``); ``ddm.update_delay`` sets how long an enforced update takes
    ddm: DeclarativeClient = field(init=False, repr=False)
    #: set by the ``DeclarativeManagement`` command: the sync the device makes once the session ends
    #: (the SyncTokens the command carried, or an empty dict to ask ``tokens``)
    _ddm_due: dict[str, Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self._rng = rng
        if self.platform not in _MODELS:
            raise ValueError(f"platform must be one of {', '.join(_MODELS)}")
        product, model_name, model, os_version, build = _MODELS[self.platform]
        self.product_name, self.model_name, self.model = product, model_name, model
        self.os_version, self.build_version = os_version, build
        if not self.offered_updates:
            version, update_build, name, product = _OFFERED[self.platform]
            self.offered_updates = [{
                "ProductKey": f"{product}Update{build}X", "HumanReadableName": name, "ProductName": product,
                "Version": version, "Build": update_build, "DownloadSize": 225236247, "InstallSize": 537395200,
                "IsCritical": False, "RestartRequired": True, "AllowsInstallLater": True,
                "IsConfigDataUpdate": False, "IsFirmwareUpdate": False, "IsMajorOSUpdate": False,
            }]
        self.udid = self.udid or _hex_udid(rng)
        self.serial_number = self.serial_number or "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(12))
        self.device_name = self.device_name or f"{model_name} {self.serial_number[-4:]}"
        self.push_token = self.push_token or rng.randbytes(32)
        self.push_magic = self.push_magic or str(uuidlib.UUID(int=rng.getrandbits(128))).upper()
        self.unlock_token = self.unlock_token or rng.randbytes(64)
        self.apps = self.apps or {
            "com.apple.Pages": {"Identifier": "com.apple.Pages", "Name": "Pages", "Version": "7154",
                                "ShortVersion": "13.2", "BundleSize": 512311296, "DynamicSize": 65536,
                                "IsValidated": True, "Installing": False, "AppStoreVendable": True,
                                "BetaApp": False, "AdHocCodeSigned": False, "DeviceBasedVPP": False,
                                "HasUpdateAvailable": False, "ExternalVersionIdentifier": 863519063},
        }
        self.ddm = DeclarativeClient(self)

    # --- enrollment --------------------------------------------------------------------------------

    def enroll(self, *, secret: str | None = None) -> dict[str, Any]:
        """Fetch the enrollment profile (the secret, if any, as the HTTP Basic password), check its
        signature, and get the identity the MDM payload's ``IdentityCertificateUUID`` names: a PKCS#12
        payload is opened; a SCEP payload is enrolled through, with a key made here (``scep_key``
        when given) that never leaves the device."""
        headers = {}
        if secret is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"device:{secret}".encode()).decode()
        status, _headers, body = self.transport.request("GET", "/mdm/enroll", headers=headers)
        if status != 200:
            raise SimulatorError(f"enrollment failed with HTTP {status}: {body[:200]!r}")
        signed = cms.unwrap_signed(body)
        profile = load_plist(signed.content)
        self._install_enrollment_profile(profile)
        self.enrolled, self._leaving = True, False
        return profile

    def _install_enrollment_profile(self, profile: dict[str, Any]) -> None:
        """Take the identity and the MDM settings of an enrollment profile."""
        payloads = {p["PayloadType"]: p for p in profile["PayloadContent"]}
        by_uuid = {p.get("PayloadUUID"): p for p in profile["PayloadContent"]}
        mdm = payloads["com.apple.mdm"]
        identity_payload = by_uuid.get(mdm.get("IdentityCertificateUUID"))
        if identity_payload is None:
            raise SimulatorError("IdentityCertificateUUID names no payload of the enrollment profile")
        kind = identity_payload.get("PayloadType")
        if kind not in IDENTITY_PAYLOADS:
            raise SimulatorError(f"IdentityCertificateUUID names a {kind} payload, not an identity")
        self.identity = getattr(self, IDENTITY_PAYLOADS[kind])(identity_payload)
        self.identity_mode = "scep" if kind == SCEP_PAYLOAD else "pkcs12"
        self.topic = mdm["Topic"]
        self.server_url, self.checkin_url = mdm["ServerURL"], mdm["CheckInURL"]
        self.enrollment_profile = profile
        self.profiles[profile["PayloadIdentifier"]] = profile

    def _replace_enrollment_profile(self, profile: dict[str, Any]) -> dict[str, Any]:
        """InstallProfile of a new enrollment profile (same identifier: the server renews this device's
        identity): take the new identity, then Authenticate and TokenUpdate with it, as a device does
        when its MDM profile is replaced. A failure keeps the installed profile and identity."""
        previous = (self.identity, self.identity_mode, self.topic, self.server_url, self.checkin_url,
                    self.enrollment_profile)
        try:
            self._install_enrollment_profile(profile)
            for step, send in (("Authenticate", self.authenticate), ("TokenUpdate", self.token_update)):
                status = send()
                if status != 200:
                    raise SimulatorError(f"{step} with the new identity answered HTTP {status}")
        except (KeyError, TypeError, ValueError, SimulatorError) as exc:
            (self.identity, self.identity_mode, self.topic, self.server_url, self.checkin_url,
             self.enrollment_profile) = previous
            self.profiles[previous[5]["PayloadIdentifier"]] = previous[5]
            text = f"The new MDM profile could not be installed: {exc}"
            return {"Status": "Error", "ErrorChain": [{
                "ErrorCode": 12011, "ErrorDomain": "MCMDMErrorDomain",
                "LocalizedDescription": text, "USEnglishDescription": text}]}
        return {}

    def _pkcs12_identity(self, payload: dict[str, Any]) -> Identity:
        cert, key, _extra = x509.load_pkcs12(payload["PayloadContent"], payload["Password"].encode())
        return Identity(cert, key)

    def _scep_identity(self, payload: dict[str, Any]) -> Identity:
        settings = ScepSettings.from_payload(payload)
        key = self.scep_key
        if key is not None and getattr(key, "key_size", None) != settings.key_size:
            key = None  # made for another key size: the payload's wins, as on a device
        result = ScepClient(self.transport, settings).enroll(key)
        return Identity(result.certificate, result.key)

    # --- sending -------------------------------------------------------------------------------------

    def signature_for(self, body: bytes, identity: Identity | None = None) -> str:
        ident = identity or self.identity
        if ident is None:
            raise SimulatorError("not enrolled")
        return base64.b64encode(cms.sign(body, ident.certificate, ident.key, detached=True)).decode()

    def request(
        self, method: str, path: str, content: bytes | None = None, headers: dict[str, str] | None = None,
        *, max_bytes: int | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request through the transport; ``max_bytes`` bounds the answer (``ResponseTooLarge``),
        read no further than that when the transport can stream (``request_limited``)."""
        limited = getattr(self.transport, "request_limited", None)
        if max_bytes is not None and limited is not None:
            return limited(method, path, content=content, headers=headers, max_bytes=max_bytes)
        status, response_headers, body = self.transport.request(method, path, content=content, headers=headers)
        if max_bytes is not None and len(body) > max_bytes:
            raise ResponseTooLarge(f"{path} answered more than {max_bytes} bytes")
        return status, response_headers, body

    def send(
        self, path: str, message: dict[str, Any] | bytes, *, misbehave: str | None = None,
        other: SimulatedDevice | None = None, max_bytes: int | None = None,
    ) -> tuple[int, bytes]:
        body = message if isinstance(message, bytes) else dump_plist(message)
        headers = {"Content-Type": "application/x-apple-aspen-mdm-checkin" if "checkin" in path
                   else "application/x-apple-aspen-mdm"}
        if misbehave is None:
            if self.header_auth is not None:
                headers.update(self.header_auth(self.identity))
            else:
                headers["Mdm-Signature"] = self.signature_for(body)
        elif misbehave == "unsigned":
            pass
        elif misbehave == "foreign_cert":
            headers["Mdm-Signature"] = self.signature_for(body, foreign_identity())
        elif misbehave == "other_device_cert":
            if other is None or other.identity is None:
                raise SimulatorError("other_device_cert needs another enrolled device")
            headers["Mdm-Signature"] = self.signature_for(body, other.identity)
        elif misbehave == "garbage":
            body = b"\x00garbage" + self._rng.randbytes(64)
            headers["Mdm-Signature"] = self.signature_for(body)
        elif misbehave == "tampered":
            headers["Mdm-Signature"] = self.signature_for(body)
            body = body.replace(b"</dict>", b"<key>X</key><string>y</string></dict>", 1)
        elif misbehave == "bad_signature":
            headers["Mdm-Signature"] = "not base64!!"
        else:
            raise ValueError(f"unknown misbehaviour {misbehave!r}")
        status, _h, content = self.request("PUT", path, content=body, headers=headers, max_bytes=max_bytes)
        return status, content

    def _checkin(self, message: dict[str, Any], **kw) -> tuple[int, bytes]:
        return self.send("/mdm/checkin", message, **kw)

    # --- check-in messages ---------------------------------------------------------------------------

    def authenticate_message(self) -> dict[str, Any]:
        return {
            "MessageType": "Authenticate", "UDID": self.udid, "Topic": self.topic,
            "SerialNumber": self.serial_number, "Model": self.model, "ModelName": self.model_name,
            "ProductName": self.product_name, "OSVersion": self.os_version,
            "BuildVersion": self.build_version, "DeviceName": self.device_name,
        }

    def authenticate(self, **kw) -> int:
        return self._checkin(self.authenticate_message(), **kw)[0]

    def token_update(self, *, awaiting_configuration: bool = False, **kw) -> int:
        message = {
            "MessageType": "TokenUpdate", "UDID": self.udid, "Topic": self.topic, "Token": self.push_token,
            "PushMagic": self.push_magic, "AwaitingConfiguration": awaiting_configuration,
        }
        if self.platform != "macos":
            message["UnlockToken"] = self.unlock_token
        return self._checkin(message, **kw)[0]

    def user_token_update(self, user_id: str = "00000000-1111-2222-3333-444455556666") -> int:
        return self._checkin({
            "MessageType": "TokenUpdate", "UDID": self.udid, "Topic": self.topic, "UserID": user_id,
            "UserShortName": "admin", "UserLongName": "Administrator", "NotOnConsole": False,
            "Token": self.push_token[:16], "PushMagic": self.push_magic,
        })[0]

    def checkout(self) -> int:
        return self._checkin({"MessageType": "CheckOut", "UDID": self.udid, "Topic": self.topic})[0]

    # --- command channel -----------------------------------------------------------------------------

    def idle(self) -> tuple[int, dict[str, Any] | None]:
        return self._connect({"UDID": self.udid, "Status": "Idle"})

    def _connect(self, message: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        status, body = self.send("/mdm/connect", message)
        if status != 200 or not body:
            return status, None
        return status, load_dict(body)

    def run_session(self, max_commands: int = 1000) -> list[tuple[str, str, str]]:
        """Idle, then answer commands until the server has none; returns (uuid, type, status) handled.

        With declarative management on, the device first reports what changed since its last report
        (an OS update that went on); a ``DeclarativeManagement`` command makes it sync once the session
        ends, as a device syncs after acknowledging it. A DDM failure there does not stop the command
        channel: it is kept in ``ddm.errors`` (``sync_declarations`` raises it instead)."""
        handled: list[tuple[str, str, str]] = []
        self._ddm_quietly(self.ddm.tick)
        status, command = self.idle()
        if status != 200:
            raise SimulatorError(f"Idle answered HTTP {status}")
        while command is not None and len(handled) < max_commands:
            uuid, request_type, params = parse_command_envelope(command)
            answer = self.answer(uuid, request_type, params)
            handled.append((uuid, request_type, answer["Status"]))
            status, command = self._connect(answer)
            if status != 200:
                raise SimulatorError(f"result for {request_type} answered HTTP {status}")
            if self._leaving:
                self._leave_management()
                break
        self.handled.extend(handled)
        if self._ddm_due is not None and self.enrolled:
            tokens, self._ddm_due = self._ddm_due, None
            self._ddm_quietly(self.ddm.sync, tokens or None)
        return handled

    def _ddm_quietly(self, step: Callable[..., Any], *args: Any) -> None:
        try:
            step(*args)
        except SimulatorError as exc:
            self.ddm.errors.append(str(exc))

    def sync_declarations(self) -> dict[str, Any] | None:
        """Declarative management sync now (tokens → declaration items → declarations → status report);
        returns the status report sent, None when nothing changed since the last one."""
        return self.ddm.sync()

    def _leave_management(self) -> None:
        """What a device does once its MDM profile is gone: every profile installed through MDM goes
        with it, it sends CheckOut when the profile asked for it, and it stops talking to the server
        (a command offered with the acknowledgement's answer is never run)."""
        mdm = next((p for p in self.enrollment_profile.get("PayloadContent", [])
                    if p.get("PayloadType") == "com.apple.mdm"), {})
        self.profiles.clear()
        for identifier, app in list(self.app_installs.items()):
            if app.managed and app.management_flags & 1:
                self.apps.pop(identifier, None)
        self.app_installs.clear()
        self.ddm.reset()
        self._leaving, self.enrolled, self._ddm_due = False, False, None
        if mdm.get("CheckOutWhenRemoved"):
            status = self.checkout()
            if status != 200:
                raise SimulatorError(f"CheckOut answered HTTP {status}")

    # --- answers -------------------------------------------------------------------------------------

    def answer(self, command_uuid: str, request_type: str, params: dict[str, Any]) -> dict[str, Any]:
        base = {"UDID": self.udid, "CommandUUID": command_uuid}
        self.received.append((request_type, params))
        self.advance_os_update()
        override = self.answer_overrides.get(request_type)
        if override == "NotNow":
            return {**base, "Status": "NotNow"}
        if override == "CommandFormatError":
            return {**base, "Status": "CommandFormatError"}
        if override == "Error":
            return {**base, "Status": "Error", "ErrorChain": [{
                "ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain",
                "LocalizedDescription": f"“{request_type}” failed.",
                "USEnglishDescription": f"“{request_type}” failed.",
            }]}
        platforms = PLATFORM_COMMANDS.get(request_type)
        if platforms is not None and self.platform not in platforms:
            return {**base, **error_answer(12021, f"“{request_type}” is not a valid request type.")}
        handler = getattr(self, f"_answer_{request_type}", None)
        payload = handler(params) if handler else {}
        if "Status" in payload:
            return {**base, **payload}
        return {**base, "Status": "Acknowledged", **payload}

    def _answer_DeclarativeManagement(self, params: dict[str, Any]) -> dict[str, Any]:
        """Acknowledged, then a sync once the session ends (with the SyncTokens of ``Data`` when it has
        them); an OS before DDM answers it as an unknown request type, as such a device does."""
        if not self.ddm.supported:
            return error_answer(12021, "“DeclarativeManagement” is not a valid request type.")
        try:
            tokens = self.ddm.command_tokens(params)
        except (ValueError, DDMError):
            return COMMAND_FORMAT_ERROR
        self._ddm_due = tokens or {}
        return {}

    def _answer_DeviceInformation(self, params: dict[str, Any]) -> dict[str, Any]:
        self.ddm.advance()
        known = {
            "UDID": self.udid, "DeviceName": self.device_name, "OSVersion": self.os_version,
            "BuildVersion": self.build_version, "ModelName": self.model_name, "Model": self.model,
            "ProductName": self.product_name, "SerialNumber": self.serial_number,
            "DeviceCapacity": 119.2, "AvailableDeviceCapacity": 87.5, "BatteryLevel": 0.82,
            "IsSupervised": self.supervised, "WiFiMAC": "f0:18:98:00:00:01", "BluetoothMAC": "f0:18:98:00:00:02",
            "IsActivationLockEnabled": False, "IsMDMLostModeEnabled": False,
            "IsDeviceLocatorServiceEnabled": True, "AwaitingConfiguration": False,
            "IsCloudBackupEnabled": False, "DataRoamingEnabled": False, "VoiceRoamingEnabled": False,
            "IsRoaming": False, "PersonalHotspotEnabled": False, "IsDoNotDisturbInEffect": False,
        }
        queries = params.get("Queries") or list(known)
        return {"QueryResponses": {q: known[q] for q in queries if q in known}}

    def _answer_SecurityInfo(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.platform == "macos":
            info = {"FDE_Enabled": True, "FDE_HasPersonalRecoveryKey": True,
                    "FDE_HasInstitutionalRecoveryKey": False, "SystemIntegrityProtectionEnabled": True,
                    "FirewallSettings": {"FirewallEnabled": True, "BlockAllIncoming": False, "StealthMode": False},
                    "ManagementStatus": {"EnrolledViaDEP": False, "UserApprovedEnrollment": True,
                                         "IsUserEnrollment": False}}
            if self.filevault_recovery_key_cms is not None:
                info["FDE_PersonalRecoveryKeyCMS"] = self.filevault_recovery_key_cms
                info["FDE_PersonalRecoveryKeyDeviceKey"] = self.serial_number
        else:
            info = {"HardwareEncryptionCaps": 3, "PasscodeCompliant": True,
                    "PasscodeCompliantWithProfiles": True, "PasscodeLockGracePeriodEnforced": 0,
                    "PasscodePresent": True,
                    "ManagementStatus": {"EnrolledViaDEP": False, "IsUserEnrollment": False}}
        return {"SecurityInfo": info}

    def _answer_ProfileList(self, params: dict[str, Any]) -> dict[str, Any]:
        listing = []
        for identifier, profile in self.profiles.items():
            listing.append({
                "PayloadIdentifier": identifier, "PayloadUUID": profile.get("PayloadUUID", ""),
                "PayloadDisplayName": profile.get("PayloadDisplayName", identifier),
                "PayloadVersion": profile.get("PayloadVersion", 1),
                "PayloadRemovalDisallowed": False, "HasRemovalPasscode": False, "IsEncrypted": False,
                "IsManaged": True,
                "PayloadContent": [
                    {k: p[k] for k in ("PayloadType", "PayloadIdentifier", "PayloadUUID", "PayloadVersion",
                                       "PayloadDisplayName") if k in p}
                    for p in profile.get("PayloadContent", []) if isinstance(p, dict)
                ],
            })
        return {"ProfileList": listing}

    def _answer_InstallProfile(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            data = params["Payload"]
            if data[:1] == b"0":
                data = cms.unwrap_signed(data).content
            profile = load_plist(data)
            identifier = profile["PayloadIdentifier"]
        except (KeyError, TypeError, ValueError, plistlib.InvalidFileException, cms.CMSError):
            return {"Status": "Error", "ErrorChain": [{
                "ErrorCode": 1000, "ErrorDomain": "MCProfileErrorDomain",
                "LocalizedDescription": "The profile is malformed.", "USEnglishDescription": "The profile is malformed.",
            }]}
        if self.enrolled and identifier == self.enrollment_profile.get("PayloadIdentifier") and any(
            isinstance(p, dict) and p.get("PayloadType") == "com.apple.mdm" for p in profile.get("PayloadContent", [])
        ):
            return self._replace_enrollment_profile(profile)
        self.profiles[identifier] = profile
        return {}

    def _answer_RemoveProfile(self, params: dict[str, Any]) -> dict[str, Any]:
        """Unknown identifier → Error 12013; the MDM enrollment profile → Acknowledged, then the device
        leaves management (``_leave_management``), as a real device does."""
        identifier = params.get("Identifier")
        if identifier not in self.profiles:
            text = f"The profile “{identifier}” is not managed by MDM."
            return {"Status": "Error", "ErrorChain": [{
                "ErrorCode": 12013, "ErrorDomain": "MCMDMErrorDomain",
                "LocalizedDescription": text, "USEnglishDescription": text}]}
        removed = self.profiles.pop(identifier)
        if any(isinstance(p, dict) and p.get("PayloadType") == "com.apple.mdm"
               for p in removed.get("PayloadContent", [])):
            self._leaving = True
        return {}

    def _answer_InstalledApplicationList(self, params: dict[str, Any]) -> dict[str, Any]:
        """Installed apps, with apps still downloading as ``Installing``; ``Identifiers``,
        ``ManagedAppsOnly`` and ``Items`` narrow the answer as on a device."""
        identifiers, items = params.get("Identifiers"), params.get("Items")
        if not _strings_or_none(identifiers) or not _strings_or_none(items):
            return COMMAND_FORMAT_ERROR
        listing = {identifier: dict(entry) for identifier, entry in self.apps.items()}
        for identifier, app in self.app_installs.items():
            if app.status in PENDING and identifier not in listing:
                listing[identifier] = {"Identifier": identifier, "Name": app.name or identifier,
                                       "Installing": True, "DownloadWaiting": app.status == AppStatus.QUEUED}
        if params.get("ManagedAppsOnly") is True:
            listing = {k: v for k, v in listing.items() if k in self.managed_apps}
        if identifiers is not None:
            listing = {k: v for k, v in listing.items() if k in identifiers}
        entries = list(listing.values())
        if items is not None:
            entries = [{k: v for k, v in entry.items() if k in items or k == "Identifier"} for entry in entries]
        return {"InstalledApplicationList": entries}

    def _answer_ManagedApplicationList(self, params: dict[str, Any]) -> dict[str, Any]:
        """The managed apps (``Identifiers`` narrows); in ``async`` mode each query first moves every
        unfinished install one step."""
        identifiers = params.get("Identifiers")
        if not _strings_or_none(identifiers):
            return COMMAND_FORMAT_ERROR
        self.advance_installs()
        listing = {}
        for identifier, app in self.managed_apps.items():
            if identifiers is not None and identifier not in identifiers:
                continue
            entry: dict[str, Any] = {
                "Status": str(app.status), "ManagementFlags": app.management_flags,
                "HasConfiguration": bool(app.configuration), "HasFeedback": False,
                "IsValidated": app.is_validated,
            }
            if app.external_version_identifier is not None:
                entry["ExternalVersionIdentifier"] = app.external_version_identifier
            listing[identifier] = entry
        return {"ManagedApplicationList": listing}

    def _answer_ManagedApplicationConfiguration(self, params: dict[str, Any]) -> dict[str, Any]:
        identifiers = params.get("Identifiers")
        if not isinstance(identifiers, list) or not _strings_or_none(identifiers):
            return COMMAND_FORMAT_ERROR
        managed = self.managed_apps
        return {"ApplicationConfigurations": [
            {"Identifier": i, **({"Configuration": managed[i].configuration} if managed[i].configuration else {})}
            for i in identifiers if i in managed
        ]}

    def _answer_ManagedApplicationAttributes(self, params: dict[str, Any]) -> dict[str, Any]:
        identifiers = params.get("Identifiers")
        if not isinstance(identifiers, list) or not _strings_or_none(identifiers):
            return COMMAND_FORMAT_ERROR
        managed = self.managed_apps
        return {"ApplicationAttributes": [
            {"Identifier": i, **({"Attributes": managed[i].attributes} if managed[i].attributes else {})}
            for i in identifiers if i in managed
        ]}

    # --- apps ----------------------------------------------------------------------------------------

    def _answer_Settings(self, params: dict[str, Any]) -> dict[str, Any]:
        """One result per item, in order. ``ApplicationConfiguration`` and ``ApplicationAttributes``
        replace a managed app's dictionary (an item without one removes it); an app that is not managed
        → an Error result naming it. Other items are acknowledged as they are."""
        items = params.get("Settings")
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            return COMMAND_FORMAT_ERROR
        for item in items:
            key = _APP_SETTINGS.get(item.get("Item"))
            if key is not None and (not isinstance(item.get("Identifier"), str)
                                    or not isinstance(item.get(key), dict | None)):
                return COMMAND_FORMAT_ERROR
        return {"Settings": [self._apply_setting(item) for item in items]}

    def _apply_setting(self, item: dict[str, Any]) -> dict[str, Any]:
        key = _APP_SETTINGS.get(item.get("Item"))
        if key is None:
            return {"Status": "Acknowledged"}
        identifier = item["Identifier"]
        app = self.managed_apps.get(identifier)
        if app is None:
            return {"Identifier": identifier, **error_answer(12024, f"The app “{identifier}” is not managed.")}
        setattr(app, key.lower(), item.get(key))
        return {"Status": "Acknowledged", "Identifier": identifier}

    @property
    def managed_apps(self) -> dict[str, DeviceApp]:
        """The apps ``ManagedApplicationList`` reports (installed, installing or failed), by bundle id."""
        return {identifier: app for identifier, app in self.app_installs.items() if app.managed}

    def installed_version(self, identifier: str) -> str | None:
        """The ``ShortVersion`` the device reports for an installed app (None: not installed)."""
        entry = self.apps.get(identifier)
        return None if entry is None else entry.get("ShortVersion")

    def advance_installs(self) -> None:
        """``async`` mode: move every unfinished install one step (Queued → Installing/Updating →
        Managed or Failed). Nothing to do in ``sync`` mode, where installs finish at once."""
        for app in list(self.app_installs.values()):
            if app.status == AppStatus.QUEUED:
                app.status = AppStatus.UPDATING if app.identifier in self.apps else AppStatus.INSTALLING
            elif app.status in PENDING:
                self._run_install(app)

    def settle_installs(self) -> None:
        """Finish every unfinished install now."""
        for app in list(self.app_installs.values()):
            if app.status in PENDING:
                self._run_install(app)

    def _answer_InstallApplication(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._install("InstallApplication", params)

    def _answer_InstallEnterpriseApplication(self, params: dict[str, Any]) -> dict[str, Any]:
        """macOS only (``PLATFORM_COMMANDS``); Apple lists no answer keys: the result shows in
        ``ManagedApplicationList`` (for ``InstallAsManaged`` installs) and ``InstalledApplicationList``."""
        answer = self._install("InstallEnterpriseApplication", params)
        return {k: v for k, v in answer.items() if k not in ("Identifier", "State")}

    def _answer_RemoveApplication(self, params: dict[str, Any]) -> dict[str, Any]:
        """A managed app goes (unfinished installs too); an unmanaged or unknown one → Error."""
        identifier = params.get("Identifier")
        if not isinstance(identifier, str) or not identifier:
            return COMMAND_FORMAT_ERROR
        if identifier not in self.managed_apps:
            return error_answer(12024, f"The app “{identifier}” is not managed.")
        del self.app_installs[identifier]
        self.apps.pop(identifier, None)
        return {}

    def _install(self, request_type: str, params: dict[str, Any]) -> dict[str, Any]:
        """InstallApplication / InstallEnterpriseApplication: check the command, read the manifest (the
        device needs the bundle id to answer), then install now (``sync``) or later (``async``)."""
        flags = params.get("ManagementFlags", 0)
        store_id, identifier = params.get("iTunesStoreID"), params.get("Identifier")
        url, inline = params.get("ManifestURL"), params.get("Manifest")
        well_formed = (
            isinstance(flags, int) and not isinstance(flags, bool)
            and all(isinstance(params.get(k, {}), dict) for k in ("Configuration", "Attributes", "Options"))
            and (url is None or isinstance(url, str)) and (identifier is None or isinstance(identifier, str))
            and (store_id is None or (isinstance(store_id, int) and not isinstance(store_id, bool)))
        )
        if request_type == "InstallEnterpriseApplication":
            well_formed = well_formed and (url is not None) != (inline is not None)
        else:
            well_formed = well_formed and (url is not None or store_id is not None or identifier is not None)
        if not well_formed:
            return COMMAND_FORMAT_ERROR
        app = DeviceApp(
            identifier="", status=AppStatus.QUEUED, request_type=request_type,
            managed=self.platform != "macos" or params.get("InstallAsManaged") is True,
            management_flags=flags, configuration=params.get("Configuration"),
            attributes=params.get("Attributes"), options=params.get("Options"),
            itunes_store_id=store_id, parameters=params,
        )
        if url is not None or inline is not None:
            try:
                app.package = self._read_manifest(url) if url is not None else parse_manifest(inline)
            except InstallFailure as exc:
                self.install_failures.append((url or "Manifest", str(exc)))
                return {"State": str(AppStatus.FAILED)}
            app.identifier, app.name = app.package.identifier, app.package.title
        else:
            self._prepare_store_install(app, store_id, identifier)
        if (app.managed and app.identifier in self.apps and app.identifier not in self.managed_apps
                and params.get("ChangeManagementState") != "Managed"):
            text = f"The app “{app.identifier}” is already installed."
            return error_answer(12025, text, RejectionReason="AppAlreadyInstalled")
        self.app_installs[app.identifier] = app
        if self.install_mode == InstallMode.SYNC:
            self._run_install(app)
        return {"Identifier": app.identifier, "State": str(app.status)}

    def _prepare_store_install(self, app: DeviceApp, store_id: int | None, identifier: str | None) -> None:
        hint = {**self.store_apps.get(store_id, {}), **self.store_apps.get(identifier, {})}
        app.identifier = identifier or hint.get("Identifier") or f"com.example.store{store_id}"
        app.name = hint.get("Name") or f"App {store_id if store_id is not None else app.identifier}"
        version = str(hint.get("ShortVersion") or self.store_version)
        app.external_version_identifier = hint.get("ExternalVersionIdentifier") or external_version_identifier(
            app.identifier, version)
        app.store_failure = hint.get("Failure")
        app.store_entry = installed_entry(app.identifier, app.name, version, int(hint.get("BundleSize", 1048576)),
                                          store=True, external_id=app.external_version_identifier)

    def _read_manifest(self, url: str) -> ManifestPackage:
        data = self._download(url)
        if len(data) > MAX_MANIFEST_BYTES:
            raise InstallFailure(f"the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            manifest = load_plist(data, max_bytes=MAX_MANIFEST_BYTES)
        except ProtocolError as exc:
            raise InstallFailure(f"the manifest is not a property list: {exc.message}") from None
        return parse_manifest(manifest)

    def _download(self, url: str) -> bytes:
        """GET an absolute URL the way the device's installer does: no MDM identity, no signature."""
        if self.require_https and not url.startswith("https:"):
            raise InstallFailure(f"{url} is not an https: URL")
        self.downloads.append(url)
        try:
            status, _headers, body = self.transport.request("GET", url)
        except Exception as exc:  # any transport failure is a failed download, as on a device
            raise InstallFailure(f"fetching {url} failed: {type(exc).__name__}") from None
        if status != 200:
            raise InstallFailure(f"fetching {url} answered HTTP {status}")
        return body

    def _run_install(self, app: DeviceApp) -> None:
        """Fetch and check the package (or ask the simulated store); the app is then installed, or Failed
        (an update that fails leaves the previous version installed)."""
        try:
            if app.package is not None:
                data = self._download(app.package.url)
                verify_package(data, app.package, self.platform, require_hashes=self.platform == "macos")
                entry = installed_entry(app.identifier, app.name or app.identifier, app.package.version,
                                        app.package.size or len(data), store=False, external_id=None)
            elif app.store_failure is not None:
                raise InstallFailure(str(app.store_failure))
            else:
                entry = app.store_entry or {}
        except InstallFailure as exc:
            app.status, app.failure, app.is_validated = AppStatus.FAILED, str(exc), False
            self.install_failures.append((app.identifier, str(exc)))
            return
        self.apps[app.identifier] = entry
        app.status, app.failure, app.is_validated = AppStatus.MANAGED, None, True

    def _answer_CertificateList(self, params: dict[str, Any]) -> dict[str, Any]:
        certs = []
        if self.identity is not None:
            certs.append({"CommonName": self.identity.certificate.subject.rfc4514_string(),
                          "Data": x509.cert_to_der(self.identity.certificate), "IsIdentity": True})
        ca = next((p for p in self.enrollment_profile["PayloadContent"]
                   if p["PayloadType"] == "com.apple.security.root"), None) if hasattr(self, "enrollment_profile") else None
        if ca is not None:
            certs.append({"CommonName": ca["PayloadDisplayName"], "Data": ca["PayloadContent"], "IsIdentity": False})
        return {"CertificateList": certs}

    def _answer_DeviceLocation(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"Latitude": 52.520008, "Longitude": 13.404954, "HorizontalAccuracy": 12.0,
                "VerticalAccuracy": 8.0, "Altitude": 34.0, "Speed": 0.0, "Course": -1.0,
                "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}

    def _answer_AvailableOSUpdates(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"AvailableOSUpdates": [dict(u) for u in self.offered_updates]}

    def advance_os_update(self) -> None:
        """Finish the update in progress once its delay has passed: the device runs the new version
        (DeviceInformation reports it) and is no longer offered it nor anything older."""
        pending = self.os_update
        if pending is None or pending.install_action not in _INSTALLING_ACTIONS:
            return
        if pending.progress(self.clock()) < 1.0:
            return
        self.os_version, self.build_version, self.os_update = pending.version, pending.build, None
        reached = _version_key(pending.version)
        self.offered_updates = [u for u in self.offered_updates if _version_key(u.get("Version")) > reached]

    def _answer_ScheduleOSUpdate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Each update of ``Updates`` must be one the device is offered (by ``ProductKey``, else by
        ``ProductVersion``) and above the running version; otherwise its result is Apple's error form
        (``InstallAction`` ``Error``, ``Status`` ``Idle``, an ``ErrorChain``). An accepted update that
        installs downloads and installs over ``os_update_delay`` seconds."""
        results = []
        for update in params.get("Updates") or []:
            action = update.get("InstallAction", "Default")
            key, version = update.get("ProductKey"), update.get("ProductVersion")
            offered = next((u for u in self.offered_updates
                            if (u.get("ProductKey") == key if key else u.get("Version") == version)), None)
            named = key or f"update-{version}"
            if offered is None or _version_key(offered.get("Version")) <= _version_key(self.os_version):
                code, text = ((UPDATE_NOT_OFFERED, f"The update {named} is not available for this device.")
                              if offered is None else
                              (UPDATE_DOWNGRADE, f"The device already runs {self.os_version}."))
                results.append({"ProductKey": named, "InstallAction": "Error", "Status": "Idle", "ErrorChain": [{
                    "ErrorCode": code, "ErrorDomain": UPDATE_ERROR_DOMAIN,
                    "LocalizedDescription": text, "USEnglishDescription": text}]})
                continue
            self.os_update = OSUpdateInProgress(offered["ProductKey"], offered["Version"], offered.get("Build", ""),
                                                action, self.clock(), self.os_update_delay)
            self.advance_os_update()
            installs = action in _INSTALLING_ACTIONS
            results.append({"ProductKey": offered["ProductKey"],
                            "InstallAction": action if action != "Default" else "InstallASAP",
                            "Status": ("Installing" if self.os_update is None or self.os_update_delay <= 0
                                       else "Downloading") if installs else "Idle"})
        return {"UpdateResults": results}

    def _answer_OSUpdateStatus(self, params: dict[str, Any]) -> dict[str, Any]:
        pending = self.os_update
        return {"OSUpdateStatus": [] if pending is None else [pending.status(self.clock())]}

    def _answer_ActivationLockBypassCode(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ActivationLockBypassCode": self.activation_lock_bypass_code}

    def _answer_DeviceLock(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"MessageResult": "NoPasscodeSet"} if self.platform != "macos" else {}

    def _answer_ClearPasscode(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("UnlockToken") != self.unlock_token:
            return {"Status": "Error", "ErrorChain": [{
                "ErrorCode": 12065, "ErrorDomain": "MCMDMErrorDomain",
                "LocalizedDescription": "Invalid unlock token.", "USEnglishDescription": "Invalid unlock token."}]}
        return {}


#: the Settings items that change a managed app: item name → the key holding its dictionary
_APP_SETTINGS = {"ApplicationConfiguration": "Configuration", "ApplicationAttributes": "Attributes"}


def _version_key(text: Any) -> tuple[int, ...]:
    """``"17.5.1"`` → ``(17, 5, 1)`` (trailing zeros dropped); ``()`` for anything else."""
    if not isinstance(text, str) or not all(p.isdigit() for p in text.split(".")):
        return ()
    parts = tuple(int(p) for p in text.split("."))
    while len(parts) > 1 and parts[-1] == 0:
        parts = parts[:-1]
    return parts


def _strings_or_none(value: Any) -> bool:
    """An optional list of strings (``Identifiers``, ``Items``) is absent or a list of strings."""
    return value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value))


_FOREIGN: list[Identity] = []


def foreign_identity() -> Identity:
    """An identity from a CA that is not ours (created once per process)."""
    if not _FOREIGN:
        ca_cert, ca_key = x509.create_ca("Foreign CA", organization="Elsewhere")
        key = x509.generate_private_key()
        cert = x509.issue_certificate(ca_cert, ca_key, common_name="foreign device",
                                      public_key=key.public_key(), usage="client")
        _FOREIGN.append(Identity(cert, key))
    return _FOREIGN[0]


def fingerprint(identity: Identity) -> str:
    return hashlib.sha256(x509.cert_to_der(identity.certificate)).hexdigest()

