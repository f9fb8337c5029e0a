"""Enrolled devices, their channels and the inventory built from command results."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow


class Platform(StrEnum):
    IOS = "ios"
    IPADOS = "ipados"
    MACOS = "macos"
    TVOS = "tvos"
    WATCHOS = "watchos"
    VISIONOS = "visionos"


class Device(db.Model):
    """One Apple device, identified by its UDID (or a user enrollment's EnrollmentID).

    ``identity_fingerprint`` binds the enrollment identity certificate (SHA-256 of its DER) to the
    device: every request after ``Authenticate`` must be signed with it. ``admission_status``
    mirrors the device's current auth set so the connect path needs no join.
    """

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    udid: Mapped[str] = mapped_column(String(64), unique=True)
    serial_number: Mapped[str | None] = mapped_column(String(64), index=True)
    platform: Mapped[str | None] = mapped_column(String(16), index=True)
    model: Mapped[str | None] = mapped_column(String(100))
    model_name: Mapped[str | None] = mapped_column(String(100))
    product_name: Mapped[str | None] = mapped_column(String(100))
    os_version: Mapped[str | None] = mapped_column(String(32))
    build_version: Mapped[str | None] = mapped_column(String(32))
    device_name: Mapped[str | None] = mapped_column(String(255))
    imei: Mapped[str | None] = mapped_column(String(32))
    meid: Mapped[str | None] = mapped_column(String(32))
    topic: Mapped[str | None] = mapped_column(String(255))

    # identity and admission
    identity_fingerprint: Mapped[str | None] = mapped_column(String(64), unique=True)
    admission_status: Mapped[str] = mapped_column(String(20), default="pending")

    # push channel (device channel; user channels are DeviceUser rows)
    push_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    push_magic: Mapped[str | None] = mapped_column(String(255))
    token_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    awaiting_configuration: Mapped[bool] = mapped_column(default=False)
    unlock_token_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    bootstrap_token_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)

    # enrollment life cycle
    enrolled: Mapped[bool] = mapped_column(default=False)
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unenrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    # inventory (DeviceInformation)
    capacity_gb: Mapped[float | None] = mapped_column(Float)
    available_capacity_gb: Mapped[float | None] = mapped_column(Float)
    battery_level: Mapped[float | None] = mapped_column(Float)
    is_supervised: Mapped[bool | None] = mapped_column(Boolean)
    wifi_mac: Mapped[str | None] = mapped_column(String(32))
    bluetooth_mac: Mapped[str | None] = mapped_column(String(32))
    activation_lock_enabled: Mapped[bool | None] = mapped_column(Boolean)
    lost_mode_enabled: Mapped[bool | None] = mapped_column(Boolean)
    find_my_enabled: Mapped[bool | None] = mapped_column(Boolean)
    phone_number: Mapped[str | None] = mapped_column(String(64))
    iccid: Mapped[str | None] = mapped_column(String(64))
    hostname: Mapped[str | None] = mapped_column(String(255))
    local_hostname: Mapped[str | None] = mapped_column(String(255))
    device_information: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    inventory_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: when the device last answered AvailableOSUpdates (NULL: what it is offered is not known yet)
    os_updates_reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: when a device-reported field that device groups filter on last changed (see
    #: ``devices.service.GROUP_FILTER_COLUMNS``): such a change reconciles the device's assignments
    group_fields_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # asset fields (set by administrators)
    asset_tag: Mapped[str | None] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    office: Mapped[str | None] = mapped_column(String(255))
    asset_owner: Mapped[str | None] = mapped_column(String(255))
    purchase_type: Mapped[str | None] = mapped_column(String(50))
    purchase_date: Mapped[date | None] = mapped_column(Date)
    purchase_price: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    purchase_order_number: Mapped[str | None] = mapped_column(String(100))
    warranty_number: Mapped[str | None] = mapped_column(String(100))
    warranty_type: Mapped[str | None] = mapped_column(String(100))
    warranty_expiration: Mapped[date | None] = mapped_column(Date)

    @property
    def has_unlock_token(self) -> bool:
        return self.unlock_token_encrypted is not None


class DeviceUser(db.Model):
    """A user channel (macOS ``TokenUpdate`` with ``UserID``)."""

    __tablename__ = "device_users"
    __table_args__ = (UniqueConstraint("device_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(64))
    short_name: Mapped[str | None] = mapped_column(String(255))
    long_name: Mapped[str | None] = mapped_column(String(255))
    push_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    push_magic: Mapped[str | None] = mapped_column(String(255))
    not_on_console: Mapped[bool | None] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DeviceSecurityInfo(db.Model):
    __tablename__ = "device_security_info"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    passcode_present: Mapped[bool | None] = mapped_column(Boolean)
    passcode_compliant: Mapped[bool | None] = mapped_column(Boolean)
    passcode_compliant_with_profiles: Mapped[bool | None] = mapped_column(Boolean)
    hardware_encryption_caps: Mapped[int | None] = mapped_column(Integer)
    fde_enabled: Mapped[bool | None] = mapped_column(Boolean)
    fde_has_personal_recovery_key: Mapped[bool | None] = mapped_column(Boolean)
    fde_has_institutional_recovery_key: Mapped[bool | None] = mapped_column(Boolean)
    sip_enabled: Mapped[bool | None] = mapped_column(Boolean)
    firewall_enabled: Mapped[bool | None] = mapped_column(Boolean)
    enrolled_via_dep: Mapped[bool | None] = mapped_column(Boolean)
    user_approved_enrollment: Mapped[bool | None] = mapped_column(Boolean)
    is_user_enrollment: Mapped[bool | None] = mapped_column(Boolean)
    recovery_lock_enabled: Mapped[bool | None] = mapped_column(Boolean)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class InstalledProfile(db.Model):
    __tablename__ = "device_installed_profiles"
    __table_args__ = (Index("ix_device_installed_profiles_device_identifier", "device_id", "identifier"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    identifier: Mapped[str | None] = mapped_column(String(255))
    uuid: Mapped[str | None] = mapped_column(String(64))
    display_name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    organization: Mapped[str | None] = mapped_column(String(255))
    version: Mapped[int | None] = mapped_column(Integer)
    is_managed: Mapped[bool | None] = mapped_column(Boolean)
    is_encrypted: Mapped[bool | None] = mapped_column(Boolean)
    removal_disallowed: Mapped[bool | None] = mapped_column(Boolean)
    has_removal_passcode: Mapped[bool | None] = mapped_column(Boolean)
    payloads: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InstalledApplication(db.Model):
    __tablename__ = "device_installed_applications"
    __table_args__ = (Index("ix_device_installed_applications_device_identifier", "device_id", "identifier"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    identifier: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    version: Mapped[str | None] = mapped_column(String(100))
    short_version: Mapped[str | None] = mapped_column(String(100))
    bundle_size: Mapped[int | None] = mapped_column(db.BigInteger)
    dynamic_size: Mapped[int | None] = mapped_column(db.BigInteger)
    external_version_identifier: Mapped[int | None] = mapped_column(db.BigInteger)
    is_validated: Mapped[bool | None] = mapped_column(Boolean)
    installing: Mapped[bool | None] = mapped_column(Boolean)
    app_store_vendable: Mapped[bool | None] = mapped_column(Boolean)
    beta_app: Mapped[bool | None] = mapped_column(Boolean)
    has_update_available: Mapped[bool | None] = mapped_column(Boolean)
    managed_status: Mapped[str | None] = mapped_column(String(50))
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeviceCertificate(db.Model):
    __tablename__ = "device_certificates"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    common_name: Mapped[str | None] = mapped_column(String(500))
    is_identity: Mapped[bool] = mapped_column(default=False)
    subject: Mapped[str | None] = mapped_column(Text)
    issuer: Mapped[str | None] = mapped_column(Text)
    serial_number: Mapped[str | None] = mapped_column(String(100))
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    not_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fingerprint_sha256: Mapped[str | None] = mapped_column(String(64))
    parse_error: Mapped[str | None] = mapped_column(String(255))
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeviceLocation(db.Model):
    """Location history (``DeviceLocation`` answers, lost mode)."""

    __tablename__ = "device_locations"
    __table_args__ = (Index("ix_device_locations_device_received", "device_id", "received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    latitude: Mapped[float] = mapped_column(Float)
    longitude: Mapped[float] = mapped_column(Float)
    horizontal_accuracy: Mapped[float | None] = mapped_column(Float)
    vertical_accuracy: Mapped[float | None] = mapped_column(Float)
    altitude: Mapped[float | None] = mapped_column(Float)
    speed: Mapped[float | None] = mapped_column(Float)
    course: Mapped[float | None] = mapped_column(Float)
    timestamp: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AvailableOSUpdate(db.Model):
    __tablename__ = "device_os_updates"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    product_key: Mapped[str | None] = mapped_column(String(255))
    human_readable_name: Mapped[str | None] = mapped_column(String(255))
    product_name: Mapped[str | None] = mapped_column(String(255))
    version: Mapped[str | None] = mapped_column(String(64))
    build: Mapped[str | None] = mapped_column(String(64))
    download_size: Mapped[int | None] = mapped_column(db.BigInteger)
    install_size: Mapped[int | None] = mapped_column(db.BigInteger)
    is_critical: Mapped[bool | None] = mapped_column(Boolean)
    is_config_data_update: Mapped[bool | None] = mapped_column(Boolean)
    is_firmware_update: Mapped[bool | None] = mapped_column(Boolean)
    is_major_os_update: Mapped[bool | None] = mapped_column(Boolean)
    restart_required: Mapped[bool | None] = mapped_column(Boolean)
    allows_install_later: Mapped[bool | None] = mapped_column(Boolean)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OSUpdateProgress(StrEnum):
    """``OSUpdateStatus[].Status`` (Apple's enum)."""

    IDLE = "Idle"
    DOWNLOADING = "Downloading"
    INSTALLING = "Installing"


class DeviceOSUpdateStatus(db.Model):
    """The updates in progress on a device, as its last ``OSUpdateStatus`` answer lists them (replaced
    whole by each answer: an empty answer means nothing is downloading or installing)."""

    __tablename__ = "device_os_update_statuses"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    product_key: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(16))  # OSUpdateProgress, or what the device said
    is_downloaded: Mapped[bool | None] = mapped_column(Boolean)
    download_percent_complete: Mapped[float | None] = mapped_column(Float)  # 0.0 to 1.0
    max_deferrals: Mapped[int | None] = mapped_column(Integer)
    deferrals_remaining: Mapped[int | None] = mapped_column(Integer)
    next_scheduled_install: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
