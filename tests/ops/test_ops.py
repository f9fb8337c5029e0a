from __future__ import annotations

import re

from mdmserver.ops.readiness import _checks, register_check


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
