"""The SCEP message layer (RFC 8894), against requests built by tests/scep_requests.py."""

from __future__ import annotations

import os

import pytest
from asn1crypto import cms as acms
from asn1crypto import core as acore
from cryptography.hazmat.primitives.asymmetric import ec

from mdmserver.pki import scep
from mdmserver.pki import x509 as px
from tests import scep_requests as sr
from tests.pki.helpers import issue, make_ca


@pytest.fixture(scope="module")
def ca():
    return make_ca("scep test CA")


@pytest.fixture(scope="module")
def requester():
    return sr.Requester.new()


def parse(ca, message: bytes) -> scep.ScepRequest:
    return scep.parse_pki_message(message, ca_cert=ca.cert, ca_key=ca.key)


@pytest.mark.parametrize("algorithm", ["aes128_cbc", "aes192_cbc", "aes256_cbc", "tripledes_3key"])
def test_pkcs_req_round_trip(ca, requester, algorithm):
    nonce = os.urandom(16)
    request = parse(ca, sr.pkcs_req(requester, ca.cert, "open sesame", algorithm=algorithm, nonce=nonce))
    assert request.message_type is scep.MessageType.PKCS_REQ
    assert request.transaction_id == requester.transaction_id
    assert request.sender_nonce == nonce
    assert request.signer == requester.cert
    assert request.content_encryption == algorithm
    assert scep.challenge_password(request.csr) == "open sesame"
    assert request.csr.public_key() == requester.key.public_key()

    issued = px.issue_certificate(ca.cert, ca.key, common_name="device", public_key=request.csr.public_key())
    reply = sr.read_reply(
        scep.build_cert_rep(request, ca_cert=ca.cert, ca_key=ca.key, status=scep.PkiStatus.SUCCESS, issued=issued),
        requester,
    )
    assert reply.signature_ok
    assert reply.signer == ca.cert
    assert reply.attributes[sr.MESSAGE_TYPE] == "3"
    assert reply.status == "0"
    assert reply.attributes[sr.TRANSACTION_ID] == requester.transaction_id
    assert reply.attributes[sr.RECIPIENT_NONCE] == nonce
    assert len(reply.attributes[sr.SENDER_NONCE]) == 16 and reply.attributes[sr.SENDER_NONCE] != nonce
    assert reply.certificates == [issued]


def test_failure_and_pending_replies_have_no_content(ca, requester):
    request = parse(ca, sr.pkcs_req(requester, ca.cert, "x"))
    failure = sr.read_reply(scep.build_cert_rep(
        request, ca_cert=ca.cert, ca_key=ca.key, status=scep.PkiStatus.FAILURE, fail_info=scep.FailInfo.BAD_REQUEST,
    ), requester)
    assert failure.signature_ok
    assert (failure.status, failure.fail_info, failure.certificates) == ("2", "2", [])
    assert failure.attributes[sr.RECIPIENT_NONCE] == request.sender_nonce
    pending = sr.read_reply(scep.build_cert_rep(
        request, ca_cert=ca.cert, ca_key=ca.key, status=scep.PkiStatus.PENDING), requester)
    assert (pending.status, pending.fail_info, pending.certificates) == ("3", None, [])
    with pytest.raises(ValueError):
        scep.build_cert_rep(request, ca_cert=ca.cert, ca_key=ca.key, status=scep.PkiStatus.SUCCESS)
    with pytest.raises(ValueError):
        scep.build_cert_rep(request, ca_cert=ca.cert, ca_key=ca.key, status=scep.PkiStatus.FAILURE)


def test_get_cert_initial(ca, requester):
    request = parse(ca, sr.get_cert_initial(requester, ca.cert))
    assert request.message_type is scep.MessageType.GET_CERT_INITIAL
    assert request.csr is None
    assert request.issuer_der == ca.cert.subject.public_bytes()
    assert request.subject_der == requester.cert.subject.public_bytes()


def test_csr_without_challenge(ca, requester):
    request = parse(ca, sr.pkcs_req(requester, ca.cert, None))
    assert scep.challenge_password(request.csr) is None


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


def test_tampered_signature_is_refused(ca, requester):
    message = sr.pkcs_req(requester, ca.cert, "x")
    # the signature is the last element: flip a bit near the end
    with pytest.raises(scep.ScepSignatureError):
        parse(ca, _flip(message, len(message) - 10))


