"""ManageEngine's action vocabulary mapped to MDM commands, with the parameters each action takes.

Applicability rules come from the command catalogue (platforms, supervision per request type) plus
the device state an action depends on (lost mode, a stored UnlockToken, enrollment and admission).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

INVENTORY_SET = ("DeviceInformation", "SecurityInfo", "ProfileList", "InstalledApplicationList", "CertificateList")


@dataclass(frozen=True)
class CommandPlan:
    """One command to queue: for every eligible device, or only those of ``platforms`` (or not of them)."""

    request_type: str
    parameters: dict[str, Any] | None
    only_platforms: tuple[str, ...] | None = None
    except_platforms: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Action:
    name: str
    title: str
    request_types: tuple[str, ...]
    plan: Callable[[dict[str, Any], str], list[CommandPlan]]
    schema: type[Schema] | None = None
    #: True: only for devices in lost mode; False: only for devices not in lost mode
    lost_mode: bool | None = None
    needs_unlock_token: bool = False
    renames: bool = False
    retires: bool = False
    #: True: a Mac locked without a ``pin`` gets a random 6-digit one (Fleet's way), returned to the caller
    generates_mac_pin: bool = False


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def _text(max_len: int = 1000) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=max_len))


class LockSchema(_Strict):
    message = _text()
    phone_number = _text(64)
    pin = fields.String(validate=validate.Regexp(r"^[0-9]{6}$", error="the PIN is 6 digits"))


class LostModeSchema(_Strict):
    message = _text()
    phone_number = _text(64)
    footnote = _text()

    @validates_schema
    def _message_or_phone(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("message") and not data.get("phone_number"):
            raise ValidationError("lost mode needs a message or a phone number", "message")


class WipeSchema(_Strict):
    pin = fields.String(validate=validate.Regexp(r"^[0-9]{6}$", error="the PIN is 6 digits"))
    preserve_data_plan = fields.Boolean(truthy={True}, falsy={False})
    disallow_proximity_setup = fields.Boolean(truthy={True}, falsy={False})


class UpdateOSSchema(_Strict):
    install_action = fields.String(
        load_default="Default",
        validate=validate.OneOf(["Default", "DownloadOnly", "InstallASAP", "NotifyOnly", "InstallLater",
                                 "InstallForceRestart"]),
    )
    product_key = _text(255)
    product_version = _text(64)


class RenameSchema(_Strict):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255))


def _keys(params: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    return {apple: params[ours] for ours, apple in mapping.items() if ours in params}


def _scan(params: dict[str, Any], _prefix: str) -> list[CommandPlan]:
    return [CommandPlan(rt, None) for rt in INVENTORY_SET]


def _simple(request_type: str) -> Callable[[dict[str, Any], str], list[CommandPlan]]:
    return lambda params, _prefix: [CommandPlan(request_type, {})]


def _lock(params: dict[str, Any], _prefix: str) -> list[CommandPlan]:
    common = _keys(params, {"message": "Message", "phone_number": "PhoneNumber"})
    if "pin" not in params:
        return [CommandPlan("DeviceLock", common)]
    return [CommandPlan("DeviceLock", {**common, "PIN": params["pin"]}, only_platforms=("macos",)),
            CommandPlan("DeviceLock", common, except_platforms=("macos",))]


def _wipe(params: dict[str, Any], _prefix: str) -> list[CommandPlan]:
    common = _keys(params, {"preserve_data_plan": "PreserveDataPlan",
                            "disallow_proximity_setup": "DisallowProximitySetup"})
    if "pin" not in params:
        return [CommandPlan("EraseDevice", common)]
    return [CommandPlan("EraseDevice", {**common, "PIN": params["pin"]}, only_platforms=("macos",)),
            CommandPlan("EraseDevice", common, except_platforms=("macos",))]


def _lost_mode(params: dict[str, Any], _prefix: str) -> list[CommandPlan]:
    return [CommandPlan("EnableLostMode", _keys(params, {"message": "Message", "phone_number": "PhoneNumber",
                                                        "footnote": "Footnote"}))]


def _update_os(params: dict[str, Any], _prefix: str) -> list[CommandPlan]:
    update = {"InstallAction": params.get("install_action", "Default"),
              **_keys(params, {"product_key": "ProductKey", "product_version": "ProductVersion"})}
    return [CommandPlan("ScheduleOSUpdate", {"Updates": [update]})]


def _rename(params: dict[str, Any], _prefix: str) -> list[CommandPlan]:
    return [CommandPlan("Settings", {"Settings": [{"Item": "DeviceName", "DeviceName": params["name"]}]})]


def _retire(params: dict[str, Any], mdm_profile_identifier: str) -> list[CommandPlan]:
    """RemoveProfile of the device's MDM enrollment profile (``actions.service.mdm_profile_identifiers``)."""
    return [CommandPlan("RemoveProfile", {"Identifier": mdm_profile_identifier})]


