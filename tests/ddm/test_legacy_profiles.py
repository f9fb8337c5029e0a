"""A blueprint's profiles as ``com.apple.configuration.legacy`` declarations (``declarative_profiles``):
the protected ProfileURL, another device or a forged URL refused, and the overlap with MDM commands."""

from __future__ import annotations

import plistlib
import uuid
from urllib.parse import urlsplit

from mdmserver.collaborators import secret_box
from mdmserver.pki.cms import unwrap_signed
from mdmserver.profiles.service import upload_profile
from tests.blueprints.helpers import commands, created, patch
from tests.ddm.helpers import device_id, fetch_all, items, tokens
from tests.factories import make_wifi_profile

LEGACY = "com.apple.configuration.legacy"
PASSWORD = "wifi-Secret-4711"


def _secret_profile(db_session, identifier: str = "com.example.ddm.wifi"):
    body = plistlib.dumps({
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": identifier,
        "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadDisplayName": "Wi-Fi",
        "PayloadContent": [{"PayloadType": "com.apple.wifi.managed", "PayloadVersion": 1,
                            "PayloadIdentifier": f"{identifier}.p", "PayloadUUID": str(uuid.uuid4()).upper(),
                            "SSID_STR": "Office", "EncryptionType": "WPA2", "Password": PASSWORD}],
    })
    profile, _ = upload_profile(db_session, body, box=secret_box())
    db_session.commit()
    return profile


def _legacy_urls(sim) -> dict[str, str]:
    return {k: d["Payload"]["ProfileURL"] for k, d in fetch_all(sim).items() if d["Type"] == LEGACY}


def _path(url: str) -> str:
    return urlsplit(url).path


def test_declarative_profiles_reach_new_devices_as_declarations_and_old_ones_by_command(
        app, client, auth, db_session, enrolled):
    h = auth("read", "write")
    profile = _secret_profile(db_session)
    new, old = enrolled("ios"), enrolled("ios", seed=16)
    old.os_version = "16.7.2"
    assert old.authenticate() == 200 and old.token_update() == 200
    ids = {s.udid: device_id(db_session, s) for s in (new, old)}
    doc = created(client, h, name="legacy", scope={"devices": list(ids.values())}, profiles=[profile.id],
                  declarative_profiles=True)
    assert doc["data"]["attributes"]["declarative_profiles"] is True
    assert [c.device_id for c in commands(db_session, "InstallProfile")] == [ids[old.udid]]
    assert [c.device_id for c in commands(db_session, "DeclarativeManagement")] == [ids[new.udid]]
    assert _legacy_urls(old) == {}

    (url,) = _legacy_urls(new).values()
    assert url.startswith(app.config["PUBLIC_URL"] + "/mdm/ddm/profiles/")
    # the activation names the legacy configuration
    listed = fetch_all(new)
    activation = listed[f"mdmserver.blueprint.{doc['data']['id']}.activation"]
    assert f"mdmserver.blueprint.{doc['data']['id']}.profile.{profile.id}" in \
        activation["Payload"]["StandardConfigurations"]

    response = client.get(_path(url))
    assert response.status_code == 200 and response.mimetype == "application/x-apple-aspen-config"
    served = plistlib.loads(unwrap_signed(response.data).content)
    assert served["PayloadIdentifier"] == "com.example.ddm.wifi"
    assert served["PayloadContent"][0]["Password"] == PASSWORD  # the device gets its secret

    # the admin API lists the declaration, never its URL or the profile's secret
    listing = client.get(f"/api/v1/devices/{ids[new.udid]}/declarations", headers=auth("read"))
    assert listing.status_code == 200
    assert "/mdm/ddm/profiles/" not in listing.get_data(as_text=True)
    assert PASSWORD not in listing.get_data(as_text=True)


