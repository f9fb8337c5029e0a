"""The httpx HTTP/2 APNs client against the emulator: headers, every answer class, reconnects."""

from __future__ import annotations

import asyncio
import collections
import time

import pytest

from mdmserver.pki import x509 as px
from mdmserver.push.apns import HttpxAPNsClient, PushIdentity, PushMessage
from mdmserver.simulator.apns_emulator import APNsEmulator

TOPIC = "com.apple.mgmt.External.aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def token(i: int) -> str:
    return f"{i:064x}"


@pytest.fixture(scope="module")
def emulator():
    with APNsEmulator() as emu:
        yield emu


@pytest.fixture(autouse=True)
def _reset(emulator):
    emulator.reset()


def make_identity(emulator, topic=TOPIC) -> PushIdentity:
    cert_pem, key_pem = emulator.issue_push_certificate(topic)
    return PushIdentity(topic, cert_pem, key_pem, px.fingerprint_sha256(px.cert_from_pem(cert_pem)))


@pytest.fixture(scope="module")
def identity(emulator):
    return make_identity(emulator)


def send(emulator, identities, messages, **kw):
    async def run():
        client = HttpxAPNsClient(
            emulator.url, lambda topic: identities.get(topic), ca_file=str(emulator.ca_file), **kw
        )
        try:
            return await client.send_batch(messages)
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_batch_delivered_with_mdm_headers(emulator, identity):
    messages = [PushMessage(token(i), f"magic-{i}", TOPIC) for i in range(250)]
    before = emulator.connections_made
    results = send(emulator, {TOPIC: identity}, messages)
    assert [r.token for r in results] == [m.token for m in messages]
    assert all(r.ok and r.apns_id and not r.retryable for r in results)
    assert emulator.connections_made - before == 1  # one connection, multiplexed
    push = emulator.pushes[0]
    assert push.push_type == "mdm" and push.priority == "10" and push.topic == TOPIC
    expiration = int(push.expiration)
    assert abs(expiration - (time.time() + 7 * 24 * 3600)) < 60
    assert {p.push_magic for p in emulator.pushes} == {f"magic-{i}" for i in range(250)}


def test_expiration_configurable(emulator, identity):
    send(emulator, {TOPIC: identity}, [PushMessage(token(1), "m", TOPIC)], expiration_seconds=3600)
    assert abs(int(emulator.pushes[0].expiration) - (time.time() + 3600)) < 60


def test_answers_are_classified(emulator, identity):
    emulator.unregister(token(1))
    emulator.set_token_answer(token(2), 400, "BadDeviceToken")
    emulator.set_token_answer(token(3), 429, "TooManyRequests")
    emulator.set_token_answer(token(4), 503, "ServiceUnavailable")
    emulator.set_token_answer(token(5), 500, "InternalServerError")
    emulator.set_token_answer(token(6), 403, "BadCertificate")
    results = send(emulator, {TOPIC: identity}, [PushMessage(token(i), "m", TOPIC) for i in range(7)])
    by_token = {r.token: r for r in results}
    assert by_token[token(0)].ok
    gone = by_token[token(1)]
    assert gone.status == 410 and gone.token_invalid and not gone.retryable and gone.timestamp
    bad = by_token[token(2)]
    assert bad.status == 400 and bad.reason == "BadDeviceToken" and bad.token_invalid
    for i in (3, 4, 5):
        assert by_token[token(i)].retryable and not by_token[token(i)].token_invalid
    cert = by_token[token(6)]
    assert cert.certificate_problem and not cert.retryable


def test_unknown_topic_is_not_sent(emulator, identity):
    results = send(emulator, {TOPIC: identity}, [PushMessage(token(1), "m", "com.apple.mgmt.other")])
    assert results[0].status == 0 and results[0].reason == "NoCertificateForTopic"
    assert not results[0].retryable
    assert emulator.total == 0


def test_timeouts_are_retryable(emulator, identity):
    emulator.delay = 1.0
    results = send(emulator, {TOPIC: identity}, [PushMessage(token(1), "m", TOPIC)], timeout=0.2)
    assert results[0].status == 0 and results[0].reason == "Timeout" and results[0].retryable


def test_connection_refused_is_retryable(identity):
    async def run():
        client = HttpxAPNsClient("https://127.0.0.1:9", lambda t: identity)
        try:
            return await client.send_batch([PushMessage(token(1), "m", TOPIC)])
        finally:
            await client.aclose()

    result = asyncio.run(run())[0]
    assert result.status == 0 and result.reason == "ConnectionError" and result.retryable


def test_untrusted_server_is_a_certificate_problem(emulator, identity):
    """Without MDMSERVER_APNS_CA_FILE the emulator's certificate is not trusted: TLS fails."""

    async def run():
        client = HttpxAPNsClient(emulator.url, lambda t: identity)
        try:
            return await client.send_batch([PushMessage(token(1), "m", TOPIC)])
        finally:
            await client.aclose()

    result = asyncio.run(run())[0]
    assert result.reason == "TLSError" and result.certificate_problem and not result.retryable


def test_goaway_reconnects(emulator, identity):
    emulator.goaway_after = 50
    messages = [PushMessage(token(i), "m", TOPIC) for i in range(300)]
    results = send(emulator, {TOPIC: identity}, messages)
    assert [r.token for r in results] == [m.token for m in messages]
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    answered = collections.Counter(emulator.tokens(200))
    # each connection answers 50 streams before its GOAWAY: several connections were needed, and the
    # pushes cut off by a GOAWAY went out again on the new ones
    assert emulator.connections_made >= 3 and len(answered) >= 150
    # never a silent success: every push reported sent was received and answered 200 by the service
    assert ok and all(answered[r.token] >= 1 for r in ok)
    # whatever still fails comes back as a retryable connection error (the worker sends it again later)
    assert all(r.status == 0 and r.reason == "ConnectionError" and r.retryable for r in failed)
    # Delivery is at least once, not exactly once: when the service closes the connection after its
    # GOAWAY, httpcore fails every stream still reading on it with the write error, including streams
    # whose 200 had already arrived; the client cannot tell them from unsent ones and sends them again
    # (harmless for MDM: the device checks in once more). A push goes out at most once per attempt.
    assert max(answered.values()) <= 1 + 2  # first try + connection_retries (2 by default)


def test_connection_errors_without_retries(emulator, identity):
    emulator.goaway_after = 10
    messages = [PushMessage(token(i), "m", TOPIC) for i in range(100)]
    results = send(emulator, {TOPIC: identity}, messages, connection_retries=0)
    failed = [r for r in results if not r.ok]
    assert failed and all(r.reason == "ConnectionError" and r.retryable for r in failed)


def test_new_certificate_takes_effect_without_restart(emulator):
    first = make_identity(emulator)
    current = {TOPIC: first}

    async def run():
        client = HttpxAPNsClient(emulator.url, lambda t: current.get(t), ca_file=str(emulator.ca_file))
        try:
            await client.send_batch([PushMessage(token(1), "m", TOPIC)])
            connections = emulator.connections_made
            await client.send_batch([PushMessage(token(2), "m", TOPIC)])
            assert emulator.connections_made == connections  # same connection reused
            current[TOPIC] = make_identity(emulator)
            await client.send_batch([PushMessage(token(3), "m", TOPIC)])
            assert emulator.connections_made == connections + 1
            current.clear()
            return await client.send_batch([PushMessage(token(4), "m", TOPIC)])
        finally:
            await client.aclose()

    last = asyncio.run(run())
    assert last[0].reason == "NoCertificateForTopic"
    assert emulator.counts[200] == 3
