"""CMS sign / verify: our signatures, openssl's, and everything that must be refused."""

from __future__ import annotations

import datetime as dt
import os
import plistlib

import pytest
from asn1crypto import cms as acms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdmserver.pki import cms
from mdmserver.pki import x509 as px

from .helpers import Identity, issue, make_ca, openssl_sign

BODY = plistlib.dumps({"MessageType": "Authenticate", "UDID": "0000-TEST", "Topic": "com.apple.mgmt.x"})


@pytest.fixture(scope="module")
def ca() -> Identity:
    return make_ca()


@pytest.fixture(scope="module")
def device(ca) -> Identity:
    return issue(ca, "device-rsa")


@pytest.fixture(scope="module")
def device_ec(ca) -> Identity:
    return issue(ca, "device-ec", kind="ec")


@pytest.fixture(scope="module")
def foreign_ca() -> Identity:
    return make_ca("somebody else's CA")


@pytest.fixture(scope="module")
def foreign_device(foreign_ca) -> Identity:
    return issue(foreign_ca, "device-rsa")


# --- signatures that must verify ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_our_detached_signature_verifies(ca, kind):
    signer = issue(ca, f"device-{kind}", kind=kind)
    sig = cms.sign(BODY, signer.cert, signer.key, detached=True)
    assert cms.looks_like_cms(sig)
    got = cms.verify_detached(sig, BODY, ca_certs=[ca.cert])
    assert got == signer.cert


def test_our_attached_signature_unwraps(ca, device):
    der = cms.sign(BODY, device.cert, device.key, extra_certs=[ca.cert])
    result = cms.unwrap_signed(der, trust_roots=[ca.cert])
    assert result.content == BODY
    assert result.signer == device.cert
    assert result.signer_subject == "CN=device-rsa"
    assert result.trusted is True
    assert ca.cert in result.certificates


def test_attached_signature_from_unknown_signer_is_intact_but_untrusted(ca, foreign_device):
    der = cms.sign(BODY, foreign_device.cert, foreign_device.key)
    result = cms.unwrap_signed(der, trust_roots=[ca.cert])
    assert result.content == BODY
    assert result.trusted is False
    assert cms.unwrap_signed(der).trusted is False


def test_attached_signature_trusted_through_embedded_intermediate(tmp_path):
    root = make_ca("root")
    # An intermediate: a CA certificate issued by the root (create_ca then re-issue by root).
    inter_key = px.generate_private_key("ec")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    inter_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=intermediate"))
        .issuer_name(root.cert.subject)
        .public_key(inter_key.public_key())
        .serial_number(12345)
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    inter = Identity(inter_cert, inter_key)
    leaf = issue(inter, "profile signer", usage="signing")
    der = cms.sign(BODY, leaf.cert, leaf.key, extra_certs=[inter.cert])
    assert cms.unwrap_signed(der, trust_roots=[root.cert]).trusted is True
    der_without_chain = cms.sign(BODY, leaf.cert, leaf.key)
    assert cms.unwrap_signed(der_without_chain, trust_roots=[root.cert]).trusted is False


@pytest.mark.parametrize(
    "kind,md",
    [("rsa", "sha256"), ("rsa", "sha1"), ("ec", "sha256"), ("ec", "sha1")],
)
def test_openssl_detached_signatures_verify(tmp_path, ca, kind, md):
    signer = issue(ca, f"openssl-{kind}", kind=kind)
    sig = openssl_sign(tmp_path, signer, BODY, md=md)
    assert cms.verify_detached(sig, BODY, ca_certs=[ca.cert]) == signer.cert
    with pytest.raises(cms.CMSError, match="digest mismatch"):
        cms.verify_detached(sig, BODY + b" ", ca_certs=[ca.cert])


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_openssl_attached_signature_unwraps(tmp_path, ca, kind):
    signer = issue(ca, f"openssl-{kind}", kind=kind)
    der = openssl_sign(tmp_path, signer, BODY, detached=False)
    result = cms.unwrap_signed(der, trust_roots=[ca.cert])
    assert result.content == BODY and result.trusted and result.signer == signer.cert


