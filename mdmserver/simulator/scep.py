"""A SCEP client (RFC 8894) as an Apple device runs one for a ``com.apple.security.scep`` payload.

The device makes its own key (it never leaves the device), asks the service for its capabilities
(``GetCACaps``) and certificates (``GetCACert``: one DER certificate, or a degenerate PKCS#7 holding
a CA and its RA), and sends a ``PKCSReq``: a PKCS#10 request carrying the challenge password,
enveloped to the CA/RA certificate (RSA PKCS#1 v1.5 key transport; AES-128-CBC when the service says
``AES``, else DES-EDE3-CBC) and signed with a self-signed certificate of the new key, with the SCEP
signed attributes. The ``CertRep`` answer is checked (the CA's signature, our transaction id, our
nonce echoed), ``FAILURE`` and ``PENDING`` become typed errors (``PENDING`` is polled with
``GetCertInitial`` first), and the certificate is taken out of the envelope only we can open.

Written from RFC 8894 and Apple's payload reference; pure: asn1crypto and cryptography, and a
transport with ``request(method, url, content=None, headers=None) -> (status, headers, body)``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from asn1crypto import cms as acms
from asn1crypto import core, parser
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import AttributeOID, NameOID

from mdmserver.simulator.errors import SimulatorError

#: the SCEP signed attributes (RFC 8894 section 3.2.1; the VeriSign arc)
MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
PKI_STATUS = "2.16.840.1.113733.1.9.3"
FAIL_INFO = "2.16.840.1.113733.1.9.4"
SENDER_NONCE = "2.16.840.1.113733.1.9.5"
RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"

#: messageType values
CERT_REP, PKCS_REQ, GET_CERT_INITIAL = "3", "19", "20"
#: pkiStatus values
SUCCESS, FAILURE, PENDING = "0", "2", "3"
#: failInfo values (RFC 8894 section 3.2.1.4)
FAIL_REASONS = {"0": "badAlg", "1": "badMessageCheck", "2": "badRequest", "3": "badTime", "4": "badCertId"}

#: Apple's Subject short names
NAME_OIDS = {
    "C": NameOID.COUNTRY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME, "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "CN": NameOID.COMMON_NAME,
    "E": NameOID.EMAIL_ADDRESS, "EMAIL": NameOID.EMAIL_ADDRESS, "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER, "DC": NameOID.DOMAIN_COMPONENT, "UID": NameOID.USER_ID,
}

#: Apple's SubjectAltName keys → the general name they make
ALT_NAMES: dict[str, Callable[[str], x509.GeneralName]] = {
    "dNSName": x509.DNSName, "rfc822Name": x509.RFC822Name, "uniformResourceIdentifier": x509.UniformResourceIdentifier,
}

#: the payload's ``Key Usage`` bits (1 signing, 4 encryption)
KEY_USAGE_SIGNING, KEY_USAGE_ENCRYPTION = 1, 4

#: the most one answer may weigh
MAX_ANSWER_BYTES = 1 << 20


class ScepError(SimulatorError):
    """The SCEP service answered something a device refuses (or could not be reached)."""


class ScepFailure(ScepError):
    """``CertRep`` with pkiStatus FAILURE: ``fail_info`` is RFC 8894's name (``badRequest``…)."""

    def __init__(self, fail_info: str, text: str | None = None) -> None:
        self.fail_info, self.text = fail_info, text
        super().__init__(f"SCEP request refused: {fail_info}" + (f" ({text})" if text else ""))


class ScepPending(ScepError):
    """Still PENDING after every poll the payload allows."""

    def __init__(self, transaction_id: str, polls: int) -> None:
        self.transaction_id, self.polls = transaction_id, polls
        super().__init__(f"SCEP request {transaction_id} still pending after {polls} polls")


