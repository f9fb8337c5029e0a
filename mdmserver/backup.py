"""``mdmserver backup`` / ``mdmserver restore``: one archive holding everything a server cannot
rebuild — the database (SQLite: a consistent copy through SQLite's online backup API; PostgreSQL: a
``pg_dump --format=custom`` of the configured database, or of its schema when the URL's
``options=-csearch_path=…`` names one), the secret key that opens every private key and secret stored in
it, and the other files of the data directory (the first admin token…).

The archive is a tar.gz created with mode 0600: a ``manifest.json`` naming each member with its role,
size and SHA-256, then the members. Member names are never used as paths: restore reads each member
into a file it names itself, checks the manifest, the database's integrity and that the secret key in
the archive opens a sealed value stored in its database, and only then replaces anything.

PostgreSQL runs ``pg_dump`` / ``pg_restore`` from the PATH (their major version at least the server's),
with the connection given through libpq's environment (``PGHOST``, ``PGPASSWORD``…): the password is never
on a command line. Restore checks the key against the dump's sealed private keys before it touches the
database, restores in one transaction, and checks again in the restored database. An archive of one
engine is never restored into a configuration of the other.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from mdmserver.apps.storage import staging_root
from mdmserver.config import sqlite_path
from mdmserver.ops import metrics
from mdmserver.pki.secretbox import SecretBox, SecretBoxError

FORMAT = "mdmserver-backup"
#: 2: the manifest's ``database.engine`` names the database member (``sqlite`` or ``postgresql``); version 1
#: archives (always SQLite) are still read.
VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
DATABASE_MEMBER = "database.sqlite3"
PGDUMP_MEMBER = "database.pgdump"
SQLITE, POSTGRESQL = "sqlite", "postgresql"
DATABASE_MEMBERS = {SQLITE: DATABASE_MEMBER, POSTGRESQL: PGDUMP_MEMBER}
SECRET_KEY_MEMBER = "secret.key"
DATA_PREFIX = "data/"
ROLE_DATABASE, ROLE_SECRET_KEY, ROLE_DATA = "database", "secret_key", "data"
#: SQLite's companions of a database file: a stale one beside a restored database would corrupt it.
JOURNAL_SUFFIXES = ("-wal", "-shm", "-journal")
_MAX_MANIFEST_BYTES = 1 << 20
_CHUNK = 1 << 20


class BackupError(Exception):
    """Backup or restore refused; the message says why and what to do."""


@dataclass(frozen=True)
class Postgres:
    """How ``pg_dump`` / ``pg_restore`` reach the configured PostgreSQL database."""

    # both hold the password: kept out of the repr
    url: str = field(repr=False)  # the SQLAlchemy URL, for the checks made through the server's own driver
    env: dict[str, str] = field(repr=False)  # libpq's environment: PGHOST, PGPORT, PGUSER, PGPASSWORD…
    schema: str | None  # the first schema of the URL's search_path: only it is dumped and restored
    display: str  # the URL without its password

    def dbname_argument(self) -> str:
        """``--dbname`` for pg_restore: a conninfo naming the database only (the rest is in ``env``)."""
        value = self.env.get("PGDATABASE", "")
        return "dbname='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Locations:
    """Where the server keeps what a backup holds (from the configuration)."""

    database: Path | None  # the SQLite file, or None for PostgreSQL
    postgres: Postgres | None
    secret_key: Path
    data_dir: Path

    @property
    def engine(self) -> str:
        return POSTGRESQL if self.postgres is not None else SQLITE

    def journals(self) -> list[Path]:
        if self.database is None:
            return []
        return [self.database.with_name(self.database.name + suffix) for suffix in JOURNAL_SUFFIXES]

    def is_data_file(self, path: Path) -> bool:
        """A file of the data directory that goes into the archive as ``data/…`` (not the database,
        its journals or the secret key, which have their own members, nor an app package still being
        uploaded, which is renamed or removed while the backup reads, nor the running server's metrics)."""
        own = {self.database, self.secret_key, *self.journals()} - {None}
        transient = (staging_root(self.data_dir), self.data_dir / metrics.DIRECTORY_NAME)
        return path not in own and not any(folder in path.parents for folder in transient)


def locations(config: Mapping[str, Any]) -> Locations:
    url = config["DATABASE_URL"]
    database = sqlite_path(url)
    postgres = None if database is not None else postgres_target(url)
    if database is None and postgres is None:
        raise BackupError("`mdmserver backup` copies a SQLite file or a PostgreSQL database; the configured "
                          "database is neither (an in-memory SQLite database cannot be backed up)")
    return Locations(database.resolve() if database is not None else None, postgres,
                     Path(config["SECRET_KEY_FILE"]).resolve(), Path(config["DATA_DIR"]).resolve())


#: URL query parameters passed on to libpq's environment (the others are the driver's own business).
_LIBPQ_QUERY = {
    "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL", "connect_timeout": "PGCONNECT_TIMEOUT", "application_name": "PGAPPNAME",
    "options": "PGOPTIONS", "target_session_attrs": "PGTARGETSESSIONATTRS", "host": "PGHOST",
    "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD", "dbname": "PGDATABASE",
    "passfile": "PGPASSFILE", "service": "PGSERVICE",
}
_SEARCH_PATH = re.compile(r'-c\s*search_path\s*=\s*("(?:[^"]|"")+"|[^,\s"]+)')


def postgres_target(database_url: str) -> Postgres | None:
    """The libpq environment of a SQLAlchemy ``postgresql[+driver]://`` URL (None for another database)."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        return None
    if url.get_backend_name() != "postgresql":
        return None
    env: dict[str, str] = {}
    for name, value in url.query.items():
        variable = _LIBPQ_QUERY.get(name)
        if variable is not None:
            env[variable] = value[-1] if isinstance(value, tuple) else value
    for variable, value in (("PGHOST", url.host), ("PGPORT", url.port), ("PGUSER", url.username),
                            ("PGPASSWORD", url.password), ("PGDATABASE", url.database)):
        if value is not None:
            env[variable] = str(value)
    return Postgres(database_url, env, _first_schema(env.get("PGOPTIONS", "")),
                    url.render_as_string(hide_password=True))


def _first_schema(options: str) -> str | None:
    """The first schema of ``-csearch_path=a,b`` in libpq options (None when absent or ``$user``)."""
    found = _SEARCH_PATH.search(options)
    if found is None:
        return None
    first = found.group(1)
    if first.startswith('"'):
        return first[1:-1].replace('""', '"')
    return None if first.startswith("$") else first


# --- backup --------------------------------------------------------------------------------------------


def create_backup(config: Mapping[str, Any], archive: Path) -> dict[str, Any]:
    """Write the archive (mode 0600, replacing a previous one atomically) and return its manifest."""
    where = locations(config)
    archive = Path(archive).resolve()
    if where.database is not None and not where.database.is_file():
        raise BackupError(f"no database at {where.database}: nothing to back up (run `mdmserver init` first)")
    if not where.secret_key.is_file():
        raise BackupError(f"no secret key at {where.secret_key}: the database's private keys and secrets "
                          "cannot be opened without it, so a backup would be useless")
    key_bytes = where.secret_key.read_bytes()
    with tempfile.TemporaryDirectory(prefix="mdmserver-backup-") as work:
        if where.postgres is not None:
            copy = Path(work) / PGDUMP_MEMBER
            database = _dump_postgres(where.postgres, key_bytes, copy)
        else:
            copy = Path(work) / DATABASE_MEMBER
            _copy_database(where.database, copy, timeout=float(config.get("DATABASE_BUSY_TIMEOUT", 10.0)))
            database = {"engine": SQLITE, "alembic_revision": check_database(copy, key_bytes)}
        members: list[tuple[str, str, Path]] = [(copy.name, ROLE_DATABASE, copy)]
        key_copy = Path(work) / SECRET_KEY_MEMBER
        key_copy.write_bytes(key_bytes)
        members.append((SECRET_KEY_MEMBER, ROLE_SECRET_KEY, key_copy))
        for path in _data_files(where, skip={archive}):
            members.append((DATA_PREFIX + path.relative_to(where.data_dir).as_posix(), ROLE_DATA, path))
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "database": database,
            "files": [{"name": name, "role": role, "size": path.stat().st_size, "sha256": _sha256(path)}
                      for name, role, path in members],
        }
        _write_archive(archive, manifest, members)
    return manifest


def _copy_database(source: Path, target: Path, *, timeout: float) -> None:
    """A consistent copy of a live database: SQLite's online backup API (writers may go on)."""
    src = sqlite3.connect(f"file:{quote(str(source))}?mode=ro", uri=True, timeout=timeout)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy the database {source}: {exc}") from exc
    finally:
        dst.close()
        src.close()


def _data_files(where: Locations, *, skip: set[Path]) -> Iterator[Path]:
    """Regular files under the data directory (no symbolic links, sockets or pipes), sorted."""
    if not where.data_dir.is_dir():
        return
    for root, dirs, files in os.walk(where.data_dir):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.is_symlink() or not path.is_file() or path in skip or not where.is_data_file(path):
                continue
            yield path


def _write_archive(archive: Path, manifest: dict[str, Any], members: list[tuple[str, str, Path]]) -> None:
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{archive.name}.", dir=archive.parent)  # mode 0600
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            _add(tar, MANIFEST, io.BytesIO(json.dumps(manifest, indent=2).encode()))
            for name, _role, path in members:
                with path.open("rb") as handle:
                    _add(tar, name, handle)
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, archive)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _add(tar: tarfile.TarFile, name: str, handle) -> None:
    handle.seek(0, os.SEEK_END)
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = handle.tell(), 0o600, int(datetime.now(UTC).timestamp())
    handle.seek(0)
    tar.addfile(info, handle)


