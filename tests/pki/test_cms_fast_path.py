"""The device channel's fast signature check (``pki.cms._fast_verify``) only ever accepts what the general
asn1crypto path accepts, with the same signer; it takes the shapes devices send, and leaves every other
shape and every failure to the general path (whose reasons the tests in test_cms.py pin)."""

from __future__ import annotations

import datetime as dt

import pytest
from asn1crypto import cms as acms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdmserver.pki import cms

from .helpers import Identity, issue, make_ca, openssl_sign

BODY = b"<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>Status</key><string>Idle</string></dict></plist>"


@pytest.fixture(scope="module")
def ca() -> Identity:
    return make_ca("mdmserver fast-path CA")


def _general(signature: bytes, body: bytes) -> cms._CertFacts:
    return cms._guarded(cms._verify_structure, signature, body, cms.MAX_SIGNATURE_SIZE).signer


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_our_signatures_take_the_fast_path(ca, kind):
    device = issue(ca, f"fast-{kind}", kind=kind)
    signature = cms.sign(BODY, device.cert, device.key, detached=True)
    verdicts = cms.CertificateVerdicts()
    facts = cms._fast_verify(signature, BODY, verdicts)
    assert facts is not None and facts.cert == device.cert
    assert cms.verify_detached(signature, BODY, ca_certs=[ca.cert], verdicts=verdicts) == device.cert
    assert cms._fast_verify(signature, BODY, verdicts).cert == device.cert  # with the cached certificate


@pytest.mark.parametrize("extra", [[], ["-keyid"]])
def test_openssl_signatures_take_the_fast_path(tmp_path, ca, extra):
    device = issue(ca, "fast-openssl")
    signature = openssl_sign(tmp_path, device, BODY, extra=extra)
    facts = cms._fast_verify(signature, BODY, None)
    assert facts is not None and facts.cert == device.cert


@pytest.mark.parametrize("extra", [["-noattr"], ["-keyopt", "rsa_padding_mode:pss"], ["-nocerts"]])
def test_other_shapes_go_to_the_general_path(tmp_path, ca, extra):
    device = issue(ca, "general-openssl")
    signature = openssl_sign(tmp_path, device, BODY, extra=extra)
    assert cms._fast_verify(signature, BODY, None) is None


def test_failures_are_left_to_the_general_path(ca):
    device = issue(ca, "fast-failures")
    signature = cms.sign(BODY, device.cert, device.key, detached=True)
    assert cms._fast_verify(signature, BODY + b" ", None) is None  # digest
    info = acms.ContentInfo.load(signature)
    for attr in info["content"]["signer_infos"][0]["signed_attrs"]:
        if attr["type"].native == "signing_time":
            attr["values"] = [acms.Time({"utc_time": dt.datetime(2001, 1, 1, tzinfo=dt.UTC)})]
    forged = info.dump(force=True)
    assert cms._fast_verify(forged, BODY, None) is None  # signature over the attributes
    with pytest.raises(cms.CMSError, match="bad signature"):
        cms.verify_detached(forged, BODY, ca_certs=[ca.cert])
    impostor = issue(make_ca("mdmserver fast-path CA"), "impostor")  # our CA's name, another key
    foreign = cms.sign(BODY, impostor.cert, impostor.key, detached=True)
    assert cms._fast_verify(foreign, BODY, None) is not None  # the signature itself is intact…
    with pytest.raises(cms.CMSError, match="signer not issued by our CA"):  # …the CA check refuses it
        cms.verify_detached(foreign, BODY, ca_certs=[ca.cert], verdicts=cms.CertificateVerdicts())


