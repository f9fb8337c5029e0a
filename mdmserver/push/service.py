"""APNs push: certificate import, the outbox (``request_push``), push status, re-push and purge.

The worker that drains the outbox lives in :mod:`mdmserver.push.worker`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509 as cx509
from cryptography.x509.oid import NameOID
from sqlalchemy import (
    Select,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from mdmserver.db import UTCDateTime, isoformat, upsert_insert, utcnow
from mdmserver.errors import Conflict, NotFound, UnprocessableEntity
from mdmserver.pki import push_request as preq
from mdmserver.pki import x509 as px
from mdmserver.pki.secretbox import SecretBox, SecretBoxError
from mdmserver.pki.service import (
    KEY_PURPOSE_PUSH_REQUEST,
    find_private_key,
    load_private_key,
    store_private_key,
)
from mdmserver.push.apns import PushIdentity
from mdmserver.records.commands import ACTIVE_STATUSES, Command
from mdmserver.records.devices import Device
from mdmserver.records.push import (
    FINISHED_STATUSES,
    DevicePushState,
    PushCertificate,
    PushCounter,
    PushRequest,
    PushStatus,
)
from mdmserver.selection.conditions import push_blocker, pushable

log = logging.getLogger("mdmserver.push")

MDM_TOPIC_PREFIX = "com.apple.mgmt."
EXPIRY_WARNING_DAYS = 30
#: Largest ``IN (…)`` list sent in one statement.
CHUNK = 5000
#: Active command statuses that make a device worth waking up.
_ACTIVE_COMMAND_STATUSES = tuple(s.value for s in ACTIVE_STATUSES)


# --- push certificate ----------------------------------------------------------------------------


def _aad(fingerprint: str) -> bytes:
    return f"push_certificate:{fingerprint}".encode()


def _topic_of(cert: cx509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    if not values:
        return None
    value = values[0].value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _parse_upload(
    data: bytes, key: bytes | None, password: bytes | None
) -> tuple[cx509.Certificate, Any]:
    """(certificate, private key) from PEM (one or two files) or PKCS#12; 422 when unusable."""
    if not data:
        raise UnprocessableEntity("the push certificate file is empty", pointer="/file")
    if b"-----BEGIN" in data:
        try:
            cert = px.load_certificate(data)
        except px.PKIError:
            raise UnprocessableEntity(
                "the PEM file holds no readable certificate", pointer="/file"
            ) from None
        key_source = key if key else data
        if b"PRIVATE KEY-----" not in key_source:
            return cert, None
        if b"ENCRYPTED" in key_source and not password:
            raise UnprocessableEntity("the private key is encrypted: give its password", pointer="/password")
        try:
            private_key = px.key_from_pem(key_source, password)
        except px.PKIError:
            raise UnprocessableEntity(
                "the private key cannot be read (wrong password, or not an RSA/EC key)", pointer="/key"
            ) from None
        return cert, private_key
    # Binary: PKCS#12 (the usual export from Keychain Access), or a DER certificate plus a key.
    if key:
        try:
            cert = px.load_certificate(data)
        except px.PKIError:
            raise UnprocessableEntity("the certificate file cannot be read", pointer="/file") from None
        try:
            return cert, px.key_from_pem(key, password)
        except px.PKIError:
            raise UnprocessableEntity(
                "the private key cannot be read (wrong password, or not an RSA/EC key)", pointer="/key"
            ) from None
    try:
        cert, private_key, _extra = px.load_pkcs12(data, password)
    except px.IncompletePKCS12 as exc:
        raise UnprocessableEntity(str(exc), pointer="/file") from None
    except px.PKIError:
        try:  # a DER certificate alone: its key is the stored request key
            return px.cert_from_der(data), None
        except px.PKIError:
            pass
        raise UnprocessableEntity(
            "not a PEM certificate or a PKCS#12 file, or the password is wrong", pointer="/file"
        ) from None
    return cert, private_key


