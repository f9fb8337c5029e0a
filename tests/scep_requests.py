"""A hand-built SCEP requester for tests, written apart from ``mdmserver.pki.scep``.

Requests are built from RFC 8894's description with asn1crypto and cryptography (the envelope by
cryptography's own PKCS#7 envelope builder where it can); replies are read the same way
(cryptography's PKCS#7 decryption for the envelope). Nothing here calls the product's SCEP code,
so a test's expectation never comes from the code under test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass, field

from asn1crypto import cms as acms
from asn1crypto import core as acore
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sympadding
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AttributeOID, NameOID

SCEP = "2.16.840.1.113733.1.9."
MESSAGE_TYPE, PKI_STATUS, FAIL_INFO = SCEP + "2", SCEP + "3", SCEP + "4"
SENDER_NONCE, RECIPIENT_NONCE, TRANSACTION_ID = SCEP + "5", SCEP + "6", SCEP + "7"

PKCS_REQ, GET_CERT_INITIAL, RENEWAL_REQ = "19", "20", "17"


@dataclass
class Requester:
    """A device's side of SCEP: its key, its self-signed certificate, its CSR."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    transaction_id: str = field(default_factory=lambda: os.urandom(16).hex())

    @classmethod
    def new(cls, *, key=None, bits: int = 2048) -> Requester:
        key = key or rsa.generate_private_key(public_exponent=65537, key_size=bits)
        return cls(key=key, cert=self_signed(key))

    def csr(self, challenge: str | None, *, key=None, cn: str = "device asks for this") -> bytes:
        key = key or self.key
        builder = x509.CertificateSigningRequestBuilder().subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        )
        if challenge is not None:
            builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
        algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)


def self_signed(key, cn: str = "scep requester") -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256())
    )


_CIPHERS = {
    "aes128_cbc": (algorithms.AES, 16, 16),
    "aes192_cbc": (algorithms.AES, 24, 16),
    "aes256_cbc": (algorithms.AES, 32, 16),
    "tripledes_3key": (TripleDES, 24, 8),
    "des": (lambda key: TripleDES(key * 3), 8, 8),  # single DES: Triple DES with K1 = K2 = K3
}


def envelope(content: bytes, recipient: x509.Certificate, algorithm: str = "aes128_cbc") -> bytes:
    """EnvelopedData of ``content`` for ``recipient``: cryptography's builder for AES-128/256,
    a hand-made one (RFC 5652 6) for the algorithms it does not offer."""
    builtin = {"aes128_cbc": algorithms.AES128, "aes256_cbc": algorithms.AES256}
    if algorithm in builtin:
        return (
            pkcs7.PKCS7EnvelopeBuilder().set_data(content).add_recipient(recipient)
            .set_content_encryption_algorithm(builtin[algorithm])
            .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
        )
    cipher, key_size, block = _CIPHERS[algorithm]
    key, iv = os.urandom(key_size), os.urandom(block)
    padder = sympadding.PKCS7(block * 8).padder()
    encryptor = Cipher(cipher(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(content) + padder.finalize()) + encryptor.finalize()
    ax_cert = ax509.Certificate.load(recipient.public_bytes(serialization.Encoding.DER))
    enveloped = acms.EnvelopedData({
        "version": "v0",
        "recipient_infos": [acms.RecipientInfo(name="ktri", value={
            "version": "v0",
            "rid": acms.RecipientIdentifier(name="issuer_and_serial_number", value={
                "issuer": ax_cert.issuer, "serial_number": ax_cert.serial_number}),
            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
            "encrypted_key": recipient.public_key().encrypt(key, padding.PKCS1v15()),
        })],
        "encrypted_content_info": {
            "content_type": "data",
            "content_encryption_algorithm": {"algorithm": algorithm, "parameters": acore.OctetString(iv)},
            "encrypted_content": ciphertext,
        },
    })
    return acms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


def attribute(oid: str, value: acore.Asn1Value) -> acms.CMSAttribute:
    return acms.CMSAttribute({"type": acms.CMSAttributeType(oid), "values": [value]})


def pki_message(
    requester: Requester,
    message_type: str,
    content: bytes,
    *,
    nonce: bytes | None = None,
    signer_key=None,
    signer_cert: x509.Certificate | None = None,
    extra_attributes: list[acms.CMSAttribute] = (),
    omit: tuple[str, ...] = (),
) -> bytes:
    """A SignedData over ``content`` (an envelope) with the SCEP signed attributes."""
    key = signer_key or requester.key
    cert = signer_cert or requester.cert
    attributes = [
        acms.CMSAttribute({"type": "content_type", "values": ["data"]}),
        acms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(content).digest()]}),
    ]
    scep = {
        MESSAGE_TYPE: acore.PrintableString(message_type),
        TRANSACTION_ID: acore.PrintableString(requester.transaction_id),
        SENDER_NONCE: acore.OctetString(nonce or os.urandom(16)),
    }
    attributes += [attribute(oid, value) for oid, value in scep.items() if oid not in omit]
    attributes += list(extra_attributes)
    signed_attrs = acms.CMSAttributes(attributes)
    to_sign = signed_attrs.dump()
    if isinstance(key, rsa.RSAPrivateKey):
        signature, algorithm = key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256()), "sha256_rsa"
    else:
        signature, algorithm = key.sign(to_sign, ec.ECDSA(hashes.SHA256())), "sha256_ecdsa"
    ax_cert = ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    signer_info = acms.SignerInfo({
        "version": "v1",
        "sid": acms.SignerIdentifier(name="issuer_and_serial_number", value={
            "issuer": ax_cert.issuer, "serial_number": ax_cert.serial_number}),
        "digest_algorithm": {"algorithm": "sha256"},
        "signed_attrs": signed_attrs,
        "signature_algorithm": {"algorithm": algorithm},
        "signature": signature,
    })
    signed = acms.SignedData({
        "version": "v1",
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": "data", "content": content},
        "certificates": [ax_cert],
        "signer_infos": [signer_info],
    })
    return acms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()


