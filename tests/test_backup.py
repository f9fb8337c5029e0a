"""``mdmserver backup`` / ``restore``: backup → delete the data directory → restore → the same devices
check in and the sealed secrets still open; refusals leave everything as it was.

The SQLite tests run a server on its own SQLite data directory whatever database the suite uses. The
PostgreSQL tests run when ``MDMSERVER_TEST_POSTGRES_URL`` is set (CI's PostgreSQL pass), each server on a
private schema (``tests.conftest.make_app``), with the real ``pg_dump`` / ``pg_restore`` of the PATH."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import plistlib
import re
import shutil
import stat
import tarfile
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import select

from mdmserver.app import create_app
from mdmserver.backup import DATABASE_MEMBER, MANIFEST, SECRET_KEY_MEMBER, postgres_target
from mdmserver.bootstrap import initialize
from mdmserver.cli import backup_command, restore_command
from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.devices import service as devices
from mdmserver.pki.secretbox import SecretBox
from mdmserver.pki.service import get_ca
from mdmserver.records.devices import Device
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice
from tests.conftest import POSTGRES_URL, make_app
from tests.factories import install_push_topic
from tests.profiles.helpers import download, upload


def _app(data_dir: Path, **overrides) -> Flask:
    settings = {
        "data_dir": str(data_dir),
        "database_url": f"sqlite:///{data_dir / 'mdmserver.db'}",
        "log_level": "WARNING",
        "admission_policy": "auto",
        "enroll_rate_limit": 0,
        **overrides,
    }
    app = create_app(overrides=settings, environ={})
    app.config["TESTING"] = True
    return app


def _close(app: Flask) -> None:
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _cli(app: Flask, command, *args: str):
    """Run a command as the CLI would (its output holds stderr too)."""
    return app.test_cli_runner().invoke(command, list(args))


@pytest.fixture
def server(tmp_path):
    """An initialised server with a push certificate and two enrolled, accepted devices (UnlockTokens
    stored sealed)."""
    data_dir = tmp_path / "var"
    app = _app(data_dir)
    initialize(app)
    with app.app_context():
        install_push_topic(db.session)
    sims = [SimulatedDevice(FlaskTransport(app.test_client()), platform="ios", seed=i) for i in range(2)]
    for sim in sims:
        sim.enroll()
        assert sim.authenticate() == 200 and sim.token_update() == 200
    yield app, data_dir, sims
    _close(app)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_backup_delete_restore_the_same_devices_check_in(server, tmp_path) -> None:
    app, data_dir, sims = server
    archive = tmp_path / "backups" / "mdm.tar.gz"
    result = _cli(app, backup_command, str(archive))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile(MANIFEST).read())
    assert names[0] == MANIFEST and {DATABASE_MEMBER, SECRET_KEY_MEMBER, "data/admin-token"} <= set(names)
    assert manifest["database"]["alembic_revision"]
    admin_token = (data_dir / "admin-token").read_text().strip()

    _close(app)
    shutil.rmtree(data_dir)

    restored = _app(data_dir)  # a new process, as after a restart
    result = _cli(restored, restore_command, str(archive))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in data_dir.iterdir())
    try:
        client = restored.test_client()
        for sim in sims:
            sim.transport = FlaskTransport(client)
            status, _command = sim.idle()
            assert status == 200
        listing = client.get("/api/v1/devices", headers={"Authorization": f"Bearer {admin_token}"})
        assert listing.status_code == 200
        assert {d["attributes"]["udid"] for d in listing.get_json()["data"]} == {s.udid for s in sims}
        with restored.app_context():
            box = secret_box()
            for sim in sims:
                device = db.session.scalar(select(Device).where(Device.udid == sim.udid))
                assert devices.unlock_token(device, box) == sim.unlock_token
            get_ca(db.session, box)  # the CA's private key opens
    finally:
        _close(restored)


def test_restore_refuses_to_overwrite_without_force(server, tmp_path) -> None:
    app, data_dir, _sims = server
    archive = tmp_path / "mdm.tar.gz"
    assert _cli(app, backup_command, str(archive)).exit_code == 0
    _close(app)
    before = _digests(data_dir)

    refused = _cli(app, restore_command, str(archive))
    assert refused.exit_code != 0
    assert "refusing to overwrite" in refused.output
    assert "--force" in refused.output
    assert _digests(data_dir) == before

    forced = _cli(app, restore_command, str(archive), "--force")
    assert forced.exit_code == 0, forced.output
    with app.app_context():
        assert db.session.scalar(select(Device.id).limit(1)) is not None


def _rewrite(archive: Path, target: Path, *, replace: dict[str, bytes] | None = None,
             manifest_edit=None, fix_digests: bool = True, extra: dict[str, bytes] | None = None) -> Path:
    """A copy of ``archive`` with members replaced, added, or its manifest edited."""
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    manifest = json.loads(members.pop(MANIFEST))
    members.update(replace or {})
    if fix_digests:
        for entry in manifest["files"]:
            body = members[entry["name"]]
            entry["size"], entry["sha256"] = len(body), hashlib.sha256(body).hexdigest()
    if manifest_edit:
        manifest_edit(manifest)
    members.update(extra or {})
    with tarfile.open(target, "w:gz") as tar:
        for name, body in [(MANIFEST, json.dumps(manifest).encode()), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return target


def _foreign_tar(target: Path) -> Path:
    with tarfile.open(target, "w:gz") as tar:
        info = tarfile.TarInfo("etc/passwd")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"root"))
    return target


def _same_length(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        return b"x" * len(tar.extractfile(name).read())


def _other_key() -> bytes:
    return base64.urlsafe_b64encode(SecretBox.generate_key()) + b"\n"


CORRUPT = {
    "truncated": (lambda a, t: (t.write_bytes(a.read_bytes()[: a.stat().st_size // 2]), t)[1],
                  "not a readable mdmserver backup"),
    "not gzip": (lambda a, t: (t.write_bytes(b"hello"), t)[1], "not a readable mdmserver backup"),
    "foreign tar": (lambda a, t: _foreign_tar(t), "does not start with its manifest"),
    "tampered member": (lambda a, t: _rewrite(a, t, replace={"data/admin-token": _same_length(a, "data/admin-token")},
                                              fix_digests=False), "damaged"),
    "another secret key": (lambda a, t: _rewrite(a, t, replace={SECRET_KEY_MEMBER: _other_key()}),
                           "does not open"),
    "database replaced": (lambda a, t: _rewrite(a, t, replace={DATABASE_MEMBER: b"not sqlite" * 100}),
                          "database"),
    "unlisted member": (lambda a, t: _rewrite(a, t, extra={"data/../../evil": b"x"}), "does not list"),
    "path escaping the data directory": (
        lambda a, t: _rewrite(a, t, manifest_edit=lambda m: m["files"].append(
            {"name": "data/../evil", "role": "data", "size": 1, "sha256": "0" * 64})),
        "unsafe path"),
    "newer format": (lambda a, t: _rewrite(a, t, manifest_edit=lambda m: m.update(version=99)), "not supported"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_or_foreign_archive_is_refused_and_nothing_changes(server, tmp_path, case) -> None:
    app, data_dir, _sims = server
    good = tmp_path / "good.tar.gz"
    assert _cli(app, backup_command, str(good)).exit_code == 0
    make, message = CORRUPT[case]
    bad = make(good, tmp_path / "bad.tar.gz")
    _close(app)
    before = _digests(data_dir)

    result = _cli(app, restore_command, str(bad), "--force")
    assert result.exit_code != 0
    output = result.output
    assert message in output and "Traceback" not in output
    assert _digests(data_dir) == before
    assert not (tmp_path / "evil").exists() and not (data_dir.parent / "evil").exists()


#: a PostgreSQL server nobody listens on: the refusals below happen before any connection
UNREACHABLE_PG = "postgresql+psycopg://mdm:hunter2@127.0.0.1:1/mdm?options=-csearch_path%3Dtenant"


def test_pg_dump_missing_is_a_clean_error_and_leaves_no_archive(tmp_path, monkeypatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    app = _app(tmp_path / "var", database_url=UNREACHABLE_PG)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret.key").write_bytes(_other_key())
    result = _cli(app, backup_command, str(tmp_path / "x.tar.gz"))
    assert result.exit_code == 2, result.output
    assert "`pg_dump` is not on the PATH" in result.output and "postgresql-client" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.tar.gz").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bin", "var"]


def test_a_sqlite_archive_is_refused_by_a_postgresql_server(server, tmp_path) -> None:
    app, _data_dir, _sims = server
    archive = tmp_path / "sqlite.tar.gz"
    assert _cli(app, backup_command, str(archive)).exit_code == 0
    target = tmp_path / "pg-var"
    result = _cli(_app(target, database_url=UNREACHABLE_PG), restore_command, str(archive), "--force")
    assert result.exit_code == 2
    assert "holds a SQLite database and the server is configured for PostgreSQL" in result.output
    assert not target.exists()


def _as_postgres_archive(archive: Path, target: Path) -> Path:
    """The SQLite archive relabelled as a PostgreSQL one (what a PostgreSQL server's backup looks like to a
    SQLite server: its manifest says so and its database member is a dump)."""
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    manifest = json.loads(members.pop(MANIFEST))
    members["database.pgdump"] = members.pop(DATABASE_MEMBER)
    manifest["database"] = {"engine": "postgresql", "alembic_revision": manifest["database"]["alembic_revision"],
                            "schema": None, "server_version": 15, "pg_dump_version": 15}
    for entry in manifest["files"]:
        if entry["name"] == DATABASE_MEMBER:
            entry["name"] = "database.pgdump"
    with tarfile.open(target, "w:gz") as tar:
        for name, body in [(MANIFEST, json.dumps(manifest).encode()), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return target


def test_a_postgresql_archive_is_refused_by_a_sqlite_server(server, tmp_path) -> None:
    app, data_dir, _sims = server
    good = tmp_path / "good.tar.gz"
    assert _cli(app, backup_command, str(good)).exit_code == 0
    foreign = _as_postgres_archive(good, tmp_path / "pg.tar.gz")
    _close(app)
    before = _digests(data_dir)
    result = _cli(app, restore_command, str(foreign), "--force")
    assert result.exit_code == 2
    assert "holds a PostgreSQL database and the server is configured for SQLite" in result.output
    assert _digests(data_dir) == before


def test_a_version_1_archive_is_still_restored(server, tmp_path) -> None:
    app, _data_dir, sims = server
    good = tmp_path / "good.tar.gz"
    assert _cli(app, backup_command, str(good)).exit_code == 0
    with tarfile.open(good) as tar:
        assert json.loads(tar.extractfile(MANIFEST).read())["version"] == 2
    old = _rewrite(good, tmp_path / "v1.tar.gz", manifest_edit=lambda m: m.update(
        version=1, database={"engine": "sqlite", "alembic_revision": m["database"]["alembic_revision"]}))
    _close(app)
    result = _cli(app, restore_command, str(old), "--force")
    assert result.exit_code == 0, result.output
    sims[0].transport = FlaskTransport(app.test_client())
    assert sims[0].idle()[0] == 200


# --- PostgreSQL ------------------------------------------------------------------------------------------

needs_postgres = pytest.mark.skipif(not POSTGRES_URL, reason="MDMSERVER_TEST_POSTGRES_URL is not set")
WIFI_PASSWORD = "correct horse battery staple"


def _schema_of(app: Flask) -> str:
    found = re.search(r"search_path%3D(\w+)", app.config["DATABASE_URL"])
    assert found, app.config["DATABASE_URL"]
    return found.group(1)


def _wipe(schema: str) -> None:
    engine = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    finally:
        engine.dispose()


def _table_count(schema: str) -> int:
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
                                        (schema,)).scalar()
    finally:
        engine.dispose()


def _wifi_with_password() -> bytes:
    return plistlib.dumps({
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.example.backup",
        "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadDisplayName": "Office Wi-Fi",
        "PayloadContent": [{"PayloadType": "com.apple.wifi.managed", "PayloadVersion": 1,
                            "PayloadIdentifier": "com.example.backup.wifi", "PayloadUUID": str(uuid.uuid4()).upper(),
                            "SSID_STR": "Office", "EncryptionType": "WPA2", "Password": WIFI_PASSWORD}],
    })


@pytest.fixture
def pg_server(tmp_path):
    """A server on a private PostgreSQL schema with two enrolled devices (UnlockTokens sealed) and a Wi-Fi
    profile whose password is sealed."""
    app, cleanup = make_app(tmp_path / "server", admission_policy="auto", enroll_rate_limit=0)
    data_dir = Path(app.config["DATA_DIR"])
    with app.app_context():
        install_push_topic(db.session)
    client = app.test_client()
    sims = [SimulatedDevice(FlaskTransport(client), platform="ios", seed=i) for i in range(2)]
    for sim in sims:
        sim.enroll()
        assert sim.authenticate() == 200 and sim.token_update() == 200
    headers = {"Authorization": f"Bearer {(data_dir / 'admin-token').read_text().strip()}"}
    uploaded = upload(client, headers, _wifi_with_password())
    assert uploaded.status_code == 201, uploaded.get_json()
    yield app, data_dir, sims, headers, uploaded.get_json()["data"]["id"]
    cleanup()


@needs_postgres
def test_postgresql_backup_wipe_restore_brings_devices_and_secrets_back(pg_server, tmp_path) -> None:
    app, data_dir, sims, headers, profile_id = pg_server
    schema = _schema_of(app)
    archive = tmp_path / "backups" / "mdm.tar.gz"
    result = _cli(app, backup_command, str(archive))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile(MANIFEST).read())
        dump = tar.extractfile("database.pgdump").read()
    assert names[0] == MANIFEST and {"database.pgdump", SECRET_KEY_MEMBER, "data/admin-token"} <= set(names)
    assert DATABASE_MEMBER not in names
    assert dump.startswith(b"PGDMP")  # pg_dump's custom format
    entry = next(e for e in manifest["files"] if e["name"] == "database.pgdump")
    assert entry["role"] == "database" and entry["sha256"] == hashlib.sha256(dump).hexdigest()
    assert manifest["database"]["engine"] == "postgresql" and manifest["database"]["schema"] == schema
    assert manifest["database"]["alembic_revision"]

    _close(app)
    _wipe(schema)
    shutil.rmtree(data_dir)
    assert _table_count(schema) == 0

    restored = _app(data_dir, database_url=app.config["DATABASE_URL"])  # a new process, as after a restart
    result = _cli(restored, restore_command, str(archive))
    assert result.exit_code == 0, result.output
    assert _table_count(schema) > 0
    try:
        client = restored.test_client()
        for sim in sims:
            sim.transport = FlaskTransport(client)
            assert sim.idle()[0] == 200
        listing = client.get("/api/v1/devices", headers=headers)
        assert listing.status_code == 200
        assert {d["attributes"]["udid"] for d in listing.get_json()["data"]} == {s.udid for s in sims}
        profile = download(client, headers, profile_id)
        assert profile.status_code == 200
        assert plistlib.loads(profile.data)["PayloadContent"][0]["Password"] == WIFI_PASSWORD
        with restored.app_context():
            box = secret_box()
            for sim in sims:
                device = db.session.scalar(select(Device).where(Device.udid == sim.udid))
                assert devices.unlock_token(device, box) == sim.unlock_token
            get_ca(db.session, box)
    finally:
        _close(restored)


@needs_postgres
def test_postgresql_restore_over_live_tables_needs_force(pg_server, tmp_path) -> None:
    app, data_dir, sims, headers, _profile_id = pg_server
    archive = tmp_path / "mdm.tar.gz"
    assert _cli(app, backup_command, str(archive)).exit_code == 0
    client = app.test_client()
    extra = upload(client, headers, _wifi_with_password().replace(b"com.example.backup", b"com.example.later"))
    assert extra.status_code == 201
    _close(app)

    refused = _cli(app, restore_command, str(archive))
    assert refused.exit_code == 2
    assert "refusing to overwrite" in refused.output and "tables of the PostgreSQL database" in refused.output
    assert download(client, headers, extra.get_json()["data"]["id"]).status_code == 200
    _close(app)

    # a table the dump does not hold (a newer migration's): pg_restore cannot drop the schema, rolls back
    schema = _schema_of(app)
    engine = sa.create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE "{schema}".newer (id integer)')
    key_before = (data_dir / "secret.key").read_bytes()
    (data_dir / "admin-token").write_text("changed after the backup\n")
    failed = _cli(app, restore_command, str(archive), "--force")
    assert failed.exit_code == 2
    assert "pg_restore failed:" in failed.output and "cannot drop schema" in failed.output
    assert "depends on schema" in failed.output
    assert download(client, headers, extra.get_json()["data"]["id"]).status_code == 200  # rolled back
    assert (data_dir / "admin-token").read_text() == "changed after the backup\n"  # files untouched
    assert (data_dir / "secret.key").read_bytes() == key_before
    _close(app)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP TABLE "{schema}".newer')
    engine.dispose()

    forced = _cli(app, restore_command, str(archive), "--force")
    assert forced.exit_code == 0, forced.output
    assert download(client, headers, extra.get_json()["data"]["id"]).status_code == 404  # back to the backup
    assert (data_dir / "admin-token").read_text() != "changed after the backup\n"
    sims[0].transport = FlaskTransport(client)
    assert sims[0].idle()[0] == 200


@needs_postgres
def test_postgresql_archive_with_another_key_is_refused_before_the_database_is_touched(pg_server, tmp_path) -> None:
    app, _data_dir, _sims, _headers, _profile_id = pg_server
    good = tmp_path / "good.tar.gz"
    assert _cli(app, backup_command, str(good)).exit_code == 0
    bad = _rewrite(good, tmp_path / "bad.tar.gz", replace={SECRET_KEY_MEMBER: _other_key()})
    _close(app)
    schema = _schema_of(app)
    _wipe(schema)
    result = _cli(app, restore_command, str(bad), "--force")
    assert result.exit_code == 2 and "does not open" in result.output
    assert _table_count(schema) == 0  # pg_restore never ran


def _fake_pg_dump(folder: Path, script: str) -> None:
    folder.mkdir()
    tool = folder / "pg_dump"
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)


@needs_postgres
@pytest.mark.parametrize(("script", "message"), [
    ('[ "$1" = --version ] && { echo "pg_dump (PostgreSQL) 99.1"; exit 0; }\n'
     'echo "pg_dump: warning: first line" >&2\necho "pg_dump: error: connection to server lost" >&2\n'
     'echo partial > "$(echo "$@" | sed -n "s/.*--file=\\([^ ]*\\).*/\\1/p")"\nexit 1\n',
     "pg_dump failed: pg_dump: error: connection to server lost"),
    ('echo "pg_dump (PostgreSQL) 9.6.24"\n', "is version 9, older than the"),
])
def test_pg_dump_failing_or_too_old_is_a_clean_error(pg_server, tmp_path, monkeypatch, script, message) -> None:
    app = pg_server[0]
    _fake_pg_dump(tmp_path / "bin", script)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    result = _cli(app, backup_command, str(tmp_path / "out" / "x.tar.gz"))
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_backup_refuses_a_secret_key_that_does_not_open_the_database(server, tmp_path) -> None:
    app, data_dir, _sims = server
    (data_dir / "secret.key").write_bytes(_other_key())
    result = _cli(app, backup_command, str(tmp_path / "x.tar.gz"))
    assert result.exit_code != 0 and "does not open" in result.output
    assert not (tmp_path / "x.tar.gz").exists()


@pytest.mark.parametrize(("url", "env", "schema"), [
    ("postgresql+psycopg://mdm:s3cr%40t@db.example:6432/mdm?options=-csearch_path%3Dtenant_a&sslmode=require",
     {"PGHOST": "db.example", "PGPORT": "6432", "PGUSER": "mdm", "PGPASSWORD": "s3cr@t", "PGDATABASE": "mdm",
      "PGSSLMODE": "require", "PGOPTIONS": "-csearch_path=tenant_a"}, "tenant_a"),
    ("postgresql://mdm@/mdm?host=/run/postgresql",
     {"PGHOST": "/run/postgresql", "PGUSER": "mdm", "PGDATABASE": "mdm"}, None),
    ("postgresql+psycopg://u@h/d?options=-c%20search_path%3D%22Mixed%20Case%22,public",
     {"PGHOST": "h", "PGUSER": "u", "PGDATABASE": "d", "PGOPTIONS": '-c search_path="Mixed Case",public'},
     "Mixed Case"),
    ("postgresql+psycopg://u@h/d?options=-csearch_path%3D%22a%22%22b%22",
     {"PGHOST": "h", "PGUSER": "u", "PGDATABASE": "d", "PGOPTIONS": '-csearch_path="a""b"'}, 'a"b'),
    ("postgresql+psycopg://u@h/d?options=-csearch_path%3D%24user,public",
     {"PGHOST": "h", "PGUSER": "u", "PGDATABASE": "d", "PGOPTIONS": "-csearch_path=$user,public"}, None),
])
def test_the_database_url_becomes_libpq_environment(url, env, schema) -> None:
    target = postgres_target(url)
    assert target.env == env and target.schema == schema
    assert "s3cr" not in target.display and "s3cr" not in repr(target)


def test_other_database_urls_are_not_postgresql() -> None:
    assert postgres_target("sqlite:///var/mdmserver.db") is None
    assert postgres_target("mysql://u@h/d") is None


@needs_postgres
def test_the_password_reaches_pg_dump_through_its_environment_only(pg_server, tmp_path, monkeypatch) -> None:
    app = pg_server[0]
    record = tmp_path / "record"
    _fake_pg_dump(tmp_path / "bin", f'[ "$1" = --version ] && {{ echo "pg_dump (PostgreSQL) 99"; exit 0; }}\n'
                                    f'echo "ARGS $*" > {record}\necho "PGPASSWORD $PGPASSWORD" >> {record}\n'
                                    'echo "pg_dump: error: stop here" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    monkeypatch.setenv("PGDATABASE", "not-this-one")
    url = app.config["DATABASE_URL"].replace("postgresql+psycopg://postgres@", "postgresql+psycopg://postgres:pw%21x@")
    assert url != app.config["DATABASE_URL"]  # the suite's URL names the postgres role without a password
    app.config["DATABASE_URL"] = url  # trust authentication (CI's) ignores the password
    result = _cli(app, backup_command, str(tmp_path / "x.tar.gz"))
    assert result.exit_code == 2 and "pg_dump failed: pg_dump: error: stop here" in result.output
    args, password = record.read_text().splitlines()
    assert "pw!x" not in args and password == "PGPASSWORD pw!x"
    assert f'--schema="{_schema_of(app)}"' in args and "--format=custom" in args


def test_backup_leaves_out_the_running_servers_metrics(server, tmp_path) -> None:
    app, data_dir, _sims = server
    (data_dir / "metrics").mkdir(exist_ok=True)
    (data_dir / "metrics" / "4242.values").write_bytes(b"\x08" + b"\x00" * 7)
    (data_dir / "notes.txt").write_text("kept")
    archive = tmp_path / "mdm.tar.gz"
    assert _cli(app, backup_command, str(archive)).exit_code == 0
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "data/notes.txt" in names
    assert not [name for name in names if "metrics" in name], names
