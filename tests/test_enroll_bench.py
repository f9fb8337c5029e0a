"""bench/enroll_bench.py keeps working: a few simulated devices enroll in full (profile, identity,
Authenticate, TokenUpdate) against gunicorn, in the identity mode the server's profile offers (SCEP or
PKCS#12), and the database agrees. On SQLite, and on PostgreSQL when the test run has one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 6
POSTGRES_URL = os.environ.get("MDMSERVER_TEST_POSTGRES_URL")


def _bench(*args: str) -> dict:
    # the bench sets its own MDMSERVER_* settings (a temporary data folder, SQLite): none of the test run's
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDMSERVER_")}
    run = subprocess.run([sys.executable, str(ROOT / "bench/enroll_bench.py"), "--devices", str(DEVICES),
                          "--concurrency", "3", "--json", *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return json.loads(run.stdout)


def _check(report: dict) -> None:
    phase = report["phase"]
    assert phase["enrolled"] == DEVICES and phase["errors"] == 0, phase["error_kinds"]
    assert report["identity"] in ("scep", "pkcs12")
    # every device got its identity the way the server's profile offered it
    assert phase["identity_modes"] == {report["identity"]: DEVICES}
    assert (report["device_key_size"] is not None) == (report["identity"] == "scep")
    assert 0 < phase["p50_ms"] <= phase["p99_ms"] <= phase["max_ms"]
    assert phase["enrollments_per_second"] > 0
    assert report["database"] == {"devices": DEVICES, "found": DEVICES, "enrolled_with_token_and_identity": DEVICES,
                                  "agrees": True}


def test_enroll_bench_on_sqlite():
    before = set(Path(tempfile.gettempdir()).glob("bench-enroll-*"))
    report = _bench()
    # its temporary data folder (a secret key, the SQLite database) is gone
    assert set(Path(tempfile.gettempdir()).glob("bench-enroll-*")) <= before
    assert report["database_kind"] == "sqlite"
    _check(report)


@pytest.mark.skipif(not POSTGRES_URL, reason="MDMSERVER_TEST_POSTGRES_URL is not set")
def test_enroll_bench_on_postgresql():
    report = _bench("--postgres", POSTGRES_URL)
    assert report["database_kind"] == "postgresql"
    assert "postgres" not in report["settings"]  # the URL may hold a password
    _check(report)
