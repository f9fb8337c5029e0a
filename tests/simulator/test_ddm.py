"""The simulator's declarative management client against a test double of an Apple-spec DDM server.

The double (``DDMServer`` below) is written here from Apple's protocol documents, apart from both the
simulator and the server: it answers the check-in endpoint's ``DeclarativeManagement`` messages
(``tokens``, ``declaration-items``, ``declaration/<kind>/<Identifier>``, ``status``) over real HTTP,
checks that every check-in is CMS-signed over its exact body (with asn1crypto, not the project's CMS code),
serves legacy profiles, and can misbehave (wrong identifier, 404, oversized or deeply nested answers).
Its DeclarationsToken is its own digest of the declaration set.
"""

from __future__ import annotations

import base64
import hashlib
import json
import plistlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from asn1crypto import cms as acms

from mdmserver.pki import x509 as x509_tools
from mdmserver.simulator.ddm import MAX_RESPONSE_BYTES, DDMError
from mdmserver.simulator.device import HttpxTransport, Identity, SimulatedDevice

KINDS = {"activation": "Activations", "configuration": "Configurations", "asset": "Assets",
         "management": "Management"}
SOFTWARE_UPDATE = "com.apple.configuration.softwareupdate.enforcement.specific"
SUBSCRIPTIONS = "com.apple.configuration.management.status-subscriptions"
LEGACY = "com.apple.configuration.legacy"
OS_ITEMS = ["device.operating-system.version", "device.operating-system.build-version",
            "softwareupdate.install-state", "softwareupdate.pending-version", "softwareupdate.failure-reason",
            "softwareupdate.install-reason"]


def _signed_over(body: bytes, header: str | None) -> bool:
    """The Mdm-Signature is a detached CMS SignedData whose messageDigest is the body's SHA-256."""
    if not header:
        return False
    info = acms.ContentInfo.load(base64.b64decode(header))
    signer = info["content"]["signer_infos"][0]
    digests = [a["values"][0].native for a in signer["signed_attrs"] if a["type"].native == "message_digest"]
    return digests == [hashlib.sha256(body).digest()]


class DDMServer:
    """A DDM server as Apple's protocol describes it, one device, over real HTTP."""

    def __init__(self) -> None:
        self.declarations: dict[tuple[str, str], dict[str, Any]] = {}
        #: (kind, identifier) → (HTTP status, raw body) answered instead of the declaration
        self.overrides: dict[tuple[str, str], tuple[int, bytes]] = {}
        #: endpoint → (HTTP status, raw body) answered instead
        self.endpoint_overrides: dict[str, tuple[int, bytes]] = {}
        self.profiles: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.reports: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.status_answer = 200
        self.unsigned = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # what the server holds
    def put(self, kind: str, identifier: str, declaration_type: str, payload: dict[str, Any],
            token: str | None = None) -> None:
        body = {"Type": declaration_type, "Identifier": identifier, "Payload": payload}
        body["ServerToken"] = token or hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        self.declarations[(kind, identifier)] = body

    def remove(self, kind: str, identifier: str) -> None:
        del self.declarations[(kind, identifier)]

    def token(self) -> str:
        entries = sorted((k, i, d["ServerToken"]) for (k, i), d in self.declarations.items())
        return hashlib.sha256(json.dumps(entries).encode()).hexdigest()

    def sync_tokens(self) -> dict[str, Any]:
        return {"SyncTokens": {"DeclarationsToken": self.token(), "Timestamp": "2026-11-27T12:00:00Z"}}

    def manifest(self) -> dict[str, Any]:
        out: dict[str, list[dict[str, str]]] = {key: [] for key in KINDS.values()}
        for (kind, identifier), d in sorted(self.declarations.items()):
            out[KINDS[kind]].append({"Identifier": identifier, "ServerToken": d["ServerToken"]})
        return {"Declarations": out, "DeclarationsToken": self.token()}

    def fetches(self) -> list[str]:
        return [r for r in self.requests if r.startswith("declaration/")]

    def answer(self, endpoint: str, data: bytes | None) -> tuple[int, bytes]:
        if endpoint in self.endpoint_overrides:
            return self.endpoint_overrides[endpoint]
        if endpoint == "tokens":
            return 200, json.dumps(self.sync_tokens()).encode()
        if endpoint == "declaration-items":
            return 200, json.dumps(self.manifest()).encode()
        if endpoint == "status":
            self.reports.append(json.loads(data))
            return self.status_answer, b""
        _prefix, kind, identifier = endpoint.split("/", 2)
        if (kind, identifier) in self.overrides:
            return self.overrides[(kind, identifier)]
        found = self.declarations.get((kind, identifier))
        if found is None:
            return 404, b'{"error": "no such declaration"}'
        return 200, json.dumps(found).encode()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                profile = server.profiles.get(self.path)
                server.requests.append(f"GET {self.path}")
                self._reply(200 if profile else 404, profile or b"", "application/x-apple-aspen-config")

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if not _signed_over(body, self.headers.get("Mdm-Signature")):
                    server.unsigned += 1
                    self._reply(403, b"forbidden\n", "text/plain")
                    return
                message = plistlib.loads(body)
                if self.path == "/mdm/connect":
                    if message.get("Status") != "Idle":
                        server.results.append(message)
                    if server.commands:
                        self._reply(200, plistlib.dumps(server.commands.pop(0)), "application/xml")
                    else:
                        self._reply(200, b"")
                    return
                if message.get("MessageType") != "DeclarativeManagement":
                    self._reply(200, b"")
                    return
                endpoint = message["Endpoint"]
                server.requests.append(endpoint)
                status, answer = server.answer(endpoint, message.get("Data"))
                self._reply(status, answer)

        return Handler


