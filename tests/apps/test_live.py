"""Uploads and downloads over a real HTTP socket: a chunked upload (no Content-Length) is streamed and
cut off at the package limit; a device-side client fetches the manifest and the package by range."""

from __future__ import annotations

import hashlib
import plistlib
import threading
import time
from collections.abc import Iterator

import httpx

from tests.apps.builders import chunk_sha256s, info_plist, make_ipa

UPLOAD = "/api/v1/apps/packages"


def _chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_a_chunked_upload_past_the_limit_is_413(live_server, monkeypatch):
    monkeypatch.setitem(live_server.app.config, "MAX_APP_PACKAGE_SIZE", 256 * 1024)
    data = make_ipa(info_plist("com.example.live.big"), filler=b"b" * 1024 * 1024)
    with httpx.Client(base_url=live_server.url, headers=live_server.auth("write"), timeout=30) as client:
        response = client.post(f"{UPLOAD}?filename=big.ipa", content=_chunks(data),
                               headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["meta"]["request_id"] == response.headers["X-Request-ID"]
    assert body["errors"][0]["status"] == "413"


def test_a_chunked_upload_is_stored_and_served_to_a_device(live_server):
    data = make_ipa(info_plist("com.example.live", "7.0", "700"), filler=bytes(range(256)) * 4096)
    sha256 = hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=live_server.url, headers=live_server.auth("write"), timeout=30) as client:
        response = client.post(f"{UPLOAD}?filename=Live.ipa", content=_chunks(data),
                               headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 201, response.text
        attributes = response.json()["data"]["attributes"]
    assert attributes["package_sha256"] == sha256 and attributes["package_size"] == len(data)
    with httpx.Client(timeout=30) as device:  # no admin token: the URL is the capability
        manifest = plistlib.loads(device.get(attributes["manifest_url"]).content)
        asset = manifest["items"][0]["assets"][0]
        assert asset["sha256s"] == chunk_sha256s(data)
        assert asset["url"] == attributes["package_url"]
        assert asset["url"].startswith(live_server.url + "/apps/")
        whole = device.get(asset["url"])
        assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == sha256
        tail = device.get(asset["url"], headers={"Range": f"bytes={len(data) - 100}-"})
        assert tail.status_code == 206 and tail.content == data[-100:]


def test_a_slow_upload_holds_no_database_lock(live_server):
    """While a package streams in, other admin writes go through (on SQLite the token check's
    transaction would otherwise hold the write lock for the whole upload)."""
    data = make_ipa(info_plist("com.example.live.slow"), filler=b"s" * 300_000)
    first_sent, release = threading.Event(), threading.Event()
    outcome: dict[str, int] = {}

    def body() -> Iterator[bytes]:
        chunks = list(_chunks(data))
        yield chunks[0]
        first_sent.set()
        release.wait(timeout=30)
        yield from chunks[1:]

    def slow_upload() -> None:
        with httpx.Client(base_url=live_server.url, headers=live_server.auth("write"), timeout=60) as client:
            outcome["upload"] = client.post(f"{UPLOAD}?filename=slow.ipa", content=body(),
                                            headers={"Content-Type": "application/octet-stream"}).status_code

    uploader = threading.Thread(target=slow_upload)
    uploader.start()
    try:
        assert first_sent.wait(timeout=10)
        time.sleep(0.5)  # the server has read the first chunk and is waiting for the rest
        started = time.monotonic()
        with httpx.Client(base_url=live_server.url, headers=live_server.auth("write"), timeout=30) as client:
            other = client.post("/api/v1/apps", json={"data": {"type": "apps", "attributes": {
                "platform": "ios", "name": "Meanwhile", "itunes_store_id": 5550001}}},
                headers={"Content-Type": "application/vnd.api+json"})
        assert other.status_code == 201, other.text
        assert time.monotonic() - started < 5
    finally:
        release.set()
        uploader.join(timeout=60)
    assert outcome["upload"] == 201
