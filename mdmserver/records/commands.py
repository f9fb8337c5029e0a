"""The per-device command queue."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mdmserver.db import UTCDateTime, db, utcnow


class CommandStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    ERROR = "error"
    COMMAND_FORMAT_ERROR = "command_format_error"
    NOT_NOW = "not_now"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


#: Statuses of commands still waiting for a final answer (the active queue).
ACTIVE_STATUSES = (CommandStatus.QUEUED, CommandStatus.SENT, CommandStatus.NOT_NOW)
FINAL_STATUSES = tuple(s for s in CommandStatus if s not in ACTIVE_STATUSES)

_ACTIVE_SQL = "status IN ('queued', 'sent', 'not_now')"


class CommandParameters(db.Model):
    """A command dictionary (without ``RequestType``) as an XML property list, stored once per
    distinct body and addressed by its SHA-256: a profile queued for 100,000 devices is one row.

    Rows no longer referenced by any command are deleted by the retention purge.
    """

    __tablename__ = "command_parameters"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)


class Command(db.Model):
    """One MDM command for one device.

    ``parameters`` (read-only, from the shared :class:`CommandParameters` row) is the command
    dictionary as an XML property list, so data and date values survive; the device receives
    exactly these keys. Higher ``priority`` goes first, then the order of enqueueing (``id``).
    """

    __tablename__ = "commands"
    __table_args__ = (
        Index("ix_commands_device_created", "device_id", "created_at"),
        Index("ix_commands_status_completed", "status", "completed_at"),
        Index("ix_commands_parameters_id", "parameters_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    request_type: Mapped[str] = mapped_column(String(64), index=True)
    parameters_id: Mapped[int] = mapped_column(ForeignKey("command_parameters.id"))
    priority: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(24), default=CommandStatus.QUEUED.value)
    enqueued_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0)
    result: Mapped[bytes | None] = mapped_column(LargeBinary)
    error_chain: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)

    #: joined on load: every reader of a command (API, history) shows its parameters
    parameters_row: Mapped[CommandParameters] = relationship(lazy="joined", innerjoin=True)

    @property
    def parameters(self) -> bytes:
        return self.parameters_row.body


#: A device's active queue in delivery order (``priority DESC, id``), its status last: the next command is
#: the first entry of the device's range that is a candidate, with no sort of the device's queue.
Index(
    "ix_commands_active_queue",
    Command.device_id,
    Command.priority.desc(),
    Command.id,
    Command.status,
    postgresql_where=text(_ACTIVE_SQL),
    sqlite_where=text(_ACTIVE_SQL),
)