# --- checks shared by backup and restore ---------------------------------------------------------------


def check_database(path: Path, key_bytes: bytes) -> str | None:
    """The database file is sound and the key opens a private key stored in it; returns its Alembic
    revision."""
    try:
        box = SecretBox.from_encoded_key(key_bytes)
    except SecretBoxError as exc:
        raise BackupError(f"the secret key is unusable: {exc}") from exc
    try:
        connection = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"the database cannot be opened: {exc}") from exc
    try:
        (integrity,) = connection.execute("PRAGMA integrity_check").fetchone()
        if integrity != "ok":
            raise BackupError(f"the database is damaged (integrity check: {integrity})")
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        sealed = connection.execute("SELECT encrypted_pem FROM rsa_private_keys ORDER BY id LIMIT 1").fetchone()
    except sqlite3.Error as exc:
        raise BackupError(f"not an mdmserver database: {exc}") from exc
    finally:
        connection.close()
    if sealed is None:
        raise BackupError("the database holds no private key (run `mdmserver init` first)")
    try:
        box.decrypt(sealed[0])
    except SecretBoxError as exc:
        raise BackupError("the secret key does not open the private keys stored in the database: they were "
                          "sealed with another key") from exc
    return revision[0] if revision else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- restore -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Extracted:
    manifest: dict[str, Any]
    files: dict[str, Path]  # member name → extracted file


