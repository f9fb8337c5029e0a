"""The app catalogue: one entry per app and platform, App Store or enterprise (an uploaded package)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow


class AppSource(StrEnum):
    STORE = "store"  # installed from the App Store by iTunesStoreID and/or bundle id
    ENTERPRISE = "enterprise"  # a package uploaded to this server, served to the devices by it


class PackageKind(StrEnum):
    IPA = "ipa"  # iOS / iPadOS: InstallApplication with a ManifestURL
    PKG = "pkg"  # macOS: InstallEnterpriseApplication with a Manifest


class App(db.Model):
    """A catalogue entry. An enterprise entry holds its current package (content-addressed by SHA-256 in
    the data directory); uploading a newer build of the same bundle id replaces the package and bumps
    ``revision``, which is what makes assigned devices with an older one update."""

    __tablename__ = "apps"
    __table_args__ = (
        UniqueConstraint("platform", "bundle_id"),
        UniqueConstraint("platform", "itunes_store_id"),
        CheckConstraint("bundle_id IS NOT NULL OR itunes_store_id IS NOT NULL", name="identified"),
        Index("ix_apps_package_sha256", "package_sha256"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(16))  # AppSource
    platform: Mapped[str] = mapped_column(String(16))  # records.devices.Platform: ios (iPadOS too) or macos
    bundle_id: Mapped[str | None] = mapped_column(String(255))
    itunes_store_id: Mapped[int | None] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[str | None] = mapped_column(String(64))  # CFBundleShortVersionString
    build_version: Mapped[str | None] = mapped_column(String(64))  # CFBundleVersion
    minimum_os: Mapped[str | None] = mapped_column(String(32))
    package_kind: Mapped[str | None] = mapped_column(String(8))  # PackageKind, enterprise only
    package_sha256: Mapped[str | None] = mapped_column(String(64))
    package_size: Mapped[int | None] = mapped_column(BigInteger)
    package_name: Mapped[str | None] = mapped_column(String(255))  # the uploaded file's name
    #: macOS manifests carry the package's hashes per chunk: {"size": chunk size, "sha256s": [...]}
    package_chunks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: the unguessable part of the URLs devices fetch the manifest and the package from
    download_token: Mapped[str] = mapped_column(String(64), unique=True)
    revision: Mapped[int] = mapped_column(default=1)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
