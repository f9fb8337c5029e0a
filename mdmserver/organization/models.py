from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow


class Organization(db.Model):
    """The one organization this server manages devices for (commandment's singleton)."""

    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(64))
    address: Mapped[str | None] = mapped_column(Text)
    payload_prefix: Mapped[str] = mapped_column(String(255))
    x509_ou: Mapped[str | None] = mapped_column(String(64))
    x509_o: Mapped[str | None] = mapped_column(String(64))
    x509_st: Mapped[str | None] = mapped_column(String(128))
    x509_c: Mapped[str | None] = mapped_column(String(2))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
