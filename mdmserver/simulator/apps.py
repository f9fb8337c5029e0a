"""The simulated device's apps: the manifest a device reads, the package checks it makes, and the state
of each managed app as ``ManagedApplicationList`` reports it.

A device, not a server: nothing here imports the server's packages. The manifest is read the way Apple's
installers read it (``items[0].assets`` with one ``software-package`` asset, ``sha256-size``/``sha256s``
and ``md5-size``/``md5s`` chunk hashes, ``metadata`` naming the bundle).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: a manifest is a small plist; anything larger is refused before parsing
MAX_MANIFEST_BYTES = 1024 * 1024
#: the most hash chunks a manifest may list (10 MiB chunks: 100 GiB of package)
MAX_CHUNKS = 10_000

#: the first bytes of the package each platform's installer accepts: an .ipa is a zip archive, a
#: .pkg (flat package) a xar archive
PACKAGE_MAGIC = {"ios": b"PK\x03\x04", "ipados": b"PK\x03\x04", "macos": b"xar!"}


class AppStatus(StrEnum):
    """The ``ManagedApplicationList`` statuses (and ``InstallApplication`` states) the simulator uses."""

    QUEUED = "Queued"
    INSTALLING = "Installing"
    UPDATING = "Updating"
    MANAGED = "Managed"
    FAILED = "Failed"


#: statuses of an install the device has not finished
PENDING = frozenset({AppStatus.QUEUED, AppStatus.INSTALLING, AppStatus.UPDATING})


class InstallMode(StrEnum):
    """``sync``: an install finishes while the device answers the command (``State`` ``Managed`` or
    ``Failed``). ``async``: the answer says ``Queued``; each later ``ManagedApplicationList`` (or
    ``SimulatedDevice.advance_installs``) moves it one step: ``Installing``/``Updating``, then the result."""

    SYNC = "sync"
    ASYNC = "async"


class InstallFailure(Exception):
    """Why the device could not install a package (kept on the app as ``failure``)."""


@dataclass(frozen=True)
class ManifestPackage:
    """What a manifest says about its package."""

    url: str
    identifier: str
    version: str | None
    title: str | None
    size: int | None
    sha256_size: int | None
    sha256s: tuple[str, ...]
    md5_size: int | None
    md5s: tuple[str, ...]


@dataclass
class DeviceApp:
    """One app the MDM server installed (or tried to): what the device was told and where it stands.
    ``managed`` is False only for a macOS install without ``InstallAsManaged`` (the Mac installs it as
    an ordinary app: it is not in ``ManagedApplicationList`` and ``RemoveApplication`` cannot remove it)."""

    identifier: str
    status: AppStatus
    request_type: str
    managed: bool = True
    name: str | None = None
    management_flags: int = 0
    configuration: dict[str, Any] | None = None
    attributes: dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    itunes_store_id: int | None = None
    external_version_identifier: int | None = None
    is_validated: bool = False
    #: the command's parameters as received (everything the server sent for this app)
    parameters: dict[str, Any] = field(default_factory=dict)
    #: why the last install failed (hash mismatch, fetch error…)
    failure: str | None = None
    #: an App Store install: the installed-application entry it produces once it finishes
    store_entry: dict[str, Any] | None = None
    #: an App Store install that the simulated store refuses (a ``store_apps`` hint ``Failure``)
    store_failure: str | None = None
    #: the package to fetch and check when the install runs (None: an App Store install)
    package: ManifestPackage | None = None


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InstallFailure(f"{what} must be a positive integer")
    return value


def _hashes(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or len(value) > MAX_CHUNKS:
        raise InstallFailure(f"{what} must be a non-empty list of at most {MAX_CHUNKS} hex digests")
    if not all(isinstance(h, str) for h in value):
        raise InstallFailure(f"{what} must hold strings")
    return tuple(h.lower() for h in value)


def parse_manifest(manifest: Any) -> ManifestPackage:
    """The package a manifest names; ``InstallFailure`` when it is not one Apple's installer accepts."""
    if not isinstance(manifest, dict):
        raise InstallFailure("the manifest is not a dictionary")
    items = manifest.get("items")
    if not isinstance(items, list) or not items or not isinstance(items[0], dict):
        raise InstallFailure("the manifest has no items")
    item = items[0]
    assets = item.get("assets")
    metadata = item.get("metadata")
    if not isinstance(assets, list) or not isinstance(metadata, dict):
        raise InstallFailure("the manifest item needs assets and metadata")
    packages = [a for a in assets if isinstance(a, dict) and a.get("kind") == "software-package"]
    if len(packages) != 1:
        raise InstallFailure("the manifest must name exactly one software-package asset")
    asset = packages[0]
    url = asset.get("url")
    if not isinstance(url, str) or not url:
        raise InstallFailure("the software-package asset has no url")
    identifier = metadata.get("bundle-identifier")
    if not isinstance(identifier, str) or not identifier:
        raise InstallFailure("the manifest metadata has no bundle-identifier")
    version, title, size = metadata.get("bundle-version"), metadata.get("title"), metadata.get("sizeInBytes")
    sha256_size = sha256s = md5_size = md5s = None
    if "sha256s" in asset or "sha256-size" in asset:
        sha256_size, sha256s = _int(asset.get("sha256-size"), "sha256-size"), _hashes(asset.get("sha256s"), "sha256s")
    if "md5s" in asset or "md5-size" in asset:
        md5_size, md5s = _int(asset.get("md5-size"), "md5-size"), _hashes(asset.get("md5s"), "md5s")
    return ManifestPackage(
        url=url, identifier=identifier,
        version=version if isinstance(version, str) else None,
        title=title if isinstance(title, str) else None,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        sha256_size=sha256_size, sha256s=sha256s or (), md5_size=md5_size, md5s=md5s or (),
    )


