"""A NUL character in an admin request is the client's fault, never a 500 (review of issue 9).

PostgreSQL text cannot hold NUL: before this, ``filter[device]=%00``, ``filter[resource_id]=%00``, an
auth set id ``%00`` and NUL in body strings (a group name, a device name, a bulk-action device name)
reached the database and answered 500 there, while SQLite stored or compared them. Over real HTTP.
"""

from __future__ import annotations

import json

import httpx
import pytest

ADM = "/api/management/v1/admission"


@pytest.fixture
def api(live_server):
    with httpx.Client(base_url=live_server.url, headers=live_server.auth("read", "write", "admin"),
                      timeout=30) as client:
        yield client


@pytest.mark.parametrize("path", [
    "/api/v1/commands?filter[device]=%00",
    "/api/v1/audit_events?filter[resource_id]=%00",
    "/api/v1/devices?filter[udid]=a%00b",
    "/api/v1/devices/a%00b",
    "/api/v1/devices/udid:a%00b",
    "/api/v1/certificates?filter[fingerprint_sha256]=%00",
    f"{ADM}/devices?device_id=%00",
])
def test_nul_in_url_is_400(api, path) -> None:
    response = api.get(path)
    assert response.status_code == 400, response.text
    body = response.json()
    # JSON:API errors carry the request id in meta; Mender's routes at the top level
    rid = body["request_id"] if path.startswith(ADM) else body["meta"]["request_id"]
    assert rid == response.headers["X-Request-ID"]


def test_nul_in_mender_path_is_400(api) -> None:
    response = api.put(f"{ADM}/devices/%00/status", json={"status": "accepted"})
    assert response.status_code == 400, response.text
    assert response.json()["request_id"] == response.headers["X-Request-ID"]


@pytest.mark.parametrize("udid", ["a\u0000b", "line\nbreak", "bidi\u202eoverride"])
def test_control_characters_in_a_preauthorized_identity_are_400(api, udid) -> None:
    response = api.post(f"{ADM}/devices", json={"device_identity": json.dumps({"udid": udid})})
    assert response.status_code == 400, response.text
    assert "control character" in response.json()["error"]


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/api/v1/device_groups", {"data": {"type": "device_groups", "attributes": {"name": "a\u0000b"}}}),
    ("POST", "/api/v1/actions/lock", {"devices": ["a\u0000b"]}),
    ("POST", "/api/v1/actions/lock", {"devices": ["udid:a\u0000b"]}),
])
def test_nul_in_a_body_string_is_never_500(api, method, path, body) -> None:
    response = api.request(method, path, json=body)
    assert response.status_code < 500, response.text
    assert "errors" in response.json() or response.status_code in (200, 201)


@pytest.mark.parametrize("path", ["/api/v1/devices?filter%00[udid]=x", "/api/v1/devices?a=%00", "/mdm/connect?x=a%00"])
def test_nul_in_a_query_key_or_value_is_refused_before_any_view(api, path) -> None:
    """The NUL check reads the raw query first (only a NUL or ``%00`` can decode to one): a NUL in a key
    or a value, on an API route or a device route, is still the 400 ``nul_character`` (a device route
    answers its errors with the status and the request id alone)."""
    device = path.startswith("/mdm")
    response = api.request("PUT" if device else "GET", path)
    assert response.status_code == 400, response.text
    assert response.headers["X-Request-ID"]
    if not device:
        assert response.json()["errors"][0]["code"] == "nul_character"
