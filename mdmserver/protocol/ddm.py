"""Declarative device management (DDM), the wire side: declarations and their tokens, the check-in
``DeclarativeManagement`` endpoints, and status reports. Pure: no Flask, no database.

Apple's references: the ``DeclarativeManagement`` check-in message (``Endpoint`` ``tokens``,
``declaration-items``, ``declaration/<type>/<identifier>``, ``status``; device-management
``checkin.declarativemanagement``), the ``DeclarativeManagement`` command (``Data``: the
``SyncTokens`` JSON), the declarations (``declarative/declarations``) and status items
(``declarative/status``) of apple/device-management. Facts only; the shapes below are ours.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mdmserver.protocol.plist import ProtocolError
from mdmserver.protocol.versions import version_tuple


class Kind(StrEnum):
    """A declaration's kind, as it appears in ``declaration/<kind>/<identifier>``."""

    ACTIVATION = "activation"
    CONFIGURATION = "configuration"
    ASSET = "asset"
    MANAGEMENT = "management"


#: the key of each kind in ``declaration-items`` and in ``management.declarations`` status
ITEMS_KEY = {Kind.ACTIVATION: "Activations", Kind.CONFIGURATION: "Configurations", Kind.ASSET: "Assets",
             Kind.MANAGEMENT: "Management"}
STATUS_KEY = {Kind.ACTIVATION: "activations", Kind.CONFIGURATION: "configurations", Kind.ASSET: "assets",
              Kind.MANAGEMENT: "management"}

ACTIVATION_SIMPLE = "com.apple.activation.simple"
SOFTWARE_UPDATE_ENFORCEMENT = "com.apple.configuration.softwareupdate.enforcement.specific"
STATUS_SUBSCRIPTIONS = "com.apple.configuration.management.status-subscriptions"
LEGACY_PROFILE = "com.apple.configuration.legacy"

#: the status items this server subscribes to (what it reads: the OS-update progress and the OS version)
SUBSCRIBED_ITEMS = (
    "softwareupdate.install-state",
    "softwareupdate.pending-version",
    "softwareupdate.failure-reason",
    "softwareupdate.install-reason",
    "device.operating-system.version",
    "device.operating-system.build-version",
    "device.operating-system.supplemental.extra-version",
    "management.declarations",
)

#: Apple's status item names (apple/device-management ``declarative/status``): a report's tree is cut
#: at these paths (their value is kept whole, e.g. ``softwareupdate.failure-reason`` is a dictionary);
#: any other branch is walked down to its leaves
STATUS_ITEMS = frozenset({
    "account.list.caldav", "account.list.carddav", "account.list.exchange", "account.list.google",
    "account.list.ldap", "account.list.mail.incoming", "account.list.mail.outgoing",
    "account.list.subscribed-calendar", "app.managed.list", "device.identifier.serial-number",
    "device.identifier.udid", "device.model.family", "device.model.identifier", "device.model.marketing-name",
    "device.model.number", "device.operating-system.build-version", "device.operating-system.family",
    "device.operating-system.marketing-name", "device.operating-system.supplemental.build-version",
    "device.operating-system.supplemental.extra-version", "device.operating-system.version",
    "device.power.battery-health", "diskmanagement.filevault.enabled", "management.client-capabilities",
    "management.declarations", "mdm.app", "passcode.is-compliant", "passcode.is-present",
    "screensharing.connection.group.unresolved-connection", "security.certificate.list",
    "services.background-task", "softwareupdate.beta-enrollment", "softwareupdate.device-id",
    "softwareupdate.failure-reason", "softwareupdate.install-reason", "softwareupdate.install-state",
    "softwareupdate.pending-version", "test.array-value", "test.boolean-value", "test.dictionary-value",
    "test.error-value", "test.integer-value", "test.real-value", "test.string-value",
})
DECLARATIONS_ITEM = "management.declarations"

#: ``softwareupdate.install-state`` values (Apple's enum)
INSTALL_STATES = frozenset({"none", "downloading", "downloaded", "installing", "installed", "failed"})


# --- which devices ---------------------------------------------------------------------------------

#: the first OS version, per platform, where this server manages the device declaratively: where Apple
#: introduced ``com.apple.configuration.softwareupdate.enforcement.specific`` (iOS 17, macOS 14; iPadOS
#: follows iOS). Earlier versions take the MDM commands (ScheduleOSUpdate, InstallProfile).
DDM_MINIMUM: dict[str, tuple[int, ...]] = {"ios": (17,), "ipados": (17,), "macos": (14,)}


def supports_ddm(platform: str | None, os_version: str | None) -> bool:
    """The device is managed declaratively (per its inventory): see :data:`DDM_MINIMUM`. A device whose
    platform or version is unknown is not."""
    minimum = DDM_MINIMUM.get(platform or "")
    version = version_tuple(os_version)
    return minimum is not None and version is not None and version >= minimum


