"""Admin authentication and scopes, proven on every route."""

from __future__ import annotations

import re

import pytest

from mdmserver.api.auth import is_protected, required_scope
from mdmserver.db import db, utcnow
from mdmserver.tokens.models import ApiToken


def _concrete(rule: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", "1", rule)


def _admin_routes(app):
    for rule in app.url_map.iter_rules():
        if is_protected(rule.rule):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                yield method, _concrete(rule.rule), rule


def test_every_admin_route_refuses_an_anonymous_request(app, client):
    routes = list(_admin_routes(app))
    assert len(routes) >= 9
    for method, path, _ in routes:
        response = client.open(path, method=method)
        assert response.status_code == 401, (method, path)
        body = response.get_json()
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        if path.startswith("/api/management/"):
            assert body["request_id"] == response.headers["X-Request-ID"]
        else:
            assert body["errors"][0]["status"] == "401"
            assert body["meta"]["request_id"] == response.headers["X-Request-ID"]


def test_every_admin_route_refuses_a_token_without_its_scope(app, client, make_token):
    tokens = {scope: make_token(scope) for scope in ("read", "write", "secrets")}
    for method, path, rule in _admin_routes(app):
        needed = required_scope(app.view_functions[rule.endpoint], method)
        for scope, token in tokens.items():
            if scope == needed:
                continue
            response = client.open(path, method=method, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 403, (method, path, scope, needed)


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
