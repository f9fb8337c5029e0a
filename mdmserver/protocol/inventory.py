"""Command results turned into plain inventory data (JSON-safe dicts and lists).

Each parser takes the loaded result dictionary and returns plain data; values of the wrong type in
optional fields are dropped rather than failing the whole answer, while a missing or wrongly typed
top-level answer (``ProfileList`` that is not an array, …) is a ``ProtocolError``.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .plist import ProtocolError, bounded_walk
from .secrets import is_secret


@bounded_walk
def jsonable(value: Any) -> Any:
    """bytes → base64 text, datetimes → ISO 8601 ``Z``, recursively; secrets (the secrets policy:
    FileVault recovery keys...) left out."""
    if isinstance(value, dict):
        return {str(k).replace("\x00", ""): jsonable(v) for k, v in value.items() if not is_secret(k, v)}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "")
    return value


def _typed(d: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = d.get(key)
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        return None
    if not isinstance(value, kind) or value == "":
        return None
    return value.replace("\x00", "") if isinstance(value, str) else value


def _s(d: dict[str, Any], key: str) -> str | None:
    return _typed(d, key, str)


def _i(d: dict[str, Any], key: str) -> int | None:
    return _typed(d, key, int)


def _b(d: dict[str, Any], key: str) -> bool | None:
    return _typed(d, key, bool)


def _f(d: dict[str, Any], key: str) -> float | None:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _section(result: dict[str, Any], key: str, kind: type) -> Any:
    value = result.get(key)
    if not isinstance(value, kind):
        raise ProtocolError(f"{key} missing or not a{'n array' if kind is list else ' dictionary'}")
    return value


def _dicts(items: list[Any]) -> list[dict[str, Any]]:
    return [item for item in items if isinstance(item, dict)]


# DeviceInformation query → device attribute (the columns the inventory keeps).
DEVICE_INFORMATION_COLUMNS: dict[str, tuple[str, Callable]] = {
    "DeviceName": ("device_name", _s),
    "OSVersion": ("os_version", _s),
    "BuildVersion": ("build_version", _s),
    "Model": ("model", _s),
    "ModelName": ("model_name", _s),
    "ProductName": ("product_name", _s),
    "SerialNumber": ("serial_number", _s),
    "IMEI": ("imei", _s),
    "MEID": ("meid", _s),
    "DeviceCapacity": ("capacity_gb", _f),
    "AvailableDeviceCapacity": ("available_capacity_gb", _f),
    "BatteryLevel": ("battery_level", _f),
    "IsSupervised": ("is_supervised", _b),
    "WiFiMAC": ("wifi_mac", _s),
    "BluetoothMAC": ("bluetooth_mac", _s),
    "IsActivationLockEnabled": ("activation_lock_enabled", _b),
    "IsMDMLostModeEnabled": ("lost_mode_enabled", _b),
    "IsDeviceLocatorServiceEnabled": ("find_my_enabled", _b),
    "PhoneNumber": ("phone_number", _s),
    "ICCID": ("iccid", _s),
    "HostName": ("hostname", _s),
    "LocalHostName": ("local_hostname", _s),
}


def parse_device_information(result: dict[str, Any]) -> dict[str, Any]:
    """``{"columns": {...device attributes...}, "query_responses": {...JSON-safe full answer...}}``."""
    responses = _section(result, "QueryResponses", dict)
    columns: dict[str, Any] = {}
    for query, (column, getter) in DEVICE_INFORMATION_COLUMNS.items():
        value = getter(responses, query)
        if value is not None:
            columns[column] = value
    return {"columns": columns, "query_responses": jsonable(responses)}


def parse_security_info(result: dict[str, Any]) -> dict[str, Any]:
    info = _section(result, "SecurityInfo", dict)
    management = info.get("ManagementStatus") if isinstance(info.get("ManagementStatus"), dict) else {}
    firewall = info.get("FirewallSettings") if isinstance(info.get("FirewallSettings"), dict) else {}
    return {
        "passcode_present": _b(info, "PasscodePresent"),
        "passcode_compliant": _b(info, "PasscodeCompliant"),
        "passcode_compliant_with_profiles": _b(info, "PasscodeCompliantWithProfiles"),
        "hardware_encryption_caps": _i(info, "HardwareEncryptionCaps"),
        "fde_enabled": _b(info, "FDE_Enabled"),
        "fde_has_personal_recovery_key": _b(info, "FDE_HasPersonalRecoveryKey"),
        "fde_has_institutional_recovery_key": _b(info, "FDE_HasInstitutionalRecoveryKey"),
        "sip_enabled": _b(info, "SystemIntegrityProtectionEnabled"),
        "firewall_enabled": _b(firewall, "FirewallEnabled"),
        "enrolled_via_dep": _b(management, "EnrolledViaDEP"),
        "user_approved_enrollment": _b(management, "UserApprovedEnrollment"),
        "is_user_enrollment": _b(management, "IsUserEnrollment"),
        "recovery_lock_enabled": _b(info, "IsRecoveryLockEnabled"),
        "details": jsonable(info),
    }


def parse_profile_list(result: dict[str, Any]) -> list[dict[str, Any]]:
    profiles = []
    for item in _dicts(_section(result, "ProfileList", list)):
        payloads = item.get("PayloadContent") if isinstance(item.get("PayloadContent"), list) else []
        profiles.append({
            "identifier": _s(item, "PayloadIdentifier"),
            "uuid": _s(item, "PayloadUUID"),
            "display_name": _s(item, "PayloadDisplayName"),
            "description": _s(item, "PayloadDescription"),
            "organization": _s(item, "PayloadOrganization"),
            "version": _i(item, "PayloadVersion"),
            "is_managed": _b(item, "IsManaged"),
            "is_encrypted": _b(item, "IsEncrypted"),
            "removal_disallowed": _b(item, "PayloadRemovalDisallowed"),
            "has_removal_passcode": _b(item, "HasRemovalPasscode"),
            "payloads": [
                {
                    "type": _s(p, "PayloadType"),
                    "identifier": _s(p, "PayloadIdentifier"),
                    "uuid": _s(p, "PayloadUUID"),
                    "display_name": _s(p, "PayloadDisplayName"),
                    "description": _s(p, "PayloadDescription"),
                    "organization": _s(p, "PayloadOrganization"),
                    "version": _i(p, "PayloadVersion"),
                }
                for p in _dicts(payloads)
            ],
        })
    return profiles


def parse_installed_applications(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "identifier": _s(app, "Identifier"),
            "name": _s(app, "Name"),
            "version": _s(app, "Version"),
            "short_version": _s(app, "ShortVersion"),
            "bundle_size": _i(app, "BundleSize"),
            "dynamic_size": _i(app, "DynamicSize"),
            "external_version_identifier": _i(app, "ExternalVersionIdentifier"),
            "is_validated": _b(app, "IsValidated"),
            "installing": _b(app, "Installing"),
            "app_store_vendable": _b(app, "AppStoreVendable"),
            "beta_app": _b(app, "BetaApp"),
            "has_update_available": _b(app, "HasUpdateAvailable"),
        }
        for app in _dicts(_section(result, "InstalledApplicationList", list))
    ]


def parse_managed_applications(result: dict[str, Any]) -> list[dict[str, Any]]:
    apps = result.get("ManagedApplicationList")
    if not isinstance(apps, dict):
        raise ProtocolError("ManagedApplicationList missing or not a dictionary")
    return [
        {"identifier": str(bundle_id), "status": _s(info, "Status"),
         "management_flags": _i(info, "ManagementFlags"), "has_configuration": _b(info, "HasConfiguration")}
        for bundle_id, info in apps.items()
        if isinstance(info, dict)
    ]


def _name(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except ValueError:
        return ""


def parse_certificate(der: bytes) -> dict[str, Any]:
    """Subject, issuer, validity, serial and SHA-256 fingerprint of a DER certificate."""
    cert = x509.load_der_x509_certificate(der)
    return {
        "subject": _name(cert.subject),
        "issuer": _name(cert.issuer),
        "serial_number": format(cert.serial_number, "x"),
        "not_before": jsonable(cert.not_valid_before_utc),
        "not_after": jsonable(cert.not_valid_after_utc),
        "fingerprint_sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def parse_certificate_list(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for item in _dicts(_section(result, "CertificateList", list)):
        data = item.get("Data") if isinstance(item.get("Data"), bytes) else None
        entry: dict[str, Any] = {
            "common_name": _s(item, "CommonName"),
            "is_identity": bool(_b(item, "IsIdentity")),
            "subject": None, "issuer": None, "serial_number": None,
            "not_before": None, "not_after": None,
            "fingerprint_sha256": hashlib.sha256(data).hexdigest() if data else None,
            "parse_error": None,
        }
        if data:
            try:
                entry.update(parse_certificate(data))
            except ValueError as exc:
                entry["parse_error"] = f"certificate could not be parsed: {exc}"[:200]
        else:
            entry["parse_error"] = "no certificate data"
        out.append(entry)
    return out


def parse_device_location(result: dict[str, Any]) -> dict[str, Any]:
    latitude, longitude = _f(result, "Latitude"), _f(result, "Longitude")
    if latitude is None or longitude is None:
        raise ProtocolError("DeviceLocation answer lacks Latitude/Longitude")
    timestamp = result.get("Timestamp")
    when: datetime | None = None
    if isinstance(timestamp, datetime):
        when = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
    elif isinstance(timestamp, str):
        try:
            when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
            when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
        except (ValueError, OverflowError):
            when = None
    return {
        "latitude": latitude,
        "longitude": longitude,
        "horizontal_accuracy": _f(result, "HorizontalAccuracy"),
        "vertical_accuracy": _f(result, "VerticalAccuracy"),
        "altitude": _f(result, "Altitude"),
        "speed": _f(result, "Speed"),
        "course": _f(result, "Course"),
        "timestamp": when,
    }


def parse_available_os_updates(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "product_key": _s(u, "ProductKey"),
            "human_readable_name": _s(u, "HumanReadableName"),
            "product_name": _s(u, "ProductName"),
            "version": _s(u, "Version"),
            "build": _s(u, "Build"),
            "download_size": _i(u, "DownloadSize"),
            "install_size": _i(u, "InstallSize"),
            "is_critical": _b(u, "IsCritical"),
            "is_config_data_update": _b(u, "IsConfigDataUpdate"),
            "is_firmware_update": _b(u, "IsFirmwareUpdate"),
            "is_major_os_update": _b(u, "IsMajorOSUpdate"),
            "restart_required": _b(u, "RestartRequired"),
            "allows_install_later": _b(u, "AllowsInstallLater"),
        }
        for u in _dicts(_section(result, "AvailableOSUpdates", list))
    ]


def _date(d: dict[str, Any], key: str) -> str | None:
    """A plist date as ISO 8601 ``Z`` text (None when absent or not a date)."""
    value = d.get(key)
    return jsonable(value) if isinstance(value, datetime) else None


def parse_os_update_status(result: dict[str, Any]) -> list[dict[str, Any]]:
    """``OSUpdateStatus``: the updates downloading, installing or idle on the device. The download
    progress is Apple's fraction from 0.0 to 1.0 (a value outside it is dropped); the deferral keys are
    macOS 12.3 and later only."""
    rows = []
    for u in _dicts(_section(result, "OSUpdateStatus", list)):
        percent = _f(u, "DownloadPercentComplete")
        rows.append({
            "product_key": _s(u, "ProductKey"),
            "status": _s(u, "Status"),
            "is_downloaded": _b(u, "IsDownloaded"),
            "download_percent_complete": percent if percent is not None and 0.0 <= percent <= 1.0 else None,
            "max_deferrals": _i(u, "MaxDeferrals"),
            "deferrals_remaining": _i(u, "DeferralsRemaining"),
            "next_scheduled_install": _date(u, "NextScheduledInstall"),
        })
    return rows


# Request type → parser, and the top-level key that identifies the answer when RequestType is absent.
PARSERS: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {
    "DeviceInformation": ("QueryResponses", parse_device_information),
    "SecurityInfo": ("SecurityInfo", parse_security_info),
    "ProfileList": ("ProfileList", parse_profile_list),
    "InstalledApplicationList": ("InstalledApplicationList", parse_installed_applications),
    "ManagedApplicationList": ("ManagedApplicationList", parse_managed_applications),
    "CertificateList": ("CertificateList", parse_certificate_list),
    "DeviceLocation": ("Latitude", parse_device_location),
    "AvailableOSUpdates": ("AvailableOSUpdates", parse_available_os_updates),
    "OSUpdateStatus": ("OSUpdateStatus", parse_os_update_status),
}


def detect_request_type(result: dict[str, Any]) -> str | None:
    """Guess the request type of an answer from its payload key (devices often omit ``RequestType``)."""
    echoed = result.get("RequestType")
    if isinstance(echoed, str) and echoed:
        return echoed
    for request_type, (key, _parser) in PARSERS.items():
        if key in result:
            return request_type
    return None


def parse_inventory(request_type: str, result: dict[str, Any]) -> Any:
    """Parse an acknowledged answer of ``request_type``; ``None`` when no parser exists."""
    entry = PARSERS.get(request_type)
    if entry is None:
        return None
    return entry[1](result)
