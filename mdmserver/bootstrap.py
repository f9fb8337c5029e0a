"""First-run and upgrade tasks shared by the CLI and the tests."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from alembic import command
from flask import Flask
from sqlalchemy import select

from mdmserver.config import sqlite_path
from mdmserver.db import db
from mdmserver.ops.readiness import alembic_config
from mdmserver.organization.service import ensure_organization
from mdmserver.pki.service import ensure_ca_and_identity, load_secret_box
from mdmserver.tokens.models import ApiToken
from mdmserver.tokens.service import create_token

FIRST_TOKEN_NAME = "initial-admin"
#: the first admin token's file in the data directory (``admin-token.N`` beside it when it exists)
ADMIN_TOKEN_FILE = "admin-token"
#: The server's processes create files readable by their owner only (secret key, database, tokens).
PRIVATE_UMASK = 0o077
_OPEN_BITS = stat.S_IRWXG | stat.S_IRWXO

log = logging.getLogger("mdmserver.bootstrap")


def upgrade_database(app: Flask, revision: str = "heads") -> None:
    with app.app_context(), db.engine.begin() as connection:
        config = alembic_config(app.config["DATABASE_URL"])
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade_database(app: Flask, revision: str) -> None:
    with app.app_context(), db.engine.begin() as connection:
        config = alembic_config(app.config["DATABASE_URL"])
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def initialize(app: Flask) -> Path | None:
    """Idempotent set-up: migrations, organization, CA and server identity, first admin token.

    Returns the path of the file holding the first admin token when this call created it.
    """
    data_dir = Path(app.config["DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    secure_data_files(app.config)
    upgrade_database(app)
    with app.app_context():
        session = db.session
        organization = ensure_organization(session, app.config["ORGANIZATION_NAME"])
        ensure_ca_and_identity(session, organization.name, load_secret_box(app.config["SECRET_KEY_FILE"]))
        token_file = None
        if session.scalar(select(ApiToken.id).limit(1)) is None:
            _, token = create_token(session, FIRST_TOKEN_NAME, ["admin"])
            token_file = _write_new_file(data_dir / ADMIN_TOKEN_FILE, token + "\n")
        session.commit()
    secure_data_files(app.config, warn=False)
    return token_file


def _write_new_file(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (mode 0600), or beside it (``admin-token.1``, ``.2``…) when ``path``
    exists: a file left by another database (e.g. a token still in use) is never overwritten."""
    candidate, number = path, 0
    while True:
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            number += 1
            candidate = path.with_name(f"{path.name}.{number}")
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return candidate


def _secret_files(config) -> Iterable[Path]:
    """The secret key and the SQLite database with its journal files, wherever they are."""
    yield Path(config["SECRET_KEY_FILE"])
    database = sqlite_path(config["DATABASE_URL"])
    if database is not None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            yield database.with_name(database.name + suffix)


def secure_data_files(config, *, warn: bool = True) -> list[Path]:
    """Take group and other permissions away from the data directory (0700) and from every file
    directly in it (0600 for ours), and warn about each one that had them: the secret key, the
    database and the admin token must not be readable by other users. The secret key or the
    database kept outside the data directory is warned about, not changed. Returns what was open."""
    data_dir = Path(config["DATA_DIR"]).resolve()
    found: list[Path] = []
    candidates = [data_dir]
    if data_dir.is_dir():
        candidates += sorted(data_dir.iterdir())
    candidates += [p for p in _secret_files(config) if p.resolve().parent != data_dir]
    for path in candidates:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode) or not info.st_mode & _OPEN_BITS:
            continue
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            continue
        found.append(path)
        mode = stat.S_IMODE(info.st_mode)
        inside = path == data_dir or path.parent == data_dir
        if inside:
            try:
                path.chmod(mode & ~_OPEN_BITS)
            except OSError as exc:
                log.warning("cannot restrict %s (mode %o) to its owner: %s", path, mode, exc)
                continue
        if warn:
            if inside:
                log.warning("%s was accessible by group or others (mode %o); restricted to %o",
                            path, mode, mode & ~_OPEN_BITS)
            else:
                log.warning("%s is accessible by group or others (mode %o); run chmod 600 on it", path, mode)
    return found
