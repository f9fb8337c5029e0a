"""commandment's "Non-Standardised API" (seed 000), request by request, against the app.

Each test is named after the document's section (its method and path). The document gives no example
bodies; the expected answers are the document's: the media types it names in ``Accept``, a JSON:API
object for the upload, a pseudo JSON:API singleton for the organization, and a command queued by the
device shortcuts. Devices come from the simulator, enrolled with automatic admission, so the commands
they are sent are delivered and answered.
"""

from __future__ import annotations

import io
import plistlib
import uuid

import pytest
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization

from mdmserver.simulator.device import FlaskTransport, SimulatedDevice
from tests.factories import install_push_topic

JSONAPI = "application/vnd.api+json"
ASPEN = "application/x-apple-aspen-config"


@pytest.fixture
def device(app, client, db_session, monkeypatch):
    """A simulated iPhone, enrolled and accepted, with its UnlockToken sent (TokenUpdate)."""
    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "auto")
    install_push_topic(db_session, monkeypatch)
    sim = SimulatedDevice(FlaskTransport(client), platform="ios")
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    return sim


def _device_id(client, headers, sim: SimulatedDevice) -> str:
    return client.get(f"/api/v1/devices/{sim.udid}", headers=headers).get_json()["data"]["id"]


def _profile_bytes(identifier: str = "com.example.compat.wifi") -> bytes:
    return plistlib.dumps({
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": identifier,
        "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadDisplayName": "Wi-Fi",
        "PayloadContent": [{"PayloadType": "com.apple.wifi.managed", "PayloadVersion": 1,
                            "PayloadIdentifier": f"{identifier}.wifi", "PayloadUUID": str(uuid.uuid4()).upper(),
                            "SSID_STR": "Office", "EncryptionType": "None", "AutoJoin": True}],
    })


def _upload(client, headers, data: bytes):
    return client.post("/api/v1/upload/profiles", headers=headers, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(data), "wifi.mobileconfig", "application/octet-stream")})


def _assert_error(response, status: int) -> None:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert body["errors"] and body["meta"]["request_id"] == response.headers["X-Request-ID"]


def test_post_upload_profiles(client, auth):
    """POST /api/v1/upload/profiles: multipart/form-data upload; a JSON:API object of the new profile
    and its payload ids; an encrypted profile is refused; form-urlencoded is not supported."""
    headers = auth("read", "write")
    response = _upload(client, headers, _profile_bytes())
    assert response.status_code == 201 and response.mimetype == JSONAPI
    data = response.get_json()["data"]
    assert data["type"] == "profiles" and data["id"]
    assert data["attributes"]["PayloadIdentifier"] == "com.example.compat.wifi"
    payloads = data["relationships"]["payloads"]["data"]
    assert len(payloads) == 1 and payloads[0]["type"] == "payloads" and payloads[0]["id"]

    encrypted = plistlib.dumps({
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.example.enc",
        "PayloadUUID": str(uuid.uuid4()).upper(), "EncryptedPayloadContent": b"\x30\x00",
    })
    assert 400 <= _upload(client, headers, encrypted).status_code < 500
    form = client.post("/api/v1/upload/profiles", headers=headers, data={"file": "x"},
                       content_type="application/x-www-form-urlencoded")
    _assert_error(form, 415)


def test_get_organization(client, auth):
    """GET /api/v1/organization: a pseudo JSON:API document of the singleton."""
    response = client.get("/api/v1/organization", headers=auth("read"))
    assert response.status_code == 200 and response.mimetype == JSONAPI
    data = response.get_json()["data"]
    assert data["type"] == "organizations" and "name" in data["attributes"]


def test_get_rsa_private_key_download(client, auth):
    """GET /api/v1/rsa_private_keys/(id)/download: Accept application/x-pem-file → PEM,
    application/pkcs8 → DER; the key needs the secrets scope."""
    keys = client.get("/api/v1/rsa_private_keys", headers=auth("read")).get_json()["data"]
    key_id = keys[0]["id"]
    url = f"/api/v1/rsa_private_keys/{key_id}/download"
    secrets = auth("read", "secrets")
    pem = client.get(url, headers={**secrets, "Accept": "application/x-pem-file"})
    assert pem.status_code == 200 and pem.mimetype == "application/x-pem-file"
    assert serialization.load_pem_private_key(pem.data, password=None)
    der = client.get(url, headers={**secrets, "Accept": "application/pkcs8"})
    assert der.status_code == 200 and der.mimetype == "application/pkcs8"
    assert serialization.load_der_private_key(der.data, password=None)
    _assert_error(client.get(url, headers={**auth("read"), "Accept": "application/x-pem-file"}), 403)
    _assert_error(client.get("/api/v1/rsa_private_keys/999999/download", headers=secrets), 404)


