"""Custom attributes: Ivanti's replace, merge and delete, and the bulk delete."""

from __future__ import annotations

from sqlalchemy import event, func, select

from mdmserver.db import utcnow
from mdmserver.records.attributes import CustomAttribute
from tests.factories import make_device, seed_devices

JSONAPI = "application/vnd.api+json"


def _send(client, method, url, headers, attributes, type_="custom_attributes"):
    return client.open(url, method=method, json={"data": {"type": type_, "attributes": attributes}},
                       headers={**headers, "Content-Type": JSONAPI})


def _values(response):
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]["attributes"]


def test_replace_merge_delete(client, auth, db_session):
    device = make_device(db_session)
    url = f"/api/v1/devices/{device.udid}/custom_attributes"
    h = auth("read", "write")
    assert _values(client.get(url, headers=h)) == {}
    assert _values(_send(client, "POST", url, h, {"dept": "IT", "floor": "3"})) == {"dept": "IT", "floor": "3"}
    # replace: floor disappears
    assert _values(_send(client, "POST", url, h, {"dept": "Sales", "site": "Lyon"})) == {
        "dept": "Sales", "site": "Lyon"}
    # merge: keep site, update dept, add cost.center, delete nothing
    assert _values(_send(client, "PATCH", url, h, {"dept": "HR", "cost.center": "42"})) == {
        "cost.center": "42", "dept": "HR", "site": "Lyon"}
    # merge with null deletes that one
    assert _values(_send(client, "PATCH", url, h, {"site": None})) == {"cost.center": "42", "dept": "HR"}
    assert _values(client.delete(f"{url}?names=dept", headers=h)) == {"cost.center": "42"}
    assert _values(client.delete(url, headers=h)) == {}


def test_list_values(client, auth, db_session):
    """An attribute holds a list of strings: one value shows as a string, several as a list; the
    numerical ``_#`` suffix is not part of the name; filters match any value."""
    device = make_device(db_session)
    url = f"/api/v1/devices/{device.id}/custom_attributes"
    h = auth("read", "write")
    assert _values(_send(client, "POST", url, h, {"city": ["SF", "NY", "SF"], "dept": ["IT"], "floor_#": "3"})) == {
        "city": ["SF", "NY"], "dept": "IT", "floor": "3"}
    assert _values(_send(client, "PATCH", url, h, {"city": "LA"})) == {"city": "LA", "dept": "IT", "floor": "3"}
    assert _values(_send(client, "PATCH", url, h, {"dept": ["IT", "HR"]}))["dept"] == ["IT", "HR"]
    listed = client.get("/api/v1/devices?filter[custom.dept]=HR", headers=h).get_json()
    assert [d["id"] for d in listed["data"]] == [str(device.id)]
    bad = _send(client, "POST", url, h, {"a": [], "b": ["x"] * 51, "c": [1], "d_#": ["x"], "e": "1", "e_#": "2"})
    assert bad.status_code == 422
    assert {e["source"]["pointer"] for e in bad.get_json()["errors"]} == {
        "/data/attributes/a", "/data/attributes/b", "/data/attributes/c", "/data/attributes/d_#",
        "/data/attributes/e_#"}


def test_bad_attribute_documents(client, auth, db_session):
    device = make_device(db_session)
    url = f"/api/v1/devices/{device.id}/custom_attributes"
    h = auth("read", "write")
    bad = _send(client, "POST", url, h, {"ok": "1", "bad name": "x", "n": 3, "long": "x" * 600, "gone": None})
    assert bad.status_code == 422
    pointers = {e["source"]["pointer"] for e in bad.get_json()["errors"]}
    assert pointers == {"/data/attributes/bad name", "/data/attributes/n", "/data/attributes/long",
                        "/data/attributes/gone"}
    assert _values(client.get(url, headers=h)) == {}  # nothing half-applied
    assert _send(client, "POST", url, h, {"a": "b"}, type_="devices").status_code == 409
    assert client.delete(f"{url}?names=", headers=h).status_code == 400
    assert client.delete(f"{url}?names=a b", headers=h).status_code == 400
    assert client.delete(f"{url}?colour=1", headers=h).status_code == 400
    assert _send(client, "POST", "/api/v1/devices/999999/custom_attributes", h, {"a": "b"}).status_code == 404


def test_bulk_delete_is_one_statement(client, auth, db_session, app):
    ids = seed_devices(db_session, 30)
    db_session.execute(CustomAttribute.__table__.insert(), [
        {"device_id": i, "name": n, "value": "v", "updated_at": utcnow()} for i in ids for n in ("a", "b", "c")
    ])
    keep = make_device(db_session)
    db_session.add(CustomAttribute(device_id=keep.id, name="a", value="kept"))
    db_session.flush()
    h = auth("read", "write")
    targets = ",".join(str(i) for i in ids) + ",NOPE"
    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(db_session.get_bind(), "before_cursor_execute", listener)
    try:
        response = client.delete(f"/api/v1/custom_attributes?names=a,b&devices={targets}", headers=h)
    finally:
        event.remove(db_session.get_bind(), "before_cursor_execute", listener)
    assert response.status_code == 200, response.get_json()
    meta = response.get_json()["meta"]
    assert meta["deleted"] == 60 and meta["not_found"] == ["NOPE"]
    # one DELETE of attributes (the compliance re-evaluation that follows deletes results of its own)
    assert len([s for s in statements if s.lstrip().upper().startswith("DELETE")
                and "device_custom_attributes" in s]) == 1
    remaining = db_session.execute(select(CustomAttribute.name, func.count()).group_by(CustomAttribute.name)).all()
    assert dict(remaining) == {"a": 1, "c": 30}
    names = client.get("/api/v1/custom_attributes", headers=h).get_json()["data"]
    assert {n["id"]: n["attributes"]["device_count"] for n in names} == {"a": 1, "c": 30}
    assert client.delete("/api/v1/custom_attributes", headers=h).status_code == 400
    # across every device
    response = client.delete("/api/v1/custom_attributes?names=c,a", headers=h)
    assert response.get_json()["meta"]["deleted"] == 31
