"""Users (device owners) and the device → owner assignment."""

from __future__ import annotations

from tests.factories import make_device

JSONAPI = "application/vnd.api+json"


def _send(client, h, method, url, body):
    return client.open(url, method=method, json=body, headers={**h, "Content-Type": JSONAPI})


def _user(client, h, **attributes):
    response = _send(client, h, "POST", "/api/v1/users", {"data": {"type": "users", "attributes": attributes}})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["data"]


def test_users_and_owners(client, auth, db_session):
    h = auth("read", "write")
    alice = _user(client, h, name="Alice Martin", email="Alice@Example.com", uid="amartin")
    bob = _user(client, h, name="Bob", email="bob@example.com")
    assert alice["attributes"]["email"] == "alice@example.com"
    phone, tablet = make_device(db_session), make_device(db_session)
    owner_url = f"/api/v1/devices/{phone.udid}/owner"
    assert client.get(owner_url, headers=h).get_json()["data"] is None
    response = _send(client, h, "PUT", owner_url, {"data": {"type": "users", "id": alice["id"]}})
    assert response.status_code == 200 and response.get_json()["data"]["id"] == alice["id"]
    _send(client, h, "PUT", f"/api/v1/devices/{tablet.id}/owner", {"data": {"type": "users", "id": alice["id"]}})
    # reassign, read both ways, filter the device list by owner email
    _send(client, h, "PUT", f"/api/v1/devices/{tablet.id}/owner", {"data": {"type": "users", "id": bob["id"]}})
    owned = client.get(f"/api/v1/users/{alice['id']}/devices", headers=h).get_json()["data"]
    assert [int(d["id"]) for d in owned] == [phone.id]
    assert owned[0]["relationships"]["owner"]["data"] == {"type": "users", "id": alice["id"]}
    listed = client.get("/api/v1/devices?filter[owner_email]=bob@example.com", headers=h).get_json()["data"]
    assert [int(d["id"]) for d in listed] == [tablet.id]
    assert _send(client, h, "PUT", owner_url, {"data": None}).get_json()["data"] is None
    assert client.get(owner_url, headers=h).get_json()["data"] is None
    # users list, patch, delete
    found = client.get("/api/v1/users?filter[email]=ALICE@example.com", headers=h).get_json()["data"]
    assert [u["id"] for u in found] == [alice["id"]]
    assert [u["id"] for u in client.get("/api/v1/users?filter[name]=mart", headers=h).get_json()["data"]] == [
        alice["id"]]
    patched = _send(client, h, "PATCH", f"/api/v1/users/{alice['id']}",
                    {"data": {"type": "users", "id": alice["id"], "attributes": {"name": "Alice M."}}})
    assert patched.get_json()["data"]["attributes"]["name"] == "Alice M."
    assert client.delete(f"/api/v1/users/{bob['id']}", headers=h).status_code == 204
    assert client.get(f"/api/v1/devices/{tablet.id}/owner", headers=h).get_json()["data"] is None


def test_bad_user_input(client, auth, db_session):
    h = auth("read", "write")
    alice = _user(client, h, name="Alice", email="alice@example.com", uid="a1")
    device = make_device(db_session)
    create = lambda attrs: _send(client, h, "POST", "/api/v1/users",  # noqa: E731
                                 {"data": {"type": "users", "attributes": attrs}})
    assert create({"name": "Other", "email": "ALICE@example.com"}).status_code == 409
    assert create({"name": "Other", "email": "o@example.com", "uid": "a1"}).status_code == 409
    bad = create({"name": "", "email": "nope", "colour": "red"})
    assert bad.status_code == 422
    assert {e["source"]["pointer"] for e in bad.get_json()["errors"]} == {
        "/data/attributes/name", "/data/attributes/email", "/data/attributes/colour"}
    assert create({"email": "x@example.com"}).status_code == 422
    owner_url = f"/api/v1/devices/{device.id}/owner"
    assert _send(client, h, "PUT", owner_url, {"data": {"type": "users", "id": "424242"}}).status_code == 422
    assert _send(client, h, "PUT", owner_url, {"data": {"type": "devices", "id": alice["id"]}}).status_code == 422
    assert _send(client, h, "PUT", owner_url, {"owner": alice["id"]}).status_code == 422
    assert _send(client, h, "PUT", "/api/v1/devices/NOPE/owner",
                 {"data": {"type": "users", "id": alice["id"]}}).status_code == 404
    assert client.get("/api/v1/users/abc", headers=h).status_code == 404
    assert client.get("/api/v1/users?filter[phone]=1", headers=h).status_code == 400
    mismatch = _send(client, h, "PATCH", f"/api/v1/users/{alice['id']}",
                     {"data": {"type": "users", "id": "0", "attributes": {"name": "x"}}})
    assert mismatch.status_code == 409