def test_openssl_signature_with_subject_key_identifier(tmp_path, ca, device):
    sig = openssl_sign(tmp_path, device, BODY, extra=["-keyid"])
    info = acms.ContentInfo.load(sig)
    assert info["content"]["signer_infos"][0]["sid"].name == "subject_key_identifier"
    assert cms.verify_detached(sig, BODY, ca_certs=[ca.cert]) == device.cert


def test_openssl_signature_without_signed_attributes(tmp_path, ca, device):
    sig = openssl_sign(tmp_path, device, BODY, extra=["-noattr"])
    assert cms.verify_detached(sig, BODY, ca_certs=[ca.cert]) == device.cert
    with pytest.raises(cms.CMSError, match="bad signature"):
        cms.verify_detached(sig, BODY[:-1], ca_certs=[ca.cert])


def test_openssl_rsa_pss_signature(tmp_path, ca, device):
    sig = openssl_sign(tmp_path, device, BODY, extra=["-keyopt", "rsa_padding_mode:pss"])
    assert cms.verify_detached(sig, BODY, ca_certs=[ca.cert]) == device.cert


def test_several_cas_accepted(ca, foreign_ca, foreign_device):
    sig = cms.sign(BODY, foreign_device.cert, foreign_device.key, detached=True)
    assert cms.verify_detached(sig, BODY, ca_certs=[ca.cert, foreign_ca.cert]) == foreign_device.cert


def test_real_signed_profiles_unwrap(conformance_dir):
    folder = conformance_dir / "profiles" / "paulmillr__encrypted-dns" / "signed"
    files = sorted(folder.glob("*.mobileconfig"))
    assert files
    for path in files:
        result = cms.unwrap_signed(path.read_bytes())
        assert plistlib.loads(result.content)["PayloadType"] == "Configuration"
        assert "encrypted-dns" in (result.signer_subject or "")
        assert result.trusted is False
        tampered = bytearray(path.read_bytes())
        index = bytes(tampered).index(b"PayloadType")
        tampered[index] ^= 0x01
        with pytest.raises(cms.CMSError, match="digest mismatch"):
            cms.unwrap_signed(bytes(tampered))


# --- what must be refused -------------------------------------------------------------------------


def test_tampered_body(ca, device):
    sig = cms.sign(BODY, device.cert, device.key, detached=True)
    with pytest.raises(cms.CMSError, match="digest mismatch"):
        cms.verify_detached(sig, BODY.replace(b"0000", b"0001"), ca_certs=[ca.cert])


def test_wrong_ca(device, foreign_ca):
    sig = cms.sign(BODY, device.cert, device.key, detached=True)
    with pytest.raises(cms.CMSError, match="signer not issued by our CA"):
        cms.verify_detached(sig, BODY, ca_certs=[foreign_ca.cert])
    with pytest.raises(cms.CMSError, match="signer not issued by our CA"):
        cms.verify_detached(sig, BODY, ca_certs=[])


def test_foreign_signer_with_our_ca_name(ca):
    """A self-made CA carrying our CA's exact subject must not pass for ours."""
    impostor_ca = make_ca("mdmserver test CA")
    assert impostor_ca.cert.subject == ca.cert.subject
    impostor = issue(impostor_ca, "device-rsa")
    sig = cms.sign(BODY, impostor.cert, impostor.key, detached=True)
    with pytest.raises(cms.CMSError, match="signer not issued by our CA"):
        cms.verify_detached(sig, BODY, ca_certs=[ca.cert])


def test_foreign_self_signed_signer(ca):
    selfsigned = make_ca("self signed device")
    sig = cms.sign(BODY, selfsigned.cert, selfsigned.key, detached=True)
    with pytest.raises(cms.CMSError, match="signer not issued by our CA"):
        cms.verify_detached(sig, BODY, ca_certs=[ca.cert])


