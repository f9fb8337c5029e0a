"""The Caddy configuration of docs/deploy.md, run for real in front of `mdmserver serve`.

The Caddyfile is read out of the document itself (only the site address, the certificate paths and the
upstream address are replaced; a global block keeps Caddy's admin endpoint, its redirects on port 80 and
its storage out of the way), so the configuration an administrator copies is the one tested. mdmserver runs
with ``device_auth = both``, ``client_cert_header = X-MDM-Client-Cert`` and ``trusted_proxies =
127.0.0.1``. Through Caddy, over TLS (the simulator trusting only the test root):

- a device enrolls and checks in with signed requests;
- the same device checks in with its TLS client certificate alone (no ``Mdm-Signature``): Caddy passes
  the certificate in the header and mdmserver accepts it;
- a client without a certificate that sends the header itself, naming that device, is refused: Caddy
  removes it;
- a forged ``X-Forwarded-For`` does not open a new enrollment rate-limit bucket: Caddy overwrites it;
- the bucket is the client's own address as Caddy saw it: ``::1`` still enrolls when ``127.0.0.1`` has
  used its enrollments up.

Caddy is Debian's package; `.ci/run` installs it. Without it the test skips on a developer's machine and
fails in CI (``CI=true``).
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.proxy_checks import (
    HEADER,
    check_devices_through,
    prepare_server,
    require_program,
    serve,
    stop,
    wait_for,
)
from tests.test_serve import _free_port
from tests.test_serve_tls import tls_chain  # noqa: F401 (a fixture)

DEPLOY_DOC = Path(__file__).resolve().parents[1] / "docs" / "deploy.md"
CADDY = shutil.which("caddy") or next((p for p in ("/usr/bin/caddy",) if os.path.exists(p)), None)


@pytest.fixture(scope="module", autouse=True)
def _needs_caddy() -> None:
    require_program(CADDY, "caddy")


def documented_caddyfile() -> str:
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    block = re.search(r"```caddyfile\n(.*?)```", text, re.DOTALL)
    assert block is not None, "docs/deploy.md has no caddyfile block"
    return block.group(1)


def caddy_config(documented: str, *, work: Path, port: int, upstream: int, cert: Path, key: Path) -> str:
    """The documented Caddyfile with this test's site address, files and upstream, after a global block
    that turns off what a test must not touch (the admin endpoint on :2019, the redirect server on :80)."""
    replacements = [
        (r"^mdm\.example\.com \{", f"localhost:{port} {{"),
        (r"tls /etc/mdmserver/tls/fullchain\.pem /etc/mdmserver/tls/privkey\.pem \{", f"tls {cert} {key} {{"),
        (r"reverse_proxy 127\.0\.0\.1:8080 \{", f"reverse_proxy 127.0.0.1:{upstream} {{"),
    ]
    for pattern, replacement in replacements:
        documented, count = re.subn(pattern, replacement, documented, flags=re.MULTILINE)
        expected_once = not pattern.startswith("reverse_proxy")
        assert count == 1 if expected_once else count >= 1, (
            f"docs/deploy.md's Caddyfile changed: {pattern!r} matched {count} times")
    return f"""{{
	admin off
	auto_https disable_redirects
	storage file_system {work / "storage"}
}}
{documented}"""


def test_documented_caddyfile_is_what_this_test_runs() -> None:
    documented = documented_caddyfile()
    assert "mode request" in documented
    assert documented.count("header_up X-Forwarded-For {remote_host}") == 2
    assert f"header_up -{HEADER}" in documented
    assert f'header_up {HEADER} "-----BEGIN CERTIFICATE-----{{http.request.tls.client.certificate_der_base64}}' \
           in documented


def test_devices_and_admins_through_the_documented_caddy(tmp_path: Path, tls_chain) -> None:  # noqa: F811
    port, upstream = _free_port(), _free_port()
    # with client_auth Caddy requires SNI = Host, so a name (the test certificate has localhost)
    url = f"https://localhost:{port}"
    env, token = prepare_server(tmp_path, url)

    work = tmp_path / "caddy"
    work.mkdir()
    (work / "Caddyfile").write_text(caddy_config(documented_caddyfile(), work=work, port=port, upstream=upstream,
                                                 cert=tls_chain["chain"], key=tls_chain["key"]))
    caddy_env = {**os.environ, "HOME": str(work), "XDG_DATA_HOME": str(work / "data"),
                 "XDG_CONFIG_HOME": str(work / "config")}
    checked = subprocess.run([CADDY, "validate", "--config", str(work / "Caddyfile"), "--adapter", "caddyfile"],
                             capture_output=True, text=True, timeout=60, env=caddy_env)
    assert checked.returncode == 0, checked.stderr

    server = serve(env, upstream)
    proxy = subprocess.Popen([CADDY, "run", "--config", str(work / "Caddyfile"), "--adapter", "caddyfile"],
                             env=caddy_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    trust = ssl.create_default_context(cafile=str(tls_chain["root"]))
    clients: list = []
    try:
        wait_for(f"http://127.0.0.1:{upstream}/readyz", True, server, "mdmserver")
        wait_for(f"{url}/readyz", trust, proxy, "caddy")
        api = httpx.Client(base_url=url, verify=trust, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        clients.append(api)
        check_devices_through(url, tls_chain["root"], api, tmp_path, clients)

        # 5. the limit is the client's own: 127.0.0.1 has used its enrollments up, ::1 (another client
        # address, through the same Caddy) still enrolls, so Caddy's X-Forwarded-For is what counts
        exhausted = httpx.get(f"{url}/mdm/enroll", verify=trust, timeout=30)
        assert exhausted.status_code == 429
        with httpx.Client(verify=trust, timeout=30) as ipv6:
            request = ipv6.build_request("GET", f"https://[::1]:{port}/mdm/enroll",
                                         headers={"Host": f"localhost:{port}"},
                                         extensions={"sni_hostname": "localhost"})
            other_client = ipv6.send(request)
        assert other_client.status_code == 200, other_client.text
    finally:
        for client in clients:
            client.close()
        stop(proxy)
        stop(server)
    assert server.returncode == 0