@dataclass(frozen=True)
class ScepSettings:
    """What a ``com.apple.security.scep`` payload's ``PayloadContent`` says."""

    url: str
    name: str = ""
    challenge: str | None = None
    subject: x509.Name = field(default_factory=lambda: x509.Name([]))
    alt_names: tuple[x509.GeneralName, ...] = ()
    key_size: int = 2048
    key_usage: int = KEY_USAGE_SIGNING | KEY_USAGE_ENCRYPTION
    retries: int = 3
    retry_delay: float = 10.0
    ca_fingerprint: bytes | None = None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ScepSettings:
        """``payload``: the SCEP payload (its ``PayloadContent`` dict holds the settings)."""
        content = payload.get("PayloadContent", payload)
        if not isinstance(content, dict) or not isinstance(content.get("URL"), str):
            raise ScepError("the SCEP payload has no URL")
        key_type = content.get("Key Type", "RSA")
        if key_type != "RSA":
            raise ScepError(f"SCEP Key Type {key_type!r} is not supported (devices only make RSA keys)")
        key_size = content.get("Keysize", 2048)
        if key_size not in (1024, 2048, 4096):
            raise ScepError(f"SCEP Keysize {key_size!r} is not one of 1024, 2048, 4096")
        return cls(
            url=content["URL"], name=_typed(content, "Name", str, ""),
            challenge=_typed(content, "Challenge", str, None),
            subject=subject_from_payload(content.get("Subject", [])),
            alt_names=alt_names_from_payload(content.get("SubjectAltName", {})),
            key_size=key_size, key_usage=_typed(content, "Key Usage", int, 0),
            retries=_typed(content, "Retries", int, 3), retry_delay=float(_typed(content, "RetryDelay", int, 10)),
            ca_fingerprint=_typed(content, "CAFingerprint", bytes, None),
        )


