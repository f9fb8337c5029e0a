"""Blueprint rules over the admin API: start_on, unscope_if_applied, remove_if_no_scope, the overlap
rule with direct assignments and other blueprints, apps, constant SQL, and bad input."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, func, select, update

from mdmserver.db import utcnow
from mdmserver.jobs import Upkeep
from mdmserver.records.blueprints import Blueprint
from mdmserver.records.groups import GroupMember
from tests.blueprints.helpers import (
    JSONAPI,
    commands,
    create,
    created,
    group,
    parameters,
    patch,
    states,
)
from tests.factories import make_app, make_wifi_profile, seed_devices


def _members(db_session, group_id: int, ids: list[int]) -> None:
    db_session.add_all([GroupMember(group_id=group_id, device_id=i) for i in ids])
    db_session.commit()


def _profile_targets(db_session, request_type: str) -> list[int]:
    return sorted(c.device_id for c in commands(db_session, request_type))


def test_start_on_in_the_future_queues_nothing_until_the_upkeep_job_finds_it_due(app, client, auth, db_session):
    h = auth("read", "write")
    profile = make_wifi_profile(db_session, "com.example.later")
    ids = seed_devices(db_session, 4, platform="ios", os_version="17.5")
    db_session.commit()
    tomorrow = (utcnow() + timedelta(days=1)).isoformat()
    doc = created(client, h, name="later", scope={"devices": ids}, profiles=[profile.id],
                  os_update={"version": "17.6"}, start_on=tomorrow)
    assert doc["data"]["attributes"]["start_on"].endswith("Z")
    assert set(doc["meta"]["reconcile"].values()) == {0}
    assert commands(db_session) == []
    assert states(client, h, f"/api/v1/blueprints/{doc['data']['id']}/devices") == []
    Upkeep(app).run(force=True)
    assert commands(db_session) == []  # still not due

    db_session.execute(update(Blueprint).values(start_on=utcnow() - timedelta(minutes=1)))  # the day came
    db_session.commit()
    Upkeep(app).run(force=True)
    assert _profile_targets(db_session, "InstallProfile") == ids
    assert _profile_targets(db_session, "ScheduleOSUpdate") == ids
    Upkeep(app).run(force=True)  # once
    assert len(commands(db_session)) == 2 * len(ids)


def test_unscope_if_applied_applies_once(client, auth, db_session):
    h = auth("read", "write")
    first = make_wifi_profile(db_session, "com.example.once.a", ssid="A")
    second = make_wifi_profile(db_session, "com.example.once.b", ssid="B")
    ids = seed_devices(db_session, 3, platform="ios")
    db_session.commit()
    static = group(client, h, name="once")
    _members(db_session, static, ids[:2])
    doc = created(client, h, name="once", scope={"groups": [static]}, profiles=[first.id], unscope_if_applied=True)
    blueprint_id = doc["data"]["id"]
    assert doc["meta"]["reconcile"]["profile_install_queued"] == 2
    rows = states(client, h, f"/api/v1/blueprints/{blueprint_id}/devices")
    assert {r["membership"] for r in rows} == {"unscoped"}

    # a second profile reaches only devices that were not yet applied; the unscoped keep what they got
    _members(db_session, static, ids[2:])
    patched = patch(client, h, blueprint_id, profiles=[first.id, second.id])
    assert patched["meta"]["reconcile"]["profile_install_queued"] == 2  # the newcomer gets both
    assert patched["meta"]["reconcile"]["profile_removal_queued"] == 0
    installs = [(c.device_id, parameters(c)["Payload"]) for c in commands(db_session, "InstallProfile")]
    assert sorted(d for d, _ in installs) == sorted([ids[0], ids[1], ids[2], ids[2]])
    # leaving the group after being unscoped removes nothing either
    db_session.execute(GroupMember.__table__.delete().where(GroupMember.group_id == static))
    db_session.commit()
    again = client.post(f"/api/v1/blueprints/{blueprint_id}/reconcile", headers=h).get_json()
    assert again["profile_removal_queued"] == 0 and commands(db_session, "RemoveProfile") == []


def test_leaving_the_scope_removes_only_with_remove_if_no_scope(client, auth, db_session):
    h = auth("read", "write")
    kept = make_wifi_profile(db_session, "com.example.kept", ssid="K")
    gone = make_wifi_profile(db_session, "com.example.gone", ssid="G")
    ids = seed_devices(db_session, 2, platform="ios")
    db_session.commit()
    keep_group, remove_group = group(client, h, name="keep"), group(client, h, name="remove")
    _members(db_session, keep_group, ids)
    _members(db_session, remove_group, ids)
    keep = created(client, h, name="keep", scope={"groups": [keep_group]}, profiles=[kept.id],
                   remove_if_no_scope=False)
    remove = created(client, h, name="remove", scope={"groups": [remove_group]}, profiles=[gone.id])
    assert remove["data"]["attributes"]["remove_if_no_scope"] is True  # the default

    db_session.execute(GroupMember.__table__.delete().where(GroupMember.device_id == ids[0]))
    db_session.commit()
    for doc in (keep, remove):
        client.post(f"/api/v1/blueprints/{doc['data']['id']}/reconcile", headers=h)
    removals = commands(db_session, "RemoveProfile")
    assert [(c.device_id, parameters(c)["Identifier"]) for c in removals] == [(ids[0], "com.example.gone")]
    rows = {r["device_id"]: r for r in states(client, h, f"/api/v1/blueprints/{keep['data']['id']}/devices")}
    assert rows[str(ids[0])]["membership"] == "left" and rows[str(ids[0])]["profiles"][0]["state"] == "queued"

    # disabling is leaving the scope for every device: the same rule
    patch(client, h, keep["data"]["id"], enabled=False)
    patch(client, h, remove["data"]["id"], enabled=False)
    assert [(c.device_id, parameters(c)["Identifier"]) for c in commands(db_session, "RemoveProfile")] == [
        (ids[0], "com.example.gone"), (ids[1], "com.example.gone")]


def test_overlaps_remove_only_when_nothing_wants_the_item(client, auth, db_session):
    h = auth("read", "write")
    profile = make_wifi_profile(db_session, "com.example.shared")
    (device,) = seed_devices(db_session, 1, platform="ios")
    db_session.commit()
    one = created(client, h, name="one", scope={"devices": [device]}, profiles=[profile.id], apply_order=2)
    two = created(client, h, name="two", scope={"devices": [device]}, profiles=[profile.id], apply_order=1)
    assert one["meta"]["reconcile"]["profile_install_queued"] == 1
    assert two["meta"]["reconcile"]["profile_install_queued"] == 0  # already queued: one command, not two
    direct = client.post(f"/api/v1/profiles/{profile.id}/assignments", headers=h, json={"devices": [device]})
    assert direct.get_json()["install_queued"] == 0

    assert client.delete(f"/api/v1/blueprints/{one['data']['id']}", headers=h).status_code == 200
    patch(client, h, two["data"]["id"], profiles=[])  # the profile leaves the other blueprint
    assert commands(db_session, "RemoveProfile") == []  # the direct assignment still wants it
    patch(client, h, two["data"]["id"], profiles=[profile.id])
    gone = client.delete(f"/api/v1/profiles/{profile.id}/assignments", headers=h, json={"devices": [device]})
    assert gone.get_json()["removal_queued"] == 0  # the blueprint still wants it
    assert client.delete(f"/api/v1/blueprints/{two['data']['id']}", headers=h).get_json()[
        "profile_removal_queued"] == 1  # nothing wants it any more
    assert [c.device_id for c in commands(db_session, "RemoveProfile")] == [device]


def test_blueprints_are_queued_in_apply_order(client, auth, db_session):
    h = auth("read", "write")
    late, early = make_wifi_profile(db_session, "com.example.late"), make_wifi_profile(db_session, "com.example.early")
    ids = seed_devices(db_session, 3, platform="ios")
    db_session.commit()
    smart = group(client, h, name="phones", kind="smart", filter={"platform": "ios"})
    created(client, h, name="late", scope={"groups": [smart]}, profiles=[late.id], apply_order=5, enabled=False)
    created(client, h, name="early", scope={"groups": [smart]}, profiles=[early.id], apply_order=-1, enabled=False)
    db_session.execute(update(Blueprint).values(enabled=True))  # both at once: the next reconcile decides the order
    db_session.commit()
    assert client.post("/api/v1/assignments/reconcile", headers=h).status_code == 200  # not blueprints' business
    assert commands(db_session) == []
    group_change = client.patch(f"/api/v1/device_groups/{smart}", headers={**h, "Content-Type": JSONAPI},
                                json={"data": {"type": "device_groups", "id": str(smart),
                                               "attributes": {"description": "all phones"}}})
    assert group_change.status_code == 200
    assert all(len(commands(db_session, "InstallProfile", device_id)) == 2 for device_id in ids)
    order = [(c.device_id, c.id) for c in commands(db_session, "InstallProfile")]
    first_late = min(i for d, i in order if d in ids and _is(db_session, i, "com.example.late"))
    last_early = max(i for d, i in order if d in ids and _is(db_session, i, "com.example.early"))
    assert last_early < first_late  # the whole lower apply_order went first


def _is(db_session, command_id: int, identifier: str) -> bool:
    command = next(c for c in commands(db_session) if c.id == command_id)
    return identifier.encode() in parameters(command)["Payload"]


def test_apps_follow_the_blueprint_with_its_options(client, auth, db_session):
    h = auth("read", "write")
    notes = make_app(db_session, "com.example.notes", enterprise=False, itunes_store_id=123456)
    ids = seed_devices(db_session, 2, platform="ios")
    db_session.commit()
    doc = created(client, h, name="apps", scope={"devices": ids}, first_item="apps",
                  apps=[{"app_id": notes.id, "options": {"removable": False}}])
    assert doc["meta"]["reconcile"]["app_install_queued"] == 2
    (install, _) = commands(db_session, "InstallApplication")
    assert parameters(install)["Attributes"] == {"Removable": False}
    rows = states(client, h, f"/api/v1/blueprints/{doc['data']['id']}/devices")
    assert [r["apps"] for r in rows] == [[{"app_id": str(notes.id), "state": "queued", "detail": None}]] * 2
    patch(client, h, doc["data"]["id"], scope={"devices": ids[:1]})
    assert [c.device_id for c in commands(db_session, "RemoveApplication")] == [ids[1]]


def test_reconcile_statements_do_not_grow_with_the_devices(client, auth, db_session):
    h = auth("read", "write")
    client.get("/api/v1/blueprints", headers=h)
    counts = {}
    for size in (5, 50):
        profiles = [make_wifi_profile(db_session, f"com.example.n{size}.{i}") for i in range(2)]
        ids = seed_devices(db_session, size, start=size * 1000, platform="ios", os_version="17.5")
        db_session.commit()
        static = group(client, h, name=f"g{size}")
        _members(db_session, static, ids)
        seen: list[str] = []

        def listener(conn, clause, *args, seen=seen):
            if not str(clause).startswith(("SAVEPOINT", "RELEASE")):
                seen.append(str(clause))

        bind = db_session.get_bind()
        event.listen(bind, "before_execute", listener)
        try:
            doc = created(client, h, name=f"n{size}", scope={"groups": [static]}, profiles=[p.id for p in profiles],
                          os_update={"version": f"17.6.{size}"})  # new parameters each time
        finally:
            event.remove(bind, "before_execute", listener)
        assert doc["meta"]["reconcile"]["profile_install_queued"] == 2 * size
        assert doc["meta"]["reconcile"]["os_update_queued"] == size
        counts[size] = len(seen)
    assert counts[5] == counts[50], counts


def test_bad_input_is_refused_and_writes_nothing(client, auth, db_session):
    h = auth("read", "write")
    profile = make_wifi_profile(db_session, "com.example.bad")
    db_session.commit()
    cases = [
        ({"name": "x", "profiles": [999999]}, 422, "/data/attributes/profiles/0"),
        ({"name": "x", "apps": [{"app_id": 999999}]}, 422, "/data/attributes/apps/0/app_id"),
        ({"name": "x", "scope": {"groups": [999999]}}, 422, "/data/attributes/scope/groups/0"),
        ({"name": "x", "scope": {"devices": ["nope"]}}, 422, "/data/attributes/scope/devices/0"),
        ({"name": "x", "os_update": {"version": "seventeen"}}, 422, "/data/attributes/os_update/version"),
        ({"name": "x", "os_update": {"version": "17.6", "deadline": "2026-12-01T18:00:00Z"}}, 422,
         "/data/attributes/os_update/deadline"),
        ({"name": "x", "os_update": {"version": "17.6", "install_action": "Now"}}, 422,
         "/data/attributes/os_update/install_action"),
        ({"name": "x", "start_on": "2026-12-01T18:00:00"}, 422, "/data/attributes/start_on"),
        ({"name": "x", "is_global": True, "scope": {"groups": [1]}}, 422, "/data/attributes/scope"),
        ({"name": "x", "profiles": [profile.id, profile.id]}, 422, "/data/attributes/profiles"),
        ({"name": "x", "enabled": "yes"}, 422, "/data/attributes/enabled"),
        ({"name": "x", "applyWhile": {}}, 422, "/data/attributes/applyWhile"),
        ({"profiles": [profile.id]}, 422, "/data/attributes/name"),
    ]
    for attributes, status, pointer in cases:
        response = create(client, h, **attributes)
        assert response.status_code == status, (attributes, response.get_json())
        body = response.get_json()
        assert pointer in [e.get("source", {}).get("pointer") for e in body["errors"]], (attributes, body)
        assert body["meta"]["request_id"]
    assert db_session.scalar(select(func.count()).select_from(Blueprint)) == 0
    created(client, h, name="taken")
    assert create(client, h, name="taken").status_code == 409
    assert client.get("/api/v1/blueprints/999999", headers=h).status_code == 404
    assert client.get("/api/v1/blueprints/abc", headers=h).status_code == 404
    assert client.get("/api/v1/devices/nope/blueprints", headers=h).status_code == 404
    assert client.get("/api/v1/blueprints?filter[colour]=red", headers=h).status_code == 400
    assert commands(db_session) == []


def test_deleting_an_item_of_a_blueprint(client, auth, db_session):
    """A profile deleted from the library leaves the devices the blueprint put it on; an app in a
    blueprint cannot be deleted from the catalogue (as an assigned one)."""
    h = auth("read", "write")
    profile = make_wifi_profile(db_session, "com.example.deleted")
    notes = make_app(db_session, "com.example.kept", enterprise=False, itunes_store_id=7)
    ids = seed_devices(db_session, 2, platform="ios")
    db_session.commit()
    doc = created(client, h, name="items", scope={"devices": ids}, profiles=[profile.id], apps=[{"app_id": notes.id}])
    assert client.delete(f"/api/v1/apps/{notes.id}", headers=h).status_code == 409
    assert client.delete(f"/api/v1/profiles/{profile.id}", headers=h).status_code == 204
    assert sorted(c.device_id for c in commands(db_session, "RemoveProfile")) == ids
    assert client.get(f"/api/v1/blueprints/{doc['data']['id']}", headers=h).get_json()["data"]["attributes"][
        "profiles"] == []


def test_unscope_if_applied_with_an_os_target(client, auth, db_session):
    """The OS part counts as applied once ScheduleOSUpdate is sent, or when the device already runs the
    target; a device whose version is unknown stays in scope until its inventory says."""
    h = auth("read", "write")
    behind, current, unknown = (seed_devices(db_session, 1, start=i, platform="ios", os_version=v)[0]
                                for i, v in ((1, "17.5"), (2, "17.6.1"), (3, None)))
    db_session.commit()
    doc = created(client, h, name="os once", scope={"devices": [behind, current, unknown]}, unscope_if_applied=True,
                  os_update={"version": "17.6"})
    assert doc["meta"]["reconcile"]["os_update_queued"] == 1
    rows = {int(r["device_id"]): r for r in states(client, h, f"/api/v1/blueprints/{doc['data']['id']}/devices")}
    assert {d: r["membership"] for d, r in rows.items()} == {behind: "unscoped", current: "unscoped",
                                                             unknown: "in_scope"}
    assert (rows[current]["os_update"]["state"], rows[unknown]["os_update"]["state"]) == ("installed", "pending")
