"""Binary plists whose arrays reference the same array twice, 60 levels deep (2**60 paths, ~460 bytes).

Each entry point answers 4xx at once and stores nothing. The bombs are genuinely signed by an enrolled
simulated device and sent over real HTTP; "at once" is a wall-clock bound of a few seconds (before the
fix, each request walked every path: minutes to forever).
"""

from __future__ import annotations

import plistlib
import time

import httpx
import pytest

from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.pki import cms
from mdmserver.pki.service import get_server_identity
from mdmserver.simulator.device import HttpxTransport, SimulatedDevice
from tests.factories import install_push_topic
from tests.protocol.plistbomb import bomb_plist, shared_chain, write_binary_plist

FAST = 3.0  # seconds; the same requests took from 29 s to "forever" before the fix


@pytest.fixture(scope="module")
def live(live_server):
    live_server.app.config["ENROLL_RATE_LIMIT"] = 0
    live_server.app.config["ADMISSION_POLICY"] = "auto"
    with live_server.app.app_context():
        install_push_topic(db.session)
    return live_server


@pytest.fixture(scope="module")
def device(live) -> SimulatedDevice:
    sim = SimulatedDevice(HttpxTransport(live.url, timeout=60), seed=4242)
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    return sim


@pytest.fixture(scope="module")
def api(live) -> httpx.Client:
    return httpx.Client(base_url=live.url, headers=live.auth("read", "write", "secrets"), timeout=60)


def _timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def test_the_bomb_is_small_and_really_shared() -> None:
    body = bomb_plist({"UDID": "X"})
    assert len(body) < 600
    node = plistlib.loads(body)["Bomb"]
    for _ in range(60):
        assert node[0] is node[1]
        node = node[0]


@pytest.mark.parametrize("path", ["/mdm/checkin", "/mdm"])
def test_checkin_bomb_is_refused_at_once(device, api, path) -> None:
    message = {"MessageType": "TokenUpdate", "UDID": device.udid, "Topic": device.topic,
               "Token": b"\x01" * 32, "PushMagic": "BOMB-MAGIC"}
    (status, body), elapsed = _timed(lambda: device.send(path, bomb_plist(message)))
    assert status == 400, (status, body[:200])
    assert b"shared references are not allowed" in body
    assert elapsed < FAST, f"{path} took {elapsed:.1f}s"
    detail = api.get(f"/api/v1/devices/{device.udid}").json()["data"]["attributes"]
    assert "BOMB-MAGIC" not in str(detail)


@pytest.mark.parametrize("path", ["/mdm/connect", "/mdm"])
def test_command_result_bomb_is_refused_and_not_stored(device, api, path) -> None:
    queued = api.post(f"/api/v1/devices/{device.udid}/commands", json={"request_type": "ProfileList"})
    assert queued.status_code in (201, 202), queued.text
    status, command = device.idle()
    assert status == 200 and command is not None
    uuid = command["CommandUUID"]
    result = {"UDID": device.udid, "Status": "Acknowledged", "CommandUUID": uuid}
    (status, body), elapsed = _timed(lambda: device.send(path, bomb_plist(result, key="ProfileList")))
    assert status == 400, (status, body[:200])
    assert elapsed < FAST, f"{path} took {elapsed:.1f}s"
    stored = api.get(f"/api/v1/commands/{uuid}").json()["data"]["attributes"]
    assert stored["status"] == "sent" and stored["result"] is None and stored["completed_at"] is None
    # the device can still answer properly afterwards
    assert device.send("/mdm/connect", {**result, "ProfileList": []})[0] == 200
    assert api.get(f"/api/v1/commands/{uuid}").json()["data"]["attributes"]["status"] == "acknowledged"


def _profile_template(identifier: str) -> dict:
    return {
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": identifier,
        "PayloadUUID": "6A0C1D1E-0000-4000-8000-00000000B0B0", "PayloadDisplayName": "Bomb",
        "PayloadContent": [{
            "PayloadType": "com.apple.wifi.managed", "PayloadVersion": 1, "PayloadIdentifier": f"{identifier}.p",
            "PayloadUUID": "6A0C1D1E-0000-4000-8000-00000000B0B1", "SSID_STR": "Office",
        }],
    }


def _upload(api, data: bytes):
    return api.post("/api/v1/upload/profiles", files={"file": ("bomb.mobileconfig", data, "application/octet-stream")})


def test_profile_upload_bomb_is_refused_and_not_stored(api) -> None:
    template = _profile_template("com.example.bomb")
    template["PayloadContent"][0]["Bomb"] = shared_chain(60)  # inside a payload, where to_json would walk it
    data = write_binary_plist(template)
    assert len(data) < 1000
    response, elapsed = _timed(lambda: _upload(api, data))
    assert response.status_code == 422, response.text[:300]
    error = response.json()["errors"][0]
    assert error["code"] == "shared_reference"
    assert error["source"]["pointer"].startswith("/PayloadContent/0/Bomb/")
    assert response.json()["meta"]["request_id"]
    assert elapsed < FAST, f"upload took {elapsed:.1f}s"
    # a bomb at the top level (not under a payload) is refused the same way
    response = _upload(api, bomb_plist(_profile_template("com.example.bomb2")))
    assert response.status_code == 422 and response.json()["errors"][0]["code"] == "shared_reference"
    listed = api.get("/api/v1/profiles").json()
    assert not [p for p in listed["data"] if "bomb" in str(p["attributes"]).lower()]


def test_signed_profile_bomb_is_refused(live, api) -> None:
    """The same bomb inside a CMS signature the server trusts (its own identity) is refused after unwrap."""
    with live.app.app_context():
        certificate, key = get_server_identity(db.session, secret_box())
    data = cms.sign(bomb_plist(_profile_template("com.example.bomb3")), certificate, key)
    response, elapsed = _timed(lambda: _upload(api, data))
    assert response.status_code == 422 and response.json()["errors"][0]["code"] == "shared_reference"
    assert elapsed < FAST
