"""Device endpoints: ``GET /mdm/enroll``, ``PUT /mdm/checkin``, ``PUT /mdm/connect``, ``PUT /mdm``.

Order of checks (DESIGN.md): size limit (413), signature and certificate issued by our CA (403;
unauthenticated bytes never reach the plist parser), plist (400), certificate bound to this UDID
(403), then the message. Devices never get a 401.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
from datetime import timedelta

from flask import Blueprint, Response, current_app, request
from sqlalchemy.orm import Session

from mdmserver.api.requests import read_limited_body
from mdmserver.api.transactions import writes
from mdmserver.checkin import auth as device_auth
from mdmserver.checkin import service
from mdmserver.collaborators import secret_box
from mdmserver.db import db, run_read_first, scope_bind, session_in_use, untransacted
from mdmserver.enrollment_limit import peers
from mdmserver.enrollment_limit import service as enrollment_limit
from mdmserver.errors import BadRequest, TooManyRequests
from mdmserver.organization.service import get_organization
from mdmserver.pki import cms
from mdmserver.pki import service as pki
from mdmserver.protocol import checkin as msgs
from mdmserver.protocol.plist import load_dict
from mdmserver.protocol.results import ResultStatus, parse_result
from mdmserver.push import service as push_service

log = logging.getLogger("mdmserver.checkin")

bp = Blueprint("checkin", __name__)

CA_CACHE_SECONDS = 60.0


def push_topic(session: Session) -> str | None:
    """The APNs topic of our push certificate (``None`` without one)."""
    return push_service.get_push_topic(session)


def _ca_certificate(session: Session):
    cache = current_app.extensions.setdefault("mdmserver.device_ca", {})
    entry = cache.get("ca")
    now = time.monotonic()
    if entry is None or entry[1] < now:
        entry = (pki.get_ca_certificate(session), now + CA_CACHE_SECONDS)
        cache["ca"] = entry
    return entry[0]


def _certificate_verdicts() -> cms.CertificateVerdicts:
    """This process's cache of device certificates already verified against our CA (pure crypto)."""
    return current_app.extensions.setdefault("mdmserver.device_verdicts", cms.CertificateVerdicts())


def _read_body() -> bytes:
    return read_limited_body(current_app.config["MAX_DEVICE_BODY_BYTES"], "device requests")


def _trusted_proxies() -> tuple[peers.Network, ...]:
    return peers.trusted_networks(tuple(current_app.config.get("TRUSTED_PROXIES") or ()))


def _identify(body: bytes) -> device_auth.DeviceIdentity:
    config = current_app.config
    header_name = config.get("CLIENT_CERT_HEADER")
    cert_header = request.headers.get(header_name) if header_name else None
    try:
        return device_auth.authenticate(
            body=body,
            signature_header=request.headers.get("Mdm-Signature"),
            cert_header_value=cert_header,
            mode=config["DEVICE_AUTH"],
            ca_cert=_ca_certificate(db.session),
            # only a request that carries the header needs to know (most carry a signature alone)
            header_trusted=bool(cert_header) and peers.is_trusted(request.remote_addr, _trusted_proxies()),
            verdicts=_certificate_verdicts(),
        )
    except device_auth.DeviceAuthError as exc:
        raise service.refuse("%s %s: %s", request.method, request.path, exc.reason) from None


def _parse(body: bytes) -> dict:
    """The body's plist (a ``ProtocolError`` is answered 400, or 413 past the size limit)."""
    return load_dict(body, max_bytes=current_app.config["MAX_DEVICE_BODY_BYTES"])


def _settings() -> service.CheckinSettings:
    config = current_app.config
    return service.CheckinSettings(
        admission_policy=config["ADMISSION_POLICY"],
        preauthorized=tuple(config.get("PREAUTHORIZED") or ()),
        push_topic=push_topic,
        box=secret_box(),
        public_url=config["PUBLIC_URL"],
    )


def _respond(body: bytes | None, mimetype: str = "application/xml") -> Response:
    """200 with the body; ``None`` is the protocol's empty 200 ("nothing for you"), sent with no body
    and no ``Content-Type`` at all (as Go's net/http does for NanoMDM), never as ``text/html``. Commits
    the request's session if it used one (a result stored with its read did not)."""
    session = session_in_use(db.session)
    if session is not None:
        session.commit()
    if body is None:
        return _empty_200()
    if body[:1] in (b"{", b"["):
        mimetype = "application/json"
    return Response(body, status=200, mimetype=mimetype)


def _empty_200() -> Response:
    response = Response(b"", status=200)
    del response.headers["Content-Type"]
    return response


def _checkin(data: dict, identity: device_auth.DeviceIdentity) -> Response:
    message = msgs.parse_checkin(data)
    try:
        body = service.handle_checkin(db.session, message, identity, _settings())
    except service.RecordedRefusal:
        db.session.commit()
        raise
    return _respond(body)