def test_tampered_content_is_refused(ca, requester):
    envelope = sr.envelope(requester.csr("x"), ca.cert)
    message = sr.pki_message(requester, sr.PKCS_REQ, envelope)
    index = message.index(envelope) + len(envelope) - 5
    with pytest.raises(scep.ScepSignatureError):
        parse(ca, _flip(message, index))


def test_signed_by_another_key_than_the_embedded_certificate(ca, requester):
    other = sr.Requester.new()
    message = sr.pki_message(requester, sr.PKCS_REQ, sr.envelope(requester.csr("x"), ca.cert),
                             signer_key=other.key)
    with pytest.raises(scep.ScepSignatureError):
        parse(ca, message)


def test_pkcs_req_signer_must_be_self_signed(ca, requester):
    issued = issue(make_ca("someone else's CA"), "device")
    message = sr.pki_message(requester, sr.PKCS_REQ, sr.envelope(requester.csr("x"), ca.cert),
                             signer_key=issued.key, signer_cert=issued.cert)
    with pytest.raises(scep.ScepSignatureError, match="self-signed"):
        parse(ca, message)


def test_encrypted_to_another_ca_is_refused(ca, requester):
    other = make_ca("another CA")
    with pytest.raises(scep.ScepDecryptError, match="not encrypted to this CA"):
        parse(ca, sr.pkcs_req(requester, other.cert, "x"))


def test_wrong_key_transport_and_bad_padding_read_the_same(ca, requester):
    """An envelope naming our CA whose key block is garbage, and one whose key block is right but whose
    content is garbage, fail with the same error text (no padding oracle)."""
    good = sr.envelope(requester.csr("x"), ca.cert)
    info = acms.ContentInfo.load(good)
    recipient = info["content"]["recipient_infos"][0].chosen
    recipient["encrypted_key"] = os.urandom(256)
    bad_key = info.dump(force=True)
    info = acms.ContentInfo.load(good)
    encrypted = info["content"]["encrypted_content_info"]
    encrypted["encrypted_content"] = os.urandom(len(encrypted["encrypted_content"].native))
    bad_content = info.dump(force=True)
    reasons = set()
    for envelope in (bad_key, bad_content):
        with pytest.raises(scep.ScepDecryptError) as caught:
            parse(ca, sr.pki_message(requester, sr.PKCS_REQ, envelope))
        reasons.add(caught.value.reason)
    assert reasons == {"could not decrypt the message"}


def _with_algorithm(envelope: bytes, algorithm: str, iv_size: int) -> bytes:
    info = acms.ContentInfo.load(envelope)
    info["content"]["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"] = algorithm
    info["content"]["encrypted_content_info"]["content_encryption_algorithm"]["parameters"] = acore.OctetString(
        os.urandom(iv_size))
    return info.dump(force=True)


@pytest.mark.parametrize("algorithm,iv_size", [("des", 8), ("aes128_ofb", 16), ("aes256_cfb", 16)])
def test_refused_content_encryption_is_a_refusal_not_an_error(ca, requester, algorithm, iv_size):
    """A sound, signed message in an algorithm refused here: not opened, answered badAlg."""
    envelope = _with_algorithm(sr.envelope(requester.csr("x"), ca.cert), algorithm, iv_size)
    request = parse(ca, sr.pki_message(requester, sr.PKCS_REQ, envelope))
    assert request.refusal is scep.FailInfo.BAD_ALG and request.csr is None
    assert request.transaction_id == requester.transaction_id
    reply = sr.read_reply(scep.build_cert_rep(request, ca_cert=ca.cert, ca_key=ca.key, status=scep.PkiStatus.FAILURE,
                                              fail_info=request.refusal), requester)
    assert reply.signature_ok and (reply.status, reply.fail_info) == ("2", "0")
    with pytest.raises(ValueError):
        scep.build_cert_rep(request, ca_cert=ca.cert, ca_key=ca.key, status=scep.PkiStatus.SUCCESS,
                            issued=requester.cert)


def test_single_des_when_allowed(ca, requester):
    message = sr.pkcs_req(requester, ca.cert, "x", algorithm="des")
    assert parse(ca, message).refusal is scep.FailInfo.BAD_ALG
    request = scep.parse_pki_message(message, ca_cert=ca.cert, ca_key=ca.key, allow_des=True)
    assert request.refusal is None and request.content_encryption == "des"
    assert scep.challenge_password(request.csr) == "x"
    issued = px.issue_certificate(ca.cert, ca.key, common_name="device", public_key=request.csr.public_key())
    reply = sr.read_reply(scep.build_cert_rep(request, ca_cert=ca.cert, ca_key=ca.key, status=scep.PkiStatus.SUCCESS,
                                              issued=issued), requester)
    assert reply.certificates == [issued]


