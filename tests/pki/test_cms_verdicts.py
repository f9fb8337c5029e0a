"""The certificate verdict cache of ``cms.verify_detached``: it saves the parsing and the CA check of a
certificate already seen, never the signature over the body nor the validity at the time of the call."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from mdmserver.pki import cms

from .helpers import issue, make_ca

BODY = b"<plist><dict><key>Status</key><string>Idle</string></dict></plist>"


@pytest.fixture(scope="module")
def ca():
    return make_ca()


def test_cached_certificate_verifies_again_and_is_kept_once(ca) -> None:
    device = issue(ca, "device")
    verdicts = cms.CertificateVerdicts()
    sig = cms.sign(BODY, device.cert, device.key, detached=True)
    for _ in range(3):
        assert cms.verify_detached(sig, BODY, ca_certs=[ca.cert], verdicts=verdicts) == device.cert
    assert len(verdicts) == 1


def test_cached_certificate_that_expires_is_refused(ca) -> None:
    device = issue(ca, "short-lived", days=1)
    verdicts = cms.CertificateVerdicts()
    sig = cms.sign(BODY, device.cert, device.key, detached=True)
    cms.verify_detached(sig, BODY, ca_certs=[ca.cert], verdicts=verdicts)
    later = device.cert.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(cms.CMSError, match="expired or not yet valid"):
        cms.verify_detached(sig, BODY, ca_certs=[ca.cert], verdicts=verdicts, at=later)
    earlier = device.cert.not_valid_before_utc - dt.timedelta(seconds=1)
    with pytest.raises(cms.CMSError, match="expired or not yet valid"):
        cms.verify_detached(sig, BODY, ca_certs=[ca.cert], verdicts=verdicts, at=earlier)
    # and the same certificate still verifies within its validity
    cms.verify_detached(sig, BODY, ca_certs=[ca.cert], verdicts=verdicts)


def test_cache_never_excuses_the_body_or_the_signature(ca) -> None:
    device = issue(ca, "device")
    verdicts = cms.CertificateVerdicts()
    sig = cms.sign(BODY, device.cert, device.key, detached=True)
    cms.verify_detached(sig, BODY, ca_certs=[ca.cert], verdicts=verdicts)
    with pytest.raises(cms.CMSError, match="digest mismatch"):
        cms.verify_detached(sig, BODY + b" ", ca_certs=[ca.cert], verdicts=verdicts)
    tampered = bytearray(sig)
    tampered[-5] ^= 0x01  # inside the signature value, the last field of the SignerInfo
    with pytest.raises(cms.CMSError):
        cms.verify_detached(bytes(tampered), BODY, ca_certs=[ca.cert], verdicts=verdicts)
    # the same certificate, signed for by another key (the device's certificate is public)
    impostor = issue(ca, "impostor")
    forged = cms.sign(BODY, device.cert, impostor.key, detached=True)
    with pytest.raises(cms.CMSError, match="bad signature"):
        cms.verify_detached(forged, BODY, ca_certs=[ca.cert], verdicts=verdicts)


def test_verdict_is_per_ca_and_refusals_are_not_cached(ca) -> None:
    other_ca = make_ca("another CA")
    device = issue(ca, "device")
    foreign = issue(other_ca, "foreign")
    verdicts = cms.CertificateVerdicts()
    sig = cms.sign(BODY, device.cert, device.key, detached=True)
    cms.verify_detached(sig, BODY, ca_certs=[ca.cert], verdicts=verdicts)
    with pytest.raises(cms.CMSError, match="not issued by our CA"):
        cms.verify_detached(sig, BODY, ca_certs=[other_ca.cert], verdicts=verdicts)
    foreign_sig = cms.sign(BODY, foreign.cert, foreign.key, detached=True)
    for _ in range(2):
        with pytest.raises(cms.CMSError, match="not issued by our CA"):
            cms.verify_detached(foreign_sig, BODY, ca_certs=[ca.cert], verdicts=verdicts)


def test_cache_is_bounded(ca) -> None:
    verdicts = cms.CertificateVerdicts(maxsize=2)
    for name in ("one", "two", "three"):
        device = issue(ca, name)
        sig = cms.sign(BODY, device.cert, device.key, detached=True)
        cms.verify_detached(sig, BODY, ca_certs=[ca.cert], verdicts=verdicts)
    assert len(verdicts) == 2


def test_foreign_certificates_take_no_place(ca) -> None:
    verdicts = cms.CertificateVerdicts(maxsize=1)
    device = issue(ca, "device")
    sig = cms.sign(BODY, device.cert, device.key, detached=True)
    cms.verify_detached(sig, BODY, ca_certs=[ca.cert], verdicts=verdicts)
    foreign_ca = make_ca("a flood of foreign certificates")
    for name in ("f1", "f2"):
        foreign = issue(foreign_ca, name)
        with pytest.raises(cms.CMSError):
            cms.verify_detached(cms.sign(BODY, foreign.cert, foreign.key, detached=True), BODY,
                                ca_certs=[ca.cert], verdicts=verdicts)
    assert len(verdicts) == 1 and verdicts.facts(device.cert.public_bytes(Encoding.DER)).cert == device.cert
