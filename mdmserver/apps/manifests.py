"""The app manifest Apple's installers read: ``InstallApplication``'s ``ManifestURL`` (iOS, served as a
plist) and ``InstallEnterpriseApplication``'s ``Manifest`` (macOS, inline). One dictionary serves both:
one item, one ``software-package`` asset with the package's SHA-256 hashes per chunk, and the metadata
that names the bundle.
"""

from __future__ import annotations

from typing import Any

from mdmserver.apps.links import package_url
from mdmserver.apps.models import App

#: the chunk size of the per-chunk hashes stored with each package (``sha256-size``)
CHUNK_SIZE = 10 * 1024 * 1024


def app_manifest(app: App, public_url: str) -> dict[str, Any]:
    """The manifest of an enterprise app's current package; ``ValueError`` for an App Store entry."""
    if app.package_sha256 is None or app.package_kind is None or app.package_chunks is None:
        raise ValueError(f"app {app.id} has no package: an App Store app has no manifest")
    asset: dict[str, Any] = {
        "kind": "software-package",
        "url": package_url(public_url, app.download_token, app.package_sha256, app.package_kind),
        "sha256-size": int(app.package_chunks["size"]),
        "sha256s": list(app.package_chunks["sha256s"]),
    }
    metadata: dict[str, Any] = {"kind": "software", "title": app.name}
    if app.bundle_id is not None:
        metadata["bundle-identifier"] = app.bundle_id
    if app.version is not None or app.build_version is not None:
        metadata["bundle-version"] = app.version or app.build_version
    if app.package_size is not None:
        metadata["sizeInBytes"] = app.package_size
    return {"items": [{"assets": [asset], "metadata": metadata}]}
