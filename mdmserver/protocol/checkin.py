"""Check-in messages (``PUT`` to the CheckInURL) parsed into dataclasses.

Parsing is tolerant the way devices need: optional keys may be missing or present but empty
(re-marshalled messages carry every key as an empty string or empty data). Wrong types and a missing
identifier are ``ProtocolError`` (400); an unknown ``MessageType`` is ``UnknownMessageType`` (400).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .fields import opt_bool, opt_bytes, opt_dict, opt_ident, opt_line, opt_str, req_ident
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


#: The UDID shapes Apple devices use: the classic 40 hex digits; the 8-16 form of newer iPhones,
#: iPads and Apple silicon Macs (``00008030-001A2B3C4D5E802E``); an Intel Mac's hardware UUID.
UDID_SHAPES = (
    re.compile(r"[0-9A-Fa-f]{40}"),
    re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{16}"),
    re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"),
)
#: A User Enrollment's EnrollmentID has no documented shape: letters, digits, dots and dashes, and
#: at least 16 characters, so that it can never be mistaken for a serial number (10 to 12 characters).
ENROLLMENT_ID_SHAPE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.-]{15,63}")


def is_udid(value: str) -> bool:
    """True when ``value`` has one of the shapes of :data:`UDID_SHAPES`."""
    return any(shape.fullmatch(value) for shape in UDID_SHAPES)


def _common(d: dict[str, Any]) -> dict[str, Any]:
    udid = opt_ident(d, "UDID", MAX_ID)
    enrollment_id = opt_ident(d, "EnrollmentID", MAX_ID)
    identifier = udid or enrollment_id
    if identifier is None:
        raise ProtocolError("UDID (or EnrollmentID) is required")
    return {
        "message_type": d["MessageType"],
        "udid": identifier,
        "topic": opt_ident(d, "Topic", MAX_NAME),
        "user_id": opt_ident(d, "UserID", MAX_ID) or opt_ident(d, "EnrollmentUserID", MAX_ID),
        "enrollment_id": enrollment_id,
        "raw": d,
    }


def _check_identifier_shape(d: dict[str, Any]) -> None:
    """The device chooses its UDID: only Apple's shapes are accepted when it enrolls, so that a UDID
    can never pose as another device's serial number or database id."""
    if d.get("UDID"):
        if not is_udid(d["UDID"]):
            raise ProtocolError("UDID does not have the shape of an Apple device UDID")
    elif not ENROLLMENT_ID_SHAPE.fullmatch(d["EnrollmentID"]):
        raise ProtocolError("EnrollmentID does not have the shape of an enrollment identifier")


def _authenticate(d: dict[str, Any]) -> Authenticate:
    common = _common(d)
    _check_identifier_shape(d)
    return Authenticate(
        **common,
        serial_number=opt_ident(d, "SerialNumber", MAX_ID),
        model=opt_ident(d, "Model", MAX_MODEL),
        model_name=opt_line(d, "ModelName", MAX_MODEL),
        product_name=opt_ident(d, "ProductName", MAX_MODEL),
        os_version=opt_ident(d, "OSVersion", MAX_SHORT),
        build_version=opt_ident(d, "BuildVersion", MAX_SHORT),
        imei=opt_ident(d, "IMEI", MAX_SHORT),
        meid=opt_ident(d, "MEID", MAX_SHORT),
        device_name=opt_line(d, "DeviceName", MAX_NAME),
        challenge=opt_bytes(d, "Challenge"),
    )


def _token_update(d: dict[str, Any]) -> TokenUpdate:
    return TokenUpdate(
        **_common(d),
        token=opt_bytes(d, "Token"),
        push_magic=opt_ident(d, "PushMagic", MAX_NAME),
        unlock_token=opt_bytes(d, "UnlockToken"),
        awaiting_configuration=bool(opt_bool(d, "AwaitingConfiguration")),
        user_long_name=opt_line(d, "UserLongName", MAX_NAME),
        user_short_name=opt_line(d, "UserShortName", MAX_NAME),
        not_on_console=opt_bool(d, "NotOnConsole"),
    )


def _checkout(d: dict[str, Any]) -> CheckOut:
    return CheckOut(**_common(d))


def _user_authenticate(d: dict[str, Any]) -> UserAuthenticate:
    return UserAuthenticate(
        **_common(d),
        digest_response=opt_str(d, "DigestResponse"),
        user_long_name=opt_line(d, "UserLongName", MAX_NAME),
        user_short_name=opt_line(d, "UserShortName", MAX_NAME),
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
        token_service_type=opt_ident(d, "TokenServiceType", MAX_NAME),
        token_parameters=opt_dict(d, "TokenParameters"),
    )


def _declarative(d: dict[str, Any]) -> DeclarativeManagement:
    return DeclarativeManagement(
        **_common(d), endpoint=opt_ident(d, "Endpoint", MAX_NAME), data=opt_bytes(d, "Data")
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
    message_type = req_ident(d, "MessageType", MAX_ID)
    parser = PARSERS.get(message_type)
    if parser is None:
        raise UnknownMessageType(message_type)
    return parser(d)
