"""The command queue: enqueue (set-based), deliver, record results, cancel."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    String,
    and_,
    bindparam,
    delete,
    exists,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mdmserver.db import (
    DriverConnection,
    DriverStatement,
    UTCDateTime,
    delete_in_batches,
    session_driver,
    utcnow,
)
from mdmserver.errors import Conflict, NotFound, ServiceUnavailable, UnprocessableEntity
from mdmserver.pki.models import Certificate
from mdmserver.pki.secretbox import SecretBox, SecretBoxError
from mdmserver.protocol import catalogue
from mdmserver.protocol import secrets as secrets_policy
from mdmserver.protocol.plist import dump_plist, load_stored
from mdmserver.protocol.results import CommandResult, ResultStatus, command_envelope
from mdmserver.push import service as push_service
from mdmserver.records.admission import REFUSED_STATUSES, AdmissionStatus
from mdmserver.records.commands import ACTIVE_STATUSES, Command, CommandParameters, CommandStatus
from mdmserver.records.devices import Device
from mdmserver.selection.conditions import manageable, unmanaged_reason
from mdmserver.selection.sql import in_values, int_pairs, uuid_expression
from mdmserver.webhooks import events as webhook_events
from mdmserver.webhooks.events import DeviceRef

log = logging.getLogger("mdmserver.commands")

_RESULT_STATUS = {
    ResultStatus.ACKNOWLEDGED: CommandStatus.ACKNOWLEDGED,
    ResultStatus.ERROR: CommandStatus.ERROR,
    ResultStatus.COMMAND_FORMAT_ERROR: CommandStatus.COMMAND_FORMAT_ERROR,
    ResultStatus.NOT_NOW: CommandStatus.NOT_NOW,
}

#: Statuses offered on ``Idle``: everything still active, NotNow'd and unanswered ones included.
IDLE_CANDIDATES = tuple(s.value for s in ACTIVE_STATUSES)
#: Statuses offered right after a result: only commands not yet offered since the last Idle.
AFTER_RESULT_CANDIDATES = (CommandStatus.QUEUED.value,)


def offer_candidates(after_idle: bool) -> tuple[str, ...]:
    """The statuses a command is offered from: after an Idle every active one, after a result only those
    not offered since the last Idle."""
    return IDLE_CANDIDATES if after_idle else AFTER_RESULT_CANDIDATES

#: Stored parameters and results that hold secrets (InstallProfile, lock PINs, firmware and
#: recovery-lock passwords, bypass codes, FileVault keys) are this prefix + a secret-box blob.
SEALED_PREFIX = b"mdmserver:sealed:1:"
PARAMETERS_CONTEXT = b"mdmserver.commands.parameters"
RESULT_CONTEXT = b"mdmserver.commands.result"


def seal_blob(blob: bytes, box: SecretBox, context: bytes) -> bytes:
    return SEALED_PREFIX + box.encrypt(blob, associated_data=context)


def is_sealed(blob: bytes | None) -> bool:
    return blob is not None and bytes(blob[: len(SEALED_PREFIX)]) == SEALED_PREFIX


def open_blob(blob: bytes, box: SecretBox, context: bytes) -> bytes:
    """The plaintext of a stored parameters or result blob (sealed or not)."""
    if not is_sealed(blob):
        return blob
    try:
        return box.decrypt(bytes(blob[len(SEALED_PREFIX):]), associated_data=context)
    except SecretBoxError:
        log.error("a sealed command blob cannot be decrypted with the configured secret key")
        raise ServiceUnavailable(
            "a command secret cannot be decrypted with the configured secret key", code="secret_unreadable"
        ) from None


def validate_command(request_type: str, parameters: Any, *, pointer_prefix: str = "/parameters") -> dict:
    """Validate ``parameters`` for ``request_type`` with the catalogue; 422 with pointers otherwise."""
    try:
        return catalogue.validate_parameters(request_type, parameters)
    except catalogue.UnknownRequestType:
        raise UnprocessableEntity(
            f"unknown request type {request_type!r}", pointer=pointer_prefix.rsplit("/", 1)[0] + "/request_type"
        ) from None
    except catalogue.ParameterError as exc:
        raise UnprocessableEntity(
            "invalid command parameters",
            errors=[{"detail": e["detail"], "pointer": pointer_prefix + e["pointer"]} for e in exc.errors],
        ) from None


def store_parameters(
    session: Session, params: dict[str, Any], *, request_type: str | None = None, box: SecretBox
) -> int:
    """The id of the :class:`CommandParameters` row holding ``params``, inserted if absent."""
    return store_parameters_many(session, [params], request_types=[request_type], box=box)[0]


def _stored_form(params: dict[str, Any], request_type: str | None, box: SecretBox) -> tuple[str, bytes]:
    """(digest, body) of parameters as stored: a plist addressed by its SHA-256, or, when it holds
    secrets, sealed and addressed by a keyed digest (a plain hash of a PIN could be reversed)."""
    blob = dump_plist(params)
    if not secrets_policy.contains_secret(params, request_type=request_type):
        return hashlib.sha256(blob).hexdigest(), blob
    return box.digest(blob, context=PARAMETERS_CONTEXT), seal_blob(blob, box, PARAMETERS_CONTEXT)


def store_parameters_many(
    session: Session, bodies: Sequence[dict[str, Any]], *, request_types: Sequence[str | None] | None = None,
    box: SecretBox,
) -> list[int]:
    """The ids of the :class:`CommandParameters` rows holding ``bodies`` (as plists), in order,
    inserting the absent ones. Bodies holding secrets (per request type, ``request_types``) are
    sealed with the secret box ``box``.

    One ``SELECT`` when every body is already stored (the common case: the same profile queued
    again), else one more ``INSERT … ON CONFLICT DO NOTHING RETURNING`` (and a ``SELECT`` again
    for bodies a concurrent transaction inserted first). On PostgreSQL the rows are held
    ``FOR KEY SHARE`` until the transaction ends, so the retention purge cannot delete them before
    the commands referencing them are committed; SQLite transactions hold the database write lock.
    """
    blobs: dict[str, bytes] = {}
    digests = []
    kinds = list(request_types) if request_types is not None else [None] * len(bodies)
    for params, request_type in zip(bodies, kinds, strict=True):
        digest, blob = _stored_form(params, request_type, box)
        blobs.setdefault(digest, blob)
        digests.append(digest)
    table = CommandParameters.__table__
    dialect = session.get_bind().dialect.name
    ids: dict[str, int] = {}
    for _attempt in range(3):
        missing = [d for d in blobs if d not in ids]
        found = session.execute(
            select(table.c.sha256, table.c.id).where(table.c.sha256.in_(missing))
            .with_for_update(key_share=True, read=True)
        )
        ids.update({digest: id_ for digest, id_ in found})
        missing = [d for d in blobs if d not in ids]
        if not missing:
            return [ids[d] for d in digests]
        add = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
        created = session.execute(
            add.values([{"sha256": d, "body": blobs[d]} for d in missing])
            .on_conflict_do_nothing(index_elements=["sha256"])
            .returning(table.c.sha256, table.c.id)
        )
        ids.update({digest: id_ for digest, id_ in created})
        if len(ids) == len(blobs):
            return [ids[d] for d in digests]
    raise RuntimeError("command parameters were inserted and deleted concurrently three times")


@dataclass(frozen=True)
class QueuePlan:
    """One command to queue for every device that meets the ``enqueue_where`` condition (and this
    plan's own ``condition``, when given): parameters already validated."""

    request_type: str
    parameters: dict[str, Any]
    condition: ColumnElement[bool] | None = None
    priority: int = 0
    expires_at: datetime | None = None


def enqueue_where(
    session: Session,
    condition: ColumnElement[bool],
    plans: Sequence[QueuePlan],
    *,
    actor: str | None,
    now: datetime,
    box: SecretBox,
) -> list[list[tuple[int, str]]]:
    """Queue each plan's command for every device meeting ``condition`` (SQL on ``Device``), and
    owe those devices a push in the same transaction. The one writer of new ``commands`` rows.

    A constant number of statements whatever the number of devices: the parameters of every plan
    stored at once (:func:`store_parameters_many`, sealed when they hold secrets), one
    ``INSERT … SELECT … RETURNING`` per plan, one ``INSERT … SELECT`` into the push outbox.
    Returns, per plan, the ``(device_id, uuid)`` of the commands queued.
    """
    if not plans:
        return []
    parameter_ids = store_parameters_many(
        session, [plan.parameters for plan in plans], request_types=[plan.request_type for plan in plans], box=box
    )
    queued = []
    for plan, parameters_id in zip(plans, parameter_ids, strict=True):
        where = condition if plan.condition is None else and_(condition, plan.condition)
        source = select(
            uuid_expression(session),
            Device.id,
            literal(plan.request_type, String),
            literal(parameters_id),
            literal(plan.priority),
            literal(CommandStatus.QUEUED.value, String),
            literal(actor, String),
            literal(now, UTCDateTime),
            literal(plan.expires_at, UTCDateTime),
            literal(0),
        ).where(where)
        stmt = insert(Command).from_select(
            ["uuid", "device_id", "request_type", "parameters_id", "priority", "status", "enqueued_by",
             "created_at", "expires_at", "attempts"],
            source,
        ).returning(Command.device_id, Command.uuid)
        queued.append([(device_id, uuid) for device_id, uuid in session.execute(stmt)])
    touched = list(dict.fromkeys(device_id for rows in queued for device_id, _ in rows))
    if touched:
        # the wake-up push, in the same transaction (the push outbox coalesces per device)
        push_service.request_push(session, select(Device.id).where(in_values(session, Device.id, touched,
                                                                             integer=True)))
    return queued


def enqueue_each(
    session: Session,
    condition: ColumnElement[bool],
    request_type: str,
    parameters: Mapping[int, dict[str, Any]],
    *,
    actor: str | None,
    now: datetime,
    box: SecretBox,
) -> list[tuple[int, str]]:
    """Queue ``request_type`` for each device of ``parameters`` (device id → its own parameters, already
    validated) that meets ``condition``, and owe those devices a push: :func:`enqueue_where` for
    commands whose parameters differ per device (``DeclarativeManagement``'s per-device sync token).

    A constant number of statements whatever the number of devices: the distinct parameters stored at
    once (:func:`store_parameters_many`), one ``INSERT … SELECT … RETURNING`` joining the (device,
    parameters) pairs bound as one parameter, one ``INSERT … SELECT`` into the push outbox.
    Returns the ``(device_id, uuid)`` of the commands queued."""
    if not parameters:
        return []
    ids = list(parameters)
    parameter_ids = store_parameters_many(session, [parameters[d] for d in ids],
                                          request_types=[request_type] * len(ids), box=box)
    pairs = int_pairs(session, list(zip(ids, parameter_ids, strict=True)), ("device_id", "parameters_id"))
    source = select(
        uuid_expression(session),
        Device.id,
        literal(request_type, String),
        pairs.c.parameters_id,
        literal(0),
        literal(CommandStatus.QUEUED.value, String),
        literal(actor, String),
        literal(now, UTCDateTime),
        literal(None, UTCDateTime),
        literal(0),
    ).join(pairs, pairs.c.device_id == Device.id).where(condition)
    stmt = insert(Command).from_select(
        ["uuid", "device_id", "request_type", "parameters_id", "priority", "status", "enqueued_by",
         "created_at", "expires_at", "attempts"],
        source,
    ).returning(Command.device_id, Command.uuid)
    queued = [(device_id, uuid) for device_id, uuid in session.execute(stmt)]
    if queued:
        push_service.request_push(session, select(Device.id).where(
            in_values(session, Device.id, [d for d, _ in queued], integer=True)))
    return queued


def enqueue_commands(
    session: Session,
    device_ids: Iterable[int],
    request_type: str,
    parameters: dict[str, Any] | None,
    *,
    enqueued_by: str | None,
    priority: int = 0,
    expires_at: datetime | None = None,
    validate: bool = True,
    box: SecretBox,
) -> list[dict[str, Any]]:
    """Queue one command per device with :func:`enqueue_where` (no eligibility check: callers
    that need one use :func:`enqueue_for_device` or pass :func:`manageable` themselves).

    Parameters are validated against the catalogue unless ``validate`` is false (already validated
    by the caller). Returns ``[{"device_id", "uuid"}]`` in the order of the distinct ids (ids of
    devices that do not exist are skipped).
    """
    params = validate_command(request_type, parameters) if validate else dict(parameters or {})
    ids = list(dict.fromkeys(device_ids))
    if not ids:
        return []
    plan = QueuePlan(request_type, params, priority=priority, expires_at=expires_at)
    (rows,) = enqueue_where(session, in_values(session, Device.id, ids, integer=True), [plan],
                            actor=enqueued_by, now=utcnow(), box=box)
    by_device = dict(rows)
    return [{"device_id": device_id, "uuid": by_device[device_id]} for device_id in ids if device_id in by_device]


def request_push_if_queued(session: Session, device_id: int, *, reason: str = "command") -> None:
    """Owe a push to the device when it has commands waiting (after TokenUpdate or acceptance)."""
    waiting = (
        select(Command.device_id)
        .where(Command.device_id == device_id, Command.status.in_(IDLE_CANDIDATES))
        .limit(1)
    )
    push_service.request_push(session, waiting, reason=reason)


def get_command(session: Session, command_uuid: str) -> Command:
    command = session.scalar(select(Command).where(Command.uuid == command_uuid.upper()))
    if command is None:
        raise NotFound(f"no command with UUID {command_uuid}")
    return command


def cancel_command(session: Session, command_uuid: str, *, device_id: int | None = None) -> Command:
    """Cancel a queued command (of the device ``device_id``, when given: 404 if it is another
    device's); 409 once it has been sent (or finished)."""
    command = get_command(session, command_uuid)
    if device_id is not None and command.device_id != device_id:
        raise NotFound(f"device {device_id} has no command {command_uuid}")
    if command.status != CommandStatus.QUEUED:
        raise Conflict(f"command {command.uuid} is {command.status} and can no longer be cancelled")
    command.status = CommandStatus.CANCELLED.value
    command.completed_at = utcnow()
    session.flush()
    return command


def cancel_queue(session: Session, device_id: int) -> int:
    """Cancel every active command of a device (CheckOut); returns how many."""
    result = session.execute(
        update(Command)
        .where(Command.device_id == device_id, Command.status.in_(IDLE_CANDIDATES))
        .values(status=CommandStatus.CANCELLED.value, completed_at=utcnow())
    )
    return result.rowcount or 0


def cancel_secret_bearing(session: Session, device_id: int, box: SecretBox) -> list[str]:
    """Cancel the device's active commands whose delivery would hand over a secret (see
    :func:`catalogue.carries_secret`): one SELECT of its active queue, one UPDATE. Returns the
    cancelled commands' UUIDs."""
    rows = session.execute(
        select(Command.id, Command.uuid, Command.request_type, CommandParameters.body)
        .join(CommandParameters, CommandParameters.id == Command.parameters_id)
        .where(Command.device_id == device_id, Command.status.in_(IDLE_CANDIDATES))
    ).all()
    chosen = {}
    for command_id, command_uuid, request_type, body in rows:
        if is_sealed(body):  # sealed at rest because the secrets policy found a secret in it
            chosen[command_id] = command_uuid
            continue
        try:
            params = command_parameters(body, box)
        except ValueError:
            params = None  # unreadable parameters: treat as secret-bearing
        if params is None or catalogue.carries_secret(request_type, params):
            chosen[command_id] = command_uuid
    if chosen:
        session.execute(
            update(Command)
            .where(Command.id.in_(list(chosen)), Command.status.in_(IDLE_CANDIDATES))
            .values(status=CommandStatus.CANCELLED.value, completed_at=utcnow())
        )
    return list(chosen.values())


@dataclass
class ConnectState:
    """What the connect path needs of a device and its next command, read in one statement."""

    id: int
    udid: str
    identity_fingerprint: str | None
    admission_status: str
    last_seen_at: datetime | None
    command_id: int | None
    command_uuid: str | None
    command_request_type: str | None
    command_parameters: bytes | None
    #: when the certificate bound to the device was revoked (``None``: not revoked)
    identity_revoked_at: datetime | None = None
    serial_number: str | None = None
    #: the values of the ``probes`` read with the device (:func:`connect_state`)
    probes: tuple[bool, ...] = ()


_PLAIN_WORD = re.compile(r"[A-Za-z_]+")


def _sql_constants(words: Sequence[str]) -> list[ColumnElement[str]]:
    """Our status names and request types as SQL string literals (they are plain words: nothing to quote)."""
    for word in words:
        if not _PLAIN_WORD.fullmatch(word):
            raise ValueError(f"{word!r} is not a plain word")
    return [literal_column(f"'{word}'", String()) for word in words]


def _status_guard(statuses: Sequence[str]) -> ColumnElement[bool]:
    """An UPDATE's guard that its command, found by its id or UUID, still has one of ``statuses``: written
    on ``status || ''``, from which PostgreSQL cannot prove the predicate of a partial index. Written on
    ``status``, it made ``ix_commands_active_queue`` eligible, and with statistics taken while few commands
    were active (then a mass action) the planner chose to scan that whole index, every device's queue, for
    the one row its key's index finds (tests/checkin/test_plans_stale_statistics.py)."""
    return (Command.__table__.c.status + literal_column("''", String())).in_(_sql_constants(statuses))


@cache
def _connect_statement(after_idle: bool, probes: tuple[ColumnElement[bool], ...] = ()):
    """Built once per variant on the Core tables (statement construction and ORM compilation cost
    more than running it)."""
    devices, commands, stored = Device.__table__, Command.__table__, CommandParameters.__table__
    certificates = Certificate.__table__
    # the statuses are our constants, written into the SQL: an expanding IN parameter would be
    # rendered again at every execution
    candidates = offer_candidates(after_idle)
    statuses = _sql_constants(candidates)
    # SQLite uses the partial index ix_commands_active_queue only when the query repeats its WHERE term
    # as written; after a result the candidates are fewer (``queued``), so that term is written as well
    # (else SQLite reads the queued commands of every device through ix_commands_status_completed)
    in_active_queue = (
        (commands.c.status.in_(_sql_constants(IDLE_CANDIDATES)),) if candidates != IDLE_CANDIDATES else ())
    now = bindparam("now", type_=UTCDateTime())
    next_id = (
        select(commands.c.id)
        .where(
            commands.c.device_id == devices.c.id,
            *in_active_queue,
            commands.c.status.in_(statuses),
            or_(commands.c.expires_at.is_(None), commands.c.expires_at > now),
        )
        .order_by(commands.c.priority.desc(), commands.c.id)
        .limit(1)
        .correlate(devices)
        .scalar_subquery()
    )
    return (
        select(  # labelled as ConnectState's fields (_read_and_record_statement names them)
            devices.c.id, devices.c.udid, devices.c.identity_fingerprint, devices.c.admission_status,
            devices.c.last_seen_at, commands.c.id.label("command_id"), commands.c.uuid.label("command_uuid"),
            commands.c.request_type.label("command_request_type"), stored.c.body.label("command_parameters"),
            certificates.c.revoked_at.label("identity_revoked_at"), devices.c.serial_number,
            *(probe.label(f"probe_{index}") for index, probe in enumerate(probes)),
        )
        .select_from(
            devices.outerjoin(commands, commands.c.id == next_id)
            .outerjoin(stored, stored.c.id == commands.c.parameters_id)
            .outerjoin(certificates, certificates.c.fingerprint_sha256 == devices.c.identity_fingerprint)
        )
        .where(devices.c.udid == bindparam("udid"))
    )


@cache
def _connect_read(after_idle: bool, probes: tuple[ColumnElement[bool], ...]) -> DriverStatement:
    return DriverStatement(_connect_statement(after_idle, probes))


def connect_state(
    connection: DriverConnection, udid: str, *, after_idle: bool, now: datetime,
    probes: tuple[ColumnElement[bool], ...] = (),
) -> ConnectState | None:
    """The device named by ``udid`` and the command to offer next, in one indexed query on the driver's
    cursor: outside any transaction (:func:`mdmserver.db.untransacted`, the connect path's first read)
    or in the session's (:func:`mdmserver.db.session_driver`).

    After a result only commands not yet offered since the last Idle (``queued``) are candidates;
    on Idle every active command is (NotNow'd and unanswered ones are offered again). ``probes``:
    uncorrelated boolean expressions (e.g. EXISTS) read in the same statement, their values in
    ``ConnectState.probes``; pass the same tuple every time (the statement is built once per tuple).
    """
    row = _connect_read(after_idle, probes).first(connection, {"udid": udid, "now": now})
    return None if row is None else _connect_state_of(row, len(probes))


def _connect_state_of(row: Sequence[Any], probes: int) -> ConnectState:
    """The :class:`ConnectState` of a row of :func:`_connect_statement` (its last ``probes`` columns the probes)."""
    fields = len(row) - probes
    return ConnectState(*row[:fields], probes=tuple(bool(value) for value in row[fields:]))


def expire_due(session: Session, now: datetime, device_id: int | None = None) -> int:
    """Mark active commands whose ``expires_at`` has passed as expired (set-based; for the
    retention job, or one device). The connect path never delivers them either way."""
    stmt = (
        update(Command)
        .where(
            Command.status.in_(IDLE_CANDIDATES),
            Command.expires_at.is_not(None),
            Command.expires_at <= now,
        )
        .values(status=CommandStatus.EXPIRED.value, completed_at=now)
    )
    if device_id is not None:
        stmt = stmt.where(Command.device_id == device_id)
    return session.execute(stmt).rowcount or 0


def _mark_sent_statement(command: ColumnElement[int] | None = None):
    """The UPDATE that marks a command sent; ``command``: its id (default: the ``command_id`` parameter)."""
    table = Command.__table__
    return (
        update(table)
        .where(table.c.id == (bindparam("command_id") if command is None else command))
        .values(status=CommandStatus.SENT.value, sent_at=bindparam("sent_now", type_=UTCDateTime()),
                attempts=table.c.attempts + 1)
    )


@cache
def _mark_sent() -> DriverStatement:
    return DriverStatement(_mark_sent_statement())


def mark_sent(session: Session, command_id: int, now: datetime) -> None:
    _mark_sent().execute(session_driver(session), {"command_id": command_id, "sent_now": now})


@cache
def _mark_sent_if_active(statuses: tuple[str, ...]) -> DriverStatement:
    return DriverStatement(_mark_sent_statement().where(_status_guard(statuses)))


def mark_sent_if_active(session: Session, command_id: int, now: datetime, *, after_idle: bool) -> bool:
    """Mark a command read outside this transaction as sent, if it is still a candidate it was read as
    (:func:`offer_candidates`: not answered, canceled or expired meanwhile); whether it was."""
    marked = _mark_sent_if_active(offer_candidates(after_idle)).execute(
        session_driver(session), {"command_id": command_id, "sent_now": now})
    return marked.rowcount == 1


def command_parameters(command: Command | bytes, box: SecretBox) -> dict[str, Any]:
    """The parameters as the device receives them (unsealed)."""
    blob = command if isinstance(command, bytes) else command.parameters
    value = load_stored(open_blob(blob, box, PARAMETERS_CONTEXT))
    return value if isinstance(value, dict) else {}


def command_plist(command_uuid: str, request_type: str, stored: bytes, box: SecretBox) -> bytes:
    """The plist a device receives for a command whose stored parameters are ``stored`` (unsealed here).

    Everything after the ``CommandUUID`` depends only on the request type and the parameters, which the
    commands of a mass action share: for parameters stored in the clear it is rendered once and kept
    (:func:`_envelope_tail`, bounded); sealed ones (they hold a secret) are unsealed and rendered for
    every delivery and never kept."""
    if is_sealed(stored) or not _PLAIN_UUID.fullmatch(command_uuid):
        return dump_plist(command_envelope(command_uuid, request_type, command_parameters(stored, box)))
    return _ENVELOPE_HEAD + command_uuid.encode("ascii") + _envelope_tail(request_type, bytes(stored))


#: a command UUID written into the plist as it is (nothing to escape)
_PLAIN_UUID = re.compile(r"[0-9A-Fa-f-]{1,64}")
#: the plist's bytes before the command UUID (``CommandUUID`` is the envelope's first key)
_ENVELOPE_HEAD = dump_plist(command_envelope("0", "", {})).partition(b"<string>0</string>")[0] + b"<string>"


@lru_cache(maxsize=512)
def _envelope_tail(request_type: str, stored: bytes) -> bytes:
    """The plist's bytes after the command UUID, for parameters stored in the clear."""
    value = load_stored(stored)
    rendered = dump_plist(command_envelope("0", request_type, value if isinstance(value, dict) else {}))
    if not rendered.startswith(_ENVELOPE_HEAD + b"0</string>"):
        raise RuntimeError("the command plist does not begin with its CommandUUID")
    return rendered[len(_ENVELOPE_HEAD) + 1:]


@dataclass(frozen=True)
class RecordedResult:
    id: int
    request_type: str
    status: str


def _answer_update(final: bool, which: ColumnElement[bool] | None = None):
    """The UPDATE that stores a device's answer to its command, if that command still awaits one;
    ``which``: the condition naming that command (default: the ``command_uuid`` of the ``for_device``
    parameter)."""
    table = Command.__table__
    values: dict[str, Any] = {"status": bindparam("new_status")}
    if final:
        values.update(
            completed_at=bindparam("new_completed_at", type_=UTCDateTime()),
            result=bindparam("new_result", type_=table.c.result.type),
            error_chain=bindparam("new_error_chain", type_=table.c.error_chain.type),
        )
    if which is None:
        which = and_(table.c.uuid == bindparam("command_uuid"), table.c.device_id == bindparam("for_device"))
    return (
        update(table)
        .where(which, _status_guard(IDLE_CANDIDATES))
        .values(**values)
    )


@cache
def _record_statement(final: bool) -> DriverStatement:
    table = Command.__table__
    return DriverStatement(_answer_update(final).returning(table.c.id, table.c.request_type, table.c.status))


def _answer_values(result: CommandResult, raw: bytes, box: SecretBox) -> dict[str, Any]:
    """The parameters of :func:`_answer_update` for ``result`` (but ``for_device``); an answer holding
    secrets is sealed."""
    status = _RESULT_STATUS[result.status]
    values: dict[str, Any] = {"new_status": status.value, "command_uuid": (result.command_uuid or "").upper()}
    if status is not CommandStatus.NOT_NOW:
        values.update(
            new_completed_at=utcnow(),
            new_result=seal_blob(raw, box, RESULT_CONTEXT) if secrets_policy.contains_secret(result.raw) else raw,
            new_error_chain=[item.as_dict() for item in result.error_chain] or None,
        )
    return values


def record_result(
    session: Session, device_id: int, result: CommandResult, raw: bytes, box: SecretBox, *,
    serial_number: str | None = None, webhooks_listening: bool = True,
) -> RecordedResult | None:
    """Store a device's answer with one ``UPDATE … RETURNING``; an answer holding secrets (bypass
    code, FileVault key...) is sealed. Answers for unknown or already finished UUIDs change
    nothing: they are logged and ignored (``None``). A recorded answer is a ``command.*`` webhook
    event (no parameters, no result: only the command's identity, status and error chain), unless
    the caller knows that no webhook subscription listens (``webhooks_listening`` false)."""
    params = _answer_values(result, raw, box)
    params["for_device"] = device_id
    # on the driver's cursor, in the session's transaction (DriverStatement: SQLAlchemy's execution costs
    # more than this UPDATE)
    row = _record_statement(result.status is not ResultStatus.NOT_NOW).execute(session_driver(session), params).row
    if row is None:
        log.warning("result %s for command %s from device %s ignored: unknown or already finished",
                    result.status.value, result.command_uuid, device_id)
        return None
    recorded = RecordedResult(*row)
    if not webhooks_listening:
        return recorded
    webhook_events.command_answered(
        session, DeviceRef(device_id, result.udid, serial_number), command_uuid=params["command_uuid"],
        request_type=recorded.request_type, status=recorded.status,
        error_chain=[item.as_dict() for item in result.error_chain],
    )
    return recorded


@dataclass(frozen=True)
class RecordTerms:
    """When :func:`read_and_record` stores a result with its read: the device is bound to ``fingerprint``,
    that certificate is not revoked, the device's admission is not refused, its ``last_seen_at`` is later
    than ``seen_after`` (recording the visit is not due), none of the read's probes numbered in
    ``blocking_probes`` is true (e.g. a webhook subscription listens: the result is an event), and an acknowledged command is of none of ``skip_types``. Every
    term is one the caller would otherwise check on the read, or a reason the result needs more than
    this statement."""

    fingerprint: str
    seen_after: datetime
    blocking_probes: tuple[int, ...]
    skip_types: tuple[str, ...]


@cache
def _read_and_record_statement(
    result_status: CommandStatus, probes: tuple[ColumnElement[bool], ...], blocking_probes: tuple[int, ...],
    skip_types: tuple[str, ...],
) -> DriverStatement:
    """PostgreSQL: the read after a result (:func:`_connect_statement`) as a CTE, the answer's UPDATE and
    the guarded mark-sent UPDATE of the next command as data-modifying CTEs, all on one snapshot, and the
    read's row with whether each UPDATE wrote. The answer is stored only on :class:`RecordTerms`; the next
    command is marked only if the answer was stored, the device is accepted, ``deliver`` is true and it is
    not the answered command itself (a row updated twice in one statement would keep one of the two)."""
    table = Command.__table__
    device = _connect_statement(False, probes).cte("device")
    recordable = (
        select(device.c.id)
        .where(
            device.c.identity_fingerprint == bindparam("fingerprint"),
            device.c.identity_revoked_at.is_(None),
            device.c.admission_status.not_in(_sql_constants(sorted(REFUSED_STATUSES))),
            device.c.last_seen_at > bindparam("seen_after", type_=UTCDateTime()),
            *(~device.c[f"probe_{index}"] for index in blocking_probes),  # read once, with the device
        )
        .scalar_subquery()
    )
    # the answered command found by its UUID alone, and not inlined: no term the planner could serve with a
    # device's index instead of the unique one (with stale statistics it did, and read the device's queue)
    by_uuid = select(table.c.id, table.c.device_id, table.c.request_type).where(
        table.c.uuid == bindparam("command_uuid")).cte("answered_command").prefix_with("MATERIALIZED")
    skipped = (by_uuid.c.request_type.not_in(_sql_constants(skip_types)),) \
        if skip_types and result_status is CommandStatus.ACKNOWLEDGED else ()
    answered = select(by_uuid.c.id).where(by_uuid.c.device_id == recordable, *skipped).scalar_subquery()
    stored_answer = (
        _answer_update(result_status is not CommandStatus.NOT_NOW, table.c.id == answered)
        .returning(table.c.id)
        .cte("stored_answer")
    )
    next_command = (
        select(device.c.command_id)
        .where(device.c.admission_status == AdmissionStatus.ACCEPTED.value, bindparam("deliver", type_=Boolean()))
        .scalar_subquery()
    )
    sent_next = (
        _mark_sent_statement(next_command)
        .where(
            _status_guard(AFTER_RESULT_CANDIDATES),
            table.c.uuid != bindparam("command_uuid"),
            exists(select(stored_answer.c.id)),
        )
        .returning(table.c.id)
        .cte("sent_next")
    )
    return DriverStatement(select(
        *device.c, exists(select(stored_answer.c.id)).label("recorded"), exists(select(sent_next.c.id)).label("offered"),
    ))


@dataclass(frozen=True)
class ReadAndRecord:
    """What :func:`read_and_record` read and wrote."""

    state: ConnectState | None
    #: the answer was stored (else nothing was written)
    recorded: bool
    #: ``state``'s next command was marked sent
    offered: bool


def read_and_record(
    connection: DriverConnection, result: CommandResult, raw: bytes, box: SecretBox, *, now: datetime,
    probes: tuple[ColumnElement[bool], ...], terms: RecordTerms, deliver: bool,
) -> ReadAndRecord:
    """PostgreSQL only: the read after a result (:func:`connect_state`), and, on ``terms``, the answer
    stored (as :func:`record_result`, without its webhook event: ``terms.blocking_probes`` keep it out when one
    would be due) with the next command marked sent (``deliver``: if the device may receive it), in one
    statement. On a connection outside any transaction (:func:`mdmserver.db.untransacted`) the statement
    is its own transaction: no BEGIN or COMMIT, and neither write happens without the other."""
    if connection.dialect.name != "postgresql":
        raise ValueError("read_and_record needs PostgreSQL (data-modifying WITH)")
    status = _RESULT_STATUS[result.status]
    values = _answer_values(result, raw, box)
    values.update(udid=result.udid, now=now, fingerprint=terms.fingerprint, seen_after=terms.seen_after,
                  deliver=deliver, sent_now=now)
    row = _read_and_record_statement(status, probes, terms.blocking_probes, terms.skip_types).first(connection, values)
    if row is None:
        return ReadAndRecord(None, recorded=False, offered=False)
    *read, recorded, offered = row
    return ReadAndRecord(_connect_state_of(read, len(probes)), recorded=bool(recorded), offered=bool(offered))


def result_value(command: Command, box: SecretBox) -> Any:
    """The device's stored answer (unsealed), or None."""
    if command.result is None:
        return None
    try:
        return load_stored(open_blob(command.result, box, RESULT_CONTEXT))
    except ValueError:
        return None


def public_result(command: Command, *, reveal: bool = False, box: SecretBox) -> dict[str, Any] | None:
    """The stored answer as JSON-safe data; secrets redacted unless ``reveal``."""
    value = result_value(command, box)
    if value is None:
        return None
    return catalogue.public_parameters(value if reveal else secrets_policy.redact(value, request_type=None))


def public_parameters(command: Command, *, reveal: bool = False, box: SecretBox) -> dict[str, Any]:
    """The parameters as JSON-safe data; secrets redacted unless ``reveal``."""
    params = command_parameters(command, box)
    if not reveal:
        params = secrets_policy.redact(params, request_type=command.request_type)
    return catalogue.public_parameters(params)


def enqueue_for_device(
    session: Session,
    device,
    request_type: str,
    parameters: dict[str, Any] | None,
    *,
    enqueued_by: str | None,
    priority: int = 0,
    expires_at: datetime | None = None,
    pointer_base: str = "/data/attributes",
    box: SecretBox,
) -> Command:
    """Queue one command for one device after the checks an administrator expects:
    known request type, applicable to the device's platform and supervision, valid parameters,
    device still managed (see :func:`manageable`), and for ClearPasscode a stored UnlockToken (409 otherwise).
    """
    try:
        spec = catalogue.get_spec(request_type)
    except catalogue.UnknownRequestType:
        raise UnprocessableEntity(f"unknown request type {request_type!r}",
                                  pointer=f"{pointer_base}/request_type") from None
    reason = session.scalar(select(unmanaged_reason()).where(Device.id == device.id))
    if reason is not None:
        raise Conflict(f"device {device.id} cannot receive commands: {reason}")
    applicable, reason = spec.applies_to(device.platform, device.is_supervised)
    if not applicable:
        raise UnprocessableEntity(reason, pointer=f"{pointer_base}/request_type")
    if request_type == "ClearPasscode" and device.unlock_token_encrypted is None:
        raise Conflict(f"device {device.id} has no UnlockToken; ClearPasscode cannot be sent")
    params = validate_command(request_type, parameters, pointer_prefix=f"{pointer_base}/parameters")
    plan = QueuePlan(request_type, params, priority=priority, expires_at=expires_at)
    (created,) = enqueue_where(session, and_(Device.id == device.id, manageable()), [plan], actor=enqueued_by,
                               now=utcnow(), box=box)
    return get_command(session, created[0][1])


def delete_for_device(session: Session, device_id: int) -> None:
    """Delete every command of a device (the device is being forgotten)."""
    session.execute(delete(Command).where(Command.device_id == device_id))


def purge_finished(
    session: Session, *, retention_days: int, now: datetime | None = None, batch_size: int = 5000,
    commit: bool = True,
) -> int:
    """Delete finished commands completed more than ``retention_days`` ago, in batches (each its own
    transaction when ``commit``), so the queue table does not grow without bound. Active commands
    past their expiry are marked expired first. Returns how many rows were deleted."""
    now = now or utcnow()
    expire_due(session, now)
    cutoff = now - timedelta(days=retention_days)
    final = [s.value for s in CommandStatus if s.value not in IDLE_CANDIDATES]
    total = delete_in_batches(session, Command, and_(Command.status.in_(final), Command.completed_at < cutoff),
                              batch_size=batch_size, commit=commit)
    purge_unreferenced_parameters(session, batch_size=batch_size, commit=commit)
    return total


def purge_unreferenced_parameters(session: Session, *, batch_size: int = 5000, commit: bool = True) -> int:
    """Delete parameter rows no command references, in batches; returns how many.

    On PostgreSQL rows held by an enqueue still in flight (``FOR KEY SHARE``) are skipped; a row
    that gains a reference between the check and the delete makes that batch's ``DELETE`` fail the
    foreign key, which is rolled back to its savepoint and left for the next purge.
    """
    table = CommandParameters.__table__
    unreferenced = ~exists().where(Command.__table__.c.parameters_id == table.c.id)
    total = 0
    while True:
        batch = (
            select(table.c.id).where(unreferenced).limit(batch_size)
            .with_for_update(skip_locked=True).scalar_subquery()
        )
        try:
            with session.begin_nested():
                deleted = session.execute(delete(table).where(table.c.id.in_(batch))).rowcount or 0
        except IntegrityError:
            log.info("command parameters gained a reference while being purged; left for the next purge")
            deleted = 0
        total += deleted
        if commit:
            session.commit()
        if deleted < batch_size:
            return total
