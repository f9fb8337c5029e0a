"""SCEP (RFC 8894) messages: read a requester's pkiMessage, write the CA's CertRep.

A pkiMessage is a CMS SignedData whose signed attributes carry the SCEP fields (message type,
transaction id, nonces, status) and whose content is a CMS EnvelopedData (the pkcsPKIEnvelope)
encrypted to the CA: a PKCS#10 request (PKCSReq, RenewalReq) or an IssuerAndSubject
(GetCertInitial). The CA answers with a CertRep: a SignedData signed by the CA whose envelope,
encrypted to the requester's signer certificate, holds a certs-only SignedData with the issued
certificate.

Input is untrusted: it is bounded and pre-scanned by :mod:`mdmserver.pki.cms` before asn1crypto
sees it, and every failure is a :class:`ScepError` with a short reason; no other exception escapes
the public functions. A decryption failure and a padding failure read the same (see
:func:`_decrypt_envelope`), so the endpoint is no padding oracle.

Pure module: no Flask, no SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import os
from dataclasses import dataclass

from asn1crypto import algos as aalgos
from asn1crypto import cms as acms
from asn1crypto import core as acore
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as sympadding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import AttributeOID

from mdmserver.errors import InputError
from mdmserver.pki import cms
from mdmserver.pki.x509 import cert_to_der

__all__ = [
    "CONTENT_ENCRYPTIONS",
    "WEAK_CONTENT_ENCRYPTIONS",
    "FailInfo",
    "MAX_MESSAGE_SIZE",
    "MessageType",
    "PkiStatus",
    "ScepError",
    "ScepMalformed",
    "ScepSignatureError",
    "ScepDecryptError",
    "ScepUnsupported",
    "ScepRequest",
    "IssuerAndSubject",
    "build_cert_rep",
    "challenge_password",
    "parse_pki_message",
]

#: A PKCSReq carries a CSR and a self-signed certificate: a few KiB. 64 KiB is generous.
MAX_MESSAGE_SIZE = 64 * 1024

_OID_DATA = "1.2.840.113549.1.7.1"
_OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"

_OID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
_OID_PKI_STATUS = "2.16.840.1.113733.1.9.3"
_OID_FAIL_INFO = "2.16.840.1.113733.1.9.4"
_OID_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
_OID_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
_OID_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"

#: RFC 8894 3.2.1.4.5: nonces are 16 octets; a little slack for clients that send more.
_NONCE_MAX = 64
#: transactionID is a PrintableString (RFC 8894 suggests a hash of the public key, hex).
_TRANSACTION_ID_MAX = 128


class ScepError(InputError):
    """A pkiMessage that cannot be read, verified or decrypted: answered 400 (``bad_scep_message``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, status=400, code="bad_scep_message")
        self.reason = reason


class ScepMalformed(ScepError):
    """Not a pkiMessage: truncated, garbage, too large, too deep, missing or repeated attributes."""


class ScepSignatureError(ScepError):
    """The signature over the signed attributes does not verify with the embedded signer certificate."""


class ScepDecryptError(ScepError):
    """The pkcsPKIEnvelope is not for our CA, or does not decrypt to a well-formed message."""


class ScepUnsupported(ScepError):
    """A message type, key or algorithm this server does not speak."""


class MessageType(enum.StrEnum):
    CERT_REP = "3"
    RENEWAL_REQ = "17"
    PKCS_REQ = "19"
    GET_CERT_INITIAL = "20"
    GET_CERT = "21"
    GET_CRL = "22"


class PkiStatus(enum.StrEnum):
    SUCCESS = "0"
    FAILURE = "2"
    PENDING = "3"


class FailInfo(enum.StrEnum):
    BAD_ALG = "0"
    BAD_MESSAGE_CHECK = "1"
    BAD_REQUEST = "2"
    BAD_TIME = "3"
    BAD_CERT_ID = "4"


class _Cbc:
    """A CBC content-encryption algorithm: its cryptography cipher and key length."""

    def __init__(self, name: str, cipher, key_size: int, block_size: int) -> None:
        self.name = name
        self.cipher = cipher
        self.key_size = key_size
        self.block_size = block_size