def _request_key(session: Session, cert: cx509.Certificate, box: SecretBox):
    """The key of the push certificate request (``push-cert request``) the certificate answers."""
    row = find_private_key(session, px.public_key_pem(cert), KEY_PURPOSE_PUSH_REQUEST)
    if row is None:
        raise UnprocessableEntity(
            "no private key: give the key in the same PEM file or as a separate key file; no push "
            "certificate request made here (`mdmserver push-cert request`) has this certificate's key",
            pointer="/key",
        )
    try:
        return load_private_key(row, box)
    except SecretBoxError:
        raise UnprocessableEntity(
            "the stored request key cannot be decrypted (the secret key file changed?)", pointer="/key"
        ) from None


def create_push_request(
    session: Session, *, box: SecretBox, common_name: str, organization: str | None = None,
    email: str | None = None, bits: int = 2048,
) -> tuple[int, Any]:
    """A new RSA key for the APNs push certificate, stored encrypted with ``box`` (purpose
    ``push_request``), and its CSR: (key row id, CSR). ``push-cert import`` binds the certificate
    Apple returns to this key by its public key."""
    key = px.generate_private_key("rsa", bits)
    row = store_private_key(session, key, box, purpose=KEY_PURPOSE_PUSH_REQUEST)
    return row.id, preq.build_csr(key, common_name=common_name, organization=organization, email=email)


def enrolled_on_topic(session: Session, topic: str) -> int:
    """How many enrolled devices use ``topic`` (they re-enroll when the topic is replaced)."""
    return session.scalar(
        select(func.count()).select_from(Device).where(Device.enrolled, Device.topic == topic)
    ) or 0


def import_push_certificate(
    session: Session, data: bytes, key: bytes | None = None, password: bytes | None = None, *,
    box: SecretBox, replace_topic: bool = False,
) -> PushCertificate:
    """Store the APNs MDM push certificate and make it the active one (no restart needed).

    Accepts PEM (certificate and key in one file, or the key in ``key``; the key may be encrypted
    with ``password``), PKCS#12 (with ``password``), or the certificate alone (PEM or DER) when it
    answers a request made by :func:`create_push_request` (its key is the stored request key). The
    topic is the certificate subject's UID. The private key is stored encrypted with ``box``.

    The same topic as the active certificate is a renewal: every enrolled device keeps working. A
    different topic orphans every enrolled device (they must re-enroll), so it is refused (409)
    unless ``replace_topic``.
    """
    cert, private_key = _parse_upload(data, key, password)
    if private_key is None:
        private_key = _request_key(session, cert, box)
    if px.public_key_pem(cert) != px.public_key_pem(private_key):
        raise UnprocessableEntity("the private key does not belong to the certificate", pointer="/key")
    topic = _topic_of(cert)
    if not topic:
        raise UnprocessableEntity(
            "the certificate has no UID attribute: it is not an APNs MDM push certificate", pointer="/file"
        )
    if not topic.startswith(MDM_TOPIC_PREFIX):
        raise UnprocessableEntity(
            f"the certificate's topic {topic!r} is not an MDM topic ({MDM_TOPIC_PREFIX}…)", pointer="/file"
        )
    now = utcnow()
    if cert.not_valid_after_utc <= now:
        raise UnprocessableEntity(
            f"the push certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}: renew it at "
            "identity.apple.com",
            pointer="/file",
        )
    current = get_active_certificate(session)
    if current is not None and current.topic != topic and not replace_topic:
        enrolled = enrolled_on_topic(session, current.topic)
        raise Conflict(
            f"the certificate's topic {topic} differs from the current topic {current.topic}: "
            f"replacing it means every enrolled device ({enrolled} now) must re-enroll, because a device "
            "only accepts pushes on the topic it enrolled with. To renew, use Renew for the current "
            "certificate at identity.apple.com (same topic); to replace the topic anyway, import with "
            "--replace-topic (API: replace_topic=true)",
            code="push_topic_changed",
            meta={"current_topic": current.topic, "new_topic": topic, "enrolled_devices": enrolled},
        )
    fingerprint = px.fingerprint_sha256(cert)
    session.execute(update(PushCertificate).where(PushCertificate.active).values(active=False))
    row = PushCertificate(
        topic=topic,
        subject=px.subject_string(cert),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        fingerprint_sha256=fingerprint,
        certificate_pem=px.cert_to_pem(cert),
        encrypted_key=box.encrypt(
            px.key_to_pem(private_key).encode(), associated_data=_aad(fingerprint)
        ),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        active=True,
        imported_at=now,
    )
    session.add(row)
    session.flush()
    log.info("push certificate imported: topic %s, expires %s", topic, row.not_after.date())
    return row