def read_archive(archive: Path, work: Path, where: Locations) -> _Extracted:
    """Read and check the archive into ``work`` (manifest, sizes, digests, the database and the key) for
    a restore to ``where`` (an archive of the other database engine is refused)."""
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            manifest = _read_manifest(tar)
            _check_engine(manifest, where)
            expected = {entry["name"]: entry for entry in manifest["files"]}
            files: dict[str, Path] = {}
            for member in tar:
                if member.name == MANIFEST:
                    continue
                entry = expected.get(member.name)
                if entry is None or member.name in files:
                    raise BackupError(f"the archive holds {member.name!r}, which its manifest does not list")
                if not member.isreg() or member.size != entry["size"]:
                    raise BackupError(f"{member.name!r} in the archive does not match its manifest")
                target = work / f"member-{len(files)}"
                digest = hashlib.sha256()
                source = tar.extractfile(member)
                with target.open("xb") as out:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != entry["sha256"]:
                    raise BackupError(f"{member.name!r} in the archive is damaged (its SHA-256 differs from the "
                                      "manifest's)")
                files[member.name] = target
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise BackupError(f"no archive at {archive}") from exc
        raise BackupError(f"{archive} is not a readable mdmserver backup (tar.gz): {exc}") from exc
    missing = sorted(set(expected) - set(files))
    if missing:
        raise BackupError(f"the archive is incomplete: {', '.join(missing)} missing")
    key_bytes = files[SECRET_KEY_MEMBER].read_bytes()
    if where.postgres is None:
        check_database(files[DATABASE_MEMBER], key_bytes)
    else:
        sealed = _dumped_sealed_key(where.postgres, files[PGDUMP_MEMBER], work, _dumped_by(manifest))
        _open_sealed(_box(key_bytes), sealed)
    return _Extracted(manifest, files)


def archive_engine(manifest: Mapping[str, Any]) -> str:
    """``sqlite`` or ``postgresql``: the database an (already checked) manifest holds."""
    if manifest["version"] == 1:
        return SQLITE
    return manifest["database"]["engine"]


