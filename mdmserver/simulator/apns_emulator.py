"""A local APNs provider-API emulator: HTTP/2 over TLS with a required client certificate.

It answers ``POST /3/device/<token>`` the way Apple's service does for MDM pushes (status codes,
``apns-id`` header, ``{"reason": …}`` bodies, ``timestamp`` on 410), records what it received, and
can be told to misbehave: per-token answers (410 Unregistered, 400 BadDeviceToken…), the next N
answers or every answer (429, 503, 403…), slow answers, and GOAWAY after N streams.

Use it from tests (runs in a background thread, port 0 picks a free port)::

    with APNsEmulator() as emu:
        cert_pem, key_pem = emu.issue_push_certificate("com.apple.mgmt.External.test")
        ...  # point MDMSERVER_APNS_URL at emu.url and MDMSERVER_APNS_CA_FILE at emu.ca_file

or from the command line: ``python -m mdmserver.simulator.apns_emulator --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import ipaddress
import json
import logging
import re
import signal
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from mdmserver.pki import x509 as px

__all__ = ["APNsEmulator", "Push", "topic_from_certificate"]

log = logging.getLogger(__name__)

_TOKEN_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_MAX_PAYLOAD = 4096
_REASONS = {
    400: "BadRequest",
    403: "BadCertificate",
    404: "BadPath",
    405: "MethodNotAllowed",
    410: "Unregistered",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


def topic_from_certificate(cert: x509.Certificate) -> str | None:
    """The push topic: the subject's UID attribute (``com.apple.mgmt…`` for MDM push certificates)."""
    values = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    if not values:
        return None
    value = values[0].value
    return value.decode() if isinstance(value, bytes) else value


@dataclass(slots=True)
class Push:
    """One request as the emulator received and answered it."""

    token: str
    topic: str | None
    push_magic: str | None
    push_type: str | None
    priority: str | None
    expiration: str | None
    apns_id: str
    status: int
    reason: str | None
    received_at: float


@dataclass
class _Stream:
    headers: dict[bytes, bytes]
    body: bytearray = field(default_factory=bytearray)