def get_active_certificate(session: Session) -> PushCertificate | None:
    return session.scalar(
        select(PushCertificate)
        .where(PushCertificate.active)
        .order_by(PushCertificate.id.desc())
        .limit(1)
    )


def require_active_certificate(session: Session) -> PushCertificate:
    row = get_active_certificate(session)
    if row is None:
        raise NotFound(
            "no push certificate: import one with `mdmserver push-cert import FILE` or "
            "PUT /api/v1/push_certificate"
        )
    return row


def get_push_topic(session: Session) -> str | None:
    """The APNs topic of the active push certificate (``None`` without one)."""
    return session.scalar(
        select(PushCertificate.topic)
        .where(PushCertificate.active)
        .order_by(PushCertificate.id.desc())
        .limit(1)
    )


def certificate_info(row: PushCertificate, now: datetime | None = None) -> dict[str, Any]:
    """What an administrator needs to know about the certificate (never the key)."""
    now = now or utcnow()
    days_left = (row.not_after - now).days
    warning = None
    if row.stopped_at is not None:
        warning = f"APNs refused this certificate ({row.stop_reason}): pushes are stopped until a new one is imported"
    elif days_left < 0:
        warning = "the push certificate has expired: devices cannot be woken; renew it at identity.apple.com"
    elif days_left < EXPIRY_WARNING_DAYS:
        warning = f"the push certificate expires in {days_left} days: renew it at identity.apple.com"
    return {
        "topic": row.topic,
        "subject": row.subject,
        "issuer": row.issuer,
        "serial": row.serial,
        "fingerprint_sha256": row.fingerprint_sha256,
        "not_before": row.not_before,
        "not_after": row.not_after,
        "days_left": days_left,
        "warning": warning,
        "imported_at": row.imported_at,
        "stopped_at": row.stopped_at,
        "stop_reason": row.stop_reason,
    }


def push_identity(session: Session, topic: str | None = None, *, box: SecretBox) -> PushIdentity | None:
    """The active certificate with its key decrypted by ``box``, unless it is stopped (or for another
    topic)."""
    row = get_active_certificate(session)
    if row is None or row.stopped_at is not None or (topic is not None and row.topic != topic):
        return None
    try:
        key_pem = box.decrypt(row.encrypted_key, associated_data=_aad(row.fingerprint_sha256))
    except SecretBoxError:
        log.error("the push certificate key cannot be decrypted (secret key file changed?)")
        return None
    return PushIdentity(row.topic, row.certificate_pem, key_pem.decode(), row.fingerprint_sha256)


def stop_topic(session: Session, topic: str, fingerprint: str, reason: str) -> bool:
    """APNs refused the certificate: stop pushing with it. True when this call stopped it."""
    result = session.execute(
        update(PushCertificate)
        .where(
            PushCertificate.topic == topic,
            PushCertificate.fingerprint_sha256 == fingerprint,
            PushCertificate.active,
            PushCertificate.stopped_at.is_(None),
        )
        .values(stopped_at=utcnow(), stop_reason=reason[:255])
    )
    stopped = bool(result.rowcount)
    if stopped:
        log.error(
            "APNs refused the push certificate for %s (%s): pushes stopped until a new certificate "
            "is imported", topic, reason,
        )
    return stopped


