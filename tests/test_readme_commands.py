"""The README's shell commands, run as written against a server they start themselves.

The walkthrough of "Trying the device side without Apple" runs as one bash script (its own ports and
folder substituted, `make install` left out: this venv is installed already); then the curl lines of "Two
commands" and "Admin API" run one by one against that server, with `TOKEN` and `H` as the README sets them.
A curl line must exit 0 (a URL curl cannot parse, such as `filter[...]` without `-g`, exits 3) and get the
answer the README implies. The files the lines upload (`wifi.mobileconfig`, `Notes.ipa`) are made first;
lines that name a placeholder (`<auth set id>`) are not run.
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.apps.builders import make_ipa
from tests.test_serve import _free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CURL = shutil.which("curl")

pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed")

#: curl lines of the README whose answer is not a success, and why
EXPECTED_REFUSALS = {
    "/api/v1/devices/C02XXXXXXXXX/installed_applications": 404,  # an example serial no device has
    "/api/v1/apps/1/assignments": 422,  # group 7: an example id (this server has no group)
    "/api/v1/actions/scan": 422,  # the same group 7
    "/api/v1/blueprints": 422,  # scoped to the same group 7
    "/api/v1/blueprints/1/devices": 404,  # so blueprint 1 was not made
    "/api/v1/actions/restart": 422,  # scheduled for the same group 7
}


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.DOTALL)


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", "", block)
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_readme_blocks_are_found():
    walkthrough = commands(shell_blocks(section("Trying the device side without Apple"))[0])
    assert any("mdmserver simulate" in line for line in walkthrough)
    api = [line for line in commands(shell_blocks(section("Admin API"))[0]) if line.startswith("curl ")]
    assert len(api) > 15


@pytest.fixture
def walkthrough(tmp_path):
    """The walkthrough, run: (its folder, its environment, the server's port)."""
    port, apns_port = _free_port(), _free_port()
    lines = commands(shell_blocks(section("Trying the device side without Apple"))[0])
    assert lines[0] == "make install"
    script = "\n".join(["set -euo pipefail", *lines[1:]])
    script = script.replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace("2197", str(apns_port))
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in [name for name in env if name.startswith("MDMSERVER_")]:
        env.pop(name)
    process = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        output, errors = process.communicate(timeout=300)
        yield tmp_path, env, port, process.returncode, output, errors
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and the emulator it left in the background


def test_readme_walkthrough_and_curl_lines_run(walkthrough):
    folder, env, port, returncode, output, errors = walkthrough
    assert returncode == 0, output + errors
    # the simulator's summary, and nothing of the server's or the emulator's log on the terminal
    summary = output[:output.find('{"data"')]
    assert "devices enrolled: 20/20" in summary, summary
    # five sessions each (the default --iterations), a DeviceInformation queued before each
    assert "commands: 100 queued, 100 delivered, 100 acknowledged" in summary, summary
    assert "errors: none" in summary
    assert '"platform"' in output  # the last curl: the device list with its facets
    assert "gunicorn" not in output + errors and "APNs emulator listening" not in output + errors
    assert "Booting worker" in (folder / "var" / "server.log").read_text()
    assert "APNs emulator listening" in (folder / "var" / "apns.log").read_text()

    (folder / "wifi.mobileconfig").write_bytes(plistlib.dumps({
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.example.wifi",
        "PayloadUUID": "6C3C9A59-3F0B-4B43-9B4B-43A9F2B3C001", "PayloadDisplayName": "Wi-Fi",
        "PayloadContent": [{"PayloadType": "com.apple.wifi.managed", "PayloadVersion": 1,
                            "PayloadIdentifier": "com.example.wifi.office",
                            "PayloadUUID": "6C3C9A59-3F0B-4B43-9B4B-43A9F2B3C002", "SSID_STR": "Office",
                            "EncryptionType": "None", "AutoJoin": True}],
    }))
    (folder / "Notes.ipa").write_bytes(make_ipa())
    lines = [line for line in commands(shell_blocks(section("Two commands"))[1])]
    lines += commands(shell_blocks(section("Admin API"))[0])
    ran, failures = 0, []
    for line in lines:
        if not line.startswith(("curl ", "TOKEN=", "H=")):
            continue
        if "<" in line.replace("> ", ""):
            continue
        line = line.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        if line.startswith("curl "):
            line = "curl -sS -o /dev/null -w '%{stderr}HTTP %{http_code}\\n' " + line[len("curl "):]
        script = "set -eu; TOKEN=$(cat var/admin-token); H=\"Authorization: Bearer $TOKEN\"\n" + line
        result = subprocess.run(["bash", "-c", script], cwd=folder, env=env, capture_output=True, text=True,
                                timeout=60)
        if result.returncode != 0:
            failures.append(f"{line}\n  exit {result.returncode}: {result.stderr.strip()}")
            continue
        if not line.startswith("curl "):
            continue
        status = int(re.search(r"HTTP (\d{3})", result.stderr).group(1))
        path = re.search(r"http://127\.0\.0\.1:\d+(/[^'\s?]*)", line).group(1)
        if status != EXPECTED_REFUSALS.get(path, status if status < 300 else 200):
            failures.append(f"{line}\n  HTTP {status}")
        ran += 1
    assert not failures, "\n".join(failures)
    assert ran > 20
