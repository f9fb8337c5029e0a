"""`mdmserver serve --tls-cert --tls-key`: HTTP/1.1 over TLS end to end (a root → intermediate → server
chain issued here, the simulator trusting only the root), and the loud warning of `init` and `serve` when
`public_url` is not https://."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mdmserver.config import public_url_warning
from mdmserver.simulator.device import HttpxTransport, SimulatedDevice
from tests.factories import push_certificate_pem
from tests.test_serve import _free_port


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(subject: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *, ca: bool):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def tls_chain(tmp_path_factory) -> dict[str, Path]:
    """root → intermediate → server (127.0.0.1, localhost); chain.pem is the server certificate then the
    intermediate (the full chain), root.pem the only trust anchor clients get."""
    folder = tmp_path_factory.mktemp("tls")
    root = _issue("mdmserver test root", None, ca=True)
    intermediate = _issue("mdmserver test intermediate", root, ca=True)
    server = _issue("127.0.0.1", intermediate, ca=False)
    pem = serialization.Encoding.PEM
    paths = {name: folder / f"{name}.pem" for name in ("root", "chain", "key", "other_key")}
    paths["root"].write_bytes(root[0].public_bytes(pem))
    paths["chain"].write_bytes(server[0].public_bytes(pem) + intermediate[0].public_bytes(pem))
    for name, key in (("key", server[1]), ("other_key", intermediate[1])):
        paths[name].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
        paths[name].chmod(0o600)
    return paths


def _environment(tmp_path: Path, public_url: str) -> dict[str, str]:
    env = {**os.environ, "MDMSERVER_DATA_DIR": str(tmp_path / "var"), "MDMSERVER_LOG_LEVEL": "WARNING",
           "MDMSERVER_PUBLIC_URL": public_url, "MDMSERVER_ADMISSION_POLICY": "auto",
           "MDMSERVER_ENROLL_RATE_LIMIT": "0"}
    env.pop("MDMSERVER_DATABASE_URL", None)
    env.pop("MDMSERVER_CONFIG", None)
    return env


def _mdmserver(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mdmserver", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_simulator_enrolls_and_checks_in_over_https(tmp_path, tls_chain) -> None:
    port = _free_port()
    url = f"https://127.0.0.1:{port}"
    env = _environment(tmp_path, url)
    init = _mdmserver(env, "init")
    assert init.returncode == 0, init.stderr
    assert "WARNING" not in init.stderr
    cert_pem, key_pem = push_certificate_pem()
    (tmp_path / "push.pem").write_bytes(cert_pem)
    (tmp_path / "push.key").write_bytes(key_pem)
    imported = _mdmserver(env, "push-cert", "import", str(tmp_path / "push.pem"), "--key", str(tmp_path / "push.key"))
    assert imported.returncode == 0, imported.stderr
    token = (tmp_path / "var" / "admin-token").read_text().strip()

    trust = ssl.create_default_context(cafile=str(tls_chain["root"]))
    server = subprocess.Popen(
        [sys.executable, "-m", "mdmserver", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--tls-cert", str(tls_chain["chain"]), "--tls-key", str(tls_chain["key"])],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    api = httpx.Client(base_url=url, verify=trust, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    transport = HttpxTransport(url, verify=trust)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ready = api.get("/readyz")
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read()
            assert time.monotonic() < deadline, "server did not become ready over https"
            time.sleep(0.3)
        assert ready.http_version == "HTTP/1.1"

        # clients trust only the root, so the server sent the intermediate (the full chain); a client
        # without the test root refuses the connection, and plain HTTP gets no answer
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/readyz", verify=ssl.create_default_context(), timeout=10)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)

        sim = SimulatedDevice(transport, platform="ios")
        sim.enroll()
        assert sim.server_url == f"{url}/mdm/connect" and sim.checkin_url == f"{url}/mdm/checkin"
        assert sim.authenticate() == 200
        assert sim.token_update() == 200
        device = api.get(f"/api/v1/devices/{sim.udid}")
        assert device.status_code == 200, device.text
        assert device.json()["data"]["attributes"]["admission_status"] == "accepted"
        queued = api.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "ProfileList"})
        assert queued.status_code == 201, queued.text
        handled = sim.run_session()
        assert [(t, s) for _u, t, s in handled] == [("ProfileList", "Acknowledged")]
        status = api.get(f"/api/v1/commands/{queued.json()['data']['id']}").json()["data"]["attributes"]["status"]
        assert status == "acknowledged"
    finally:
        transport.close()
        api.close()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert server.returncode == 0


def test_serve_refuses_tls_files_it_cannot_use_with_one_line(tmp_path, tls_chain) -> None:
    env = _environment(tmp_path, "https://mdm.example.com")
    mismatched = _mdmserver(env, "serve", "--tls-cert", str(tls_chain["chain"]), "--tls-key",
                            str(tls_chain["other_key"]))
    assert mismatched.returncode == 2
    assert "configuration error: TLS: cannot use certificate" in mismatched.stderr
    assert "Traceback" not in mismatched.stderr
    missing = _mdmserver(env, "serve", "--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(tls_chain["key"]))
    assert missing.returncode == 2 and "TLS: no such file" in missing.stderr
    alone = _mdmserver(env, "serve", "--tls-cert", str(tls_chain["chain"]))
    assert alone.returncode == 2 and "--tls-cert and --tls-key go together" in alone.stderr


def test_init_and_serve_warn_loudly_when_public_url_is_not_https(tmp_path, tls_chain) -> None:
    env = _environment(tmp_path, "http://mdm.example.com:8080")
    init = _mdmserver(env, "init")
    assert init.returncode == 0, init.stderr
    assert "WARNING: public_url is 'http://mdm.example.com:8080', not https://" in init.stderr
    # serve warns before anything else (here it then stops on a key that does not match)
    serve = _mdmserver(env, "serve", "--tls-cert", str(tls_chain["chain"]), "--tls-key", str(tls_chain["other_key"]))
    assert serve.stderr.index("WARNING: public_url") < serve.stderr.index("configuration error")


@pytest.mark.parametrize("public_url, warned", [
    ("https://mdm.example.com", False),
    ("https://mdm.example.com:8443/base", False),
    ("http://127.0.0.1:8080", False),
    ("http://localhost:8080", False),
    ("http://[::1]:8080", False),
    ("http://mdm.example.com", True),
    ("http://10.0.0.5:8080", True),
    ("http://127.0.0.1.example.com", True),
    ("ftp://127.0.0.1", True),
])
def test_public_url_warning(public_url: str, warned: bool) -> None:
    assert (public_url_warning(public_url) is not None) is warned
