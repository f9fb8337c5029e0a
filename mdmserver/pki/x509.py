"""X.509 helpers: keys, the internal CA, issued certificates, PEM/DER/PKCS#12 conversions.

Pure module (cryptography only): no Flask, no SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Certificate = x509.Certificate
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

__all__ = [
    "Certificate",
    "IncompletePKCS12",
    "PKIError",
    "build_pkcs12",
    "cert_from_der",
    "cert_from_pem",
    "cert_to_der",
    "cert_to_pem",
    "client_identity_problem",
    "create_ca",
    "fingerprint_sha256",
    "generate_private_key",
    "is_issued_by",
    "issue_certificate",
    "key_from_pem",
    "key_to_pem",
    "key_to_pkcs8_der",
    "load_certificate",
    "load_pkcs12",
    "public_key_pem",
    "subject_string",
    "verify_signature_with_key",
]

#: Backdate notBefore a little so that devices with a slightly slow clock accept new certificates.
_CLOCK_SKEW = dt.timedelta(minutes=5)


class PKIError(ValueError):
    """Bad certificate/key input (unparseable, wrong password, unsupported key type)."""


class IncompletePKCS12(PKIError):
    """A PKCS#12 file that opened but lacks the certificate or its private key."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def generate_private_key(kind: str = "rsa", bits: int = 2048) -> PrivateKey:
    """A fresh RSA key (``kind="rsa"``, ``bits`` ≥ 2048) or EC P-256 key (``kind="ec"``)."""
    if kind == "rsa":
        if bits < 2048:
            raise PKIError("RSA keys shorter than 2048 bits are refused")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise PKIError(f"unknown key kind {kind!r} (expected 'rsa' or 'ec')")


def _name(common_name: str, organization: str | None) -> x509.Name:
    attrs = []
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _random_serial() -> int:
    # 159 bits: positive, fits the 20-octet limit of RFC 5280 and is unpredictable.
    return secrets.randbits(159) | 1


def create_ca(
    common_name: str,
    *,
    organization: str | None = None,
    key: PrivateKey | None = None,
    days: int = 3650,
) -> tuple[Certificate, PrivateKey]:
    """A self-signed CA certificate (pathLen 0) and its key; a new RSA-2048 key unless ``key`` is given."""
    if key is None:
        key = generate_private_key("rsa")
    name = _name(common_name, organization)
    now = _now()
    public_key = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(_random_serial())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


_USAGES = ("client", "server", "signing")


