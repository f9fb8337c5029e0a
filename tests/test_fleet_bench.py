"""bench/fleet_bench.py keeps working: 20 simulated devices against gunicorn on SQLite, each receives the one
command queued for it, acknowledges it and then receives nothing more; the database agrees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 20


def test_fleet_bench_delivers_every_command_exactly_once():
    # the bench sets its own MDMSERVER_* settings (a temporary data folder, SQLite): none of the test run's
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDMSERVER_")}
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench/fleet_bench.py"), "--devices", str(DEVICES), "--concurrency", "8",
         "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    report = json.loads(run.stdout)
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
                        "on_the_named_device": DEVICES, "commands_in_database": DEVICES, "exactly_once": True}
    rss = report["peak_rss"]
    assert rss["master_kib"] > 0 and len(rss["workers_kib"]) == 2 and all(k > 0 for k in rss["workers_kib"])