def _dumped_by(manifest: Mapping[str, Any]) -> int:
    """The major version of the pg_dump that wrote the archive (pg_restore must be at least as new)."""
    return manifest["database"].get("pg_dump_version", 0)


def _check_engine(manifest: Mapping[str, Any], where: Locations) -> None:
    engine = archive_engine(manifest)
    names = {SQLITE: "SQLite", POSTGRESQL: "PostgreSQL"}
    if engine != where.engine:
        raise BackupError(f"this archive holds a {names[engine]} database and the server is configured for "
                          f"{names[where.engine]} (MDMSERVER_DATABASE_URL): restore it into a server "
                          f"configured for {names[engine]}; nothing was changed")
    if where.postgres is not None and manifest["database"].get("schema") != where.postgres.schema:
        raise BackupError(f"this archive holds the PostgreSQL schema {manifest['database'].get('schema')!r} "
                          f"and the configured database uses {where.postgres.schema!r} (the URL's "
                          "options=-csearch_path=…): configure the same schema to restore it; nothing was changed")


def _read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isreg() or first.size > _MAX_MANIFEST_BYTES:
        raise BackupError("not an mdmserver backup: the archive does not start with its manifest")
    try:
        manifest = json.loads(tar.extractfile(first).read())
    except ValueError as exc:
        raise BackupError(f"the archive's manifest is not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError("not an mdmserver backup (the manifest names another format)")
    version = manifest.get("version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise BackupError(f"backup format version {version!r} is not supported (this mdmserver reads versions "
                          f"{', '.join(map(str, READABLE_VERSIONS))})")
    database = manifest.get("database")
    if version != 1 and not (isinstance(database, dict) and database.get("engine") in DATABASE_MEMBERS):
        raise BackupError("the archive's manifest names no database engine it knows")
    if version != 1 and database["engine"] == POSTGRESQL and not (
            isinstance(database.get("pg_dump_version"), int) and isinstance(database.get("schema"), str | None)):
        raise BackupError("the archive's manifest describes its PostgreSQL dump badly")
    files = manifest.get("files")
    roles = {DATABASE_MEMBERS[archive_engine(manifest)]: ROLE_DATABASE, SECRET_KEY_MEMBER: ROLE_SECRET_KEY}
    if not isinstance(files, list):
        raise BackupError("the archive's manifest lists no files")
    names = set()
    for entry in files:
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)
                and isinstance(entry.get("size"), int) and isinstance(entry.get("sha256"), str)):
            raise BackupError("the archive's manifest has a malformed file entry")
        name = entry["name"]
        if name in names or entry.get("role") != roles.get(name, ROLE_DATA):
            raise BackupError(f"the archive's manifest has a bad entry for {name!r}")
        if name not in roles and _data_path(name) is None:
            raise BackupError(f"the archive's manifest names an unsafe path {name!r}")
        names.add(name)
    if not set(roles) <= names:
        raise BackupError("the archive's manifest lists no database or no secret key")
    return manifest


def _data_path(name: str) -> PurePosixPath | None:
    """The path under the data directory of a ``data/…`` member, or None when it could leave it."""
    if not name.startswith(DATA_PREFIX):
        return None
    relative = PurePosixPath(name[len(DATA_PREFIX):])
    if relative.is_absolute() or not relative.parts or any(part in ("", ".", "..") for part in relative.parts):
        return None
    return relative


def _targets(where: Locations, extracted: _Extracted) -> dict[str, Path]:
    """Where each file member goes (a PostgreSQL dump goes into the database, not into a file)."""
    targets = {SECRET_KEY_MEMBER: where.secret_key}
    if where.database is not None:
        targets[DATABASE_MEMBER] = where.database
    for name in extracted.files:
        relative = _data_path(name)
        if relative is not None:
            targets[name] = where.data_dir.joinpath(*relative.parts)
    return targets


def existing_data(where: Locations, targets: Mapping[str, Path]) -> list[Path]:
    """What a restore would overwrite: the database (or its journals), the key, the archive's data files."""
    candidates = [where.database, *where.journals(), where.secret_key, *targets.values()]
    candidates = [path for path in candidates if path is not None]
    seen: list[Path] = []
    for path in candidates:
        if (path.exists() or path.is_symlink()) and path not in seen:
            seen.append(path)
    return seen