def pkcs_req(requester: Requester, ca: x509.Certificate, challenge: str | None, *, algorithm: str = "aes128_cbc",
             nonce: bytes | None = None, csr: bytes | None = None) -> bytes:
    body = csr if csr is not None else requester.csr(challenge)
    return pki_message(requester, PKCS_REQ, envelope(body, ca, algorithm), nonce=nonce)


def get_cert_initial(requester: Requester, ca: x509.Certificate, subject: x509.Name | None = None) -> bytes:
    ax_ca = ax509.Certificate.load(ca.public_bytes(serialization.Encoding.DER))
    subject_der = (subject or requester.cert.subject).public_bytes()
    body = acore.Sequence.load(
        b"\x30" + _der_length(len(ax_ca.subject.dump()) + len(subject_der)) + ax_ca.subject.dump() + subject_der
    ).dump()
    return pki_message(requester, GET_CERT_INITIAL, envelope(body, ca))


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


@dataclass
class Reply:
    """A CertRep as the requester reads it."""

    signer: x509.Certificate
    attributes: dict[str, object]
    signature_ok: bool
    certificates: list[x509.Certificate]

    @property
    def status(self) -> str:
        return self.attributes[PKI_STATUS]

    @property
    def fail_info(self) -> str | None:
        return self.attributes.get(FAIL_INFO)


def read_reply(der: bytes, requester: Requester) -> Reply:
    """Verify the CA's signature (against the certificate in the reply) and open the envelope."""
    info = acms.ContentInfo.load(der)
    assert info["content_type"].native == "signed_data"
    signed = info["content"]
    signer_info = signed["signer_infos"][0]
    ca = x509.load_der_x509_certificate(signed["certificates"][0].chosen.dump())
    signed_attrs = signer_info["signed_attrs"]
    to_verify = b"\x31" + signed_attrs.dump()[1:]
    content = signed["encap_content_info"]["content"].native
    values = {}
    for attr in signed_attrs:
        oid = attr["type"].dotted
        values[oid] = acore.load(attr["values"][0].dump()).native if oid.startswith(SCEP) else attr["values"][0].native
    digest_ok = values.get("1.2.840.113549.1.9.4") == hashlib.sha256(content or b"").digest()
    try:
        ca.public_key().verify(signer_info["signature"].native, to_verify, padding.PKCS1v15(), hashes.SHA256())
        signature_ok = digest_ok
    except Exception:  # noqa: BLE001
        signature_ok = False
    certificates = []
    if content:
        inner = open_envelope(content, requester)
        certificates = pkcs7.load_der_pkcs7_certificates(inner)
    return Reply(signer=ca, attributes=values, signature_ok=signature_ok, certificates=certificates)


def open_envelope(der: bytes, requester: Requester) -> bytes:
    """The plaintext of an EnvelopedData for ``requester``: cryptography's PKCS#7 decryption where it
    knows the algorithm, else by hand (RFC 5652 6, RSA PKCS#1 v1.5 key transport, CBC)."""
    try:
        return pkcs7.pkcs7_decrypt_der(der, requester.cert, requester.key, [])
    except UnsupportedAlgorithm:
        pass
    enveloped = acms.ContentInfo.load(der)["content"]
    recipient = enveloped["recipient_infos"][0].chosen
    key = requester.key.decrypt(recipient["encrypted_key"].native, padding.PKCS1v15())
    encrypted = enveloped["encrypted_content_info"]
    algorithm = encrypted["content_encryption_algorithm"]
    cipher, _, block = _CIPHERS[algorithm["algorithm"].native]
    decryptor = Cipher(cipher(key), modes.CBC(algorithm["parameters"].native)).decryptor()
    padded = decryptor.update(encrypted["encrypted_content"].native) + decryptor.finalize()
    unpadder = sympadding.PKCS7(block * 8).unpadder()
    return unpadder.update(padded) + unpadder.finalize()
