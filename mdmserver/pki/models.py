from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mdmserver.db import UTCDateTime, db, utcnow


class RSAPrivateKey(db.Model):
    """A private key (RSA or EC, the name is commandment's), encrypted at rest with the secret box."""

    __tablename__ = "rsa_private_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    key_type: Mapped[str] = mapped_column(String(10))  # rsa | ec
    key_size: Mapped[int]
    encrypted_pem: Mapped[bytes] = mapped_column(LargeBinary)
    public_key_pem: Mapped[str] = mapped_column(Text)
    #: what a key without a certificate yet is for (``push_request``); None for the others
    purpose: Mapped[str | None] = mapped_column(String(30), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Certificate(db.Model):
    """An X.509 certificate we issued or imported; ``purpose`` says what it is for."""

    __tablename__ = "certificates"

    id: Mapped[int] = mapped_column(primary_key=True)
    purpose: Mapped[str] = mapped_column(String(30), index=True)
    subject: Mapped[str] = mapped_column(String(500))
    issuer: Mapped[str] = mapped_column(String(500))
    common_name: Mapped[str | None] = mapped_column(String(255))
    serial: Mapped[str] = mapped_column(String(64))
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    not_after: Mapped[datetime] = mapped_column(UTCDateTime)
    fingerprint_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    pem_data: Mapped[str] = mapped_column(Text)
    is_ca: Mapped[bool] = mapped_column(default=False)
    private_key_id: Mapped[int | None] = mapped_column(ForeignKey("rsa_private_keys.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: set when the certificate may no longer prove anything (its device was deleted)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: a device identity issued to renew the identity of the device with this UDID, through that
    #: device's own command channel: its Authenticate moves the device's binding without a hold
    renews_udid: Mapped[str | None] = mapped_column(String(64), index=True)

    private_key: Mapped[RSAPrivateKey | None] = relationship(lazy="joined")
