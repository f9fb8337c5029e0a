"""The simulated device installs, lists and removes apps: it fetches the manifest and the package from a
small Flask app of this test (in-process through ``FlaskTransport`` and over real HTTP), checks the chunk
hashes, and answers InstallApplication, InstallEnterpriseApplication, RemoveApplication,
ManagedApplicationList and InstalledApplicationList the way Apple's devices do."""

from __future__ import annotations

import hashlib
import io
import plistlib
import threading
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask, Response, request
from werkzeug.serving import make_server

from mdmserver.apps.manifests import app_manifest
from mdmserver.apps.models import App
from mdmserver.simulator.device import FlaskTransport, HttpxTransport, SimulatedDevice

BASE = "http://apps.test"
IPA_ID, PKG_ID = "com.example.notes", "com.example.agent"


def make_ipa(version: str = "1.0", filler: int = 3000) -> bytes:
    """A small real .ipa: a zip with Payload/<name>.app/Info.plist."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        info = {"CFBundleIdentifier": IPA_ID, "CFBundleShortVersionString": version, "CFBundleVersion": version}
        archive.writestr("Payload/Notes.app/Info.plist", plistlib.dumps(info))
        archive.writestr("Payload/Notes.app/Notes", bytes(range(256)) * (filler // 256 + 1))
    return buffer.getvalue()


def make_pkg(filler: int = 2500) -> bytes:
    """Bytes that start like a flat package (xar header magic); the simulator checks no more of a .pkg."""
    return b"xar!\x00\x1c\x00\x01" + hashlib.sha256(b"pkg").digest() * (filler // 32 + 1)


def digests(data: bytes, size: int, algorithm: str) -> list[str]:
    return [hashlib.new(algorithm, data[i:i + size]).hexdigest() for i in range(0, len(data), size)]


def manifest_for(package_url: str, data: bytes, *, identifier: str, version: str = "1.0",
                 chunk: int = 1000, md5: bool = False, hashes: bool = True) -> dict[str, Any]:
    asset: dict[str, Any] = {"kind": "software-package", "url": package_url}
    if hashes:
        asset.update({"sha256-size": chunk, "sha256s": digests(data, chunk, "sha256")})
    if md5:
        asset.update({"md5-size": chunk, "md5s": digests(data, chunk, "md5")})
    return {"items": [{"assets": [asset], "metadata": {
        "kind": "software", "title": "Notes", "bundle-identifier": identifier, "bundle-version": version}}]}


@dataclass
class AppHost:
    """The test's download server: ``files`` maps a path to bytes (a dict is served as a plist)."""

    base: str = BASE
    files: dict[str, Any] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def wsgi(self) -> Flask:
        app = Flask("app-host")

        @app.get("/<path:path>")
        def serve(path: str) -> Response:
            self.requests.append(("/" + path, dict(request.headers)))
            content = self.files.get("/" + path)
            if content is None:
                return Response("not found", status=404)
            if isinstance(content, dict):
                return Response(plistlib.dumps(content), content_type="application/xml")
            return Response(content, content_type="application/octet-stream")

        return app

    def publish(self, name: str, package: bytes, manifest: dict[str, Any] | None = None, **kw) -> str:
        """Serve a package and its manifest; returns the manifest URL."""
        token = uuid.uuid4().hex
        self.files[f"/apps/{token}/{name}"] = package
        self.files[f"/apps/{token}/manifest.plist"] = manifest or manifest_for(
            f"{self.base}/apps/{token}/{name}", package, **kw)
        return f"{self.base}/apps/{token}/manifest.plist"


@pytest.fixture
def host() -> AppHost:
    return AppHost()


def device(host: AppHost, platform: str = "ios", **kw) -> SimulatedDevice:
    return SimulatedDevice(FlaskTransport(host.wsgi().test_client()), platform=platform, seed=7, **kw)


def run(sim: SimulatedDevice, request_type: str, **params) -> dict[str, Any]:
    return sim.answer(str(uuid.uuid4()).upper(), request_type, params)


def managed_list(sim: SimulatedDevice, **params) -> dict[str, Any]:
    answer = run(sim, "ManagedApplicationList", **params)
    assert answer["Status"] == "Acknowledged"
    return answer["ManagedApplicationList"]