def _typed(content: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """``content[key]`` when it is of ``kind`` (a plist's integer, string or data), else a refusal."""
    value = content.get(key, default)
    if value is not default and (not isinstance(value, kind) or isinstance(value, bool)):
        raise ScepError(f"the SCEP payload's {key} is not {'data' if kind is bytes else kind.__name__}: {value!r}")
    return value


def subject_from_payload(subject: Any) -> x509.Name:
    """Apple's Subject: a list of RDNs, each a list of ``[type, value]`` pairs (``[[["CN", "x"]]]``);
    a type is a short name (``CN``, ``O``…) or a dotted OID."""
    if not isinstance(subject, list):
        raise ScepError("the SCEP Subject is not a list of relative distinguished names")
    rdns = []
    for rdn in subject:
        if not isinstance(rdn, list) or not rdn:
            raise ScepError(f"the SCEP Subject has a malformed entry {rdn!r}")
        attributes = []
        for pair in rdn:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                raise ScepError(f"the SCEP Subject has a malformed entry {pair!r}")
            kind, value = pair
            try:
                oid = NAME_OIDS.get(kind.upper()) or x509.ObjectIdentifier(kind)
                attributes.append(x509.NameAttribute(oid, value))
            except ValueError as exc:
                raise ScepError(f"the SCEP Subject entry {pair!r} is not usable: {exc}") from None
        rdns.append(x509.RelativeDistinguishedName(attributes))
    return x509.Name(rdns)


def alt_names_from_payload(alt: Any) -> tuple[x509.GeneralName, ...]:
    if not isinstance(alt, dict):
        raise ScepError("the SCEP SubjectAltName is not a dictionary")
    names: list[x509.GeneralName] = []
    for key, values in alt.items():
        make = ALT_NAMES.get(key)
        if make is None:
            continue  # ntPrincipalName and the like: a device without a directory account leaves them out
        for value in values if isinstance(values, list) else [values]:
            names.append(make(str(value)))
    return tuple(names)


def generate_key(key_size: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def transaction_id_for(key: rsa.RSAPrivateKey) -> str:
    """Hex SHA-256 of the public key (SubjectPublicKeyInfo DER), as common clients make it."""
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest().upper()


# --- the CA's certificates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CACertificates:
    """GetCACert's answer: ``recipient`` is the certificate requests are enveloped to (the RA when
    there is one), ``ca`` the CA (the one CAFingerprint names, when the payload has one), ``signers``
    the certificates a CertRep may be signed by (the CA and the RAs it issued), ``all`` every
    certificate the service named."""

    recipient: x509.Certificate
    ca: x509.Certificate
    signers: tuple[x509.Certificate, ...]
    all: tuple[x509.Certificate, ...]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return cert.subject == cert.issuer


def _can_encipher(cert: x509.Certificate) -> bool:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_encipherment


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _pinned(certs: list[x509.Certificate], fingerprint: bytes) -> x509.Certificate:
    """The certificate whose MD5, SHA-1 or SHA-256 (by the fingerprint's length) is ``fingerprint``."""
    algorithm = {16: "md5", 20: "sha1", 32: "sha256"}.get(len(fingerprint))
    if algorithm is None:
        raise ScepError("the payload's CAFingerprint is not an MD5, SHA-1 or SHA-256 digest")
    for cert in certs:
        if hashlib.new(algorithm, cert.public_bytes(serialization.Encoding.DER)).digest() == fingerprint:
            return cert
    raise ScepError("no certificate of the SCEP service matches the payload's CAFingerprint")


def parse_ca_certs(content_type: str, body: bytes, fingerprint: bytes | None = None) -> CACertificates:
    """GetCACert's answer, checked against the payload's CAFingerprint when there is one: then only
    that CA and the RA certificates it issued are used."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/x-x509-ca-cert":
        try:
            certs = [x509.load_der_x509_certificate(body)]
        except ValueError as exc:
            raise ScepError(f"GetCACert answered a certificate that does not parse: {exc}") from None
    elif kind == "application/x-x509-ca-ra-cert":
        certs = _degenerate_certificates(body, "GetCACert")
        if not certs:
            raise ScepError("GetCACert answered a PKCS#7 without certificates")
    else:
        raise ScepError(f"GetCACert answered content type {content_type!r}, not a CA certificate")
    if fingerprint is not None:
        ca = _pinned(certs, fingerprint)
        usable = [ca] + [c for c in certs if c is not ca and not _is_ca(c) and _issued_by(c, ca)]
    else:
        cas = [c for c in certs if _is_ca(c)] or certs
        # a root and the CA below it: the CA is the one that issued no other CA of the answer
        ca = next((c for c in cas if not any(o is not c and _is_ca(o) and _issued_by(o, c) for o in cas)), cas[0])
        usable = certs
    ras = [c for c in usable if not _is_ca(c) and _can_encipher(c)]
    recipient = ras[0] if ras else ca
    if not isinstance(recipient.public_key(), rsa.RSAPublicKey):
        raise ScepError("the SCEP recipient certificate's key is not RSA")
    return CACertificates(recipient, ca, tuple(usable), tuple(certs))


def _degenerate_certificates(body: bytes, what: str) -> list[x509.Certificate]:
    """The certificates of a certs-only (degenerate) SignedData."""
    try:
        info = acms.ContentInfo.load(body)
        if info["content_type"].native != "signed_data":
            raise ScepError(f"{what}: the PKCS#7 is {info['content_type'].native}, not signedData")
        certs = [x509.load_der_x509_certificate(c.chosen.dump()) for c in info["content"]["certificates"] or []
                 if c.name == "certificate"]
    except ScepError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise ScepError(f"{what}: not a PKCS#7 certificate set ({type(exc).__name__}: {exc})") from None
    return certs


# --- building a request --------------------------------------------------------------------------------


def build_csr(key: rsa.RSAPrivateKey, settings: ScepSettings) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(settings.subject)
    if settings.challenge is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, settings.challenge.encode())
    if settings.key_usage:
        signing = bool(settings.key_usage & KEY_USAGE_SIGNING)
        encryption = bool(settings.key_usage & KEY_USAGE_ENCRYPTION)
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=signing, content_commitment=False, key_encipherment=encryption,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
    if settings.alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(settings.alt_names)), critical=False)
    return builder.sign(key, hashes.SHA256())


def self_signed_certificate(key: rsa.RSAPrivateKey, subject: x509.Name) -> x509.Certificate:
    """The throw-away certificate a requester signs its request with (RFC 8894 section 2.3)."""
    now = dt.datetime.now(dt.UTC)
    name = subject if len(subject) else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SCEP requester")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))


def _issuer_and_serial(cert: x509.Certificate) -> acms.IssuerAndSerialNumber:
    parsed = ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    return acms.IssuerAndSerialNumber({"issuer": parsed.issuer, "serial_number": parsed.serial_number})


def envelope(content: bytes, recipient: x509.Certificate, *, aes: bool) -> bytes:
    """CMS EnvelopedData (as a ContentInfo) of ``content`` for ``recipient``'s RSA key."""
    public_key = recipient.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ScepError("the SCEP recipient certificate's key is not RSA")
    if aes:
        cek, iv, algorithm, cipher = os.urandom(16), os.urandom(16), "aes128_cbc", algorithms.AES
    else:
        cek, iv, algorithm, cipher = os.urandom(24), os.urandom(8), "tripledes_3key", TripleDES
    padder = padding.PKCS7(cipher.block_size).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = Cipher(cipher(cek), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(padded) + encryptor.finalize()
    enveloped = acms.EnvelopedData({
        "version": "v0",
        "recipient_infos": [acms.RecipientInfo(name="ktri", value=acms.KeyTransRecipientInfo({
            "version": "v0",
            "rid": acms.RecipientIdentifier(name="issuer_and_serial_number", value=_issuer_and_serial(recipient)),
            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15", "parameters": core.Null()},
            "encrypted_key": public_key.encrypt(cek, asym_padding.PKCS1v15()),
        }))],
        "encrypted_content_info": {
            "content_type": "data",
            "content_encryption_algorithm": {"algorithm": algorithm, "parameters": core.OctetString(iv)},
            "encrypted_content": encrypted,
        },
    })
    return acms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


def _attribute(oid: str, value: core.Asn1Value) -> acms.CMSAttribute:
    return acms.CMSAttribute({"type": oid, "values": [value]})


def signed_message(
    inner: bytes, key: rsa.RSAPrivateKey, signer: x509.Certificate, attributes: list[acms.CMSAttribute],
) -> bytes:
    """SignedData over ``inner`` (encapsulated as ``data``) with contentType, messageDigest,
    signingTime and the SCEP ``attributes`` signed (DER SET OF order)."""
    every = [
        acms.CMSAttribute({"type": "content_type", "values": ["data"]}),
        acms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(inner).digest()]}),
        acms.CMSAttribute({"type": "signing_time", "values": [
            acms.Time(name="utc_time", value=dt.datetime.now(dt.UTC).replace(microsecond=0))]}),
        *attributes,
    ]
    every.sort(key=lambda a: a.dump())
    signed_attrs = acms.CMSAttributes(every)
    to_sign = signed_attrs.dump(force=True)
    signature = key.sign(to_sign, asym_padding.PKCS1v15(), hashes.SHA256())
    signer_der = signer.public_bytes(serialization.Encoding.DER)
    signed = acms.SignedData({
        "version": "v1",
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": "data", "content": inner},
        "certificates": [acms.CertificateChoices(name="certificate", value=ax509.Certificate.load(signer_der))],
        "signer_infos": [{
            "version": "v1",
            "sid": acms.SignerIdentifier(name="issuer_and_serial_number", value=_issuer_and_serial(signer)),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": signed_attrs,
            "signature_algorithm": {"algorithm": "rsassa_pkcs1v15", "parameters": core.Null()},
            "signature": signature,
        }],
    })
    return acms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()