@pytest.mark.parametrize("message_type", ["42", "3", ""])
def test_unknown_or_wrong_message_type(ca, requester, message_type):
    message = sr.pki_message(requester, message_type, sr.envelope(requester.csr("x"), ca.cert))
    with pytest.raises(scep.ScepError):
        parse(ca, message)


@pytest.mark.parametrize("missing", [sr.MESSAGE_TYPE, sr.TRANSACTION_ID, sr.SENDER_NONCE])
def test_missing_attribute(ca, requester, missing):
    message = sr.pki_message(requester, sr.PKCS_REQ, sr.envelope(requester.csr("x"), ca.cert), omit=(missing,))
    with pytest.raises(scep.ScepMalformed):
        parse(ca, message)


def test_repeated_attribute(ca, requester):
    message = sr.pki_message(requester, sr.PKCS_REQ, sr.envelope(requester.csr("x"), ca.cert),
                             extra_attributes=[sr.attribute(sr.TRANSACTION_ID, acore.PrintableString("other"))])
    with pytest.raises(scep.ScepMalformed):
        parse(ca, message)


def test_attribute_of_the_wrong_type(ca, requester):
    message = sr.pki_message(requester, sr.PKCS_REQ, sr.envelope(requester.csr("x"), ca.cert),
                             omit=(sr.SENDER_NONCE,),
                             extra_attributes=[sr.attribute(sr.SENDER_NONCE, acore.PrintableString("a" * 16))])
    with pytest.raises(scep.ScepMalformed):
        parse(ca, message)


@pytest.mark.parametrize("transaction_id", ["line\nbreak", "t" * 129, "caf\u00e9"])
def test_bad_transaction_id(ca, transaction_id):
    """The transaction id is stored and logged: printable ASCII, 128 characters at most."""
    requester = sr.Requester.new()
    requester.transaction_id = transaction_id
    message = sr.pki_message(requester, sr.PKCS_REQ, sr.envelope(requester.csr("x"), ca.cert), omit=(sr.TRANSACTION_ID,),
                             extra_attributes=[sr.attribute(sr.TRANSACTION_ID, acore.UTF8String(transaction_id))])
    with pytest.raises(scep.ScepMalformed):
        parse(ca, message)


def test_short_nonce(ca, requester):
    with pytest.raises(scep.ScepMalformed):
        parse(ca, sr.pkcs_req(requester, ca.cert, "x", nonce=b"\x01\x02"))


def test_envelope_that_is_not_a_csr(ca, requester):
    message = sr.pki_message(requester, sr.PKCS_REQ, sr.envelope(b"not a CSR at all", ca.cert))
    with pytest.raises(scep.ScepDecryptError):
        parse(ca, message)


def test_csr_with_a_bad_self_signature(ca, requester):
    csr = bytearray(requester.csr("x"))
    csr[-5] ^= 0x01
    with pytest.raises(scep.ScepSignatureError):
        parse(ca, sr.pkcs_req(requester, ca.cert, "x", csr=bytes(csr)))


def test_content_not_an_envelope(ca, requester):
    with pytest.raises(scep.ScepError):
        parse(ca, sr.pki_message(requester, sr.PKCS_REQ, b"\x04\x03abc"))
    with pytest.raises(scep.ScepError):
        parse(ca, sr.pki_message(requester, sr.PKCS_REQ, requester.csr("x")))


@pytest.mark.parametrize("data", [b"", b"\x00", b"garbage" * 10, b"\x30\x80", b"\x30\x82\xff\xff\x06"])
def test_garbage(ca, data):
    with pytest.raises(scep.ScepMalformed):
        parse(ca, data)


