"""The simulated device's declarative device management (DDM): the device side of Apple's protocol.

Written from Apple's specification (``apple/device-management``: ``declarative/protocol/*.yaml``,
``declarative/declarations/*``, ``declarative/status/*``, ``mdm/checkin/declarativemanagement.yaml``,
``mdm/commands/declarativemanagement.yaml``) and real status reports (the kmfddm captures in the
conformance data), apart from the server's implementation, so that each checks the other.

A sync, as a device makes it over the check-in endpoint (``MessageType`` ``DeclarativeManagement``,
signed like every check-in): ``tokens`` (unless the ``DeclarativeManagement`` command carried them) →
when the ``DeclarationsToken`` differs from the one held, ``declaration-items`` → every new or changed
declaration from ``declaration/<kind>/<Identifier>`` → removed ones dropped → activations evaluated →
configurations applied → a ``status`` report (the first one full, later ones only the items that changed).

A device, not a server: nothing here imports the server's packages. Every answer of the server is
untrusted: bounded in size (``MAX_RESPONSE_BYTES``, ``MAX_PROFILE_BYTES``), in nesting and in values
(``MAX_DEPTH``, ``MAX_NODES``, through the protocol's budgeted walk), in declarations
(``MAX_DECLARATIONS``); a declaration whose ``Identifier`` or ``ServerToken`` is not the one the
declaration items announced is refused; a legacy profile is fetched only from the check-in URL's host
(``allow_foreign_profile_urls`` lifts that; ``SimulatedDevice.require_https`` also demands https).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mdmserver.pki import cms
from mdmserver.protocol.plist import ProtocolError, TreeError, check_tree, load_plist
from mdmserver.simulator.errors import ResponseTooLarge, SimulatorError

if TYPE_CHECKING:
    from mdmserver.simulator.device import SimulatedDevice

#: the largest answer the device reads from a DDM endpoint (tokens, declaration items, a declaration)
MAX_RESPONSE_BYTES = 1024 * 1024
#: the largest legacy profile the device downloads
MAX_PROFILE_BYTES = 4 * 1024 * 1024
#: nesting and value budget of one parsed JSON answer
MAX_DEPTH = 32
MAX_NODES = 100_000
#: the most declarations (all kinds together) one declaration-items answer may list
MAX_DECLARATIONS = 2000
#: longest Identifier / ServerToken the device accepts (Apple: "should not exceed 64 octets")
MAX_TOKEN_CHARS = 256

#: the DDM protocol versions the simulated device reports
PROTOCOL_VERSIONS = ["1.0.0"]


class DDMError(SimulatorError):
    """The server's DDM answer is one a device refuses (the sync stops; what the device held stays)."""


class Kind(StrEnum):
    """A declaration's kind: its path segment in ``declaration/<kind>/<Identifier>``."""

    ACTIVATION = "activation"
    CONFIGURATION = "configuration"
    ASSET = "asset"
    MANAGEMENT = "management"


#: kind → its key in ``DeclarationItemsResponse.Declarations`` and in the ``management.declarations``
#: status item, and the ``Type`` prefix of its declarations
MANIFEST_KEYS = {Kind.ACTIVATION: "Activations", Kind.CONFIGURATION: "Configurations", Kind.ASSET: "Assets",
                 Kind.MANAGEMENT: "Management"}
STATUS_KEYS = {Kind.ACTIVATION: "activations", Kind.CONFIGURATION: "configurations", Kind.ASSET: "assets",
               Kind.MANAGEMENT: "management"}
TYPE_PREFIXES = {Kind.ACTIVATION: "com.apple.activation.", Kind.CONFIGURATION: "com.apple.configuration.",
                 Kind.ASSET: "com.apple.asset.", Kind.MANAGEMENT: "com.apple.management."}


class Validity(StrEnum):
    """The ``valid`` value of a declaration's status (Apple's rangelist)."""

    VALID = "valid"
    INVALID = "invalid"
    UNKNOWN = "unknown"


class InstallState(StrEnum):
    """``softwareupdate.install-state`` values (Apple's rangelist; ``none`` is the idle state)."""

    NONE = "none"
    DOWNLOADING = "downloading"
    INSTALLING = "installing"
    FAILED = "failed"


SIMPLE_ACTIVATION = "com.apple.activation.simple"
LEGACY = "com.apple.configuration.legacy"
STATUS_SUBSCRIPTIONS = "com.apple.configuration.management.status-subscriptions"
SOFTWARE_UPDATE = "com.apple.configuration.softwareupdate.enforcement.specific"
#: management declarations the device holds (Apple: they tell the client about the server)
MANAGEMENT_TYPES = frozenset({"com.apple.management.organization-info", "com.apple.management.properties",
                              "com.apple.management.server-capabilities"})

