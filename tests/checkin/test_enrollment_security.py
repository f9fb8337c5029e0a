"""Attack tests over real HTTP for the enrollment endpoint and proxy headers (issue 9, items 9, 10, 12).

Every request goes through the live server's socket from 127.0.0.1; whether that peer is a trusted
proxy is what each test configures.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, select

from mdmserver.db import db, utcnow
from mdmserver.enrollment_limit.models import EnrollmentAttempt
from mdmserver.enrollment_limit.service import record_attempt
from mdmserver.jobs import Upkeep
from mdmserver.pki import x509
from mdmserver.pki.models import Certificate, RSAPrivateKey
from mdmserver.protocol.plist import dump_plist
from mdmserver.records.devices import Device
from mdmserver.simulator.device import HttpxTransport, Identity, SimulatedDevice
from tests.factories import install_push_topic

HEADER = "X-Client-Cert"
UNRELATED_PROXY = ["192.0.2.10/32"]  # a proxy that is not the test's own address


@pytest.fixture
def live(live_server, monkeypatch):
    config = live_server.app.config
    monkeypatch.setitem(config, "ENROLL_RATE_LIMIT", 0)
    monkeypatch.setitem(config, "ADMISSION_POLICY", "auto")
    monkeypatch.setitem(config, "ENROLLMENT_SECRET", None)
    with live_server.app.app_context():
        install_push_topic(db.session, monkeypatch)
    return live_server


def _cert_header(identity: Identity) -> dict[str, str]:
    """What a TLS proxy forwards after checking the client's key."""
    return {HEADER: quote(x509.cert_to_pem(identity.certificate))}


def _device(live, udid: str) -> Device:
    with live.app.app_context():
        return db.session.scalar(select(Device).where(Device.udid == udid))


def _enrolled_through_proxy(live, monkeypatch) -> SimulatedDevice:
    """A device enrolled and authenticated through a trusted TLS proxy (the test's address)."""
    monkeypatch.setitem(live.app.config, "DEVICE_AUTH", "header")
    monkeypatch.setitem(live.app.config, "CLIENT_CERT_HEADER", HEADER)
    monkeypatch.setitem(live.app.config, "TRUSTED_PROXIES", ["127.0.0.1/32"])
    victim = SimulatedDevice(HttpxTransport(live.url), header_auth=_cert_header)
    victim.enroll()
    assert victim.authenticate() == 200 and victim.token_update() == 200
    return victim


def _impostor_of(live, victim: SimulatedDevice) -> SimulatedDevice:
    """Someone without the victim's key who knows its UDID and its (public) certificate."""
    public = {HEADER: quote(x509.cert_to_pem(victim.identity.certificate))}
    impostor = SimulatedDevice(HttpxTransport(live.url), udid=victim.udid, header_auth=lambda _identity: public)
    impostor.topic = victim.topic
    return impostor


# --- item 9: the client certificate header --------------------------------------------------------


@pytest.mark.parametrize("mode", ["header", "both"])
def test_public_certificate_in_header_from_untrusted_peer_is_403(live, monkeypatch, mode) -> None:
    victim = _enrolled_through_proxy(live, monkeypatch)
    monkeypatch.setitem(live.app.config, "DEVICE_AUTH", mode)
    monkeypatch.setitem(live.app.config, "TRUSTED_PROXIES", UNRELATED_PROXY)
    impostor = _impostor_of(live, victim)
    # CheckOut with no signature, only the victim's public certificate in the header
    assert impostor.checkout() == 403
    assert impostor.idle()[0] == 403
    assert _device(live, victim.udid).enrolled is True
    if mode == "both":
        # the victim's own signature still works for a peer that is not a proxy
        victim.header_auth = None
        assert victim.idle()[0] == 200


def test_header_with_no_trusted_proxy_configured_is_403(live, monkeypatch) -> None:
    victim = _enrolled_through_proxy(live, monkeypatch)
    monkeypatch.setitem(live.app.config, "TRUSTED_PROXIES", [])
    assert _impostor_of(live, victim).checkout() == 403
    assert _device(live, victim.udid).enrolled is True


def test_header_from_trusted_proxy_works(live, monkeypatch) -> None:
    victim = _enrolled_through_proxy(live, monkeypatch)
    monkeypatch.setitem(live.app.config, "TRUSTED_PROXIES", ["10.0.0.0/8", "127.0.0.0/8"])
    assert victim.idle()[0] == 200
    assert victim.checkout() == 200
    assert _device(live, victim.udid).enrolled is False


# --- item 10: the enrollment endpoint ------------------------------------------------------------


def _basic(secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"device:{secret}".encode()).decode()}


def _through_proxy(live, monkeypatch, client_address: str, limit: int) -> httpx.Client:
    """Requests as a trusted proxy forwarding for ``client_address`` (each test its own client)."""
    monkeypatch.setitem(live.app.config, "TRUSTED_PROXIES", ["127.0.0.1/32"])
    monkeypatch.setitem(live.app.config, "ENROLL_RATE_LIMIT", limit)
    return httpx.Client(base_url=live.url, headers={"X-Forwarded-For": client_address}, timeout=30)


