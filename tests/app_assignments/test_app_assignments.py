"""App assignment: the commands queued (InstallApplication, InstallEnterpriseApplication,
RemoveApplication), overlaps, revisions, states, bad input and scopes, set-based statement counts."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, insert, select, update

from mdmserver import workflows
from mdmserver.app_assignments.models import AppAssignment, DeviceAppState
from mdmserver.apps.models import App
from mdmserver.collaborators import secret_box
from mdmserver.commands.service import command_parameters
from mdmserver.db import utcnow
from mdmserver.records.attributes import CustomAttribute
from mdmserver.records.commands import Command
from mdmserver.records.devices import InstalledApplication
from mdmserver.records.groups import GroupMember
from tests.factories import make_app, make_device, seed_devices

JSONAPI = "application/vnd.api+json"
PUBLIC = "http://127.0.0.1:8080"  # the test app's public URL (tests/conftest.py)


def _commands(db_session, request_type=None):
    stmt = select(Command).order_by(Command.id)
    if request_type is not None:
        stmt = stmt.where(Command.request_type == request_type)
    return db_session.scalars(stmt).all()


def _params(command):
    return command_parameters(command, secret_box())


def _assign(client, h, app, body):
    return client.post(f"/api/v1/apps/{app.id}/assignments", json=body, headers=h)


def _states(client, h, app):
    response = client.get(f"/api/v1/apps/{app.id}/devices", headers=h)
    assert response.status_code == 200, response.get_json()
    return {d["attributes"]["device_id"]: d["attributes"] for d in response.get_json()["data"]}


def _group(client, h, **attributes):
    response = client.post("/api/v1/device_groups", json={"data": {"type": "device_groups", "attributes": attributes}},
                           headers={**h, "Content-Type": JSONAPI})
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["data"]["id"])


def _add_members(client, h, group, *device_ids):
    response = client.post(f"/api/v1/device_groups/{group}/relationships/devices",
                           json={"data": [{"type": "devices", "id": str(d)} for d in device_ids]}, headers=h)
    assert response.status_code in (200, 204), response.get_json()


def test_ios_enterprise_app_to_a_device_is_queued_once(client, auth, db_session):
    h = auth("read", "write")
    app = make_app(db_session, "com.example.notes")
    phone, tablet, mac = (make_device(db_session, platform=p) for p in ("ios", "ipados", "macos"))
    options = {"removable": False, "management_flags": 5, "configuration": {"ServerURL": "https://notes.example"},
               "attributes": {"VPNUUID": "0B7C1E9A-5C9B-4E2D-9D43-5D7B2E0F9A11"}}
    response = _assign(client, h, app, {"devices": [phone.udid, tablet.id, mac.id], "options": options})
    assert response.status_code == 200, response.get_json()
    # the Mac is assigned but an iOS app does not go to macOS
    assert response.get_json() == {"app_id": str(app.id), "assigned": 3, "unchanged": 0, "install_queued": 2,
                                   "removal_queued": 0}
    installs = _commands(db_session, "InstallApplication")
    assert sorted(c.device_id for c in installs) == sorted([phone.id, tablet.id])
    assert _params(installs[0]) == {
        "ManifestURL": f"{PUBLIC}/apps/{app.download_token}/manifest.plist",
        "ManagementFlags": 5,
        "Configuration": {"ServerURL": "https://notes.example"},
        "Attributes": {"VPNUUID": "0B7C1E9A-5C9B-4E2D-9D43-5D7B2E0F9A11", "Removable": False},
        "ChangeManagementState": "Managed",
    }
    assert {k: v["status"] for k, v in _states(client, h, app).items()} == {phone.id: "scheduled",
                                                                            tablet.id: "scheduled"}
    # reconciling again, or assigning again, queues nothing more
    assert client.post(f"/api/v1/apps/{app.id}/assignments", json={"devices": [phone.id]},
                       headers=h).get_json()["install_queued"] == 0
    counts = workflows.app_revised(db_session, app, actor="test", box=secret_box(), public_url=PUBLIC)
    assert counts == {"install_queued": 0, "removal_queued": 0}
    assert len(_commands(db_session, "InstallApplication")) == 2
    listed = client.get(f"/api/v1/apps/{app.id}/assignments", headers=h).get_json()
    assert listed["meta"]["total"] == 3
    assert listed["data"][0]["attributes"]["options"]["management_flags"] == 5


def test_macos_package_and_app_store_apps(client, auth, db_session):
    h = auth("read", "write")
    mac, phone = make_device(db_session, platform="macos"), make_device(db_session, platform="ios")
    pkg = make_app(db_session, "com.example.agent", platform="macos")
    assert _assign(client, h, pkg, {"devices": [mac.id, phone.id],
                                    "options": {"install_as_managed": True, "management_flags": 1}}
                   ).get_json()["install_queued"] == 1
    (command,) = _commands(db_session, "InstallEnterpriseApplication")
    params = _params(command)
    assert command.device_id == mac.id
    assert params["InstallAsManaged"] is True and params["ManagementFlags"] == 1
    assert params["ChangeManagementState"] == "Managed"
    asset = params["Manifest"]["items"][0]["assets"][0]
    assert asset["url"] == f"{PUBLIC}/apps/{pkg.download_token}/{pkg.package_sha256}.pkg"
    assert asset["sha256s"] == [pkg.package_sha256]
    assert params["Manifest"]["items"][0]["metadata"]["bundle-identifier"] == "com.example.agent"

    store = make_app(db_session, "com.example.chat", enterprise=False, itunes_store_id=361309726, version=None)
    assert _assign(client, h, store, {"devices": [phone.id]}).get_json()["install_queued"] == 1
    (store_install,) = [c for c in _commands(db_session, "InstallApplication") if c.device_id == phone.id]
    assert _params(store_install) == {"iTunesStoreID": 361309726, "Identifier": "com.example.chat",
                                      "Options": {"PurchaseMethod": 0}, "ChangeManagementState": "Managed"}
    mac_store = make_app(db_session, "com.example.chat", platform="macos", enterprise=False, version=None)
    assert _assign(client, h, mac_store, {"devices": [mac.id]}).get_json()["install_queued"] == 1
    (mac_install,) = [c for c in _commands(db_session, "InstallApplication") if c.device_id == mac.id]
    # managed by default on macOS (an unmanaged Mac app cannot be removed or listed)
    assert _params(mac_install) == {"Identifier": "com.example.chat", "InstallAsManaged": True,
                                    "ChangeManagementState": "Managed"}
    unmanaged = make_app(db_session, "com.example.viewer", platform="macos", enterprise=False, version=None)
    assert _assign(client, h, unmanaged, {"devices": [mac.id], "options": {"install_as_managed": False}}
                   ).get_json()["install_queued"] == 1
    (plain,) = [c for c in _commands(db_session, "InstallApplication")
                if c.device_id == mac.id and _params(c)["Identifier"] == "com.example.viewer"]
    assert _params(plain) == {"Identifier": "com.example.viewer"}


def test_overlapping_assignments_direct_wins_then_oldest_group(client, auth, db_session):
    h = auth("read", "write")
    app = make_app(db_session, "com.example.overlap")
    direct, both, newer_only = (make_device(db_session, platform="ios") for _ in range(3))
    older = _group(client, h, name="older")
    newer = _group(client, h, name="newer")
    _add_members(client, h, older, direct.id, both.id)
    _add_members(client, h, newer, direct.id, both.id, newer_only.id)
    # the older group assignment is created first
    assert _assign(client, h, app, {"groups": [older], "options": {"configuration": {"Tier": "older"}}}
                   ).status_code == 200
    # remove what the first assignment queued so the next step shows the winners for every device
    db_session.execute(update(Command).values(status="cancelled"))
    db_session.execute(DeviceAppState.__table__.delete())
    db_session.flush()
    assert _assign(client, h, app, {"groups": [newer], "options": {"configuration": {"Tier": "newer"}}}
                   ).status_code == 200
    assert _assign(client, h, app, {"devices": [direct.id], "options": {"configuration": {"Tier": "direct"}}}
                   ).status_code == 200
    db_session.execute(update(Command).values(status="cancelled"))
    db_session.execute(DeviceAppState.__table__.delete())
    db_session.flush()
    counts = workflows.app_revised(db_session, app, actor="test", box=secret_box(), public_url=PUBLIC)
    assert counts["install_queued"] == 3
    tiers = {c.device_id: _params(c)["Configuration"]["Tier"]
             for c in _commands(db_session, "InstallApplication") if c.status == "queued"}
    assert tiers == {direct.id: "direct", both.id: "older", newer_only.id: "newer"}


def test_unassign_removes_and_states_follow_answers(client, auth, db_session):
    h = auth("read", "write")
    app = make_app(db_session, "com.example.remove", version="2.0")
    kept, dropped, failing = (make_device(db_session, platform="ios") for _ in range(3))
    group = _group(client, h, name="remove")
    _add_members(client, h, group, kept.id, dropped.id, failing.id)
    assert _assign(client, h, app, {"groups": [group]}).get_json()["install_queued"] == 3
    by_device = {c.device_id: c for c in _commands(db_session, "InstallApplication")}
    now = utcnow()
    for device in (kept, dropped):
        by_device[device.id].status, by_device[device.id].completed_at = "acknowledged", now
    by_device[failing.id].status, by_device[failing.id].completed_at = "error", now
    by_device[failing.id].error_chain = [{"error_code": 12021, "error_domain": "MCMDMErrorDomain",
                                          "localized_description": "Couldn’t install.",
                                          "us_english_description": "Could not install the app."}]
    db_session.flush()
    states = _states(client, h, app)
    assert {k: v["status"] for k, v in states.items()} == {kept.id: "installing", dropped.id: "installing",
                                                           failing.id: "failed"}
    assert states[failing.id]["detail"] == \
        "InstallApplication failed: Could not install the app. (MCMDMErrorDomain, 12021)"
    # the devices report the app installed (InstalledApplicationList)
    later = utcnow()
    db_session.add_all([InstalledApplication(device_id=d.id, identifier="com.example.remove", short_version="2.0",
                                             version="2.0", installing=False, reported_at=later)
                        for d in (kept, dropped)])
    db_session.flush()
    states = _states(client, h, app)
    assert states[kept.id]["status"] == "installed" and states[kept.id]["installed_version"] == "2.0"
    assert states[kept.id]["drift"] is False
    assert states[failing.id]["status"] == "failed"  # the failure's reason is kept
    # dropped leaves the group: RemoveApplication for it only; the failed device is let go, not removed
    response = client.delete(f"/api/v1/device_groups/{group}/relationships/devices",
                             json={"data": [{"type": "devices", "id": str(dropped.id)},
                                            {"type": "devices", "id": str(failing.id)}]}, headers=h)
    assert response.status_code in (200, 204)
    (removal,) = _commands(db_session, "RemoveApplication")
    assert removal.device_id == dropped.id and _params(removal) == {"Identifier": "com.example.remove"}
    states = _states(client, h, app)
    assert states[dropped.id]["status"] == "removal_scheduled"
    assert states[failing.id]["status"] == "removed"
    removal.status, removal.completed_at = "acknowledged", utcnow()
    db_session.flush()
    assert _states(client, h, app)[dropped.id]["status"] == "removed"
    # unassigning the group removes it from the last device
    (assignment,) = client.get(f"/api/v1/apps/{app.id}/assignments", headers=h).get_json()["data"]
    out = client.delete(f"/api/v1/apps/{app.id}/assignments/{assignment['id']}", headers=h)
    assert out.status_code == 200, out.get_json()
    assert out.get_json() == {"app_id": str(app.id), "unassigned": 1, "install_queued": 0, "removal_queued": 1}
    assert [c.device_id for c in _commands(db_session, "RemoveApplication")] == [dropped.id, kept.id]
    assert client.delete(f"/api/v1/apps/{app.id}/assignments/{assignment['id']}", headers=h).status_code == 404


def test_new_revision_updates_installed_devices_only(client, auth, db_session):
    h = auth("read", "write")
    app = make_app(db_session, "com.example.update", version="1.0")
    installed, failed, waiting = (make_device(db_session, platform="ios") for _ in range(3))
    assert _assign(client, h, app, {"devices": [installed.id, failed.id, waiting.id]}).get_json()["install_queued"] == 3
    by_device = {c.device_id: c for c in _commands(db_session, "InstallApplication")}
    now = utcnow()
    by_device[installed.id].status, by_device[installed.id].completed_at = "acknowledged", now
    by_device[failed.id].status, by_device[failed.id].completed_at = "command_format_error", now
    db_session.add(InstalledApplication(device_id=installed.id, identifier="com.example.update", short_version="1.0",
                                        installing=False, reported_at=utcnow()))
    db_session.flush()
    assert {k: v["status"] for k, v in _states(client, h, app).items()} == {
        installed.id: "installed", failed.id: "failed", waiting.id: "scheduled"}
    # a newer package was uploaded (the catalogue's slice bumps the revision and calls app_revised)
    db_session.execute(update(App).where(App.id == app.id).values(revision=2, version="1.1", build_version="1.1"))
    db_session.refresh(app)
    counts = workflows.app_revised(db_session, app, actor="test", box=secret_box(), public_url=PUBLIC)
    assert counts == {"install_queued": 1, "removal_queued": 0}
    assert [c.device_id for c in _commands(db_session, "InstallApplication")][-1] == installed.id
    states = _states(client, h, app)
    assert states[installed.id]["status"] == "scheduled" and states[installed.id]["revision"] == 2
    # until the device reports the new version, the old one shows, and the drift
    assert states[installed.id]["installed_version"] == "1.0" and states[installed.id]["drift"] is True
    device_view = client.get(f"/api/v1/devices/{installed.id}/apps", headers=h).get_json()["data"]
    assert [(d["attributes"]["app_id"], d["attributes"]["drift"], d["attributes"]["catalogue_version"])
            for d in device_view] == [(app.id, True, "1.1")]
    assert workflows.app_revised(db_session, app, actor="test", box=secret_box(), public_url=PUBLIC) == {
        "install_queued": 0, "removal_queued": 0}


def test_bad_bodies_unknown_apps_and_scopes(client, auth, db_session):
    h = auth("read", "write")
    app = make_app(db_session, "com.example.bad")
    mac_app = make_app(db_session, "com.example.badmac", platform="macos")
    device = make_device(db_session, platform="ios")
    url = f"/api/v1/apps/{app.id}/assignments"
    for body in ({}, {"devices": "all"}, {"devices": [device.id, "NOPE"]}, {"groups": [424242]}, {"groups": ["x"]},
                 {"devices": [device.id], "extra": 1}, [device.id], {"devices": [True]},
                 {"devices": [device.id], "options": {"management_flags": 2}},
                 {"devices": [device.id], "options": {"removable": "no"}},
                 {"devices": [device.id], "options": {"install_as_managed": True}},
                 {"devices": [device.id], "options": {"attributes": {"VPNUUID": 7}}},
                 {"devices": [device.id], "options": {"configuration": "x"}},
                 {"devices": [device.id], "options": {"configuration": {"a": [[[[[]]]]] * 2000}}},
                 {"devices": [device.id], "options": {"configuration": {"a": None}}},
                 {"devices": [device.id], "options": {"configuration": {"a": 2**70}}},
                 {"devices": [device.id], "options": None},
                 {"devices": [device.id], "options": {"colour": "red"}}):
        response = client.post(url, json=body, headers=h)
        assert response.status_code == 422, (body, response.get_json())
        assert response.get_json()["meta"]["request_id"] == response.headers["X-Request-ID"]
    pointers = [e["source"]["pointer"] for e in client.post(url, headers=h, json={
        "devices": [device.id], "options": {"attributes": {"VPNUUID": 7}}}).get_json()["errors"]]
    assert pointers == ["/options/attributes/VPNUUID"]
    for body in ({"devices": [device.id], "options": {"removable": False}},
                 {"devices": [device.id], "options": {"management_flags": 4}}):
        assert client.post(f"/api/v1/apps/{mac_app.id}/assignments", json=body, headers=h).status_code == 422
    assert client.post(url, data="{", headers={**h, "Content-Type": "application/json"}).status_code == 400
    assert db_session.scalar(select(func.count()).select_from(Command)) == 0
    assert db_session.scalar(select(func.count()).select_from(AppAssignment)) == 0
    for path in ("/api/v1/apps/424242/assignments", "/api/v1/apps/x/assignments"):
        response = client.post(path, json={"devices": [device.id]}, headers=h)
        assert response.status_code == 404 and response.get_json()["meta"]["request_id"]
    assert client.get("/api/v1/apps/424242/devices", headers=h).status_code == 404
    assert client.delete(f"/api/v1/apps/{app.id}/assignments/x", headers=h).status_code == 404
    assert client.get(f"/api/v1/apps/{app.id}/devices?filter[status]=lost", headers=h).status_code == 400
    assert client.post(f"/api/v1/apps/{app.id}/refresh", json={"devices": ["NOPE"]}, headers=h).status_code == 422
    # a read-only token reads but cannot assign, unassign or refresh
    read = auth("read")
    assert client.get(url, headers=read).status_code == 200
    assert client.post(url, json={"devices": [device.id]}, headers=read).status_code == 403
    assert client.post(f"/api/v1/apps/{app.id}/refresh", headers=read).status_code == 403
    assert client.post(url, json={"devices": [device.id]}).status_code == 401
    assert db_session.scalar(select(func.count()).select_from(AppAssignment)) == 0


def test_download_token_stays_out_of_the_audit_log(client, auth, db_session):
    h = auth("read", "write", "admin")
    app = make_app(db_session, "com.example.audit")
    device = make_device(db_session, platform="ios")
    assert _assign(client, h, app, {"devices": [device.id]}).status_code == 200
    events = client.get("/api/v1/audit_events?page[size]=500", headers=h)
    assert events.status_code == 200
    assert app.download_token not in events.get_data(as_text=True)


@pytest.mark.parametrize("kind", ["smart", "static"])
def test_reconcile_statement_count_is_constant_in_devices(client, auth, db_session, kind):
    h = auth("read", "write")
    client.get("/api/v1/actions", headers=h)  # warm-up: first-request work is not counted
    counts = {}
    for size in (20, 200):
        app = make_app(db_session, f"com.example.size{size}")
        ids = seed_devices(db_session, size, start=size * 1000, platform="ios")
        if kind == "smart":
            db_session.execute(insert(CustomAttribute), [{"device_id": i, "name": "dept", "value": f"d{size}"}
                                                         for i in ids])
            group = _group(client, h, name=f"g{size}", kind="smart", filter={"custom.dept": f"d{size}"})
        else:
            group = _group(client, h, name=f"g{size}")
            db_session.add_all([GroupMember(group_id=group, device_id=i) for i in ids])
        db_session.flush()
        seen = []

        def listener(conn, clause, *args, seen=seen):
            if not str(clause).startswith(("SAVEPOINT", "RELEASE")):
                seen.append(str(clause))

        bind = db_session.get_bind()
        event.listen(bind, "before_execute", listener)
        try:
            result = _assign(client, h, app, {"groups": [group], "options": {"removable": False}})
            # the answers come back, the states are read (refresh), the app is reconciled again
            db_session.execute(update(Command).where(Command.request_type == "InstallApplication")
                               .values(status="acknowledged", completed_at=utcnow()))
            _states(client, h, app)
            again = workflows.app_revised(db_session, app, actor="test", box=secret_box(), public_url=PUBLIC)
        finally:
            event.remove(bind, "before_execute", listener)
        assert result.get_json()["install_queued"] == size
        assert again["install_queued"] == 0
        states = db_session.scalars(select(DeviceAppState.status).where(DeviceAppState.app_id == app.id)).all()
        assert states == ["installing"] * size
        counts[size] = len(seen)
    print("app reconcile statements:", counts)
    assert counts[20] == counts[200] <= 60, counts
