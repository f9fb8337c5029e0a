"""``mdmserver backup`` / ``restore``: backup → delete the data directory → restore → the same devices
check in and the sealed secrets still open; refusals leave everything as it was.

The server runs on its own SQLite data directory here whatever database the suite uses: the backup
copies SQLite files (PostgreSQL is refused with the pg_dump instructions, tested too)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import stat
import tarfile
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from mdmserver.app import create_app
from mdmserver.backup import DATABASE_MEMBER, MANIFEST, SECRET_KEY_MEMBER
from mdmserver.bootstrap import initialize
from mdmserver.cli import backup_command, restore_command
from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.devices import service as devices
from mdmserver.pki.secretbox import SecretBox
from mdmserver.pki.service import get_ca
from mdmserver.records.devices import Device
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice
from tests.factories import install_push_topic


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


def test_postgresql_is_refused_with_pg_dump_instructions(tmp_path) -> None:
    app = _app(tmp_path / "var", database_url="postgresql+psycopg://mdm@127.0.0.1/mdm")
    result = _cli(app, backup_command, str(tmp_path / "x.tar.gz"))
    output = result.output
    assert result.exit_code != 0 and "pg_dump" in output and "pg_restore" in output and "secret.key" in output
    assert not (tmp_path / "x.tar.gz").exists()


def test_backup_refuses_a_secret_key_that_does_not_open_the_database(server, tmp_path) -> None:
    app, data_dir, _sims = server
    (data_dir / "secret.key").write_bytes(_other_key())
    result = _cli(app, backup_command, str(tmp_path / "x.tar.gz"))
    assert result.exit_code != 0 and "does not open" in result.output
    assert not (tmp_path / "x.tar.gz").exists()