def test_truncated(ca, requester):
    message = sr.pkcs_req(requester, ca.cert, "x")
    for cut in (1, 10, len(message) // 2, len(message) - 1):
        with pytest.raises(scep.ScepMalformed):
            parse(ca, message[:cut])


def test_oversized(ca, requester):
    message = sr.pkcs_req(requester, ca.cert, "x")
    with pytest.raises(scep.ScepMalformed, match="too large"):
        scep.parse_pki_message(message, ca_cert=ca.cert, ca_key=ca.key, max_size=len(message) - 1)
    with pytest.raises(scep.ScepMalformed, match="too large"):
        parse(ca, b"\x30" + b"\x00" * scep.MAX_MESSAGE_SIZE)


def test_hostile_nesting_is_refused_before_parsing(ca):
    depth = 5000
    nested = b"\x30\x80" * depth + b"\x00\x00" * depth
    with pytest.raises(scep.ScepMalformed):
        parse(ca, nested)
    many = b"\x30\x82\x9c\x40" + b"\x05\x00" * 20000  # 20,000 NULLs in one SEQUENCE
    with pytest.raises(scep.ScepMalformed):
        parse(ca, many)


def test_not_a_string_input(ca):
    with pytest.raises(scep.ScepMalformed):
        scep.parse_pki_message("text", ca_cert=ca.cert, ca_key=ca.key)


def test_reply_to_an_ec_signer_is_refused(ca):
    key = ec.generate_private_key(ec.SECP256R1())
    requester = sr.Requester.new(key=key)
    request = parse(ca, sr.pkcs_req(requester, ca.cert, "x"))
    issued = px.issue_certificate(ca.cert, ca.key, common_name="d", public_key=key.public_key())
    with pytest.raises(scep.ScepUnsupported):
        scep.build_cert_rep(request, ca_cert=ca.cert, ca_key=ca.key, status=scep.PkiStatus.SUCCESS, issued=issued)


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


def _rebuilt_envelope(envelope: bytes, encrypted_content: bytes) -> bytes:
    """The envelope with its encryptedContent element replaced by ``encrypted_content`` (raw TLV)."""
    info = acms.ContentInfo.load(envelope)
    enveloped = info["content"]
    eci = enveloped["encrypted_content_info"]
    eci_der = _tlv(0x30, eci["content_type"].dump() + eci["content_encryption_algorithm"].dump() + encrypted_content)
    enveloped_der = _tlv(0x30, enveloped["version"].dump() + enveloped["recipient_infos"].dump() + eci_der)
    return _tlv(0x30, info["content_type"].dump() + _tlv(0xA0, enveloped_der))


@pytest.mark.parametrize("indefinite", [False, True])
def test_constructed_encrypted_content(ca, requester, indefinite):
    """BER lets encryptedContent come in chunks (micromdm's scepclient sends a constructed [0])."""
    envelope = sr.envelope(requester.csr("chunks"), ca.cert)
    ciphertext = acms.ContentInfo.load(envelope)["content"]["encrypted_content_info"]["encrypted_content"].native
    chunks = b"".join(_tlv(0x04, ciphertext[i:i + 100]) for i in range(0, len(ciphertext), 100))
    nested = _tlv(0x24, chunks)  # one more level: a constructed chunk of chunks
    body = (b"\xa0\x80" + nested + b"\x00\x00") if indefinite else _tlv(0xA0, nested)
    request = parse(ca, sr.pki_message(requester, sr.PKCS_REQ, _rebuilt_envelope(envelope, body)))
    assert scep.challenge_password(request.csr) == "chunks"


@pytest.mark.parametrize("body", [
    b"\xa0\x05\x04\x10abc",  # chunk longer than its parent
    b"\xa0\x03\x02\x01\x00",  # chunk that is not an OCTET STRING
    b"\x81\x02ab",  # not [0]
    b"\xa0\x80\x04\x02ab",  # indefinite, never ended
    b"\x80\x80ab",  # indefinite primitive
    b"\xa0" + b"\x80\x24" * 20 + b"\x00\x00" * 20,  # chunks nested deeper than any client sends
])
def test_malformed_constructed_encrypted_content(ca, requester, body):
    envelope = _rebuilt_envelope(sr.envelope(requester.csr("x"), ca.cert), body)
    with pytest.raises(scep.ScepMalformed):
        parse(ca, sr.pki_message(requester, sr.PKCS_REQ, envelope))


def test_hostile_nesting_inside_the_envelope(ca, requester):
    """The signed content is checked before parsing too: a valid signature over a bomb is refused."""
    depth = 3000
    bomb = b"\x30\x80" * depth + b"\x00\x00" * depth
    with pytest.raises(scep.ScepMalformed):
        parse(ca, sr.pki_message(requester, sr.PKCS_REQ, bomb))