# --- declarations and tokens ------------------------------------------------------------------------


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Declaration:
    kind: Kind
    type: str
    identifier: str
    payload: Mapping[str, Any]
    server_token: str = field(init=False)

    def __post_init__(self) -> None:
        content = _canonical({"Type": self.type, "Identifier": self.identifier, "Payload": self.payload})
        object.__setattr__(self, "server_token", hashlib.sha256(content).hexdigest()[:32])

    def document(self) -> dict[str, Any]:
        """The declaration as the device fetches it."""
        return {"Type": self.type, "Identifier": self.identifier, "ServerToken": self.server_token,
                "Payload": dict(self.payload)}


def declarations_token(declarations: Iterable[Declaration]) -> str:
    """The ``DeclarationsToken``: a digest of the sorted (kind, identifier, server token) set. It changes
    exactly when the set changes."""
    entries = sorted((d.kind.value, d.identifier, d.server_token) for d in declarations)
    return hashlib.sha256(_canonical(entries)).hexdigest()[:40]


#: the token of a device with no declarations
EMPTY_TOKEN = declarations_token(())


def tokens_body(token: str, timestamp: str) -> dict[str, Any]:
    return {"SyncTokens": {"DeclarationsToken": token, "Timestamp": timestamp}}


def items_body(declarations: Iterable[Declaration], token: str) -> dict[str, Any]:
    items: dict[str, list[dict[str, str]]] = {key: [] for key in ITEMS_KEY.values()}
    for d in sorted(declarations, key=lambda d: (d.kind.value, d.identifier)):
        items[ITEMS_KEY[d.kind]].append({"Identifier": d.identifier, "ServerToken": d.server_token})
    return {"Declarations": items, "DeclarationsToken": token}


def sync_tokens_data(token: str, timestamp: str) -> bytes:
    """The ``Data`` of the ``DeclarativeManagement`` command: the ``SyncTokens`` JSON (bytes; the plist
    carries it base64-encoded)."""
    return json.dumps(tokens_body(token, timestamp), separators=(",", ":")).encode()


# --- the check-in endpoints -------------------------------------------------------------------------


class Endpoint(StrEnum):
    TOKENS = "tokens"
    DECLARATION_ITEMS = "declaration-items"
    DECLARATION = "declaration"
    STATUS = "status"


@dataclass(frozen=True)
class Request:
    endpoint: Endpoint
    kind: Kind | None = None
    identifier: str | None = None


MAX_IDENTIFIER = 255
_IDENTIFIER = re.compile(r"^[A-Za-z0-9._\-]{1,255}$")


def parse_endpoint(text: str | None) -> Request:
    """The request an ``Endpoint`` value names; ``ProtocolError`` (400) for anything else."""
    if not text:
        raise ProtocolError("DeclarativeManagement needs an Endpoint")
    head, _, rest = text.partition("/")
    try:
        endpoint = Endpoint(head)
    except ValueError:
        raise ProtocolError(f"unknown declarative management endpoint {text[:80]!r}") from None
    if endpoint is not Endpoint.DECLARATION:
        if rest:
            raise ProtocolError(f"unknown declarative management endpoint {text[:80]!r}")
        return Request(endpoint)
    kind_text, _, identifier = rest.partition("/")
    try:
        kind = Kind(kind_text)
    except ValueError:
        raise ProtocolError(f"unknown declaration kind {kind_text[:40]!r}") from None
    if not _IDENTIFIER.match(identifier):
        raise ProtocolError("a declaration identifier is 1-255 letters, digits, '.', '_' or '-'")
    return Request(endpoint, kind, identifier)


# --- status reports ---------------------------------------------------------------------------------

#: a status report's ``Data`` above this is refused (413)
MAX_STATUS_BYTES = 256 * 1024
#: JSON values (every dict, list and scalar) a report may hold
MAX_STATUS_NODES = 20_000
#: status items one report may carry, and declarations it may describe
MAX_REPORT_ITEMS = 500
MAX_KEY_PATH = 200
#: an item's stored value (its JSON) above this is refused
MAX_ITEM_BYTES = 16 * 1024
MAX_ERRORS = 100


@dataclass(frozen=True)
class DeclarationStatus:
    kind: Kind
    identifier: str
    server_token: str | None
    active: bool | None
    valid: str | None
    reasons: list[Any]


@dataclass(frozen=True)
class StatusReport:
    #: key path (``softwareupdate.install-state``) → value, only the items this report carries
    items: dict[str, Any]
    #: the kinds whose declaration list the report carries
    declaration_kinds: frozenset[Kind]
    declarations: list[DeclarationStatus]
    errors: list[Any]
    #: ``FullReport`` as the device sent it (iOS 17 / macOS 14 and later): true, every declaration array is
    #: whole; false, an array lists only the declarations whose status changed; ``None``, not sent (see
    #: :func:`declaration_arrays_whole`)
    full_report: bool | None = None


