"""SCEP enrollment: single-use challenges, and the answers to PKIOperation requests.

An enrollment profile carries a fresh challenge (:func:`issue_challenge`); the device makes its own
key and sends a PKCSReq with the challenge in its CSR. :func:`answer_pki_operation` verifies and
decrypts the message (a malformed one raises :class:`mdmserver.pki.scep.ScepError`, answered 400),
then either issues the certificate or refuses with a signed CertRep FAILURE (RFC 8894 wants
refusals as CertReps, answered 200): the refusal's reason goes to the log, the requester sees only
the failInfo.

This module is the only writer of ``scep_challenges``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import and_, delete, select, update
from sqlalchemy.orm import Session

from mdmserver.db import utcnow
from mdmserver.pki import scep, x509
from mdmserver.pki import service as pki
from mdmserver.pki.secretbox import SecretBox
from mdmserver.scep.models import ScepChallenge

log = logging.getLogger("mdmserver.scep")

DEFAULT_CHALLENGE_TTL = timedelta(hours=1)
#: RSA keys accepted in a CSR: at least 2048 bits (and no absurd sizes)
RSA_KEY_SIZES = range(2048, 8193)
#: EC curves accepted in a CSR
EC_CURVES = frozenset({"secp256r1", "secp384r1"})


class ScepRefused(Exception):
    """A well-formed request that is not granted: answered with a CertRep FAILURE carrying ``fail_info``."""

    def __init__(self, fail_info: scep.FailInfo, reason: str) -> None:
        super().__init__(reason)
        self.fail_info = fail_info
        self.reason = reason


@dataclass(frozen=True)
class ScepSettings:
    organization: str
    box: SecretBox
    #: who asked (a client address), for the log lines
    client: str = "-"
    #: accept single DES-CBC envelopes (``scep_allow_des``; 56-bit, for clients that know nothing else)
    allow_des: bool = False


@dataclass(frozen=True)
class _Granted:
    certificate: cx509.Certificate


def _digest(challenge: str) -> str:
    return hashlib.sha256(challenge.encode("utf-8")).hexdigest()


def public_key_sha256(key) -> str:
    """SHA-256 (hex) of a public key's SubjectPublicKeyInfo DER."""
    return hashlib.sha256(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()


def issue_challenge(session: Session, *, enrollment_id: str, ttl: timedelta = DEFAULT_CHALLENGE_TTL,
                    lifetime_days: float = pki.DEVICE_IDENTITY_DAYS, renews_udid: str | None = None,
                    now: datetime | None = None) -> str:
    """A fresh single-use challenge for the enrollment ``enrollment_id`` (only its digest is stored);
    the certificate it gets lives ``lifetime_days`` and, with ``renews_udid``, renews that device's
    identity."""
    challenge = secrets.token_urlsafe(32)
    moment = now or utcnow()
    session.add(ScepChallenge(digest=_digest(challenge), enrollment_id=enrollment_id, created_at=moment,
                              expires_at=moment + ttl, lifetime_days=lifetime_days, renews_udid=renews_udid))
    session.flush()
    return challenge


def purge_expired_challenges(session: Session, *, now: datetime | None = None) -> int:
    """Delete the challenges that expired unused (one statement); returns how many. The caller commits."""
    result = session.execute(
        delete(ScepChallenge)
        .where(ScepChallenge.used_at.is_(None), ScepChallenge.expires_at < (now or utcnow()))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


@dataclass(frozen=True)
class ScepAnswer:
    #: the DER CertRep
    der: bytes
    #: a certificate was issued (or issued again to a retransmission); ``False``: a FAILURE CertRep
    granted: bool


def answer_pki_operation(session: Session, message: bytes, settings: ScepSettings,
                         *, now: datetime | None = None) -> ScepAnswer:
    """The CertRep answering a pkiMessage (``ScepError`` when it cannot be read at all)."""
    ca_cert, ca_key = pki.get_ca(session, settings.box)
    request = scep.parse_pki_message(message, ca_cert=ca_cert, ca_key=ca_key, allow_des=settings.allow_des)
    handler = _HANDLERS.get(request.message_type, _unsupported) if request.refusal is None else _refused
    try:
        granted = handler(session, request, ca_cert, ca_key, settings, now or utcnow())
    except ScepRefused as refused:
        log.warning("SCEP %s from %s refused (%s, transaction %s): %s", request.message_type.name,
                    settings.client, refused.fail_info.name, request.transaction_id[:64], refused.reason)
        return ScepAnswer(scep.build_cert_rep(request, ca_cert=ca_cert, ca_key=ca_key,
                                              status=scep.PkiStatus.FAILURE, fail_info=refused.fail_info),
                          granted=False)
    return ScepAnswer(scep.build_cert_rep(request, ca_cert=ca_cert, ca_key=ca_key, status=scep.PkiStatus.SUCCESS,
                                          issued=granted.certificate), granted=True)


def _check_keys(request: scep.ScepRequest) -> cx509.Certificate:
    """The CSR's key must be acceptable, and the reply must be encryptable to the signer."""
    csr_key = request.csr.public_key()
    if isinstance(csr_key, rsa.RSAPublicKey):
        if csr_key.key_size not in RSA_KEY_SIZES:
            raise ScepRefused(scep.FailInfo.BAD_ALG, f"RSA key of {csr_key.key_size} bits")
    elif isinstance(csr_key, ec.EllipticCurvePublicKey):
        if csr_key.curve.name not in EC_CURVES:
            raise ScepRefused(scep.FailInfo.BAD_ALG, f"EC key on curve {csr_key.curve.name}")
    else:
        raise ScepRefused(scep.FailInfo.BAD_ALG, f"{type(csr_key).__name__} keys are not accepted")
    signer_key = request.signer.public_key()
    if not isinstance(signer_key, rsa.RSAPublicKey) or signer_key.key_size not in RSA_KEY_SIZES:
        raise ScepRefused(scep.FailInfo.BAD_ALG, "the signer key cannot receive the reply (RSA >= 2048 needed)")
    if isinstance(csr_key, rsa.RSAPublicKey) and signer_key != csr_key:
        # an RSA requester signs with the key it asks a certificate for (RFC 8894 2.3); an EC one
        # cannot (the reply is encrypted to the signer), so its signer is a separate RSA key
        raise ScepRefused(scep.FailInfo.BAD_MESSAGE_CHECK, "the signer key is not the key of the request")
    return request.csr


def _enroll(session: Session, request: scep.ScepRequest, ca_cert, ca_key, settings: ScepSettings,
            now: datetime) -> _Granted:
    csr = _check_keys(request)
    challenge = scep.challenge_password(csr)
    if not challenge:
        raise ScepRefused(scep.FailInfo.BAD_REQUEST, "no challenge password")
    key_digest = public_key_sha256(csr.public_key())
    row = session.scalar(select(ScepChallenge).where(ScepChallenge.digest == _digest(challenge)))
    if row is None:
        raise ScepRefused(scep.FailInfo.BAD_REQUEST, "unknown challenge")
    redeemed = session.execute(
        update(ScepChallenge)
        .where(ScepChallenge.id == row.id, ScepChallenge.used_at.is_(None), ScepChallenge.expires_at > now)
        .values(used_at=now, transaction_id=request.transaction_id, public_key_sha256=key_digest)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not redeemed:
        session.refresh(row)
        return _retransmission(session, row, request, key_digest, now)
    certificate = x509.issue_certificate(
        ca_cert, ca_key, common_name=pki.device_common_name(row.enrollment_id), public_key=csr.public_key(),
        days=row.lifetime_days or pki.DEVICE_IDENTITY_DAYS, usage="client", organization=settings.organization,
    )
    stored = pki.store_certificate(session, certificate, pki.PURPOSE_DEVICE, renews_udid=row.renews_udid)
    session.execute(
        update(ScepChallenge).where(ScepChallenge.id == row.id)
        .values(certificate_fingerprint=stored.fingerprint_sha256)
        .execution_options(synchronize_session=False)
    )
    log.info("SCEP certificate %s issued to %s for enrollment %s (transaction %s)",
             stored.fingerprint_sha256[:16], settings.client, row.enrollment_id, request.transaction_id[:64])
    return _Granted(certificate)


def _retransmission(session: Session, row: ScepChallenge, request: scep.ScepRequest, key_digest: str,
                    now: datetime) -> _Granted:
    """A challenge that could not be redeemed: the same request again gets the same certificate."""
    if row.used_at is None:
        raise ScepRefused(scep.FailInfo.BAD_REQUEST, "challenge expired")
    if row.transaction_id != request.transaction_id or row.public_key_sha256 != key_digest:
        raise ScepRefused(scep.FailInfo.BAD_REQUEST, "challenge already used by another request")
    certificate = _issued(session, row)
    if certificate is None:
        raise ScepRefused(scep.FailInfo.BAD_REQUEST, "challenge already used; its certificate is gone")
    log.info("SCEP transaction %s retransmitted: certificate %s sent again", request.transaction_id[:64],
             row.certificate_fingerprint[:16])
    return _Granted(certificate)


def _issued(session: Session, row: ScepChallenge) -> cx509.Certificate | None:
    if row.certificate_fingerprint is None:
        return None
    stored = pki.device_certificate(session, row.certificate_fingerprint)
    return x509.cert_from_pem(stored.pem_data) if stored is not None else None


def _poll(session: Session, request: scep.ScepRequest, ca_cert, ca_key, settings: ScepSettings,
          now: datetime) -> _Granted:
    """GetCertInitial: the certificate this transaction was issued, when the signer holds its key.

    Nothing is ever left pending here (a valid challenge is granted at once), so this answers a
    requester whose CertRep was lost."""
    if request.issuer_der != ca_cert.subject.public_bytes():
        raise ScepRefused(scep.FailInfo.BAD_CERT_ID, "GetCertInitial names another issuer")
    row = session.scalar(
        select(ScepChallenge).where(and_(
            ScepChallenge.transaction_id == request.transaction_id,
            ScepChallenge.public_key_sha256 == public_key_sha256(request.signer.public_key()),
            ScepChallenge.certificate_fingerprint.is_not(None),
        )).limit(1)
    )
    certificate = _issued(session, row) if row is not None else None
    if certificate is None:
        raise ScepRefused(scep.FailInfo.BAD_CERT_ID, "no certificate issued for this transaction and key")
    return _Granted(certificate)


def _refused(session: Session, request: scep.ScepRequest, ca_cert, ca_key, settings: ScepSettings,
             now: datetime) -> _Granted:
    raise ScepRefused(request.refusal, request.refusal_reason or "refused")


def _unsupported(session: Session, request: scep.ScepRequest, ca_cert, ca_key, settings: ScepSettings,
                 now: datetime) -> _Granted:
    raise ScepRefused(scep.FailInfo.BAD_REQUEST, f"{request.message_type.name} is not supported")


_HANDLERS: dict[scep.MessageType, Callable[..., _Granted]] = {
    scep.MessageType.PKCS_REQ: _enroll,
    scep.MessageType.GET_CERT_INITIAL: _poll,
}


def ca_capabilities() -> list[str]:
    """What GetCACaps announces (RFC 8894 3.5.2)."""
    return ["AES", "SHA-256", "POSTPKIOperation", "SCEPStandard"]


def ca_certificate_der(session: Session) -> bytes:
    """GetCACert: our CA certificate, DER."""
    return x509.cert_to_der(pki.get_ca_certificate(session))
