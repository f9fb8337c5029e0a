"""CMS (PKCS#7) SignedData: signing with cryptography, verification with asn1crypto + cryptography.

cryptography can create SignedData but has no public API to verify it, so verification parses the
structure with asn1crypto and checks the signature with cryptography's public-key primitives.

Everything a device or an uploader can send passes through here before anything else looks at it,
so input is bounded before parsing: a size limit and a cheap pre-scan of the BER/DER structure that
rejects absurd nesting, element counts and lengths that do not fit. Every failure is a
:class:`CMSError` with a short reason; no other exception escapes the public functions.

Pure module: no Flask, no SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from asn1crypto import cms as acms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.utils import CryptographyDeprecationWarning

from mdmserver.errors import InputError
from mdmserver.pki.x509 import is_issued_by, subject_string, verify_signature_with_key

__all__ = [
    "CMSError",
    "MAX_ATTACHED_SIZE",
    "MAX_SIGNATURE_SIZE",
    "SignedContent",
    "looks_like_cms",
    "sign",
    "unwrap_signed",
    "verify_detached",
]

#: Detached signatures (Mdm-Signature) hold a signer certificate or two: 256 KiB is generous.
MAX_SIGNATURE_SIZE = 256 * 1024
#: Signed configuration profiles carry their content; apps and fonts make some large.
MAX_ATTACHED_SIZE = 16 * 1024 * 1024
#: Deepest BER nesting accepted. Real SignedData with certificates stays under 15.
MAX_DEPTH = 32
#: Most TLV elements accepted (BER-chunked content counts one per chunk).
MAX_ELEMENTS = 200_000
#: Longest certificate chain followed inside a SignedData.
MAX_CHAIN = 8

_SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class CMSError(InputError):
    """A CMS structure that is malformed, fails verification or is not trusted (422 ``bad_signature``
    when it reaches the API's error handler; the device channel refuses it as an authentication failure)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, status=422, code="bad_signature")
        self.reason = reason


@dataclass
class SignedContent:
    """Result of :func:`unwrap_signed`."""

    content: bytes
    signer: x509.Certificate | None
    certificates: list[x509.Certificate] = field(default_factory=list)
    signer_subject: str | None = None
    trusted: bool = False


# --- signing -------------------------------------------------------------------------------------


def sign(
    content: bytes,
    cert: x509.Certificate,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    detached: bool = False,
    extra_certs: Iterable[x509.Certificate] = (),
) -> bytes:
    """DER SignedData over ``content`` (SHA-256, signed attributes, signer certificate embedded)."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(cert, key, hashes.SHA256())
    for extra in extra_certs:
        builder = builder.add_certificate(extra)
    options = [pkcs7.PKCS7Options.Binary, pkcs7.PKCS7Options.NoCapabilities]
    if detached:
        options.append(pkcs7.PKCS7Options.DetachedSignature)
    return builder.sign(serialization.Encoding.DER, options)


# --- input bounds --------------------------------------------------------------------------------


def looks_like_cms(data: bytes) -> bool:
    """Cheap sniff: a SEQUENCE whose first element is the signedData content type OID."""
    if len(data) < 15 or data[0] != 0x30:
        return False
    return _SIGNED_DATA_OID in data[2:8 + len(_SIGNED_DATA_OID)]


def _prescan(data: bytes) -> None:
    """Walk the BER TLV structure without building objects; refuse what the parser should not see."""
    n = len(data)
    pos = 0
    count = 0
    # Each open constructed element: its end offset, or None for indefinite length.
    stack: list[int | None] = []
    while True:
        while stack and stack[-1] is not None and pos == stack[-1]:
            stack.pop()
        if not stack and count:
            if pos != n:
                raise CMSError("malformed CMS: trailing data")
            return
        if pos >= n:
            raise CMSError("malformed CMS: truncated")
        limit = stack[-1] if stack and stack[-1] is not None else n
        if stack and stack[-1] is None and data[pos : pos + 2] == b"\x00\x00":
            pos += 2
            stack.pop()
            continue
        tag = data[pos]
        pos += 1
        if tag & 0x1F == 0x1F:  # high tag number form
            for _ in range(4):
                if pos >= n:
                    raise CMSError("malformed CMS: truncated")
                b = data[pos]
                pos += 1
                if not b & 0x80:
                    break
            else:
                raise CMSError("malformed CMS: tag too long")
        if pos >= n:
            raise CMSError("malformed CMS: truncated")
        first = data[pos]
        pos += 1
        indefinite = False
        if first < 0x80:
            length = first
        elif first == 0x80:
            indefinite = True
            length = 0
        else:
            width = first & 0x7F
            if width > 4 or pos + width > n:
                raise CMSError("malformed CMS: bad length")
            length = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        count += 1
        if count > MAX_ELEMENTS:
            raise CMSError("malformed CMS: too many elements")
        constructed = bool(tag & 0x20)
        if constructed:
            if len(stack) >= MAX_DEPTH:
                raise CMSError("malformed CMS: nested too deeply")
            if indefinite:
                stack.append(None)
            else:
                end = pos + length
                if end > limit:
                    raise CMSError("malformed CMS: length exceeds data")
                stack.append(end)
        else:
            if indefinite:
                raise CMSError("malformed CMS: indefinite primitive")
            pos += length
            if pos > limit:
                raise CMSError("malformed CMS: length exceeds data")


# --- verification --------------------------------------------------------------------------------


@dataclass
class _Verified:
    signer: x509.Certificate
    certificates: list[x509.Certificate]
    content: bytes | None


def _load_signed_data(data: bytes, max_size: int) -> acms.SignedData:
    if not data:
        raise CMSError("no signature")
    if len(data) > max_size:
        raise CMSError("CMS too large")
    _prescan(data)
    info = acms.ContentInfo.load(data, strict=True)
    if info["content_type"].native != "signed_data":
        raise CMSError("not a CMS SignedData")
    signed_data = info["content"]
    if not isinstance(signed_data, acms.SignedData):
        raise CMSError("not a CMS SignedData")
    return signed_data


def _embedded_certificates(signed_data: acms.SignedData) -> list[tuple[object, x509.Certificate]]:
    """(asn1crypto certificate, cryptography certificate) pairs of the plain X.509 certificates."""
    result = []
    certs = signed_data["certificates"]
    if certs.native is None:
        return result
    for choice in certs:
        if choice.name != "certificate":
            continue
        acert = choice.chosen
        try:
            with warnings.catch_warnings():
                # e.g. a negative serial number: cryptography only warns today; refuse it now.
                warnings.simplefilter("error", CryptographyDeprecationWarning)
                ccert = x509.load_der_x509_certificate(acert.dump())
        except (ValueError, CryptographyDeprecationWarning) as exc:
            raise CMSError("malformed certificate in CMS") from exc
        result.append((acert, ccert))
    return result


def _find_signer(
    signer_info: acms.SignerInfo, certs: list[tuple[object, x509.Certificate]]
) -> x509.Certificate:
    sid = signer_info["sid"]
    if sid.name == "issuer_and_serial_number":
        issuer = sid.chosen["issuer"]
        serial = sid.chosen["serial_number"].native
        for acert, ccert in certs:
            if acert.serial_number == serial and acert.issuer == issuer:
                return ccert
    elif sid.name == "subject_key_identifier":
        wanted = sid.chosen.native
        for acert, ccert in certs:
            if acert.key_identifier is not None and hmac.compare_digest(acert.key_identifier, wanted):
                return ccert
    raise CMSError("signer certificate not found")


def _hash_for(name: str) -> hashes.HashAlgorithm:
    cls = _HASHES.get(name)
    if cls is None:
        raise CMSError(f"unsupported digest algorithm {name}")
    return cls()


def _check_signer_info(
    signer_info: acms.SignerInfo,
    content: bytes,
    econtent_type: str | None,
    signer: x509.Certificate,
) -> None:
    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    digest_alg = _hash_for(digest_name)
    signed_attrs = signer_info["signed_attrs"]
    if signed_attrs.native is not None and len(signed_attrs):
        message_digest = None
        content_type = None
        for attr in signed_attrs:
            attr_type = attr["type"].native
            values = attr["values"]
            if attr_type == "message_digest":
                if len(values) != 1 or message_digest is not None:
                    raise CMSError("malformed messageDigest attribute")
                message_digest = values[0].native
            elif attr_type == "content_type":
                if len(values) != 1 or content_type is not None:
                    raise CMSError("malformed contentType attribute")
                content_type = values[0].native
        if message_digest is None:
            raise CMSError("no messageDigest attribute")
        if econtent_type is not None and content_type is not None and content_type != econtent_type:
            raise CMSError("content type mismatch")
        actual = hashlib.new(digest_alg.name, content).digest()
        if not isinstance(message_digest, bytes) or not hmac.compare_digest(actual, message_digest):
            raise CMSError("digest mismatch")
        # The signature covers the DER of the attributes with their [0] IMPLICIT tag as SET OF.
        encoded = signed_attrs.dump()
        signed_bytes = b"\x31" + encoded[1:]
    else:
        signed_bytes = content

    sig_alg = signer_info["signature_algorithm"]
    algo = sig_alg.signature_algo
    try:
        sig_hash_name = sig_alg.hash_algo
    except ValueError:
        sig_hash_name = digest_name
    sig_hash = _hash_for(sig_hash_name)
    public_key = signer.public_key()
    signature = signer_info["signature"].native
    pss = None
    if algo == "rsassa_pss":
        params = sig_alg["parameters"]
        pss_hash = _hash_for(params["hash_algorithm"]["algorithm"].native)
        mgf_hash = _hash_for(params["mask_gen_algorithm"]["parameters"]["algorithm"].native)
        sig_hash = pss_hash
        pss = padding.PSS(mgf=padding.MGF1(mgf_hash), salt_length=params["salt_length"].native)
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise CMSError("signature algorithm does not match the signer key")
    elif algo == "rsassa_pkcs1v15":
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise CMSError("signature algorithm does not match the signer key")
    elif algo == "ecdsa":
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise CMSError("signature algorithm does not match the signer key")
    else:
        raise CMSError(f"unsupported signature algorithm {algo}")
    if not verify_signature_with_key(public_key, signature, signed_bytes, sig_hash, rsa_pss=pss):
        raise CMSError("bad signature")


def _verify_structure(data: bytes, content: bytes | None, max_size: int) -> _Verified:
    signed_data = _load_signed_data(data, max_size)
    encap = signed_data["encap_content_info"]
    econtent_type = encap["content_type"].native
    attached = encap["content"].native if encap["content"].native is not None else None
    if attached is not None and not isinstance(attached, bytes):
        raise CMSError("unsupported encapsulated content")
    body = content if content is not None else attached
    if body is None:
        raise CMSError("no content")
    signer_infos = signed_data["signer_infos"]
    if len(signer_infos) == 0:
        raise CMSError("no signer")
    if len(signer_infos) > 1:
        raise CMSError("more than one signer")
    signer_info = signer_infos[0]
    certs = _embedded_certificates(signed_data)
    signer = _find_signer(signer_info, certs)
    _check_signer_info(signer_info, body, econtent_type, signer)
    return _Verified(signer=signer, certificates=[c for _, c in certs], content=attached)


def _guarded(func, *args):
    """Run ``func``; any exception but :class:`CMSError` becomes ``CMSError("malformed CMS")``.

    asn1crypto parses lazily and raises a variety of exception types (ValueError, TypeError,
    KeyError, IndexError, OverflowError…) on hostile input; callers must only ever see CMSError.
    """
    try:
        return func(*args)
    except CMSError:
        raise
    except Exception as exc:  # noqa: BLE001 — parser boundary, see docstring
        raise CMSError("malformed CMS") from exc


def verify_detached(
    signature: bytes,
    content: bytes,
    *,
    ca_certs: Sequence[x509.Certificate],
    at: dt.datetime | None = None,
    max_size: int = MAX_SIGNATURE_SIZE,
) -> x509.Certificate:
    """Verify a detached SignedData over ``content``; return the signer certificate.

    The signer must have been issued by one of ``ca_certs`` and be valid at ``at`` (default now).
    """
    if not isinstance(signature, bytes | bytearray) or not isinstance(content, bytes | bytearray):
        raise CMSError("no signature")
    verified = _guarded(_verify_structure, bytes(signature), bytes(content), max_size)
    when = at or dt.datetime.now(dt.UTC)
    signer = verified.signer
    if not any(is_issued_by(signer, ca) for ca in ca_certs):
        raise CMSError("signer not issued by our CA")
    if not any(is_issued_by(signer, ca, at=when) for ca in ca_certs):
        raise CMSError("signer certificate expired or not yet valid")
    return signer


def _chains_to(
    cert: x509.Certificate, pool: list[x509.Certificate], roots: Sequence[x509.Certificate]
) -> bool:
    current = cert
    for _ in range(MAX_CHAIN):
        for root in roots:
            if current == root or is_issued_by(current, root):
                return True
        parent = next(
            (c for c in pool if c != current and is_issued_by(current, c)),
            None,
        )
        if parent is None:
            return False
        current = parent
    return False


def unwrap_signed(
    der: bytes,
    *,
    trust_roots: Sequence[x509.Certificate] = (),
    max_size: int = MAX_ATTACHED_SIZE,
) -> SignedContent:
    """Content and signer of an attached SignedData (a signed configuration profile).

    Integrity (digest and signature against the embedded signer certificate) must hold, else
    :class:`CMSError`. ``trusted`` tells whether the signer chains, through the embedded
    certificates, to one of ``trust_roots``; an untrusted but intact signature is not an error.
    """
    if not isinstance(der, bytes | bytearray):
        raise CMSError("no signature")
    verified = _guarded(_verify_structure, bytes(der), None, max_size)
    if verified.content is None:
        raise CMSError("no content")
    trusted = bool(trust_roots) and _chains_to(verified.signer, verified.certificates, trust_roots)
    return SignedContent(
        content=verified.content,
        signer=verified.signer,
        certificates=verified.certificates,
        signer_subject=subject_string(verified.signer),
        trusted=trusted,
    )
