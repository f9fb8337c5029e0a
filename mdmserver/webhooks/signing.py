"""Webhook secrets and signatures (pure: no Flask, no database).

A subscription's secret is ``whsec_`` + 32 random bytes (base64url); the receiver keeps the whole string.
Each POST carries ``X-Mdmserver-Timestamp: <unix seconds>`` and ``X-Mdmserver-Signature: sha256=<hex>``,
the HMAC-SHA256 keyed with the secret's UTF-8 bytes of ``"<timestamp>.<body>"``. At rest the secret is
sealed with the secret box, bound to its subscription's id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from mdmserver.pki.secretbox import SecretBox

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _context(subscription_id: int) -> bytes:
    return f"mdmserver.webhooks:{subscription_id}".encode()


def seal_secret(secret: str, subscription_id: int, box: SecretBox) -> bytes:
    return box.encrypt(secret.encode(), associated_data=_context(subscription_id))


def open_secret(sealed: bytes, subscription_id: int, box: SecretBox) -> str:
    return box.decrypt(bytes(sealed), associated_data=_context(subscription_id)).decode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Mdmserver-Signature`` value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"
