"""bench/fleet_bench.py keeps working: 20 simulated devices against gunicorn on SQLite, each receives the one
command queued for it, acknowledges it and then receives nothing more; the database agrees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 20


def _bench(*args: str) -> dict:
    # the bench sets its own MDMSERVER_* settings (a temporary data folder, SQLite): none of the test run's
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDMSERVER_")}
    # SCEP-SERVER BRANCH ONLY (see tests/conftest.py; remove with it): the simulator enrolls with PKCS#12
    env["MDMSERVER_ENROLLMENT_IDENTITY"] = os.environ["MDMSERVER_ENROLLMENT_IDENTITY"]
    run = subprocess.run([sys.executable, str(ROOT / "bench/fleet_bench.py"), "--concurrency", "8", "--json", *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return json.loads(run.stdout)


def test_fleet_bench_delivers_every_command_exactly_once():
    before = set(Path(tempfile.gettempdir()).glob("bench-fleet-*"))
    report = _bench("--devices", str(DEVICES))
    # its temporary data folder (a secret key, the SQLite database) is gone
    assert set(Path(tempfile.gettempdir()).glob("bench-fleet-*")) <= before
    assert report["database"] == "sqlite"
    assert report["enrollment"]["enrolled"] == DEVICES and report["enrollment"]["errors"] == 0
    assert report["queue"]["success_count"] == DEVICES
    phase = report["phase"]
    # Idle, Acknowledged, Idle per device, every one a 200 with the expected answer
    assert phase["requests"] == 3 * DEVICES
    assert phase["errors"] == 0, phase["error_kinds"]
    assert 0 < phase["p50_ms"] <= phase["p99_ms"]
    delivery = report["delivery"]
    assert delivery == {"queued": DEVICES, "found": DEVICES, "acknowledged": DEVICES, "sent_once": DEVICES,
                        "on_the_named_device": DEVICES, "commands_of_this_run": DEVICES, "exactly_once": True}
    rss = report["peak_rss"]
    assert rss["master_kib"] > 0 and len(rss["workers_kib"]) == 2 and all(k > 0 for k in rss["workers_kib"])


def test_fleet_bench_reuses_kept_identities(tmp_path):
    """--reuse DIR: the second run enrolls only the devices the first did not, and its own commands are
    the ones checked (the first run's, acknowledged in the same database, are not counted again)."""
    keep = tmp_path / "fleet"
    first = _bench("--devices", "4", "--reuse", str(keep))
    assert first["enrollment"]["enrolled"] == 4 and first["enrollment"]["kept"] == 0
    assert first["delivery"]["exactly_once"] and first["delivery"]["commands_of_this_run"] == 4
    assert (keep / "devices.jsonl").stat().st_mode & 0o077 == 0 and keep.stat().st_mode & 0o077 == 0
    second = _bench("--devices", "6", "--reuse", str(keep))
    assert second["enrollment"]["enrolled"] == 2 and second["enrollment"]["kept"] == 4
    assert second["enrollment"]["errors"] == 0 and second["phase"]["errors"] == 0
    assert second["phase"]["requests"] == 3 * 6
    assert second["delivery"] == {"queued": 6, "found": 6, "acknowledged": 6, "sent_once": 6,
                                  "on_the_named_device": 6, "commands_of_this_run": 6, "exactly_once": True}
    assert len((keep / "devices.jsonl").read_text().splitlines()) == 6