#: Content encryption accepted in a request and used for the reply (the request's own choice).
CONTENT_ENCRYPTIONS: dict[str, _Cbc] = {
    "aes128_cbc": _Cbc("aes128_cbc", algorithms.AES, 16, 128),
    "aes192_cbc": _Cbc("aes192_cbc", algorithms.AES, 24, 128),
    "aes256_cbc": _Cbc("aes256_cbc", algorithms.AES, 32, 128),
    # DES-EDE3-CBC: what older clients send when the CA announces no AES; still sent by some.
    "tripledes_3key": _Cbc("tripledes_3key", TripleDES, 24, 64),
    # single DES-CBC (56-bit, broken; RFC 8894 2.9): only with ``allow_des``. Some clients send
    # nothing else (micromdm's scepclient 2.1). Triple DES with one key three times is single DES.
    "des": _Cbc("des", lambda key: TripleDES(key * 3), 8, 64),
}
#: the content encryptions accepted only when the caller allows them
WEAK_CONTENT_ENCRYPTIONS = frozenset({"des"})

_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class IssuerAndSubject(acore.Sequence):
    """GetCertInitial's messageData (RFC 8894 3.3.3)."""

    _fields = [("issuer", ax509.Name), ("subject", ax509.Name)]


@dataclass(frozen=True)
class ScepRequest:
    """A verified, decrypted pkiMessage."""

    message_type: MessageType
    transaction_id: str
    sender_nonce: bytes
    #: the certificate whose key signed the message (the reply is encrypted to it)
    signer: x509.Certificate
    #: the content-encryption algorithm the requester used (the reply uses the same)
    content_encryption: str
    #: PKCSReq / RenewalReq
    csr: x509.CertificateSigningRequest | None = None
    #: GetCertInitial: the issuer and subject names, DER
    issuer_der: bytes | None = None
    subject_der: bytes | None = None
    #: set when the message is sound but uses an algorithm refused here (its envelope is not
    #: opened): the answer is a CertRep FAILURE with this failInfo
    refusal: FailInfo | None = None
    refusal_reason: str | None = None


# --- reading ---------------------------------------------------------------------------------------


def parse_pki_message(
    data: bytes,
    *,
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    max_size: int = MAX_MESSAGE_SIZE,
    allow_des: bool = False,
) -> ScepRequest:
    """Verify and decrypt a pkiMessage sent to the CA ``ca_cert`` (whose key is ``ca_key``).

    The signature is checked with the signer certificate embedded in the message; for a PKCSReq it
    must be self-signed (the requester has no certificate yet). An envelope in an algorithm not
    accepted (single DES unless ``allow_des``, anything unknown) is not opened: the request comes
    back with ``refusal`` set to ``badAlg``. Whether the request is granted is not decided here.
    """
    if not isinstance(data, bytes | bytearray):
        raise ScepMalformed("no message")
    data = bytes(data)
    if len(data) > max_size:
        raise ScepMalformed("message too large")
    try:
        signed = cms.unwrap_signed(data, max_size=max_size)
    except cms.CMSError as exc:
        raise _from_cms(exc) from None
    try:
        return _read(data, signed, ca_cert, ca_key, allow_des)
    except ScepError:
        raise
    except Exception as exc:  # noqa: BLE001 — parser boundary: asn1crypto raises many types on hostile input
        raise ScepMalformed("malformed SCEP message") from exc


_SIGNATURE_REASONS = {"bad signature", "digest mismatch", "signature algorithm does not match the signer key"}


def _from_cms(exc: cms.CMSError) -> ScepError:
    if exc.reason in _SIGNATURE_REASONS:
        return ScepSignatureError(exc.reason)
    return ScepMalformed(exc.reason)


