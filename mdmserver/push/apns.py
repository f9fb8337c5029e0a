"""Our own small APNs interface and its implementation over httpx's HTTP/2 client.

Why httpx[http2] and not aioapns (measured with ``bench/push_clients.py``, figures in docs and the
issue notes): aioapns hard-codes Apple's host names in protocol class attributes (pointing it at an
emulator or a different endpoint means subclassing its internals), keeps one dictionary entry per
successful push for the life of the connection (unbounded memory over millions of pushes), and
closes idle connections after 10 s. httpx takes a base URL and an ``ssl.SSLContext``, keeps nothing
per finished request, multiplexes up to 100 concurrent streams on one connection (httpcore's
limit), opens a new connection by itself after GOAWAY, and is widely maintained.

Pure of Flask and SQLAlchemy: the worker (``mdmserver.push.worker``) drives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import ssl
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from mdmserver.pki import x509 as px

__all__ = [
    "APNsClient",
    "HttpxAPNsClient",
    "PushIdentity",
    "PushMessage",
    "PushResult",
    "build_ssl_context",
]

log = logging.getLogger(__name__)

#: Answers that mean "this token will never work again" (until the device sends a new one).
TOKEN_INVALID_REASONS = frozenset({"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic"})


@dataclass(frozen=True, slots=True)
class PushMessage:
    token: str
    push_magic: str
    topic: str


@dataclass(frozen=True, slots=True)
class PushResult:
    """APNs' answer for one message. ``status`` 0 means no HTTP answer (connection error, timeout)."""

    token: str
    status: int
    apns_id: str | None
    reason: str | None
    retryable: bool
    timestamp: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def token_invalid(self) -> bool:
        return self.status == 410 or (self.status == 400 and self.reason in TOKEN_INVALID_REASONS)

    @property
    def certificate_problem(self) -> bool:
        """403 from APNs or a failed TLS handshake: retrying with this certificate is pointless."""
        return self.status == 403 or (self.status == 0 and self.reason == "TLSError")


@dataclass(frozen=True)
class PushIdentity:
    """The push certificate and its (clear) private key for one topic; lives in memory only."""

    topic: str
    cert_pem: str
    key_pem: str
    fingerprint: str


class APNsClient(Protocol):
    async def send_batch(self, messages: Sequence[PushMessage]) -> list[PushResult]: ...

    async def aclose(self) -> None: ...


def build_ssl_context(identity: PushIdentity, ca_file: str | None = None) -> ssl.SSLContext:
    """A TLS client context presenting the push certificate, trusting the system roots plus ``ca_file``.

    Python's ssl module only loads keys from files, so the key is written re-encrypted under a
    one-time random password to a private temporary file that is removed right after loading.
    """
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    ctx.set_alpn_protocols(["h2"])
    password = secrets.token_urlsafe(24).encode()
    key = px.key_from_pem(identity.key_pem)
    with tempfile.TemporaryDirectory(prefix="mdmserver-apns-") as folder:
        path = Path(folder) / "identity.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(identity.cert_pem)
            handle.write(px.key_to_pem(key, password=password))
        ctx.load_cert_chain(path, password=password)
    return ctx


def _classify(status: int) -> bool:
    """Whether an HTTP status is worth retrying later."""
    return status == 429 or status >= 500