def installed(sim: SimulatedDevice, **params) -> dict[str, dict[str, Any]]:
    answer = run(sim, "InstalledApplicationList", **params)
    assert answer["Status"] == "Acknowledged"
    return {entry["Identifier"]: entry for entry in answer["InstalledApplicationList"]}


# --- InstallApplication with a ManifestURL ---------------------------------------------------------


def test_manifest_install_fetches_checks_and_installs_managed(host) -> None:
    package = make_ipa("2.3")
    url = host.publish("pkg.ipa", package, identifier=IPA_ID, version="2.3", md5=True)
    sim = device(host)
    answer = run(sim, "InstallApplication", ManifestURL=url, ManagementFlags=5,
                 Configuration={"ServerURL": "https://notes.example"}, Attributes={"Removable": False})
    assert answer["Status"] == "Acknowledged"
    assert answer["Identifier"] == IPA_ID and answer["State"] == "Managed"
    # the manifest, then the package, fetched without the device's MDM identity
    assert [p for p, _h in host.requests] == [url.removeprefix(BASE), url.removeprefix(BASE).replace(
        "manifest.plist", "pkg.ipa")]
    assert all("Mdm-Signature" not in headers for _p, headers in host.requests)

    apps = installed(sim)
    assert set(apps) == {"com.apple.Pages", IPA_ID}
    entry = apps[IPA_ID]
    assert entry["Name"] == "Notes" and entry["ShortVersion"] == "2.3" and entry["Version"] == "2.3"
    assert entry["BundleSize"] == len(package) and entry["IsValidated"] is True and entry["Installing"] is False
    assert sim.installed_version(IPA_ID) == "2.3"

    assert managed_list(sim) == {IPA_ID: {"Status": "Managed", "ManagementFlags": 5, "HasConfiguration": True,
                                          "HasFeedback": False, "IsValidated": True}}
    app = sim.managed_apps[IPA_ID]
    assert app.configuration == {"ServerURL": "https://notes.example"} and app.attributes == {"Removable": False}
    config = run(sim, "ManagedApplicationConfiguration", Identifiers=[IPA_ID, "com.apple.Pages"])
    assert config["ApplicationConfigurations"] == [
        {"Identifier": IPA_ID, "Configuration": {"ServerURL": "https://notes.example"}}]
    attributes = run(sim, "ManagedApplicationAttributes", Identifiers=[IPA_ID])
    assert attributes["ApplicationAttributes"] == [{"Identifier": IPA_ID, "Attributes": {"Removable": False}}]


@pytest.mark.parametrize("tamper", ["sha256", "md5", "chunk_count"])
def test_package_hash_mismatch_fails_and_shows_in_the_managed_list(host, tamper) -> None:
    package = make_ipa()
    manifest = manifest_for(f"{BASE}/apps/t/pkg.ipa", package, identifier=IPA_ID, md5=True)
    asset = manifest["items"][0]["assets"][0]
    if tamper == "sha256":
        asset["sha256s"][1] = hashlib.sha256(b"other").hexdigest()
    elif tamper == "md5":
        asset["md5s"][-1] = hashlib.md5(b"other").hexdigest()
    else:
        asset["sha256s"].append(asset["sha256s"][0])
    host.files.update({"/apps/t/pkg.ipa": package, "/apps/t/manifest.plist": manifest})
    sim = device(host)
    answer = run(sim, "InstallApplication", ManifestURL=f"{BASE}/apps/t/manifest.plist")
    assert answer["Status"] == "Acknowledged" and answer["State"] == "Failed"
    listed = managed_list(sim)
    assert listed[IPA_ID]["Status"] == "Failed" and listed[IPA_ID]["IsValidated"] is False
    assert IPA_ID not in installed(sim)
    assert sim.managed_apps[IPA_ID].failure


def test_a_package_changed_on_the_server_after_the_manifest_fails(host) -> None:
    url = host.publish("pkg.ipa", make_ipa(), identifier=IPA_ID)
    host.files[url.removeprefix(BASE).replace("manifest.plist", "pkg.ipa")] = make_ipa("1.1")
    sim = device(host)
    assert run(sim, "InstallApplication", ManifestURL=url)["State"] == "Failed"
    assert "sha256" in sim.install_failures[-1][1]


