"""The admin API end to end over real HTTP with simulated devices: Mender admission, the device list,
groups and custom attributes, a bulk action answered by the devices, history, profile assignment,
retirement."""

from __future__ import annotations

import json
import plistlib
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.records.push import PushRequest
from mdmserver.simulator.device import HttpxTransport, SimulatedDevice
from tests.factories import install_push_topic

ADM = "/api/management/v1/admission"
JSONAPI = {"Content-Type": "application/vnd.api+json"}


@pytest.fixture
def live(live_server, monkeypatch):
    monkeypatch.setitem(live_server.app.config, "ENROLL_RATE_LIMIT", 0)
    with live_server.app.app_context():
        install_push_topic(db.session, monkeypatch)
    return live_server


def test_admin_api_with_simulated_devices(live):
    api = httpx.Client(base_url=live.url, headers=live.auth("read", "write"), timeout=30)
    transport = HttpxTransport(live.url)
    sims = [SimulatedDevice(transport, platform=p, seed=i) for i, p in enumerate(("ios", "ipados", "macos", "ios"))]
    for sim in sims:
        sim.enroll()
        assert sim.authenticate() == 200

    # admission through the Mender API: accept three, reject the last
    auth_sets = api.get(f"{ADM}/devices?status=pending").json()
    by_udid = {json.loads(a["device_identity"])["udid"]: a for a in auth_sets}
    assert set(by_udid) == {s.udid for s in sims}
    for sim in sims[:3]:
        assert api.put(f"{ADM}/devices/{by_udid[sim.udid]['id']}/status", json={"status": "accepted"}).status_code == 200
    assert api.put(f"{ADM}/devices/{by_udid[sims[3].udid]['id']}/status", json={"status": "rejected"}).json() == {
        "status": "rejected"}
    for sim in sims[:3]:
        assert sim.token_update() == 200
    assert sims[3].token_update() == 403

    listed = api.get("/api/v1/devices?facets=platform,admission_status&sort=id").json()
    assert listed["meta"]["total"] == 4
    assert {f["value"]: f["count"] for f in listed["meta"]["facets"]["admission_status"]} == {
        "accepted": 3, "rejected": 1}
    ids = {item["attributes"]["udid"]: int(item["id"]) for item in listed["data"]}
    phone, tablet, mac, refused = (ids[s.udid] for s in sims)

    # custom attributes → smart group; a static group; a bulk scan of both, answered by the devices
    for device_id in (phone, tablet):
        api.post(f"/api/v1/devices/{device_id}/custom_attributes", headers=JSONAPI,
                 json={"data": {"type": "custom_attributes", "attributes": {"dept": "Sales"}}})
    smart = api.post("/api/v1/device_groups", headers=JSONAPI, json={"data": {"type": "device_groups", "attributes": {
        "name": "Sales", "kind": "smart", "filter": {"custom.dept": "Sales"}}}}).json()["data"]["id"]
    static = api.post("/api/v1/device_groups", headers=JSONAPI, json={"data": {"type": "device_groups", "attributes": {
        "name": "Macs"}}}).json()["data"]["id"]
    api.post(f"/api/v1/device_groups/{static}/relationships/devices", headers=JSONAPI,
             json={"data": [{"type": "devices", "id": str(mac)}]})
    result = api.post("/api/v1/actions/scan", json={"groups": [int(smart), int(static)], "devices": [refused]}).json()
    assert result["success_count"] == 3 and result["not_applicable_count"] == 1
    assert result["na_list"][0]["remarks"] == "the device's admission status is rejected"
    with live.app.app_context():
        pushes = db.session.scalar(select(func.count()).select_from(PushRequest))
    assert pushes == 3  # one wake-up push owed per device through the outbox
    for sim in sims[:3]:
        handled = sim.run_session()
        assert [t for _, t, _ in handled] == ["DeviceInformation", "SecurityInfo", "ProfileList",
                                              "InstalledApplicationList", "CertificateList"]
    history = api.get(f"/api/v1/devices/{tablet}/commands?filter[status]=acknowledged").json()
    assert history["meta"]["total"] == 5
    assert all(c["attributes"]["remarks"] == "the device acknowledged the command" for c in history["data"])
    detail = api.get("/api/v1/devices?filter[platform]=ipados").json()["data"][0]["attributes"]
    assert detail["os_version"] == sims[1].os_version and detail["inventory_updated_at"]

    # a per-device action the device refuses shows up in the history with its remark
    sims[0].answer_overrides["DeviceLock"] = "Error"
    assert api.post(f"/api/v1/devices/{phone}/actions/lock", json={"parameters": {"message": "Hi"}}).status_code == 202
    sims[0].run_session()
    latest = api.get(f"/api/v1/devices/{phone}/commands/latest").json()["data"]["attributes"]
    assert latest["request_type"] == "DeviceLock" and latest["status"] == "error"
    assert latest["remarks"].startswith("the device reported an error: ")

    # profile assignment to the smart group: installed on both members, read back from ProfileList
    with live.app.app_context():
        from mdmserver.profiles.service import upload_profile
        body = plistlib.dumps({"PayloadType": "Configuration", "PayloadVersion": 1,
                               "PayloadIdentifier": "com.example.e2e", "PayloadUUID": str(uuid.uuid4()).upper(),
                               "PayloadDisplayName": "E2E", "PayloadContent": []})
        profile, _ = upload_profile(db.session, body, box=secret_box())
        db.session.commit()
        profile_id = profile.id
    assigned = api.post(f"/api/v1/profiles/{profile_id}/assignments", json={"groups": [int(smart)]}).json()
    assert assigned["install_queued"] == 2
    for sim in sims[:2]:
        assert [t for _, t, s in sim.run_session()] == ["InstallProfile"]
    states = api.get(f"/api/v1/profiles/{profile_id}/assignments/status").json()["data"]
    assert sorted(s["attributes"]["status"] for s in states) == ["installed", "installed"]
    # leaving the smart group removes it
    api.delete(f"/api/v1/devices/{tablet}/custom_attributes?names=dept")
    assert [t for _, t, s in sims[1].run_session()] == ["RemoveProfile"]
    states = {s["attributes"]["device_id"]: s["attributes"]["status"]
              for s in api.get(f"/api/v1/profiles/{profile_id}/assignments/status").json()["data"]}
    assert states == {phone: "installed", tablet: "removed"}

    # retire the Mac: RemoveProfile of the enrollment profile it really has (no planted data), the
    # device acknowledges, leaves management and checks out; it is retired from the acknowledgement on
    retire = api.post(f"/api/v1/devices/{mac}/actions/retire")
    assert retire.status_code == 202
    actions = {a["id"]: a["attributes"] for a in api.get(f"/api/v1/devices/{mac}/actions").json()["data"]}
    assert actions["complete_wipe"]["is_enabled"] is True  # not retired before the device answered
    assert actions["retire"]["reason"].startswith("a retirement is already pending")
    assert [(t, s) for _, t, s in sims[2].run_session()] == [("RemoveProfile", "Acknowledged")]
    assert sims[2].enrolled is False and sims[2].profiles == {}
    retired = api.get("/api/v1/devices?filter[retired]=true&filter[enrolled]=false").json()["data"]
    assert [int(d["id"]) for d in retired] == [mac]
    listing = api.get(f"/api/v1/devices/{mac}/actions").json()
    actions = {a["id"]: a["attributes"] for a in listing["data"]}
    assert actions["scan"]["is_enabled"] is False
    assert listing["meta"]["retirement"]["status"] == "completed"

    # decommission through Mender: the device is refused from then on
    assert api.delete(f"{ADM}/devices/{by_udid[sims[0].udid]['id']}").status_code == 204
    assert sims[0].idle()[0] == 403
    api.close()
    transport.close()
