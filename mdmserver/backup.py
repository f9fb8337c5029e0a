"""``mdmserver backup`` / ``mdmserver restore``: one archive holding everything a server cannot
rebuild — the SQLite database (a consistent copy, through SQLite's online backup API), the secret
key that opens every private key and secret stored in it, and the other files of the data directory
(the first admin token…).

The archive is a tar.gz created with mode 0600: a ``manifest.json`` naming each member with its role,
size and SHA-256, then the members. Member names are never used as paths: restore reads each member
into a file it names itself, checks the manifest, the database's integrity and that the secret key in
the archive opens a sealed value stored in its database, and only then replaces anything.

PostgreSQL is refused with the commands to run instead (``pg_dump`` / ``pg_restore``): a dump taken by
the server's own user would need the server to hold the database's superuser rights.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from mdmserver.apps.storage import staging_root
from mdmserver.config import sqlite_path
from mdmserver.pki.secretbox import SecretBox, SecretBoxError

FORMAT = "mdmserver-backup"
VERSION = 1
MANIFEST = "manifest.json"
DATABASE_MEMBER = "database.sqlite3"
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
class Locations:
    """Where the server keeps what a backup holds (from the configuration)."""

    database: Path
    secret_key: Path
    data_dir: Path

    def journals(self) -> list[Path]:
        return [self.database.with_name(self.database.name + suffix) for suffix in JOURNAL_SUFFIXES]

    def is_data_file(self, path: Path) -> bool:
        """A file of the data directory that goes into the archive as ``data/…`` (not the database,
        its journals or the secret key, which have their own members, nor an app package still being
        uploaded, which is renamed or removed while the backup reads)."""
        own = {self.database, self.secret_key, *self.journals()}
        return path not in own and staging_root(self.data_dir) not in path.parents


def locations(config: Mapping[str, Any]) -> Locations:
    database = sqlite_path(config["DATABASE_URL"])
    if database is None:
        raise BackupError(
            "the database is not a SQLite file, so `mdmserver backup` cannot copy it. For PostgreSQL: "
            "`pg_dump --format=custom --file=mdmserver.dump <database URL>` (restore with `pg_restore --clean "
            "--if-exists --dbname=<database URL> mdmserver.dump`), and copy the secret key file "
            f"{config['SECRET_KEY_FILE']} and the data directory {config['DATA_DIR']} with it: the dump's "
            "private keys and secrets open only with that key (see docs/operations.md)."
        )
    return Locations(database.resolve(), Path(config["SECRET_KEY_FILE"]).resolve(),
                     Path(config["DATA_DIR"]).resolve())


# --- backup --------------------------------------------------------------------------------------------


def create_backup(config: Mapping[str, Any], archive: Path) -> dict[str, Any]:
    """Write the archive (mode 0600, replacing a previous one atomically) and return its manifest."""
    where = locations(config)
    archive = Path(archive).resolve()
    if not where.database.is_file():
        raise BackupError(f"no database at {where.database}: nothing to back up (run `mdmserver init` first)")
    if not where.secret_key.is_file():
        raise BackupError(f"no secret key at {where.secret_key}: the database's private keys and secrets "
                          "cannot be opened without it, so a backup would be useless")
    key_bytes = where.secret_key.read_bytes()
    with tempfile.TemporaryDirectory(prefix="mdmserver-backup-") as work:
        copy = Path(work) / DATABASE_MEMBER
        _copy_database(where.database, copy, timeout=float(config.get("DATABASE_BUSY_TIMEOUT", 10.0)))
        revision = check_database(copy, key_bytes)
        members: list[tuple[str, str, Path]] = [(DATABASE_MEMBER, ROLE_DATABASE, copy)]
        key_copy = Path(work) / SECRET_KEY_MEMBER
        key_copy.write_bytes(key_bytes)
        members.append((SECRET_KEY_MEMBER, ROLE_SECRET_KEY, key_copy))
        for path in _data_files(where, skip={archive}):
            members.append((DATA_PREFIX + path.relative_to(where.data_dir).as_posix(), ROLE_DATA, path))
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "database": {"engine": "sqlite", "alembic_revision": revision},
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


def read_archive(archive: Path, work: Path) -> _Extracted:
    """Read and check the archive into ``work`` (manifest, sizes, digests, the database and the key)."""
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            manifest = _read_manifest(tar)
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
    check_database(files[DATABASE_MEMBER], files[SECRET_KEY_MEMBER].read_bytes())
    return _Extracted(manifest, files)


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
    if manifest.get("version") != VERSION:
        raise BackupError(f"backup format version {manifest.get('version')!r} is not supported (this mdmserver "
                          f"reads version {VERSION})")
    files = manifest.get("files")
    roles = {DATABASE_MEMBER: ROLE_DATABASE, SECRET_KEY_MEMBER: ROLE_SECRET_KEY}
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
    targets = {DATABASE_MEMBER: where.database, SECRET_KEY_MEMBER: where.secret_key}
    for name in extracted.files:
        relative = _data_path(name)
        if relative is not None:
            targets[name] = where.data_dir.joinpath(*relative.parts)
    return targets


def existing_data(where: Locations, targets: Mapping[str, Path]) -> list[Path]:
    """What a restore would overwrite: the database (or its journals), the key, the archive's data files."""
    candidates = [where.database, *where.journals(), where.secret_key, *targets.values()]
    seen: list[Path] = []
    for path in candidates:
        if (path.exists() or path.is_symlink()) and path not in seen:
            seen.append(path)
    return seen


def restore_backup(config: Mapping[str, Any], archive: Path, *, force: bool = False) -> dict[str, Any]:
    """Check the archive, refuse to overwrite existing data unless ``force``, then put every file in
    place (data files, then the key, then the database last, each atomically). Returns the manifest."""
    where = locations(config)
    with tempfile.TemporaryDirectory(prefix="mdmserver-restore-") as work:
        extracted = read_archive(Path(archive), Path(work))
        targets = _targets(where, extracted)
        existing = existing_data(where, targets)
        if existing and not force:
            listing = ", ".join(str(path) for path in existing)
            raise BackupError(f"refusing to overwrite existing data ({listing}); nothing was changed. Stop the "
                              "server and run again with --force to replace it")
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
