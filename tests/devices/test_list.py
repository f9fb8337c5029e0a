"""GET /api/v1/devices (filters, sort, paging, fields, facets), PATCH and DELETE one device."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from mdmserver.audit.models import AuditEvent
from mdmserver.records.attributes import CustomAttribute
from mdmserver.records.commands import Command
from mdmserver.records.devices import Device
from mdmserver.records.users import DeviceOwnership, User
from tests.factories import make_device

JSONAPI = "application/vnd.api+json"


def _fleet(db_session):
    now = datetime.now(UTC)
    devices = [
        make_device(db_session, 0, device_name="Alice iPhone", platform="ios", os_version="17.4",
                    is_supervised=True, last_seen_at=now),
        make_device(db_session, 1, device_name="Bob iPad", platform="ipados", os_version="17.3",
                    is_supervised=False, last_seen_at=now - timedelta(days=10), asset_tag="A-42"),
        make_device(db_session, 2, device_name="Carol Mac", platform="macos", os_version="14.4",
                    is_supervised=True, enrolled=False, admission_status="pending"),
        make_device(db_session, 3, device_name="Dan iPhone", platform="ios", os_version="16.7",
                    is_supervised=False, last_seen_at=now - timedelta(days=40)),
    ]
    db_session.add(CustomAttribute(device_id=devices[0].id, name="dept", value="IT"))
    db_session.add(CustomAttribute(device_id=devices[3].id, name="dept", value="Sales"))
    user = User(name="Alice", email="alice@example.com")
    db_session.add(user)
    db_session.flush()
    db_session.add(DeviceOwnership(device_id=devices[0].id, user_id=user.id))
    db_session.flush()
    return devices


def _ids(response):
    assert response.status_code == 200, response.get_json()
    return [int(item["id"]) for item in response.get_json()["data"]]


def test_list_filters(client, auth, db_session):
    d = _fleet(db_session)
    h = auth("read")
    get = lambda qs: _ids(client.get(f"/api/v1/devices?{qs}", headers=h))  # noqa: E731
    assert get("") == [x.id for x in d]
    assert get("filter[platform]=ios") == [d[0].id, d[3].id]
    assert get("filter[platform]=ios,macos&filter[supervised]=true") == [d[0].id, d[2].id]
    assert get("filter[os_version]=17.*") == [d[0].id, d[1].id]
    assert get("filter[enrolled]=false") == [d[2].id]
    assert get("filter[admission_status]=pending") == [d[2].id]
    assert get(f"filter[serial_number]={d[1].serial_number}") == [d[1].id]
    assert get(f"filter[udid]={d[3].udid}") == [d[3].id]
    assert get("filter[name]=iphone") == [d[0].id, d[3].id]
    assert get("filter[q]=bob") == [d[1].id]
    assert get("filter[q]=A-42") == [d[1].id]
    assert get("filter[custom.dept]=IT") == [d[0].id]
    assert get("filter[custom.dept]=*") == [d[0].id, d[3].id]
    assert get("filter[owner_email]=ALICE@example.com") == [d[0].id]
    since = (datetime.now(UTC) - timedelta(days=20)).isoformat().replace("+00:00", "Z")
    assert get(f"filter[last_seen_after]={since}") == [d[0].id, d[1].id]
    assert get(f"filter[last_seen_before]={since}") == [d[3].id]
    assert get("filter[model]=iPhone15,2") == [d[0].id]
    assert get("filter[q]=100%25") == []  # wildcards are escaped


def test_list_sort_paging_and_fields(client, auth, db_session):
    d = _fleet(db_session)
    h = auth("read")
    assert _ids(client.get("/api/v1/devices?sort=-name", headers=h)) == [d[3].id, d[2].id, d[1].id, d[0].id]
    page = client.get("/api/v1/devices?page[size]=2&page[number]=2&sort=id", headers=h).get_json()
    assert [int(x["id"]) for x in page["data"]] == [d[2].id, d[3].id]
    assert page["meta"]["total"] == 4 and page["links"]["prev"] and page["links"]["next"] is None
    body = client.get("/api/v1/devices?fields[devices]=device_name,platform,owner", headers=h).get_json()
    first = body["data"][0]
    assert set(first["attributes"]) == {"device_name", "platform"}
    assert first["relationships"]["owner"]["data"]["type"] == "users"
    full = client.get("/api/v1/devices", headers=h).get_json()["data"][0]["attributes"]
    assert "push_token" not in full and "unlock_token_encrypted" not in full
    assert full["has_unlock_token"] is False and full["is_supervised"] is True
    assert {"last_push_at", "last_push_status", "push_token_valid"} <= set(full)
    push_only = client.get("/api/v1/devices?fields[devices]=push_token_valid", headers=h).get_json()["data"][0]
    assert set(push_only["attributes"]) == {"push_token_valid"}


def test_facets(client, auth, db_session):
    _fleet(db_session)
    body = client.get("/api/v1/devices?facets=platform,supervised,custom.dept&filter[enrolled]=true",
                      headers=auth("read")).get_json()
    facets = body["meta"]["facets"]
    assert facets["platform"] == [{"value": "ios", "count": 2}, {"value": "ipados", "count": 1}]
    assert {f["value"]: f["count"] for f in facets["supervised"]} == {True: 1, False: 2}
    assert {f["value"]: f["count"] for f in facets["custom.dept"]} == {"IT": 1, "Sales": 1}


def test_bad_list_queries_are_400(client, auth, db_session):
    _fleet(db_session)
    h = auth("read")
    for qs in ("filter[colour]=red", "filter[platform]=android", "filter[supervised]=maybe",
               "filter[last_seen_after]=yesterday", "sort=colour", "page[size]=501", "page[number]=0",
               "facets=colour", "fields[devices]=secret", "fields[things]=a", "filter[group]=999999",
               "filter[custom.b%20d]=x", "filter[q]=%20", "bogus=1"):
        response = client.get(f"/api/v1/devices?{qs}", headers=h)
        assert response.status_code == 400, qs
        assert response.mimetype == JSONAPI and response.get_json()["errors"][0]["source"]


def _patch(client, headers, ident, attributes, type_="devices"):
    return client.patch(f"/api/v1/devices/{ident}", json={"data": {"type": type_, "attributes": attributes}},
                        headers={**headers, "Content-Type": JSONAPI})


def test_patch_asset_fields(client, auth, db_session):
    device = make_device(db_session, platform="ipados", is_supervised=False)
    response = _patch(client, auth("write"), device.serial_number, {
        "asset_tag": "INV-1", "office": "Paris", "purchase_date": "2024-02-01", "purchase_price": "999.5",
        "warranty_expiration": "2027-02-01", "purchase_type": "leased", "description": None,
    })
    assert response.status_code == 200, response.get_json()
    attrs = response.get_json()["data"]["attributes"]
    assert attrs["asset_tag"] == "INV-1" and attrs["purchase_price"] == "999.50"
    assert attrs["purchase_date"] == "2024-02-01" and attrs["warranty_expiration"] == "2027-02-01"
    event = db_session.scalar(select(AuditEvent).where(AuditEvent.action == "device:update"))
    assert event.details["after"]["office"] == "Paris"


def test_patch_name_queues_rename_where_allowed(client, auth, db_session):
    supervised = make_device(db_session, platform="ios", is_supervised=True)
    unsupervised = make_device(db_session, platform="ios", is_supervised=False)
    mac = make_device(db_session, platform="macos", is_supervised=False)
    h = auth("write")
    body = _patch(client, h, supervised.id, {"device_name": "Front desk"}).get_json()
    assert body["data"]["attributes"]["device_name"] == "Front desk"
    command = db_session.scalar(select(Command).where(Command.uuid == body["meta"]["rename_command"]))
    assert command.request_type == "Settings" and command.device_id == supervised.id
    body = _patch(client, h, unsupervised.id, {"device_name": "Lobby"}).get_json()
    assert "supervised" in body["meta"]["rename_not_sent"]
    assert db_session.get(Device, unsupervised.id).device_name == "Lobby"
    body = _patch(client, h, mac.udid, {"device_name": "Build Mac"}).get_json()
    assert "rename_command" in body["meta"]


def test_patch_bad_input(client, auth, db_session):
    device = make_device(db_session)
    h = auth("write")
    bad = _patch(client, h, device.id, {"purchase_price": "-1", "purchase_date": "yesterday", "colour": "red",
                                        "device_name": ""})
    assert bad.status_code == 422
    pointers = {e["source"]["pointer"] for e in bad.get_json()["errors"]}
    assert pointers == {"/data/attributes/purchase_price", "/data/attributes/purchase_date",
                        "/data/attributes/colour", "/data/attributes/device_name"}
    assert _patch(client, h, device.id, {"purchase_price": True}).status_code == 422
    assert _patch(client, h, device.id, {"purchase_price": "NaN"}).status_code == 422
    assert _patch(client, h, device.id, {"office": "x"}, type_="users").status_code == 409
    assert _patch(client, h, "nope", {"office": "x"}).status_code == 404
    response = client.patch(f"/api/v1/devices/{device.id}", data="{", headers={**h, "Content-Type": JSONAPI})
    assert response.status_code == 400
    response = client.patch(f"/api/v1/devices/{device.id}", data="x", headers={**h, "Content-Type": "text/plain"})
    assert response.status_code == 415
    mismatched = client.patch(f"/api/v1/devices/{device.id}", headers={**h, "Content-Type": JSONAPI},
                              json={"data": {"type": "devices", "id": "0", "attributes": {}}})
    assert mismatched.status_code == 409


def test_delete_device(client, auth, db_session):
    device = make_device(db_session)
    db_session.add(CustomAttribute(device_id=device.id, name="dept", value="IT"))
    db_session.flush()
    h = auth("write")
    assert client.delete(f"/api/v1/devices/{device.udid}", headers=h).status_code == 204
    assert db_session.get(Device, device.id) is None
    assert db_session.scalar(select(CustomAttribute).where(CustomAttribute.device_id == device.id)) is None
    assert client.delete(f"/api/v1/devices/{device.udid}", headers=h).status_code == 404


def test_patch_with_another_resources_id_is_409(client, auth, db_session):
    device = make_device(db_session)
    h = {**auth("write"), "Content-Type": "application/vnd.api+json"}
    for data_id, status in ((str(device.id + 1000), 409), (str(device.id), 200), (None, 200)):
        data = {"type": "devices", "attributes": {"asset_tag": "A-1"}}
        if data_id is not None:
            data["id"] = data_id
        response = client.patch(f"/api/v1/devices/{device.id}", json={"data": data}, headers=h)
        assert response.status_code == status, response.get_json()
        if status == 409:
            assert response.get_json()["errors"][0]["source"]["pointer"] == "/data/id"
