"""What tests/test_nginx_proxy.py and tests/test_caddy_proxy.py check through their proxy: mdmserver set up
behind a TLS proxy in the client-certificate mode (``device_auth = both``), then four checks with the
simulator and forged requests."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from mdmserver.simulator.device import HttpxTransport, SimulatedDevice
from tests.factories import push_certificate_pem
from tests.test_serve_tls import _environment, _mdmserver

RATE_LIMIT = 4  # enrollment requests per client address per minute, for the X-Forwarded-For check
HEADER = "X-MDM-Client-Cert"


def require_program(path: str | None, package: str) -> None:
    """Skip without the proxy's program on a developer's machine; fail in CI (``CI=true``), which
    installs it (``.ci/run``)."""
    if path is None:
        message = f"{package} is not installed (apt-get install {package}; .ci/run does)"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)


def prepare_server(tmp_path: Path, url: str) -> tuple[dict[str, str], str]:
    """Initialize a data directory for mdmserver behind a proxy at ``url`` (client-certificate mode, the
    proxy on this host trusted, a small enrollment rate limit, a push certificate): its environment and
    the admin token."""
    env = {
        **_environment(tmp_path, url),
        "MDMSERVER_DEVICE_AUTH": "both",
        "MDMSERVER_CLIENT_CERT_HEADER": HEADER,
        "MDMSERVER_TRUSTED_PROXIES": "127.0.0.1",
        "MDMSERVER_ENROLL_RATE_LIMIT": str(RATE_LIMIT),
    }
    assert _mdmserver(env, "init").returncode == 0
    cert_pem, key_pem = push_certificate_pem()
    (tmp_path / "push.pem").write_bytes(cert_pem)
    (tmp_path / "push.key").write_bytes(key_pem)
    assert _mdmserver(env, "push-cert", "import", str(tmp_path / "push.pem"), "--key",
                      str(tmp_path / "push.key")).returncode == 0
    return env, (tmp_path / "var" / "admin-token").read_text().strip()


def serve(env: dict[str, str], upstream: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mdmserver", "serve", "--bind", f"127.0.0.1:{upstream}", "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def wait_for(url: str, verify, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url, verify=verify, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, f"{what} exited: {process.stderr.read() if process.stderr else ''}"
        assert time.monotonic() < deadline, f"{what} did not answer"
        time.sleep(0.3)


def check_devices_through(url: str, root: Path, api: httpx.Client, tmp_path: Path, clients: list) -> None:
    """The four checks, trusting only ``root``; every client opened is added to ``clients`` (the caller
    closes them)."""
    trust = ssl.create_default_context(cafile=str(root))
    # 1. signed requests through the proxy (no client certificate: the proxy sends no header)
    plain = HttpxTransport(url, verify=trust)
    clients.append(plain)
    sim = SimulatedDevice(plain, platform="ios")
    sim.enroll()
    assert sim.server_url == f"{url}/mdm/connect"
    assert sim.authenticate() == 200
    assert sim.token_update() == 200
    assert api.get(f"/api/v1/devices/{sim.udid}").json()["data"]["attributes"]["admission_status"] == "accepted"

    # 2. the device's TLS client certificate alone: no Mdm-Signature, the proxy forwards the certificate
    pem = serialization.Encoding.PEM
    (tmp_path / "device.pem").write_bytes(sim.identity.certificate.public_bytes(pem))
    (tmp_path / "device.key").write_bytes(sim.identity.key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    device_tls = ssl.create_default_context(cafile=str(root))
    device_tls.load_cert_chain(tmp_path / "device.pem", tmp_path / "device.key")
    with_cert = httpx.Client(verify=device_tls, timeout=30)
    clients.append(with_cert)
    sim.transport = HttpxTransport(url, client=with_cert)
    sim.header_auth = lambda _identity: {}  # sign nothing
    queued = api.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "ProfileList"})
    assert queued.status_code == 201, queued.text
    handled = sim.run_session()
    assert [(kind, status) for _uuid, kind, status in handled] == [("ProfileList", "Acknowledged")]
    command = api.get(f"/api/v1/commands/{queued.json()['data']['id']}").json()["data"]["attributes"]
    assert command["status"] == "acknowledged"

    # 3. no client certificate, the header forged by the client itself (naming the enrolled device)
    forged = SimulatedDevice(plain, platform="ios")
    forged.enroll()
    forged.identity = sim.identity  # it claims to be the enrolled device…
    forged.udid = sim.udid
    stolen = quote(sim.identity.certificate.public_bytes(pem).decode())
    forged.header_auth = lambda _identity: {HEADER: stolen}  # …with a header and no signature
    status, _command = forged.idle()
    assert status == 403, status  # refused, and never a 401 to a device

    # 4. a forged X-Forwarded-For does not open a new rate-limit bucket: the proxy overwrites it
    statuses = []
    for index in range(RATE_LIMIT + 2):
        response = httpx.get(f"{url}/mdm/enroll", verify=trust, timeout=30,
                             headers={"X-Forwarded-For": f"198.51.100.{index + 1}"})
        statuses.append(response.status_code)
    assert 429 in statuses, statuses


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