def test_signature_by_another_key_than_the_embedded_certificate(ca, device):
    other = issue(ca, "other")
    # Sign with other's key but embed device's certificate under other's identifier: rebuild by
    # swapping the certificate bytes inside the structure.
    sig = cms.sign(BODY, other.cert, other.key, detached=True)
    info = acms.ContentInfo.load(sig)
    signed = info["content"]
    signed["certificates"] = [acms.CertificateChoices("certificate", _acert(device.cert))]
    sid = signed["signer_infos"][0]["sid"].chosen
    sid["serial_number"] = device.cert.serial_number
    forged = info.dump(force=True)
    with pytest.raises(cms.CMSError, match="bad signature"):
        cms.verify_detached(forged, BODY, ca_certs=[ca.cert])


def test_expired_signer(ca):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = px.generate_private_key("ec")
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=expired"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(99)
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(ca.key, hashes.SHA256())
    )
    sig = cms.sign(BODY, cert, key, detached=True)
    with pytest.raises(cms.CMSError, match="expired"):
        cms.verify_detached(sig, BODY, ca_certs=[ca.cert])


def test_validity_checked_at_given_time(ca, device):
    sig = cms.sign(BODY, device.cert, device.key, detached=True)
    now = dt.datetime.now(dt.UTC)
    assert cms.verify_detached(sig, BODY, ca_certs=[ca.cert], at=now + dt.timedelta(days=30))
    with pytest.raises(cms.CMSError, match="expired or not yet valid"):
        cms.verify_detached(sig, BODY, ca_certs=[ca.cert], at=now + dt.timedelta(days=400))
    with pytest.raises(cms.CMSError, match="expired or not yet valid"):
        cms.verify_detached(sig, BODY, ca_certs=[ca.cert], at=now - dt.timedelta(days=1))


def test_signature_without_certificates(tmp_path, ca, device):
    sig = openssl_sign(tmp_path, device, BODY, extra=["-nocerts"])
    with pytest.raises(cms.CMSError, match="signer certificate not found"):
        cms.verify_detached(sig, BODY, ca_certs=[ca.cert])


def test_detached_signature_has_no_content_to_unwrap(ca, device):
    sig = cms.sign(BODY, device.cert, device.key, detached=True)
    with pytest.raises(cms.CMSError, match="no content"):
        cms.unwrap_signed(sig, trust_roots=[ca.cert])


def test_attached_signature_with_tampered_content(ca, device):
    der = bytearray(cms.sign(BODY, device.cert, device.key))
    index = bytes(der).index(b"Authenticate")
    der[index] = ord("a")
    with pytest.raises(cms.CMSError, match="digest mismatch"):
        cms.unwrap_signed(bytes(der), trust_roots=[ca.cert])


def test_tampered_signed_attributes(ca, device):
    sig = cms.sign(BODY, device.cert, device.key, detached=True)
    info = acms.ContentInfo.load(sig)
    signer_info = info["content"]["signer_infos"][0]
    # Change the signing time: digest still matches, signature over the attributes does not.
    for attr in signer_info["signed_attrs"]:
        if attr["type"].native == "signing_time":
            attr["values"] = [acms.Time({"utc_time": dt.datetime(2001, 1, 1, tzinfo=dt.UTC)})]
    forged = info.dump(force=True)
    with pytest.raises(cms.CMSError, match="bad signature"):
        cms.verify_detached(forged, BODY, ca_certs=[ca.cert])


def test_missing_message_digest_attribute(ca, device):
    sig = cms.sign(BODY, device.cert, device.key, detached=True)
    info = acms.ContentInfo.load(sig)
    signer_info = info["content"]["signer_infos"][0]
    signer_info["signed_attrs"] = [
        a for a in signer_info["signed_attrs"] if a["type"].native != "message_digest"
    ]
    with pytest.raises(cms.CMSError, match="no messageDigest"):
        cms.verify_detached(info.dump(force=True), BODY, ca_certs=[ca.cert])