@pytest.fixture(scope="module")
def identity() -> Identity:
    ca_cert, ca_key = x509_tools.create_ca("DDM double CA")
    key = x509_tools.generate_private_key()
    cert = x509_tools.issue_certificate(ca_cert, ca_key, common_name="ddm device", public_key=key.public_key(),
                                        usage="client")
    return Identity(cert, key)


@pytest.fixture
def server():
    double = DDMServer()
    yield double
    double.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def device(server, identity, clock):
    transport = HttpxTransport(server.url)
    sim = SimulatedDevice(transport, seed=7)
    sim.identity, sim.enrolled, sim.topic = identity, True, "com.apple.mgmt.test"
    sim.server_url, sim.checkin_url = f"{server.url}/mdm/connect", f"{server.url}/mdm/checkin"
    sim.ddm.update_delay, sim.ddm.clock = 0, clock
    yield sim
    transport.close()


def _statuses(report: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    rows = report["StatusItems"]["management"]["declarations"][kind]
    return {row["identifier"]: row for row in rows}


def _os_blueprint(server: DDMServer, target: str = "17.6", build: str | None = None) -> None:
    payload = {"TargetOSVersion": target, "TargetLocalDateTime": "2026-12-01T09:00:00"}
    if build:
        payload["TargetBuildVersion"] = build
    server.put("configuration", "os", SOFTWARE_UPDATE, payload)
    server.put("configuration", "subs", SUBSCRIPTIONS, {"StatusItems": [{"Name": n} for n in OS_ITEMS]})
    server.put("activation", "act", "com.apple.activation.simple", {"StandardConfigurations": ["os", "subs"]})


def test_first_sync_fetches_everything_and_reports_in_full(server, device) -> None:
    _os_blueprint(server, "17.6", "21G80")
    report = device.sync_declarations()
    assert server.unsigned == 0
    assert server.requests[:2] == ["tokens", "declaration-items"]
    assert sorted(server.fetches()) == ["declaration/activation/act", "declaration/configuration/os",
                                        "declaration/configuration/subs"]
    assert server.requests[-1] == "status" and server.reports == [report]
    items = report["StatusItems"]
    assert set(items) == {"management", "device", "softwareupdate"} and report["Errors"] == []
    assert report["FullReport"] is True  # iOS 17.5: Apple's FullReport flag (iOS 17+)
    for kind in ("activations", "configurations"):
        assert all(r["active"] and r["valid"] == "valid" for r in _statuses(report, kind).values())
    assert _statuses(report, "configurations")["os"]["server-token"] == server.declarations[
        ("configuration", "os")]["ServerToken"]
    # update_delay 0: installed during the sync; the report says so
    assert (device.os_version, device.build_version) == ("17.6", "21G80")
    assert items["device"]["operating-system"] == {"version": "17.6", "build-version": "21G80"}
    assert items["softwareupdate"] == {"install-state": "none",
                                       "pending-version": {"os-version": "", "build-version": ""},
                                       "failure-reason": {"count": 0}, "install-reason": {"reason": []}}
    capabilities = items["management"]["client-capabilities"]
    assert SOFTWARE_UPDATE in capabilities["supported-payloads"]["declarations"]["configurations"]


def test_report_has_the_shape_of_real_devices(server, device, conformance_dir) -> None:
    """Keys of our status rows and capabilities are the keys real devices send (the kmfddm captures)."""
    real = json.loads((conformance_dir / "device-messages/jessepeterson__kmfddm/ddm/testdata/"
                       "A047820F-FC6B-4104-BED0-466876D82BB8.20220628-103225.001918.status.json").read_text())
    server.put("configuration", "stray", SUBSCRIPTIONS, {"StatusItems": []})
    _os_blueprint(server)
    report = device.sync_declarations()
    real_management = real["StatusItems"]["management"]
    ours = report["StatusItems"]["management"]
    assert set(ours["declarations"]) == set(real_management["declarations"])
    real_keys = {k for rows in real_management["declarations"].values() for row in rows for k in row}
    our_keys = {k for rows in ours["declarations"].values() for row in rows for k in row}
    assert our_keys <= real_keys and {"identifier", "server-token", "active", "valid"} <= our_keys
    assert set(ours["client-capabilities"]) == set(real_management["client-capabilities"])
    assert set(ours["client-capabilities"]["supported-payloads"]) == set(
        real_management["client-capabilities"]["supported-payloads"])
    # a configuration no activation references: as the real capture status.D0.error.json shows it
    stray = _statuses(report, "configurations")["stray"]
    assert stray["active"] is False and stray["valid"] == "unknown"
    assert stray["reasons"][0]["code"] == "Info.NotReferencedByActivation"
    assert stray["reasons"][0]["details"] == {"Identifier": "stray",
                                              "ServerToken": server.declarations[("configuration", "stray")]["ServerToken"]}


def test_same_token_fetches_nothing_and_changes_fetch_only_what_changed(server, device) -> None:
    _os_blueprint(server, "17.5")  # the installed version: nothing to do
    device.sync_declarations()
    server.requests.clear()
    assert device.sync_declarations() is None  # nothing changed: no report either
    assert server.requests == ["tokens"]

    server.put("configuration", "os", SOFTWARE_UPDATE, {"TargetOSVersion": "17.6",
                                                         "TargetLocalDateTime": "2026-12-01T09:00:00"})
    server.requests.clear()
    report = device.sync_declarations()
    assert server.requests == ["tokens", "declaration-items", "declaration/configuration/os", "status"]
    # incremental: only what changed (the changed declaration's row, the version, the build); not the
    # capabilities, not the unchanged rows
    assert "FullReport" not in report
    assert set(report["StatusItems"]["management"]) == {"declarations"}
    assert report["StatusItems"]["management"]["declarations"] == {
        "activations": [], "assets": [], "management": [],
        "configurations": [{"identifier": "os", "server-token": server.declarations[("configuration", "os")][
            "ServerToken"], "active": True, "valid": "valid"}]}
    assert report["StatusItems"]["device"] == {"operating-system": {"version": "17.6", "build-version": "21G80"}}
    assert "install-state" not in report["StatusItems"].get("softwareupdate", {})


def test_removed_declarations_are_dropped(server, device) -> None:
    _os_blueprint(server)
    server.profiles["/p/wifi.mobileconfig"] = plistlib.dumps({
        "PayloadIdentifier": "com.example.wifi", "PayloadUUID": "U1", "PayloadType": "Configuration",
        "PayloadVersion": 1, "PayloadContent": [{"PayloadType": "com.apple.wifi.managed",
                                                 "PayloadIdentifier": "com.example.wifi.p", "PayloadUUID": "U2",
                                                 "PayloadVersion": 1}]})
    server.put("configuration", "wifi", LEGACY, {"ProfileURL": f"{server.url}/p/wifi.mobileconfig"})
    server.put("activation", "act", "com.apple.activation.simple",
               {"StandardConfigurations": ["os", "subs", "wifi"]})
    device.sync_declarations()
    assert "com.example.wifi" in device.profiles and "GET /p/wifi.mobileconfig" in server.requests

    server.remove("configuration", "wifi")
    server.put("activation", "act", "com.apple.activation.simple", {"StandardConfigurations": ["os", "subs"]})
    server.requests.clear()
    report = device.sync_declarations()
    assert server.fetches() == ["declaration/activation/act"]
    assert list(_statuses(report, "activations")) == ["act"] and "wifi" not in device.ddm.held("configuration")
    assert "com.example.wifi" not in device.profiles
    assert set(_statuses(device.ddm.report(full=True), "configurations")) == {"os", "subs"}


def test_a_declaration_the_server_no_longer_has_is_dropped(server, device) -> None:
    _os_blueprint(server)
    server.put("configuration", "gone", SUBSCRIPTIONS, {"StatusItems": []})
    server.overrides[("configuration", "gone")] = (404, b"{}")
    report = device.sync_declarations()
    assert "gone" not in _statuses(report, "configurations")
    assert "gone" not in device.ddm.held("configuration")


def test_unknown_type_and_unknown_kind_are_invalid(server, device) -> None:
    _os_blueprint(server)
    server.put("configuration", "future", "com.apple.configuration.app.settings", {"Anything": 1})
    server.put("asset", "cred", "com.apple.asset.credential.userpassword", {"Reference": {"DataURL": "https://x"}})
    server.put("configuration", "wrongkind", "com.apple.activation.simple", {"StandardConfigurations": []})
    server.put("activation", "act", "com.apple.activation.simple",
               {"StandardConfigurations": ["os", "subs", "future", "wrongkind"]})
    report = device.sync_declarations()
    configurations = _statuses(report, "configurations")
    for identifier, declared in (("future", "com.apple.configuration.app.settings"),
                                 ("wrongkind", "com.apple.activation.simple")):
        row = configurations[identifier]
        assert row["active"] is False and row["valid"] == "invalid"
        assert row["reasons"] == [{"code": "Error.UnknownDeclarationType", "description": "Unknown Declaration Type",
                                   "details": {"UnknownDeclarationType": declared}}]
    asset = _statuses(report, "assets")["cred"]
    assert asset["valid"] == "invalid" and asset["reasons"][0]["code"] == "Error.UnknownDeclarationType"
    # the activation still applies what it can
    assert configurations["os"]["active"] and device.os_version == "17.6"


def test_a_declaration_that_is_not_the_announced_one_is_refused(server, device) -> None:
    _os_blueprint(server)
    impostor = dict(server.declarations[("configuration", "os")], Identifier="other")
    server.overrides[("configuration", "os")] = (200, json.dumps(impostor).encode())
    report = device.sync_declarations()
    row = _statuses(report, "configurations")["os"]
    assert row["valid"] == "invalid" and row["active"] is False
    assert row["reasons"][0]["code"] == "Error.InvalidPayload"
    assert row["reasons"][0]["details"]["Identifier"] == "other"
    assert row["server-token"] == server.declarations[("configuration", "os")]["ServerToken"]
    assert device.os_version == "17.5"  # never applied

    forged_token = dict(server.declarations[("configuration", "os")], ServerToken="not-announced")
    server.put("configuration", "os", SOFTWARE_UPDATE, {"TargetOSVersion": "17.6.1",
                                                         "TargetLocalDateTime": "2026-12-01T09:00:00"})
    server.overrides[("configuration", "os")] = (200, json.dumps(forged_token).encode())
    report = device.sync_declarations()
    assert _statuses(report, "configurations")["os"]["valid"] == "invalid" and device.os_version == "17.5"


def test_os_update_goes_through_its_states_after_the_delay(server, device, clock) -> None:
    device.ddm.update_delay = 10
    _os_blueprint(server, "18.1")
    report = device.sync_declarations()
    assert device.os_version == "17.5"
    assert report["StatusItems"]["softwareupdate"]["install-state"] == "downloading"
    assert report["StatusItems"]["softwareupdate"]["pending-version"] == {
        "os-version": "18.1", "build-version": "22B83", "target-local-date-time": "2026-12-01T09:00:00"}
    assert report["StatusItems"]["softwareupdate"]["install-reason"] == {
        "reason": ["declaration"], "declaration-id": "os"}

    clock.now += 6
    report = device.ddm.tick()
    assert report["StatusItems"] == {"softwareupdate": {"install-state": "installing"}}
    # DeviceInformation before the delay is over still says 17.5
    assert device.answer("U1", "DeviceInformation", {"Queries": ["OSVersion"]})["QueryResponses"] == {
        "OSVersion": "17.5"}

    clock.now += 5
    assert device.answer("U2", "DeviceInformation", {"Queries": ["OSVersion", "BuildVersion"]})[
        "QueryResponses"] == {"OSVersion": "18.1", "BuildVersion": "22B83"}
    report = device.ddm.tick()
    assert report["StatusItems"]["device"]["operating-system"] == {"version": "18.1", "build-version": "22B83"}
    assert report["StatusItems"]["softwareupdate"] == {"install-state": "none",
                                                       "pending-version": {"os-version": "", "build-version": ""},
                                                       "install-reason": {"reason": []}}
    assert device.ddm.tick() is None  # nothing more to say


def test_a_failing_update_reports_its_reason(server, device, clock) -> None:
    device.ddm.update_failure = "Not enough storage"
    _os_blueprint(server, "17.6")
    report = device.sync_declarations()
    update = report["StatusItems"]["softwareupdate"]
    assert update["install-state"] == "failed" and update["failure-reason"]["count"] == 1
    assert update["failure-reason"]["reason"] == "Not enough storage" and device.os_version == "17.5"
    device.ddm.update_failure = None
    device.ddm.retry_update()
    report = device.ddm.tick()
    assert device.os_version == "17.6" and report["StatusItems"]["softwareupdate"]["install-state"] == "none"


def test_a_downgrade_is_refused(server, device) -> None:
    _os_blueprint(server, "16.7")
    report = device.sync_declarations()
    row = _statuses(report, "configurations")["os"]
    assert row["valid"] == "invalid" and row["reasons"][0]["code"] == "Error.ConfigurationCannotBeApplied"
    assert "older than the installed 17.5" in row["reasons"][0]["details"]["Error"]
    assert device.os_version == "17.5" and report["StatusItems"]["softwareupdate"]["install-state"] == "none"


def test_malformed_enforcement_is_invalid(server, device) -> None:
    _os_blueprint(server)
    server.put("configuration", "os", SOFTWARE_UPDATE, {"TargetOSVersion": "latest",
                                                         "TargetLocalDateTime": "2026-12-01 09:00"})
    row = _statuses(device.sync_declarations(), "configurations")["os"]
    assert row["valid"] == "invalid" and {r["code"] for r in row["reasons"]} == {
        "Error.ConfigurationCannotBeDeserialized"} and len(row["reasons"]) == 2


def test_activation_predicates_and_missing_configurations(server, device) -> None:
    server.put("configuration", "os", SOFTWARE_UPDATE, {"TargetOSVersion": "17.6",
                                                         "TargetLocalDateTime": "2026-12-01T09:00:00"})
    server.put("activation", "pred", "com.apple.activation.simple",
               {"StandardConfigurations": ["os"], "Predicate": "@status(device.model.family) == 'iPhone'"})
    server.put("activation", "missing", "com.apple.activation.simple", {"StandardConfigurations": ["nope"]})
    report = device.sync_declarations()
    activations = _statuses(report, "activations")
    assert activations["pred"]["valid"] == "invalid" and not activations["pred"]["active"]
    assert activations["pred"]["reasons"][0]["code"] == "Error.UnableToEvaluatePredicate"
    assert activations["missing"]["reasons"][0]["code"] == "Error.MissingConfigurations"
    assert activations["missing"]["reasons"][0]["details"] == {"Identifiers": ["nope"]}
    assert _statuses(report, "configurations")["os"]["active"] is False and device.os_version == "17.5"


def test_unsupported_subscribed_item_is_an_error_once(server, device) -> None:
    server.put("configuration", "subs", SUBSCRIPTIONS, {"StatusItems": [{"Name": "passcode.is-present"},
                                                                        {"Name": "device.identifier.udid"}]})
    server.put("activation", "act", "com.apple.activation.simple", {"StandardConfigurations": ["subs"]})
    report = device.sync_declarations()
    assert report["Errors"] == [{"StatusItem": "passcode.is-present", "Reasons": [
        {"Code": "Error.UnsupportedStatusItem", "Description": "The status item passcode.is-present is not supported"}]}]
    assert report["StatusItems"]["device"] == {"identifier": {"udid": device.udid}}
    server.put("configuration", "other", SUBSCRIPTIONS, {"StatusItems": []})
    assert device.sync_declarations()["Errors"] == []


def test_legacy_profile_host_rule_and_reinstall(server, device) -> None:
    profile = {"PayloadIdentifier": "com.example.vpn", "PayloadUUID": "V1", "PayloadType": "Configuration",
               "PayloadVersion": 1, "PayloadContent": []}
    server.profiles["/p/vpn"] = plistlib.dumps(profile)
    server.put("configuration", "vpn", LEGACY, {"ProfileURL": "http://elsewhere.example:8443/p/vpn"})
    server.put("configuration", "mdm", LEGACY, {"ProfileURL": f"{server.url}/p/mdm"})
    server.profiles["/p/mdm"] = plistlib.dumps({**profile, "PayloadIdentifier": "com.example.mdm2",
                                                "PayloadContent": [{"PayloadType": "com.apple.mdm"}]})
    server.put("activation", "act", "com.apple.activation.simple", {"StandardConfigurations": ["vpn", "mdm"]})
    report = device.sync_declarations()
    rows = _statuses(report, "configurations")
    assert rows["vpn"]["valid"] == "invalid" and "not on the MDM server's host" in rows["vpn"]["reasons"][0][
        "details"]["Error"]
    assert rows["mdm"]["valid"] == "invalid" and "com.example.mdm2" not in device.profiles
    assert not [r for r in server.requests if r.startswith("GET /p/vpn")]

    server.put("configuration", "vpn", LEGACY, {"ProfileURL": f"{server.url}/p/vpn"})
    report = device.sync_declarations()
    assert _statuses(report, "configurations")["vpn"]["valid"] == "valid"
    assert device.profiles["com.example.vpn"]["PayloadUUID"] == "V1"
    # a new server token → downloaded again (the new version replaces the old one)
    server.profiles["/p/vpn2"] = plistlib.dumps({**profile, "PayloadUUID": "V2"})
    server.put("configuration", "vpn", LEGACY, {"ProfileURL": f"{server.url}/p/vpn2"})
    device.sync_declarations()
    assert device.profiles["com.example.vpn"]["PayloadUUID"] == "V2"
    # a profile another source (InstallProfile) installed is not taken over
    device.profiles["com.example.mine"] = {**profile, "PayloadIdentifier": "com.example.mine"}
    server.profiles["/p/mine"] = plistlib.dumps({**profile, "PayloadIdentifier": "com.example.mine",
                                                 "PayloadUUID": "M2"})
    server.put("configuration", "mine", LEGACY, {"ProfileURL": f"{server.url}/p/mine"})
    server.put("activation", "act", "com.apple.activation.simple", {"StandardConfigurations": ["vpn", "mine"]})
    rows = _statuses(device.sync_declarations(), "configurations")
    assert rows["mine"]["valid"] == "invalid" and "already installed" in rows["mine"]["reasons"][0]["details"]["Error"]
    server.put("activation", "act", "com.apple.activation.simple", {"StandardConfigurations": ["mine"]})
    device.sync_declarations()
    assert "com.example.vpn" not in device.profiles and "com.example.mine" in device.profiles


def test_require_https_refuses_plain_profile_urls(server, device) -> None:
    device.require_https = True
    server.profiles["/p/a"] = plistlib.dumps({"PayloadIdentifier": "a", "PayloadContent": []})
    server.put("configuration", "a", LEGACY, {"ProfileURL": f"{server.url}/p/a"})
    server.put("activation", "act", "com.apple.activation.simple", {"StandardConfigurations": ["a"]})
    row = _statuses(device.sync_declarations(), "configurations")["a"]
    assert row["valid"] == "invalid" and "https" in row["reasons"][0]["details"]["Error"] and "a" not in device.profiles


def test_the_command_triggers_a_sync_with_its_tokens(server, device) -> None:
    _os_blueprint(server)
    data = json.dumps(server.sync_tokens()).encode()
    server.commands.append({"CommandUUID": "C1", "Command": {"RequestType": "DeclarativeManagement", "Data": data}})
    handled = device.run_session()
    assert handled == [("C1", "DeclarativeManagement", "Acknowledged")]
    assert server.requests[0] == "declaration-items"  # the tokens came with the command
    assert device.os_version == "17.6" and server.reports

    server.commands.append({"CommandUUID": "C2", "Command": {"RequestType": "DeclarativeManagement"}})
    server.requests.clear()
    device.run_session()
    assert server.requests == ["tokens"]  # no Data: the device asks; same token: nothing more
    server.commands.append({"CommandUUID": "C3", "Command": {"RequestType": "DeclarativeManagement",
                                                             "Data": b"{not json"}})
    assert device.run_session() == [("C3", "DeclarativeManagement", "CommandFormatError")]
    # the base64 text as a string instead of plist data: not what Apple's command carries
    server.commands.append({"CommandUUID": "C5", "Command": {"RequestType": "DeclarativeManagement",
                                                             "Data": base64.b64encode(data).decode()}})
    assert device.run_session() == [("C5", "DeclarativeManagement", "CommandFormatError")]
    assert device.ddm.errors == []
    # a sync that fails after the command does not break the command channel: it is kept
    server.endpoint_overrides["tokens"] = (500, b"")
    server.commands.append({"CommandUUID": "C4", "Command": {"RequestType": "DeclarativeManagement"}})
    assert device.run_session() == [("C4", "DeclarativeManagement", "Acknowledged")]
    assert device.ddm.errors == ["tokens answered HTTP 500"]


def test_an_os_before_ddm_or_before_the_enforcement(server, device, identity) -> None:
    device.os_version = "14.8"
    server.commands.append({"CommandUUID": "C1", "Command": {"RequestType": "DeclarativeManagement"}})
    assert device.run_session() == [("C1", "DeclarativeManagement", "Error")]
    assert server.results[0]["ErrorChain"][0]["ErrorCode"] == 12021 and server.requests == []

    device.os_version = "16.7"
    _os_blueprint(server, "17.6")
    report = device.sync_declarations()
    assert "FullReport" not in report  # before iOS 17 a report does not carry it
    # nor does it have the software-update status items: subscribed, they are Errors
    assert {e["StatusItem"] for e in report["Errors"]} == {n for n in OS_ITEMS if n.startswith("softwareupdate.")}
    assert "softwareupdate" not in report["StatusItems"]
    row = _statuses(report, "configurations")["os"]
    assert row["valid"] == "invalid" and row["reasons"][0]["code"] == "Error.UnknownDeclarationType"
    assert SOFTWARE_UPDATE not in report["StatusItems"]["management"]["client-capabilities"][
        "supported-payloads"]["declarations"]["configurations"]


@pytest.mark.parametrize("endpoint,body", [
    ("declaration-items", b"{" + b" " * MAX_RESPONSE_BYTES + b"}"),
    ("declaration-items", b"[" * 100_000 + b"]" * 100_000),
    ("declaration-items", b'{"Declarations": {"Activations": [], "Configurations": [{"Identifier": "a", '
                          b'"ServerToken": "1"}, {"Identifier": "a", "ServerToken": "2"}], "Assets": [], '
                          b'"Management": []}, "DeclarationsToken": "t"}'),
    ("declaration-items", b'{"Declarations": {"Activations": [{"Identifier": "../x", "ServerToken": "1"}], '
                          b'"Configurations": [], "Assets": [], "Management": []}, "DeclarationsToken": "t"}'),
    ("tokens", b'{"SyncTokens": {}}'),
    ("tokens", b"\xff\xfe"),
    ("tokens", b"x"),
])
def test_hostile_answers_stop_the_sync_and_keep_the_state(server, device, endpoint, body) -> None:
    _os_blueprint(server, "17.5")
    device.sync_declarations()
    held, token = dict(device.ddm.declarations), device.ddm.declarations_token
    server.put("configuration", "extra", SUBSCRIPTIONS, {"StatusItems": []})
    server.endpoint_overrides[endpoint] = (200, body)
    with pytest.raises(DDMError):
        device.sync_declarations()
    assert device.ddm.declarations == held and device.ddm.declarations_token == token


def test_an_oversized_or_nested_declaration_is_invalid(server, device) -> None:
    _os_blueprint(server, "17.5")
    server.put("configuration", "big", SUBSCRIPTIONS, {"StatusItems": []})
    server.put("configuration", "deep", SUBSCRIPTIONS, {"StatusItems": []})
    server.overrides[("configuration", "big")] = (200, b'{"x": "' + b"a" * (MAX_RESPONSE_BYTES + 10) + b'"}')
    server.overrides[("configuration", "deep")] = (200, b"[" * 5000 + b"]" * 5000)
    rows = _statuses(device.sync_declarations(), "configurations")
    for identifier in ("big", "deep"):
        assert rows[identifier]["valid"] == "invalid" and rows[identifier]["reasons"][0]["code"] == "Error.InvalidPayload"
    assert rows["os"]["valid"] == "valid"


def test_a_refused_report_is_sent_again(server, device) -> None:
    _os_blueprint(server, "17.5")
    server.status_answer = 500
    with pytest.raises(DDMError):
        device.sync_declarations()
    server.status_answer = 200
    report = device.ddm.report()
    assert "client-capabilities" in report["StatusItems"]["management"]  # still the full first report
    assert device.ddm.report() is None
    # the safety sync: everything again, every declaration row
    safety = device.ddm.report(full=True)
    assert safety["FullReport"] is True and len(_statuses(safety, "configurations")) == 2
    assert safety["StatusItems"]["management"]["client-capabilities"]


def test_leaving_management_forgets_the_declarations(server, device) -> None:
    server.profiles["/p/a"] = plistlib.dumps({"PayloadIdentifier": "a", "PayloadContent": []})
    server.put("configuration", "a", LEGACY, {"ProfileURL": f"{server.url}/p/a"})
    server.put("activation", "act", "com.apple.activation.simple", {"StandardConfigurations": ["a"]})
    device.sync_declarations()
    assert "a" in device.profiles
    device.enrollment_profile = {"PayloadContent": []}
    device._leave_management()
    assert device.ddm.declarations == {} and device.ddm.declarations_token is None and "a" not in device.profiles