def test_nesting_limit_applies_inside_parts_the_walk_skips(ca):
    """The digest algorithms of SignedData are covered by no signature and the walk does not read them:
    nested past MAX_DEPTH there, the signature is still refused (as the general path refuses it)."""
    from asn1crypto import core as acore

    device = issue(ca, "fast-nesting")
    signature = cms.sign(BODY, device.cert, device.key, detached=True)

    def with_parameters(depth: int) -> bytes:
        deep = b"\x05\x00"
        for _ in range(depth):
            deep = b"\x30" + bytes([len(deep)]) + deep if len(deep) < 128 else b"\x30\x81" + bytes([len(deep)]) + deep
        info = acms.ContentInfo.load(signature)
        info["content"]["digest_algorithms"] = [
            acms.DigestAlgorithm({"algorithm": "sha256"}),
            acms.DigestAlgorithm({"algorithm": "1.2.3.4", "parameters": acore.Any.load(deep)})]
        return info.dump(force=True)

    shallow = with_parameters(3)
    assert cms._fast_verify(shallow, BODY, None) is not None  # the rest of the structure is intact
    too_deep = with_parameters(cms.MAX_DEPTH)
    assert cms._fast_verify(too_deep, BODY, None) is None
    with pytest.raises(cms.CMSError, match="nested too deeply"):
        cms.verify_detached(too_deep, BODY, ca_certs=[ca.cert])


_SIGNED: dict[str, tuple[bytes, Identity]] = {}


def _signed(ca: Identity) -> tuple[bytes, Identity]:
    if "sig" not in _SIGNED:
        device = issue(ca, "fast-fuzz")
        _SIGNED["sig"] = (cms.sign(BODY, device.cert, device.key, detached=True), device)
    return _SIGNED["sig"]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_fast_acceptance_implies_general_acceptance(ca, position, value):
    signature, device = _signed(ca)
    mutated = bytearray(signature)
    mutated[position % len(signature)] = value
    facts = cms._fast_verify(bytes(mutated), BODY, None)
    if facts is None:
        return
    # the same signer (a byte of the embedded certificate the signature does not cover may have changed:
    # the CA check after both paths refuses that certificate, see test_cms.py's mutation test)
    assert _general(bytes(mutated), BODY).cert == facts.cert


# --- a device's later signatures: the walk's verdict on the fixed part, the crypto on the rest ---------

OTHER_BODY = BODY.replace(b"Idle", b"Acknowledged")