def test_not_signed_data(ca):
    data = acms.ContentInfo({"content_type": "data", "content": b"hello"}).dump()
    with pytest.raises(cms.CMSError, match="not a CMS SignedData"):
        cms.verify_detached(data, BODY, ca_certs=[ca.cert])


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "no signature"),
        (b"\x00", "malformed CMS"),
        (b"garbage that is not DER at all", "malformed CMS"),
        (b"\x30\x84\xff\xff\xff\xff", "malformed CMS"),
        (b"\x30" + b"\x80" * 3, "malformed CMS"),
        (b"\x30\x80" * 100 + b"\x00\x00" * 100, "nested too deeply"),
        (b"\x30\x03\x02\x01\x01trailing", "trailing data"),
        (b"\x30\x03\x02\x01\x01", "malformed CMS"),
        (b"\x04\x80\x00\x00", "indefinite primitive"),
    ],
)
def test_garbage_is_refused(ca, data, reason):
    with pytest.raises(cms.CMSError, match=reason):
        cms.verify_detached(data, BODY, ca_certs=[ca.cert])
    with pytest.raises(cms.CMSError):
        cms.unwrap_signed(data)


def test_truncated_signatures_are_refused(ca, device):
    sig = cms.sign(BODY, device.cert, device.key, detached=True)
    for cut in range(0, len(sig), 7):
        with pytest.raises(cms.CMSError):
            cms.verify_detached(sig[:cut], BODY, ca_certs=[ca.cert])


def test_oversized_input_refused_before_parsing(ca):
    with pytest.raises(cms.CMSError, match="too large"):
        cms.verify_detached(b"\x30" + b"\x00" * cms.MAX_SIGNATURE_SIZE, BODY, ca_certs=[ca.cert])
    with pytest.raises(cms.CMSError, match="too large"):
        cms.unwrap_signed(b"\x30\x00", max_size=1)


def test_wrong_input_types_are_refused(ca):
    with pytest.raises(cms.CMSError):
        cms.verify_detached(None, BODY, ca_certs=[ca.cert])  # type: ignore[arg-type]
    with pytest.raises(cms.CMSError):
        cms.unwrap_signed("text")  # type: ignore[arg-type]


def test_looks_like_cms(ca, device):
    assert cms.looks_like_cms(cms.sign(BODY, device.cert, device.key))
    assert not cms.looks_like_cms(BODY)
    assert not cms.looks_like_cms(b"")
    assert not cms.looks_like_cms(b"\x30\x82" + os.urandom(40))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_random_bytes_only_raise_cms_error(ca, data):
    with pytest.raises(cms.CMSError):
        cms.verify_detached(data, BODY, ca_certs=[ca.cert])
    with pytest.raises(cms.CMSError):
        cms.unwrap_signed(data, trust_roots=[ca.cert])


_VALID = {}


def _valid_signature(ca: Identity) -> tuple[bytes, Identity]:
    if "sig" not in _VALID:
        signer = issue(ca, "fuzz")
        _VALID["sig"] = (cms.sign(BODY, signer.cert, signer.key, detached=True), signer)
    return _VALID["sig"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_mutated_signatures_only_raise_cms_error(ca, position, value):
    sig, signer = _valid_signature(ca)
    mutated = bytearray(sig)
    mutated[position % len(sig)] = value
    try:
        got = cms.verify_detached(bytes(mutated), BODY, ca_certs=[ca.cert])
    except cms.CMSError:
        return
    # A few bytes (e.g. the SignedData version) are not covered by any signature.
    assert got == signer.cert


def _acert(cert):
    from asn1crypto import x509 as ax

    return ax.Certificate.load(px.cert_to_der(cert))
