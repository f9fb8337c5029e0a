"""Mender's device admission API, management v1 (seed 002), request by request, against the app.

Each test is named after the document's section (its method and path) and replays the document's own
example bodies: the identity ``{"mac", "sku", "sn"}``, its RSA key, ``{"status": "accepted"}``. The
expected answers are the document's: field names, statuses, ``Link`` paging and the
``{"error", "request_id"}`` error shape. The two values the document's example takes from Mender's
own database (the auth set ``id`` and the ``device_id``) are assigned by mdmserver here (the SHA-256 of
identity data and key; our device id): the example's are refused with 400 naming the expected one.
"""

from __future__ import annotations

import json
import re

import pytest

from mdmserver.admission import service as admission
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice
from tests.factories import install_push_topic

BASE = "/api/management/v1/admission"

# the document's examples, as given
DOC_ID = "291ae0e5956c69c2267489213df4459d19ed48a806603def19d417d004a4b67e"
DOC_DEVICE_ID = "58be8208dd77460001fe0d78"
DOC_IDENTITY = '{"mac":"00:01:02:03:04:05", "sku":"My Device 1", "sn":"SN1234567890"}'
DOC_ATTRIBUTES = {"mac": "00:01:02:03:04:05", "sku": "My Device 1", "sn": "SN1234567890"}
DOC_KEY = (
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAzogVU7RGDilbsoUt/DdH\n"
    "VJvcepl0A5+xzGQ50cq1VE/Dyyy8Zp0jzRXCnnu9nu395mAFSZGotZVr+sWEpO3c\nyC3VmXdBZmXmQdZqbdD/GuixJOYfqta2ytbIUPRXFN7/I7sgzxnXWBYXYmObYvdP\n"
    "okP0mQanY+WKxp7Q16pt1RoqoAd0kmV39g13rFl35muSHbSBoAW3GBF3gO+mF5Ty\n1ddp/XcgLOsmvNNjY+2HOD5F/RX0fs07mWnbD7x+xz7KEKjF+H7ZpkqCwmwCXaf0\n"
    "iyYyh1852rti3Afw4mDxuVSD7sd9ggvYMc0QHIpQNkD4YWOhNiE1AB0zH57VbUYG\nUwIDAQAB\n-----END PUBLIC KEY-----\n"
)
DEVICE_FIELDS = {"id", "device_id", "device_identity", "key", "status", "attributes", "request_time"}


@pytest.fixture
def enroll(app, client, db_session, monkeypatch):
    """Enroll a simulated device (manual admission: its auth set is pending)."""
    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    install_push_topic(db_session, monkeypatch)

    def make(**kwargs) -> SimulatedDevice:
        sim = SimulatedDevice(FlaskTransport(client), **kwargs)
        sim.enroll()
        assert sim.authenticate() == 200
        return sim

    return make


def _assert_error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "request_id"} and body["error"]
    assert body["request_id"] == response.headers["X-MEN-RequestID"]
    return body


def _submitted(client, headers, sim: SimulatedDevice) -> tuple[str, str]:
    """Submit the document's auth set for the enrolled device with the doc's serial: (id, device_id)."""
    device_id = str(client.get(f"/api/v1/devices/{sim.udid}", headers=headers).get_json()["data"]["id"])
    canonical = json.dumps(DOC_ATTRIBUTES, sort_keys=True, separators=(",", ":"))
    set_id = admission.auth_set_id(canonical, DOC_KEY)
    body = {"id": set_id, "device_id": device_id, "device_identity": DOC_IDENTITY, "key": DOC_KEY}
    response = client.put(f"{BASE}/devices/{set_id}", json=body, headers=headers)
    assert response.status_code == 204 and response.data == b""
    return set_id, device_id


