"""``/scep``: the built-in SCEP server (RFC 8894) devices get their identity from.

``GET ?operation=GetCACaps`` and ``GetCACert``; ``PKIOperation`` by ``POST`` (the DER body) or by
``GET`` with the base64 ``message`` parameter. A message that cannot be read is a 400 JSON:API error;
a request that is refused is a signed CertRep FAILURE, answered 200 (RFC 8894 3.3.2). A PKIOperation
that gets no certificate counts against the enrollment rate limit of its client address (shared with
``/mdm/enroll``), and a client past that limit gets 429; one that gets a certificate does not count (its
single-use challenge came from a counted ``/mdm/enroll``), so an enrollment costs one attempt.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable

from flask import Blueprint, Response, current_app, request

from mdmserver.api.requests import read_limited_body
from mdmserver.api.transactions import writes
from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.enrollment_limit import peers
from mdmserver.enrollment_limit import service as enrollment_limit
from mdmserver.errors import AppError, BadRequest, PayloadTooLarge, TooManyRequests
from mdmserver.organization.service import get_organization
from mdmserver.pki.scep import MAX_MESSAGE_SIZE, ScepError
from mdmserver.scep import service

log = logging.getLogger("mdmserver.scep")

bp = Blueprint("scep", __name__)

PKI_MESSAGE = "application/x-pki-message"
#: a base64 message in the URL: 4/3 of the largest body, plus URL-encoding slack
_MAX_MESSAGE_PARAMETER = MAX_MESSAGE_SIZE * 2


def _client() -> str:
    networks = peers.trusted_networks(tuple(current_app.config.get("TRUSTED_PROXIES") or ()))
    return peers.client_address(request.remote_addr, request.headers.getlist("X-Forwarded-For"), networks)


def _limit() -> int:
    return int(current_app.config.get("ENROLL_RATE_LIMIT") or 0)


def _refuse_when_limited(client: str) -> None:
    """A client past the enrollment rate limit gets 429 (counted: hammering keeps it locked out). At
    the limit a PKIOperation still runs: the limit-th enrollment's profile leaves room for its own SCEP
    request, which only counts if it fails."""
    limit = _limit()
    if limit > 0 and enrollment_limit.limit_exceeded(db.session, peers.limit_key(client), limit=limit):
        enrollment_limit.record_attempt(db.session, peers.limit_key(client), limit=limit)
        db.session.commit()
        log.warning("SCEP request from %s refused: more than %d failed enrollment attempts a minute", client, limit)
        raise TooManyRequests("too many enrollment requests; try again in a minute", headers={"Retry-After": "60"})


def _count_failure(client: str) -> None:
    """A PKIOperation that got no certificate (unreadable, or refused: a wrong challenge is a guess)
    counts against the client's enrollment rate limit; one that got a certificate redeemed a
    single-use challenge that ``/mdm/enroll`` counted already."""
    limit = _limit()
    if limit > 0:
        enrollment_limit.record_attempt(db.session, peers.limit_key(client), limit=limit)


def _message_parameter() -> bytes:
    text = request.args.get("message")
    if not text:
        raise BadRequest("PKIOperation by GET needs the base64 message parameter", parameter="message")
    if len(text) > _MAX_MESSAGE_PARAMETER:
        raise PayloadTooLarge(f"SCEP messages are limited to {MAX_MESSAGE_SIZE} bytes")
    try:
        # a client that did not URL-encode its base64 sends "+" that arrives as " "
        return base64.b64decode("".join(text.replace(" ", "+").split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("the message parameter is not base64", parameter="message") from None


def _pki_operation(read_message: Callable[[], bytes]) -> Response:
    client = _client()
    _refuse_when_limited(client)
    settings = service.ScepSettings(organization=get_organization(db.session).name, box=secret_box(),
                                    client=client, allow_des=bool(current_app.config.get("SCEP_ALLOW_DES")))
    try:
        answer = service.answer_pki_operation(db.session, read_message(), settings)
    except (ScepError, AppError):
        db.session.rollback()
        _count_failure(client)
        db.session.commit()
        raise
    if not answer.granted:
        _count_failure(client)
    db.session.commit()
    return Response(answer.der, status=200, mimetype=PKI_MESSAGE)


def _ca_caps() -> Response:
    return Response("\n".join(service.ca_capabilities()) + "\n", status=200, mimetype="text/plain")


def _ca_cert() -> Response:
    return Response(service.ca_certificate_der(db.session), status=200, mimetype="application/x-x509-ca-cert")


def _pki_operation_get() -> Response:
    return _pki_operation(_message_parameter)


_GET_OPERATIONS = {
    "GetCACaps": _ca_caps,
    "GetCACert": _ca_cert,
    "PKIOperation": _pki_operation_get,
}


def _operation() -> str:
    operation = request.args.get("operation")
    if not operation:
        raise BadRequest("the operation parameter is required", parameter="operation")
    return operation


@bp.get("/scep")
@writes  # PKIOperation by GET issues certificates (and every operation shares the route)
def scep_get() -> Response:
    """SCEP by GET: the CA's capabilities, its certificate, or a PKIOperation with the message in the URL."""
    operation = _operation()
    handler = _GET_OPERATIONS.get(operation)
    if handler is None:
        raise BadRequest(f"unknown SCEP operation {operation[:32]!r}", parameter="operation")
    return handler()


@bp.post("/scep")
def scep_post() -> Response:
    """SCEP PKIOperation: a pkiMessage (DER) in, a CertRep signed by our CA out."""
    operation = _operation()
    if operation != "PKIOperation":
        raise BadRequest(f"SCEP operation {operation[:32]!r} is not sent by POST", parameter="operation")
    return _pki_operation(lambda: read_limited_body(MAX_MESSAGE_SIZE, "SCEP messages"))
