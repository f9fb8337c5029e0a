"""Admin authentication and scopes, proven on every route.

The scope each route needs is written out by hand below (from DESIGN.md: ``read`` = every GET except
secret material, ``write`` = every change, ``secrets`` = private keys, unlock/bootstrap tokens, profile
download, secret-bearing command parameters, ``admin`` = everything incl. tokens and audit). It is
compared with the app's URL map, never taken from the product's own declarations, so a wrong
``@requires_scope`` (or a forgotten one) fails here.
"""

from __future__ import annotations

import re

import pytest

from mdmserver.db import db, utcnow
from mdmserver.tokens.models import ApiToken

# Paths under /api/ that need no token.
PUBLIC = {"/api/openapi.json", "/api/docs"}
SCOPES = ("read", "write", "secrets", "admin")

# (method, Flask rule, scope needed). HEAD follows GET; OPTIONS is answered without a token.
PERMISSIONS: list[tuple[str, str, str]] = [
    # Mender-compatible admission API
    ("GET", "/api/management/v1/admission/devices", "read"),
    ("POST", "/api/management/v1/admission/devices", "write"),
    ("GET", "/api/management/v1/admission/devices/<auth_set_id>", "read"),
    ("PUT", "/api/management/v1/admission/devices/<auth_set_id>", "write"),
    ("DELETE", "/api/management/v1/admission/devices/<auth_set_id>", "write"),
    ("GET", "/api/management/v1/admission/devices/<auth_set_id>/status", "read"),
    ("PUT", "/api/management/v1/admission/devices/<auth_set_id>/status", "write"),
    ("GET", "/api/management/v1/admission/preauthorizations", "read"),
    ("DELETE", "/api/management/v1/admission/preauthorizations/<preauth_id>", "write"),
    # actions
    ("GET", "/api/v1/actions", "read"),
    ("POST", "/api/v1/actions/<name>", "write"),
    ("GET", "/api/v1/actions/<name>/viability", "read"),
    ("GET", "/api/v1/actions/<name>", "read"),
    ("GET", "/api/v1/devices/<ident>/actions", "read"),
    ("POST", "/api/v1/devices/<ident>/actions/<name>", "write"),
    # scheduled actions
    ("GET", "/api/v1/scheduled_actions", "read"),
    ("GET", "/api/v1/scheduled_actions/<schedule_id>", "read"),
    ("DELETE", "/api/v1/scheduled_actions/<schedule_id>", "write"),
    # compliance policies and each device's compliance
    ("GET", "/api/v1/compliance_policies", "read"),
    ("POST", "/api/v1/compliance_policies", "write"),
    ("POST", "/api/v1/compliance_policies/evaluate", "write"),
    ("GET", "/api/v1/compliance_policies/<policy_id>", "read"),
    ("PATCH", "/api/v1/compliance_policies/<policy_id>", "write"),
    ("DELETE", "/api/v1/compliance_policies/<policy_id>", "write"),
    ("GET", "/api/v1/compliance_policies/<policy_id>/targets", "read"),
    ("POST", "/api/v1/compliance_policies/<policy_id>/targets", "write"),
    ("DELETE", "/api/v1/compliance_policies/<policy_id>/targets", "write"),
    ("GET", "/api/v1/devices/<ident>/compliance", "read"),
    ("GET", "/api/v1/devices/<ident>/compliance/history", "read"),
    ("GET", "/api/v1/device/<ident>/policies", "read"),
    # audit log: admin only
    ("GET", "/api/v1/audit_events", "admin"),
    # certificates and keys: metadata is read, private key material is secrets
    ("GET", "/api/v1/certificates", "read"),
    ("GET", "/api/v1/certificates/<int:certificate_id>", "read"),
    ("GET", "/api/v1/download/certificates/<int:certificate_id>", "read"),
    ("GET", "/api/v1/rsa_private_keys", "read"),
    ("GET", "/api/v1/rsa_private_keys/<int:key_id>", "read"),
    ("GET", "/api/v1/rsa_private_keys/<int:key_id>/download", "secrets"),
    # commands and history
    ("GET", "/api/v1/commands", "read"),
    ("GET", "/api/v1/commands/<command_uuid>", "read"),
    ("DELETE", "/api/v1/commands/<command_uuid>", "write"),
    ("GET", "/api/v1/devices/<ident>/commands", "read"),
    ("POST", "/api/v1/devices/<ident>/commands", "write"),
    ("GET", "/api/v1/devices/<ident>/commands/latest", "read"),
    ("DELETE", "/api/v1/devices/<ident>/commands/<command_uuid>", "write"),
    # commandment-compatible enqueueing endpoints: the GETs enqueue, so they need write
    ("POST", "/api/v1/devices/test/<ident>", "write"),
    ("GET", "/api/v1/devices/inventory/<ident>", "write"),
    ("POST", "/api/v1/devices/inventory/<ident>", "write"),
    ("GET", "/api/v1/devices/<ident>/clear_passcode", "write"),
    ("POST", "/api/v1/devices/<ident>/clear_passcode", "write"),
    # custom attributes
    ("GET", "/api/v1/custom_attributes", "read"),
    ("DELETE", "/api/v1/custom_attributes", "write"),
    ("GET", "/api/v1/devices/<ident>/custom_attributes", "read"),
    ("POST", "/api/v1/devices/<ident>/custom_attributes", "write"),
    ("PATCH", "/api/v1/devices/<ident>/custom_attributes", "write"),
    ("DELETE", "/api/v1/devices/<ident>/custom_attributes", "write"),
    # groups
    ("GET", "/api/v1/device_groups", "read"),
    ("POST", "/api/v1/device_groups", "write"),
    ("GET", "/api/v1/device_groups/<group_id>", "read"),
    ("PATCH", "/api/v1/device_groups/<group_id>", "write"),
    ("DELETE", "/api/v1/device_groups/<group_id>", "write"),
    ("GET", "/api/v1/device_groups/<group_id>/devices", "read"),
    ("POST", "/api/v1/device_groups/<group_id>/relationships/devices", "write"),
    ("DELETE", "/api/v1/device_groups/<group_id>/relationships/devices", "write"),
    ("GET", "/api/v1/devices/<ident>/groups", "read"),
    # devices and their inventory read-back
    ("GET", "/api/v1/devices", "read"),
    ("GET", "/api/v1/devices/<ident>", "read"),
    ("PATCH", "/api/v1/devices/<ident>", "write"),
    ("DELETE", "/api/v1/devices/<ident>", "write"),
    ("GET", "/api/v1/devices/<ident>/certificates", "read"),
    ("GET", "/api/v1/devices/<ident>/installed_applications", "read"),
    ("GET", "/api/v1/devices/<ident>/installed_profiles", "read"),
    ("GET", "/api/v1/devices/<ident>/locations", "read"),
    ("GET", "/api/v1/devices/<ident>/os_updates", "read"),
    ("GET", "/api/v1/devices/<ident>/security", "read"),
    # owners and users
    ("GET", "/api/v1/devices/<ident>/owner", "read"),
    ("PUT", "/api/v1/devices/<ident>/owner", "write"),
    ("GET", "/api/v1/users", "read"),
    ("POST", "/api/v1/users", "write"),
    ("GET", "/api/v1/users/<user_id>", "read"),
    ("PATCH", "/api/v1/users/<user_id>", "write"),
    ("DELETE", "/api/v1/users/<user_id>", "write"),
    ("GET", "/api/v1/users/<user_id>/devices", "read"),
    # organization
    ("GET", "/api/v1/organization", "read"),
    ("PATCH", "/api/v1/organization", "write"),
    # profiles, payloads, assignments
    ("GET", "/api/v1/profiles", "read"),
    ("POST", "/api/v1/profiles", "write"),
    ("GET", "/api/v1/profiles/<int:profile_id>", "read"),
    ("PATCH", "/api/v1/profiles/<int:profile_id>", "write"),
    ("DELETE", "/api/v1/profiles/<int:profile_id>", "write"),
    ("GET", "/api/v1/profiles/<int:profile_id>/versions", "read"),
    ("POST", "/api/v1/upload/profiles", "write"),
    # DESIGN.md: downloading a profile returns its secrets (passwords, PKCS#12), so it needs `secrets`.
    ("GET", "/api/v1/download/profiles/<int:profile_id>", "secrets"),
    ("GET", "/api/v1/payloads", "read"),
    ("POST", "/api/v1/payloads", "write"),
    ("GET", "/api/v1/payloads/<int:payload_id>", "read"),
    ("PATCH", "/api/v1/payloads/<int:payload_id>", "write"),
    ("DELETE", "/api/v1/payloads/<int:payload_id>", "write"),
    ("GET", "/api/v1/profiles/<profile_id>/assignments", "read"),
    ("POST", "/api/v1/profiles/<profile_id>/assignments", "write"),
    ("DELETE", "/api/v1/profiles/<profile_id>/assignments", "write"),
    ("POST", "/api/v1/profiles/<profile_id>/assignments/reconcile", "write"),
    ("GET", "/api/v1/profiles/<profile_id>/assignments/status", "read"),
    ("POST", "/api/v1/assignments/reconcile", "write"),
    ("GET", "/api/v1/devices/<ident>/profiles", "read"),
    ("POST", "/api/v1/devices/<ident>/profiles", "write"),
    ("DELETE", "/api/v1/devices/<ident>/profiles", "write"),
    # push
    ("GET", "/api/v1/devices/<ident>/push", "read"),
    ("POST", "/api/v1/devices/<ident>/push", "write"),
    ("GET", "/api/v1/push_certificate", "read"),
    # importing the push certificate replaces the server's APNs identity (with its private key): admin
    ("PUT", "/api/v1/push_certificate", "admin"),
    # app assignments and install states (issue 14)
    ("GET", "/api/v1/apps/<app_id>/assignments", "read"),
    ("POST", "/api/v1/apps/<app_id>/assignments", "write"),
    ("DELETE", "/api/v1/apps/<app_id>/assignments/<assignment_id>", "write"),
    ("GET", "/api/v1/apps/<app_id>/devices", "read"),
    ("POST", "/api/v1/apps/<app_id>/refresh", "write"),
    ("POST", "/api/v1/apps/<app_id>/update", "write"),
    ("GET", "/api/v1/devices/<ident>/apps", "read"),
    ("POST", "/api/v1/devices/<ident>/apps/refresh", "write"),
    # blueprints (issue 15)
    ("GET", "/api/v1/blueprints", "read"),
    ("POST", "/api/v1/blueprints", "write"),
    ("GET", "/api/v1/blueprints/<blueprint_id>", "read"),
    ("PATCH", "/api/v1/blueprints/<blueprint_id>", "write"),
    ("DELETE", "/api/v1/blueprints/<blueprint_id>", "write"),
    ("POST", "/api/v1/blueprints/<blueprint_id>/reconcile", "write"),
    ("GET", "/api/v1/blueprints/<blueprint_id>/devices", "read"),
    ("GET", "/api/v1/devices/<ident>/blueprints", "read"),
    # declarative management (issue 15): a device's declaration set with its reported status, its status items
    ("GET", "/api/v1/devices/<ident>/declarations", "read"),
    ("GET", "/api/v1/devices/<ident>/ddm_status", "read"),
    # the fleet's OS versions and update progress
    ("GET", "/api/v1/os_updates", "read"),
    # the Android MDM seed's scoped profiles (compat, onto blueprints)
    ("GET", "/api/v1/midm/profiles", "read"),
    ("POST", "/api/v1/midm/profiles", "write"),
    ("GET", "/api/v1/midm/profiles/<blueprint_id>", "read"),
    ("PUT", "/api/v1/midm/profiles/<blueprint_id>", "write"),
    # ManageEngine's Devices API (compat)
    ("GET", "/api/v1/mdm/devices", "read"),
    ("GET", "/api/v1/mdm/devices/<ident>", "read"),
    ("PUT", "/api/v1/mdm/devices/<ident>", "write"),
    ("GET", "/api/v1/mdm/devices/<ident>/summary", "read"),
    ("GET", "/api/v1/mdm/devices/<ident>/certificates", "read"),
    ("GET", "/api/v1/mdm/devices/<ident>/filevault", "read"),
    ("GET", "/api/v1/mdm/devices/<ident>/firmware", "read"),
    ("GET", "/api/v1/mdm/devices/<ident>/firmware/password", "secrets"),
    ("GET", "/api/v1/mdm/devices/<ident>/locations", "read"),
    ("GET", "/api/v1/mdm/devices/<ident>/profiles", "read"),
    ("POST", "/api/v1/mdm/devices/<ident>/profiles", "write"),
    ("DELETE", "/api/v1/mdm/devices/<ident>/profiles", "write"),
    ("GET", "/api/v1/mdm/devices/<ident>/profiles/<int:profile_id>", "read"),
    ("GET", "/api/v1/mdm/devices/<ident>/apps", "read"),
    ("GET", "/api/v1/mdm/devices/<ident>/apps/<int:app_id>", "read"),
    ("POST", "/api/v1/mdm/devices/<ident>/apps", "write"),
    ("DELETE", "/api/v1/mdm/devices/<ident>/apps", "write"),
    ("POST", "/api/v1/mdm/devices/<ident>/apps/refreshstatus", "write"),
    ("GET", "/api/v1/mdm/devices/<ident>/actions", "read"),
    ("POST", "/api/v1/mdm/devices/<ident>/actions/<name>", "write"),
    ("DELETE", "/api/v1/mdm/devices/<ident>/actions/<name>", "write"),
    ("GET", "/api/v1/mdm/devices/<ident>/actions/recent_command", "read"),
    ("GET", "/api/v1/mdm/devices/<ident>/scan", "read"),
    ("GET", "/api/v1/mdm/devices/<ident>/commandhistory", "read"),
    ("POST", "/api/v1/mdm/actions/<name>", "write"),
    # Ivanti's device API (mdmserver/compat/ivanti.py)
    ("GET", "/api/v1/device", "read"),
    ("DELETE", "/api/v1/device", "write"),
    ("GET", "/api/v1/device/<name>", "read"),
    ("PUT", "/api/v1/device/<name>", "write"),
    ("PUT", "/api/v1/device/updateAccount", "write"),
    ("GET", "/api/v1/device/<ident>/customattributes", "read"),
    ("POST", "/api/v1/device/<ident>/customattributes", "write"),
    ("PATCH", "/api/v1/device/<ident>/customattributes", "write"),
    ("DELETE", "/api/v1/device/<ident>/customattributes", "write"),
    ("DELETE", "/api/v1/device/customattributes", "write"),
    # the app catalogue (the device downloads under /apps/<token>/ need no token: the token is the capability)
    ("GET", "/api/v1/apps", "read"),
    ("POST", "/api/v1/apps", "write"),
    ("POST", "/api/v1/apps/packages", "write"),
    ("GET", "/api/v1/apps/<int:app_id>", "read"),
    ("PATCH", "/api/v1/apps/<int:app_id>", "write"),
    ("DELETE", "/api/v1/apps/<int:app_id>", "write"),
    # webhooks (issue 16): subscriptions name URLs the server will POST to, signed with their secret: admin
    ("GET", "/api/v1/webhooks", "admin"),
    ("POST", "/api/v1/webhooks", "admin"),
    ("GET", "/api/v1/webhooks/<webhook_id>", "admin"),
    ("PATCH", "/api/v1/webhooks/<webhook_id>", "admin"),
    ("DELETE", "/api/v1/webhooks/<webhook_id>", "admin"),
    ("POST", "/api/v1/webhooks/<webhook_id>/rotate_secret", "admin"),
    ("POST", "/api/v1/webhooks/<webhook_id>/ping", "admin"),
    ("GET", "/api/v1/webhooks/<webhook_id>/deliveries", "admin"),
    ("GET", "/api/v1/webhooks/<webhook_id>/deliveries/<delivery_id>", "admin"),
    ("POST", "/api/v1/webhooks/<webhook_id>/deliveries/<delivery_id>/replay", "admin"),
]


