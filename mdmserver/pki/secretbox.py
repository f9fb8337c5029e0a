"""Encryption of secrets at rest (private keys, UnlockTokens, bootstrap tokens, push key).

AES-256-GCM rather than Fernet: it is an AEAD from the same `cryptography` package, hardware
accelerated, and stores raw bytes (Fernet base64-encodes and adds a timestamp we do not need, which
makes every blob a third larger). Each blob is ``version (1 byte) || nonce (12) || ciphertext+tag``;
nonces are random, which is safe for far more than the number of secrets a server will ever store
under one key (the birthday bound for 96-bit nonces is ~2^32 messages).

Pure module: no Flask, no SQLAlchemy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["SecretBox", "SecretBoxError"]

log = logging.getLogger(__name__)

_VERSION = b"\x01"
_NONCE_SIZE = 12
_KEY_SIZE = 32


class SecretBoxError(ValueError):
    """Decryption failed: wrong key, tampered or truncated data, or an unusable key."""


class SecretBox:
    """Authenticated symmetric encryption with one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != _KEY_SIZE:
            raise SecretBoxError(f"the secret box key must be {_KEY_SIZE} bytes")
        self._aead = AESGCM(bytes(key))
        self._mac_key = hmac.new(bytes(key), b"mdmserver.secretbox.digest", hashlib.sha256).digest()

    def __repr__(self) -> str:  # never show the key
        return "SecretBox(<key hidden>)"

    @staticmethod
    def generate_key() -> bytes:
        return secrets.token_bytes(_KEY_SIZE)

    def encrypt(self, plaintext: bytes, *, associated_data: bytes | None = None) -> bytes:
        nonce = secrets.token_bytes(_NONCE_SIZE)
        return _VERSION + nonce + self._aead.encrypt(nonce, bytes(plaintext), associated_data)

    def digest(self, data: bytes, *, context: bytes) -> str:
        """Keyed SHA-256 (HMAC, hex) of ``data``: addresses a secret without revealing it, where a
        plain hash of a low-entropy value (a 6-digit PIN) could be reversed by trying them all."""
        return hmac.new(self._mac_key, context + b"\x00" + bytes(data), hashlib.sha256).hexdigest()

    def decrypt(self, blob: bytes, *, associated_data: bytes | None = None) -> bytes:
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise SecretBoxError("encrypted secret must be bytes")
        blob = bytes(blob)
        if len(blob) < 1 + _NONCE_SIZE + 16 or blob[:1] != _VERSION:
            raise SecretBoxError("not an encrypted secret (or unknown format)")
        nonce = blob[1 : 1 + _NONCE_SIZE]
        try:
            return self._aead.decrypt(nonce, blob[1 + _NONCE_SIZE :], associated_data)
        except InvalidTag as exc:
            raise SecretBoxError("cannot decrypt secret: wrong key or tampered data") from exc

    @classmethod
    def from_encoded_key(cls, text: str | bytes) -> SecretBox:
        """A box from a base64 (standard or URL-safe) encoded key, as kept in the key file or config."""
        raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
        raw = raw.strip()
        try:
            key = base64.urlsafe_b64decode(raw.replace(b"+", b"-").replace(b"/", b"_"))
        except (binascii.Error, ValueError) as exc:
            raise SecretBoxError("the secret box key is not valid base64") from exc
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path) -> SecretBox:
        """The box whose key is stored (base64) at ``path``; the file is created with mode 0600.

        An existing key file readable by group or others is used anyway (refusing would lock the
        server out of its own secrets) but logged as a warning so the operator fixes it.
        """
        path = Path(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            encoded = base64.urlsafe_b64encode(cls.generate_key()) + b"\n"
            # Write a complete temporary file, then hard-link it into place: concurrent starters
            # never see a half-written key, and exactly one key wins.
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(encoded)
                    handle.flush()
                    os.fsync(handle.fileno())
                try:
                    os.link(tmp, path)
                    log.info("created secret key file %s", path)
                except FileExistsError:
                    pass  # another process created it first: use theirs
            finally:
                tmp.unlink(missing_ok=True)
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "secret key file %s is accessible by group or others (mode %o); run chmod 600 on it",
                path,
                stat.S_IMODE(mode),
            )
        return cls.from_encoded_key(path.read_bytes())
