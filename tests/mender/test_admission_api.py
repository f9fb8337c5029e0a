"""Mender's v1 admission management API over Apple enrollments."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives import serialization

from mdmserver.admission import service as admission
from mdmserver.pki import x509
from mdmserver.records.devices import Device
from mdmserver.simulator.device import FlaskTransport, SimulatedDevice

BASE = "/api/management/v1/admission"


def _pem() -> str:
    key = x509.generate_private_key("ec")
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_list_get_and_transitions(client, auth, db_session, enrolled):
    h = auth("read", "write")
    first, second = enrolled("ios"), enrolled("macos")
    response = client.get(f"{BASE}/devices", headers=h)
    assert response.status_code == 200 and response.mimetype == "application/json"
    sets = response.get_json()
    assert [json.loads(s["device_identity"])["udid"] for s in sets] == [first.udid, second.udid]
    one = sets[0]
    assert one["status"] == "pending" and one["key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert one["attributes"] == {"model": first.model, "serial_number": first.serial_number, "udid": first.udid}
    assert one["device_identity"] == json.dumps(one["attributes"], sort_keys=True, separators=(",", ":"))
    assert one["request_time"].endswith("Z")
    assert client.get(f"{BASE}/devices/{one['id']}", headers=h).get_json() == one
    assert client.get(f"{BASE}/devices/{one['id']}/status", headers=h).get_json() == {"status": "pending"}

    def put(status):
        return client.put(f"{BASE}/devices/{one['id']}/status", json={"status": status}, headers=h)

    assert put("accepted").get_json() == {"status": "accepted"}
    assert db_session.get(Device, int(one["device_id"])).admission_status == "accepted"
    assert first.idle()[0] == 200  # an accepted device is served
    assert put("accepted").status_code == 200  # no-op
    assert put("pending").status_code == 400
    assert put("rejected").get_json() == {"status": "rejected"}
    assert first.idle()[0] == 403  # a rejected device is refused
    assert put("accepted").status_code == 200
    bad = put("banana")
    assert bad.status_code == 400 and set(bad.get_json()) == {"error", "request_id"}
    assert bad.headers["X-MEN-RequestID"] == bad.get_json()["request_id"]
    assert client.put(f"{BASE}/devices/{one['id']}/status", json={"state": "accepted"}, headers=h).status_code == 400
    assert client.put(f"{BASE}/devices/{one['id']}/status", data="x", headers=h).status_code == 400

    filtered = client.get(f"{BASE}/devices?status=pending", headers=h).get_json()
    assert [s["device_id"] for s in filtered] == [sets[1]["device_id"]]
    by_device = client.get(f"{BASE}/devices?device_id={one['device_id']}", headers=h).get_json()
    assert [s["id"] for s in by_device] == [one["id"]]


def test_paging_links(client, auth, db_session, enrolled):
    h = auth("read")
    for _ in range(3):
        enrolled()
    response = client.get(f"{BASE}/devices?page=2&per_page=1", headers=h)
    assert len(response.get_json()) == 1
    link = response.headers["Link"]
    assert 'page=1&per_page=1>; rel="first"' in link and 'page=1&per_page=1>; rel="prev"' in link
    assert 'page=3&per_page=1>; rel="next"' in link
    last = client.get(f"{BASE}/devices?page=3&per_page=1", headers=h)
    assert 'rel="next"' not in last.headers["Link"]
    for qs in ("page=0", "per_page=501", "page=x", "status=odd", "colour=red"):
        bad = client.get(f"{BASE}/devices?{qs}", headers=h)
        assert bad.status_code == 400 and "error" in bad.get_json(), qs


def test_decommission_refuses_the_device(client, auth, db_session, enrolled):
    h = auth("read", "write")
    sim = enrolled()
    auth_set = client.get(f"{BASE}/devices", headers=h).get_json()[0]
    client.put(f"{BASE}/devices/{auth_set['id']}/status", json={"status": "accepted"}, headers=h)
    assert client.delete(f"{BASE}/devices/{auth_set['id']}", headers=h).status_code == 204
    assert sim.idle()[0] == 403
    assert sim.authenticate() == 403  # even a fresh Authenticate
    gone = client.get(f"{BASE}/devices/{auth_set['id']}", headers=h)
    assert gone.status_code == 404 and set(gone.get_json()) == {"error", "request_id"}
    assert client.get(f"{BASE}/devices", headers=h).get_json() == []


def test_submit_auth_set(client, auth, db_session):
    h = auth("read", "write")
    pem = _pem()
    identity = json.dumps({"udid": "SUBMITTED-UDID", "serial_number": "C0FFEE", "model": "iPhone15,2"})
    canonical = admission.identity_data("SUBMITTED-UDID", "C0FFEE", "iPhone15,2")
    set_id = admission.auth_set_id(canonical, pem)
    body = {"device_identity": identity, "key": pem}
    assert client.put(f"{BASE}/devices/{set_id}", json=body, headers=h).status_code == 204
    shown = client.get(f"{BASE}/devices/{set_id}", headers=h).get_json()
    assert shown["status"] == "pending" and shown["attributes"]["serial_number"] == "C0FFEE"
    assert client.put(f"{BASE}/devices/{set_id}", json=body, headers=h).status_code == 204  # idempotent
    assert client.put(f"{BASE}/devices/{'0' * 64}", json=body, headers=h).status_code == 400
    for broken in ({"device_identity": "{", "key": pem}, {"device_identity": identity, "key": "nope"},
                   {"device_identity": json.dumps({"mac": "x"}), "key": pem},
                   {"device_identity": json.dumps({"serial_number": "x"}), "key": pem},
                   {"device_identity": identity, "key": pem, "extra": 1}, ["x"]):
        response = client.put(f"{BASE}/devices/{set_id}", json=broken, headers=h)
        assert response.status_code == 400, broken
        assert set(response.get_json()) == {"error", "request_id"}


def test_preauthorization_by_serial_is_accepted_on_authenticate(client, auth, db_session, enrolled):
    h = auth("read", "write")
    sim = SimulatedDevice(FlaskTransport(client), platform="ipados")
    created = client.post(f"{BASE}/devices", json={"device_identity": json.dumps({"serial_number": sim.serial_number})},
                          headers=h)
    assert created.status_code == 201
    listed = client.get(f"{BASE}/preauthorizations", headers=h).get_json()
    assert [(p["kind"], p["value"]) for p in listed] == [("serial_number", sim.serial_number)]
    enrolled()  # another device, not preauthorized
    sim.enroll()
    assert sim.authenticate() == 200
    statuses = {json.loads(s["device_identity"])["udid"]: s["status"]
                for s in client.get(f"{BASE}/devices", headers=h).get_json()}
    assert statuses[sim.udid] == "accepted" and sorted(statuses.values()) == ["accepted", "pending"]
    assert client.post(f"{BASE}/devices", json={"device_identity": "{}"}, headers=h).status_code == 400
    assert client.post(f"{BASE}/devices", json={"device_identity": json.dumps({"model": "x"})},
                       headers=h).status_code == 400
    assert client.delete(f"{BASE}/preauthorizations/{listed[0]['id']}", headers=h).status_code == 204
    assert client.delete(f"{BASE}/preauthorizations/{listed[0]['id']}", headers=h).status_code == 404


def test_mender_paths_need_tokens(client, auth, db_session):
    assert client.get(f"{BASE}/devices").status_code == 401
    response = client.put(f"{BASE}/devices/x/status", json={"status": "accepted"}, headers=auth("read"))
    assert response.status_code == 403 and set(response.get_json()) == {"error", "request_id"}