def _read(data: bytes, signed: cms.SignedContent, ca_cert: x509.Certificate, ca_key: rsa.RSAPrivateKey,
          allow_des: bool) -> ScepRequest:
    info = acms.ContentInfo.load(data)
    signed_data = info["content"]
    if signed_data["encap_content_info"]["content_type"].dotted != _OID_DATA:
        raise ScepMalformed("pkiMessage content is not data")
    attrs = _scep_attributes(signed_data["signer_infos"][0]["signed_attrs"])
    raw_type = _printable(attrs, _OID_MESSAGE_TYPE, "messageType")
    try:
        message_type = MessageType(raw_type)
    except ValueError:
        raise ScepUnsupported(f"unknown messageType {raw_type[:8]!r}") from None
    if message_type is MessageType.CERT_REP:
        raise ScepUnsupported("a CertRep is not a request")
    transaction_id = _printable(attrs, _OID_TRANSACTION_ID, "transactionID")
    if not transaction_id or len(transaction_id) > _TRANSACTION_ID_MAX:
        raise ScepMalformed("transactionID missing or too long")
    if not (transaction_id.isascii() and transaction_id.isprintable()):
        raise ScepMalformed("transactionID must be printable ASCII")  # it is stored and logged
    nonce = _octets(attrs, _OID_SENDER_NONCE, "senderNonce")
    if not 8 <= len(nonce) <= _NONCE_MAX:
        raise ScepMalformed("senderNonce must be 8 to 64 octets")
    signer = signed.signer
    if signer is None:
        raise ScepMalformed("no signer certificate")
    if message_type is MessageType.PKCS_REQ and not _self_signed(signer):
        raise ScepSignatureError("a PKCSReq must be signed with a self-signed certificate")
    request = {"message_type": message_type, "transaction_id": transaction_id, "sender_nonce": nonce,
               "signer": signer}
    try:
        plaintext, algorithm = _decrypt_envelope(signed.content, ca_cert, ca_key, allow_des)
    except _RefusedAlgorithm as refused:
        return ScepRequest(**request, content_encryption=refused.algorithm, refusal=FailInfo.BAD_ALG,
                           refusal_reason=str(refused))
    request["content_encryption"] = algorithm
    reader = _CONTENT_READERS.get(message_type)
    if reader is None:
        return ScepRequest(**request)
    return ScepRequest(**request, **reader(plaintext))


def _read_csr(plaintext: bytes) -> dict:
    try:
        csr = x509.load_der_x509_csr(plaintext)
        valid = csr.is_signature_valid
    except ValueError:
        raise ScepDecryptError("could not decrypt the message") from None
    if not valid:
        raise ScepSignatureError("the certificate request's self-signature does not verify")
    return {"csr": csr}


def _read_issuer_and_subject(plaintext: bytes) -> dict:
    try:
        _bounded(plaintext)
        value = IssuerAndSubject.load(plaintext, strict=True)
        issuer = value["issuer"].dump()
        subject = value["subject"].dump()
    except ValueError:  # ScepMalformed included: every failure after decryption reads the same
        raise ScepDecryptError("could not decrypt the message") from None
    return {"issuer_der": issuer, "subject_der": subject}


_CONTENT_READERS = {
    MessageType.PKCS_REQ: _read_csr,
    MessageType.RENEWAL_REQ: _read_csr,
    MessageType.GET_CERT_INITIAL: _read_issuer_and_subject,
}


def _bounded(data: bytes) -> None:
    """The pre-parse bounds of :mod:`mdmserver.pki.cms`, for the structures inside the message."""
    try:
        cms.check_structure(data)
    except cms.CMSError as exc:
        raise ScepMalformed(exc.reason) from None


def _scep_attributes(signed_attrs) -> dict[str, acore.Any]:
    """The signed attributes by OID; each SCEP attribute at most once, with exactly one value."""
    if isinstance(signed_attrs, acore.Void) or not len(signed_attrs):
        raise ScepMalformed("no signed attributes")
    found: dict[str, acore.Any] = {}
    for attr in signed_attrs:
        oid = attr["type"].dotted
        if not oid.startswith("2.16.840.1.113733.1.9."):
            continue
        values = attr["values"]
        if oid in found or len(values) != 1:
            raise ScepMalformed("repeated or multi-valued SCEP attribute")
        found[oid] = values[0]
    return found


def _printable(attrs: dict, oid: str, name: str) -> str:
    value = attrs.get(oid)
    if value is None:
        raise ScepMalformed(f"no {name} attribute")
    parsed = acore.load(value.dump())
    if not isinstance(parsed, acore.PrintableString | acore.UTF8String | acore.IA5String):
        raise ScepMalformed(f"{name} is not a string")
    return parsed.native


def _octets(attrs: dict, oid: str, name: str) -> bytes:
    value = attrs.get(oid)
    if value is None:
        raise ScepMalformed(f"no {name} attribute")
    parsed = acore.load(value.dump())
    if not isinstance(parsed, acore.OctetString):
        raise ScepMalformed(f"{name} is not an octet string")
    return parsed.native


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # noqa: BLE001 — any failure means "not self-signed"
        return False
    return True


def _names_us(rid, ca_cert: x509.Certificate, ca_ski: bytes | None) -> bool:
    if rid.name == "issuer_and_serial_number":
        return (rid.chosen["serial_number"].native == ca_cert.serial_number
                and rid.chosen["issuer"].dump() == ca_cert.issuer.public_bytes())
    if rid.name == "subject_key_identifier":
        return ca_ski is not None and hmac.compare_digest(rid.chosen.native, ca_ski)
    return False