@pytest.mark.parametrize("manifest", [
    None,  # 404
    b"not a plist",
    {"items": []},
    {"items": [{"assets": [{"kind": "display-image", "url": "x"}], "metadata": {"bundle-identifier": IPA_ID}}]},
    {"items": [{"assets": [{"kind": "software-package", "url": f"{BASE}/p"}], "metadata": {"title": "x"}}]},
    {"items": [{"assets": [{"kind": "software-package", "url": f"{BASE}/p", "sha256-size": 0,
                            "sha256s": ["00"]}], "metadata": {"bundle-identifier": IPA_ID}}]},
    {"items": [{"assets": [{"kind": "software-package", "url": f"{BASE}/p", "sha256-size": 10,
                            "sha256s": [42]}], "metadata": {"bundle-identifier": IPA_ID}}]},
])
def test_an_unusable_manifest_fails_the_install(host, manifest) -> None:
    if manifest is not None:
        host.files["/m.plist"] = manifest
    sim = device(host)
    answer = run(sim, "InstallApplication", ManifestURL=f"{BASE}/m.plist")
    assert answer["Status"] == "Acknowledged" and answer["State"] == "Failed" and "Identifier" not in answer
    assert sim.app_installs == {} and managed_list(sim) == {}
    assert sim.install_failures and sim.install_failures[-1][0] == f"{BASE}/m.plist"


def test_a_missing_package_fails_under_its_bundle_id(host) -> None:
    url = host.publish("pkg.ipa", make_ipa(), identifier=IPA_ID)
    del host.files[url.removeprefix(BASE).replace("manifest.plist", "pkg.ipa")]
    sim = device(host)
    answer = run(sim, "InstallApplication", ManifestURL=url)
    assert (answer["Identifier"], answer["State"]) == (IPA_ID, "Failed")
    assert "HTTP 404" in sim.managed_apps[IPA_ID].failure


def test_an_unreachable_server_fails_the_install() -> None:
    sim = SimulatedDevice(HttpxTransport("http://127.0.0.1:9", timeout=2), seed=1)
    answer = run(sim, "InstallApplication", ManifestURL="http://127.0.0.1:9/apps/x/manifest.plist")
    assert answer["State"] == "Failed" and "ConnectError" in sim.install_failures[0][1]
    sim.transport.close()


def test_https_can_be_required(host) -> None:
    url = host.publish("pkg.ipa", make_ipa(), identifier=IPA_ID)
    sim = device(host, require_https=True)
    assert run(sim, "InstallApplication", ManifestURL=url)["State"] == "Failed"
    assert host.requests == [] and "https" in sim.install_failures[0][1]


@pytest.mark.parametrize("params", [
    {},
    {"ManifestURL": 42},
    {"iTunesStoreID": "361309726"},
    {"Identifier": IPA_ID, "ManagementFlags": "1"},
    {"Identifier": IPA_ID, "Configuration": ["not", "a", "dict"]},
    {"Identifier": IPA_ID, "Attributes": "x"},
])
def test_a_malformed_install_command_is_a_command_format_error(host, params) -> None:
    sim = device(host)
    assert run(sim, "InstallApplication", **params)["Status"] == "CommandFormatError"
    assert sim.app_installs == {}


def test_the_package_must_suit_the_platform(host) -> None:
    ipa_url = host.publish("a.ipa", make_ipa(), identifier=IPA_ID)
    pkg_url = host.publish("a.pkg", make_pkg(), identifier=PKG_ID)
    ios, mac = device(host), device(host, "macos")
    assert run(ios, "InstallApplication", ManifestURL=pkg_url)["State"] == "Failed"
    assert run(mac, "InstallApplication", ManifestURL=ipa_url, InstallAsManaged=True)["State"] == "Failed"
    assert run(mac, "InstallApplication", ManifestURL=pkg_url, InstallAsManaged=True)["State"] == "Managed"


# --- asynchronous installs and updates -------------------------------------------------------------


def test_async_install_is_queued_then_installing_then_managed(host) -> None:
    url = host.publish("pkg.ipa", make_ipa("1.0"), identifier=IPA_ID)
    sim = device(host, install_mode="async")
    answer = run(sim, "InstallApplication", ManifestURL=url)
    assert (answer["Identifier"], answer["State"]) == (IPA_ID, "Queued")
    assert len(host.requests) == 1  # the manifest only: the package comes later
    waiting = installed(sim)[IPA_ID]
    assert waiting["Installing"] is True and waiting["DownloadWaiting"] is True
    assert managed_list(sim)[IPA_ID]["Status"] == "Installing"
    assert installed(sim)[IPA_ID]["Installing"] is True
    assert managed_list(sim)[IPA_ID]["Status"] == "Managed"
    assert installed(sim)[IPA_ID]["ShortVersion"] == "1.0" and len(host.requests) == 2


