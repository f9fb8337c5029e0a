"""Device detail and inventory read-backs, filled by a simulated device's answers."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mdmserver.collaborators import secret_box
from mdmserver.commands import service as commands
from mdmserver.records.devices import Device
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice


@pytest.fixture
def scanned(app, client, db_session, monkeypatch):
    from tests.factories import install_push_topic

    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "auto")
    install_push_topic(db_session, monkeypatch)
    sim = SimulatedDevice(FlaskTransport(client), platform="macos")
    sim.enroll()
    assert sim.authenticate() == 200 and sim.token_update() == 200
    device = db_session.scalar(select(Device).where(Device.udid == sim.udid))
    for request_type in ("DeviceInformation", "SecurityInfo", "ProfileList", "InstalledApplicationList",
                         "CertificateList", "AvailableOSUpdates", "DeviceLocation", "DeviceLocation"):
        commands.enqueue_commands(db_session, [device.id], request_type, None, enqueued_by="t", box=secret_box())
    db_session.commit()
    assert all(s == "Acknowledged" for _u, _t, s in sim.run_session())
    return sim, device.id


def test_detail_by_id_udid_serial(client, auth, scanned) -> None:
    sim, device_id = scanned
    headers = auth("read")
    for ident in (device_id, sim.udid, sim.serial_number):
        response = client.get(f"/api/v1/devices/{ident}", headers=headers)
        assert response.status_code == 200
        attrs = response.json["data"]["attributes"]
        assert response.json["data"]["id"] == str(device_id)
    assert attrs["platform"] == "macos" and attrs["admission_status"] == "accepted" and attrs["enrolled"]
    assert attrs["capacity_gb"] == 119.2 and attrs["device_information"]["SerialNumber"] == sim.serial_number
    assert attrs["has_push_token"] and attrs["last_seen_at"].endswith("Z")
    assert attrs["push_token_valid"] is True
    assert set(attrs) >= {"last_push_at", "last_push_status", "last_push_reason"}
    assert "push_token" not in attrs and "unlock_token_encrypted" not in attrs
    assert client.get("/api/v1/devices/nope", headers=headers).status_code == 404
    assert client.get(f"/api/v1/devices/{device_id}").status_code == 401


def test_inventory_readbacks(client, auth, scanned) -> None:
    sim, device_id = scanned
    headers = auth("read")
    profiles = client.get(f"/api/v1/devices/{device_id}/installed_profiles", headers=headers).json
    assert profiles["meta"]["total"] == 1
    assert "com.apple.mdm" in [p["type"] for p in profiles["data"][0]["attributes"]["payloads"]]
    apps = client.get(f"/api/v1/devices/{device_id}/installed_applications?filter[name]=Pag", headers=headers).json
    assert [a["attributes"]["identifier"] for a in apps["data"]] == ["com.apple.Pages"]
    certs = client.get(f"/api/v1/devices/{device_id}/certificates?sort=-not_after", headers=headers).json["data"]
    identity = [c for c in certs if c["attributes"]["is_identity"]][0]["attributes"]
    assert "mdmserver device" in identity["subject"] and identity["not_after"].endswith("Z")
    locations = client.get(f"/api/v1/devices/{device_id}/locations?page[size]=1", headers=headers).json
    assert locations["meta"]["total"] == 2 and len(locations["data"]) == 1 and locations["links"]["next"]
    security = client.get(f"/api/v1/devices/{device_id}/security", headers=headers).json["data"]["attributes"]
    assert security["fde_enabled"] is True and security["firewall_enabled"] is True
    updates = client.get(f"/api/v1/devices/{device_id}/os_updates", headers=headers).json
    assert updates["data"][0]["attributes"]["version"] == "14.6"  # the simulated Mac runs 14.5


@pytest.mark.parametrize("query", ["page[size]=0", "page[size]=501", "page[number]=x", "filter[nope]=1",
                                   "sort=nope", "filter[is_managed]=maybe"])
def test_bad_queries(client, auth, scanned, query) -> None:
    _sim, device_id = scanned
    assert client.get(f"/api/v1/devices/{device_id}/installed_profiles?{query}", headers=auth("read")).status_code == 400


def test_security_404_before_report(client, auth, app, db_session, monkeypatch) -> None:
    from tests.factories import install_push_topic

    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    install_push_topic(db_session, monkeypatch)
    sim = SimulatedDevice(FlaskTransport(client))
    sim.enroll()
    sim.authenticate()
    device_id = db_session.scalar(select(Device.id).where(Device.udid == sim.udid))
    assert client.get(f"/api/v1/devices/{device_id}/security", headers=auth("read")).status_code == 404


@pytest.mark.parametrize("ident", ["\u00b2", "\u0661\u0662", "99999999999999999999", "12345678901"])
def test_odd_numeric_identifiers_are_404(client, auth, ident) -> None:
    response = client.get(f"/api/v1/devices/{ident}", headers=auth("read"))
    assert response.status_code == 404
    assert response.json["meta"]["request_id"] == response.headers["X-Request-ID"]


def test_lost_mode_acknowledgements_update_the_device(db_session, scanned) -> None:
    sim, device_id = scanned
    device = db_session.get(Device, device_id)
    for request_type, expected in (("EnableLostMode", True), ("DisableLostMode", False)):
        parameters = {"Message": "Call IT"} if request_type == "EnableLostMode" else None
        commands.enqueue_commands(db_session, [device_id], request_type, parameters, enqueued_by="t", box=secret_box())
        db_session.commit()
        assert [s for _u, _t, s in sim.run_session()] == ["Acknowledged"]
        db_session.refresh(device)
        assert device.lost_mode_enabled is expected
