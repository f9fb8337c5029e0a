"""SCEP enrollment challenges: one per enrollment profile, redeemed once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow


class ScepChallenge(db.Model):
    """A single-use challenge password handed out in one enrollment profile.

    Only the SHA-256 of the challenge is kept (the challenge itself exists in the profile alone).
    ``enrollment_id`` is what the issued certificate's subject carries. Once redeemed, the row
    records when, by which SCEP transaction, for which public key (SHA-256 of its
    SubjectPublicKeyInfo) and which certificate was issued, so a retransmitted request gets the
    same certificate and any other reuse is refused.
    """

    __tablename__ = "scep_challenges"
    __table_args__ = (
        Index("ix_scep_challenges_expires_at", "expires_at"),
        Index("ix_scep_challenges_transaction_id", "transaction_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    enrollment_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    transaction_id: Mapped[str | None] = mapped_column(String(128))
    public_key_sha256: Mapped[str | None] = mapped_column(String(64))
    certificate_fingerprint: Mapped[str | None] = mapped_column(String(64))
    #: lifetime (days) of the certificate this challenge gets, decided when the profile was issued
    lifetime_days: Mapped[float | None] = mapped_column(Float)
    #: the challenge of an identity renewal of the device with this UDID (``checkin/renewal.py``):
    #: the certificate it gets is marked so
    renews_udid: Mapped[str | None] = mapped_column(String(64))