def test_update_replaces_the_version_and_a_failed_update_keeps_the_old_one(host) -> None:
    sim = device(host, install_mode="async")
    run(sim, "InstallApplication", ManifestURL=host.publish("v1.ipa", make_ipa("1.0"), identifier=IPA_ID,
                                                            version="1.0"))
    sim.settle_installs()
    assert sim.installed_version(IPA_ID) == "1.0"

    url2 = host.publish("v2.ipa", make_ipa("2.0"), identifier=IPA_ID, version="2.0")
    assert run(sim, "InstallApplication", ManifestURL=url2)["State"] == "Queued"
    assert managed_list(sim)[IPA_ID]["Status"] == "Updating"
    assert sim.installed_version(IPA_ID) == "1.0"
    assert managed_list(sim)[IPA_ID]["Status"] == "Managed"
    assert sim.installed_version(IPA_ID) == "2.0"

    broken = make_ipa("3.0")
    url3 = host.publish("v3.ipa", broken, identifier=IPA_ID, version="3.0")
    host.files[url3.removeprefix(BASE).replace("manifest.plist", "v3.ipa")] = broken[:-1] + b"\x01"
    run(sim, "InstallApplication", ManifestURL=url3)
    sim.settle_installs()
    assert managed_list(sim)[IPA_ID]["Status"] == "Failed"
    assert sim.installed_version(IPA_ID) == "2.0"


# --- App Store installs -----------------------------------------------------------------------------


def test_store_install_by_store_id_and_by_bundle_id(host) -> None:
    sim = device(host)
    by_id = run(sim, "InstallApplication", iTunesStoreID=361309726, Options={"PurchaseMethod": 1})
    assert by_id == {**by_id, "Status": "Acknowledged", "Identifier": "com.example.store361309726",
                     "State": "Managed"}
    entry = installed(sim)["com.example.store361309726"]
    assert entry["Name"] == "App 361309726" and entry["ShortVersion"] == "1.0"
    assert entry["AppStoreVendable"] is True
    assert sim.managed_apps["com.example.store361309726"].options == {"PurchaseMethod": 1}

    run(sim, "InstallApplication", Identifier="com.example.maps")
    assert installed(sim)["com.example.maps"]["Name"] == "App com.example.maps"
    listed = managed_list(sim)
    assert listed["com.example.maps"]["Status"] == "Managed"
    assert isinstance(listed["com.example.maps"]["ExternalVersionIdentifier"], int)
    assert host.requests == []  # the store needs no download from the server


def test_store_version_hints_model_store_updates(host) -> None:
    sim = device(host, store_apps={361309726: {"Identifier": "com.example.chat", "ShortVersion": "5.1"}})
    run(sim, "InstallApplication", iTunesStoreID=361309726)
    assert sim.installed_version("com.example.chat") == "5.1"
    before = managed_list(sim)["com.example.chat"]["ExternalVersionIdentifier"]

    sim.store_apps[361309726]["ShortVersion"] = "5.2"
    run(sim, "InstallApplication", iTunesStoreID=361309726)
    assert sim.installed_version("com.example.chat") == "5.2"
    assert managed_list(sim)["com.example.chat"]["ExternalVersionIdentifier"] != before

    sim.store_version = "9.0"
    run(sim, "InstallApplication", Identifier="com.example.other")
    assert sim.installed_version("com.example.other") == "9.0"

    sim.store_apps["com.example.broken"] = {"Failure": "CouldNotVerifyAppID"}
    assert run(sim, "InstallApplication", Identifier="com.example.broken")["State"] == "Failed"
    assert managed_list(sim)["com.example.broken"]["Status"] == "Failed"


def test_an_app_the_user_installed_is_not_taken_over_unless_asked(host) -> None:
    sim = device(host)
    refused = run(sim, "InstallApplication", Identifier="com.apple.Pages")
    assert refused["Status"] == "Error" and refused["RejectionReason"] == "AppAlreadyInstalled"
    assert refused["ErrorChain"][0]["ErrorCode"] == 12025
    assert "com.apple.Pages" not in managed_list(sim)
    taken = run(sim, "InstallApplication", Identifier="com.apple.Pages", ChangeManagementState="Managed")
    assert taken["State"] == "Managed" and managed_list(sim)["com.apple.Pages"]["Status"] == "Managed"


