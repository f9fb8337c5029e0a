"""The nginx configuration of docs/deploy.md, run for real in front of `mdmserver serve`.

The server block is read out of the document itself (only the ports, the certificate paths and the
upstream address are replaced), so the configuration an administrator copies is the one tested. mdmserver
runs with ``device_auth = both``, ``client_cert_header = X-MDM-Client-Cert`` and ``trusted_proxies =
127.0.0.1``. Through nginx, over TLS (the simulator trusting only the test root):

- a device enrolls and checks in with signed requests;
- the same device checks in with its TLS client certificate alone (no ``Mdm-Signature``): nginx passes
  the certificate in the header and mdmserver accepts it;
- a client without a certificate that sends the header itself, naming that device, is refused:
  ``proxy_set_header`` replaces it (with nothing, so no header is passed);
- a forged ``X-Forwarded-For`` does not open a new enrollment rate-limit bucket: nginx overwrites it.

nginx is Debian's package; `.ci/run` installs it. Without it the test skips on a developer's machine and
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

from tests.apps.builders import info_plist, make_ipa
from tests.proxy_checks import (
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
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


@pytest.fixture(scope="module", autouse=True)
def _needs_nginx() -> None:
    require_program(NGINX, "nginx")


def documented_server_block() -> str:
    """The first ``server { … }`` of the nginx block in docs/deploy.md (the TLS one)."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    block = re.search(r"```nginx\n(.*?)```", text, re.DOTALL)
    assert block is not None, "docs/deploy.md has no nginx block"
    start = block.group(1).index("server {")
    depth, end = 0, None
    for index, char in enumerate(block.group(1)[start:], start):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "}" and depth == 0:
            end = index + 1
            break
    assert end is not None
    return block.group(1)[start:end]


def nginx_config(server_block: str, *, work: Path, port: int, upstream: int, cert: Path, key: Path) -> str:
    """The documented block with this test's ports and files, in a minimal nginx.conf (one process,
    in the foreground, every file under ``work``)."""
    replacements = [
        (r"listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        (r"listen \[::\]:443 ssl;\n", ""),
        (r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};"),
        (r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};"),
        (r"proxy_pass http://127\.0\.0\.1:8080;", f"proxy_pass http://127.0.0.1:{upstream};"),
    ]
    for pattern, replacement in replacements:
        server_block, count = re.subn(pattern, replacement, server_block)
        # every upstream address is replaced (one per location); the rest appear once
        expected_once = not pattern.startswith("proxy_pass")
        assert count == 1 if expected_once else count >= 1, (
            f"docs/deploy.md's nginx block changed: {pattern!r} matched {count} times")
    temp = {name: work / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for folder in temp.values():
        folder.mkdir()
    return f"""
daemon off;
master_process off;
pid {work / "nginx.pid"};
error_log {work / "error.log"} warn;
events {{ worker_connections 64; }}
http {{
    access_log {work / "access.log"};
    client_body_temp_path {temp["client_body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
{server_block}
}}
"""


def test_documented_nginx_block_is_what_this_test_runs() -> None:
    block = documented_server_block()
    # the properties the rest of the test relies on are in the document, not added here
    assert "ssl_verify_client optional_no_ca;" in block
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in block
    assert "proxy_set_header X-MDM-Client-Cert $ssl_client_escaped_cert;" in block
    assert "$proxy_add_x_forwarded_for" not in block


def test_devices_and_admins_through_the_documented_nginx(tmp_path: Path, tls_chain) -> None:  # noqa: F811
    port, upstream = _free_port(), _free_port()
    url = f"https://127.0.0.1:{port}"
    env, token = prepare_server(tmp_path, url)

    work = tmp_path / "nginx"
    work.mkdir()
    (work / "nginx.conf").write_text(nginx_config(documented_server_block(), work=work, port=port,
                                                  upstream=upstream, cert=tls_chain["chain"], key=tls_chain["key"]))
    checked = subprocess.run([NGINX, "-t", "-p", str(work), "-c", str(work / "nginx.conf")],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr

    server = serve(env, upstream)
    proxy = subprocess.Popen([NGINX, "-p", str(work), "-c", str(work / "nginx.conf")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    trust = ssl.create_default_context(cafile=str(tls_chain["root"]))
    clients: list = []
    try:
        wait_for(f"http://127.0.0.1:{upstream}/readyz", True, server, "mdmserver")
        wait_for(f"{url}/readyz", trust, proxy, "nginx")
        api = httpx.Client(base_url=url, verify=trust, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        clients.append(api)
        check_devices_through(url, tls_chain["root"], api, tmp_path, clients)

        # the app upload location: a package streamed through nginx to the upload route
        package = make_ipa(info_plist("com.example.proxied", "1.0", "1", "Proxied", "16.0"))
        uploaded = api.post("/api/v1/apps/packages?filename=Proxied.ipa", content=package,
                            headers={"Content-Type": "application/octet-stream"})
        assert uploaded.status_code == 201, uploaded.text
        manifest_url = uploaded.json()["data"]["attributes"]["manifest_url"]
        assert manifest_url.startswith(f"{url}/apps/")
        assert httpx.get(manifest_url, verify=trust, timeout=30).status_code == 200  # served through nginx
    finally:
        for client in clients:
            client.close()
        stop(proxy)
        stop(server)
    assert server.returncode == 0