def test_put_devices_id(client, auth, enroll):
    """PUT /devices/{id}: the document's body (identity {mac, sku, sn}, its RSA key) → 204, pending."""
    headers = auth("read", "write")
    sim = enroll(serial_number="SN1234567890")
    # the document's own id and device_id are Mender's: refused, the error names the id we compute
    doc_body = {"id": DOC_ID, "device_id": DOC_DEVICE_ID, "device_identity": DOC_IDENTITY, "key": DOC_KEY}
    _assert_error(client.put(f"{BASE}/devices/{DOC_ID}", json=doc_body, headers=headers), 400)
    without_ids = {"device_identity": DOC_IDENTITY, "key": DOC_KEY}
    refused = _assert_error(client.put(f"{BASE}/devices/{DOC_ID}", json=without_ids, headers=headers), 400)
    (set_id,) = re.findall(r"\b[0-9a-f]{64}\b", refused["error"])
    assert client.put(f"{BASE}/devices/{set_id}", json=without_ids, headers=headers).status_code == 204
    shown = client.get(f"{BASE}/devices/{set_id}", headers=headers).get_json()
    assert shown["status"] == "pending" and shown["attributes"] == DOC_ATTRIBUTES
    assert json.loads(shown["device_identity"]) == DOC_ATTRIBUTES
    # the same submission again: 204, the auth set unchanged
    assert client.put(f"{BASE}/devices/{set_id}", json=without_ids, headers=headers).status_code == 204
    # sn is the serial number: the enrolled device's auth set and the submitted one are the same device's
    by_device = client.get(f"{BASE}/devices?device_id={shown['device_id']}", headers=headers).get_json()
    assert len(by_device) == 2 and set_id in {s["id"] for s in by_device}
    assert any(json.loads(s["device_identity"]).get("udid") == sim.udid for s in by_device)


def test_put_devices_id_malformed(client, auth, enroll):
    """PUT /devices/{id}, 400: "The request body is malformed" — every fault in Mender's error shape."""
    headers = auth("read", "write")
    enroll(serial_number="SN1234567890")
    url = f"{BASE}/devices/{DOC_ID}"
    for broken in (
        {"device_identity": DOC_IDENTITY},  # no key
        {"key": DOC_KEY},  # no identity
        {"device_identity": "{", "key": DOC_KEY},
        {"device_identity": "[]", "key": DOC_KEY},
        {"device_identity": json.dumps({"mac": 5}), "key": DOC_KEY},
        {"device_identity": json.dumps({f"a{i}": "x" for i in range(33)}), "key": DOC_KEY},
        {"device_identity": json.dumps({"mac": "x" * 257, "sn": "SN1234567890"}), "key": DOC_KEY},
        {"device_identity": json.dumps({"sn": "SN1234567890", "serial_number": "OTHER"}), "key": DOC_KEY},
        {"device_identity": json.dumps({"mac": "00:01:02:03:04:05"}), "key": DOC_KEY},  # names no device
        {"device_identity": DOC_IDENTITY, "key": "not a key"},
        {"device_identity": DOC_IDENTITY, "key": DOC_KEY, "colour": "red"},
        {"device_identity": DOC_IDENTITY, "key": DOC_KEY, "id": "another"},
    ):
        _assert_error(client.put(url, json=broken, headers=headers), 400)
    _assert_error(client.put(url, data="", headers=headers), 400)  # "JSON payload is empty"
    _assert_error(client.put(url, data="x", content_type="application/json", headers=headers), 400)


