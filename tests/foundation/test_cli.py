"""The mdmserver command, run as a real subprocess against its own data directory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.fixture
def run_cli(tmp_path):
    env = {**os.environ, "MDMSERVER_DATA_DIR": str(tmp_path / "var"), "MDMSERVER_LOG_LEVEL": "WARNING"}
    env.pop("MDMSERVER_DATABASE_URL", None)
    env.pop("MDMSERVER_CONFIG", None)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "mdmserver", *args], env=env, capture_output=True, text=True, timeout=120
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    run.data_dir = tmp_path / "var"
    return run


def test_init_is_idempotent_and_tokens_round_trip(run_cli):
    first = run_cli("init")
    assert "first admin token written" in first.stderr
    token_file = run_cli.data_dir / "admin-token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    second = run_cli("init")
    assert "first admin token written" not in second.stderr

    created = run_cli("tokens", "create", "--name", "ci", "--scope", "read", "--scope", "write")
    lines = created.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mdm_") and len(lines[0]) > 40

    listing = run_cli("tokens", "list").stdout
    assert "ci\tread,write\tactive" in listing and lines[0] not in listing

    duplicate = run_cli("tokens", "create", "--name", "ci", "--scope", "read", check=False)
    assert duplicate.returncode != 0 and "exists" in duplicate.stderr

    run_cli("tokens", "revoke", "ci")
    assert "ci\tread,write\trevoked" in run_cli("tokens", "list").stdout
    missing = run_cli("tokens", "revoke", "nobody", check=False)
    assert missing.returncode != 0


def test_bad_scope_is_refused(run_cli):
    run_cli("init")
    result = run_cli("tokens", "create", "--name", "x", "--scope", "root", check=False)
    assert result.returncode == 2 and result.stdout == ""


def test_db_downgrade_and_upgrade(run_cli):
    run_cli("init")
    run_cli("db", "downgrade", "base")
    run_cli("db", "upgrade")
    run_cli("init")
