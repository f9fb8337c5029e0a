"""Issue 14's loop end to end, through the real endpoints only: an .ipa and a .pkg uploaded, assigned to a
smart group of 200 iPhones and 3 Macs enrolled by the simulator (CMS-signed check-ins), every device
fetches the manifest and the package from the server, checks the hashes and installs once; the status
table says installed; a newer build reaches every device that has the older one; unassigning removes
the apps. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib

from tests.apps.builders import chunk_sha256s, distribution, info_plist, make_ipa, make_product_pkg

PHONES = 200
MACS = 3
JSONAPI = "application/vnd.api+json"


def _upload(client, h, data: bytes, filename: str) -> dict:
    response = client.post(f"/api/v1/apps/packages?filename={filename}", data=data,
                           headers={**h, "Content-Type": "application/octet-stream"})
    assert response.status_code in (200, 201), response.get_json()
    return response.get_json()


def _states(client, h, app_id: str) -> dict[str, dict]:
    response = client.get(f"/api/v1/apps/{app_id}/devices?page[size]=500", headers=h)
    assert response.status_code == 200, response.get_json()
    return {str(row["attributes"]["device_id"]): row["attributes"] for row in response.get_json()["data"]}


def _installs(sim, request_type: str) -> int:
    return [kind for kind, _params in sim.received].count(request_type)


def test_apps_reach_a_smart_group_of_200_devices_once_update_and_leave(client, auth, enrolled):
    h = auth("read", "write")
    ipa_v1 = make_ipa(info_plist("com.example.fleet", "1.0", "100", "Fleet", "16.0"))
    pkg = make_product_pkg(distribution("com.example.tool", "2.1.0", "Example Tool", "12.0"))
    phone_app = _upload(client, h, ipa_v1, "Fleet.ipa")
    mac_app = _upload(client, h, pkg, "Tool.pkg")
    phone_app_id, mac_app_id = phone_app["data"]["id"], mac_app["data"]["id"]
    assert phone_app["data"]["attributes"]["platform"] == "ios"
    assert mac_app["data"]["attributes"]["platform"] == "macos"

    phones = [enrolled("ios", device_name=f"Fleet {n:03d}") for n in range(PHONES)]
    macs = [enrolled("macos", device_name=f"Fleet Mac {n}") for n in range(MACS)]
    outsider = enrolled("ios", device_name="Front desk")
    group = client.post("/api/v1/device_groups", headers={**h, "Content-Type": JSONAPI}, json={
        "data": {"type": "device_groups", "attributes": {"name": "Fleet", "kind": "smart",
                                                           "filter": {"name": "Fleet"}}}})
    assert group.status_code == 201, group.get_json()
    group_id = int(group.get_json()["data"]["id"])
    for app_id, expected in ((phone_app_id, PHONES), (mac_app_id, MACS)):
        assigned = client.post(f"/api/v1/apps/{app_id}/assignments", json={"groups": [group_id]}, headers=h)
        assert assigned.status_code in (200, 201), assigned.get_json()
        assert assigned.get_json()["install_queued"] == expected  # each platform gets its own app only

    # every device takes its install in one session: manifest and package fetched, hashes checked
    package_sha = hashlib.sha256(ipa_v1).hexdigest()
    for sim in phones:
        sim.run_session()
        assert sim.installed_version("com.example.fleet") == "1.0"
        assert sim.managed_apps["com.example.fleet"].status.value == "Managed"
        assert _installs(sim, "InstallApplication") == 1
        assert [url.rsplit("/", 1)[-1] for url in sim.downloads] == ["manifest.plist", f"{package_sha}.ipa"]
    for sim in macs:
        sim.run_session()
        assert sim.installed_version("com.example.tool") == "2.1.0"
        assert _installs(sim, "InstallEnterpriseApplication") == 1
        assert sim.install_failures == []
    assert outsider.run_session() == [] and outsider.downloads == []
    # the manifest the Macs were given carries the hashes of the uploaded bytes, per 10 MiB chunk
    manifest = dict(macs[0].received)["InstallEnterpriseApplication"]["Manifest"]
    assert manifest["items"][0]["assets"][0]["sha256s"] == chunk_sha256s(pkg)

    states = _states(client, h, phone_app_id)
    assert len(states) == PHONES and {s["status"] for s in states.values()} == {"installed"}
    # InstallEnterpriseApplication's answer carries no State (Apple lists none): acknowledged means the
    # Mac took the install; its app lists, asked by the refresh action, say it is installed
    assert {s["status"] for s in _states(client, h, mac_app_id).values()} == {"installing"}
    assert client.post(f"/api/v1/apps/{mac_app_id}/refresh", headers=h).status_code == 202
    for sim in macs:
        sim.run_session()
    mac_states = _states(client, h, mac_app_id).values()
    assert {(s["status"], s["installed_version"]) for s in mac_states} == {("installed", "2.1.0")}
    # a second reconcile (another group change) queues nothing
    again = client.post(f"/api/v1/apps/{phone_app_id}/assignments", json={"groups": [group_id]}, headers=h)
    assert again.get_json()["install_queued"] == 0

    # a newer build of the same bundle id: the entry's package is replaced and every device updates
    ipa_v2 = make_ipa(info_plist("com.example.fleet", "1.1", "110", "Fleet", "16.0"))
    replaced = _upload(client, h, ipa_v2, "Fleet-1.1.ipa")
    assert replaced["data"]["id"] == phone_app_id and replaced["meta"]["outcome"] == "replaced"
    assert replaced["meta"]["reconcile"]["install_queued"] == PHONES
    for sim in phones:
        sim.run_session()
        assert sim.installed_version("com.example.fleet") == "1.1"
        assert _installs(sim, "InstallApplication") == 2
    refreshed = client.post(f"/api/v1/apps/{phone_app_id}/refresh", headers=h)
    assert refreshed.status_code == 202 and refreshed.get_json()["installed_list_queued"] == PHONES
    for sim in phones:
        sim.run_session()
    states = _states(client, h, phone_app_id)
    assert {(s["status"], s["installed_version"], s["drift"]) for s in states.values()} == {("installed", "1.1", False)}

    # unassigned: RemoveApplication everywhere, the apps are gone, the states say removed
    for app_id, expected in ((phone_app_id, PHONES), (mac_app_id, MACS)):
        (assignment,) = client.get(f"/api/v1/apps/{app_id}/assignments", headers=h).get_json()["data"]
        removed = client.delete(f"/api/v1/apps/{app_id}/assignments/{assignment['id']}", headers=h)
        assert removed.status_code == 200 and removed.get_json()["removal_queued"] == expected
    for sim in phones + macs:
        sim.run_session()
        assert _installs(sim, "RemoveApplication") == 1
    assert all(sim.installed_version("com.example.fleet") is None for sim in phones)
    assert all(sim.installed_version("com.example.tool") is None for sim in macs)
    assert {s["status"] for s in _states(client, h, phone_app_id).values()} == {"removed"}
    assert {s["status"] for s in _states(client, h, mac_app_id).values()} == {"removed"}