class APNsEmulator:
    """The emulator. Thread-safe switches; start()/stop() or use it as a context manager."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        client_ca_pems: list[str] | None = None,
        max_concurrent_streams: int = 1000,
        record_limit: int | None = 100_000,
        on_push: Callable[[Push], None] | None = None,
        max_tls_version: ssl.TLSVersion | None = None,
    ) -> None:
        self.host = host
        self.max_tls_version = max_tls_version
        self.port = port
        self.max_concurrent_streams = max_concurrent_streams
        self.on_push = on_push
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self.pushes: collections.deque[Push] = collections.deque(maxlen=record_limit)
        self.counts: collections.Counter[int] = collections.Counter()
        self.total = 0
        self.received = 0  # requests read completely, answered or not yet
        self.connections_made = 0
        self.delay = 0.0
        self.goaway_after: int | None = None
        self._token_answers: dict[str, tuple[int, str]] = {}
        self._next_answers: collections.deque[tuple[int, str]] = collections.deque()
        self._mode: tuple[int, str] | None = None
        # Material: a CA that signs both the server certificate and (by default) push certificates.
        self._ca_cert, self._ca_key = px.create_ca("APNs emulator CA", key=px.generate_private_key("ec"))
        self._client_ca_pems = list(client_ca_pems or []) + [px.cert_to_pem(self._ca_cert)]
        self._tmp = tempfile.TemporaryDirectory(prefix="apns-emulator-")
        self.ca_file = Path(self._tmp.name) / "emulator-ca.pem"
        self.ca_file.write_text(px.cert_to_pem(self._ca_cert))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._protocols: set[_APNsServerProtocol] = set()
        self._callbacks: ThreadPoolExecutor | None = None

    # --- material ------------------------------------------------------------------------------

    @property
    def ca_pem(self) -> str:
        """PEM of the CA that signed the server certificate (for MDMSERVER_APNS_CA_FILE)."""
        return px.cert_to_pem(self._ca_cert)

    def issue_push_certificate(
        self, topic: str, *, days: int = 365, kind: str = "rsa"
    ) -> tuple[str, str]:
        """(certificate PEM, key PEM) of an Apple-style MDM push certificate for ``topic``."""
        key = px.generate_private_key(kind)
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.USER_ID, topic),
                x509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{uuid.uuid4()}"),
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        return px.cert_to_pem(cert), px.key_to_pem(key)

    def _server_context(self) -> ssl.SSLContext:
        key = px.generate_private_key("ec")
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("::1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        folder = Path(self._tmp.name)
        (folder / "server.pem").write_text(px.cert_to_pem(cert) + px.key_to_pem(key))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.max_tls_version is not None:
            ctx.maximum_version = self.max_tls_version
        ctx.load_cert_chain(folder / "server.pem")
        (folder / "server.pem").unlink()
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata="\n".join(self._client_ca_pems))
        ctx.set_alpn_protocols(["h2"])
        return ctx

    # --- switches ------------------------------------------------------------------------------

    def set_token_answer(self, token: str, status: int, reason: str | None = None) -> None:
        """Answer every push to ``token`` with ``status`` (e.g. 410, or 400 BadDeviceToken)."""
        with self._lock:
            self._token_answers[token.lower()] = (status, reason or _REASONS.get(status, "Error"))

    def unregister(self, token: str) -> None:
        self.set_token_answer(token, 410, "Unregistered")

    def fail_next(self, count: int, status: int, reason: str | None = None) -> None:
        """The next ``count`` well-formed pushes (any token) get ``status``."""
        with self._lock:
            for _ in range(count):
                self._next_answers.append((status, reason or _REASONS.get(status, "Error")))

    def set_mode(self, status: int | None, reason: str | None = None) -> None:
        """Answer every push with ``status`` until ``set_mode(None)`` (e.g. 403 BadCertificate)."""
        with self._lock:
            self._mode = None if status is None else (status, reason or _REASONS.get(status, "Error"))

    def reset(self) -> None:
        """Clear switches and records."""
        with self._lock:
            self._token_answers.clear()
            self._next_answers.clear()
            self._mode = None
            self.delay = 0.0
            self.goaway_after = None
            self.pushes.clear()
            self.counts.clear()
            self.total = 0
            self.received = 0

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` pushes were answered in total (True) or timeout (False)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while self.total < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._arrived.wait(remaining)
        return True

    def tokens(self, status: int | None = 200) -> list[str]:
        """Tokens of the recorded pushes with the given answer status (None: all)."""
        with self._lock:
            return [p.token for p in self.pushes if status is None or p.status == status]

    # --- request handling (event-loop thread) --------------------------------------------------

    def _decide(self, token: str, topic_ok: bool) -> tuple[int, str | None]:
        with self._lock:
            if self._mode is not None:
                return self._mode
            if not topic_ok:
                return 400, "TopicDisallowed"
            answer = self._token_answers.get(token.lower())
            if answer is not None:
                return answer
            if self._next_answers:
                return self._next_answers.popleft()
        return 200, None

    def _record(self, push: Push) -> None:
        with self._arrived:
            self.pushes.append(push)
            self.counts[push.status] += 1
            self.total += 1
            self._arrived.notify_all()
        if self.on_push is not None and push.status == 200 and self._callbacks is not None:
            self._callbacks.submit(self._safe_callback, push)

    def _safe_callback(self, push: Push) -> None:
        try:
            self.on_push(push)  # type: ignore[misc]
        except Exception:  # noqa: BLE001 — a failing test callback must not stop the emulator
            log.exception("APNs emulator on_push callback failed")

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def start(self) -> APNsEmulator:
        ready = threading.Event()
        errors: list[BaseException] = []
        ctx = self._server_context()
        self._callbacks = ThreadPoolExecutor(max_workers=4, thread_name_prefix="apns-emu-callback")

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(
                        lambda: _APNsServerProtocol(self), self.host, self.port, ssl=ctx
                    )
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 — reported to the starting thread
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="apns-emulator", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None or self._thread is None:
            return

        async def shutdown() -> None:
            server.close()
            for proto in list(self._protocols):
                proto.abort()
            await server.wait_closed()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        self._thread.join(timeout=10)
        self._thread = None
        self._server = None
        self._loop = None
        if self._callbacks is not None:
            self._callbacks.shutdown(wait=True)
            self._callbacks = None

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> APNsEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _APNsServerProtocol(asyncio.Protocol):
    def __init__(self, emulator: APNsEmulator) -> None:
        self.emu = emulator
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.streams: dict[int, _Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.topic: str | None = None
        self.answered = 0
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.emu._protocols.add(self)
        with self.emu._lock:
            self.emu.connections_made += 1
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if der:
            self.topic = topic_from_certificate(x509.load_der_x509_certificate(der))
        self.conn.initiate_connection()
        self.conn.update_settings(
            {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.emu.max_concurrent_streams}
        )
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.emu._protocols.discard(self)
        self.transport = None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            data = self.conn.data_to_send()
            if data:
                self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.streams[event.stream_id] = _Stream(headers=dict(event.headers))
            elif isinstance(event, h2.events.DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None and len(stream.body) <= _MAX_PAYLOAD:
                    stream.body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None:
                    self._handle(event.stream_id, stream)
            elif isinstance(event, h2.events.StreamReset):
                self.streams.pop(event.stream_id, None)
            elif isinstance(event, h2.events.ConnectionTerminated):
                if self.transport is not None:
                    self.transport.close()
        self._flush()

    def _handle(self, stream_id: int, stream: _Stream) -> None:
        with self.emu._lock:
            self.emu.received += 1
        h = stream.headers
        apns_id = h.get(b"apns-id", b"").decode("latin-1") or str(uuid.uuid4()).upper()
        path = h.get(b":path", b"").decode("latin-1")
        token = path.removeprefix("/3/device/") if path.startswith("/3/device/") else ""
        status, reason = self._validate(h, path, token, bytes(stream.body))
        push_magic = None
        if status == 200:
            try:
                push_magic = json.loads(stream.body)["mdm"]
            except (ValueError, KeyError, TypeError):
                push_magic = None
            topic = h.get(b"apns-topic", b"").decode("latin-1")
            status, reason = self.emu._decide(token, topic_ok=(topic == self.topic))
        push = Push(
            token=token,
            topic=h.get(b"apns-topic", b"").decode("latin-1") or None,
            push_magic=push_magic,
            push_type=h.get(b"apns-push-type", b"").decode("latin-1") or None,
            priority=h.get(b"apns-priority", b"").decode("latin-1") or None,
            expiration=h.get(b"apns-expiration", b"").decode("latin-1") or None,
            apns_id=apns_id,
            status=status,
            reason=reason,
            received_at=time.time(),
        )
        delay = self.emu.delay
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._respond, stream_id, push)
        else:
            self._respond(stream_id, push)

    def _validate(
        self, h: dict[bytes, bytes], path: str, token: str, body: bytes
    ) -> tuple[int, str | None]:
        if h.get(b":method") != b"POST":
            return 405, "MethodNotAllowed"
        if not path.startswith("/3/device/"):
            return 404, "BadPath"
        if not _TOKEN_RE.match(token):
            return 400, "BadDeviceToken"
        if not h.get(b"apns-topic"):
            return 400, "MissingTopic"
        if h.get(b"apns-push-type") not in (b"mdm",):
            return 400, "InvalidPushType"
        if h.get(b"apns-priority", b"10") not in (b"5", b"10"):
            return 400, "BadPriority"
        expiration = h.get(b"apns-expiration")
        if expiration is not None and not expiration.isdigit():
            return 400, "BadExpirationDate"
        apns_id = h.get(b"apns-id")
        if apns_id is not None:
            try:
                uuid.UUID(apns_id.decode("latin-1"))
            except ValueError:
                return 400, "BadMessageId"
        if not body:
            return 400, "PayloadEmpty"
        if len(body) > _MAX_PAYLOAD:
            return 413, "PayloadTooLarge"
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, "BadPayload"
        if not isinstance(payload, dict) or not isinstance(payload.get("mdm"), str):
            return 400, "BadPayload"
        return 200, None

    def _respond(self, stream_id: int, push: Push) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        headers = [(b":status", str(push.status).encode()), (b"apns-id", push.apns_id.encode())]
        body = b""
        if push.status != 200:
            document: dict[str, object] = {"reason": push.reason}
            if push.status == 410:
                document["timestamp"] = int(push.received_at * 1000)
            body = json.dumps(document).encode()
            headers += [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ]
        try:
            self.conn.send_headers(stream_id, headers, end_stream=not body)
            if body:
                self.conn.send_data(stream_id, body, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self.emu._record(push)
        self.answered += 1
        goaway_after = self.emu.goaway_after
        if goaway_after is not None and self.answered >= goaway_after and not self.closing:
            self.closing = True
            self.conn.close_connection(last_stream_id=stream_id)
            self._flush()
            transport = self.transport
            asyncio.get_running_loop().call_later(0.05, transport.close)
            return
        self._flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local APNs provider-API emulator (HTTP/2, TLS).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2197)
    parser.add_argument("--client-ca", type=Path, action="append", default=[],
                        help="also accept push certificates issued by this CA (PEM); repeatable")
    parser.add_argument("--issue-push-cert", metavar="TOPIC",
                        help="write a push certificate for TOPIC signed by the emulator's CA")
    parser.add_argument("--out", type=Path, default=Path("."),
                        help="folder for emulator-ca.pem and the issued push certificate")
    parser.add_argument("--delay", type=float, default=0.0, help="answer every push after this many seconds")
    parser.add_argument("--mode", type=int, help="answer every push with this HTTP status (e.g. 503)")
    parser.add_argument("--quiet", action="store_true", help="do not log each push (benchmarks)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def announce(push: Push) -> None:
        log.info("push %s topic=%s magic=%s", push.token, push.topic, push.push_magic)

    emulator = APNsEmulator(
        args.host, args.port,
        client_ca_pems=[p.read_text() for p in args.client_ca],
        on_push=None if args.quiet else announce,
    )
    emulator.delay = args.delay
    if args.mode:
        emulator.set_mode(args.mode)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "emulator-ca.pem").write_text(emulator.ca_pem)
    if args.issue_push_cert:
        cert_pem, key_pem = emulator.issue_push_certificate(args.issue_push_cert)
        (args.out / "push-cert.pem").write_text(cert_pem)
        key_path = args.out / "push-key.pem"
        key_path.write_text(key_pem)
        key_path.chmod(0o600)
    emulator.start()
    print(f"APNs emulator listening on {emulator.url}", flush=True)
    print(
        f"MDMSERVER_APNS_URL={emulator.url} "
        f"MDMSERVER_APNS_CA_FILE={(args.out / 'emulator-ca.pem').resolve()}",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
