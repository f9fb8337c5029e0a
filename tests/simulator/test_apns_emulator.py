"""The APNs emulator speaks the provider API over HTTP/2 + TLS with a required client certificate."""

from __future__ import annotations

import json
import ssl
import threading
import time

import httpx
import pytest

from mdmserver.pki import x509 as px
from mdmserver.push.apns import PushIdentity, build_ssl_context
from mdmserver.simulator.apns_emulator import APNsEmulator, Push, topic_from_certificate

TOPIC = "com.apple.mgmt.External.11111111-2222-3333-4444-555555555555"
TOKEN = "ab" * 32


@pytest.fixture(scope="module")
def emulator():
    with APNsEmulator() as emu:
        yield emu


@pytest.fixture(autouse=True)
def _reset(emulator):
    emulator.reset()
    yield


@pytest.fixture(scope="module")
def identity(emulator) -> PushIdentity:
    cert_pem, key_pem = emulator.issue_push_certificate(TOPIC)
    return PushIdentity(TOPIC, cert_pem, key_pem, px.fingerprint_sha256(px.cert_from_pem(cert_pem)))


def _client(emulator, identity, **kw) -> httpx.Client:
    return httpx.Client(http2=True, verify=build_ssl_context(identity, str(emulator.ca_file)), base_url=emulator.url, **kw)


def _post(client, token=TOKEN, *, topic=TOPIC, body=None, **headers):
    h = {"apns-topic": topic, "apns-push-type": "mdm", "apns-priority": "10", "apns-expiration": "0"}
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    h = {k: v for k, v in h.items() if v is not None}
    content = json.dumps({"mdm": "magic-1"}).encode() if body is None else body
    return client.post(f"/3/device/{token}", content=content, headers=h)


def test_push_is_answered_and_recorded(emulator, identity):
    with _client(emulator, identity) as client:
        response = _post(client, apns_id="8F4C3B2A-0000-4000-8000-000000000001")
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200
    assert response.headers["apns-id"] == "8F4C3B2A-0000-4000-8000-000000000001"
    push = emulator.pushes[-1]
    assert (push.token, push.topic, push.push_magic, push.push_type, push.priority) == (
        TOKEN, TOPIC, "magic-1", "mdm", "10"
    )
    assert emulator.counts[200] == 1


def test_generated_apns_id_when_none_sent(emulator, identity):
    with _client(emulator, identity) as client:
        response = _post(client)
    assert len(response.headers["apns-id"]) == 36


@pytest.mark.parametrize(
    "kwargs,status,reason",
    [
        ({"token": "nothex"}, 400, "BadDeviceToken"),
        ({"token": "ab" * 31}, 400, "BadDeviceToken"),
        ({"topic": "com.apple.mgmt.other"}, 400, "TopicDisallowed"),
        ({"apns_push_type": "alert"}, 400, "InvalidPushType"),
        ({"apns_priority": "7"}, 400, "BadPriority"),
        ({"apns_expiration": "soon"}, 400, "BadExpirationDate"),
        ({"apns_id": "not-a-uuid"}, 400, "BadMessageId"),
        ({"body": b""}, 400, "PayloadEmpty"),
        ({"body": b"{"}, 400, "BadPayload"),
        ({"body": b'{"aps": {}}'}, 400, "BadPayload"),
        ({"body": b'{"mdm": "' + b"x" * 5000 + b'"}'}, 413, "PayloadTooLarge"),
    ],
)
def test_malformed_requests(emulator, identity, kwargs, status, reason):
    with _client(emulator, identity) as client:
        response = _post(client, **kwargs)
    assert response.status_code == status
    assert response.json()["reason"] == reason


def test_wrong_method_and_path(emulator, identity):
    with _client(emulator, identity) as client:
        assert client.get(f"/3/device/{TOKEN}").status_code == 405
        assert client.post("/4/device/x", content=b"{}").json()["reason"] == "BadPath"


def test_switches(emulator, identity):
    other = "cd" * 32
    emulator.unregister(TOKEN)
    emulator.set_token_answer(other, 400, "BadDeviceToken")
    with _client(emulator, identity) as client:
        gone = _post(client)
        assert gone.status_code == 410
        assert gone.json()["reason"] == "Unregistered" and isinstance(gone.json()["timestamp"], int)
        assert _post(client, other).json()["reason"] == "BadDeviceToken"
        fresh = "ef" * 32
        emulator.fail_next(2, 429)
        assert _post(client, fresh).status_code == 429
        assert _post(client, fresh).status_code == 429
        assert _post(client, fresh).status_code == 200
        emulator.set_mode(503)
        assert _post(client, fresh).json()["reason"] == "ServiceUnavailable"
        emulator.set_mode(403, "BadCertificate")
        assert _post(client, fresh).status_code == 403
        emulator.set_mode(None)
        assert _post(client, fresh).status_code == 200
    assert emulator.tokens(200) == [fresh, fresh]
    assert emulator.counts[429] == 2


def test_slow_answers(emulator, identity):
    emulator.delay = 0.3
    with _client(emulator, identity, timeout=0.1) as client:
        with pytest.raises(httpx.TimeoutException):
            _post(client)
    with _client(emulator, identity, timeout=5) as client:
        started = time.monotonic()
        assert _post(client).status_code == 200
        assert time.monotonic() - started >= 0.3


def test_goaway_after_n_streams(emulator, identity):
    emulator.goaway_after = 2
    before = emulator.connections_made
    with _client(emulator, identity) as client:
        for _ in range(5):
            try:
                _post(client)
            except httpx.TransportError:
                pass
    assert emulator.connections_made - before >= 2


def test_client_certificate_is_required(emulator):
    ctx = ssl.create_default_context(cafile=str(emulator.ca_file))
    with httpx.Client(http2=True, verify=ctx, base_url=emulator.url) as client:
        with pytest.raises(httpx.TransportError):
            _post(client)


def test_certificate_from_another_ca_is_refused(emulator):
    ca_cert, ca_key = px.create_ca("foreign")
    key = px.generate_private_key("ec")
    cert = px.issue_certificate(ca_cert, ca_key, common_name="x", public_key=key.public_key())
    foreign = PushIdentity(TOPIC, px.cert_to_pem(cert), px.key_to_pem(key), "f")
    with _client(emulator, foreign) as client:
        with pytest.raises(httpx.TransportError):
            _post(client)


def test_on_push_callback_runs_off_the_event_loop():
    seen: list[Push] = []
    done = threading.Event()

    def callback(push: Push) -> None:
        seen.append(push)
        done.set()

    with APNsEmulator(on_push=callback) as emu:
        cert_pem, key_pem = emu.issue_push_certificate(TOPIC)
        ident = PushIdentity(TOPIC, cert_pem, key_pem, "x")
        with _client(emu, ident) as client:
            assert _post(client).status_code == 200
        assert done.wait(5)
    assert seen[0].push_magic == "magic-1"


def test_issued_push_certificate_carries_topic(emulator):
    cert_pem, key_pem = emulator.issue_push_certificate(TOPIC)
    cert = px.cert_from_pem(cert_pem)
    assert topic_from_certificate(cert) == TOPIC
    assert px.public_key_pem(px.key_from_pem(key_pem)) == px.public_key_pem(cert)


def test_cli_help(capsys):
    from mdmserver.simulator.apns_emulator import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--issue-push-cert" in capsys.readouterr().out