class HttpxAPNsClient:
    """One persistent HTTP/2 connection per topic, many streams in flight.

    ``max_in_flight`` defaults to 100, httpcore's per-connection stream limit: more would only wait
    in httpcore's pool queue, whose bookkeeping grows with its length.

    ``identities(topic)`` returns the current :class:`PushIdentity` for a topic (or None). It is
    asked on every batch, so importing a new push certificate takes effect at the next batch: a
    changed fingerprint closes the old connection and opens one with the new certificate.
    """

    def __init__(
        self,
        base_url: str,
        identities: Callable[[str], PushIdentity | None],
        *,
        ca_file: str | None = None,
        expiration_seconds: int = 7 * 24 * 3600,
        timeout: float = 15.0,
        max_in_flight: int = 100,
        connection_retries: int = 2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.identities = identities
        self.ca_file = ca_file
        self.expiration_seconds = expiration_seconds
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.connection_retries = connection_retries
        self._clients: dict[str, tuple[str, httpx.AsyncClient]] = {}
        self._closing: set[asyncio.Task] = set()

    def _retire(self, client: httpx.AsyncClient) -> None:
        """Close a replaced connection in the background (its in-flight streams finish first)."""
        task = asyncio.get_running_loop().create_task(client.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _client_for(self, topic: str) -> httpx.AsyncClient | None:
        identity = self.identities(topic)
        current = self._clients.get(topic)
        if identity is None:
            if current is not None:
                self._clients.pop(topic)
                self._retire(current[1])
            return None
        if current is not None and current[0] == identity.fingerprint:
            return current[1]
        if current is not None:
            log.info("push certificate for %s changed: reconnecting", topic)
            self._retire(current[1])
        client = httpx.AsyncClient(
            http2=True,
            verify=build_ssl_context(identity, self.ca_file),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=300),
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            base_url=self.base_url,
        )
        self._clients[topic] = (identity.fingerprint, client)
        return client

    async def send_batch(self, messages: Sequence[PushMessage]) -> list[PushResult]:
        if not messages:
            return []
        limit = asyncio.Semaphore(self.max_in_flight)
        expiration = str(int(time.time()) + self.expiration_seconds)
        clients: dict[str, httpx.AsyncClient | None] = {}
        for message in messages:
            if message.topic not in clients:
                clients[message.topic] = self._client_for(message.topic)

        async def one(message: PushMessage) -> PushResult:
            client = clients[message.topic]
            if client is None:
                return PushResult(message.token, 0, None, "NoCertificateForTopic", False)
            async with limit:
                return await self._send_one(client, message, expiration)

        return list(await asyncio.gather(*(one(m) for m in messages)))

    async def _send_one(
        self, client: httpx.AsyncClient, message: PushMessage, expiration: str
    ) -> PushResult:
        headers = {
            "apns-push-type": "mdm",
            "apns-topic": message.topic,
            "apns-priority": "10",
            "apns-expiration": expiration,
        }
        body = json.dumps({"mdm": message.push_magic}, separators=(",", ":")).encode()
        attempt = 0
        while True:
            try:
                response = await client.post(
                    f"/3/device/{message.token}", content=body, headers=headers
                )
                break
            except httpx.TimeoutException:
                return PushResult(message.token, 0, None, "Timeout", True)
            except (httpx.TransportError, ssl.SSLError, OSError) as exc:
                reason = _transport_reason(exc)
                # A stream cut by GOAWAY or a dropped connection: try again at once on a fresh
                # connection (a duplicate MDM push is harmless: the device just checks in). This can
                # send a push twice: once the service closes the connection after a GOAWAY, httpcore
                # raises the failed write on every stream still reading, even one whose 200 had
                # arrived, so delivery is at least once (tests/push/test_apns_client.py).
                if reason == "ConnectionError" and attempt < self.connection_retries:
                    attempt += 1
                    continue
                return PushResult(message.token, 0, None, reason, reason != "TLSError")
        apns_id = response.headers.get("apns-id")
        if response.status_code == 200:
            return PushResult(message.token, 200, apns_id, None, False)
        reason, timestamp = _parse_error(response.content)
        return PushResult(
            message.token, response.status_code, apns_id, reason, _classify(response.status_code), timestamp
        )

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for _, client in clients.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _transport_reason(exc: BaseException) -> str:
    """``TLSError`` when the TLS handshake failed (certificate trouble), else ``ConnectionError``."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, ssl.SSLError):
            return "TLSError"
        current = current.__cause__ or current.__context__
        seen += 1
    return "ConnectionError"


def _parse_error(content: bytes) -> tuple[str | None, int | None]:
    try:
        document = json.loads(content)
    except ValueError:
        return None, None
    if not isinstance(document, dict):
        return None, None
    reason = document.get("reason")
    timestamp = document.get("timestamp")
    return (
        reason if isinstance(reason, str) else None,
        timestamp if isinstance(timestamp, int) else None,
    )
