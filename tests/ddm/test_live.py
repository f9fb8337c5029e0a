"""The DDM loop over a real HTTP socket: a simulated iPhone enrolls, is told by DeclarativeManagement,
syncs its declarations, downloads its legacy profile, and reports status the admin API then shows."""

from __future__ import annotations

import json
import plistlib
import uuid

import httpx

from mdmserver.pki.cms import unwrap_signed
from mdmserver.simulator.device import SimulatedDevice
from tests.ddm.helpers import DEADLINE, fetch_all, report, tokens

JSONAPI = {"Content-Type": "application/vnd.api+json"}


def test_ddm_round_trip_over_http(live, api, transport):
    phone = SimulatedDevice(transport, platform="ios", seed=4242)
    phone.enroll()
    assert phone.authenticate() == 200 and phone.token_update() == 200
    (device,) = [d for d in api.get("/api/v1/devices", params={"page[size]": 500}).json()["data"]
                 if d["attributes"]["udid"] == phone.udid]
    identifier = f"com.example.live.{uuid.uuid4().hex[:8]}"
    body = plistlib.dumps({
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": identifier,
        "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadDisplayName": "Wi-Fi",
        "PayloadContent": [{"PayloadType": "com.apple.wifi.managed", "PayloadVersion": 1,
                            "PayloadIdentifier": f"{identifier}.p", "PayloadUUID": str(uuid.uuid4()).upper(),
                            "SSID_STR": "Live", "EncryptionType": "WPA2", "Password": "live-Secret-1"}]})
    uploaded = api.post("/api/v1/upload/profiles", files={"file": ("wifi.mobileconfig", body)})
    assert uploaded.status_code in (200, 201), uploaded.text
    profile_id = uploaded.json()["data"]["id"]
    created = api.post("/api/v1/blueprints", headers=JSONAPI, json={"data": {"type": "blueprints", "attributes": {
        "name": f"live-{uuid.uuid4().hex[:6]}", "scope": {"devices": [device["id"]]}, "profiles": [profile_id],
        "declarative_profiles": True, "os_update": {"version": "17.6", "deadline": DEADLINE}}}})
    assert created.status_code == 201, created.text
    assert created.json()["meta"]["reconcile"]["declarative_management_queued"] == 1

    status, command = phone.idle()
    assert status == 200 and command["Command"]["RequestType"] == "DeclarativeManagement"
    told = json.loads(command["Command"]["Data"])["SyncTokens"]["DeclarationsToken"]
    assert tokens(phone) == told
    declarations = fetch_all(phone)
    (legacy,) = [d for d in declarations.values() if d["Type"] == "com.apple.configuration.legacy"]
    downloaded = httpx.get(legacy["Payload"]["ProfileURL"], timeout=30)
    assert downloaded.status_code == 200
    assert plistlib.loads(unwrap_signed(downloaded.content).content)["PayloadIdentifier"] == identifier
    assert phone._connect({"UDID": phone.udid, "CommandUUID": command["CommandUUID"],
                           "Status": "Acknowledged"})[0] == 200

    statuses = [{"identifier": d["Identifier"], "server-token": d["ServerToken"], "active": True, "valid": "valid"}
                for d in declarations.values()]
    assert report(phone, {"StatusItems": {
        "device": {"operating-system": {"version": "17.5", "build-version": "21F79"}},
        "softwareupdate": {"install-state": "downloading"},
        "management": {"declarations": {"activations": [s for s in statuses if s["identifier"].endswith(
            ("activation", "status"))], "configurations": [s for s in statuses if not s["identifier"].endswith(
                ("activation", "status"))]}}}, "Errors": []})[0] == 200
    status_doc = api.get(f"/api/v1/devices/{device['id']}/ddm_status").json()["data"]["attributes"]
    assert {i["key_path"]: i["value"] for i in status_doc["status_items"]}["softwareupdate.install-state"] == \
        "downloading"
    assert status_doc["declarations_token"] == told
    listed = api.get(f"/api/v1/devices/{device['id']}/declarations").json()["data"]
    assert len(listed) == len(declarations)
    assert all(r["attributes"]["reported"]["current"] for r in listed)