def _count_nodes(value: Any, budget: int) -> int:
    """Count the JSON values under ``value`` without recursion; ``ProtocolError`` past ``budget``."""
    count, stack = 0, [value]
    while stack:
        node = stack.pop()
        count += 1
        if count > budget:
            raise ProtocolError(f"the status report holds more than {budget} values")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def _flatten(tree: dict[str, Any]) -> dict[str, Any]:
    """``StatusItems`` → {key path: value}: cut at Apple's item names, else down to the leaves."""
    items: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [(str(k), v) for k, v in tree.items()]
    while stack:
        path, value = stack.pop()
        if len(path) > MAX_KEY_PATH:
            raise ProtocolError(f"status item path longer than {MAX_KEY_PATH} characters")
        if path in STATUS_ITEMS or not isinstance(value, dict) or not value:
            items[path] = value
            if len(items) > MAX_REPORT_ITEMS:
                raise ProtocolError(f"the status report carries more than {MAX_REPORT_ITEMS} items")
            continue
        stack.extend((f"{path}.{k}", v) for k, v in value.items())
    return items


def _declaration_statuses(value: Any) -> tuple[frozenset[Kind], list[DeclarationStatus]]:
    if not isinstance(value, dict):
        raise ProtocolError("management.declarations is not a dictionary", status=400)
    kinds, result = set(), []
    for kind, key in STATUS_KEY.items():
        if key not in value:
            continue
        entries = value[key]
        if not isinstance(entries, list):
            raise ProtocolError(f"management.declarations.{key} is not an array")
        kinds.add(kind)
        for i, entry in enumerate(entries):
            where = f"management.declarations.{key}[{i}]"
            if not isinstance(entry, dict):
                raise ProtocolError(f"{where} is not a dictionary")
            identifier, token = entry.get("identifier"), entry.get("server-token")
            active, valid, reasons = entry.get("active"), entry.get("valid"), entry.get("reasons", [])
            if not isinstance(identifier, str) or not 0 < len(identifier) <= MAX_IDENTIFIER:
                raise ProtocolError(f"{where}.identifier is not a string of 1-{MAX_IDENTIFIER} characters")
            if token is not None and (not isinstance(token, str) or len(token) > MAX_IDENTIFIER):
                raise ProtocolError(f"{where}.server-token is not a string")
            if active is not None and not isinstance(active, bool):
                raise ProtocolError(f"{where}.active is not a boolean")
            if valid is not None and (not isinstance(valid, str) or len(valid) > 32):
                raise ProtocolError(f"{where}.valid is not a short string")
            if not isinstance(reasons, list):
                raise ProtocolError(f"{where}.reasons is not an array")
            result.append(DeclarationStatus(kind, identifier, token, active, valid, reasons))
    if len(result) > MAX_REPORT_ITEMS:
        raise ProtocolError(f"the status report describes more than {MAX_REPORT_ITEMS} declarations")
    identifiers = [d.identifier for d in result]
    if len(set(identifiers)) != len(identifiers):
        raise ProtocolError("the status report describes a declaration twice")
    return frozenset(kinds), result


def parse_status_report(data: bytes | None) -> StatusReport:
    """A ``status`` endpoint's ``Data``: size-checked (413), parsed (400), its values counted, its items
    flattened. Apple sends only the items that changed since the last report."""
    if data is None:
        raise ProtocolError("a status report needs Data")
    if len(data) > MAX_STATUS_BYTES:
        raise ProtocolError(f"status report above {MAX_STATUS_BYTES} bytes", status=413)
    try:
        report = json.loads(data)
    except (ValueError, RecursionError):
        raise ProtocolError("the status report's Data is not JSON") from None
    if not isinstance(report, dict):
        raise ProtocolError("the status report is not a JSON object")
    _count_nodes(report, MAX_STATUS_NODES)
    tree = report.get("StatusItems", {})
    errors = report.get("Errors", [])
    if not isinstance(tree, dict):
        raise ProtocolError("StatusItems is not a JSON object")
    if not isinstance(errors, list) or len(errors) > MAX_ERRORS:
        raise ProtocolError(f"Errors is not an array of at most {MAX_ERRORS} entries")
    items = _flatten(tree)
    kinds: frozenset[Kind] = frozenset()
    declarations: list[DeclarationStatus] = []
    if DECLARATIONS_ITEM in items:
        kinds, declarations = _declaration_statuses(items.pop(DECLARATIONS_ITEM))
    for path, value in items.items():
        if len(_canonical(value)) > MAX_ITEM_BYTES:
            raise ProtocolError(f"status item {path} is larger than {MAX_ITEM_BYTES} bytes")
    full = report.get("FullReport")
    if full is not None and not isinstance(full, bool):
        raise ProtocolError("FullReport is not a boolean")
    return StatusReport(items, kinds, declarations, errors, full_report=full)


def declaration_arrays_whole(report: StatusReport, platform: str | None, os_version: str | None) -> bool:
    """Whether the report's declaration arrays list every declaration of their kind. ``FullReport`` says so
    where the device sends it; a device older than the key (before iOS 17 / macOS 14, real reports in
    ../shared/conformance: every kind listed, empty ones included) sends the arrays whole, and a newer
    device that leaves the key out sends only what changed."""
    if report.full_report is not None:
        return report.full_report
    return not supports_ddm(platform, os_version)