def test_get_devices(client, auth, enroll):
    """GET /devices: a paged array of Device objects; status and device_id filters; Link first/next/prev."""
    headers = auth("read", "write")
    sim = enroll(serial_number="SN1234567890")
    enroll()
    set_id, device_id = _submitted(client, headers, sim)
    response = client.get(f"{BASE}/devices", headers=headers)
    assert response.status_code == 200 and response.mimetype == "application/json"
    listed = response.get_json()
    assert len(listed) == 3 and all(DEVICE_FIELDS <= set(s) for s in listed)
    assert all(s["status"] in ("pending", "accepted", "rejected") for s in listed)
    assert 'rel="first"' in response.headers["Link"]
    page = client.get(f"{BASE}/devices?page=2&per_page=1", headers=headers)
    assert len(page.get_json()) == 1
    assert 'rel="prev"' in page.headers["Link"] and 'rel="next"' in page.headers["Link"]
    assert [s["id"] for s in client.get(f"{BASE}/devices?device_id={device_id}&status=pending",
                                        headers=headers).get_json()].count(set_id) == 1
    assert client.get(f"{BASE}/devices?status=accepted", headers=headers).get_json() == []
    for query in ("page=0", "per_page=x", "status=lost"):
        _assert_error(client.get(f"{BASE}/devices?{query}", headers=headers), 400)


def test_get_devices_per_page_default(client, auth):
    """GET /devices: per_page defaults to 10 and page to 1."""
    headers = auth("read", "write")
    for index in range(11):
        identity = json.dumps({"udid": f"PAGING-{index:02d}", "mac": f"00:00:00:00:00:{index:02d}"})
        set_id = admission.auth_set_id(json.dumps(json.loads(identity), sort_keys=True, separators=(",", ":")),
                                       DOC_KEY)
        body = {"device_identity": identity, "key": DOC_KEY}
        assert client.put(f"{BASE}/devices/{set_id}", json=body, headers=headers).status_code == 204
    first = client.get(f"{BASE}/devices", headers=headers)
    assert len(first.get_json()) == 10 and "page=2&per_page=10" in first.headers["Link"]
    assert len(client.get(f"{BASE}/devices?page=2", headers=headers).get_json()) == 1


def test_get_devices_id(client, auth, enroll):
    """GET /devices/{id}: the document's Device fields; 404 for an unknown id."""
    headers = auth("read", "write")
    sim = enroll(serial_number="SN1234567890")
    set_id, device_id = _submitted(client, headers, sim)
    response = client.get(f"{BASE}/devices/{set_id}", headers=headers)
    assert response.status_code == 200
    shown = response.get_json()
    assert DEVICE_FIELDS <= set(shown)
    assert shown["id"] == set_id and shown["device_id"] == device_id and shown["status"] == "pending"
    assert shown["attributes"] == DOC_ATTRIBUTES and shown["key"] == DOC_KEY
    assert shown["request_time"].endswith("Z")
    _assert_error(client.get(f"{BASE}/devices/{DOC_ID}", headers=headers), 404)


def test_get_devices_id_status(client, auth, enroll):
    """GET /devices/{id}/status: {"status": …}; 404 for an unknown id."""
    headers = auth("read", "write")
    set_id, _ = _submitted(client, headers, enroll(serial_number="SN1234567890"))
    response = client.get(f"{BASE}/devices/{set_id}/status", headers=headers)
    assert response.status_code == 200 and response.get_json() == {"status": "pending"}
    _assert_error(client.get(f"{BASE}/devices/{DOC_ID}/status", headers=headers), 404)


def test_put_devices_id_status(client, auth, enroll):
    """PUT /devices/{id}/status with the document's {"status": "accepted"}: 200 {"status": "accepted"};
    an invalid transition or a malformed body is 400; an unknown id 404."""
    headers = auth("read", "write")
    sim = enroll()
    listed = client.get(f"{BASE}/devices", headers=headers).get_json()
    (set_id,) = [s["id"] for s in listed if json.loads(s["device_identity"]).get("udid") == sim.udid]
    response = client.put(f"{BASE}/devices/{set_id}/status", json={"status": "accepted"}, headers=headers)
    assert response.status_code == 200 and response.get_json() == {"status": "accepted"}
    assert sim.idle()[0] == 200  # the accepted device is served
    assert client.get(f"{BASE}/devices/{set_id}/status", headers=headers).get_json() == {"status": "accepted"}
    _assert_error(client.put(f"{BASE}/devices/{set_id}/status", json={"status": "pending"}, headers=headers), 400)
    _assert_error(client.put(f"{BASE}/devices/{set_id}/status", json={}, headers=headers), 400)
    _assert_error(client.put(f"{BASE}/devices/{set_id}/status", data="", headers=headers), 400)
    _assert_error(client.put(f"{BASE}/devices/{DOC_ID}/status", json={"status": "accepted"}, headers=headers), 404)
    # the submitted auth set of the document is accepted the same way
    doc_set, _ = _submitted(client, headers, enroll(serial_number="SN1234567890"))
    accepted = client.put(f"{BASE}/devices/{doc_set}/status", json={"status": "accepted"}, headers=headers)
    assert accepted.status_code == 200 and accepted.get_json() == {"status": "accepted"}


