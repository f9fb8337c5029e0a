"""Device groups: nesting, static members, smart groups, membership both ways, bad input."""

from __future__ import annotations

from mdmserver.records.attributes import CustomAttribute
from tests.factories import make_device

JSONAPI = "application/vnd.api+json"


def _post(client, h, url, body):
    return client.post(url, json=body, headers={**h, "Content-Type": JSONAPI})


def _group(client, h, **attributes):
    response = _post(client, h, "/api/v1/device_groups", {"data": {"type": "device_groups", "attributes": attributes}})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["data"]


def _members(client, h, group_id, qs=""):
    response = client.get(f"/api/v1/device_groups/{group_id}/devices{qs}", headers=h)
    assert response.status_code == 200, response.get_json()
    return sorted(int(d["id"]) for d in response.get_json()["data"])


def _link(ids):
    return {"data": [{"type": "devices", "id": str(i)} for i in ids]}


def test_static_smart_and_nested_membership(client, auth, db_session):
    h = auth("read", "write")
    ios = make_device(db_session, platform="ios")
    mac = make_device(db_session, platform="macos")
    ipad = make_device(db_session, platform="ipados")
    db_session.add(CustomAttribute(device_id=ipad.id, name="dept", value="Sales"))
    db_session.flush()
    parent = _group(client, h, name="Company")
    static = _group(client, h, name="Paris", parent_id=int(parent["id"]))
    smart = _group(client, h, name="Sales", kind="smart", filter={"custom.dept": "Sales"},
                   parent_id=int(parent["id"]))
    assert smart["attributes"]["filter"] == {"custom.dept": "Sales"}
    response = _post(client, h, f"/api/v1/device_groups/{static['id']}/relationships/devices",
                     _link([ios.id, ios.udid, mac.serial_number]))
    assert response.status_code == 200 and response.get_json()["meta"]["added"] == 2
    again = _post(client, h, f"/api/v1/device_groups/{static['id']}/relationships/devices", _link([ios.id]))
    assert again.get_json()["meta"]["added"] == 0
    assert _members(client, h, static["id"]) == sorted([ios.id, mac.id])
    assert _members(client, h, smart["id"]) == [ipad.id]
    assert _members(client, h, parent["id"]) == sorted([ios.id, mac.id, ipad.id])
    assert _members(client, h, parent["id"], "?filter[platform]=macos") == [mac.id]
    # the device list's group filter says the same
    listed = client.get(f"/api/v1/devices?filter[group]={parent['id']}&facets=platform", headers=h).get_json()
    assert listed["meta"]["total"] == 3 and len(listed["meta"]["facets"]["platform"]) == 3
    # and the other way round
    names = [g["attributes"]["name"] for g in client.get(f"/api/v1/devices/{ipad.udid}/groups",
                                                         headers=h).get_json()["data"]]
    assert names == ["Company", "Sales"]
    names = [g["attributes"]["name"] for g in client.get(f"/api/v1/devices/{ios.id}/groups",
                                                         headers=h).get_json()["data"]]
    assert names == ["Company", "Paris"]
    # a smart group filtering on another group
    nested = _group(client, h, name="Paris Macs", kind="smart", filter={"group": static["id"], "platform": "macos"})
    assert _members(client, h, nested["id"]) == [mac.id]
    removed = client.delete(f"/api/v1/device_groups/{static['id']}/relationships/devices",
                            json=_link([mac.id]), headers={**h, "Content-Type": JSONAPI})
    assert removed.get_json()["meta"]["removed"] == 1
    assert _members(client, h, nested["id"]) == []
    # listing and filtering groups
    listed = client.get(f"/api/v1/device_groups?filter[parent]={parent['id']}&sort=name", headers=h).get_json()
    assert [g["attributes"]["name"] for g in listed["data"]] == ["Paris", "Sales"]
    roots = client.get("/api/v1/device_groups?filter[parent]=null", headers=h).get_json()
    assert [g["attributes"]["name"] for g in roots["data"]] == ["Company", "Paris Macs"]


def test_group_changes_and_deletes(client, auth, db_session):
    h = auth("read", "write")
    a = _group(client, h, name="A")
    b = _group(client, h, name="B", parent_id=int(a["id"]))
    patch = lambda gid, attrs: client.patch(  # noqa: E731
        f"/api/v1/device_groups/{gid}", json={"data": {"type": "device_groups", "attributes": attrs}},
        headers={**h, "Content-Type": JSONAPI})
    assert patch(a["id"], {"description": "top"}).get_json()["data"]["attributes"]["description"] == "top"
    assert patch(a["id"], {"parent_id": int(b["id"])}).status_code == 422  # cycle
    assert patch(a["id"], {"parent_id": int(a["id"])}).status_code == 422
    assert patch(a["id"], {"kind": "smart"}).status_code == 422
    assert patch(a["id"], {"name": "B"}).status_code == 409
    assert client.delete(f"/api/v1/device_groups/{a['id']}", headers=h).status_code == 409  # has subgroups
    smart = _group(client, h, name="S", kind="smart", filter={"group": b["id"]})
    assert client.delete(f"/api/v1/device_groups/{b['id']}", headers=h).status_code == 409  # referenced
    assert client.delete(f"/api/v1/device_groups/{smart['id']}", headers=h).status_code == 204
    assert client.delete(f"/api/v1/device_groups/{b['id']}", headers=h).status_code == 204
    assert client.get(f"/api/v1/device_groups/{b['id']}", headers=h).status_code == 404