# --- reading an answer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertRep:
    status: str
    fail_info: str | None
    fail_text: str | None
    transaction_id: str
    recipient_nonce: bytes
    enveloped: bytes


_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def _native(value: core.Asn1Value, spec: type[core.Asn1Value]) -> Any:
    """An attribute value as Python: asn1crypto leaves the SCEP attributes unparsed (``Any``)."""
    return value.parse(spec).native if isinstance(value, core.Any) else value.native


def _printable(attrs: dict[str, core.Asn1Value], oid: str) -> str | None:
    value = attrs.get(oid)
    if value is None:
        return None
    for spec in (core.PrintableString, core.UTF8String, core.IA5String):
        try:
            text = _native(value, spec)
        except (ValueError, TypeError):
            continue
        if isinstance(text, str):
            return text
    raise ScepError(f"CertRep attribute {oid} is not a string")


def _names(sid: acms.SignerIdentifier, cert: x509.Certificate) -> bool:
    """Whether a SignerIdentifier (issuer and serial number, or subject key identifier) names ``cert``."""
    if sid.name == "issuer_and_serial_number":
        return (cert.serial_number == sid.chosen["serial_number"].native
                and ax509.Name.load(cert.issuer.public_bytes()) == sid.chosen["issuer"])
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return False
    return ski == sid.chosen.native


