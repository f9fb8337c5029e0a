from __future__ import annotations

import json
import re

from mdmserver.collaborators import secret_box
from mdmserver.ops import metrics
from mdmserver.ops.readiness import Advisory, _checks, register_check
from mdmserver.pki import x509 as px
from mdmserver.push import service
from mdmserver.push.views import NO_PUSH_CERTIFICATE
from tests.factories import push_certificate


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_readyz_reports_database_and_migrations(client):
    body = client.get("/readyz").get_json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok" and body["checks"]["migrations"] == "ok"


def test_readyz_fails_when_a_check_fails(client):
    register_check("test-failure", lambda session: "push certificate rejected by APNs")
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["checks"]["test-failure"] == "push certificate rejected by APNs"
    finally:
        _checks.pop("test-failure")


def test_metrics_count_requests_by_route_and_status(client):
    client.get("/healthz")
    client.get("/api/v1/organization")  # 401
    text = client.get("/metrics").get_data(as_text=True)
    assert re.search(r'mdmserver_http_requests_total\{method="GET",route="/healthz",status="200"\} \d+', text)
    assert re.search(r'route="/api/v1/organization",status="401"', text)
    assert "mdmserver_http_request_duration_seconds_bucket" in text


def test_metrics_bucket_made_up_methods_into_other(client):
    """A client inventing HTTP methods must not create one time series per method (cardinality attack)."""
    for n in range(5):
        client.open("/healthz", method=f"BOGUS{n}")
        client.open("/nowhere", method=f"XYZZY{n}")
    client.open("/healthz", method="PATCH")
    text = client.get("/metrics").get_data(as_text=True)
    assert "BOGUS" not in text and "XYZZY" not in text
    assert re.search(r'mdmserver_http_requests_total\{method="other",route="<unmatched>",status="405"\} \d+', text)
    assert re.search(r'mdmserver_http_requests_total\{method="other",route="<unmatched>",status="404"\} \d+', text)
    assert re.search(r'method="PATCH",route="<unmatched>",status="405"', text)
    assert re.search(r'method="other",route="<unmatched>",le="\+Inf"', text)


def test_root_points_to_the_api_docs(client):
    response = client.get("/")
    assert response.status_code == 200
    body = response.get_json()
    assert body["api_docs"] == "/api/docs" and body["openapi"] == "/api/openapi.json"
    assert '</api/docs>; rel="service-doc"' in response.headers["Link"]
    assert client.get(body["api_docs"]).status_code == 200


def test_readyz_does_not_call_apns_ok_without_a_push_certificate(client, db_session):
    response = client.get("/readyz")
    body = response.get_json()
    assert body["checks"]["apns"] == NO_PUSH_CERTIFICATE and body["checks"]["apns"] != "ok"
    assert response.status_code == 200 and body["status"] == "ready"  # a fresh server is ready to be set up

    cert, key = push_certificate()
    service.import_push_certificate(db_session, px.cert_to_pem(cert).encode() + px.key_to_pem(key).encode(),
                                    box=secret_box())
    db_session.commit()
    assert client.get("/readyz").get_json()["checks"]["apns"] == "ok"


def test_an_advisory_never_hides_a_failing_check(client):
    register_check("test-advisory", lambda session: Advisory("not configured: something"))
    register_check("test-failure", lambda session: "broken")
    try:
        assert client.get("/readyz").status_code == 503
        _checks.pop("test-failure")
        response = client.get("/readyz")
        assert response.status_code == 200 and response.get_json()["checks"]["test-advisory"] == "not configured: something"
    finally:
        _checks.pop("test-advisory", None)
        _checks.pop("test-failure", None)


def test_metrics_shared_through_a_directory_add_other_processes_and_survive_its_loss(app, tmp_path):
    """Values another process wrote to the shared directory are added in; when the directory goes away,
    counting goes on in this process alone instead of failing the request."""
    other = tmp_path / "4242.values"
    try:
        metrics.prepare_directory(tmp_path)
        metrics.share_through(tmp_path)
        metrics.REQUESTS.inc(method="GET", route="/shared-test", status="200")
        own = next(tmp_path.glob("*.values"))
        other.write_bytes(own.read_bytes())  # "another worker" that counted the same request once
        assert metrics.read_values(other) == metrics.read_values(own)
        with app.app_context():
            text = metrics.render()
        mine = metrics.REQUESTS.value(method="GET", route="/shared-test", status="200")
        assert f'route="/shared-test",status="200"}} {mine + 1:g}' in text

        for path in tmp_path.iterdir():
            path.unlink()
        tmp_path.rmdir()
        metrics._shared.file = None  # as a freshly forked worker: it must open its file again
        metrics.REQUESTS.inc(method="GET", route="/shared-test", status="200")
        assert metrics.REQUESTS.value(method="GET", route="/shared-test", status="200") == mine + 1
    finally:
        metrics.share_through(None)


def test_metrics_value_file_grows_and_every_change_is_in_the_file_at_once(tmp_path):
    """The value file is read by other processes while this one counts: every increment is in the file
    as soon as ``inc`` returns (no flush), also past the file's first allocation."""
    try:
        metrics.prepare_directory(tmp_path)
        metrics.share_through(tmp_path)
        routes = [f"/grow-test/{index:04d}/{'x' * 40}" for index in range(1500)]
        for route in routes:
            metrics.REQUESTS.inc(method="GET", route=route, status="200")
        metrics.REQUESTS.inc(method="GET", route=routes[0], status="200")
        own = next(tmp_path.glob("*.values"))
        assert own.stat().st_size > 64 * 1024
        values = metrics.read_values(own)
        found = {json.loads(key)[1][1][1]: value for key, value in values.items()
                 if json.loads(key)[0] == "mdmserver_http_requests_total" and "/grow-test/" in key}
        assert len(found) == len(routes)
        assert found[routes[0]] == 2 and found[routes[-1]] == 1
    finally:
        metrics.share_through(None)
