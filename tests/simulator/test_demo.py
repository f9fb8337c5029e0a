"""`mdmserver demo`: server, APNs emulator and simulated devices in one process group, stopped by SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx


def _group_members(pgid: int) -> list[int]:
    """Every live (not zombie) process of process group ``pgid`` (Linux /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def test_demo_enrolls_devices_and_stops_every_process_on_sigterm(tmp_path):
    env = {**os.environ, "MDMSERVER_DATA_DIR": str(tmp_path / "elsewhere")}
    env["MDMSERVER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'not-the-demo.db'}"  # the demo ignores it
    out = tmp_path / "stdout"
    with out.open("w") as stdout:
        demo = subprocess.Popen(
            [sys.executable, "-m", "mdmserver", "demo", "--devices", "3", "--data-dir", str(tmp_path / "demo")],
            env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "Press Ctrl-C" not in out.read_text():
            assert demo.poll() is None, demo.stderr.read()
            assert time.monotonic() < deadline, "the demo did not start"
            time.sleep(0.3)
        text = out.read_text()
        url = re.search(r"admin API\s+(http://127\.0\.0\.1:\d+)/api/v1", text).group(1)
        token = re.search(r"admin token\s+(\S+)", text).group(1)
        assert "3/3 simulated devices enrolled" in text
        curls = [line.strip() for line in text.splitlines() if line.strip().startswith("curl ")]
        assert len(curls) == 3 and all(line.startswith("curl -g ") for line in curls)
        assert token == (tmp_path / "demo" / "admin-token").read_text().strip()

        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        devices = api.get("/api/v1/devices").json()["data"]
        assert len(devices) == 3
        assert {d["attributes"]["admission_status"] for d in devices} == {"accepted"}
        # a command queued through the API is pushed (emulator) and answered by the woken device
        udid = devices[0]["attributes"]["udid"]
        created = api.post(f"/api/v1/devices/{udid}/commands", json={"request_type": "SecurityInfo"})
        assert created.status_code == 201, created.text
        command_id = created.json()["data"]["id"]
        while api.get(f"/api/v1/commands/{command_id}").json()["data"]["attributes"]["status"] != "acknowledged":
            assert time.monotonic() < deadline + 60, "the pushed device did not answer"
            time.sleep(0.3)
        api.close()
        members = _group_members(demo.pid)
        assert len(members) >= 4, members  # demo, gunicorn master, its workers, the push worker
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=90)
    assert demo.returncode == 0, demo.stderr.read()
    deadline = time.monotonic() + 10
    while _group_members(demo.pid):
        assert time.monotonic() < deadline, f"left running: {_group_members(demo.pid)}"
        time.sleep(0.2)
    assert not (tmp_path / "not-the-demo.db").exists() and not (tmp_path / "elsewhere").exists()