# --- RemoveApplication and the lists ----------------------------------------------------------------


def test_remove_application(host) -> None:
    sim = device(host)
    run(sim, "InstallApplication", ManifestURL=host.publish("pkg.ipa", make_ipa(), identifier=IPA_ID))
    assert run(sim, "RemoveApplication", Identifier=IPA_ID)["Status"] == "Acknowledged"
    assert IPA_ID not in installed(sim) and managed_list(sim) == {}

    for identifier in (IPA_ID, "com.apple.Pages", "com.example.never"):
        answer = run(sim, "RemoveApplication", Identifier=identifier)
        assert answer["Status"] == "Error"
        assert answer["ErrorChain"][0]["USEnglishDescription"] == f"The app “{identifier}” is not managed."
    assert "com.apple.Pages" in installed(sim)
    assert run(sim, "RemoveApplication")["Status"] == "CommandFormatError"


def test_list_filters(host) -> None:
    sim = device(host)
    run(sim, "InstallApplication", ManifestURL=host.publish("pkg.ipa", make_ipa(), identifier=IPA_ID))
    run(sim, "InstallApplication", Identifier="com.example.maps")
    assert set(managed_list(sim, Identifiers=[IPA_ID, "com.apple.Pages"])) == {IPA_ID}
    assert set(installed(sim, Identifiers=["com.apple.Pages", "com.example.maps"])) == {
        "com.apple.Pages", "com.example.maps"}
    assert set(installed(sim, ManagedAppsOnly=True)) == {IPA_ID, "com.example.maps"}
    narrowed = installed(sim, Items=["ShortVersion"])
    assert narrowed[IPA_ID] == {"Identifier": IPA_ID, "ShortVersion": "1.0"}
    assert run(sim, "ManagedApplicationList", Identifiers="x")["Status"] == "CommandFormatError"
    assert run(sim, "ManagedApplicationConfiguration")["Status"] == "CommandFormatError"


def test_leaving_management_removes_apps_flagged_for_removal(host) -> None:
    sim = device(host)
    run(sim, "InstallApplication", Identifier="com.example.keep")
    run(sim, "InstallApplication", Identifier="com.example.drop", ManagementFlags=1)
    sim.enrollment_profile = {"PayloadContent": []}
    sim._leave_management()
    assert "com.example.drop" not in sim.apps and "com.example.keep" in sim.apps
    assert sim.managed_apps == {}


# --- InstallEnterpriseApplication: macOS only -------------------------------------------------------


def test_install_enterprise_application_is_unknown_to_ios(host) -> None:
    url = host.publish("a.pkg", make_pkg(), identifier=PKG_ID)
    for platform in ("ios", "ipados"):
        sim = device(host, platform)
        answer = run(sim, "InstallEnterpriseApplication", ManifestURL=url)
        assert answer["Status"] == "Error"
        assert answer["ErrorChain"][0]["ErrorCode"] == 12021
        assert answer["ErrorChain"][0]["ErrorDomain"] == "MCMDMErrorDomain"
        assert sim.app_installs == {}
    assert host.requests == []


def test_install_enterprise_application_with_an_inline_manifest(host) -> None:
    package = make_pkg()
    host.files["/apps/t/a.pkg"] = package
    manifest = manifest_for(f"{BASE}/apps/t/a.pkg", package, identifier=PKG_ID, version="4.2")
    sim = device(host, "macos")
    answer = run(sim, "InstallEnterpriseApplication", Manifest=manifest, InstallAsManaged=True, ManagementFlags=1,
                 Configuration={"Mode": "strict"})
    assert answer["Status"] == "Acknowledged" and "State" not in answer and "Identifier" not in answer
    assert managed_list(sim)[PKG_ID] == {"Status": "Managed", "ManagementFlags": 1, "HasConfiguration": True,
                                         "HasFeedback": False, "IsValidated": True}
    assert sim.installed_version(PKG_ID) == "4.2"
    assert run(sim, "RemoveApplication", Identifier=PKG_ID)["Status"] == "Acknowledged"
    assert PKG_ID not in sim.apps


