"""Admission: auth sets (one per device identity and key) and preauthorizations."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, LargeBinary, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow


class AdmissionStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    PREAUTHORIZED = "preauthorized"
    # a device whose auth sets were decommissioned (Mender DELETE): refused from then on
    DECOMMISSIONED = "decommissioned"


#: Admission statuses that refuse every device request and every command (a new certificate does not
#: lift them).
REFUSED_STATUSES = frozenset({AdmissionStatus.REJECTED.value, AdmissionStatus.DECOMMISSIONED.value})


class AuthSet(db.Model):
    """Mender's auth set for an Apple enrollment.

    ``identity_data`` is the JSON string of ``{"model", "serial_number", "udid"}`` (keys sorted),
    ``pubkey`` the PEM public key of the identity certificate, ``id`` the SHA-256 hex of both.
    ``fingerprint`` names that certificate (SHA-256 of its DER; unknown for auth sets submitted
    through the Mender API). ``rebinding`` flags an enrollment that took the UDID over from
    another certificate (``previous_fingerprint``).

    ``held``: this certificate authenticated for the device while the previous binding was still
    valid, so the binding did not move; it moves when an administrator accepts this auth set. Until
    then the enrollment's device-channel ``TokenUpdate`` is kept here (``held_*``: push token,
    PushMagic, topic, the UnlockToken sealed as the device's would be) and has no effect on the device.
    """

    __tablename__ = "auth_sets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    identity_data: Mapped[str] = mapped_column(Text)
    pubkey: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), index=True)
    fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    previous_fingerprint: Mapped[str | None] = mapped_column(String(64))
    rebinding: Mapped[bool] = mapped_column(default=False, server_default=false())
    held: Mapped[bool] = mapped_column(default=False, server_default=false())
    held_push_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    held_push_magic: Mapped[str | None] = mapped_column(String(255))
    held_topic: Mapped[str | None] = mapped_column(String(255))
    held_unlock_token_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    held_awaiting_configuration: Mapped[bool | None] = mapped_column(Boolean)
    held_token_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Preauthorization(db.Model):
    """A serial number or UDID accepted on its first ``Authenticate`` (besides the configured list)."""

    __tablename__ = "admission_preauthorizations"
    __table_args__ = (UniqueConstraint("kind", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # serial_number | udid
    value: Mapped[str] = mapped_column(String(64))
    #: the identity it was preauthorized with (Mender's ``device_identity``, a JSON string), as given
    identity_data: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
