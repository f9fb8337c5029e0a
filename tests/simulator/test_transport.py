"""The simulator's HTTP transport against a server that closes kept-alive connections under it.

gunicorn closes a connection idle past its keep-alive timeout; a request that goes out on it at that
moment gets no answer. A device sends it again on a new connection; a failure on a new connection is
a real failure and is not resent.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from mdmserver.simulator.device import HttpxTransport
from mdmserver.simulator.load import Stats, TimedTransport


def _read_request(conn: socket.socket) -> bytes | None:
    """One HTTP/1.1 request (headers and a Content-Length body), or None when the peer closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return head


@contextmanager
def _server(*answers: int) -> Iterator[dict]:
    """The n-th connection gets ``answers[n]`` answers (200, kept alive; later connections as many as
    the last); the request after them is read whole and the connection closed without a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen = {"connections": 0, "requests": 0, "url": f"http://127.0.0.1:{listener.getsockname()[1]}"}

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            allowed = answers[min(seen["connections"], len(answers) - 1)]
            seen["connections"] += 1
            with conn:
                for answered in range(allowed + 1):
                    if _read_request(conn) is None:
                        break
                    seen["requests"] += 1
                    if answered == allowed:
                        break  # closed under the client: no answer
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        listener.close()
        thread.join(5)


def _call(transport: HttpxTransport, limited: bool) -> tuple[int, bytes]:
    if limited:
        status, _headers, body = transport.request_limited("PUT", "/mdm/connect", content=b"x", max_bytes=100)
    else:
        status, _headers, body = transport.request("PUT", "/mdm/connect", content=b"x")
    return status, body


@pytest.mark.parametrize("limited", [False, True], ids=["request", "request_limited"])
def test_a_request_on_a_connection_the_server_closed_is_sent_again_on_a_new_one(limited):
    with _server(1) as seen:
        stats = Stats()
        transport = TimedTransport(HttpxTransport(seen["url"], timeout=5), stats)
        inner = transport.inner
        try:
            assert _call(inner, limited) == (200, b"ok")
            # the second request goes out on the kept-alive connection, which the server closes unanswered
            assert _call(inner, limited) == (200, b"ok")
        finally:
            inner.close()
    assert seen["connections"] == 2
    assert seen["requests"] == 3
    assert stats.reconnects == 1
    assert stats.summary(1.0)["reconnects"] == 1


def test_a_new_connection_closed_unanswered_is_an_error_not_a_resend():
    with _server(0) as seen:
        stats = Stats()
        transport = TimedTransport(HttpxTransport(seen["url"], timeout=5), stats)
        try:
            with pytest.raises(httpx.RemoteProtocolError):
                transport.inner.request("PUT", "/mdm/connect", content=b"x")
        finally:
            transport.inner.close()
    assert seen["connections"] == 1
    assert stats.reconnects == 0


def test_a_resend_that_fails_again_is_an_error():
    """The kept-alive connection is closed under the request, and so is the new one: one resend, then
    the failure."""
    with _server(1, 0) as seen:
        transport = HttpxTransport(seen["url"], timeout=5)
        resent = []
        transport.on_reconnect = lambda: resent.append(1)
        try:
            assert transport.request("PUT", "/mdm/connect", content=b"x")[0] == 200
            with pytest.raises(httpx.RemoteProtocolError):
                transport.request("PUT", "/mdm/connect", content=b"x")
        finally:
            transport.close()
    assert len(resent) == 1
    assert seen["connections"] == 2
    assert seen["requests"] == 3