def parse_cert_rep(body: bytes, ca: CACertificates) -> CertRep:
    """Check the CertRep's signature (by one of the CA's certificates) and read its attributes."""
    try:
        return _parse_cert_rep(body, ca)
    except ScepError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ScepError(f"the SCEP answer is not a CertRep message ({type(exc).__name__}: {exc})") from None


def _parse_cert_rep(body: bytes, ca: CACertificates) -> CertRep:
    info = acms.ContentInfo.load(body)
    if info["content_type"].native != "signed_data":
        raise ScepError(f"the SCEP answer is {info['content_type'].native}, not signedData")
    signed = info["content"]
    if len(signed["signer_infos"]) != 1:
        raise ScepError("the CertRep does not have exactly one signer")
    signer_info = signed["signer_infos"][0]
    signed_attrs = signer_info["signed_attrs"]
    if not signed_attrs:
        raise ScepError("the CertRep has no signed attributes")
    attrs: dict[str, core.Asn1Value] = {}
    for attribute in signed_attrs:
        oid = attribute["type"].dotted
        if oid in attrs or len(attribute["values"]) != 1:
            raise ScepError(f"the CertRep attribute {oid} is repeated or multi-valued")
        attrs[oid] = attribute["values"][0]

    # who signed: one of the certificates GetCACert named
    signer = next((c for c in ca.signers if _names(signer_info["sid"], c)), None)
    if signer is None:
        raise ScepError("the CertRep is not signed by the SCEP service's CA or RA certificate")

    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    if digest_name not in _HASHES:
        raise ScepError(f"the CertRep digest algorithm {digest_name} is not accepted")
    content = signed["encap_content_info"]["content"]
    inner = content.native if content is not None and content.native is not None else b""
    digest = hashlib.new(digest_name, inner).digest()
    declared_digest = attrs.get("1.2.840.113549.1.9.4")
    if declared_digest is None or _native(declared_digest, core.OctetString) != digest:
        raise ScepError("the CertRep's messageDigest does not match its content")
    public_key = signer.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ScepError("the CertRep signer's key is not RSA")
    try:
        public_key.verify(signer_info["signature"].native, b"\x31" + signed_attrs.dump()[1:],
                          asym_padding.PKCS1v15(), _HASHES[digest_name]())
    except InvalidSignature:
        raise ScepError("the CertRep's signature does not verify with the SCEP service's certificate") from None

    if _printable(attrs, MESSAGE_TYPE) != CERT_REP:
        raise ScepError(f"the SCEP answer's messageType is {_printable(attrs, MESSAGE_TYPE)!r}, not CertRep (3)")
    status = _printable(attrs, PKI_STATUS)
    if status not in (SUCCESS, FAILURE, PENDING):
        raise ScepError(f"the CertRep's pkiStatus {status!r} is not SUCCESS, FAILURE or PENDING")
    nonce = attrs.get(RECIPIENT_NONCE)
    fail_info = _printable(attrs, FAIL_INFO)
    return CertRep(
        status=status, fail_info=FAIL_REASONS.get(fail_info or "", fail_info),
        fail_text=_printable(attrs, FAIL_INFO_TEXT), transaction_id=_printable(attrs, TRANSACTION_ID) or "",
        recipient_nonce=_native(nonce, core.OctetString) if nonce is not None else b"",
        enveloped=inner,
    )


class _EncryptedContentInfo(core.Sequence):
    """EncryptedContentInfo read leniently: Go's pkcs7 (and other BER writers) send the encrypted
    content as a constructed [0] of OCTET STRING pieces, which asn1crypto's DER spec refuses."""

    _fields = [
        ("content_type", acms.ContentType),
        ("content_encryption_algorithm", acms.EncryptionAlgorithm),
        ("encrypted_content", core.Any, {"optional": True}),
    ]


