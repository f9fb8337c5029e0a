"""Device authentication: who signed this request?

Devices prove their enrollment identity with the ``Mdm-Signature`` header (base64 CMS SignedData,
detached, over the exact body) or, behind a TLS-terminating proxy, with the client certificate the
proxy forwards in a header (URL-escaped PEM). Either way the certificate must have been issued by
our CA and be a device identity (an end-entity certificate for client authentication: neither the
CA nor the server's signing identity). Binding the certificate to a UDID, and whether it was
issued at an enrollment and not revoked, is checked later, once the body has been parsed.

A certificate is public: putting one in the header proves nothing unless the header was set by the
proxy that checked the TLS client's key. The caller says whether the request's peer is such a
trusted proxy; from anyone else the header is refused, in ``header`` and in ``both`` mode alike.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import unquote

from cryptography import x509 as cx509

from mdmserver.pki import cms, x509

MODES = ("signature", "header", "both")
MAX_HEADER_CERT = 16 * 1024


class DeviceAuthError(Exception):
    """The request does not prove an identity we issued; ``reason`` goes to the log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DeviceIdentity:
    certificate: cx509.Certificate
    fingerprint: str

    @property
    def pubkey_pem(self) -> str:
        return x509.public_key_pem(self.certificate)


def _from_signature(
    signature_b64: str, body: bytes, ca_cert: cx509.Certificate, verdicts: cms.CertificateVerdicts | None
) -> cx509.Certificate:
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise DeviceAuthError("Mdm-Signature is not valid base64") from None
    try:
        return cms.verify_detached(signature, body, ca_certs=[ca_cert], verdicts=verdicts)
    except cms.CMSError as exc:
        raise DeviceAuthError(f"Mdm-Signature rejected: {exc.reason}") from None


def _from_header(value: str, ca_cert: cx509.Certificate) -> cx509.Certificate:
    if len(value) > MAX_HEADER_CERT:
        raise DeviceAuthError("client certificate header too large")
    pem = unquote(value).strip()
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise DeviceAuthError("client certificate header holds no PEM certificate")
    try:
        cert = x509.cert_from_pem(pem.encode("ascii", "replace"))
    except (ValueError, x509.PKIError):
        raise DeviceAuthError("client certificate header is not a readable certificate") from None
    if not x509.is_issued_by(cert, ca_cert):
        raise DeviceAuthError("client certificate not issued by our CA")
    if not x509.is_issued_by(cert, ca_cert, at=datetime.now(UTC)):
        raise DeviceAuthError("client certificate expired or not yet valid")
    return cert


def authenticate(
    *,
    body: bytes,
    signature_header: str | None,
    cert_header_value: str | None,
    mode: str,
    ca_cert: cx509.Certificate,
    header_trusted: bool,
    verdicts: cms.CertificateVerdicts | None = None,
) -> DeviceIdentity:
    """Check the request's proof of identity per ``mode``; raise ``DeviceAuthError`` otherwise.

    ``both`` accepts either proof; when a signature is present it is the one checked. The header is
    accepted only when ``header_trusted`` (the peer is a configured trusted proxy). ``verdicts``
    remembers which certificates our CA issued (pure crypto only: the enrollment binding is checked
    later, on every request, against the database).
    """
    if mode not in MODES:
        raise DeviceAuthError(f"unknown device auth mode {mode!r}")
    if mode in ("signature", "both") and signature_header:
        cert = _from_signature(signature_header, body, ca_cert, verdicts)
    elif mode in ("header", "both") and cert_header_value:
        if not header_trusted:
            raise DeviceAuthError("client certificate header from a peer that is not a trusted proxy")
        cert = _from_header(cert_header_value, ca_cert)
    elif mode == "signature":
        raise DeviceAuthError("no Mdm-Signature header")
    elif mode == "header":
        raise DeviceAuthError("no client certificate header")
    else:
        raise DeviceAuthError("neither Mdm-Signature nor a client certificate header")
    problem, fingerprint = _identity_facts(cert)
    if problem is not None:
        raise DeviceAuthError(f"not a device identity: {problem}")
    return DeviceIdentity(certificate=cert, fingerprint=fingerprint)


@lru_cache(maxsize=10_000)
def _identity_facts(cert: cx509.Certificate) -> tuple[str | None, str]:
    """Why ``cert`` cannot be a device identity (``None``: it can) and its fingerprint: pure functions
    of the certificate's bytes (certificates hash and compare by their DER), read once per certificate."""
    return x509.client_identity_problem(cert), x509.fingerprint_sha256(cert)
