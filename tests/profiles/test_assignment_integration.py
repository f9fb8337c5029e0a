"""A new revision made through the profiles API is installed where the profile is assigned."""

from __future__ import annotations

import plistlib

from sqlalchemy import select

from mdmserver.collaborators import secret_box
from mdmserver.commands.service import command_parameters
from mdmserver.pki.cms import unwrap_signed
from mdmserver.records.commands import Command
from tests.factories import make_device

from .helpers import JSONAPI, dumps, make_payload, make_profile, upload


def _installs(db_session, device_id):
    return db_session.scalars(select(Command).where(
        Command.request_type == "InstallProfile", Command.device_id == device_id).order_by(Command.id)).all()


def test_revisions_are_installed_where_assigned(client, auth, db_session):
    h = auth("read", "write")
    profile = make_profile([make_payload("com.apple.wifi.managed", SSID_STR="One")],
                           PayloadIdentifier="com.example.assigned")
    profile_id = upload(client, h, dumps(profile)).get_json()["data"]["id"]
    device = make_device(db_session)
    assigned = client.post(f"/api/v1/profiles/{profile_id}/assignments", json={"devices": [device.id]}, headers=h)
    assert assigned.status_code == 200, assigned.get_json()
    assert len(_installs(db_session, device.id)) == 1

    profile["PayloadContent"][0]["SSID_STR"] = "Two"
    replaced = upload(client, h, dumps(profile), replace="true")
    assert replaced.status_code == 200
    assert replaced.get_json()["meta"]["assignments"]["install_queued"] == 1
    installs = _installs(db_session, device.id)
    assert len(installs) == 2
    sent = plistlib.loads(unwrap_signed(command_parameters(installs[-1], secret_box())["Payload"]).content)
    assert sent["PayloadContent"][0]["SSID_STR"] == "Two"

    patched = client.patch(f"/api/v1/profiles/{profile_id}", headers={**h, "Content-Type": JSONAPI},
                           json={"data": {"type": "profiles", "id": profile_id,
                                          "attributes": {"PayloadDisplayName": "Renamed"}}})
    assert patched.get_json()["meta"]["assignments"]["install_queued"] == 1
    assert len(_installs(db_session, device.id)) == 3


def test_deleting_an_assigned_profile_removes_it_from_devices(client, auth, db_session):
    h = auth("read", "write")
    profile_id = upload(client, h, dumps(make_profile(PayloadIdentifier="com.example.doomed"))).get_json()["data"]["id"]
    device = make_device(db_session)
    group = client.post("/api/v1/device_groups", headers={**h, "Content-Type": JSONAPI},
                        json={"data": {"type": "device_groups", "attributes": {"name": "Doomed"}}})
    assert group.status_code == 201, group.get_json()
    response = client.post(f"/api/v1/profiles/{profile_id}/assignments", headers=h,
                           json={"devices": [device.id], "groups": [int(group.get_json()["data"]["id"])]})
    assert response.status_code == 200, response.get_json()
    assert client.delete(f"/api/v1/profiles/{profile_id}", headers=h).status_code == 204
    removals = db_session.scalars(select(Command).where(
        Command.request_type == "RemoveProfile", Command.device_id == device.id)).all()
    assert [command_parameters(c, secret_box())["Identifier"] for c in removals] == ["com.example.doomed"]
    assert client.get(f"/api/v1/profiles/{profile_id}", headers=h).status_code == 404
