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


def raw_bplist(root: Any) -> bytes:
    """A binary plist written by hand, for what plistlib refuses to write (null, non-string keys).

    ``root`` may hold dicts (any key objects), lists, ASCII str, non-negative int, bool and None.
    """
    objects: list[bytes] = []

    def add(value: Any) -> int:
        index = len(objects)
        objects.append(b"")
        if value is None:
            encoded = b"\x00"
        elif value is True or value is False:
            encoded = b"\x09" if value else b"\x08"
        elif isinstance(value, int):
            encoded = b"\x13" + value.to_bytes(8, "big")
        elif isinstance(value, str):
            raw = value.encode("ascii")
            assert len(raw) < 15
            encoded = bytes([0x50 | len(raw)]) + raw
        elif isinstance(value, list):
            refs = [add(v) for v in value]
            encoded = bytes([0xA0 | len(refs)]) + bytes(refs)
        elif isinstance(value, dict):
            keys = [add(k) for k in value]
            vals = [add(v) for v in value.values()]
            encoded = bytes([0xD0 | len(keys)]) + bytes(keys) + bytes(vals)
        else:
            raise TypeError(type(value))
        objects[index] = encoded
        return index

    add(root)
    assert len(objects) < 256
    body = b"bplist00"
    offsets = []
    for encoded in objects:
        offsets.append(len(body))
        body += encoded
    table_offset = len(body)
    offset_size = 2
    body += b"".join(o.to_bytes(offset_size, "big") for o in offsets)
    trailer = bytes(6) + bytes([offset_size, 1]) + len(objects).to_bytes(8, "big") + (0).to_bytes(8, "big")
    trailer += table_offset.to_bytes(8, "big")
    return body + trailer
