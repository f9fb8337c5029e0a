"""Where uploaded app packages are kept: content-addressed by SHA-256.

:class:`PackageStore` is the interface the catalogue's service and the download view use; the one
implementation here, :class:`DirectoryPackageStore`, keeps each package as ``<root>/<aa>/<sha256>`` (``aa``:
the hash's first two hex digits; ``root`` is :func:`package_root` of the data directory). An upload is streamed into a temporary file in
the same directory tree while it is hashed (the whole file and each chunk, ``apps.manifests.CHUNK_SIZE`` in the server, for the manifest),
read there by the package parser, then moved into place with one atomic rename; a package already stored
is not written twice. An object store would implement the same five methods.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from mdmserver.errors import InputError

#: How much is read from the upload stream at a time.
READ_SIZE = 1024 * 1024
#: A staged upload older than this was left by a process that died mid-upload: removed at the next one.
STALE_AFTER_SECONDS = 24 * 3600
_STAGED_PREFIX = "upload-"
#: The folder of the data directory that holds the packages, and inside it the one uploads are received
#: in (``mdmserver backup`` leaves that one out: its files are renamed or removed while a backup reads).
DATA_SUBDIR = "apps"
STAGING_SUBDIR = "incoming"


def package_root(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / DATA_SUBDIR


def staging_root(data_dir: str | os.PathLike[str]) -> Path:
    return package_root(data_dir) / STAGING_SUBDIR


class PackageTooLarge(InputError):
    """An upload past the size limit (answered 413); what was written so far is removed."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"app packages are limited to {max_bytes} bytes", status=413, code="package_too_large")


@dataclass(frozen=True)
class StagedPackage:
    """An upload written to a temporary file and hashed, not yet in the store."""

    path: Path  # the temporary file: seekable, for the package parser
    sha256: str
    size: int
    chunk_size: int
    chunk_sha256s: tuple[str, ...]  # one SHA-256 per ``chunk_size`` bytes, the last chunk shorter

    def open(self) -> BinaryIO:
        return open(self.path, "rb")


class PackageStore(Protocol):
    """Content-addressed package storage."""

    def stage(self, stream: BinaryIO, *, max_bytes: int) -> StagedPackage:
        """Copy ``stream`` to a temporary place, hashing it; ``PackageTooLarge`` past ``max_bytes``."""

    def commit(self, staged: StagedPackage) -> None:
        """Move a staged package into the store under its SHA-256 (a no-op when that one is stored)."""

    def discard(self, staged: StagedPackage) -> None:
        """Drop a staged package that is not kept."""

    def open(self, sha256: str) -> BinaryIO:
        """The stored package, for reading; ``FileNotFoundError`` when it is not stored."""

    def exists(self, sha256: str) -> bool: ...

    def delete(self, sha256: str) -> None:
        """Remove a stored package (no error when it is already gone)."""


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _remove_stale(incoming: Path) -> None:
    cutoff = time.time() - STALE_AFTER_SECONDS
    for path in incoming.glob(f"{_STAGED_PREFIX}*"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:
            pass  # another upload finished or removed it meanwhile


class DirectoryPackageStore:
    """Packages as files under ``root`` (``<data_dir>/apps`` in the running server)."""

    def __init__(self, root: str | os.PathLike[str], *, chunk_size: int) -> None:
        self.root = Path(root)
        self.chunk_size = chunk_size

    def path(self, sha256: str) -> Path:
        if not _is_sha256(sha256):
            raise ValueError("a package is named by a lower-case hex SHA-256")
        return self.root / sha256[:2] / sha256

    def stage(self, stream: BinaryIO, *, max_bytes: int) -> StagedPackage:
        incoming = self.root / STAGING_SUBDIR
        incoming.mkdir(parents=True, exist_ok=True)
        _remove_stale(incoming)
        handle, name = tempfile.mkstemp(dir=incoming, prefix=_STAGED_PREFIX)
        path = Path(name)
        whole, chunk, chunk_fill, size = hashlib.sha256(), hashlib.sha256(), 0, 0
        chunks: list[str] = []
        try:
            with os.fdopen(handle, "wb") as out:
                while block := stream.read(READ_SIZE):
                    size += len(block)
                    if size > max_bytes:
                        raise PackageTooLarge(max_bytes)
                    out.write(block)
                    whole.update(block)
                    view = memoryview(block)
                    while view:
                        take = min(len(view), self.chunk_size - chunk_fill)
                        chunk.update(view[:take])
                        chunk_fill += take
                        view = view[take:]
                        if chunk_fill == self.chunk_size:
                            chunks.append(chunk.hexdigest())
                            chunk, chunk_fill = hashlib.sha256(), 0
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if chunk_fill or not chunks:
            chunks.append(chunk.hexdigest())
        return StagedPackage(path=path, sha256=whole.hexdigest(), size=size, chunk_size=self.chunk_size,
                             chunk_sha256s=tuple(chunks))

    def commit(self, staged: StagedPackage) -> None:
        target = self.path(staged.sha256)
        if target.exists():
            staged.path.unlink(missing_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, target)

    def discard(self, staged: StagedPackage) -> None:
        staged.path.unlink(missing_ok=True)

    def open(self, sha256: str) -> BinaryIO:
        return open(self.path(sha256), "rb")

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)