def _concrete(rule: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", "1", rule)


def _admin_routes(app) -> set[tuple[str, str]]:
    """(method, rule) of every route under /api/ that needs a token, from the URL map."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if (rule.rule == "/api" or rule.rule.startswith("/api/")) and rule.rule not in PUBLIC:
            routes |= {(method, rule.rule) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def test_permission_table_lists_every_admin_route(app):
    table = {(method, rule) for method, rule, _ in PERMISSIONS}
    assert len(table) == len(PERMISSIONS), "a route is listed twice"
    routes = _admin_routes(app)
    assert not routes - table, f"routes missing from the permission table: {sorted(routes - table)}"
    assert not table - routes, f"table entries with no route: {sorted(table - routes)}"
    assert {scope for _, _, scope in PERMISSIONS} <= set(SCOPES)


def test_every_admin_route_refuses_an_anonymous_request(app, client):
    routes = sorted(_admin_routes(app))
    assert len(routes) >= 9
    for method, rule in routes:
        path = _concrete(rule)
        response = client.open(path, method=method)
        assert response.status_code == 401, (method, path)
        body = response.get_json()
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        if path.startswith("/api/management/"):
            assert body["request_id"] == response.headers["X-Request-ID"]
        else:
            assert body["errors"][0]["status"] == "401"
            assert body["meta"]["request_id"] == response.headers["X-Request-ID"]


def _lacking(needed: str) -> list[tuple[str, ...]]:
    """Token scope sets that must be refused for a route needing ``needed``: every other single
    scope, and for ``admin`` all the others together."""
    if needed == "admin":
        return [("read",), ("write",), ("secrets",), ("read", "write", "secrets")]
    return [(scope,) for scope in ("read", "write", "secrets") if scope != needed]


@pytest.mark.parametrize(("method", "rule", "needed"), PERMISSIONS, ids=[f"{m} {r}" for m, r, _ in PERMISSIONS])
def test_route_scope(client, make_token, method, rule, needed):
    path = _concrete(rule)
    for scopes in _lacking(needed):
        token = make_token(*scopes)
        response = client.open(path, method=method, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403, (method, path, scopes, needed, response.status_code)
        if path.startswith("/api/management/"):  # Mender's own error shape
            assert set(response.get_json()) == {"error", "request_id"}
        else:
            assert response.get_json()["errors"][0]["code"] == "insufficient_scope"
    for scopes in ((needed,), ("admin",)):
        token = make_token(*scopes)
        response = client.open(path, method=method, headers={"Authorization": f"Bearer {token}"})
        # let in, and then answered: never a server error, and the route takes the method
        assert response.status_code not in (401, 403, 405, 500), (method, path, scopes, response.status_code,
                                                                  response.get_data(as_text=True)[:200])


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer mdm_not-a-real-token", "bearer\tx"],
)
def test_bad_credentials_are_401(client, header):
    response = client.get("/api/v1/organization", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.get_json()["errors"][0]["code"] == "unauthorized"


def test_revoked_token_is_refused(client, make_token, db_session):
    token = make_token("read", name="soon-revoked")
    assert client.get("/api/v1/organization", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    row = db_session.scalar(db.select(ApiToken).where(ApiToken.name == "soon-revoked"))
    row.revoked_at = utcnow()
    db_session.commit()
    assert client.get("/api/v1/organization", headers={"Authorization": f"Bearer {token}"}).status_code == 401


@pytest.mark.parametrize(
    "scopes,method,path,status",
    [
        (("read",), "GET", "/api/v1/organization", 200),
        (("write",), "GET", "/api/v1/organization", 403),
        (("read",), "PATCH", "/api/v1/organization", 403),
        (("admin",), "GET", "/api/v1/organization", 200),
        (("read",), "GET", "/api/v1/audit_events", 403),
        (("admin",), "GET", "/api/v1/audit_events", 200),
        (("read",), "GET", "/api/v1/rsa_private_keys/1/download", 403),
        (("write",), "GET", "/api/v1/rsa_private_keys/1/download", 403),
        (("secrets",), "GET", "/api/v1/rsa_private_keys/1/download", 200),
        (("read",), "GET", "/api/v1/certificates", 200),
    ],
)
def test_permission_table(client, auth, scopes, method, path, status):
    assert client.open(path, method=method, headers=auth(*scopes)).status_code == status


def test_last_used_is_recorded(client, make_token, db_session):
    token = make_token("read", name="usage")
    client.get("/api/v1/organization", headers={"Authorization": f"Bearer {token}"})
    row = db_session.scalar(db.select(ApiToken).where(ApiToken.name == "usage"))
    db_session.refresh(row)
    assert row.last_used_at is not None


def test_tokens_are_stored_hashed(make_token, db_session):
    token = make_token("read", name="hashed")
    row = db_session.scalar(db.select(ApiToken).where(ApiToken.name == "hashed"))
    assert token not in (row.token_hash, row.name) and len(row.token_hash) == 64
