"""The Makefile: `make run` installs the runtime only (the test tools come with `make test`/`lint`), and
`make run BIND=host:port` serves there with public_url following it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_serve import _free_port

ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")

pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


@pytest.fixture
def clone(tmp_path) -> Path:
    """The Makefile and pyproject.toml alone: what `make -n` plans on a fresh clone."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def _plan(directory: Path, target: str) -> str:
    result = subprocess.run([MAKE, "-n", target], cwd=directory, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_run_installs_the_runtime_without_the_test_tools(clone):
    plan = _plan(clone, "run")
    assert "pip install --quiet -e .\n" in plan
    assert "[test]" not in plan and "mdmserver serve --bind 127.0.0.1:8080" in plan


def test_test_and_lint_add_the_test_extras_once(clone):
    for target in ("test", "lint"):
        plan = _plan(clone, target)
        assert "pip install --quiet -e .\n" in plan and "pip install --quiet -e '.[test]'" in plan
    (clone / ".venv").mkdir()
    time.sleep(0.01)
    (clone / ".venv" / ".installed-stamp").touch()
    assert "-e .\n" not in _plan(clone, "test") and "'.[test]'" in _plan(clone, "test")
    (clone / ".venv" / ".test-stamp").touch()
    assert "pip install" not in _plan(clone, "test") and "pip install" not in _plan(clone, "run")


def test_run_with_bind_serves_there_and_sets_public_url(tmp_path):
    port = _free_port()
    stamp = tmp_path / "stamp"
    stamp.touch()  # newer than pyproject.toml: make installs nothing (the venv is the test's own)
    env = {**os.environ, "MDMSERVER_DATA_DIR": str(tmp_path / "var"), "PYTHONPATH": str(ROOT)}
    for name in ("MDMSERVER_PUBLIC_URL", "MDMSERVER_CONFIG", "MDMSERVER_DATABASE_URL"):
        env.pop(name, None)
    binary = Path(sys.executable).parent
    process = subprocess.Popen(
        [MAKE, "--no-print-directory", "run", f"BIND=127.0.0.1:{port}", f"STAMP={stamp}", f"BIN={binary}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/openapi.json", timeout=5)
                if response.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "make run did not serve"
            time.sleep(0.3)
        # the server's public URL (the one enrollment profiles send devices to) is the bound address
        assert response.json()["servers"] == [{"url": f"http://127.0.0.1:{port}"}]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert f"public_url: http://127.0.0.1:{port} (from BIND)" in output
    assert f"mdmserver is starting on http://127.0.0.1:{port}" in output
