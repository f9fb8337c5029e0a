"""The content-addressed package store: streamed, hashed per chunk, moved into place atomically."""

from __future__ import annotations

import hashlib
import io
import os
import time

import pytest

from mdmserver.apps.storage import DirectoryPackageStore, PackageTooLarge


class _Trickle(io.RawIOBase):
    """A stream that hands out a few bytes per read, as a socket does."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self.data, self.at, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        out = self.data[self.at:self.at + min(self.step, size if size > 0 else self.step)]
        self.at += len(out)
        return out


def test_a_package_is_hashed_whole_and_per_chunk_and_stored_under_its_hash(tmp_path):
    store = DirectoryPackageStore(tmp_path, chunk_size=10)
    data = bytes(range(35))
    staged = store.stage(_Trickle(data), max_bytes=100)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.size == 35 and staged.chunk_size == 10
    assert list(staged.chunk_sha256s) == [hashlib.sha256(data[i:i + 10]).hexdigest() for i in (0, 10, 20, 30)]
    assert not store.exists(staged.sha256)
    store.commit(staged)
    assert store.exists(staged.sha256) and not staged.path.exists()
    target = tmp_path / staged.sha256[:2] / staged.sha256
    assert target.read_bytes() == data
    with store.open(staged.sha256) as file:
        assert file.read() == data


def test_an_exact_multiple_of_the_chunk_size_has_no_empty_last_chunk(tmp_path):
    store = DirectoryPackageStore(tmp_path, chunk_size=10)
    data = b"x" * 20
    staged = store.stage(io.BytesIO(data), max_bytes=100)
    assert list(staged.chunk_sha256s) == [hashlib.sha256(b"x" * 10).hexdigest()] * 2


def test_the_same_bytes_twice_are_stored_once(tmp_path):
    store = DirectoryPackageStore(tmp_path, chunk_size=10)
    first = store.stage(io.BytesIO(b"same"), max_bytes=100)
    store.commit(first)
    second = store.stage(io.BytesIO(b"same"), max_bytes=100)
    store.commit(second)
    assert not second.path.exists()
    assert os.listdir(tmp_path / first.sha256[:2]) == [first.sha256]


def test_an_upload_past_the_limit_leaves_nothing_behind(tmp_path):
    store = DirectoryPackageStore(tmp_path, chunk_size=10)
    with pytest.raises(PackageTooLarge) as caught:
        store.stage(_Trickle(b"y" * 101, step=13), max_bytes=100)
    assert caught.value.status == 413
    assert os.listdir(tmp_path / "incoming") == []


def test_discard_and_delete(tmp_path):
    store = DirectoryPackageStore(tmp_path, chunk_size=10)
    staged = store.stage(io.BytesIO(b"gone"), max_bytes=100)
    store.discard(staged)
    assert not staged.path.exists() and not store.exists(staged.sha256)
    kept = store.stage(io.BytesIO(b"kept"), max_bytes=100)
    store.commit(kept)
    store.delete(kept.sha256)
    store.delete(kept.sha256)  # already gone: no error
    assert not store.exists(kept.sha256)


@pytest.mark.parametrize("name", ["../etc/passwd", "A" * 64, "a" * 63, ""])
def test_only_hashes_name_packages(tmp_path, name):
    store = DirectoryPackageStore(tmp_path, chunk_size=10)
    with pytest.raises(ValueError):
        store.open(name)


def test_uploads_left_by_a_dead_process_are_removed_at_the_next_one(tmp_path):
    store = DirectoryPackageStore(tmp_path, chunk_size=10)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    old, recent = incoming / "upload-old", incoming / "upload-recent"
    old.write_bytes(b"x")
    recent.write_bytes(b"y")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    store.discard(store.stage(io.BytesIO(b"next"), max_bytes=100))
    assert not old.exists() and recent.exists()
