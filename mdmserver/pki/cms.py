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
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from asn1crypto import cms as acms
from asn1crypto import core as acore
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.utils import CryptographyDeprecationWarning

from mdmserver.errors import InputError
from mdmserver.pki.x509 import is_issued_by, subject_string, verify_signature_with_key

__all__ = [
    "CMSError",
    "CertificateVerdicts",
    "MAX_ATTACHED_SIZE",
    "MAX_SIGNATURE_SIZE",
    "SignedContent",
    "check_structure",
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
_OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
_OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"

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
    _prescan_region(data, 0, len(data), 0)


def _prescan_region(data: bytes, start: int, end: int, depth: int) -> None:
    """:func:`_prescan` of the one element ``data[start:end]``, found ``depth`` levels deep."""
    n = end
    pos = start
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
            if len(stack) + depth >= MAX_DEPTH:
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


def check_structure(data: bytes) -> None:
    """Refuse (:class:`CMSError`) BER/DER that a parser should not see: truncated, trailing data,
    lengths that do not fit, nesting deeper than ``MAX_DEPTH``, more than ``MAX_ELEMENTS`` elements.
    For structures found inside a verified one (an encrypted envelope's content) before parsing them."""
    _prescan(data)


# --- verification --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CertFacts:
    """What the signer lookup needs of an embedded certificate, read once per distinct DER."""

    der: bytes
    cert: x509.Certificate
    issuer_der: bytes
    serial: int
    key_identifier: bytes | None


@dataclass(frozen=True)
class _Layout:
    """Where the parts of a detached signature lie, as :func:`_fast_walk` found them in one it accepted.
    ``varying``: the contents that differ between two signatures a device makes over different messages
    (the message digest, the signing time, the signature value), every one a primitive value. Every other
    byte, the signer's certificate and every tag and length included, is the signature's *fixed part*."""

    length: int
    varying: tuple[tuple[int, int], ...]
    digest: tuple[int, int]
    signature: tuple[int, int]
    #: the signed attributes element ([0] IMPLICIT): start, end
    attributes: tuple[int, int]
    digest_name: str
    hash_name: str

    def fixed_part(self, data: bytes) -> bytes:
        pieces, pos = [], 0
        for start, end in self.varying:
            pieces.append(data[pos:start])
            pos = end
        pieces.append(data[pos:])
        return b"".join(pieces)

    def verify(self, data: bytes, content: bytes, signer: _CertFacts) -> bool:
        """The checks of :func:`_fast_walk` that depend on the varying parts: the message digest is
        ``content``'s and the signature over the signed attributes is ``signer``'s."""
        start, end = self.digest
        if not hmac.compare_digest(hashlib.new(self.digest_name, content).digest(), data[start:end]):
            return False
        attrs_start, attrs_end = self.attributes
        start, end = self.signature
        return verify_signature_with_key(signer.cert.public_key(), data[start:end],
                                         b"\x31" + data[attrs_start + 1:attrs_end], _HASHES[self.hash_name]())


@dataclass
class _Verified:
    signer: _CertFacts
    certificates: list[_CertFacts]
    content: bytes | None


class CertificateVerdicts:
    """A bounded LRU of what is pure and costly to learn about a device certificate: its parsed facts,
    and, per CA, that the CA issued it (name and signature) with the window in which both are valid;
    and the fixed parts of the signatures it was accepted in (:class:`_Layout`).

    Keyed by the certificate's exact DER, so a verdict can never be reused for different bytes. Only
    positive verdicts are kept (nobody but our CA can mint entries); the validity window is compared
    with the time of every request, so a certificate that expires while cached is refused. Nothing
    here knows about enrollments: whether a certificate is still bound to a device is the caller's
    per-request check against the database. Safe to share between threads.
    """

    #: distinct layouts kept per signature length (devices of one fleet share one or two)
    LAYOUTS_PER_LENGTH = 4

    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[bytes, tuple[_CertFacts, dict[bytes, tuple[dt.datetime, dt.datetime]]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self._ca_keys: dict[int, tuple[x509.Certificate, bytes]] = {}
        self._layouts: dict[int, tuple[_Layout, ...]] = {}
        #: SHA-256 of a fixed part -> the layout and signer of the signature it was accepted in
        self._fixed: OrderedDict[bytes, tuple[_Layout, _CertFacts]] = OrderedDict()

    def _ca_key(self, ca: x509.Certificate) -> bytes:
        """The CA's SHA-256 fingerprint, computed once per CA object (the caller keeps its CA for a while)."""
        kept = self._ca_keys.get(id(ca))
        if kept is None or kept[0] is not ca:
            kept = (ca, ca.fingerprint(hashes.SHA256()))
            with self._lock:
                if len(self._ca_keys) >= 8:
                    self._ca_keys.clear()
                self._ca_keys[id(ca)] = kept
        return kept[1]

    def known_layout(self, data: bytes, content: bytes) -> _CertFacts | None:
        """The signer of ``data`` if its fixed part (:class:`_Layout`) is byte for byte that of a signature
        accepted before by the whole walk and our CA, and its message digest and signature hold over
        ``content``: every other check of the walk depends on the fixed part alone. Else ``None`` (the
        walk decides). Saves the walk over a device's every request but its first."""
        for layout in self._layouts.get(len(data), ()):
            key = hashlib.sha256(layout.fixed_part(data)).digest()
            with self._lock:
                kept = self._fixed.get(key)
                if kept is not None:
                    self._fixed.move_to_end(key)
            if kept is not None and kept[0] == layout:
                return kept[1] if layout.verify(data, content, kept[1]) else None
        return None

    def keep_layout(self, data: bytes, layout: _Layout, signer: _CertFacts) -> None:
        """Remember the fixed part of ``data``, a signature the walk accepted and whose signer our CA issued
        (only such signatures add entries: a device can displace other devices' entries, which costs them
        the walk again, never a check)."""
        key = hashlib.sha256(layout.fixed_part(data)).digest()
        with self._lock:
            shapes = self._layouts.get(layout.length, ())
            if layout not in shapes:
                self._layouts[layout.length] = (layout, *shapes)[:self.LAYOUTS_PER_LENGTH]
                if len(self._layouts) > 4 * self.LAYOUTS_PER_LENGTH:
                    self._layouts.pop(next(iter(self._layouts)))
            self._fixed[key] = (layout, signer)
            self._fixed.move_to_end(key)
            while len(self._fixed) > self.maxsize:
                self._fixed.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def known(self, der: bytes) -> bool:
        """Whether this exact certificate is kept (it had a positive verdict)."""
        return der in self._entries

    def facts(self, der: bytes) -> _CertFacts:
        """The facts of a certificate seen before with a positive verdict, else freshly read (and not
        kept: only :meth:`issued_window` adds entries, so foreign certificates cannot evict ours)."""
        with self._lock:
            entry = self._entries.get(der)
            if entry is not None:
                self._entries.move_to_end(der)
                return entry[0]
        return _read_certificate(der)

    def issued_window(self, facts: _CertFacts, ca: x509.Certificate) -> tuple[dt.datetime, dt.datetime] | None:
        """The window in which ``facts``' certificate and ``ca`` are both valid, when ``ca`` issued it."""
        ca_key = self._ca_key(ca)
        with self._lock:
            entry = self._entries.get(facts.der)
            window = entry[1].get(ca_key) if entry is not None else None
        if window is not None:
            return window
        window = _issued_window(facts.cert, ca)
        if window is not None:
            with self._lock:
                entry = self._entries.get(facts.der)
                if entry is None:
                    entry = (facts, {})
                    self._entries[facts.der] = entry
                entry[1][ca_key] = window
                self._entries.move_to_end(facts.der)
                while len(self._entries) > self.maxsize:
                    self._entries.popitem(last=False)
        return window


def _issued_window(cert: x509.Certificate, ca: x509.Certificate) -> tuple[dt.datetime, dt.datetime] | None:
    if not is_issued_by(cert, ca):
        return None
    return (max(cert.not_valid_before_utc, ca.not_valid_before_utc),
            min(cert.not_valid_after_utc, ca.not_valid_after_utc))


def _load_signed_data(data: bytes, max_size: int) -> acms.SignedData:
    if not data:
        raise CMSError("no signature")
    if len(data) > max_size:
        raise CMSError("CMS too large")
    _prescan(data)
    info = acms.ContentInfo.load(data, strict=True)
    if info["content_type"].dotted != _OID_SIGNED_DATA:
        raise CMSError("not a CMS SignedData")
    signed_data = info["content"]
    if not isinstance(signed_data, acms.SignedData):
        raise CMSError("not a CMS SignedData")
    return signed_data


def _read_certificate(der: bytes) -> _CertFacts:
    try:
        with warnings.catch_warnings():
            # e.g. a negative serial number: cryptography only warns today; refuse it now.
            warnings.simplefilter("error", CryptographyDeprecationWarning)
            cert = x509.load_der_x509_certificate(der)
            serial = cert.serial_number
    except (ValueError, CryptographyDeprecationWarning) as exc:
        raise CMSError("malformed certificate in CMS") from exc
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        ski = None  # only a signer named by its key identifier needs it
    return _CertFacts(der=der, cert=cert, issuer_der=cert.issuer.public_bytes(), serial=serial, key_identifier=ski)


def _embedded_certificates(signed_data: acms.SignedData, verdicts: CertificateVerdicts | None) -> list[_CertFacts]:
    """The plain X.509 certificates, each read once (``verdicts`` remembers those already seen)."""
    certs = signed_data["certificates"]
    if isinstance(certs, acore.Void):
        return []
    result = []
    for choice in certs:
        if choice.name != "certificate":
            continue
        der = choice.chosen.dump()
        result.append(verdicts.facts(der) if verdicts is not None else _read_certificate(der))
    return result


def _find_signer(signer_info: acms.SignerInfo, certs: list[_CertFacts]) -> _CertFacts:
    sid = signer_info["sid"]
    if sid.name == "issuer_and_serial_number":
        # Names compared by their DER bytes: the signer identifier copies the certificate's issuer.
        issuer = sid.chosen["issuer"].dump()
        serial = sid.chosen["serial_number"].native
        for facts in certs:
            if facts.serial == serial and facts.issuer_der == issuer:
                return facts
    elif sid.name == "subject_key_identifier":
        wanted = sid.chosen.native
        for facts in certs:
            if facts.key_identifier is not None and hmac.compare_digest(facts.key_identifier, wanted):
                return facts
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
    if not isinstance(signed_attrs, acore.Void) and len(signed_attrs):
        message_digest = None
        content_type = None
        for attr in signed_attrs:
            attr_type = attr["type"].dotted
            if attr_type == _OID_MESSAGE_DIGEST:
                values = attr["values"]
                if len(values) != 1 or message_digest is not None:
                    raise CMSError("malformed messageDigest attribute")
                message_digest = values[0].native
            elif attr_type == _OID_CONTENT_TYPE:
                values = attr["values"]
                if len(values) != 1 or content_type is not None:
                    raise CMSError("malformed contentType attribute")
                content_type = values[0].dotted
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


def _verify_structure(
    data: bytes, content: bytes | None, max_size: int, verdicts: CertificateVerdicts | None = None
) -> _Verified:
    signed_data = _load_signed_data(data, max_size)
    encap = signed_data["encap_content_info"]
    econtent_type = encap["content_type"].dotted
    econtent = encap["content"]
    attached = None if isinstance(econtent, acore.Void) else econtent.native
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
    certs = _embedded_certificates(signed_data, verdicts)
    signer = _find_signer(signer_info, certs)
    _check_signer_info(signer_info, body, econtent_type, signer.cert)
    return _Verified(signer=signer, certificates=certs, content=attached)


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


# --- the device channel's fast path: a bounded DER walk of the one shape devices send ------------
#
# A device's Mdm-Signature is always the same shape: DER, one signer named by issuer and serial (or
# key identifier), signed attributes, no CRLs, no unsigned attributes. :func:`_fast_verify` walks
# exactly that shape over the bytes, without building asn1crypto objects, and performs every check
# of the general path on it. It only ever *accepts*: on anything else (another shape, BER, an
# algorithm it does not know, and every failed check) it answers ``None`` and the general path
# decides, with its own reasons. So an answer of the fast path is always one the general path gives.
# A device's later signatures differ from the first only in their message digest, signing time and
# signature value: :meth:`CertificateVerdicts.known_layout` recognises the rest byte for byte and checks
# only those (the walk is a Python loop over the DER, twice the cost of the RSA verify it guards).

_TAG_SEQUENCE, _TAG_SET, _TAG_OID, _TAG_OCTETS, _TAG_INTEGER = 0x30, 0x31, 0x06, 0x04, 0x02
_OID_DATA_DER = bytes.fromhex("2a864886f70d010701")
_OID_SIGNED_DATA_DER = bytes.fromhex("2a864886f70d010702")
_OID_CONTENT_TYPE_DER = bytes.fromhex("2a864886f70d010903")
_OID_MESSAGE_DIGEST_DER = bytes.fromhex("2a864886f70d010904")
_OID_SIGNING_TIME_DER = bytes.fromhex("2a864886f70d010905")
_TIME_TAGS = (0x17, 0x18)  # UTCTime, GeneralizedTime: primitive
#: digestAlgorithm OIDs (content bytes) -> hashlib / cryptography name
_DIGEST_OIDS = {
    bytes.fromhex("2b0e03021a"): "sha1",
    bytes.fromhex("608648016503040204"): "sha224",
    bytes.fromhex("608648016503040201"): "sha256",
    bytes.fromhex("608648016503040202"): "sha384",
    bytes.fromhex("608648016503040203"): "sha512",
}
#: signatureAlgorithm OIDs -> (key kind, hash name; None: the digest algorithm's)
_SIGNATURE_OIDS = {
    bytes.fromhex("2a864886f70d010101"): ("rsa", None),  # rsaEncryption
    bytes.fromhex("2a864886f70d010105"): ("rsa", "sha1"),
    bytes.fromhex("2a864886f70d01010e"): ("rsa", "sha224"),
    bytes.fromhex("2a864886f70d01010b"): ("rsa", "sha256"),
    bytes.fromhex("2a864886f70d01010c"): ("rsa", "sha384"),
    bytes.fromhex("2a864886f70d01010d"): ("rsa", "sha512"),
    bytes.fromhex("2a8648ce3d040301"): ("ec", "sha224"),
    bytes.fromhex("2a8648ce3d040302"): ("ec", "sha256"),
    bytes.fromhex("2a8648ce3d040303"): ("ec", "sha384"),
    bytes.fromhex("2a8648ce3d040304"): ("ec", "sha512"),
}
_KEY_TYPES = {"rsa": rsa.RSAPublicKey, "ec": ec.EllipticCurvePublicKey}


class _NotFast(Exception):
    """The fast path does not decide this input: the general path will."""


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``, which must end by ``end``:
    low tag numbers and definite lengths only."""
    if pos + 2 > end:
        raise _NotFast
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise _NotFast
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        width = first & 0x7F
        if width == 0 or width > 3 or pos + width > end:
            raise _NotFast
        length = int.from_bytes(data[pos:pos + width], "big")
        pos += width
    if pos + length > end:
        raise _NotFast
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, content end) of every element of ``data[start:end]``."""
    out = []
    pos = start
    while pos < end:
        tag, s, e = _tlv(data, pos, end)
        out.append((tag, pos, s, e))
        pos = e
    if len(out) > 64:  # no structure of this shape has more
        raise _NotFast
    return out


def _bounded(data: bytes, start: int, end: int, depth: int) -> None:
    """Apply the general path's limits (:func:`_prescan`) to an element the walk does not descend
    into, at the nesting depth it has in the whole structure."""
    try:
        _prescan_region(data, start, end, depth)
    except CMSError:
        raise _NotFast from None


def _algorithm(data: bytes, element: tuple[int, int, int, int], depth: int) -> bytes:
    """The OID (content bytes) of an AlgorithmIdentifier; its parameters are only bounded."""
    tag, _, s, e = element
    if tag != _TAG_SEQUENCE:
        raise _NotFast
    parts = _children(data, s, e)
    if not parts or parts[0][0] != _TAG_OID or len(parts) > 2:
        raise _NotFast
    if len(parts) == 2:
        _bounded(data, parts[1][1], parts[1][3], depth + 1)
    return data[parts[0][2]:parts[0][3]]


def _fast_verify(data: bytes, content: bytes, verdicts: CertificateVerdicts | None) -> _CertFacts | None:
    walked = _fast_walked(data, content, verdicts)
    return None if walked is None else walked[0]


def _fast_walked(
    data: bytes, content: bytes, verdicts: CertificateVerdicts | None,
) -> tuple[_CertFacts, _Layout] | None:
    try:
        return _fast_walk(data, content, verdicts)
    except _NotFast:
        return None
    except Exception:  # noqa: BLE001 — any failure (a malformed certificate, an unknown key type…): the
        return None  # general path refuses it with its own reason


def _fast_walk(data: bytes, content: bytes, verdicts: CertificateVerdicts | None) -> tuple[_CertFacts, _Layout]:
    n = len(data)
    tag, s, e = _tlv(data, 0, n)  # ContentInfo, depth 1
    if tag != _TAG_SEQUENCE or e != n:
        raise _NotFast
    info = _children(data, s, e)
    if len(info) != 2 or info[0][0] != _TAG_OID or data[info[0][2]:info[0][3]] != _OID_SIGNED_DATA_DER:
        raise _NotFast
    if info[1][0] != 0xA0:
        raise _NotFast
    explicit = _children(data, info[1][2], info[1][3])  # [0] EXPLICIT, depth 2
    if len(explicit) != 1 or explicit[0][0] != _TAG_SEQUENCE:
        raise _NotFast
    parts = _children(data, explicit[0][2], explicit[0][3])  # SignedData, depth 3
    if len(parts) != 5 or parts[0][0] != _TAG_INTEGER or parts[1][0] != _TAG_SET or parts[2][0] != _TAG_SEQUENCE:
        raise _NotFast
    if parts[3][0] != 0xA0 or parts[4][0] != _TAG_SET:
        raise _NotFast  # no certificates, CRLs present...: the general path
    _bounded(data, parts[0][1], parts[0][3], 3)
    _bounded(data, parts[1][1], parts[1][3], 3)
    encap = _children(data, parts[2][2], parts[2][3])  # depth 4: detached, so the content type alone
    if len(encap) != 1 or encap[0][0] != _TAG_OID:
        raise _NotFast
    econtent_type = data[encap[0][2]:encap[0][3]]
    cert_elements = _children(data, parts[3][2], parts[3][3])  # depth 5 each
    if not cert_elements or any(c[0] != _TAG_SEQUENCE for c in cert_elements):
        raise _NotFast
    signers = _children(data, parts[4][2], parts[4][3])
    if len(signers) != 1 or signers[0][0] != _TAG_SEQUENCE:
        raise _NotFast
    signer_info = _children(data, signers[0][2], signers[0][3])  # depth 5, its parts depth 6
    if len(signer_info) != 6 or signer_info[0][0] != _TAG_INTEGER or signer_info[3][0] != 0xA0:
        raise _NotFast
    if signer_info[5][0] != _TAG_OCTETS:
        raise _NotFast
    _bounded(data, signer_info[0][1], signer_info[0][3], 5)

    # the signer's certificate, read once per distinct DER (a cached one was bounded when it was kept)
    certs = []
    for _, start, _, end in cert_elements:
        der = data[start:end]
        if verdicts is None or not verdicts.known(der):
            _bounded(data, start, end, 4)
        certs.append(verdicts.facts(der) if verdicts is not None else _read_certificate(der))
    sid_tag, sid_start, sid_s, sid_e = signer_info[1]
    signer = None
    if sid_tag == _TAG_SEQUENCE:  # issuerAndSerialNumber
        sid = _children(data, sid_s, sid_e)
        if len(sid) != 2 or sid[0][0] != _TAG_SEQUENCE or sid[1][0] != _TAG_INTEGER:
            raise _NotFast
        _bounded(data, sid[0][1], sid[0][3], 6)
        issuer = data[sid[0][1]:sid[0][3]]
        serial = int.from_bytes(data[sid[1][2]:sid[1][3]], "big", signed=True)
        signer = next((f for f in certs if f.serial == serial and f.issuer_der == issuer), None)
    elif sid_tag == 0x80:  # [0] subjectKeyIdentifier
        wanted = data[sid_s:sid_e]
        signer = next((f for f in certs if f.key_identifier is not None
                       and hmac.compare_digest(f.key_identifier, wanted)), None)
    if signer is None:
        raise _NotFast
    digest_name = _DIGEST_OIDS.get(_algorithm(data, signer_info[2], 5))
    if digest_name is None:
        raise _NotFast

    # signed attributes: contentType and messageDigest once each, one value each
    _, attrs_start, attrs_s, attrs_e = signer_info[3]
    content_type = digest_at = signing_time_at = None  # digest_at: the messageDigest value's content
    attributes = _children(data, attrs_s, attrs_e)
    if not attributes:
        raise _NotFast
    for tag, _, s, e in attributes:  # depth 6
        attr = _children(data, s, e)
        if tag != _TAG_SEQUENCE or len(attr) != 2 or attr[0][0] != _TAG_OID or attr[1][0] != _TAG_SET:
            raise _NotFast
        attr_type = data[attr[0][2]:attr[0][3]]
        values = _children(data, attr[1][2], attr[1][3])  # depth 8
        if attr_type == _OID_MESSAGE_DIGEST_DER:
            if len(values) != 1 or values[0][0] != _TAG_OCTETS or digest_at is not None:
                raise _NotFast
            digest_at = (values[0][2], values[0][3])
        elif attr_type == _OID_CONTENT_TYPE_DER:
            if len(values) != 1 or values[0][0] != _TAG_OID or content_type is not None:
                raise _NotFast
            content_type = data[values[0][2]:values[0][3]]
        else:
            _bounded(data, attr[1][1], attr[1][3], 7)
            if (attr_type == _OID_SIGNING_TIME_DER and len(values) == 1 and values[0][0] in _TIME_TAGS
                    and signing_time_at is None):
                signing_time_at = (values[0][2], values[0][3])
    if digest_at is None or (content_type is not None and content_type != econtent_type):
        raise _NotFast
    if not hmac.compare_digest(hashlib.new(digest_name, content).digest(), data[digest_at[0]:digest_at[1]]):
        raise _NotFast
    # the signature covers the attributes' DER with the SET OF tag in place of [0] IMPLICIT
    signed_bytes = b"\x31" + data[attrs_start + 1:attrs_e]

    kind_hash = _SIGNATURE_OIDS.get(_algorithm(data, signer_info[4], 5))
    if kind_hash is None:
        raise _NotFast
    kind, hash_name = kind_hash
    public_key = signer.cert.public_key()
    if not isinstance(public_key, _KEY_TYPES[kind]):
        raise _NotFast
    signature = data[signer_info[5][2]:signer_info[5][3]]
    if not verify_signature_with_key(public_key, signature, signed_bytes, _HASHES[hash_name or digest_name]()):
        raise _NotFast
    signature_at = (signer_info[5][2], signer_info[5][3])
    layout = _Layout(
        length=len(data), varying=tuple(sorted(filter(None, (digest_at, signing_time_at, signature_at)))),
        digest=digest_at, signature=signature_at, attributes=(attrs_start, attrs_e), digest_name=digest_name,
        hash_name=hash_name or digest_name,
    )
    return signer, layout


def verify_detached(
    signature: bytes,
    content: bytes,
    *,
    ca_certs: Sequence[x509.Certificate],
    at: dt.datetime | None = None,
    max_size: int = MAX_SIGNATURE_SIZE,
    verdicts: CertificateVerdicts | None = None,
) -> x509.Certificate:
    """Verify a detached SignedData over ``content``; return the signer certificate.

    The signer must have been issued by one of ``ca_certs`` and be valid at ``at`` (default now).
    With ``verdicts``, each distinct signer certificate is read and checked against a CA once; the
    signature over ``content`` and the validity at ``at`` are checked on every call.
    """
    if not isinstance(signature, bytes | bytearray) or not isinstance(content, bytes | bytearray):
        raise CMSError("no signature")
    signature, content = bytes(signature), bytes(content)
    signer = layout = None
    if 0 < len(signature) <= max_size:
        signer = verdicts.known_layout(signature, content) if verdicts is not None else None
        if signer is None:
            signer, layout = _fast_walked(signature, content, verdicts) or (None, None)
    if signer is None:
        signer = _guarded(_verify_structure, signature, content, max_size, verdicts).signer
    when = at or dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if verdicts is not None:
        windows = [verdicts.issued_window(signer, ca) for ca in ca_certs]
    else:
        windows = [_issued_window(signer.cert, ca) for ca in ca_certs]
    windows = [w for w in windows if w is not None]
    if not windows:
        raise CMSError("signer not issued by our CA")
    if not any(start <= when <= end for start, end in windows):
        raise CMSError("signer certificate expired or not yet valid")
    if verdicts is not None and layout is not None:
        verdicts.keep_layout(signature, layout, signer)
    return signer.cert


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
    signer = verified.signer.cert
    certificates = [facts.cert for facts in verified.certificates]
    trusted = bool(trust_roots) and _chains_to(signer, certificates, trust_roots)
    return SignedContent(
        content=verified.content,
        signer=signer,
        certificates=certificates,
        signer_subject=subject_string(signer),
        trusted=trusted,
    )