def _subject_key_identifier(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        return None


#: most chunks accepted in a constructed (BER) encryptedContent
_MAX_CHUNKS = 4096


def _encrypted_content(encrypted) -> bytes | None:
    """The encryptedContent octets, primitive or constructed.

    It is ``[0] IMPLICIT OCTET STRING``; BER allows the constructed form (chunks), which some
    clients send (micromdm's scepclient: one chunk) and asn1crypto does not read under an implicit
    tag, so the element is read here: the octets that follow the two fields before it.
    """
    offset = len(encrypted["content_type"].dump()) + len(encrypted["content_encryption_algorithm"].dump())
    raw = encrypted.contents[offset:]
    if not raw:
        return None
    if raw[0] not in (0x80, 0xA0):
        raise ScepMalformed("encryptedContent is not [0]")
    chunks: list[bytes] = []
    end = _octets_tlv(raw, 0, chunks, depth=0)
    if end != len(raw):
        raise ScepMalformed("trailing data after encryptedContent")
    return b"".join(chunks)


def _octets_tlv(data: bytes, pos: int, chunks: list[bytes], *, depth: int) -> int:
    """Read one OCTET STRING TLV (the first may carry the [0] tag) at ``pos``, appending its octets
    to ``chunks``; returns the position after it. Definite and indefinite lengths."""
    if depth > 4 or len(chunks) > _MAX_CHUNKS:
        raise ScepMalformed("encryptedContent nested too deeply or in too many chunks")
    if pos + 2 > len(data):
        raise ScepMalformed("truncated encryptedContent")
    tag = data[pos]
    constructed = bool(tag & 0x20)
    if (depth == 0 and tag & 0xDF != 0x80) or (depth > 0 and tag & 0xDF != 0x04):
        raise ScepMalformed("encryptedContent chunk is not an OCTET STRING")
    first = data[pos + 1]
    pos += 2
    if first == 0x80:
        if not constructed:
            raise ScepMalformed("indefinite length on a primitive encoding")
        while data[pos:pos + 2] != b"\x00\x00":
            pos = _octets_tlv(data, pos, chunks, depth=depth + 1)
        return pos + 2
    if first & 0x80:
        width = first & 0x7F
        if not 1 <= width <= 4 or pos + width > len(data):
            raise ScepMalformed("bad length in encryptedContent")
        length = int.from_bytes(data[pos:pos + width], "big")
        pos += width
    else:
        length = first
    end = pos + length
    if end > len(data):
        raise ScepMalformed("truncated encryptedContent")
    if not constructed:
        chunks.append(data[pos:end])
        return end
    while pos < end:
        pos = _octets_tlv(data, pos, chunks, depth=depth + 1)
    if pos != end:
        raise ScepMalformed("encryptedContent chunk overruns its parent")
    return end


class _RefusedAlgorithm(Exception):
    def __init__(self, algorithm: str, reason: str) -> None:
        super().__init__(reason)
        self.algorithm = algorithm


def _decrypt_envelope(content: bytes, ca_cert: x509.Certificate, ca_key: rsa.RSAPrivateKey,
                      allow_des: bool) -> tuple[bytes, str]:
    """The plaintext of the pkcsPKIEnvelope and its content-encryption algorithm's name.

    RSA PKCS#1 v1.5 key transport invites Bleichenbacher's attack if a padding failure can be told
    apart from a later failure. A bad key-transport block is therefore replaced with a random key
    of the right size (RFC 3218 2.3.2) and the process continues; whatever fails then (CBC padding,
    the CSR) raises the same :class:`ScepDecryptError` with the same text.
    """
    _bounded(content)
    info = acms.ContentInfo.load(content, strict=True)
    if info["content_type"].dotted != _OID_ENVELOPED_DATA:
        raise ScepMalformed("pkcsPKIEnvelope is not an EnvelopedData")
    enveloped = info["content"]
    encrypted = enveloped["encrypted_content_info"]
    algorithm = encrypted["content_encryption_algorithm"]
    name = str(algorithm["algorithm"].native)[:64]
    cbc = CONTENT_ENCRYPTIONS.get(name)
    if cbc is None or (name in WEAK_CONTENT_ENCRYPTIONS and not allow_des):
        raise _RefusedAlgorithm(name, f"content encryption {name} is not accepted (AES is announced)")
    iv = algorithm["parameters"].native
    if not isinstance(iv, bytes) or len(iv) * 8 != cbc.block_size:
        raise ScepMalformed("bad content-encryption IV")
    ciphertext = _encrypted_content(encrypted)
    if not isinstance(ciphertext, bytes) or not ciphertext or len(ciphertext) * 8 % cbc.block_size:
        raise ScepMalformed("no encrypted content or not a whole number of blocks")
    ca_ski = _subject_key_identifier(ca_cert)
    ours = [
        ri.chosen for ri in enveloped["recipient_infos"]
        if ri.name == "ktri" and _names_us(ri.chosen["rid"], ca_cert, ca_ski)
    ]
    if not ours:
        raise ScepDecryptError("the message is not encrypted to this CA")
    recipient = ours[0]
    transport = str(recipient["key_encryption_algorithm"]["algorithm"].native)[:64]
    if transport != "rsaes_pkcs1v15":
        raise _RefusedAlgorithm(name, f"key transport {transport} is not supported (RSA PKCS#1 v1.5 only)")
    random_key = os.urandom(cbc.key_size)
    try:
        key = ca_key.decrypt(recipient["encrypted_key"].native, padding.PKCS1v15())
    except ValueError:
        key = random_key
    if len(key) != cbc.key_size:
        key = random_key
    decryptor = Cipher(cbc.cipher(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = sympadding.PKCS7(cbc.block_size).unpadder()
    try:
        plaintext = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise ScepDecryptError("could not decrypt the message") from None
    return plaintext, cbc.name


def challenge_password(csr: x509.CertificateSigningRequest) -> str | None:
    """The CSR's challengePassword attribute, or ``None``."""
    try:
        value = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    except x509.AttributeNotFound:
        return None
    except ValueError:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


# --- writing ---------------------------------------------------------------------------------------


def build_cert_rep(
    request: ScepRequest,
    *,
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    status: PkiStatus,
    issued: x509.Certificate | None = None,
    fail_info: FailInfo | None = None,
) -> bytes:
    """The CA's DER CertRep answering ``request``.

    SUCCESS needs ``issued`` (sent in a certs-only SignedData, encrypted to the request's signer
    certificate with the request's content encryption); FAILURE needs ``fail_info``; PENDING has
    neither.
    """
    if (status is PkiStatus.SUCCESS) != (issued is not None):
        raise ValueError("a SUCCESS CertRep carries the issued certificate, and only it")
    if status is PkiStatus.SUCCESS and request.refusal is not None:
        raise ValueError("a refused request cannot succeed")
    if (status is PkiStatus.FAILURE) != (fail_info is not None):
        raise ValueError("a FAILURE CertRep carries a failInfo, and only it")
    content = None
    if issued is not None:
        degenerate = _certs_only(issued)
        content = _envelope(degenerate, request.signer, CONTENT_ENCRYPTIONS[request.content_encryption])
    attributes = [
        (_OID_MESSAGE_TYPE, acore.PrintableString(MessageType.CERT_REP.value)),
        (_OID_PKI_STATUS, acore.PrintableString(status.value)),
        (_OID_TRANSACTION_ID, acore.PrintableString(request.transaction_id)),
        (_OID_RECIPIENT_NONCE, acore.OctetString(request.sender_nonce)),
        (_OID_SENDER_NONCE, acore.OctetString(os.urandom(16))),
    ]
    if fail_info is not None:
        attributes.append((_OID_FAIL_INFO, acore.PrintableString(fail_info.value)))
    return _sign(content, attributes, ca_cert, ca_key)


def _der(tag: int, body: bytes) -> bytes:
    """One DER element (definite length)."""
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


_SIGNED_DATA_OID_DER = acore.ObjectIdentifier(_OID_SIGNED_DATA).dump()
_DATA_OID_DER = acore.ObjectIdentifier(_OID_DATA).dump()
_VERSION_1 = acore.Integer(1).dump()
_EMPTY_SET = b"\x31\x00"


def _signed_data(digest_algorithms: bytes, encap: bytes, certificate: x509.Certificate, signer_infos: bytes) -> bytes:
    """ContentInfo(SignedData v1) with one certificate, assembled from encoded parts: asn1crypto would
    walk (and re-encode) the whole certificate when it is set into the structure."""
    body = _VERSION_1 + digest_algorithms + encap + _der(0xA0, cert_to_der(certificate)) + signer_infos
    return _der(0x30, _SIGNED_DATA_OID_DER + _der(0xA0, _der(0x30, body)))


def _issuer_and_serial(cert: x509.Certificate) -> acms.IssuerAndSerialNumber:
    return acms.IssuerAndSerialNumber({
        "issuer": ax509.Name.load(cert.issuer.public_bytes()), "serial_number": cert.serial_number,
    })


def _certs_only(cert: x509.Certificate) -> bytes:
    """A degenerate SignedData: no content, no signers, one certificate (RFC 8894 3.3.2)."""
    return _signed_data(_EMPTY_SET, _der(0x30, _DATA_OID_DER), cert, _EMPTY_SET)


def _envelope(plaintext: bytes, recipient: x509.Certificate, cbc: _Cbc) -> bytes:
    public_key = recipient.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ScepUnsupported("the reply can only be encrypted to an RSA key")
    key = os.urandom(cbc.key_size)
    iv = os.urandom(cbc.block_size // 8)
    padder = sympadding.PKCS7(cbc.block_size).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(cbc.cipher(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    enveloped = acms.EnvelopedData({
        "version": "v0",
        "recipient_infos": [acms.RecipientInfo(name="ktri", value=acms.KeyTransRecipientInfo({
            "version": "v0",
            "rid": acms.RecipientIdentifier(name="issuer_and_serial_number", value=_issuer_and_serial(recipient)),
            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
            "encrypted_key": public_key.encrypt(key, padding.PKCS1v15()),
        }))],
        "encrypted_content_info": {
            "content_type": "data",
            "content_encryption_algorithm": aalgos.EncryptionAlgorithm({
                "algorithm": cbc.name, "parameters": acore.OctetString(iv),
            }),
            "encrypted_content": ciphertext,
        },
    })
    return acms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


def _attribute(oid: str, value: bytes) -> bytes:
    """A CMS Attribute with one value (encoded): SEQUENCE { type, SET { value } }."""
    return _der(0x30, acore.ObjectIdentifier(oid).dump() + _der(0x31, value))


_SHA256_ALGORITHM = acms.DigestAlgorithm({"algorithm": "sha256"}).dump()
_SIGNATURE_ALGORITHMS = {
    "rsa": acms.SignedDigestAlgorithm({"algorithm": "sha256_rsa"}).dump(),
    "ec": acms.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}).dump(),
}


def _sign(
    content: bytes | None,
    scep_attributes: list[tuple[str, acore.Asn1Value]],
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
) -> bytes:
    """ContentInfo(SignedData) over ``content`` (absent: the digest of nothing) signed by the CA, with
    contentType, signingTime, messageDigest and the SCEP attributes signed.

    Encoded by hand from small parts: building it as one asn1crypto structure re-encoded the CA
    certificate and every attribute several times (3 ms of the 4 a refusal took)."""
    digest = hashlib.sha256(content or b"").digest()
    attributes = [
        _attribute("1.2.840.113549.1.9.3", _DATA_OID_DER),  # contentType
        _attribute("1.2.840.113549.1.9.5", acore.UTCTime(dt.datetime.now(dt.UTC)).dump()),  # signingTime
        _attribute("1.2.840.113549.1.9.4", acore.OctetString(digest).dump()),  # messageDigest
        *(_attribute(oid, value.dump()) for oid, value in scep_attributes),
    ]
    # DER orders a SET OF by the encodings; verifiers that re-encode the attributes (Go's) sort them
    attributes_body = b"".join(sorted(attributes))
    to_sign = _der(0x31, attributes_body)  # the signature covers the attributes as a SET OF
    if isinstance(ca_key, rsa.RSAPrivateKey):
        signature = ca_key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
        signature_algorithm = _SIGNATURE_ALGORITHMS["rsa"]
    else:
        signature = ca_key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
        signature_algorithm = _SIGNATURE_ALGORITHMS["ec"]
    signer_info = _der(0x30, b"".join((
        _VERSION_1,
        _issuer_and_serial(ca_cert).dump(),
        _SHA256_ALGORITHM,
        _der(0xA0, attributes_body),  # signedAttrs [0] IMPLICIT
        signature_algorithm,
        acore.OctetString(signature).dump(),
    )))
    encap = _DATA_OID_DER + (_der(0xA0, acore.OctetString(content).dump()) if content is not None else b"")
    return _signed_data(_der(0x31, _SHA256_ALGORITHM), _der(0x30, encap), ca_cert, _der(0x31, signer_info))