def test_wrong_secret_guesses_are_rate_limited(live, monkeypatch) -> None:
    monkeypatch.setitem(live.app.config, "ENROLLMENT_SECRET", "correct horse")
    http = _through_proxy(live, monkeypatch, "198.51.100.1", limit=3)
    guesses = [http.get("/mdm/enroll", headers=_basic(f"guess-{i}")).status_code for i in range(5)]
    assert guesses == [403, 403, 403, 429, 429]
    # once limited, even the right secret waits
    response = http.get("/mdm/enroll", headers=_basic("correct horse"))
    assert response.status_code == 429 and response.headers["Retry-After"]
    # another client is not affected, and the right secret works
    other = _through_proxy(live, monkeypatch, "198.51.100.2", limit=3)
    assert other.get("/mdm/enroll", headers=_basic("correct horse")).status_code == 200


def test_forwarded_for_is_read_from_the_right_only_behind_a_trusted_proxy(live, monkeypatch) -> None:
    http = _through_proxy(live, monkeypatch, "unused", limit=2)
    # the client can prepend anything; the right-most untrusted hop (set by our proxy) is the key
    codes = [
        http.get("/mdm/enroll", headers={"X-Forwarded-For": f"{spoof}, 198.51.100.20"}).status_code
        for spoof in ("1.1.1.1", "2.2.2.2", "3.3.3.3")
    ]
    assert codes == [200, 200, 429]
    # from a peer that is not a trusted proxy, X-Forwarded-For is ignored: the peer is the client
    monkeypatch.setitem(live.app.config, "TRUSTED_PROXIES", UNRELATED_PROXY)
    with live.app.app_context():
        db.session.execute(EnrollmentAttempt.__table__.delete())
        db.session.commit()
    codes = [
        http.get("/mdm/enroll", headers={"X-Forwarded-For": f"198.51.100.{30 + i}"}).status_code
        for i in range(3)
    ]
    assert codes == [200, 200, 429]
    with live.app.app_context():
        db.session.execute(EnrollmentAttempt.__table__.delete())
        db.session.commit()


def test_secret_in_the_url_is_refused_and_never_logged(live, monkeypatch, caplog) -> None:
    monkeypatch.setitem(live.app.config, "ENROLLMENT_SECRET", "url-secret-1234")
    http = _through_proxy(live, monkeypatch, "198.51.100.40", limit=10)
    with caplog.at_level(logging.DEBUG):
        response = http.get("/mdm/enroll", params={"secret": "url-secret-1234"})
        wrong = http.get("/mdm/enroll", params={"secret": "url-guess-5678"})
    assert response.status_code == 400 and b"Basic" in response.content
    assert wrong.status_code == 400
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("mdmserver"))
    assert "refused" in ours  # the refusal is logged ...
    assert "url-secret-1234" not in ours and "url-guess-5678" not in ours  # ... without the secret
    assert http.get("/mdm/enroll", headers=_basic("url-secret-1234")).status_code == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def second_instance(live, tmp_path):
    """``mdmserver serve`` in another process on the live server's database and data directory,
    its access log captured."""
    config = live.app.config
    port = _free_port()
    log_file = tmp_path / "serve.log"
    env = {
        **os.environ,
        "MDMSERVER_DATA_DIR": config["DATA_DIR"],
        "MDMSERVER_DATABASE_URL": config["DATABASE_URL"],
        "MDMSERVER_TRUSTED_PROXIES": "127.0.0.1",
        "MDMSERVER_ENROLL_RATE_LIMIT": "3",
        "MDMSERVER_LOG_LEVEL": "INFO",
    }
    with log_file.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "mdmserver", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--no-push-worker"],
            env=env, stdout=sink, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, log_file.read_text()
            assert time.monotonic() < deadline, "second instance did not start"
            time.sleep(0.3)
        yield url, server, log_file
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=60)


def test_limit_is_shared_by_two_instances_on_one_database(live, monkeypatch, second_instance) -> None:
    other_url, _server, _log = second_instance
    ours = _through_proxy(live, monkeypatch, "198.51.100.50", limit=3)
    theirs = httpx.Client(base_url=other_url, headers={"X-Forwarded-For": "198.51.100.50"}, timeout=30)
    codes = [c.get("/mdm/enroll").status_code for c in (ours, theirs, ours, theirs, ours, theirs)]
    assert codes == [200, 200, 200, 429, 429, 429]


def test_gunicorn_access_log_never_holds_the_secret(live, second_instance) -> None:
    other_url, server, log_file = second_instance
    http = httpx.Client(base_url=other_url, headers={"X-Forwarded-For": "198.51.100.60"}, timeout=30)
    assert http.get("/mdm/enroll?secret=access-log-9876&x=1").status_code == 400
    assert http.get("/mdm/enroll", params={"enrollment_secret": "access-log-5432"}).status_code == 200
    server.terminate()
    server.wait(timeout=60)
    logged = log_file.read_text()
    assert "/mdm/enroll?secret=[redacted]&x=1" in logged  # the request is logged ...
    assert "access-log-9876" not in logged and "access-log-5432" not in logged  # ... the secret is not


