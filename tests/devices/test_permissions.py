"""Which scope each admin-API route of this feature set needs (a permission table, Lemur style).

Every route of the devices, users, attributes, groups, assignments, actions, commands and Mender
blueprints is listed; a test fails when a route is added without a row here.
"""

from __future__ import annotations

import pytest

BLUEPRINTS = ("devices", "users", "attributes", "groups", "assignments", "actions", "commands", "mender",
              "compat_manageengine", "compat_ivanti")
ME = "/api/v1/mdm"
ADM = "/api/management/v1/admission"

TABLE = [
    ("GET", "/api/v1/devices", "read"),
    ("PATCH", "/api/v1/devices/<ident>", "write"),
    ("DELETE", "/api/v1/devices/<ident>", "write"),
    ("GET", "/api/v1/devices/<ident>", "read"),
    ("GET", "/api/v1/devices/<ident>/installed_profiles", "read"),
    ("GET", "/api/v1/devices/<ident>/installed_applications", "read"),
    ("GET", "/api/v1/devices/<ident>/certificates", "read"),
    ("GET", "/api/v1/devices/<ident>/locations", "read"),
    ("GET", "/api/v1/devices/<ident>/os_updates", "read"),
    ("GET", "/api/v1/devices/<ident>/security", "read"),
    ("GET", "/api/v1/devices/<ident>/custom_attributes", "read"),
    ("POST", "/api/v1/devices/<ident>/custom_attributes", "write"),
    ("PATCH", "/api/v1/devices/<ident>/custom_attributes", "write"),
    ("DELETE", "/api/v1/devices/<ident>/custom_attributes", "write"),
    ("GET", "/api/v1/custom_attributes", "read"),
    ("DELETE", "/api/v1/custom_attributes", "write"),
    ("GET", "/api/v1/users", "read"),
    ("POST", "/api/v1/users", "write"),
    ("GET", "/api/v1/users/<user_id>", "read"),
    ("PATCH", "/api/v1/users/<user_id>", "write"),
    ("DELETE", "/api/v1/users/<user_id>", "write"),
    ("GET", "/api/v1/users/<user_id>/devices", "read"),
    ("GET", "/api/v1/devices/<ident>/owner", "read"),
    ("PUT", "/api/v1/devices/<ident>/owner", "write"),
    ("GET", "/api/v1/device_groups", "read"),
    ("POST", "/api/v1/device_groups", "write"),
    ("GET", "/api/v1/device_groups/<group_id>", "read"),
    ("PATCH", "/api/v1/device_groups/<group_id>", "write"),
    ("DELETE", "/api/v1/device_groups/<group_id>", "write"),
    ("GET", "/api/v1/device_groups/<group_id>/devices", "read"),
    ("POST", "/api/v1/device_groups/<group_id>/relationships/devices", "write"),
    ("DELETE", "/api/v1/device_groups/<group_id>/relationships/devices", "write"),
    ("GET", "/api/v1/devices/<ident>/groups", "read"),
    ("GET", "/api/v1/profiles/<profile_id>/assignments", "read"),
    ("POST", "/api/v1/profiles/<profile_id>/assignments", "write"),
    ("DELETE", "/api/v1/profiles/<profile_id>/assignments", "write"),
    ("POST", "/api/v1/profiles/<profile_id>/assignments/reconcile", "write"),
    ("POST", "/api/v1/assignments/reconcile", "write"),
    ("GET", "/api/v1/profiles/<profile_id>/assignments/status", "read"),
    ("GET", "/api/v1/devices/<ident>/profiles", "read"),
    ("POST", "/api/v1/devices/<ident>/profiles", "write"),
    ("DELETE", "/api/v1/devices/<ident>/profiles", "write"),
    ("GET", "/api/v1/actions", "read"),
    ("GET", "/api/v1/devices/<ident>/actions", "read"),
    ("POST", "/api/v1/devices/<ident>/actions/<name>", "write"),
    ("POST", "/api/v1/actions/<name>", "write"),
    ("GET", "/api/v1/actions/<name>/viability", "read"),
    ("GET", "/api/v1/actions/<name>", "read"),
    ("GET", "/api/v1/commands", "read"),
    ("GET", "/api/v1/devices/<ident>/commands", "read"),
    ("GET", "/api/v1/devices/<ident>/commands/latest", "read"),
    ("DELETE", "/api/v1/devices/<ident>/commands/<command_uuid>", "write"),
    ("POST", "/api/v1/devices/<ident>/commands", "write"),
    ("POST", "/api/v1/devices/test/<ident>", "write"),
    ("GET", "/api/v1/devices/inventory/<ident>", "write"),
    ("POST", "/api/v1/devices/inventory/<ident>", "write"),
    ("GET", "/api/v1/devices/<ident>/clear_passcode", "write"),
    ("POST", "/api/v1/devices/<ident>/clear_passcode", "write"),
    ("GET", "/api/v1/commands/<command_uuid>", "read"),
    ("DELETE", "/api/v1/commands/<command_uuid>", "write"),
    ("GET", f"{ADM}/devices", "read"),
    ("POST", f"{ADM}/devices", "write"),
    ("GET", f"{ADM}/devices/<auth_set_id>", "read"),
    ("PUT", f"{ADM}/devices/<auth_set_id>", "write"),
    ("DELETE", f"{ADM}/devices/<auth_set_id>", "write"),
    ("GET", f"{ADM}/devices/<auth_set_id>/status", "read"),
    ("PUT", f"{ADM}/devices/<auth_set_id>/status", "write"),
    ("GET", f"{ADM}/preauthorizations", "read"),
    ("DELETE", f"{ADM}/preauthorizations/<preauth_id>", "write"),
    # ManageEngine's Devices API (mdmserver/compat/manageengine.py)
    ("GET", f"{ME}/devices", "read"),
    ("GET", f"{ME}/devices/<ident>", "read"),
    ("PUT", f"{ME}/devices/<ident>", "write"),
    ("GET", f"{ME}/devices/<ident>/summary", "read"),
    ("GET", f"{ME}/devices/<ident>/certificates", "read"),
    ("GET", f"{ME}/devices/<ident>/filevault", "read"),
    ("GET", f"{ME}/devices/<ident>/firmware", "read"),
    ("GET", f"{ME}/devices/<ident>/firmware/password", "secrets"),
    ("GET", f"{ME}/devices/<ident>/locations", "read"),
    ("GET", f"{ME}/devices/<ident>/profiles", "read"),
    ("POST", f"{ME}/devices/<ident>/profiles", "write"),
    ("DELETE", f"{ME}/devices/<ident>/profiles", "write"),
    ("GET", f"{ME}/devices/<ident>/profiles/<int:profile_id>", "read"),
    ("GET", f"{ME}/devices/<ident>/apps", "read"),
    ("GET", f"{ME}/devices/<ident>/apps/<int:app_id>", "read"),
    ("GET", f"{ME}/devices/<ident>/actions", "read"),
    ("POST", f"{ME}/devices/<ident>/actions/<name>", "write"),
    ("DELETE", f"{ME}/devices/<ident>/actions/<name>", "write"),
    ("GET", f"{ME}/devices/<ident>/actions/recent_command", "read"),
    ("GET", f"{ME}/devices/<ident>/scan", "read"),
    ("GET", f"{ME}/devices/<ident>/commandhistory", "read"),
    ("POST", f"{ME}/actions/<name>", "write"),
    # Ivanti's device API (mdmserver/compat/ivanti.py)
    ("GET", "/api/v1/device/<name>", "read"),
    ("PUT", "/api/v1/device/<name>", "write"),
    ("PUT", "/api/v1/device/updateAccount", "write"),
    ("DELETE", "/api/v1/device", "write"),
    ("GET", "/api/v1/device", "read"),
    ("GET", "/api/v1/device/<ident>/customattributes", "read"),
    ("POST", "/api/v1/device/<ident>/customattributes", "write"),
    ("PATCH", "/api/v1/device/<ident>/customattributes", "write"),
    ("DELETE", "/api/v1/device/<ident>/customattributes", "write"),
    ("DELETE", "/api/v1/device/customattributes", "write"),
]