def issue_certificate(
    ca_cert: Certificate,
    ca_key: PrivateKey,
    *,
    common_name: str,
    public_key: PublicKey,
    days: float = 365,
    usage: str = "client",
    dns_names: Sequence[str] = (),
    organization: str | None = None,
) -> Certificate:
    """Issue an end-entity certificate signed by the CA.

    ``usage``: ``client`` (device identities: TLS client auth, CMS signing of MDM messages),
    ``server`` (TLS server, SAN from ``dns_names``/common name) or ``signing`` (CMS signatures of
    enrollment and configuration profiles: digitalSignature with emailProtection and codeSigning).
    """
    if usage not in _USAGES:
        raise PKIError(f"unknown certificate usage {usage!r} (expected one of {', '.join(_USAGES)})")
    now = _now()
    digital_signature = True
    key_encipherment = usage in ("client", "server") and isinstance(public_key, rsa.RSAPublicKey)
    key_agreement = usage == "server" and isinstance(public_key, ec.EllipticCurvePublicKey)
    if usage == "client":
        ekus = [ExtendedKeyUsageOID.CLIENT_AUTH]
    elif usage == "server":
        ekus = [ExtendedKeyUsageOID.SERVER_AUTH]
    else:
        ekus = [ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CODE_SIGNING]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organization))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(_random_serial())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=key_encipherment,
                data_encipherment=False,
                key_agreement=key_agreement,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_identifier(ca_cert), critical=False)
    )
    if usage == "server":
        names = list(dns_names) or [common_name]
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def _authority_key_identifier(ca_cert: Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


# --- encodings -----------------------------------------------------------------------------------


def fingerprint_sha256(cert: Certificate) -> str:
    """Lowercase hex SHA-256 of the certificate's DER encoding."""
    return cert.fingerprint(hashes.SHA256()).hex()


def cert_to_pem(cert: Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def cert_to_der(cert: Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def cert_from_pem(data: bytes | str) -> Certificate:
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    try:
        return x509.load_pem_x509_certificate(data)
    except (ValueError, TypeError) as exc:
        raise PKIError("not a PEM certificate") from exc


def cert_from_der(data: bytes) -> Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except (ValueError, TypeError) as exc:
        raise PKIError("not a DER certificate") from exc


def load_certificate(data: bytes | str) -> Certificate:
    """A certificate from PEM (the first one in the text) or DER bytes."""
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    if b"-----BEGIN CERTIFICATE-----" in data:
        return cert_from_pem(data)
    return cert_from_der(data)


def key_to_pem(key: PrivateKey, password: bytes | None = None) -> str:
    """PKCS#8 PEM, encrypted with the best available scheme when ``password`` is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode("ascii")


def key_to_pkcs8_der(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def key_from_pem(data: bytes | str, password: bytes | None = None) -> PrivateKey:
    """An RSA or EC private key from PEM (PKCS#1, SEC1 or PKCS#8, optionally encrypted)."""
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    try:
        key = serialization.load_pem_private_key(data, password=password or None)
    except TypeError as exc:
        # Raised both for "encrypted key, no password" and "password given, key not encrypted".
        raise PKIError(str(exc) or "private key password problem") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PKIError("not a readable private key (or wrong password)") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PKIError("only RSA and EC private keys are supported")
    return key


def public_key_pem(cert_or_key: Certificate | PrivateKey | PublicKey) -> str:
    """SubjectPublicKeyInfo PEM of a certificate's, private key's or public key's public half."""
    if isinstance(cert_or_key, x509.Certificate):
        public = cert_or_key.public_key()
    elif isinstance(cert_or_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        public = cert_or_key.public_key()
    else:
        public = cert_or_key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def build_pkcs12(
    cert: Certificate,
    key: PrivateKey,
    *,
    password: bytes,
    friendly_name: bytes,
    ca_certs: Iterable[Certificate] = (),
) -> bytes:
    """PKCS#12 with legacy PBES1 3DES/SHA-1 and a SHA-1 MAC.

    iOS and macOS reject (or silently fail to import) PKCS#12 files using PBES2/AES or a SHA-256
    MAC on many releases; the legacy algorithms are what they import reliably.
    """
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(password)
    )
    return pkcs12.serialize_key_and_certificates(
        friendly_name, key, cert, list(ca_certs) or None, encryption
    )


def load_pkcs12(
    data: bytes, password: bytes | None
) -> tuple[Certificate, PrivateKey, list[Certificate]]:
    """(certificate, key, additional certificates) from a PKCS#12 blob; ``PKIError`` when unreadable."""
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password or None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PKIError("not a readable PKCS#12 file (or wrong password)") from exc
    if cert is None or key is None:
        raise IncompletePKCS12("the PKCS#12 file must hold a certificate and its private key")
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PKIError("only RSA and EC private keys are supported")
    return cert, key, list(extra)


# --- verification --------------------------------------------------------------------------------


def verify_signature_with_key(
    public_key: object,
    signature: bytes,
    data: bytes,
    hash_algorithm: hashes.HashAlgorithm,
    *,
    rsa_pss: padding.PSS | None = None,
) -> bool:
    """True when ``signature`` over ``data`` verifies with ``public_key`` (RSA PKCS#1 v1.5/PSS, ECDSA, EdDSA)."""
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, rsa_pss or padding.PKCS1v15(), hash_algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
        elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public_key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def is_issued_by(cert: Certificate, ca_cert: Certificate, *, at: dt.datetime | None = None) -> bool:
    """True when ``ca_cert`` issued ``cert``: issuer name matches and the CA key verifies the signature.

    When ``at`` is given, both certificates must also be valid at that time.
    """
    if cert.issuer != ca_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    if at is not None:
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
        for c in (cert, ca_cert):
            if not (c.not_valid_before_utc <= at <= c.not_valid_after_utc):
                return False
    return True


def client_identity_problem(cert: Certificate) -> str | None:
    """Why ``cert`` cannot be a device's identity, or ``None`` when it can.

    A device identity is an end-entity certificate (BasicConstraints present with ``ca=False``) for
    TLS client authentication (the clientAuth extended key usage). This keeps the CA itself and the
    server's signing identity, both issued by the same CA, from passing as a device.
    """
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "certificate has no BasicConstraints"
    except ValueError:
        return "certificate extensions are malformed"
    if constraints.ca:
        return "certificate is a CA certificate"
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "certificate has no extended key usage"
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        return "certificate is not for client authentication"
    return None


def subject_string(cert: Certificate) -> str:
    """The subject in RFC 4514 form, e.g. ``CN=device,O=Example``."""
    return cert.subject.rfc4514_string()
