"""A simulated Apple device speaking the MDM protocol.

It enrolls through ``/mdm/enroll`` (unwrapping the signed profile and the PKCS#12 identity inside),
signs every message with ``Mdm-Signature``, answers commands with the shapes real devices send
(taken from the conformance messages) and can misbehave on request. Transport-agnostic: give it
anything with ``request(method, path, content=None, headers=None) -> (status, headers, body)``.
"""

from __future__ import annotations

import base64
import hashlib
import plistlib
import random
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography import x509 as cx509

from mdmserver.pki import cms, x509
from mdmserver.protocol.plist import dump_plist, load_dict, load_plist
from mdmserver.protocol.results import parse_command_envelope

MISBEHAVIOURS = ("unsigned", "foreign_cert", "other_device_cert", "garbage", "tampered", "bad_signature")


class Transport(Protocol):
    def request(
        self, method: str, path: str, content: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]: ...


class HttpxTransport:
    """Real HTTP through httpx (the simulator CLI and live-server tests)."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, client=None, verify: Any = True) -> None:
        """``verify``: as httpx's (an ``ssl.SSLContext`` trusting a test CA, for an ``https://`` server)."""
        import httpx

        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.Client(timeout=timeout, verify=verify)

    def request(self, method, path, content=None, headers=None):
        response = self.client.request(method, self.base_url + path, content=content, headers=headers)
        return response.status_code, dict(response.headers), response.content

    def close(self) -> None:
        self.client.close()


class FlaskTransport:
    """A Flask test client as transport (in-process tests)."""

    def __init__(self, client) -> None:
        self.client = client

    def request(self, method, path, content=None, headers=None):
        response = self.client.open(path, method=method, data=content, headers=headers or {})
        return response.status_code, dict(response.headers), response.get_data()


class SimulatorError(RuntimeError):
    pass


@dataclass
class Identity:
    certificate: cx509.Certificate
    key: Any


def _hex_udid(rng: random.Random) -> str:
    return str(uuidlib.UUID(int=rng.getrandbits(128))).upper()


_MODELS = {
    "ios": ("iPhone14,5", "iPhone", "MN9J3LL/A", "17.5", "21F79"),
    "ipados": ("iPad13,18", "iPad", "MPQ03LL/A", "17.5", "21F79"),
    "macos": ("MacBookPro18,3", "MacBook Pro", "MKGR3LL/A", "14.5", "23F79"),
}


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
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
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
    #: False once the MDM enrollment profile was removed (the device left management)
    enrolled: bool = False
    #: set by RemoveProfile of the MDM profile: the device leaves management after acknowledging
    _leaving: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self._rng = rng
        if self.platform not in _MODELS:
            raise ValueError(f"platform must be one of {', '.join(_MODELS)}")
        product, model_name, model, os_version, build = _MODELS[self.platform]
        self.product_name, self.model_name, self.model = product, model_name, model
        self.os_version, self.build_version = os_version, build
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

    # --- enrollment --------------------------------------------------------------------------------

    def enroll(self, *, secret: str | None = None) -> dict[str, Any]:
        """Fetch the enrollment profile (the secret, if any, as the HTTP Basic password), check its
        signature, load the PKCS#12 identity."""
        headers = {}
        if secret is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"device:{secret}".encode()).decode()
        status, _headers, body = self.transport.request("GET", "/mdm/enroll", headers=headers)
        if status != 200:
            raise SimulatorError(f"enrollment failed with HTTP {status}: {body[:200]!r}")
        signed = cms.unwrap_signed(body)
        profile = load_plist(signed.content)
        payloads = {p["PayloadType"]: p for p in profile["PayloadContent"]}
        p12 = payloads["com.apple.security.pkcs12"]
        cert, key, _extra = x509.load_pkcs12(p12["PayloadContent"], p12["Password"].encode())
        mdm = payloads["com.apple.mdm"]
        if mdm["IdentityCertificateUUID"] != p12["PayloadUUID"]:
            raise SimulatorError("IdentityCertificateUUID does not name the PKCS#12 payload")
        self.identity = Identity(cert, key)
        self.topic = mdm["Topic"]
        self.server_url, self.checkin_url = mdm["ServerURL"], mdm["CheckInURL"]
        self.enrollment_profile = profile
        self.profiles[profile["PayloadIdentifier"]] = profile
        self.enrolled, self._leaving = True, False
        return profile

    # --- sending -------------------------------------------------------------------------------------

    def signature_for(self, body: bytes, identity: Identity | None = None) -> str:
        ident = identity or self.identity
        if ident is None:
            raise SimulatorError("not enrolled")
        return base64.b64encode(cms.sign(body, ident.certificate, ident.key, detached=True)).decode()

    def send(
        self, path: str, message: dict[str, Any] | bytes, *, misbehave: str | None = None,
        other: SimulatedDevice | None = None,
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
        status, _h, content = self.transport.request("PUT", path, content=body, headers=headers)
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
        """Idle, then answer commands until the server has none; returns (uuid, type, status) handled."""
        handled: list[tuple[str, str, str]] = []
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
        return handled

    def _leave_management(self) -> None:
        """What a device does once its MDM profile is gone: every profile installed through MDM goes
        with it, it sends CheckOut when the profile asked for it, and it stops talking to the server
        (a command offered with the acknowledgement's answer is never run)."""
        mdm = next((p for p in self.enrollment_profile.get("PayloadContent", [])
                    if p.get("PayloadType") == "com.apple.mdm"), {})
        self.profiles.clear()
        self._leaving, self.enrolled = False, False
        if mdm.get("CheckOutWhenRemoved"):
            status = self.checkout()
            if status != 200:
                raise SimulatorError(f"CheckOut answered HTTP {status}")

    # --- answers -------------------------------------------------------------------------------------

    def answer(self, command_uuid: str, request_type: str, params: dict[str, Any]) -> dict[str, Any]:
        base = {"UDID": self.udid, "CommandUUID": command_uuid}
        self.received.append((request_type, params))
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
        handler = getattr(self, f"_answer_{request_type}", None)
        payload = handler(params) if handler else {}
        if "Status" in payload:
            return {**base, **payload}
        return {**base, "Status": "Acknowledged", **payload}

    def _answer_DeviceInformation(self, params: dict[str, Any]) -> dict[str, Any]:
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
        return {"InstalledApplicationList": list(self.apps.values())}

    def _answer_ManagedApplicationList(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ManagedApplicationList": {
            bundle: {"Status": "Managed", "ManagementFlags": 0, "HasConfiguration": False,
                     "HasFeedback": False, "IsValidated": True, "ExternalVersionIdentifier": 1}
            for bundle in self.apps
        }}

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
        return {"AvailableOSUpdates": [{
            "ProductKey": f"iOSUpdate{self.build_version}X", "HumanReadableName": "iOS 17.6", "ProductName": "iOS",
            "Version": "17.6", "Build": "21G80", "DownloadSize": 225236247, "InstallSize": 537395200,
            "IsCritical": False, "RestartRequired": True, "AllowsInstallLater": True,
            "IsConfigDataUpdate": False, "IsFirmwareUpdate": False, "IsMajorOSUpdate": False,
        }]}

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

