"""Identifiers that look numeric but are not keys (Unicode digits, 40 digits) are 4xx, never 500."""

from __future__ import annotations

import pytest

from tests.factories import make_device

ODD = ["²", "99999999999", "9" * 40, "١٢"]


@pytest.mark.parametrize("odd", ODD)
def test_odd_ids_in_paths_and_bodies(client, auth, db_session, odd):
    h = auth("read", "write")
    device = make_device(db_session)
    for method, url in (("GET", f"/api/v1/devices/{odd}/actions"), ("GET", f"/api/v1/devices/{odd}/groups"),
                        ("GET", f"/api/v1/devices/{odd}/custom_attributes"), ("GET", f"/api/v1/users/{odd}"),
                        ("GET", f"/api/v1/device_groups/{odd}"), ("GET", f"/api/v1/profiles/{odd}/assignments"),
                        ("GET", f"/api/v1/devices/{odd}/commands"), ("PATCH", f"/api/v1/devices/{odd}"),
                        ("DELETE", f"/api/management/v1/admission/preauthorizations/{odd}")):
        assert client.open(url, method=method, headers=h).status_code == 404, (method, url)
    for url in (f"/api/v1/devices?filter[id]={odd}", f"/api/v1/devices?filter[group]={odd}",
                f"/api/v1/commands?filter[group]={odd}", f"/api/management/v1/admission/devices?page={odd}",
                f"/api/v1/device_groups?filter[parent]={odd}"):
        assert client.get(url, headers=h).status_code == 400, url
    assert client.get(f"/api/management/v1/admission/devices?device_id={odd}", headers=h).get_json() == []
    bulk = client.post("/api/v1/actions/scan", json={"devices": [odd, device.id]}, headers=h).get_json()
    assert bulk["success_count"] == 1 and bulk["na_list"][0]["remarks"] == "no such device"
    assert client.post("/api/v1/actions/scan", json={"groups": [odd]}, headers=h).status_code == 422
    response = client.put(f"/api/v1/devices/{device.id}/owner", json={"data": {"type": "users", "id": odd}},
                          headers=h)
    assert response.status_code == 422