#: the OS version from which a platform speaks DDM, and from which it knows each declaration type
#: (Apple's schema: ``os.<platform>.introduced``)
DDM_INTRODUCED = {"ios": (15, 0), "ipados": (15, 0), "macos": (13, 0)}
#: the software-update enforcement and the ``softwareupdate.*`` status items
SOFTWARE_UPDATE_INTRODUCED = {"ios": (17, 0), "ipados": (17, 0), "macos": (14, 0)}
TYPE_INTRODUCED: dict[str, dict[str, tuple[int, ...]]] = {
    SIMPLE_ACTIVATION: DDM_INTRODUCED,
    LEGACY: DDM_INTRODUCED,
    STATUS_SUBSCRIPTIONS: DDM_INTRODUCED,
    SOFTWARE_UPDATE: SOFTWARE_UPDATE_INTRODUCED,
    **{t: DDM_INTRODUCED for t in MANAGEMENT_TYPES},
}

DECLARATIONS_ITEM = "management.declarations"
#: status items the device reports without a subscription (as the real first reports show)
ALWAYS_REPORTED = (DECLARATIONS_ITEM, "management.client-capabilities")
#: from these versions a full status report says so (``FullReport``, Apple's StatusReport schema)
FULL_REPORT_INTRODUCED = {"ios": (17, 0), "ipados": (17, 0), "macos": (14, 0)}
#: the ``Code`` of a status report's ``Errors`` entry for a subscribed item the device cannot report
#: (Apple documents the shape of ``Errors`` but no code list: this code is the simulator's choice)
UNSUPPORTED_STATUS_ITEM = "Error.UnsupportedStatusItem"

_FAMILIES = {"ios": ("iPhone", "iOS"), "ipados": ("iPad", "iPadOS"), "macos": ("Mac", "macOS")}
#: builds of some real releases; another target without ``TargetBuildVersion`` gets a build made the
#: way Apple numbers them (``major + 4`` on iOS, ``+ 9`` on macOS; a letter per minor release)
_KNOWN_BUILDS = {("ios", "17.5"): "21F79", ("ios", "17.5.1"): "21F90", ("ios", "17.6"): "21G80",
                 ("ios", "17.6.1"): "21G93", ("ios", "18.0"): "22A3354", ("ios", "18.1"): "22B83",
                 ("macos", "14.5"): "23F79", ("macos", "14.6"): "23G80", ("macos", "15.1"): "24B83"}


def version_tuple(text: Any) -> tuple[int, ...] | None:
    """``"17.6.1"`` → ``(17, 6, 1)``; None when it is not a dotted version of 1 to 4 numbers."""
    if not isinstance(text, str) or not 0 < len(text) <= 32:
        return None
    parts = text.split(".")
    if len(parts) > 4 or not all(p.isdigit() and len(p) <= 6 for p in parts):
        return None
    return tuple(int(p) for p in parts)


def build_for(platform: str, version: str) -> str:
    """The build the simulated device reports after updating to ``version`` without a target build."""
    known = _KNOWN_BUILDS.get(("ios" if platform == "ipados" else platform, version))
    if known:
        return known
    numbers = version_tuple(version) or (0,)
    major, minor, patch = (*numbers, 0, 0)[:3]
    offset = 9 if platform == "macos" else 4
    return f"{major + offset}{chr(ord('A') + min(minor, 25))}{100 + patch}"


def parse_json(body: bytes, what: str, *, max_bytes: int = MAX_RESPONSE_BYTES) -> Any:
    """Parse an untrusted JSON answer under the size, nesting and value budget; ``DDMError`` else."""
    if len(body) > max_bytes:
        raise DDMError(f"{what}: the answer is larger than {max_bytes} bytes")
    try:
        value = json.loads(body)
    except RecursionError:
        raise DDMError(f"{what}: the JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise DDMError(f"{what}: not JSON ({exc})") from None
    try:
        check_tree(value, max_depth=MAX_DEPTH, max_nodes=MAX_NODES, max_scalar_bytes=max_bytes)
    except TreeError as exc:
        raise DDMError(f"{what}: {exc.message}") from None
    return value


def _token(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TOKEN_CHARS and value.isprintable() and "/" not in value


@dataclass
class Reason:
    """One entry of a declaration status's ``reasons`` (Apple's StatusReason)."""

    code: str
    description: str | None = None
    details: dict[str, Any] | None = None

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code}
        if self.description is not None:
            out["description"] = self.description
        if self.details is not None:
            out["details"] = self.details
        return out


@dataclass
class Declaration:
    """A declaration the device holds, as fetched, with its last evaluation."""

    kind: Kind
    identifier: str
    server_token: str
    type: str | None = None
    payload: dict[str, Any] | None = None
    #: why the fetched declaration cannot be used at all (refused, unknown type, not deserializable)
    problems: list[Reason] = field(default_factory=list)
    active: bool = False
    valid: Validity = Validity.UNKNOWN
    reasons: list[Reason] = field(default_factory=list)

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"identifier": self.identifier, "server-token": self.server_token,
                               "active": self.active, "valid": str(self.valid)}
        if self.reasons:
            out["reasons"] = [r.as_status() for r in self.reasons]
        return out