def test_macos_installs_unmanaged_without_install_as_managed(host) -> None:
    sim = device(host, "macos")
    url = host.publish("a.pkg", make_pkg(), identifier=PKG_ID)
    assert run(sim, "InstallEnterpriseApplication", ManifestURL=url)["Status"] == "Acknowledged"
    assert PKG_ID in installed(sim) and managed_list(sim) == {}
    assert run(sim, "RemoveApplication", Identifier=PKG_ID)["Status"] == "Error"


@pytest.mark.parametrize("case", ["no_hashes", "tampered", "both_sources", "neither"])
def test_install_enterprise_application_checks(host, case) -> None:
    package = make_pkg()
    host.files["/apps/t/a.pkg"] = package
    manifest = manifest_for(f"{BASE}/apps/t/a.pkg", package, identifier=PKG_ID, hashes=case != "no_hashes")
    if case == "tampered":
        host.files["/apps/t/a.pkg"] = package + b"\x00"
    params: dict[str, Any] = {"Manifest": manifest, "InstallAsManaged": True}
    if case == "both_sources":
        params["ManifestURL"] = f"{BASE}/apps/t/manifest.plist"
    if case == "neither":
        del params["Manifest"]
    sim = device(host, "macos")
    answer = run(sim, "InstallEnterpriseApplication", **params)
    if case in ("both_sources", "neither"):
        assert answer["Status"] == "CommandFormatError"
        return
    assert answer["Status"] == "Acknowledged"
    assert managed_list(sim)[PKG_ID]["Status"] == "Failed" and PKG_ID not in sim.apps


# --- over real HTTP, and through the MDM server -----------------------------------------------------


@pytest.fixture
def http_host() -> Iterator[AppHost]:
    """The download server on a real socket."""
    host = AppHost()
    server = make_server("127.0.0.1", 0, host.wsgi(), threaded=True)
    host.base = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, name="app-host", daemon=True)
    thread.start()
    try:
        yield host
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_manifest_install_over_http(http_host) -> None:
    package = make_ipa("3.1", filler=40_000)
    url = http_host.publish("pkg.ipa", package, identifier=IPA_ID, version="3.1", chunk=10_000)
    transport = HttpxTransport(http_host.base)
    try:
        sim = SimulatedDevice(transport, seed=3)
        answer = run(sim, "InstallApplication", ManifestURL=url)
        assert (answer["Identifier"], answer["State"]) == (IPA_ID, "Managed")
        assert sim.installed_version(IPA_ID) == "3.1" and sim.apps[IPA_ID]["BundleSize"] == len(package)
        assert sim.downloads == [url, url.replace("manifest.plist", "pkg.ipa")]
    finally:
        transport.close()


def test_install_application_through_the_mdm_server(live, api, transport, http_host) -> None:
    """A raw InstallApplication queued through the admin API reaches the device, which fetches the
    manifest and the package from another host, and the server keeps the device's answer."""
    url = http_host.publish("pkg.ipa", make_ipa("1.4"), identifier=IPA_ID, version="1.4")
    sim = SimulatedDevice(transport, platform="ios")
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    queued = api.post(f"/api/v1/devices/{sim.udid}/commands", json={
        "request_type": "InstallApplication",
        "parameters": {"ManifestURL": url, "ManagementFlags": 1, "Configuration": {"Key": "Value"}}})
    assert queued.status_code == 201, queued.text
    listed = api.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "ManagedApplicationList"})
    assert listed.status_code == 201
    handled = sim.run_session()
    assert [(t, s) for _u, t, s in handled] == [("InstallApplication", "Acknowledged"),
                                                ("ManagedApplicationList", "Acknowledged")]
    assert sim.managed_apps[IPA_ID].configuration == {"Key": "Value"}
    result = api.get(f"/api/v1/commands/{queued.json()['data']['id']}").json()["data"]["attributes"]
    assert result["status"] == "acknowledged"
    assert result["result"]["State"] == "Managed" and result["result"]["Identifier"] == IPA_ID
    apps = api.get(f"/api/v1/commands/{listed.json()['data']['id']}").json()["data"]["attributes"]["result"]
    assert apps["ManagedApplicationList"][IPA_ID]["Status"] == "Managed"
    assert sim.installed_version(IPA_ID) == "1.4"

    # RemoveApplication removes the app
    remove = api.post(f"/api/v1/devices/{sim.udid}/commands", json={
        "request_type": "RemoveApplication", "parameters": {"Identifier": IPA_ID}}).json()
    assert [(t, s) for _u, t, s in sim.run_session()] == [("RemoveApplication", "Acknowledged")]
    assert api.get(f"/api/v1/commands/{remove['data']['id']}").json()["data"]["attributes"]["status"] == \
        "acknowledged"
    assert IPA_ID not in sim.apps and sim.managed_apps == {}