_ACTIONS = [
    Action("scan", "Scan (refresh inventory)", INVENTORY_SET, _scan),
    Action("lock", "Lock", ("DeviceLock",), _lock, LockSchema, generates_mac_pin=True),
    Action("restart", "Restart", ("RestartDevice",), _simple("RestartDevice")),
    Action("shutdown", "Shut down", ("ShutDownDevice",), _simple("ShutDownDevice")),
    Action("clear_passcode", "Clear passcode", ("ClearPasscode",), _simple("ClearPasscode"),
           needs_unlock_token=True),
    Action("complete_wipe", "Complete wipe (erase)", ("EraseDevice",), _wipe, WipeSchema),
    Action("corporate_wipe", "Corporate wipe (remove management)", ("RemoveProfile",), _retire, retires=True),
    Action("retire", "Retire (remove management)", ("RemoveProfile",), _retire, retires=True),
    Action("fetch_location", "Fetch location", ("DeviceLocation",), _simple("DeviceLocation"), lost_mode=True),
    Action("enable_lost_mode", "Enable lost mode", ("EnableLostMode",), _lost_mode, LostModeSchema,
           lost_mode=False),
    Action("disable_lost_mode", "Disable lost mode", ("DisableLostMode",), _simple("DisableLostMode"),
           lost_mode=True),
    Action("play_lost_mode_sound", "Play lost mode sound", ("PlayLostModeSound",), _simple("PlayLostModeSound"),
           lost_mode=True),
    Action("update_os", "Update the OS", ("ScheduleOSUpdate",), _update_os, UpdateOSSchema),
    Action("rename", "Rename", ("Settings",), _rename, RenameSchema, renames=True),
    Action("clear_restrictions_password", "Clear restrictions password", ("ClearRestrictionsPassword",),
           _simple("ClearRestrictionsPassword")),
    Action("bypass_activation_lock", "Get the Activation Lock bypass code", ("ActivationLockBypassCode",),
           _simple("ActivationLockBypassCode")),
]

ACTIONS: dict[str, Action] = {action.name: action for action in _ACTIONS}

#: ManageEngine's command names (its bulk ``POST /api/v1/mdm/actions/AssetScan`` and the body's
#: ``command_name``) → our action; an action that is one MDM command is also named by that command
#: (``DeviceLock``, ``RestartDevice``...). ``RemoveProfile`` and ``Settings`` name no action alone.
COMMAND_NAMES: dict[str, str] = {
    "AssetScan": "scan",
    "CorporateWipe": "corporate_wipe",
    **{action.request_types[0]: action.name for action in _ACTIONS
       if len(action.request_types) == 1 and action.request_types[0] not in ("RemoveProfile", "Settings")},
}

#: ManageEngine's flat action arguments (``{"lock_message": "…", "unlock_pin": "…"}``) → per action,
#: our parameter they set.
FLAT_ARGUMENTS: dict[str, dict[str, str]] = {
    "lock_message": {"lock": "message", "enable_lost_mode": "message"},
    "phone_number": {"lock": "phone_number", "enable_lost_mode": "phone_number"},
    "unlock_pin": {"lock": "pin"},
    "wipe_lock_pin": {"complete_wipe": "pin"},
}

#: ManageEngine's documented arguments that no Apple command takes (notification e-mails, Android's
#: SD card and app-data wipes, the Android passcode reset, ticket and audit notes): accepted, not
#: sent, and named back to the caller in ``ignored``.
IGNORED_ARGUMENTS = frozenset({
    "send_email_to_user", "email_sent_to_user", "email_sent_to_admin", "email_address_list", "clear_data_for_all_apps",
    "re_enter_time", "wipe_but_retain_mdm", "wipe_sd_card", "passcode", "description", "audit_message", "ticket_id",
    "inclusion", "retry", "remarks",
})

#: ManageEngine's placeholder for "no value" in its example bodies
NO_VALUE = "--"
