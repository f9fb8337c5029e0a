"""Helpers shared by the profile tests."""

from __future__ import annotations

import io
import plistlib
import uuid
from typing import Any

from mdmserver.profiles.plist import first_difference, strict_equal

ASPEN = "application/x-apple-aspen-config"
JSONAPI = "application/vnd.api+json"


def upload(client, headers, data: bytes, *, filename: str = "profile.mobileconfig", **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return client.post(
        "/api/v1/upload/profiles" + (f"?{query}" if query else ""),
        data={"file": (io.BytesIO(data), filename, "application/octet-stream")},
        headers=headers,
        content_type="multipart/form-data",
    )


def download(client, headers, profile_id: str | int, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return client.get(f"/api/v1/download/profiles/{profile_id}" + (f"?{query}" if query else ""), headers=headers)


def assert_same_plist(expected: Any, actual: Any) -> None:
    """Deep equality with types and key order; the message points at the first difference."""
    assert strict_equal(expected, actual), first_difference(expected, actual)


def assert_error(response, status: int) -> dict:
    """A JSON:API error document with the request id."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:500])
    body = response.get_json()
    assert body is not None and body["errors"], body
    assert body["meta"]["request_id"]
    for error in body["errors"]:
        assert error["status"] == str(status) and error["detail"]
    return body


def make_profile(payloads: list[dict[str, Any]] | None = None, **top: Any) -> dict[str, Any]:
    identifier = top.pop("PayloadIdentifier", f"com.example.test.{uuid.uuid4().hex[:12]}")
    profile = {
        "PayloadContent": payloads if payloads is not None else [],
        "PayloadDisplayName": "Test profile",
        "PayloadIdentifier": identifier,
        "PayloadType": "Configuration",
        "PayloadUUID": str(uuid.uuid4()).upper(),
        "PayloadVersion": 1,
    }
    profile.update(top)
    return profile


def make_payload(payload_type: str, index: int = 0, **keys: Any) -> dict[str, Any]:
    return {
        "PayloadType": payload_type,
        "PayloadIdentifier": f"com.example.payload.{uuid.uuid4().hex[:8]}.{index}",
        "PayloadUUID": str(uuid.uuid4()).upper(),
        "PayloadVersion": 1,
        **keys,
    }


def dumps(value: dict[str, Any], fmt: str = "xml") -> bytes:
    return plistlib.dumps(value, fmt=plistlib.FMT_BINARY if fmt == "binary" else plistlib.FMT_XML, sort_keys=False)