def test_the_simulator_reads_the_servers_manifest(host) -> None:
    """The product's manifest (mdmserver.apps.manifests) is one the simulator accepts; the expected
    version and size come from this test's own package."""
    package = make_ipa("6.0", filler=25_000)
    sha = hashlib.sha256(package).hexdigest()
    app = App(id=1, source="enterprise", platform="ios", bundle_id=IPA_ID, name="Notes", version="6.0",
              package_kind="ipa", package_sha256=sha, package_size=len(package), download_token="tok",
              package_chunks={"size": 10_000, "sha256s": digests(package, 10_000, "sha256")})
    host.files["/apps/tok/manifest.plist"] = app_manifest(app, BASE)
    host.files[f"/apps/tok/{sha}.ipa"] = package
    sim = device(host)
    answer = run(sim, "InstallApplication", ManifestURL=f"{BASE}/apps/tok/manifest.plist")
    assert (answer["Identifier"], answer["State"]) == (IPA_ID, "Managed")
    assert sim.installed_version(IPA_ID) == "6.0" and sim.apps[IPA_ID]["BundleSize"] == len(package)


def test_settings_change_a_managed_apps_configuration_and_attributes(host) -> None:
    sim = device(host)
    run(sim, "InstallApplication", Identifier="com.example.maps", Configuration={"v": 1})
    answer = run(sim, "Settings", Settings=[
        {"Item": "ApplicationConfiguration", "Identifier": "com.example.maps", "Configuration": {"v": 2}},
        {"Item": "ApplicationAttributes", "Identifier": "com.example.maps", "Attributes": {"VPNUUID": "A-1"}},
        {"Item": "ApplicationConfiguration", "Identifier": "com.apple.Pages", "Configuration": {}},
        {"Item": "DeviceName", "DeviceName": "kiosk"},
    ])
    assert answer["Status"] == "Acknowledged"
    results = answer["Settings"]
    assert [r["Status"] for r in results] == ["Acknowledged", "Acknowledged", "Error", "Acknowledged"]
    assert results[2]["Identifier"] == "com.apple.Pages"
    app = sim.managed_apps["com.example.maps"]
    assert app.configuration == {"v": 2} and app.attributes == {"VPNUUID": "A-1"}

    # an item without its dictionary removes it
    run(sim, "Settings", Settings=[{"Item": "ApplicationConfiguration", "Identifier": "com.example.maps"}])
    assert app.configuration is None and managed_list(sim)["com.example.maps"]["HasConfiguration"] is False
    bad = run(sim, "Settings", Settings=[{"Item": "ApplicationAttributes", "Identifier": "com.example.maps",
                                          "Attributes": ["x"]}])
    assert bad["Status"] == "CommandFormatError" and app.attributes == {"VPNUUID": "A-1"}


def test_async_install_through_the_mdm_server(live, api, transport, http_host) -> None:
    """``Queued`` in the command's answer, then ``Installing`` and ``Managed`` in later lists."""
    url = http_host.publish("pkg.ipa", make_ipa("2.0"), identifier=IPA_ID, version="2.0")
    sim = SimulatedDevice(transport, platform="ipados", install_mode="async")
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200

    def queue(request_type: str, **parameters) -> str:
        response = api.post(f"/api/v1/devices/{sim.udid}/commands",
                            json={"request_type": request_type, "parameters": parameters})
        assert response.status_code == 201, response.text
        return response.json()["data"]["id"]

    def result(command_id: str) -> dict[str, Any]:
        return api.get(f"/api/v1/commands/{command_id}").json()["data"]["attributes"]["result"]

    install = queue("InstallApplication", ManifestURL=url)
    sim.run_session()
    assert result(install)["State"] == "Queued"
    statuses = []
    for _ in range(2):
        listed = queue("ManagedApplicationList", Identifiers=[IPA_ID])
        sim.run_session()
        statuses.append(result(listed)["ManagedApplicationList"][IPA_ID]["Status"])
    assert statuses == ["Installing", "Managed"] and sim.installed_version(IPA_ID) == "2.0"