def restore_backup(config: Mapping[str, Any], archive: Path, *, force: bool = False) -> dict[str, Any]:
    """Check the archive, refuse to overwrite existing data unless ``force``, then put every file in
    place (data files, then the key, then the database last, each atomically). Returns the manifest.

    PostgreSQL: the dump is restored first (``pg_restore --clean --if-exists --no-owner
    --single-transaction`` into the configured database and schema), the key must open a private key
    sealed in the restored database, and only then are the key and the data files put in place."""
    where = locations(config)
    with tempfile.TemporaryDirectory(prefix="mdmserver-restore-") as work:
        extracted = read_archive(Path(archive), Path(work), where)
        targets = _targets(where, extracted)
        existing: list[Path | str] = list(existing_data(where, targets))
        if where.postgres is not None and _postgres_has_tables(where.postgres):
            existing.insert(0, f"the tables of the PostgreSQL database {where.postgres.display}")
        if existing and not force:
            listing = ", ".join(str(path) for path in existing)
            raise BackupError(f"refusing to overwrite existing data ({listing}); nothing was changed. Stop the "
                              "server and run again with --force to replace it")
        if where.postgres is not None:
            _restore_postgres(where.postgres, extracted.files[PGDUMP_MEMBER], _dumped_by(extracted.manifest))
            _check_postgres(where.postgres, extracted.files[SECRET_KEY_MEMBER].read_bytes())
        where.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        order = sorted(targets, key=lambda name: (name == DATABASE_MEMBER, name == SECRET_KEY_MEMBER, name))
        for name in order:
            if name == DATABASE_MEMBER:
                for journal in where.journals():
                    journal.unlink(missing_ok=True)
            _install(extracted.files[name], targets[name])
    return extracted.manifest