@dataclass
class SoftwareUpdate:
    """The update an enforcement declaration made pending."""

    declaration: str
    os_version: str
    build_version: str
    target_local_date_time: str
    started_at: float
    state: InstallState = InstallState.DOWNLOADING


@dataclass
class Failure:
    count: int = 0
    reason: str | None = None
    timestamp: str | None = None


def _problem(code: str, description: str, **details: Any) -> Reason:
    return Reason(code, description, details or None)


def _nest(items: dict[str, Any]) -> dict[str, Any]:
    """``{"device.operating-system.version": "17.5"}`` → ``{"device": {"operating-system": {"version": …}}}``."""
    out: dict[str, Any] = {}
    for name, value in items.items():
        *parents, leaf = name.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


class DeclarativeClient:
    """The DDM state of one simulated device and the sync that changes it.

    ``update_delay`` (seconds): how long an enforced OS update takes once pending (half downloading,
    half installing; 0 installs it during the sync that found it); ``update_failure``: when set, every
    install attempt fails with that reason instead (``softwareupdate.failure-reason``). ``clock``:
    monotonic seconds (tests may pass their own).
    """

    def __init__(self, device: SimulatedDevice, *, update_delay: float = 3.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.device = device
        self.update_delay = update_delay
        self.update_failure: str | None = None
        self.clock = clock
        #: lift the rule that a legacy profile comes from the check-in URL's host
        self.allow_foreign_profile_urls = False
        self.declarations: dict[tuple[Kind, str], Declaration] = {}
        self.declarations_token: str | None = None
        self.enabled = False
        self.pending_update: SoftwareUpdate | None = None
        self.install_state = InstallState.NONE
        self.failure = Failure()
        #: legacy declaration identifier → (its server token, the PayloadIdentifier of the profile installed)
        self.legacy_profiles: dict[str, tuple[str, str]] = {}
        #: status item name → the value the server last acknowledged (None: no report accepted yet)
        self.reported: dict[str, Any] | None = None
        self.reported_errors: set[str] = set()
        #: every report sent, as sent, and every endpoint asked, in order (for tests and debugging)
        self.reports: list[dict[str, Any]] = []
        self.requests: list[str] = []
        #: failures of syncs and reports the device made on its own (``run_session``), in order
        self.errors: list[str] = []

    # --- what the device supports -----------------------------------------------------------------

    def _os(self) -> tuple[int, ...]:
        return version_tuple(self.device.os_version) or (0,)

    @property
    def supported(self) -> bool:
        """Whether the device's OS speaks DDM at all."""
        return self._os() >= DDM_INTRODUCED.get(self.device.platform, (99,))

    def knows(self, declaration_type: str) -> bool:
        introduced = TYPE_INTRODUCED.get(declaration_type)
        return introduced is not None and self._os() >= introduced.get(self.device.platform, (99,))

    def has_status_item(self, name: str) -> bool:
        """Whether the device reports this status item (the software-update ones from iOS 17 / macOS 14)."""
        introduced = SOFTWARE_UPDATE_INTRODUCED if name.startswith("softwareupdate.") else DDM_INTRODUCED
        return name in _STATUS_ITEMS and self._os() >= introduced.get(self.device.platform, (99,))

    def supported_types(self, kind: Kind) -> list[str]:
        prefix = TYPE_PREFIXES[kind]
        return sorted(t for t in TYPE_INTRODUCED if t.startswith(prefix) and self.knows(t))

    # --- talking to the server --------------------------------------------------------------------

    def _ask(self, endpoint: str, data: bytes | None = None) -> tuple[int, bytes]:
        message: dict[str, Any] = {"MessageType": "DeclarativeManagement", "UDID": self.device.udid,
                                   "Endpoint": endpoint}
        if data is not None:
            message["Data"] = data
        self.requests.append(endpoint)
        try:
            return self.device.send("/mdm/checkin", message, max_bytes=MAX_RESPONSE_BYTES)
        except ResponseTooLarge as exc:
            raise DDMError(str(exc)) from None

    def _fetch_json(self, endpoint: str) -> Any:
        status, body = self._ask(endpoint)
        if status != 200:
            raise DDMError(f"{endpoint} answered HTTP {status}")
        return parse_json(body, endpoint)

    # --- sync ---------------------------------------------------------------------------------------

    def sync(self, sync_tokens: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """One synchronisation; ``sync_tokens``: the ``SyncTokens`` a ``DeclarativeManagement`` command
        carried (else the device asks ``tokens``). Returns the status report sent (None: nothing changed)."""
        if not self.device.enrolled or self.device.identity is None:
            raise SimulatorError("the device is not enrolled")
        if not self.supported:
            raise SimulatorError(f"{self.device.platform} {self.device.os_version} does not speak DDM")
        self.enabled = True
        if sync_tokens is None:
            answer = self._fetch_json("tokens")
            sync_tokens = answer.get("SyncTokens") if isinstance(answer, dict) else None
        token = sync_tokens.get("DeclarationsToken") if isinstance(sync_tokens, dict) else None
        if not _token(token):
            raise DDMError("the server's SyncTokens carry no DeclarationsToken")
        if token != self.declarations_token:
            self._update_declarations()
        self._evaluate()
        return self.report()

    def _update_declarations(self) -> None:
        manifest = self._fetch_json("declaration-items")
        wanted, token = self._read_manifest(manifest)
        fetched: dict[tuple[Kind, str], Declaration] = {}
        for key, server_token in wanted.items():
            held = self.declarations.get(key)
            if held is not None and held.server_token == server_token:
                fetched[key] = held
                continue
            declaration = self._fetch_declaration(key[0], key[1], server_token)
            if declaration is not None:
                fetched[key] = declaration
        self.declarations = fetched
        self.declarations_token = token

    def _read_manifest(self, manifest: Any) -> tuple[dict[tuple[Kind, str], str], str]:
        if not isinstance(manifest, dict) or not isinstance(manifest.get("Declarations"), dict):
            raise DDMError("declaration-items: no Declarations dictionary")
        token = manifest.get("DeclarationsToken")
        if not _token(token):
            raise DDMError("declaration-items: no DeclarationsToken")
        wanted: dict[tuple[Kind, str], str] = {}
        for kind, key in MANIFEST_KEYS.items():
            entries = manifest["Declarations"].get(key)
            if not isinstance(entries, list):
                raise DDMError(f"declaration-items: Declarations.{key} is not an array")
            for entry in entries:
                if not isinstance(entry, dict) or not _token(entry.get("Identifier")) \
                        or not _token(entry.get("ServerToken")):
                    raise DDMError(f"declaration-items: an entry of {key} has no usable Identifier and ServerToken")
                if (kind, entry["Identifier"]) in wanted:
                    raise DDMError(f"declaration-items: {key} lists {entry['Identifier']!r} twice")
                wanted[(kind, entry["Identifier"])] = entry["ServerToken"]
        if len(wanted) > MAX_DECLARATIONS:
            raise DDMError(f"declaration-items: more than {MAX_DECLARATIONS} declarations")
        return wanted, token

    def _fetch_declaration(self, kind: Kind, identifier: str, server_token: str) -> Declaration | None:
        """Fetch one declaration; None when the server says it no longer exists (404, as Apple defines)."""
        declaration = Declaration(kind, identifier, server_token)
        try:
            status, body = self._ask(f"declaration/{kind}/{identifier}")
        except DDMError as exc:  # an answer past MAX_RESPONSE_BYTES
            declaration.problems.append(_problem("Error.InvalidPayload", str(exc)))
            return declaration
        if status == 404:
            return None
        if status != 200:
            declaration.problems.append(_problem(
                "Error.InvalidPayload", f"Fetching the declaration answered HTTP {status}", HTTPStatus=status))
            return declaration
        try:
            value = parse_json(body, f"declaration/{kind}/{identifier}")
        except DDMError as exc:
            declaration.problems.append(_problem("Error.InvalidPayload", str(exc)))
            return declaration
        if not isinstance(value, dict):
            declaration.problems.append(_problem("Error.InvalidPayload", "The declaration is not a JSON object"))
            return declaration
        if value.get("Identifier") != identifier or value.get("ServerToken") != server_token:
            # refused: the server answered something else than the declaration items announced
            declaration.problems.append(_problem(
                "Error.InvalidPayload", "The declaration is not the one the declaration items list",
                Identifier=str(value.get("Identifier"))[:MAX_TOKEN_CHARS],
                ServerToken=str(value.get("ServerToken"))[:MAX_TOKEN_CHARS]))
            return declaration
        declaration_type, payload = value.get("Type"), value.get("Payload")
        if not isinstance(declaration_type, str) or not isinstance(payload, dict):
            declaration.problems.append(_problem(
                "Error.InvalidPayload", "The declaration has no Type string or no Payload dictionary"))
            return declaration
        declaration.type, declaration.payload = declaration_type[:MAX_TOKEN_CHARS], payload
        if not declaration_type.startswith(TYPE_PREFIXES[kind]) or not self.knows(declaration_type):
            declaration.problems.append(_problem(
                "Error.UnknownDeclarationType", "Unknown Declaration Type", UnknownDeclarationType=declaration.type))
        return declaration

    # --- evaluation -----------------------------------------------------------------------------------

    def _evaluate(self) -> None:
        """Activations → configurations → what they do on the device; every declaration's status set."""
        configurations = {ident: d for (kind, ident), d in self.declarations.items() if kind == Kind.CONFIGURATION}
        activated: set[str] = set()
        for (kind, _ident), declaration in self.declarations.items():
            declaration.reasons = list(declaration.problems)
            declaration.active = False
            declaration.valid = Validity.INVALID if declaration.problems else Validity.VALID
            if declaration.problems:
                continue
            if kind == Kind.ACTIVATION:
                activated |= self._activate(declaration, configurations)
        active_configurations: list[Declaration] = []
        for identifier, declaration in configurations.items():
            if declaration.problems:
                continue
            if identifier not in activated:
                declaration.valid = Validity.UNKNOWN
                declaration.reasons = [_problem(
                    "Info.NotReferencedByActivation",
                    f"Configuration “{identifier}:{declaration.server_token}” is not referenced by an activation.",
                    Identifier=identifier, ServerToken=declaration.server_token)]
                continue
            checked = _CHECKS[declaration.type](declaration.payload)
            if checked:
                declaration.reasons = checked
                declaration.valid = Validity.INVALID
                continue
            declaration.active = True
            active_configurations.append(declaration)
        self._apply_legacy([d for d in active_configurations if d.type == LEGACY])
        self._apply_software_update([d for d in active_configurations if d.type == SOFTWARE_UPDATE])
        self.advance()

    def _activate(self, activation: Declaration, configurations: dict[str, Declaration]) -> set[str]:
        payload = activation.payload or {}
        standard = payload.get("StandardConfigurations")
        if not isinstance(standard, list) or not all(isinstance(i, str) for i in standard):
            activation.valid = Validity.INVALID
            activation.reasons = [_problem("Error.ConfigurationCannotBeDeserialized",
                                           "StandardConfigurations is not an array of strings")]
            return set()
        if "Predicate" in payload:
            # honest: predicates are not evaluated here, so the activation is not applied
            activation.valid = Validity.INVALID
            activation.reasons = [_problem("Error.UnableToEvaluatePredicate",
                                           "The simulated device does not evaluate predicates",
                                           Predicate=str(payload["Predicate"])[:MAX_TOKEN_CHARS])]
            return set()
        missing = [i for i in standard if i not in configurations]
        if missing:
            activation.valid = Validity.INVALID
            activation.reasons = [_problem("Error.MissingConfigurations",
                                           "The activation references configurations that are not present",
                                           Identifiers=missing[:50])]
            return set()
        activation.active = True
        return set(standard)

    # --- configurations ------------------------------------------------------------------------------

    def _apply_legacy(self, active: list[Declaration]) -> None:
        """Install the profile of each active legacy configuration (again when its server token changed);
        remove the profiles of legacy configurations no longer active."""
        keep = {d.identifier for d in active}
        for identifier in [i for i in self.legacy_profiles if i not in keep]:
            _token_seen, profile_id = self.legacy_profiles.pop(identifier)
            self.device.profiles.pop(profile_id, None)
        for declaration in active:
            held = self.legacy_profiles.get(declaration.identifier)
            if held is not None and held[0] == declaration.server_token and held[1] in self.device.profiles:
                continue
            try:
                profile_id = self._install_legacy(declaration.payload["ProfileURL"], replacing=held)
            except _CannotApply as exc:
                if held is not None:
                    self.legacy_profiles.pop(declaration.identifier)
                    self.device.profiles.pop(held[1], None)
                declaration.active, declaration.valid = True, Validity.INVALID
                declaration.reasons = [_problem("Error.ConfigurationCannotBeApplied", "Configuration cannot be applied",
                                                Error=str(exc))]
                continue
            self.legacy_profiles[declaration.identifier] = (declaration.server_token, profile_id)

    def _install_legacy(self, url: str, *, replacing: tuple[str, str] | None) -> str:
        parts = urlsplit(url)
        schemes = ("https",) if self.device.require_https else ("https", "http")
        if parts.scheme not in schemes or not parts.hostname:
            raise _CannotApply(f"ProfileURL must be an absolute {' or '.join(schemes)} URL")
        server = urlsplit(getattr(self.device, "checkin_url", "") or "")
        if not self.allow_foreign_profile_urls and (parts.hostname, parts.port) != (server.hostname, server.port):
            raise _CannotApply("ProfileURL is not on the MDM server's host")
        self.device.downloads.append(url)
        try:
            status, _headers, body = self.device.request("GET", url, max_bytes=MAX_PROFILE_BYTES)
        except Exception as exc:  # any transport failure is a failed download, as on a device
            raise _CannotApply(f"Profile download failed: {type(exc).__name__}") from None
        if status != 200:
            raise _CannotApply(f"Profile download answered HTTP {status}")
        try:
            if body[:1] == b"0":
                body = cms.unwrap_signed(body, max_size=MAX_PROFILE_BYTES).content
            profile = load_plist(body, max_bytes=MAX_PROFILE_BYTES)
            identifier = profile["PayloadIdentifier"]
            contents = profile.get("PayloadContent", [])
        except (ProtocolError, cms.CMSError, KeyError, TypeError, AttributeError):
            raise _CannotApply("Profile Installation Failed: the profile is malformed") from None
        if not isinstance(identifier, str) or not isinstance(contents, list):
            raise _CannotApply("Profile Installation Failed: the profile is malformed")
        if any(isinstance(p, dict) and p.get("PayloadType") == "com.apple.mdm" for p in contents):
            raise _CannotApply("Profile Installation Failed: an MDM profile cannot be installed declaratively")
        owned = replacing is not None and replacing[1] == identifier
        if identifier in self.device.profiles and not owned:
            raise _CannotApply(f"Profile Installation Failed: “{identifier}” is already installed")
        if replacing is not None and not owned:
            self.device.profiles.pop(replacing[1], None)
        self.device.profiles[identifier] = profile
        return identifier

    def _apply_software_update(self, active: list[Declaration]) -> None:
        """The newest target above the installed version becomes the pending update; a target below it is
        refused (the device never downgrades); a target equal to it is satisfied."""
        current = self._os()
        candidates: list[tuple[tuple[int, ...], Declaration]] = []
        for declaration in active:
            target = version_tuple(declaration.payload["TargetOSVersion"])
            if target < current:
                declaration.valid = Validity.INVALID
                declaration.reasons = [_problem(
                    "Error.ConfigurationCannotBeApplied", "Configuration cannot be applied",
                    Error=f"The target OS version {declaration.payload['TargetOSVersion']} is older than the "
                          f"installed {self.device.os_version}")]
            elif target > current:
                candidates.append((target, declaration))
        pending = self.pending_update
        if not candidates:
            if pending is not None:  # its enforcement went away: nothing is pending any more
                self.pending_update, self.install_state = None, InstallState.NONE
            return
        _target, chosen = max(candidates, key=lambda c: c[0])
        payload = chosen.payload
        version = payload["TargetOSVersion"]
        build = payload.get("TargetBuildVersion") or build_for(self.device.platform, version)
        if pending is not None and (pending.os_version, pending.build_version) == (version, build):
            pending.declaration, pending.target_local_date_time = chosen.identifier, payload["TargetLocalDateTime"]
            return
        self.pending_update = SoftwareUpdate(chosen.identifier, version, build, payload["TargetLocalDateTime"],
                                             started_at=self.clock())
        self.install_state = InstallState.DOWNLOADING
        self.failure = Failure()

    def advance(self) -> None:
        """Move the pending OS update on by the time passed: downloading for the first half of
        ``update_delay``, installing for the second, then installed (or failed with ``update_failure``)."""
        update = self.pending_update
        if update is None or update.state == InstallState.FAILED:
            return
        elapsed = self.clock() - update.started_at
        if elapsed < self.update_delay / 2:
            update.state = InstallState.DOWNLOADING
        elif elapsed < self.update_delay:
            update.state = InstallState.INSTALLING
        elif self.update_failure is not None:
            update.state = InstallState.FAILED
            self.failure = Failure(self.failure.count + 1, self.update_failure,
                                   datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        else:
            self.device.os_version, self.device.build_version = update.os_version, update.build_version
            self.pending_update, self.install_state, self.failure = None, InstallState.NONE, Failure()
            return
        self.install_state = update.state

    def retry_update(self) -> None:
        """A failed update starts again (as a device retries before the deadline)."""
        if self.pending_update is not None and self.pending_update.state == InstallState.FAILED:
            self.pending_update.state = InstallState.DOWNLOADING
            self.pending_update.started_at = self.clock()
            self.install_state = InstallState.DOWNLOADING

    # --- status ---------------------------------------------------------------------------------------

    def subscriptions(self) -> list[str]:
        """Names the active status-subscription configurations ask for (their union)."""
        names: set[str] = set()
        for (kind, _ident), declaration in self.declarations.items():
            if kind == Kind.CONFIGURATION and declaration.type == STATUS_SUBSCRIPTIONS and declaration.active:
                names |= {item["Name"] for item in declaration.payload["StatusItems"]}
        return sorted(names)

    def status_items(self) -> tuple[dict[str, Any], list[str]]:
        """Every item the device reports now, by name, and the subscribed names it cannot report."""
        names = [*ALWAYS_REPORTED, *(n for n in self.subscriptions() if n not in ALWAYS_REPORTED)]
        items, unsupported = {}, []
        for name in names:
            provider = _STATUS_ITEMS.get(name) if self.has_status_item(name) else None
            if provider is None:
                unsupported.append(name)
            else:
                items[name] = provider(self)
        return items, unsupported

    def report(self, *, full: bool = False) -> dict[str, Any] | None:
        """Send a status report: everything the first time or with ``full`` (Apple's 24-hour "safety
        sync"; ``FullReport: true`` from iOS 17 / macOS 14), else only what changed since the last report
        the server accepted: the items whose value changed and, inside ``management.declarations``, only
        the declaration rows that are new or changed (Apple: a full report "will include the full set of
        items in any status array item (not just the changes)"). Nothing is sent when nothing changed."""
        items, unsupported = self.status_items()
        full = full or self.reported is None
        previous = self.reported or {}
        changed: dict[str, Any] = {}
        for name, value in items.items():
            if name == DECLARATIONS_ITEM and not full:
                delta = _declarations_delta(value, previous.get(name))
                if delta is not None:
                    changed[name] = delta
            elif full or previous.get(name) != value:
                changed[name] = value
        new_errors = [n for n in unsupported if full or n not in self.reported_errors]
        if not changed and not new_errors:
            return None
        report: dict[str, Any] = {"StatusItems": _nest(changed), "Errors": [
            {"StatusItem": name, "Reasons": [{"Code": UNSUPPORTED_STATUS_ITEM,
                                              "Description": f"The status item {name} is not supported"}]}
            for name in new_errors]}
        if full and self._os() >= FULL_REPORT_INTRODUCED.get(self.device.platform, (99,)):
            report["FullReport"] = True
        status, _body = self._ask("status", json.dumps(report, ensure_ascii=False).encode())
        if status != 200:
            raise DDMError(f"status answered HTTP {status}")
        self.reported = {**previous, **{name: items[name] for name in changed}}
        self.reported_errors |= set(new_errors)
        self.reports.append(report)
        return report

    def tick(self) -> dict[str, Any] | None:
        """What a device does as time passes: move a pending update on and report what changed."""
        if not self.enabled:
            return None
        had_update = self.pending_update is not None
        self.advance()
        if had_update and self.pending_update is None:
            self._evaluate()  # the installed version changed: the enforcement is now satisfied
        return self.report()

    # --- the MDM command ----------------------------------------------------------------------------

    def command_tokens(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """The ``SyncTokens`` of a ``DeclarativeManagement`` command's ``Data`` (a TokensResponse);
        None without Data. ``ValueError`` when Data is not one."""
        data = params.get("Data")
        if data is None:
            return None
        if not isinstance(data, bytes):  # a plist <data> element (base64 in the XML), nothing else
            raise ValueError("Data is not data")
        try:
            answer = parse_json(data, "DeclarativeManagement Data")
        except DDMError as exc:
            raise ValueError(str(exc)) from None
        tokens = answer.get("SyncTokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, dict) or not _token(tokens.get("DeclarationsToken")):
            raise ValueError("Data carries no SyncTokens.DeclarationsToken")
        return tokens

    def reset(self) -> None:
        """The device left management: every declaration and what it did goes (the settings stay)."""
        for _token_seen, profile_id in self.legacy_profiles.values():
            self.device.profiles.pop(profile_id, None)
        self.legacy_profiles.clear()
        self.declarations.clear()
        self.declarations_token, self.enabled, self.reported = None, False, None
        self.pending_update, self.install_state, self.failure = None, InstallState.NONE, Failure()
        self.reported_errors.clear()

    # --- reading back -------------------------------------------------------------------------------

    def held(self, kind: Kind | str) -> dict[str, Declaration]:
        """The declarations of one kind the device holds, by identifier."""
        return {ident: d for (k, ident), d in self.declarations.items() if k == Kind(kind)}


class _CannotApply(Exception):
    """Why a configuration could not be applied (its status reason's ``Error`` detail)."""


# --- payload checks: declaration type → its reasons to be invalid (empty: valid) ----------------------


def _check_legacy(payload: dict[str, Any]) -> list[Reason]:
    url = payload.get("ProfileURL")
    if not isinstance(url, str) or not url or len(url) > 4096:
        return [_problem("Error.ConfigurationCannotBeDeserialized", "ProfileURL is missing or not a string")]
    return []


def _check_subscriptions(payload: dict[str, Any]) -> list[Reason]:
    items = payload.get("StatusItems")
    if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get("Name"), str) and 0 < len(i["Name"]) <= MAX_TOKEN_CHARS
            for i in items):
        return [_problem("Error.ConfigurationCannotBeDeserialized",
                         "StatusItems is not an array of dictionaries with a Name")]
    return []


def _check_software_update(payload: dict[str, Any]) -> list[Reason]:
    problems = []
    if version_tuple(payload.get("TargetOSVersion")) is None:
        problems.append("TargetOSVersion is missing or not a version")
    moment = payload.get("TargetLocalDateTime")
    try:
        parsed = datetime.strptime(moment, "%Y-%m-%dT%H:%M:%S") if isinstance(moment, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        problems.append("TargetLocalDateTime is missing or not yyyy-mm-ddThh:mm:ss")
    build = payload.get("TargetBuildVersion")
    if build is not None and not (isinstance(build, str) and 0 < len(build) <= 32 and build.isalnum()):
        problems.append("TargetBuildVersion is not a build version")
    return [_problem("Error.ConfigurationCannotBeDeserialized", p) for p in problems]


_CHECKS: dict[str | None, Callable[[dict[str, Any]], list[Reason]]] = {
    LEGACY: _check_legacy,
    STATUS_SUBSCRIPTIONS: _check_subscriptions,
    SOFTWARE_UPDATE: _check_software_update,
}


# --- status items: name → its value now ----------------------------------------------------------------


def _declarations_status(client: DeclarativeClient) -> dict[str, Any]:
    out: dict[str, list[dict[str, Any]]] = {key: [] for key in STATUS_KEYS.values()}
    for (kind, _ident), declaration in sorted(client.declarations.items()):
        out[STATUS_KEYS[kind]].append(declaration.as_status())
    return out


def _declarations_delta(current: dict[str, list[dict[str, Any]]],
                        previous: dict[str, list[dict[str, Any]]] | None) -> dict[str, Any] | None:
    """The rows of ``management.declarations`` that are new or changed since ``previous`` (every
    kind's array present, possibly empty); None when no row changed."""
    delta: dict[str, list[dict[str, Any]]] = {}
    for kind, rows in current.items():
        before = {row["identifier"]: row for row in (previous or {}).get(kind, [])}
        delta[kind] = [row for row in rows if before.get(row["identifier"]) != row]
    return delta if any(delta.values()) else None


def _capabilities(client: DeclarativeClient) -> dict[str, Any]:
    return {
        "supported-versions": PROTOCOL_VERSIONS,
        "supported-payloads": {
            "declarations": {STATUS_KEYS[kind]: client.supported_types(kind) for kind in Kind},
            "status-items": sorted(n for n in _STATUS_ITEMS if client.has_status_item(n)),
        },
        "supported-features": {},
    }


def _pending_version(client: DeclarativeClient) -> dict[str, Any]:
    update = client.pending_update
    if update is None:
        return {"os-version": "", "build-version": ""}
    return {"os-version": update.os_version, "build-version": update.build_version,
            "target-local-date-time": update.target_local_date_time}


def _install_reason(client: DeclarativeClient) -> dict[str, Any]:
    update = client.pending_update
    if update is None:
        return {"reason": []}
    return {"reason": ["declaration"], "declaration-id": update.declaration}


def _failure_reason(client: DeclarativeClient) -> dict[str, Any]:
    out: dict[str, Any] = {"count": client.failure.count}
    if client.failure.reason is not None:
        out["reason"], out["timestamp"] = client.failure.reason, client.failure.timestamp
    return out


_STATUS_ITEMS: dict[str, Callable[[DeclarativeClient], Any]] = {
    "management.declarations": _declarations_status,
    "management.client-capabilities": _capabilities,
    "device.identifier.udid": lambda c: c.device.udid,
    "device.identifier.serial-number": lambda c: c.device.serial_number,
    "device.model.family": lambda c: _FAMILIES[c.device.platform][0],
    "device.model.identifier": lambda c: c.device.product_name,
    "device.model.marketing-name": lambda c: c.device.model_name,
    "device.operating-system.family": lambda c: _FAMILIES[c.device.platform][1],
    "device.operating-system.marketing-name": lambda c: f"{_FAMILIES[c.device.platform][1]} {c.device.os_version}",
    "device.operating-system.version": lambda c: c.device.os_version,
    "device.operating-system.build-version": lambda c: c.device.build_version,
    "softwareupdate.install-state": lambda c: str(c.install_state),
    "softwareupdate.pending-version": _pending_version,
    "softwareupdate.failure-reason": _failure_reason,
    "softwareupdate.install-reason": _install_reason,
}