@pytest.mark.parametrize("accept", ["application/x-pem-file", "application/x-x509-user-cert",
                                    "application/x-x509-ca-cert"])
def test_get_download_certificates(client, auth, accept):
    """GET /api/v1/download/certificates/(id): a certificate in each media type the document names."""
    headers = auth("read")
    certificate_id = client.get("/api/v1/certificates", headers=headers).get_json()["data"][0]["id"]
    response = client.get(f"/api/v1/download/certificates/{certificate_id}", headers={**headers, "Accept": accept})
    assert response.status_code == 200 and response.mimetype == accept
    if response.data.startswith(b"-----BEGIN"):
        assert cx509.load_pem_x509_certificate(response.data)
    else:
        assert cx509.load_der_x509_certificate(response.data)
    _assert_error(client.get("/api/v1/download/certificates/999999", headers=headers), 404)


def test_get_download_profiles(client, auth):
    """GET /api/v1/download/profiles/(id): the profile reconstructed, application/x-apple-aspen-config."""
    headers = auth("read", "write", "secrets")
    original = _profile_bytes("com.example.compat.download")
    profile_id = _upload(client, headers, original).get_json()["data"]["id"]
    response = client.get(f"/api/v1/download/profiles/{profile_id}", headers={**headers, "Accept": ASPEN})
    assert response.status_code == 200 and response.mimetype == ASPEN
    rebuilt = plistlib.loads(response.data)
    assert rebuilt["PayloadIdentifier"] == "com.example.compat.download"
    assert rebuilt["PayloadContent"][0]["SSID_STR"] == "Office"
    _assert_error(client.get("/api/v1/download/profiles/999999", headers=headers), 404)


def test_get_devices_inventory(client, auth, device):
    """GET /api/v1/devices/inventory/(id): the device is told to produce a full inventory now."""
    headers = auth("read", "write")
    device_id = _device_id(client, headers, device)
    response = client.get(f"/api/v1/devices/inventory/{device_id}", headers=headers)
    assert response.status_code == 202
    queued = {c["attributes"]["request_type"] for c in response.get_json()["data"]}
    assert {"DeviceInformation", "SecurityInfo", "ProfileList"} <= queued
    answered = {request_type for _, request_type, _ in device.run_session()}
    assert queued <= answered
    _assert_error(client.get("/api/v1/devices/inventory/999999", headers=headers), 404)


def test_post_devices_test(client, auth, device):
    """POST /api/v1/devices/test/(id): a quick command check, with no body and no Content-Type."""
    headers = auth("read", "write")
    device_id = _device_id(client, headers, device)
    response = client.post(f"/api/v1/devices/test/{device_id}", headers=headers)
    assert response.status_code == 201 and response.mimetype == JSONAPI
    command = response.get_json()["data"]
    assert command["type"] == "commands" and command["attributes"]["request_type"] == "DeviceInformation"
    assert [(uuid_, rt) for uuid_, rt, _ in device.run_session()] == [(command["id"], "DeviceInformation")]
    # a body that is sent is still checked; one that names a command queues that one
    named = client.post(f"/api/v1/devices/test/{device_id}", headers=headers, json={"request_type": "ProfileList"})
    assert named.status_code == 201 and named.get_json()["data"]["attributes"]["request_type"] == "ProfileList"
    _assert_error(client.post(f"/api/v1/devices/test/{device_id}", headers=headers, data="x"), 415)
    _assert_error(client.post(f"/api/v1/devices/test/{device_id}", headers=headers, json={"request_type": ""}), 422)
    _assert_error(client.post(f"/api/v1/devices/test/{device_id}", headers=headers, data="{",
                              content_type="application/json"), 400)
    _assert_error(client.post("/api/v1/devices/test/999999", headers=headers), 404)
    _assert_error(client.post(f"/api/v1/devices/test/{device_id}", headers=auth("read")), 403)


def test_get_devices_clear_passcode(client, auth, device):
    """GET /api/v1/devices/(id)/clear_passcode: a ClearPasscode command is queued (with the stored
    UnlockToken) and the device clears its passcode."""
    headers = auth("read", "write")
    device_id = _device_id(client, headers, device)
    response = client.get(f"/api/v1/devices/{device_id}/clear_passcode", headers=headers)
    assert response.status_code == 202
    command = response.get_json()["data"]
    assert command["attributes"]["request_type"] == "ClearPasscode"
    assert [(uuid_, status) for uuid_, _, status in device.run_session()] == [(command["id"], "Acknowledged")]
    _assert_error(client.get(f"/api/v1/devices/{device_id}/clear_passcode", headers=auth("read")), 403)
