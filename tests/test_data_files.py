"""The data directory is private to the server's user, even when it existed before `mdmserver init`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mdmserver", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDMSERVER_")}
    return {**env, "MDMSERVER_DATA_DIR": str(data_dir), "MDMSERVER_LOG_LEVEL": "WARNING", **extra}


def _modes(data_dir: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in [data_dir, *data_dir.iterdir()]}


def test_init_in_an_existing_open_directory_makes_it_private(tmp_path) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)  # whatever the test runner's umask
    result = _run("init", env=_env(data_dir))
    assert result.returncode == 0, result.stderr
    modes = _modes(data_dir)
    assert {"mdmserver.db", "secret.key", "admin-token"} <= set(modes)
    assert modes.pop("var") == 0o700
    assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}


def test_init_takes_group_and_other_access_away_and_says_so(tmp_path) -> None:
    data_dir = tmp_path / "var"
    assert _run("init", env=_env(data_dir)).returncode == 0
    # an older installation left things readable by everyone
    data_dir.chmod(0o755)
    for name in ("mdmserver.db", "secret.key", "admin-token"):
        (data_dir / name).chmod(0o644)
    result = _run("init", env=_env(data_dir))
    assert result.returncode == 0, result.stderr
    for name in ("mdmserver.db", "secret.key", "admin-token"):
        assert f"{data_dir / name} was accessible by group or others (mode 644)" in result.stderr
    assert f"{data_dir} was accessible by group or others (mode 755)" in result.stderr
    modes = _modes(data_dir)
    assert modes.pop("var") == 0o700
    assert all(mode & 0o077 == 0 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}
    # nothing left to fix: no warning the second time
    again = _run("init", env=_env(data_dir))
    assert "accessible by group or others" not in again.stderr


def test_header_device_auth_without_trusted_proxies_refuses_to_start(tmp_path) -> None:
    env = _env(tmp_path / "var", MDMSERVER_DEVICE_AUTH="header", MDMSERVER_CLIENT_CERT_HEADER="X-Client-Cert")
    result = _run("init", env=env)
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "trusted_proxies" in result.stderr
    assert "Traceback" not in result.stderr