def test_attempt_rows_are_pruned(live) -> None:
    start = utcnow()
    with live.app.app_context():
        session = db.session
        for i in range(50):
            assert record_attempt(session, f"203.0.113.{i}", limit=5, now=start)
        session.commit()
        # a new window two minutes later: every row older than the previous window goes
        assert record_attempt(session, "203.0.113.200", limit=5, now=start + timedelta(minutes=2))
        session.commit()
        clients = set(session.scalars(select(EnrollmentAttempt.client)))
        assert clients == {"203.0.113.200"}
        session.execute(EnrollmentAttempt.__table__.delete())
        session.commit()


# --- items 10 and 12: identities issued at enrollment ------------------------------------------


def test_enrollment_keeps_no_device_private_key(live) -> None:
    with live.app.app_context():
        keys_before = db.session.scalar(select(func.count()).select_from(RSAPrivateKey))
    sim = SimulatedDevice(HttpxTransport(live.url))
    sim.enroll()
    fingerprint = x509.fingerprint_sha256(sim.identity.certificate)
    with live.app.app_context():
        row = db.session.scalar(select(Certificate).where(Certificate.fingerprint_sha256 == fingerprint))
        assert row is not None and row.private_key_id is None
        assert db.session.scalar(select(func.count()).select_from(RSAPrivateKey)) == keys_before
    # nor is one listed for an admin
    listed = httpx.get(f"{live.url}/api/v1/rsa_private_keys", headers=live.auth("read")).json()
    assert listed["meta"]["total"] == keys_before
    assert sim.authenticate() == 200  # the device's own key is all it needs


def test_identities_never_used_are_purged_after_a_day(live) -> None:
    used = SimulatedDevice(HttpxTransport(live.url))
    used.enroll()
    assert used.authenticate() == 200
    unused = SimulatedDevice(HttpxTransport(live.url))
    unused.enroll()
    fingerprints = {x509.fingerprint_sha256(s.identity.certificate): s for s in (used, unused)}

    def present() -> set[str]:
        with live.app.app_context():
            return set(db.session.scalars(
                select(Certificate.fingerprint_sha256).where(Certificate.fingerprint_sha256.in_(fingerprints))
            ))

    upkeep = Upkeep(live.app)
    upkeep.run(force=True, now=utcnow() + timedelta(hours=23))
    assert present() == set(fingerprints)
    upkeep.run(force=True, now=utcnow() + timedelta(hours=25))
    assert present() == {x509.fingerprint_sha256(used.identity.certificate)}
    # the purged identity can no longer enroll a device; the used one still works
    assert unused.authenticate() == 403
    assert used.idle()[0] == 200
    with live.app.app_context():
        purposes = set(db.session.scalars(select(Certificate.purpose)))
    assert {"ca", "server_identity"} <= purposes


# --- item 12 (b): the protocol's empty 200 ------------------------------------------------------


def test_empty_device_answers_do_not_claim_html(live) -> None:
    """An empty 200 is the protocol's "nothing for you": no body and no Content-Type (as Go's net/http
    sends it for NanoMDM and MicroMDM), never ``text/html``."""
    sim = SimulatedDevice(HttpxTransport(live.url))
    sim.enroll()
    for path, message in (
        ("/mdm/checkin", sim.authenticate_message()),
        ("/mdm/connect", {"UDID": sim.udid, "Status": "Idle"}),
        ("/mdm", {"UDID": sim.udid, "Status": "Idle"}),
    ):
        body = dump_plist(message)
        response = httpx.put(f"{live.url}{path}", content=body,
                             headers={"Mdm-Signature": sim.signature_for(body)}, timeout=30)
        assert response.status_code == 200 and response.content == b"", path
        assert "content-type" not in response.headers, (path, response.headers)


def test_identities_purge_command(live) -> None:
    fresh = SimulatedDevice(HttpxTransport(live.url))
    fresh.enroll()
    fingerprint = x509.fingerprint_sha256(fresh.identity.certificate)
    config = live.app.config
    env = {**os.environ, "MDMSERVER_DATA_DIR": config["DATA_DIR"], "MDMSERVER_DATABASE_URL": config["DATABASE_URL"],
           "MDMSERVER_LOG_LEVEL": "WARNING"}
    run = [sys.executable, "-m", "mdmserver", "identities", "purge"]

    def present() -> bool:
        with live.app.app_context():
            return db.session.scalar(
                select(Certificate.id).where(Certificate.fingerprint_sha256 == fingerprint)
            ) is not None

    kept = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0, kept.stderr
    assert present()  # younger than the default day
    purged = subprocess.run([*run, "--hours", "0"], env=env, capture_output=True, text=True, timeout=120)
    assert purged.returncode == 0, purged.stderr
    assert "unused enrollment identities" in purged.stdout
    assert not present()
    assert fresh.authenticate() == 403