def _connect(data: dict, body: bytes, identity: device_auth.DeviceIdentity) -> Response:
    result = parse_result(data)
    # read before any transaction: on SQLite not inside the write lock, and a quiet Idle needs no other
    box = secret_box()
    with untransacted(scope_bind(db.session)) as connection:
        read = service.read_connect(connection, result, identity, body, box)
    if result.status is not ResultStatus.IDLE:
        # a result not stored with its read writes: IMMEDIATE, waiting for the lock up front
        return _respond(service.handle_result(db.session, read, result, body, identity, box,
                                              current_app.config["PUBLIC_URL"]))
    if read.quiet:
        return _empty_200()  # no transaction at all

    def idle() -> Response:
        return _respond(service.handle_idle(db.session, read, result, body, identity, box,
                                            current_app.config["PUBLIC_URL"]))

    if read.offer:
        return idle()  # it writes: IMMEDIATE, waiting for the lock up front
    # Otherwise it may only read (a refusal; last_seen, written at most once a minute): it begins
    # DEFERRED and takes SQLite's write lock only if it does write.
    return run_read_first(db.session, idle)


@bp.put("/mdm/checkin")
def checkin() -> Response:
    body = _read_body()
    identity = _identify(body)
    data = _parse(body)
    if not msgs.is_checkin(data):
        raise BadRequest("check-in messages need a MessageType")
    return _checkin(data, identity)


@bp.put("/mdm/connect")
def connect() -> Response:
    body = _read_body()
    identity = _identify(body)
    data = _parse(body)
    if msgs.is_checkin(data):
        raise BadRequest("check-in messages go to /mdm/checkin")
    return _connect(data, body, identity)


@bp.put("/mdm")
def dispatch() -> Response:
    body = _read_body()
    identity = _identify(body)
    data = _parse(body)
    if msgs.is_checkin(data):
        return _checkin(data, identity)
    return _connect(data, body, identity)


# --- enrollment ------------------------------------------------------------------------------------


def _client_address() -> str:
    """The client's address, looking through ``X-Forwarded-For`` only when the peer is a trusted proxy."""
    return peers.client_address(request.remote_addr, request.headers.getlist("X-Forwarded-For"), _trusted_proxies())


def _supplied_secret() -> str | None:
    """The HTTP Basic password, if any (the user name is ignored)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(":")[2]
    return None


@bp.get("/mdm/enroll")
@writes  # issues and stores a device identity
def enroll() -> Response:
    """Issue an enrollment profile. Every attempt is counted against the client's limit first (a
    wrong secret is a guess); then the secret, which only the ``Authorization`` header may carry."""
    config = current_app.config
    client = _client_address()
    limit = int(config.get("ENROLL_RATE_LIMIT") or 0)
    if limit > 0:
        allowed = enrollment_limit.record_attempt(db.session, peers.limit_key(client), limit=limit)
        db.session.commit()
        if not allowed:
            log.warning("enrollment from %s refused: more than %d attempts a minute", client, limit)
            raise TooManyRequests(
                "too many enrollment requests; try again in a minute", headers={"Retry-After": "60"}
            )
    if "secret" in request.args:
        log.warning("enrollment from %s refused: enrollment secret sent in the URL", client)
        raise BadRequest(
            "the enrollment secret is not accepted in the URL (URLs end up in logs); "
            "send it as the HTTP Basic password"
        )
    secret = config.get("ENROLLMENT_SECRET")
    if secret:
        supplied = _supplied_secret()
        if supplied is None or not hmac.compare_digest(supplied.encode(), secret.encode()):
            raise service.refuse("enrollment from %s with a missing or wrong secret", client)
    organization = get_organization(db.session)
    profile = service.build_enrollment_profile(db.session, service.EnrollmentSettings(
        public_url=config["PUBLIC_URL"],
        topic=push_topic(db.session),
        organization=organization.name,
        prefix=organization.payload_prefix,
        box=secret_box(),
        lifetime_days=config["IDENTITY_LIFETIME_DAYS"],
        identity=service.EnrollmentIdentity(config["ENROLLMENT_IDENTITY"]),
        scep_challenge_ttl=timedelta(seconds=int(config["SCEP_CHALLENGE_TTL"])),
    ))
    db.session.commit()
    if profile.certificate_id is not None:
        log.info("enrollment profile %s issued to %s (identity certificate %s)", profile.enrollment_id, client,
                 profile.certificate_id)
    else:
        log.info("enrollment profile %s issued to %s (identity by SCEP)", profile.enrollment_id, client)
    return Response(
        profile.signed,
        status=200,
        mimetype="application/x-apple-aspen-config",
        headers={"Content-Disposition": 'attachment; filename="enroll.mobileconfig"'},
    )
