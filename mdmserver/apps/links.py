"""The URLs a device fetches an enterprise app from.

Both carry the app's ``download_token`` (an unguessable 256-bit value): the system process that installs
an app on iOS (and macOS's installer for ``InstallEnterpriseApplication``) fetches them without the
device's MDM identity, so a client certificate cannot be asked for; the token is the capability, and a
new upload does not change it (a device queued with the previous revision still finds the manifest).
"""

from __future__ import annotations

#: the path prefix of the device-facing app downloads, served outside /api (no admin token)
DOWNLOAD_PREFIX = "/apps"


def manifest_url(public_url: str, download_token: str) -> str:
    """The app manifest plist (``InstallApplication``'s ``ManifestURL``)."""
    return f"{public_url.rstrip('/')}{DOWNLOAD_PREFIX}/{download_token}/manifest.plist"


def package_url(public_url: str, download_token: str, sha256: str, package_kind: str) -> str:
    """The package itself (the manifest's ``software-package`` asset); named by its content hash."""
    return f"{public_url.rstrip('/')}{DOWNLOAD_PREFIX}/{download_token}/{sha256}.{package_kind}"
