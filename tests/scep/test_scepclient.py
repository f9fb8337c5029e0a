"""Interop: Debian's ``scepclient`` (micromdm/scep 2.1, Go, written apart from us) against ``/scep``.

The challenge comes from an enrollment profile fetched from ``/mdm/enroll``, as a device's would.
scepclient 2.1 encrypts its request with single DES whatever GetCACaps says, so the server must be
told to accept it (``scep_allow_des``); by default the request is refused with badAlg, which
scepclient reads from our signed CertRep. ``.ci/run`` installs the package; without it the test
skips on a developer's machine and fails in CI (``CI=true``).
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from asn1crypto import cms as acms
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mdmserver.db import db
from mdmserver.simulator.device import HttpxTransport, Identity, SimulatedDevice
from tests.factories import TOPIC, install_push_topic

SCEPCLIENT = shutil.which("scepclient") or next((p for p in ("/usr/bin/scepclient",) if os.path.exists(p)), None)


@pytest.fixture(scope="module", autouse=True)
def _needs_scepclient() -> None:
    if SCEPCLIENT is None:
        message = "scepclient is not installed (apt-get install scep; .ci/run does)"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def live(live_server, monkeypatch):
    config = live_server.app.config
    monkeypatch.setitem(config, "ENROLL_RATE_LIMIT", 0)
    monkeypatch.setitem(config, "ADMISSION_POLICY", "auto")
    monkeypatch.setitem(config, "ENROLLMENT_IDENTITY", "scep")
    monkeypatch.setitem(config, "SCEP_ALLOW_DES", True)
    with live_server.app.app_context():
        install_push_topic(db.session, monkeypatch)
    return live_server


def profile_scep_payload(live) -> dict:
    answer = httpx.get(f"{live.url}/mdm/enroll", timeout=30)
    assert answer.status_code == 200
    profile = plistlib.loads(acms.ContentInfo.load(answer.content)["content"]["encap_content_info"]["content"].native)
    [payload] = [p for p in profile["PayloadContent"] if p["PayloadType"] == "com.apple.security.scep"]
    return payload["PayloadContent"]


def scepclient(live, workdir: Path, challenge: str) -> subprocess.CompletedProcess:
    workdir.mkdir()
    return subprocess.run(
        [SCEPCLIENT, "-server-url", f"{live.url}/scep", "-challenge", challenge,
         "-private-key", str(workdir / "key.pem"), "-certificate", str(workdir / "cert.pem"),
         "-cn", "what the client asks for", "-organization", "client org", "-keySize", "2048"],
        capture_output=True, text=True, timeout=120,
    )


def ca_certificate(live) -> x509.Certificate:
    return x509.load_der_x509_certificate(
        httpx.get(f"{live.url}/scep", params={"operation": "GetCACert"}, timeout=30).content)


def test_scepclient_obtains_the_server_chosen_certificate_and_enrolls(live, tmp_path):
    content = profile_scep_payload(live)
    result = scepclient(live, tmp_path / "device", content["Challenge"])
    assert result.returncode == 0, result.stdout + result.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "device" / "cert.pem").read_bytes())
    key = serialization.load_pem_private_key((tmp_path / "device" / "key.pem").read_bytes(), None)
    ca = ca_certificate(live)
    cert.verify_directly_issued_by(ca)
    assert cert.public_key() == key.public_key()
    [[(_, common_name)], [(_, organization)]] = content["Subject"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == common_name
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == organization
    assert "what the client asks for" not in cert.subject.rfc4514_string()
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value

    # the key scepclient made, and never sent, now proves the device's identity
    transport = HttpxTransport(live.url)
    try:
        device = SimulatedDevice(transport, platform="macos")
        device.identity, device.topic = Identity(cert, key), TOPIC
        assert device.authenticate() == 200
        assert device.token_update() == 200
    finally:
        transport.close()


def test_scepclient_with_a_wrong_challenge_gets_no_certificate(live, tmp_path):
    profile_scep_payload(live)  # a challenge exists, just not this one
    result = scepclient(live, tmp_path / "guess", "not-the-challenge")
    assert result.returncode != 0
    assert "badRequest" in result.stdout + result.stderr
    assert not (tmp_path / "guess" / "cert.pem").exists()


def test_scepclient_cannot_reuse_a_redeemed_challenge(live, tmp_path):
    content = profile_scep_payload(live)
    assert scepclient(live, tmp_path / "first", content["Challenge"]).returncode == 0
    second = scepclient(live, tmp_path / "second", content["Challenge"])
    assert second.returncode != 0 and "badRequest" in second.stdout + second.stderr
    assert not (tmp_path / "second" / "cert.pem").exists()


def test_single_des_is_refused_by_default(live, tmp_path, monkeypatch):
    monkeypatch.setitem(live.app.config, "SCEP_ALLOW_DES", False)
    content = profile_scep_payload(live)
    result = scepclient(live, tmp_path / "des", content["Challenge"])
    assert result.returncode != 0
    assert "badAlg" in result.stdout + result.stderr
    assert not (tmp_path / "des" / "cert.pem").exists()