def test_a_profile_url_works_only_for_its_device_and_profile(client, auth, db_session, enrolled):
    h = auth("read", "write")
    first, second = _secret_profile(db_session, "com.example.ddm.a"), _secret_profile(db_session, "com.example.ddm.b")
    mine, theirs, outsider = enrolled("ios"), enrolled("ios", seed=2), enrolled("ios", seed=3)
    ids = {s.udid: device_id(db_session, s) for s in (mine, theirs, outsider)}
    doc = created(client, h, name="pair", scope={"devices": [ids[mine.udid], ids[theirs.udid]]},
                  profiles=[first.id, second.id], declarative_profiles=True)
    my_urls = {k.rsplit(".", 1)[1]: _path(u) for k, u in _legacy_urls(mine).items()}
    their_urls = {k.rsplit(".", 1)[1]: _path(u) for k, u in _legacy_urls(theirs).items()}
    assert set(my_urls) == {str(first.id), str(second.id)}
    assert my_urls[str(first.id)] != their_urls[str(first.id)]
    assert client.get(my_urls[str(first.id)]).status_code == 200

    device_part, profile_part, revision, mac = my_urls[str(first.id)].rsplit("/", 1)[1].split("-")
    forged = {
        "another device, my digest": f"{ids[outsider.udid]}-{profile_part}-{revision}-{mac}",
        "the other in-scope device, my digest": f"{ids[theirs.udid]}-{profile_part}-{revision}-{mac}",
        "another profile, my digest": f"{device_part}-{second.id}-{revision}-{mac}",
        "another revision": f"{device_part}-{profile_part}-{int(revision) + 1}-{mac}",
        "a guessed digest": f"{device_part}-{profile_part}-{revision}-{'0' * 64}",
        "no digest": f"{device_part}-{profile_part}-{revision}",
        "garbage": "x" * 40,
    }
    for why, token in forged.items():
        response = client.get(f"/mdm/ddm/profiles/{token}")
        assert response.status_code == 403, why
        assert PASSWORD.encode() not in response.data
    assert client.get("/mdm/ddm/profiles/").status_code == 404

    # the device leaves the scope: its URL stops working (404), the other device's still works
    patch(client, h, doc["data"]["id"], scope={"devices": [ids[theirs.udid]]})
    assert client.get(my_urls[str(first.id)]).status_code == 404
    assert client.get(their_urls[str(first.id)]).status_code == 200


def test_overlap_a_declarative_profile_is_never_also_installed_by_command(client, auth, db_session, enrolled):
    h = auth("read", "write")
    profile = make_wifi_profile(db_session, "com.example.ddm.both")
    db_session.commit()
    phone, old = enrolled("ios"), enrolled("ios", seed=16)
    old.os_version = "16.7.2"
    assert old.authenticate() == 200 and old.token_update() == 200
    pid, oid = device_id(db_session, phone), device_id(db_session, old)
    doc = created(client, h, name="both", scope={"devices": [pid, oid]}, profiles=[profile.id],
                  declarative_profiles=True)
    # a direct assignment of the same profile to both: the old device has it by command already, the
    # declarative one gets no InstallProfile (the declaration delivers it)
    assigned = client.post(f"/api/v1/profiles/{profile.id}/assignments", headers=h, json={"devices": [pid, oid]})
    assert assigned.status_code in (200, 201), assigned.get_json()
    assert [c.device_id for c in commands(db_session, "InstallProfile")] == [oid]
    assert len(_legacy_urls(phone)) == 1

    # the blueprint stops sending it as a declaration: now the direct assignment installs it by command,
    # and the declaration is gone
    before = tokens(phone)
    patch(client, h, doc["data"]["id"], declarative_profiles=False)
    assert sorted(c.device_id for c in commands(db_session, "InstallProfile")) == sorted([oid, pid])
    assert _legacy_urls(phone) == {}
    assert tokens(phone) != before
    assert commands(db_session, "RemoveProfile") == []


def test_a_new_profile_revision_changes_the_declaration(client, auth, db_session, enrolled):
    h = auth("read", "write")
    profile = make_wifi_profile(db_session, "com.example.ddm.rev", ssid="One")
    db_session.commit()
    phone = enrolled("ios")
    created(client, h, name="rev", scope={"devices": [device_id(db_session, phone)]}, profiles=[profile.id],
            declarative_profiles=True)
    (old_url,) = _legacy_urls(phone).values()
    old_token = tokens(phone)
    make_wifi_profile(db_session, "com.example.ddm.rev", ssid="Two", replace=True)
    db_session.commit()
    (new_url,) = _legacy_urls(phone).values()
    assert new_url != old_url and tokens(phone) != old_token
    assert client.get(_path(old_url)).status_code == 404  # its digest is right, the revision is gone
    served = plistlib.loads(unwrap_signed(client.get(_path(new_url)).data).content)
    assert served["PayloadContent"][0]["SSID_STR"] == "Two"
    assert items(phone)["DeclarationsToken"] == tokens(phone)
