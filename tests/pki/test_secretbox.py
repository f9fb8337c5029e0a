"""Secrets at rest."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from mdmserver.pki.secretbox import SecretBox, SecretBoxError


def test_round_trip_and_randomised_output():
    box = SecretBox(SecretBox.generate_key())
    a = box.encrypt(b"unlock token")
    b = box.encrypt(b"unlock token")
    assert a != b
    assert b"unlock token" not in a
    assert box.decrypt(a) == b"unlock token" == box.decrypt(b)
    assert box.decrypt(box.encrypt(b"")) == b""


def test_associated_data_binds_the_context():
    box = SecretBox(SecretBox.generate_key())
    blob = box.encrypt(b"key", associated_data=b"row 1")
    assert box.decrypt(blob, associated_data=b"row 1") == b"key"
    with pytest.raises(SecretBoxError):
        box.decrypt(blob, associated_data=b"row 2")


def test_tampering_and_wrong_key_are_detected():
    box = SecretBox(SecretBox.generate_key())
    blob = bytearray(box.encrypt(b"secret"))
    for index in (0, 5, len(blob) - 1):
        changed = bytearray(blob)
        changed[index] ^= 0x01
        with pytest.raises(SecretBoxError):
            box.decrypt(bytes(changed))
    with pytest.raises(SecretBoxError):
        SecretBox(SecretBox.generate_key()).decrypt(bytes(blob))
    for bad in (b"", b"\x01", bytes(blob[:20]), "text"):
        with pytest.raises(SecretBoxError):
            box.decrypt(bad)  # type: ignore[arg-type]


def test_bad_keys_refused():
    for key in (b"", b"short", b"x" * 31, b"x" * 33, "x" * 32):
        with pytest.raises(SecretBoxError):
            SecretBox(key)  # type: ignore[arg-type]
    with pytest.raises(SecretBoxError):
        SecretBox.from_encoded_key("!!!not base64!!!")


def test_repr_hides_key():
    assert "hidden" in repr(SecretBox(SecretBox.generate_key()))


def test_load_or_create(tmp_path):
    path = tmp_path / "nested" / "dir" / "secret.key"
    box = SecretBox.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    blob = box.encrypt(b"private key")
    again = SecretBox.load_or_create(path)
    assert again.decrypt(blob) == b"private key"
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]


def test_load_or_create_warns_about_loose_permissions(tmp_path, caplog):
    path = tmp_path / "secret.key"
    box = SecretBox.load_or_create(path)
    blob = box.encrypt(b"x")
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="mdmserver.pki.secretbox"):
        loose = SecretBox.load_or_create(path)
    assert loose.decrypt(blob) == b"x"
    assert "chmod 600" in caplog.text
    assert path.read_text().strip() not in caplog.text


def test_load_or_create_refuses_corrupt_key_file(tmp_path):
    path = tmp_path / "secret.key"
    path.write_text("too short")
    os.chmod(path, 0o600)
    with pytest.raises(SecretBoxError):
        SecretBox.load_or_create(path)