def _signed_at(signature: bytes, device: Identity, when: dt.datetime, body: bytes) -> bytes:
    """``signature`` (cms.sign's, over another body) made again over ``body`` at ``when`` by ``device``:
    another message digest, signing time and signature value in the same shape, signed with the
    cryptography library directly (not by the code under test)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    info = acms.ContentInfo.load(signature)
    signer = info["content"]["signer_infos"][0]
    for attr in signer["signed_attrs"]:
        if attr["type"].native == "signing_time":
            attr["values"] = [acms.Time({"utc_time": when})]
        elif attr["type"].native == "message_digest":
            import hashlib

            attr["values"] = [hashlib.sha256(body).digest()]
    to_sign = b"\x31" + signer["signed_attrs"].dump(force=True)[1:]
    if isinstance(device.key, ec.EllipticCurvePrivateKey):
        signer["signature"] = device.key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
    else:
        signer["signature"] = device.key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
    return info.dump(force=True)


def test_a_devices_later_signatures_skip_the_walk_and_keep_every_check(ca):
    device = issue(ca, "layout")
    first = cms.sign(BODY, device.cert, device.key, detached=True)
    later = _signed_at(first, device, dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC), OTHER_BODY)
    assert len(later) == len(first) and later != first
    verdicts = cms.CertificateVerdicts()
    assert verdicts.known_layout(later, OTHER_BODY) is None  # nothing accepted yet
    assert cms.verify_detached(first, BODY, ca_certs=[ca.cert], verdicts=verdicts) == device.cert
    # the later signature: same fixed part, its own digest, signing time and signature
    assert verdicts.known_layout(later, OTHER_BODY).cert == device.cert
    assert _general(later, OTHER_BODY).cert == device.cert  # the general path agrees
    assert cms.verify_detached(later, OTHER_BODY, ca_certs=[ca.cert], verdicts=verdicts) == device.cert
    # what the varying parts must still prove
    assert verdicts.known_layout(later, BODY) is None  # the digest is OTHER_BODY's
    with pytest.raises(cms.CMSError, match="digest"):
        cms.verify_detached(later, BODY, ca_certs=[ca.cert], verdicts=verdicts)
    forged = _with_byte(later, len(later) - 5, later[-5] ^ 0x01)  # inside the signature value
    assert verdicts.known_layout(forged, OTHER_BODY) is None
    with pytest.raises(cms.CMSError, match="bad signature"):
        cms.verify_detached(forged, OTHER_BODY, ca_certs=[ca.cert], verdicts=verdicts)
    # validity is the request's: past the certificate's end, a known layout is refused like any signature
    expired = device.cert.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(cms.CMSError, match="expired"):
        cms.verify_detached(later, OTHER_BODY, ca_certs=[ca.cert], verdicts=verdicts, at=expired)


def _with_byte(data: bytes, position: int, value: int) -> bytes:
    changed = bytearray(data)
    changed[position] = value
    return bytes(changed)


def test_only_signatures_our_ca_issued_are_kept_and_each_device_has_its_own(ca):
    device, other = issue(ca, "layout-a"), issue(ca, "layout-b")
    verdicts = cms.CertificateVerdicts()
    assert cms.verify_detached(cms.sign(BODY, device.cert, device.key, detached=True), BODY,
                               ca_certs=[ca.cert], verdicts=verdicts) == device.cert
    # another device of the same shape: not the first device's entry, its own after its own walk
    theirs = cms.sign(BODY, other.cert, other.key, detached=True)
    assert verdicts.known_layout(theirs, BODY) is None
    assert cms.verify_detached(theirs, BODY, ca_certs=[ca.cert], verdicts=verdicts) == other.cert
    assert verdicts.known_layout(theirs, BODY).cert == other.cert
    # an impostor CA of our CA's name: its device's intact signature is refused and nothing is kept
    impostor = issue(make_ca("mdmserver fast-path CA"), "layout-impostor")
    foreign = cms.sign(BODY, impostor.cert, impostor.key, detached=True)
    with pytest.raises(cms.CMSError, match="signer not issued by our CA"):
        cms.verify_detached(foreign, BODY, ca_certs=[ca.cert], verdicts=verdicts)
    assert verdicts.known_layout(foreign, BODY) is None


def test_kept_signatures_are_bounded(ca):
    verdicts = cms.CertificateVerdicts(maxsize=2)
    devices = [issue(ca, f"bounded-{index}") for index in range(3)]
    signatures = [cms.sign(BODY, d.cert, d.key, detached=True) for d in devices]
    for signature in signatures:
        cms.verify_detached(signature, BODY, ca_certs=[ca.cert], verdicts=verdicts)
    assert verdicts.known_layout(signatures[0], BODY) is None  # the oldest went
    assert [verdicts.known_layout(s, BODY).cert for s in signatures[1:]] == [d.cert for d in devices[1:]]


_KEPT: dict[str, tuple[bytes, cms.CertificateVerdicts]] = {}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_a_known_layouts_acceptance_implies_general_acceptance(ca, position, value):
    """Any one byte of a kept device's later signature changed: whenever the kept layout accepts it, the
    general path accepts it too, with the same signer."""
    if "sig" not in _KEPT:
        signature, device = _signed(ca)
        verdicts = cms.CertificateVerdicts()
        cms.verify_detached(signature, BODY, ca_certs=[ca.cert], verdicts=verdicts)
        later = _signed_at(signature, device, dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC), OTHER_BODY)
        _KEPT["sig"] = (later, verdicts)
    later, verdicts = _KEPT["sig"]
    mutated = _with_byte(later, position % len(later), value)
    facts = verdicts.known_layout(mutated, OTHER_BODY)
    if facts is None:
        return
    assert mutated == later or _general(mutated, OTHER_BODY).cert == facts.cert