def _octets(value: core.Any) -> bytes:
    """The bytes of an implicitly tagged OCTET STRING, primitive or constructed (pieces joined)."""
    data = value.contents
    if not value._header[0] & 0x20:  # the identifier octet says primitive (asn1crypto's Any keeps no method)
        return data
    pointer, pieces = 0, []
    while pointer < len(data):
        _class, _method, _tag, header, contents, trailer = parser.parse(data[pointer:], strict=False)
        if _tag == 0 and _class == 0 and not contents:
            break  # the end-of-contents octets of an indefinite length
        pieces.append(core.OctetString.load(header + contents + trailer).native)
        pointer += len(header) + len(contents) + len(trailer)
    return b"".join(pieces)


def open_envelope(data: bytes, key: rsa.RSAPrivateKey, recipient: x509.Certificate) -> bytes:
    """The content of an EnvelopedData (ContentInfo) addressed to ``recipient`` (our signer certificate)."""
    try:
        info = acms.ContentInfo.load(data)
        if info["content_type"].native != "enveloped_data":
            raise ScepError(f"the CertRep content is {info['content_type'].native}, not envelopedData")
        enveloped = info["content"]
        ours = _issuer_and_serial(recipient)
        encrypted_key = None
        for recipient_info in enveloped["recipient_infos"]:
            if recipient_info.name != "ktri":
                continue
            rid = recipient_info.chosen["rid"]
            if rid.name == "issuer_and_serial_number" and rid.chosen.dump() == ours.dump():
                encrypted_key = recipient_info.chosen["encrypted_key"].native
        if encrypted_key is None:
            raise ScepError("the CertRep's envelope is not addressed to this device")
        encrypted_info = _EncryptedContentInfo.load(enveloped["encrypted_content_info"].dump())
        algorithm = encrypted_info["content_encryption_algorithm"]
        name = algorithm["algorithm"].native
        iv = algorithm["parameters"].native
        # single DES too: devices accept it, and common servers (micromdm's scep) still answer with it
        ciphers = {"aes128_cbc": algorithms.AES, "aes192_cbc": algorithms.AES, "aes256_cbc": algorithms.AES,
                   "tripledes_3key": TripleDES, "des": TripleDES}
        if name not in ciphers:
            raise ScepError(f"the CertRep's envelope uses {name}, which this device does not accept")
        cek = key.decrypt(encrypted_key, asym_padding.PKCS1v15())
        if name == "des":
            if len(cek) != 8:
                raise ScepError("the CertRep's DES key is not 8 bytes")
            cek *= 3  # DES is triple DES with one key three times
        cipher = ciphers[name]
        decryptor = Cipher(cipher(cek), modes.CBC(iv)).decryptor()
        padded = decryptor.update(_octets(encrypted_info["encrypted_content"])) + decryptor.finalize()
        unpadder = padding.PKCS7(cipher.block_size).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except ScepError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ScepError(f"the CertRep's envelope does not open ({type(exc).__name__}: {exc})") from None


# --- the client ----------------------------------------------------------------------------------------


@dataclass
class ScepResult:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey
    ca: CACertificates
    transaction_id: str
    polls: int
    encryption: str