def chunk_digests(data: bytes, chunk_size: int, algorithm: str) -> list[str]:
    """The hex digest of each ``chunk_size`` slice of ``data`` (one digest for an empty package)."""
    if not data:
        return [hashlib.new(algorithm, b"").hexdigest()]
    return [hashlib.new(algorithm, data[i:i + chunk_size]).hexdigest() for i in range(0, len(data), chunk_size)]


def verify_package(data: bytes, package: ManifestPackage, platform: str, *, require_hashes: bool) -> None:
    """The checks an installer makes on a downloaded package: its format for this platform, and every
    chunk hash the manifest lists (``InstallFailure`` naming the first that fails)."""
    magic = PACKAGE_MAGIC[platform]
    if not data.startswith(magic):
        raise InstallFailure(f"the package is not a {'flat package (xar)' if platform == 'macos' else 'zip (.ipa)'}")
    if require_hashes and not package.sha256s and not package.md5s:
        raise InstallFailure("the manifest lists no package hashes")
    checks = (("sha256", package.sha256_size, package.sha256s), ("md5", package.md5_size, package.md5s))
    for algorithm, size, expected in checks:
        if not expected or size is None:
            continue
        actual = chunk_digests(data, size, algorithm)
        if len(actual) != len(expected):
            raise InstallFailure(f"{algorithm}s lists {len(expected)} chunks, the package has {len(actual)}")
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            if want != got:
                raise InstallFailure(f"{algorithm} of chunk {index} does not match the manifest")


def external_version_identifier(identifier: str, version: str) -> int:
    """A stable stand-in for the App Store's external version id: changes with the version."""
    return int(hashlib.sha256(f"{identifier}\0{version}".encode()).hexdigest()[:8], 16)


def installed_entry(
    identifier: str, name: str, version: str | None, size: int, *, store: bool, external_id: int | None,
) -> dict[str, Any]:
    """An ``InstalledApplicationList`` item for an app the device finished installing."""
    entry: dict[str, Any] = {"Identifier": identifier, "Name": name}
    if version is not None:
        entry["ShortVersion"] = entry["Version"] = version
    entry.update({
        "BundleSize": size, "DynamicSize": 0, "IsValidated": True, "Installing": False,
        "AppStoreVendable": store, "DeviceBasedVPP": False, "BetaApp": False, "AdHocCodeSigned": False,
    })
    if store:
        entry["HasUpdateAvailable"] = False
        if external_id is not None:
            entry["ExternalVersionIdentifier"] = external_id
    return entry