def test_preauthorize_with_the_documents_identity(client, auth, enroll):
    """POST /devices (preauthorization, an mdmserver extension) with the document's identity: sn is the
    serial number preauthorized, and the device with it is accepted when it enrolls."""
    headers = auth("read", "write")
    created = client.post(f"{BASE}/devices", json={"device_identity": DOC_IDENTITY, "key": DOC_KEY}, headers=headers)
    assert created.status_code == 201
    assert [(r["kind"], r["value"]) for r in created.get_json()] == [("serial_number", "SN1234567890")]
    sim = enroll(serial_number="SN1234567890")
    other = enroll()
    statuses = {json.loads(s["device_identity"])["udid"]: s["status"]
                for s in client.get(f"{BASE}/devices", headers=headers).get_json()}
    assert statuses == {sim.udid: "accepted", other.udid: "pending"}
    by_udid = client.post(f"{BASE}/devices", json={"device_identity": json.dumps({"udid": "UDID-1", "mac": "x"})},
                          headers=headers)
    assert by_udid.status_code == 201 and [r["kind"] for r in by_udid.get_json()] == ["udid"]
    _assert_error(client.post(f"{BASE}/devices", json={"device_identity": json.dumps({"mac": "x"})},
                              headers=headers), 400)


def test_preauthorization_keeps_the_documents_identity(client, auth):
    """The preauthorized identity is stored and shown as given (DESIGN.md): the document's identity string
    as ``device_identity`` and its attributes (``mac``, ``sku``, ``sn``) as ``attributes``, in the
    answer and in the listing, like an auth set (the document's Device)."""
    headers = auth("read", "write")
    created = client.post(f"{BASE}/devices", json={"device_identity": DOC_IDENTITY, "key": DOC_KEY}, headers=headers)
    assert created.status_code == 201
    [row] = created.get_json()
    assert row["device_identity"] == DOC_IDENTITY and row["attributes"] == DOC_ATTRIBUTES
    listed = client.get(f"{BASE}/preauthorizations", headers=headers)
    assert listed.status_code == 200
    [shown] = listed.get_json()
    assert shown["id"] == row["id"] and (shown["kind"], shown["value"]) == ("serial_number", "SN1234567890")
    assert shown["device_identity"] == DOC_IDENTITY and shown["attributes"] == DOC_ATTRIBUTES
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", shown["created_ts"])
    # preauthorized again with another identity: the latest one is kept
    again = json.dumps({"sn": "SN1234567890", "mac": "00:01:02:03:04:06"})
    assert client.post(f"{BASE}/devices", json={"device_identity": again}, headers=headers).status_code == 201
    [shown] = client.get(f"{BASE}/preauthorizations", headers=headers).get_json()
    assert shown["device_identity"] == again and shown["attributes"]["mac"] == "00:01:02:03:04:06"


def test_authorization_header_required(client, auth):
    """Every operation: the Authorization header is required (401); a change needs scope write (403)."""
    assert client.get(f"{BASE}/devices").status_code == 401
    _assert_error(client.put(f"{BASE}/devices/{DOC_ID}/status", json={"status": "accepted"},
                             headers=auth("read")), 403)
