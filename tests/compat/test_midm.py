"""The Android MDM seed's scoped profiles (seed 003) at ``/api/v1/midm/profiles``, mapped onto
blueprints: the seed's own example body is accepted, Android-only fields are refused by name."""

from __future__ import annotations

from sqlalchemy import func, select

from mdmserver.records.blueprints import Blueprint
from mdmserver.records.commands import Command
from tests.factories import make_app, make_wifi_profile, seed_devices

JSONAPI = "application/vnd.api+json"


def _group(client, h, name: str) -> str:
    response = client.post("/api/v1/device_groups", headers={**h, "Content-Type": JSONAPI},
                           json={"data": {"type": "device_groups", "attributes": {"name": name}}})
    assert response.status_code == 201
    return response.get_json()["data"]["id"]


def test_the_seed_example_creates_a_blueprint(client, auth, db_session):
    h = auth("read", "write")
    notes = make_app(db_session, "com.example.notes", enterprise=False, itunes_store_id=42)
    (device,) = seed_devices(db_session, 1, platform="ios")
    db_session.commit()
    groups = [_group(client, h, "a"), _group(client, h, "b")]
    client.post(f"/api/v1/device_groups/{groups[0]}/relationships/devices", headers={**h, "Content-Type": JSONAPI},
                json={"data": [{"type": "devices", "id": str(device)}]})
    # the seed's example JSON, with this server's ids, less "otas" and "settings" (refused below)
    body = {
        "scope": {"group": groups},
        "apps": {"install": [{"uuid": str(notes.id), "starts_on_update": False, "silent_install": True,
                              "grant_all": False}]},
        "schedule_date": {"start_on": "2024-02-06"},
    }
    response = client.post("/api/v1/midm/profiles", headers=h, json=body)
    assert response.status_code == 201, response.get_json()
    answer = response.get_json()
    assert answer["result"] is True and answer["code"] == 0 and answer["uq"] == response.headers["X-Request-ID"]
    data = answer["data"]
    assert set(data) == {"uuid", "name", "updated"} and isinstance(data["updated"], int)
    assert len(data["name"]) == len("20240206_12:00:00")  # the seed's default name: a time stamp

    native = client.get(f"/api/v1/blueprints/{data['uuid']}", headers=h).get_json()["data"]["attributes"]
    assert native["scope"]["groups"] == groups and native["start_on"] == "2024-02-06T00:00:00Z"
    assert native["apps"] == [{"app_id": str(notes.id), "options": {}}]
    # started long ago: the group's member gets the app now
    installs = db_session.scalars(select(Command).where(Command.request_type == "InstallApplication")).all()
    assert [c.device_id for c in installs] == [device]

    # load, edit, save: what the seed does not know (profiles set natively) stays
    profile = make_wifi_profile(db_session, "com.example.kept")
    db_session.commit()
    client.patch(f"/api/v1/blueprints/{data['uuid']}", headers={**h, "Content-Type": JSONAPI},
                 json={"data": {"type": "blueprints", "id": data["uuid"], "attributes": {"profiles": [profile.id]}}})
    loaded = client.get(f"/api/v1/midm/profiles/{data['uuid']}", headers=h).get_json()["data"]
    loaded["profile"].update(name="Renamed", removeIfNoScope="false", unscopeIfApplied=True, applyOrder="apps")
    loaded["isGlobal"] = False
    saved = client.put(f"/api/v1/midm/profiles/{data['uuid']}", headers=h, json=loaded)
    assert saved.status_code == 200, saved.get_json()
    native = client.get(f"/api/v1/blueprints/{data['uuid']}", headers=h).get_json()["data"]["attributes"]
    assert (native["name"], native["remove_if_no_scope"], native["unscope_if_applied"], native["first_item"]) == (
        "Renamed", False, True, "apps")
    assert native["profiles"] == [str(profile.id)]
    listed = client.get("/api/v1/midm/profiles?page=1&size=10", headers=h).get_json()
    assert (listed["totalSize"], listed["totalPage"], listed["size"]) == (1, 1, 1)
    assert listed["data"][0]["profile"]["name"] == "Renamed"


def test_android_only_fields_are_refused_by_name(client, auth, db_session):
    h = auth("read", "write")
    cases = [
        ({"otas": ["48231c37-1fb9-4876-b4b2-c817cc52ffa8"]}, "/otas"),
        ({"settings": {"otas": {"silent_install": True}}}, "/settings"),
        ({"profile": {"applyWhile": {"sleeping": True}}}, "/profile/applyWhile/sleeping"),
        ({"profile": {"repeatOption": "weekly"}}, "/profile/repeatOption"),
        ({"profile": {"applyOrder": "first"}}, "/profile/applyOrder"),
        ({"apps": {"install": [{"uuid": "1", "grant_all": True}]}}, "/apps/install/0/grant_all"),
        ({"apps": {"install": [{"uuid": "999999"}]}}, "/apps/install/0/uuid"),
        ({"scope": {"device": ["not-enrolled-here"]}}, "/scope/device/0"),
        ({"scope": {"group": ["999999"]}}, "/scope/group/0"),
        ({"schedule_date": {"start_on": "next week"}}, "/schedule_date/start_on"),
        ({"colour": "red"}, "/colour"),
    ]
    for body, pointer in cases:
        response = client.post("/api/v1/midm/profiles", headers=h, json=body)
        assert response.status_code == 422, (body, response.get_json())
        errors = response.get_json()["errors"]
        assert pointer in [e.get("source", {}).get("pointer") for e in errors], (body, errors)
    assert db_session.scalar(select(func.count()).select_from(Blueprint)) == 0
    assert client.put("/api/v1/midm/profiles/999", headers=h, json={}).status_code == 404
    assert client.get("/api/v1/midm/profiles?size=501", headers=h).status_code == 400
    assert client.post("/api/v1/midm/profiles", headers=auth("read"), json={}).status_code == 403
