"""The APNs MDM push certificate request: the CSR of our key, and the vendor-signed request.

Apple's push certificate portal (identity.apple.com/pushcert) takes, from a customer of an MDM vendor,
a base64-encoded property list with three strings:

- ``PushCertRequestCSR``: the customer's CSR, DER, base64;
- ``PushCertCertificateChain``: the MDM vendor's signing certificate followed by Apple's
  intermediate and root, PEM;
- ``PushCertSignature``: the vendor key's RSA PKCS#1 v1.5 SHA-256 signature of the CSR's DER, base64.

Pure module (cryptography and plistlib only): no Flask, no SQLAlchemy.
"""

from __future__ import annotations

import base64
import binascii
import plistlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from mdmserver.pki.x509 import PKIError, PrivateKey, public_key_pem

CSR_FIELD = "PushCertRequestCSR"
CHAIN_FIELD = "PushCertCertificateChain"
SIGNATURE_FIELD = "PushCertSignature"
FIELDS = (CSR_FIELD, CHAIN_FIELD, SIGNATURE_FIELD)

#: Largest encoded request :func:`read_signed_request` opens (a real one is a few kilobytes).
MAX_REQUEST_BYTES = 256 * 1024


@dataclass(frozen=True)
class SignedRequest:
    """A vendor-signed request read back: its CSR, the certificate chain and the raw signature."""

    csr: x509.CertificateSigningRequest
    chain: list[x509.Certificate]
    signature: bytes


def build_csr(key: PrivateKey, *, common_name: str, organization: str | None = None,
              email: str | None = None) -> x509.CertificateSigningRequest:
    """A CSR for ``key`` signed with SHA-256 (Apple replaces the subject with its own)."""
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if email:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs)).sign(key, hashes.SHA256())


def csr_to_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def csr_to_der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def sign_request(
    csr: x509.CertificateSigningRequest,
    vendor_cert: x509.Certificate,
    vendor_key: PrivateKey,
    chain: Sequence[x509.Certificate] = (),
) -> bytes:
    """The base64 text of the signed request plist (what the portal takes), ASCII bytes.

    ``vendor_key`` must be the RSA key of ``vendor_cert`` (the MDM CSR signing certificate);
    ``chain`` is Apple's intermediate and root, in that order, when given.
    """
    if not isinstance(vendor_key, rsa.RSAPrivateKey):
        raise PKIError("the MDM vendor key must be an RSA key")
    if public_key_pem(vendor_key) != public_key_pem(vendor_cert):
        raise PKIError("the vendor key does not belong to the vendor certificate")
    der = csr_to_der(csr)
    signature = vendor_key.sign(der, padding.PKCS1v15(), hashes.SHA256())
    pem_chain = "".join(
        c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in (vendor_cert, *chain)
    )
    body = plistlib.dumps({
        CSR_FIELD: base64.b64encode(der).decode("ascii"),
        CHAIN_FIELD: pem_chain,
        SIGNATURE_FIELD: base64.b64encode(signature).decode("ascii"),
    }, fmt=plistlib.FMT_XML)
    return base64.b64encode(body)


def read_signed_request(data: bytes) -> SignedRequest:
    """Open a signed request (base64 of the plist) and check the vendor signature over the CSR with
    the public key of the chain's first certificate; :class:`PKIError` when anything is wrong."""
    if len(data) > MAX_REQUEST_BYTES:
        raise PKIError("the request is too large")
    try:
        body = base64.b64decode(b"".join(data.split()), validate=True)
        fields = plistlib.loads(body, fmt=plistlib.FMT_XML)
    except (binascii.Error, ValueError, plistlib.InvalidFileException) as exc:
        raise PKIError("not a base64-encoded XML property list") from exc
    if not isinstance(fields, dict) or any(not isinstance(fields.get(f), str) for f in FIELDS):
        raise PKIError(f"the request must hold the strings {', '.join(FIELDS)}")
    try:
        csr = x509.load_der_x509_csr(base64.b64decode(fields[CSR_FIELD], validate=True))
        chain = x509.load_pem_x509_certificates(fields[CHAIN_FIELD].encode("ascii"))
        signature = base64.b64decode(fields[SIGNATURE_FIELD], validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise PKIError("the request's CSR, chain or signature cannot be read") from exc
    vendor_public = chain[0].public_key()
    if not isinstance(vendor_public, rsa.RSAPublicKey):
        raise PKIError("the vendor certificate's key is not RSA")
    try:
        vendor_public.verify(signature, csr_to_der(csr), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise PKIError("the vendor signature does not match the CSR") from None
    return SignedRequest(csr, chain, signature)