class ScepClient:
    """One device's SCEP exchange. ``sleep`` is what waits between polls (tests pass their own)."""

    def __init__(self, transport, settings: ScepSettings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.transport, self.settings, self.sleep = transport, settings, sleep

    def _url(self, operation: str, message: str | None = None) -> str:
        parts = urlsplit(self.settings.url)
        query = f"operation={operation}"
        if message is not None:
            query += "&message=" + quote(message, safe="")
        return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))

    def _get(self, operation: str, message: str | None = None) -> tuple[dict[str, str], bytes]:
        status, headers, body = self.transport.request("GET", self._url(operation, message))
        return self._answer(operation, status, headers, body)

    def _answer(self, operation, status, headers, body) -> tuple[dict[str, str], bytes]:
        if status != 200:
            raise ScepError(f"SCEP {operation} answered HTTP {status}: {body[:200]!r}")
        if len(body) > MAX_ANSWER_BYTES:
            raise ScepError(f"SCEP {operation} answered {len(body)} bytes")
        return {k.lower(): v for k, v in headers.items()}, body

    def get_ca_caps(self) -> set[str]:
        _headers, body = self._get("GetCACaps")
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            raise ScepError("GetCACaps answered something that is not text") from None
        return {line.strip().upper() for line in text.splitlines() if line.strip()}

    def get_ca_cert(self) -> CACertificates:
        headers, body = self._get("GetCACert", self.settings.name or "CA")
        return parse_ca_certs(headers.get("content-type", ""), body, self.settings.ca_fingerprint)

    def _pki_operation(self, message: bytes, caps: set[str]) -> bytes:
        if "POSTPKIOPERATION" in caps:
            status, headers, body = self.transport.request(
                "POST", self._url("PKIOperation"), content=message,
                headers={"Content-Type": "application/x-pki-message"})
        else:
            status, headers, body = self.transport.request(
                "GET", self._url("PKIOperation", base64.b64encode(message).decode()))
        headers, body = self._answer("PKIOperation", status, headers, body)
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-pki-message":
            raise ScepError(f"SCEP PKIOperation answered content type {kind!r}, not application/x-pki-message")
        return body

    def enroll(self, key: rsa.RSAPrivateKey | None = None) -> ScepResult:
        """GetCACaps, GetCACert, PKCSReq (polled with GetCertInitial while PENDING): the certificate
        for ``key`` (made here, of the payload's size, when not given)."""
        settings = self.settings
        if key is None:
            key = generate_key(settings.key_size)
        elif not isinstance(key, rsa.RSAPrivateKey):
            raise ScepError("a SCEP key must be RSA")
        caps = self.get_ca_caps()
        ca = self.get_ca_cert()
        aes = "AES" in caps
        csr = build_csr(key, settings)
        signer = self_signed_certificate(key, settings.subject)
        transaction_id = transaction_id_for(key)

        def exchange(message_type: str, content: bytes) -> CertRep:
            nonce = os.urandom(16)
            message = signed_message(envelope(content, ca.recipient, aes=aes), key, signer, [
                _attribute(MESSAGE_TYPE, core.PrintableString(message_type)),
                _attribute(TRANSACTION_ID, core.PrintableString(transaction_id)),
                _attribute(SENDER_NONCE, core.OctetString(nonce)),
            ])
            rep = parse_cert_rep(self._pki_operation(message, caps), ca)
            if rep.transaction_id != transaction_id:
                raise ScepError(f"the CertRep's transactionID {rep.transaction_id!r} is not ours ({transaction_id})")
            if rep.recipient_nonce != nonce:
                raise ScepError("the CertRep's recipientNonce is not the nonce we sent (a replayed answer?)")
            return rep

        rep = exchange(PKCS_REQ, csr.public_bytes(serialization.Encoding.DER))
        polls = 0
        while rep.status == PENDING:
            if polls >= settings.retries:
                raise ScepPending(transaction_id, polls)
            self.sleep(settings.retry_delay)
            polls += 1
            rep = exchange(GET_CERT_INITIAL, _issuer_and_subject(ca.ca, settings.subject, signer))
        if rep.status == FAILURE:
            raise ScepFailure(rep.fail_info or "unspecified", rep.fail_text)
        certs = _degenerate_certificates(open_envelope(rep.enveloped, key, signer), "CertRep")
        ours = key.public_key().public_numbers()
        issued = next((c for c in certs if isinstance(c.public_key(), rsa.RSAPublicKey)
                       and c.public_key().public_numbers() == ours), None)
        if issued is None:
            raise ScepError("the CertRep holds no certificate for this device's key")
        if not any(_issued_by(issued, c) for c in ca.signers):
            raise ScepError("the CertRep's certificate is not issued by the SCEP service's CA")
        return ScepResult(issued, key, ca, transaction_id, polls, "aes128_cbc" if aes else "des_ede3_cbc")


class _IssuerAndSubject(core.Sequence):
    _fields = [("issuer", ax509.Name), ("subject", ax509.Name)]


def _issuer_and_subject(ca: x509.Certificate, subject: x509.Name, signer: x509.Certificate) -> bytes:
    """GetCertInitial's content (RFC 8894 section 3.3.3): the CA's name and the requested subject."""
    name = subject if len(subject) else signer.subject
    return _IssuerAndSubject({
        "issuer": ax509.Name.load(ca.subject.public_bytes()),
        "subject": ax509.Name.load(name.public_bytes()),
    }).dump()