def _install(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.restore-", dir=target.parent)  # mode 0600
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as handle:
            shutil.copyfileobj(handle, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- PostgreSQL ----------------------------------------------------------------------------------------

_TOOL_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")
_MAX_TOOL_OUTPUT = 1 << 16


def _dump_postgres(target: Postgres, key_bytes: bytes, dump: Path) -> dict[str, Any]:
    """``pg_dump --format=custom`` of the database (or its schema) into ``dump``; the manifest's
    ``database`` entry. The key must open a private key sealed in the live database first."""
    _which("pg_dump", None)
    live = _check_postgres(target, key_bytes)
    tool, client_major = _tool("pg_dump", live["server_major"])
    arguments = [tool, "--format=custom", "--no-password", f"--file={dump}"]
    if target.schema is not None:
        arguments.append("--schema=" + '"' + target.schema.replace('"', '""') + '"')
    _run(arguments, target)
    return {"engine": POSTGRESQL, "alembic_revision": live["revision"], "schema": target.schema,
            "server_version": live["server_major"], "pg_dump_version": client_major}


def _tool(name: str, needed_major: int) -> tuple[str, int]:
    """The path of ``pg_dump`` / ``pg_restore`` on the PATH and its major version, which must be at least
    ``needed_major`` (the server's, or the version of the pg_dump that wrote the archive)."""
    path = _which(name, needed_major)
    output = _run([path, "--version"], None)
    found = _TOOL_VERSION.search(output)
    if found is None:
        raise BackupError(f"cannot tell the version of {path} (it printed {output.strip()[:200]!r})")
    major = int(found.group(1))
    if major < needed_major:
        raise BackupError(f"{path} is version {major}, older than the {needed_major} it must handle (the "
                          f"server's major version): install PostgreSQL {needed_major}'s client programs and "
                          "put them first on the PATH")
    return path, major


def _which(name: str, needed_major: int | None) -> str:
    path = shutil.which(name)
    if path is None:
        version = f"of version {needed_major} or newer" if needed_major else "of the server's major version"
        raise BackupError(f"`{name}` is not on the PATH: install PostgreSQL's client programs {version} "
                          "(Debian: `apt-get install postgresql-client`)")
    return path


def _run(arguments: list[str], target: Postgres | None) -> str:
    """Run a PostgreSQL client program (the connection in libpq's environment, never on the command line);
    its standard output, or BackupError with the last line of its standard error."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    if target is not None:
        env.update(target.env)
    try:
        done = subprocess.run(arguments, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except OSError as exc:
        raise BackupError(f"cannot run {arguments[0]}: {exc}") from exc
    if done.returncode != 0:
        raise BackupError(f"{Path(arguments[0]).name} failed: {_last_error(done.stderr, done.returncode)}")
    return done.stdout[-_MAX_TOOL_OUTPUT:].decode(errors="replace")


def _last_error(stderr: bytes, status: int) -> str:
    """The last line of a client program's standard error, or rather its last ``error:`` line with the
    server's ``DETAIL:`` after it (pg_restore ends with the failed command, which says little)."""
    lines = [line.strip() for line in stderr[-_MAX_TOOL_OUTPUT:].decode(errors="replace").splitlines()
             if line.strip()]
    if not lines:
        return f"exit status {status}"
    errors = [index for index, line in enumerate(lines) if "error:" in line.lower()]
    if not errors:
        return lines[-1]
    index = errors[-1]
    following = lines[index + 1] if index + 1 < len(lines) else ""
    return lines[index] + (f" ({following})" if following.startswith("DETAIL:") else "")


def _check_postgres(target: Postgres, key_bytes: bytes) -> dict[str, Any]:
    """The server's major version and the Alembic revision of the database, whose first sealed private
    key the key must open."""
    box = _box(key_bytes)
    with _postgres_connection(target, "cannot read the mdmserver database") as connection:
        server = int(connection.exec_driver_sql("SHOW server_version_num").scalar_one())
        revision = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        sealed = connection.exec_driver_sql(
            "SELECT encrypted_pem FROM rsa_private_keys ORDER BY id LIMIT 1").scalar()
    _open_sealed(box, None if sealed is None else bytes(sealed))
    return {"server_major": server // 10000, "revision": revision}


def _box(key_bytes: bytes) -> SecretBox:
    try:
        return SecretBox.from_encoded_key(key_bytes)
    except SecretBoxError as exc:
        raise BackupError(f"the secret key is unusable: {exc}") from exc


def _open_sealed(box: SecretBox, sealed: bytes | None) -> None:
    if sealed is None:
        raise BackupError("the database holds no private key (run `mdmserver init` first)")
    try:
        box.decrypt(sealed)
    except SecretBoxError as exc:
        raise BackupError("the secret key does not open the private keys stored in the database: they were "
                          "sealed with another key") from exc


def _dumped_sealed_key(target: Postgres, dump: Path, work: Path, needed_major: int) -> bytes | None:
    """The first sealed private key in a custom-format dump (``rsa_private_keys.encrypted_pem``), read with
    ``pg_restore --data-only`` into a file: the key is checked before the database is touched."""
    tool, _major = _tool("pg_restore", needed_major)
    script = work / "rsa_private_keys.sql"
    _run([tool, "--data-only", "--table=rsa_private_keys", f"--file={script}", str(dump)], None)
    with script.open(encoding="utf-8", errors="replace") as lines:
        columns: list[str] | None = None
        for line in lines:
            if columns is None:
                header = re.match(r"COPY \S*rsa_private_keys\S* \((.*)\) FROM stdin;$", line.rstrip("\n"))
                if header:
                    columns = [name.strip().strip('"') for name in header.group(1).split(",")]
                continue
            if line.rstrip("\n") == "\\.":
                return None
            fields = line.rstrip("\n").split("\t")
            if "encrypted_pem" not in columns or len(fields) != len(columns):
                raise BackupError("the dump's rsa_private_keys table is not an mdmserver one")
            value = fields[columns.index("encrypted_pem")]
            if not value.startswith("\\\\x"):  # COPY text: bytea in hex, its backslash escaped
                raise BackupError("the dump's sealed private keys are not in the expected form")
            try:
                return bytes.fromhex(value[3:])
            except ValueError as exc:
                raise BackupError("the dump's sealed private keys are damaged") from exc
    return None


def _postgres_has_tables(target: Postgres) -> bool:
    """Whether the configured schema (or the database's current schema) already holds tables."""
    with _postgres_connection(target, "cannot reach the PostgreSQL database") as connection:
        count = connection.exec_driver_sql(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()").scalar()
    return bool(count)


@contextmanager
def _postgres_connection(target: Postgres, failure: str) -> Iterator[sa.Connection]:
    """One connection to the target (no pool); a database error becomes a ``BackupError`` that starts
    with ``failure`` and names the server's first line of explanation."""
    engine = sa.create_engine(target.url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise BackupError(f"{failure} {target.display}: {detail[0] if detail else type(exc).__name__}") from exc
    finally:
        engine.dispose()


def _restore_postgres(target: Postgres, dump: Path, needed_major: int) -> None:
    tool, _major = _tool("pg_restore", needed_major)
    _run([tool, "--clean", "--if-exists", "--no-owner", "--single-transaction", "--exit-on-error",
          "--no-password", f"--dbname={target.dbname_argument()}", str(dump)], target)
