"""Command results (``PUT`` to the ServerURL) and the status values devices report."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .fields import opt_ident, opt_int, opt_list, opt_str, req_ident, req_str
from .plist import ProtocolError


class ResultStatus(StrEnum):
    """``Status`` of a message on the command channel."""

    IDLE = "Idle"
    ACKNOWLEDGED = "Acknowledged"
    ERROR = "Error"
    COMMAND_FORMAT_ERROR = "CommandFormatError"
    NOT_NOW = "NotNow"


@dataclass(frozen=True, slots=True)
class ErrorChainItem:
    error_code: int | None
    error_domain: str | None
    localized_description: str | None = None
    us_english_description: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "error_code": self.error_code,
            "error_domain": self.error_domain,
            "localized_description": self.localized_description,
            "us_english_description": self.us_english_description,
        }


@dataclass(frozen=True, slots=True)
class CommandResult:
    udid: str
    status: ResultStatus
    command_uuid: str | None = None
    request_type: str | None = None
    user_id: str | None = None
    error_chain: tuple[ErrorChainItem, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def _error_chain(d: dict[str, Any]) -> tuple[ErrorChainItem, ...]:
    items = opt_list(d, "ErrorChain") or []
    chain = []
    for item in items:
        if not isinstance(item, dict):
            raise ProtocolError("ErrorChain items must be dictionaries")
        chain.append(
            ErrorChainItem(
                error_code=opt_int(item, "ErrorCode"),
                error_domain=opt_str(item, "ErrorDomain"),
                localized_description=opt_str(item, "LocalizedDescription"),
                us_english_description=opt_str(item, "USEnglishDescription"),
            )
        )
    return tuple(chain)


def parse_result(d: dict[str, Any]) -> CommandResult:
    """Parse a command-channel message. Every status but ``Idle`` must carry a ``CommandUUID``."""
    raw_status = req_ident(d, "Status", 64)
    try:
        status = ResultStatus(raw_status)
    except ValueError:
        raise ProtocolError(f"unknown Status {raw_status!r}") from None
    udid = opt_ident(d, "UDID", 64) or opt_ident(d, "EnrollmentID", 64)
    if udid is None:
        raise ProtocolError("UDID (or EnrollmentID) is required")
    command_uuid = opt_ident(d, "CommandUUID", 64)
    if status is not ResultStatus.IDLE and command_uuid is None:
        raise ProtocolError(f"CommandUUID is required with Status {status.value}")
    return CommandResult(
        udid=udid,
        status=status,
        command_uuid=command_uuid,
        request_type=opt_ident(d, "RequestType", 64),
        user_id=opt_ident(d, "UserID", 64) or opt_ident(d, "EnrollmentUserID", 64),
        error_chain=_error_chain(d),
        raw=d,
    )


def command_envelope(command_uuid: str, request_type: str, parameters: dict[str, Any] | None) -> dict:
    """The dictionary a device receives: ``{CommandUUID, Command: {RequestType, …}}``."""
    command: dict[str, Any] = {"RequestType": request_type}
    for key, value in (parameters or {}).items():
        if key != "RequestType":
            command[key] = value
    return {"CommandUUID": command_uuid, "Command": command}


def parse_command_envelope(d: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Read a server→device command (used by the simulator): ``(uuid, request_type, parameters)``."""
    command_uuid = req_str(d, "CommandUUID")
    command = d.get("Command")
    if not isinstance(command, dict):
        raise ProtocolError("Command must be a dictionary")
    request_type = req_str(command, "RequestType")
    params = {k: v for k, v in command.items() if k != "RequestType"}
    return command_uuid, request_type, params