def push_readiness(session: Session) -> str | None:
    """For ``/readyz``: a problem description when pushing is stopped, else None.

    Having no certificate yet is not a readiness problem (a fresh server is ready to be set up).
    """
    row = get_active_certificate(session)
    if row is None:
        return None
    if row.stopped_at is not None:
        return f"APNs refused the push certificate for {row.topic} ({row.stop_reason}); import a new one"
    if row.not_after <= utcnow():
        return f"the push certificate for {row.topic} expired on {row.not_after:%Y-%m-%d}"
    return None


# --- outbox ----------------------------------------------------------------------------------------


def request_push(
    session: Session, device_ids: Select | Sequence[int], *, reason: str = "command"
) -> int:
    """Owe a wake-up push to each pushable device (set-based, in the caller's transaction).

    ``device_ids`` is a list of ids or a ``select()`` of one column of device ids. A device that
    already has a pending request gets no second one (coalesced). Devices that cannot be pushed
    (pending or rejected admission, unenrolled, no token, token refused by APNs) are left out:
    admission acceptance and TokenUpdate should call this again. Returns the number of new rows.
    """
    now = utcnow()
    if isinstance(device_ids, Select):
        conditions = [Device.id.in_(device_ids)]
    else:
        unique = list(dict.fromkeys(int(i) for i in device_ids))
        if not unique:
            return 0
        conditions = [Device.id.in_(unique[i : i + CHUNK]) for i in range(0, len(unique), CHUNK)]
    inserted = 0
    for condition in conditions:
        source = select(
            Device.id,
            literal(PushStatus.PENDING.value),
            literal(reason),
            literal(now, UTCDateTime()),
            literal(now, UTCDateTime()),
            literal(0),
        ).where(condition, pushable())
        stmt = (
            upsert_insert(session, PushRequest)
            .from_select(
                ["device_id", "status", "reason", "created_at", "not_before", "attempts"], source
            )
            .on_conflict_do_nothing()
            .returning(PushRequest.id)
        )
        inserted += len(session.execute(stmt).all())
    return inserted


def push_now(session: Session, device_id: int) -> PushRequest:
    """``POST /devices/<id>/push``: a push request for one device; 409 when it cannot be pushed."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"no device with id {device_id}")
    problem = _why_not_pushable(session, device)
    if problem:
        raise Conflict(f"device {device_id} cannot be pushed: {problem}")
    if get_active_certificate(session) is None:
        raise Conflict("no push certificate: import one with PUT /api/v1/push_certificate")
    request_push(session, [device_id], reason="manual")
    row = session.scalar(
        select(PushRequest).where(
            PushRequest.device_id == device_id, PushRequest.status == PushStatus.PENDING.value
        )
    )
    assert row is not None  # inserted above or already pending (coalesced)
    return row


_NOT_PUSHABLE = {
    "not_enrolled": "it is not enrolled",
    "no_token": "it has not sent a TokenUpdate yet",
    "token_refused": "APNs reported its push token invalid; it is pushed again after its next TokenUpdate",
}


def _why_not_pushable(session: Session, device) -> str | None:
    """Why :func:`pushable` is false for the device (one SELECT), or None."""
    code = session.scalar(select(push_blocker()).where(Device.id == device.id))
    if code == "admission":
        return f"its admission status is {device.admission_status}"
    return _NOT_PUSHABLE.get(code) if code else None


def _token_refused(state: DevicePushState | None, device) -> bool:
    if state is None or state.token_invalid_at is None:
        return False
    return device.token_updated_at is None or state.token_invalid_at >= device.token_updated_at


def device_push_status(session: Session, device_id: int) -> dict[str, Any]:
    """Push status of one device for the API: last push, its result, token validity, pending work."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"no device with id {device_id}")
    state = session.get(DevicePushState, device_id)
    problem = _why_not_pushable(session, device)
    pending = session.scalar(
        select(func.count())
        .select_from(PushRequest)
        .where(
            PushRequest.device_id == device_id,
            PushRequest.status.in_(
                [PushStatus.PENDING.value, PushStatus.SENDING.value, PushStatus.RETRY.value]
            ),
        )
    )
    return {
        "has_token": device.push_token is not None,
        "token_valid": device.push_token is not None and not _token_refused(state, device),
        "pushable": problem is None,
        "not_pushable_reason": problem,
        "last_push_at": state.last_push_at if state else None,
        "last_status": state.last_status if state else None,
        "last_reason": state.last_reason if state else None,
        "last_apns_id": state.last_apns_id if state else None,
        "token_invalid_at": state.token_invalid_at if state else None,
        "pending_requests": pending or 0,
    }


