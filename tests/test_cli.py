"""The mdmserver command, run as a real subprocess against its own data directory."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sqlite3
import subprocess
import sys

import pytest

from mdmserver.app import import_all_models
from mdmserver.db import db


@pytest.fixture
def run_cli(tmp_path):
    base_env = {**os.environ, "MDMSERVER_DATA_DIR": str(tmp_path / "var"), "MDMSERVER_LOG_LEVEL": "WARNING"}
    base_env.pop("MDMSERVER_DATABASE_URL", None)
    base_env.pop("MDMSERVER_CONFIG", None)

    def run(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "mdmserver", *args], env={**base_env, **(env or {})}, capture_output=True,
            text=True, timeout=120,
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


def _schema(db_file) -> dict[str, tuple]:
    """Every table of the SQLite database: its columns (name, type, not null, pk) and index names."""
    with contextlib.closing(sqlite3.connect(db_file)) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            table: (
                tuple((c[1], c[2], c[3], c[5]) for c in conn.execute(f'PRAGMA table_info("{table}")')),
                tuple(sorted(i[1] for i in conn.execute(f'PRAGMA index_list("{table}")'))),
            )
            for table in tables
        }


def _versions(db_file) -> set[str]:
    with contextlib.closing(sqlite3.connect(db_file)) as conn:
        return {row[0] for row in conn.execute("SELECT version_num FROM alembic_version")}


def test_db_downgrade_and_upgrade(run_cli):
    run_cli("init")
    db_file = run_cli.data_dir / "mdmserver.db"
    full = _schema(db_file)
    import_all_models()
    assert set(full) == set(db.metadata.tables) | {"alembic_version"}  # migrations build every model table
    heads = _versions(db_file)
    assert heads == {"0005_push_outbox", "0026_active_queue_order"}

    # down to the first migration: only its five tables are left
    run_cli("db", "downgrade", "0001_foundation")
    assert set(_schema(db_file)) == {"alembic_version", "api_tokens", "audit_events", "organizations",
                                     "rsa_private_keys", "certificates"}
    assert _versions(db_file) == {"0001_foundation"}
    # the tables 0001 made, as 0001 made them: later migrations only added these columns and indexes
    added_later = {"certificates": {"revoked_at", "renews_udid"}, "rsa_private_keys": {"purpose"}}
    indexes_added_later = {"rsa_private_keys": {"ix_rsa_private_keys_purpose"},
                           "certificates": {"ix_certificates_renews_udid"}}
    assert _schema(db_file) == {
        table: (tuple(c for c in full[table][0] if c[0] not in added_later.get(table, ())),
                tuple(i for i in full[table][1] if i not in indexes_added_later.get(table, ())))
        for table in _schema(db_file)
    }

    # down to nothing: no table but alembic's, which records no revision
    run_cli("db", "downgrade", "base")
    assert set(_schema(db_file)) == {"alembic_version"} and _versions(db_file) == set()

    # and up again: the very same schema as a fresh install (columns, types, indexes)
    run_cli("db", "upgrade")
    assert _schema(db_file) == full and _versions(db_file) == heads
    run_cli("init")


def test_version():
    result = subprocess.run([sys.executable, "-m", "mdmserver", "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == f"mdmserver {importlib.metadata.version('mdmserver')}"


def test_init_against_a_new_database_keeps_the_existing_admin_token(run_cli, tmp_path):
    run_cli("init")
    token_file = run_cli.data_dir / "admin-token"
    old_token = token_file.read_text()
    # A new database (another URL) in the same data directory: its first token goes beside the old one.
    for number in (1, 2):
        (tmp_path / "other.db").unlink(missing_ok=True)
        result = run_cli("init", env={"MDMSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}"})
        new_file = run_cli.data_dir / f"admin-token.{number}"
        assert f"first admin token written to {new_file}" in result.stderr
        assert f"{token_file} already existed" in result.stderr
        assert token_file.read_text() == old_token
        assert new_file.read_text() != old_token and oct(new_file.stat().st_mode & 0o777) == "0o600"
