"""A database that cannot be reached: `init`, `serve` and `push-worker` stop with one paragraph that says
what is wrong and how to fix it (exit status 2, no traceback), and nothing is written."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from sqlalchemy.engine import make_url

COMMANDS = (["init"], ["serve", "--bind", "127.0.0.1:0"], ["push-worker"])


def _run(tmp_path, url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MDMSERVER_DATA_DIR": str(tmp_path / "var"), "MDMSERVER_DATABASE_URL": url}
    env.pop("MDMSERVER_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "mdmserver", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _assert_one_paragraph(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("mdmserver: cannot connect to the database ")
    for fragment in expected:
        assert fragment in result.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_closed_port_asks_whether_postgresql_runs_there(tmp_path, command):
    port = _closed_port()
    result = _run(tmp_path, f"postgresql+psycopg://mdm:hunter2@127.0.0.1:{port}/mdm", *command)
    _assert_one_paragraph(result, f"Is PostgreSQL running at 127.0.0.1:{port}", "Connection refused")
    assert "hunter2" not in result.stderr  # the password is never shown
    assert not (tmp_path / "var" / "admin-token").exists()


def test_unknown_host_is_named(tmp_path):
    result = _run(tmp_path, "postgresql+psycopg://mdm@no-such-host.invalid:5432/mdm", "init")
    _assert_one_paragraph(result, '"no-such-host.invalid"', "does not resolve")


def _postgres_url():
    url = os.environ.get("MDMSERVER_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("needs MDMSERVER_TEST_POSTGRES_URL")
    return make_url(url)


@pytest.mark.postgres
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_missing_role_gives_the_createuser_and_createdb_commands(tmp_path, command):
    server = _postgres_url()
    url = server.set(username="mdmserver_no_such_role", password=None, database="mdm_first_hour")
    result = _run(tmp_path, url.render_as_string(hide_password=False), *command)
    _assert_one_paragraph(
        result, 'has no role "mdmserver_no_such_role"',
        "sudo -u postgres createuser --pwprompt mdmserver_no_such_role",
        "sudo -u postgres createdb --owner mdmserver_no_such_role mdm_first_hour",
    )


@pytest.mark.postgres
def test_missing_database_gives_the_createdb_command(tmp_path):
    server = _postgres_url()
    url = server.set(database="mdmserver_no_such_database")
    result = _run(tmp_path, url.render_as_string(hide_password=False), "init")
    _assert_one_paragraph(
        result, 'has no database "mdmserver_no_such_database"',
        f"createdb --owner {server.username} mdmserver_no_such_database",
    )