_VALUES = {"<ident>": "999999", "<user_id>": "999999", "<group_id>": "999999", "<profile_id>": "999999",
           "<name>": "lock", "<command_uuid>": "00000000-0000-0000-0000-000000000000",
           "<auth_set_id>": "0" * 64, "<preauth_id>": "999999",
           "<int:profile_id>": "999999", "<int:app_id>": "999999"}
_OTHER = {"read": ("write",), "write": ("read",), "secrets": ("read", "write")}


def _url(rule: str) -> str:
    for placeholder, value in _VALUES.items():
        rule = rule.replace(placeholder, value)
    return rule


def test_every_route_is_in_the_table(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] in BLUEPRINTS:
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routes.add((method, rule.rule))
    assert routes == {(m, r) for m, r, _ in TABLE}


@pytest.mark.parametrize(("method", "rule", "scope"), TABLE, ids=[f"{m} {r}" for m, r, _ in TABLE])
def test_scopes(client, make_token, method, rule, scope):
    url = _url(rule)
    assert client.open(url, method=method).status_code == 401
    wrong = {"Authorization": f"Bearer {make_token(*_OTHER[scope])}"}
    response = client.open(url, method=method, headers=wrong, json={})
    assert response.status_code == 403, response.get_json()
    if rule.startswith(ADM):
        assert set(response.get_json()) == {"error", "request_id"}
    else:
        assert response.get_json()["errors"][0]["code"] == "insufficient_scope"
    right = {"Authorization": f"Bearer {make_token(scope)}"}
    response = client.open(url, method=method, headers=right, json={})
    assert response.status_code not in (401, 403, 405, 500), (response.status_code, response.get_json())
    admin = {"Authorization": f"Bearer {make_token('admin')}"}
    assert client.open(url, method=method, headers=admin, json={}).status_code not in (401, 403, 500)