def push_statuses(session: Session, device_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Last push and token validity for many devices in one query (for the device resource)."""
    if not device_ids:
        return {}
    rows = session.execute(
        select(
            Device.id,
            Device.push_token.is_not(None),
            Device.token_updated_at,
            DevicePushState.last_push_at,
            DevicePushState.last_status,
            DevicePushState.last_reason,
            DevicePushState.token_invalid_at,
        )
        .outerjoin(DevicePushState, DevicePushState.device_id == Device.id)
        .where(Device.id.in_(list(device_ids)))
    )
    out: dict[int, dict[str, Any]] = {}
    for device_id, has_token, token_updated_at, last_push_at, status, reason, invalid_at in rows:
        refused = invalid_at is not None and (token_updated_at is None or invalid_at >= token_updated_at)
        out[device_id] = {
            "last_push_at": last_push_at,
            "last_push_status": status,
            "last_push_reason": reason,
            "push_token_valid": bool(has_token) and not refused,
        }
    return out


PUSH_ATTRIBUTES = ("last_push_at", "last_push_status", "last_push_reason", "push_token_valid")


def add_push_attributes(session: Session, resources: Sequence[dict[str, Any]],
                        fields_: set[str] | None = None) -> None:
    """Add each device resource's push status (timestamps in ISO 8601 UTC) to its attributes, in one
    query; ``fields_`` is the request's sparse fieldset."""
    statuses = push_statuses(session, [int(item["id"]) for item in resources])
    for item in resources:
        for name, value in statuses.get(int(item["id"]), {}).items():
            if fields_ is None or name in fields_:
                item["attributes"][name] = isoformat(value) if isinstance(value, datetime) else value


# --- upkeep ----------------------------------------------------------------------------------------


def repush_stale(
    session: Session, *, after: timedelta, now: datetime | None = None, limit: int = 10_000
) -> int:
    """Push again devices with active commands that have been silent for ``after``, once per period."""
    now = now or utcnow()
    cutoff = now - after
    has_work = exists().where(
        Command.device_id == Device.id, Command.status.in_(_ACTIVE_COMMAND_STATUSES)
    )
    recently_repushed = exists().where(
        DevicePushState.device_id == Device.id,
        DevicePushState.last_repush_at.is_not(None),
        DevicePushState.last_repush_at > cutoff,
    )
    ids = list(
        session.scalars(
            select(Device.id)
            .where(
                has_work,
                or_(Device.last_seen_at.is_(None), Device.last_seen_at < cutoff),
                pushable(),
                ~recently_repushed,
            )
            .order_by(Device.id)
            .limit(limit)
        )
    )
    if not ids:
        return 0
    request_push(session, ids, reason="repush")
    upsert_states(session, [{"device_id": i, "last_repush_at": now} for i in ids])
    return len(ids)


def upsert_states(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or update ``device_push_state`` rows (each dict: device_id plus the columns to set)."""
    if not rows:
        return
    by_columns: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        by_columns.setdefault(tuple(sorted(row)), []).append(row)
    for columns, group in by_columns.items():
        stmt = upsert_insert(session, DevicePushState)
        stmt = stmt.on_conflict_do_update(
            index_elements=[DevicePushState.device_id],
            set_={c: stmt.excluded[c] for c in columns if c != "device_id"},
        )
        for start in range(0, len(group), CHUNK):
            session.execute(stmt, list(group[start : start + CHUNK]))


def purge_push_records(
    session: Session, *, older_than: timedelta, batch: int = 5000, now: datetime | None = None
) -> int:
    """Delete finished push requests completed before the retention period, in batches."""
    cutoff = (now or utcnow()) - older_than
    total = 0
    while True:
        ids = select(PushRequest.id).where(
            PushRequest.status.in_([s.value for s in FINISHED_STATUSES]),
            PushRequest.completed_at < cutoff,
        ).limit(batch)
        result = session.execute(
            delete(PushRequest).where(PushRequest.id.in_(ids)).execution_options(synchronize_session=False)
        )
        deleted = result.rowcount or 0
        total += deleted
        session.commit()
        if deleted < batch:
            return total


# --- counters ----------------------------------------------------------------------------------------

OUTCOMES = ("sent", "unregistered", "bad_token", "throttled", "server_error", "connection_error",
            "certificate_refused", "retried", "failed", "skipped")


def bump_counters(session: Session, counts: Mapping[str, int]) -> None:
    """Add to the shared outcome counters (one upsert per outcome)."""
    items = [{"outcome": k, "count": v} for k, v in counts.items() if v]
    if not items:
        return
    stmt = upsert_insert(session, PushCounter)
    stmt = stmt.on_conflict_do_update(
        index_elements=[PushCounter.outcome], set_={"count": PushCounter.count + stmt.excluded.count}
    )
    session.execute(stmt, items)


def counters(session: Session) -> dict[str, int]:
    values = dict.fromkeys(OUTCOMES, 0)
    values.update({o: int(c) for o, c in session.execute(select(PushCounter.outcome, PushCounter.count))})
    return values


def metrics_lines(session: Session) -> list[str]:
    """Prometheus text lines: push outcomes, outbox backlog, push certificate state."""
    lines = [
        "# HELP mdmserver_push_outcomes_total APNs push outcomes, across every push worker.",
        "# TYPE mdmserver_push_outcomes_total counter",
    ]
    for outcome, count in counters(session).items():
        lines.append(f'mdmserver_push_outcomes_total{{outcome="{outcome}"}} {count}')
    backlog = dict(
        session.execute(
            select(PushRequest.status, func.count())
            .where(PushRequest.status.in_(
                [PushStatus.PENDING.value, PushStatus.SENDING.value, PushStatus.RETRY.value]
            ))
            .group_by(PushRequest.status)
        ).all()
    )
    lines += [
        "# HELP mdmserver_push_outbox Push requests waiting in the outbox by status.",
        "# TYPE mdmserver_push_outbox gauge",
    ]
    for status in (PushStatus.PENDING, PushStatus.SENDING, PushStatus.RETRY):
        lines.append(f'mdmserver_push_outbox{{status="{status.value}"}} {backlog.get(status.value, 0)}')
    row = get_active_certificate(session)
    lines += [
        "# HELP mdmserver_push_certificate_stopped 1 when APNs refused the push certificate.",
        "# TYPE mdmserver_push_certificate_stopped gauge",
        f"mdmserver_push_certificate_stopped {1 if row is not None and row.stopped_at else 0}",
        "# HELP mdmserver_push_certificate_expiry_seconds Seconds until the push certificate expires.",
        "# TYPE mdmserver_push_certificate_expiry_seconds gauge",
    ]
    if row is not None:
        lines.append(
            f"mdmserver_push_certificate_expiry_seconds {int((row.not_after - utcnow()).total_seconds())}"
        )
    return lines