def test_bad_group_input(client, auth, db_session):
    h = auth("read", "write")
    device = make_device(db_session)
    static = _group(client, h, name="Static")
    smart = _group(client, h, name="Smart", kind="smart", filter={"platform": "ios"})

    def create(attributes):
        return _post(client, h, "/api/v1/device_groups", {"data": {"type": "device_groups", "attributes": attributes}})

    assert create({"name": "Static"}).status_code == 409
    assert create({"name": ""}).status_code == 422
    assert create({"name": "x", "kind": "magic"}).status_code == 422
    assert create({"name": "x", "kind": "smart"}).status_code == 422
    assert create({"name": "x", "filter": {"platform": "ios"}}).status_code == 422
    assert create({"name": "x", "kind": "smart", "filter": {"colour": "red"}}).status_code == 422
    assert create({"name": "x", "kind": "smart", "filter": {"platform": "android"}}).status_code == 422
    assert create({"name": "x", "kind": "smart", "filter": {"platform": ["ios"]}}).status_code == 422
    assert create({"name": "x", "kind": "smart", "filter": {"group": "424242"}}).status_code == 422
    assert create({"name": "x", "parent_id": 424242}).status_code == 422
    assert create({"name": "x", "parent_id": "1"}).status_code == 422
    # a smart group whose filter reaches itself
    loop = create({"name": "loop", "kind": "smart", "filter": {"group": smart["id"]}, "parent_id": int(smart["id"])})
    assert loop.status_code == 422
    members = f"/api/v1/device_groups/{static['id']}/relationships/devices"
    bad = _post(client, h, members, {"data": [{"type": "devices", "id": str(device.id)},
                                              {"type": "devices", "id": "NOPE"}]})
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["source"]["pointer"] == "/data/1/id"
    assert _members(client, h, static["id"]) == []  # nothing half-applied
    assert _post(client, h, members, {"data": []}).status_code == 422
    assert _post(client, h, members, {"data": [{"type": "users", "id": "1"}]}).status_code == 422
    assert _post(client, h, f"/api/v1/device_groups/{smart['id']}/relationships/devices",
                 _link([device.id])).status_code == 409
    assert client.get("/api/v1/device_groups/abc", headers=h).status_code == 404
    assert client.get("/api/v1/device_groups?filter[kind]=odd", headers=h).status_code == 400
    assert client.get("/api/v1/devices?filter[group]=abc", headers=h).status_code == 400


def test_parent_through_relationships(client, auth, db_session):
    """The resource shows ``relationships.parent``; a body may set it that way too (POST and PATCH),
    with the same cycle check; a relationship that is not ``parent`` is refused, never ignored."""
    h = {**auth("write", "read"), "Content-Type": JSONAPI}

    def body(attributes, parent, id_=None):
        data = {"type": "device_groups", "attributes": attributes,
                "relationships": {"parent": {"data": None if parent is None
                                                     else {"type": "device_groups", "id": str(parent)}}}}
        return {"data": {**data, "id": id_} if id_ else data}

    top = _group(client, auth("write"), name="Top")
    created = client.post("/api/v1/device_groups", json=body({"name": "Child"}, top["id"]), headers=h)
    assert created.status_code == 201, created.get_json()
    child = created.get_json()["data"]
    assert child["attributes"]["parent_id"] == int(top["id"])
    assert child["relationships"]["parent"]["data"] == {"type": "device_groups", "id": top["id"]}

    # a cycle made through the relationship is refused
    cycle = client.patch(f"/api/v1/device_groups/{top['id']}", json=body({}, child["id"], top["id"]), headers=h)
    assert cycle.status_code == 422 and cycle.get_json()["meta"]["request_id"]
    # moving to the top level: data null
    moved = client.patch(f"/api/v1/device_groups/{child['id']}", json=body({}, None, child["id"]), headers=h)
    assert moved.status_code == 200 and moved.get_json()["data"]["attributes"]["parent_id"] is None

    # refused, not ignored: another relationship, a bad linkage, an unknown parent, two different parents
    bad = [
        {"data": {"type": "device_groups", "attributes": {"name": "x"}, "relationships": {"devices": {"data": []}}}},
        {"data": {"type": "device_groups", "attributes": {"name": "x"},
                  "relationships": {"parent": {"data": {"type": "devices", "id": top["id"]}}}}},
        {"data": {"type": "device_groups", "attributes": {"name": "x"}, "relationships": []}},
        body({"name": "x"}, 424242),
        body({"name": "x", "parent_id": int(child["id"])}, top["id"]),
    ]
    for document in bad:
        response = client.post("/api/v1/device_groups", json=document, headers=h)
        assert response.status_code == 422, (document, response.get_json())
