"""Check-in messages (``PUT`` to the CheckInURL) parsed into dataclasses.

Parsing is tolerant the way devices need: optional keys may be missing or present but empty
(re-marshalled messages carry every key as an empty string or empty data). Wrong types and a missing
identifier are ``ProtocolError`` (400); an unknown ``MessageType`` is ``UnknownMessageType`` (400).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .fields import opt_bool, opt_bytes, opt_dict, opt_str, req_str
from .plist import ProtocolError


class UnknownMessageType(ProtocolError):
    def __init__(self, message_type: str) -> None:
        super().__init__(f"unknown MessageType {message_type!r}")
        self.message_type = message_type


@dataclass(frozen=True, slots=True)
class CheckinMessage:
    """Fields every check-in carries. ``udid`` is the UDID, or the EnrollmentID of a user enrollment."""

    message_type: str
    udid: str
    topic: str | None = None
    user_id: str | None = None
    enrollment_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_user_channel(self) -> bool:
        return self.user_id is not None


@dataclass(frozen=True, slots=True)
class Authenticate(CheckinMessage):
    serial_number: str | None = None
    model: str | None = None
    model_name: str | None = None
    product_name: str | None = None
    os_version: str | None = None
    build_version: str | None = None
    imei: str | None = None
    meid: str | None = None
    device_name: str | None = None
    challenge: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class TokenUpdate(CheckinMessage):
    token: bytes | None = field(default=None, repr=False)
    push_magic: str | None = field(default=None, repr=False)
    unlock_token: bytes | None = field(default=None, repr=False)
    awaiting_configuration: bool = False
    user_long_name: str | None = None
    user_short_name: str | None = None
    not_on_console: bool | None = None


@dataclass(frozen=True, slots=True)
class CheckOut(CheckinMessage):
    pass


@dataclass(frozen=True, slots=True)
class UserAuthenticate(CheckinMessage):
    digest_response: str | None = field(default=None, repr=False)
    user_long_name: str | None = None
    user_short_name: str | None = None


@dataclass(frozen=True, slots=True)
class SetBootstrapToken(CheckinMessage):
    """``bootstrap_token`` ``None`` means the device asks the server to forget its token."""

    bootstrap_token: bytes | None = field(default=None, repr=False)
    awaiting_configuration: bool = False


@dataclass(frozen=True, slots=True)
class GetBootstrapToken(CheckinMessage):
    awaiting_configuration: bool = False


@dataclass(frozen=True, slots=True)
class GetToken(CheckinMessage):
    token_service_type: str | None = None
    token_parameters: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DeclarativeManagement(CheckinMessage):
    endpoint: str | None = None
    data: bytes | None = field(default=None, repr=False)


#: Longest value accepted for identifying fields (what the server stores).
MAX_ID = 64
MAX_NAME = 255
MAX_SHORT = 32
MAX_MODEL = 100


def _common(d: dict[str, Any]) -> dict[str, Any]:
    udid = opt_str(d, "UDID", MAX_ID)
    enrollment_id = opt_str(d, "EnrollmentID", MAX_ID)
    identifier = udid or enrollment_id
    if identifier is None:
        raise ProtocolError("UDID (or EnrollmentID) is required")
    return {
        "message_type": d["MessageType"],
        "udid": identifier,
        "topic": opt_str(d, "Topic", MAX_NAME),
        "user_id": opt_str(d, "UserID", MAX_ID) or opt_str(d, "EnrollmentUserID", MAX_ID),
        "enrollment_id": enrollment_id,
        "raw": d,
    }


def _authenticate(d: dict[str, Any]) -> Authenticate:
    return Authenticate(
        **_common(d),
        serial_number=opt_str(d, "SerialNumber", MAX_ID),
        model=opt_str(d, "Model", MAX_MODEL),
        model_name=opt_str(d, "ModelName", MAX_MODEL),
        product_name=opt_str(d, "ProductName", MAX_MODEL),
        os_version=opt_str(d, "OSVersion", MAX_SHORT),
        build_version=opt_str(d, "BuildVersion", MAX_SHORT),
        imei=opt_str(d, "IMEI", MAX_SHORT),
        meid=opt_str(d, "MEID", MAX_SHORT),
        device_name=opt_str(d, "DeviceName", MAX_NAME),
        challenge=opt_bytes(d, "Challenge"),
    )


def _token_update(d: dict[str, Any]) -> TokenUpdate:
    return TokenUpdate(
        **_common(d),
        token=opt_bytes(d, "Token"),
        push_magic=opt_str(d, "PushMagic", MAX_NAME),
        unlock_token=opt_bytes(d, "UnlockToken"),
        awaiting_configuration=bool(opt_bool(d, "AwaitingConfiguration")),
        user_long_name=opt_str(d, "UserLongName", MAX_NAME),
        user_short_name=opt_str(d, "UserShortName", MAX_NAME),
        not_on_console=opt_bool(d, "NotOnConsole"),
    )


def _checkout(d: dict[str, Any]) -> CheckOut:
    return CheckOut(**_common(d))


def _user_authenticate(d: dict[str, Any]) -> UserAuthenticate:
    return UserAuthenticate(
        **_common(d),
        digest_response=opt_str(d, "DigestResponse"),
        user_long_name=opt_str(d, "UserLongName", MAX_NAME),
        user_short_name=opt_str(d, "UserShortName", MAX_NAME),
    )


def _set_bootstrap(d: dict[str, Any]) -> SetBootstrapToken:
    return SetBootstrapToken(
        **_common(d),
        bootstrap_token=opt_bytes(d, "BootstrapToken"),
        awaiting_configuration=bool(opt_bool(d, "AwaitingConfiguration")),
    )


def _get_bootstrap(d: dict[str, Any]) -> GetBootstrapToken:
    return GetBootstrapToken(
        **_common(d), awaiting_configuration=bool(opt_bool(d, "AwaitingConfiguration"))
    )


def _get_token(d: dict[str, Any]) -> GetToken:
    return GetToken(
        **_common(d),
        token_service_type=opt_str(d, "TokenServiceType"),
        token_parameters=opt_dict(d, "TokenParameters"),
    )


def _declarative(d: dict[str, Any]) -> DeclarativeManagement:
    return DeclarativeManagement(
        **_common(d), endpoint=opt_str(d, "Endpoint"), data=opt_bytes(d, "Data")
    )


PARSERS = {
    "Authenticate": _authenticate,
    "TokenUpdate": _token_update,
    "CheckOut": _checkout,
    "UserAuthenticate": _user_authenticate,
    "SetBootstrapToken": _set_bootstrap,
    "GetBootstrapToken": _get_bootstrap,
    "GetToken": _get_token,
    "DeclarativeManagement": _declarative,
}

MESSAGE_TYPES = frozenset(PARSERS)


def is_checkin(d: dict[str, Any]) -> bool:
    """A message with ``MessageType`` is a check-in; without it, a command result."""
    return "MessageType" in d


def parse_checkin(d: dict[str, Any]) -> CheckinMessage:
    """Turn a loaded check-in dictionary into its dataclass."""
    message_type = req_str(d, "MessageType")
    parser = PARSERS.get(message_type)
    if parser is None:
        raise UnknownMessageType(message_type)
    return parser(d)
