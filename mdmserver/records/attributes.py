"""Custom attributes: free-form name/value pairs an administrator attaches to a device."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mdmserver.db import UTCDateTime, db, utcnow

#: An attribute name: what ``filter[custom.<name>]`` and the ``custom.<name>`` facet accept.
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}$")
#: The values one attribute of a device holds at most.
MAX_VALUES = 50


class CustomAttribute(db.Model):
    """One value of a device's attribute: an attribute holds a list of strings (Ivanti's
    ``{"cityid": ["SF"]}``), one row per value, so ``filter[custom.<name>]=<value>`` matches a device
    having that value among others and a facet counts the device under each of its values."""

    __tablename__ = "device_custom_attributes"
    __table_args__ = (
        UniqueConstraint("device_id", "name", "value"),
        # filter[custom.<name>]=<value> and the bulk delete by name
        Index("ix_device_custom_attributes_name_value", "name", "value"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(512))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
