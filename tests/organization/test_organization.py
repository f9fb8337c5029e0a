from __future__ import annotations

from sqlalchemy import select

from mdmserver.audit.models import AuditEvent

JSONAPI = "application/vnd.api+json"


def _patch(client, headers, attributes, type_="organizations"):
    return client.patch(
        "/api/v1/organization",
        json={"data": {"type": type_, "attributes": attributes}},
        headers={**headers, "Content-Type": JSONAPI},
    )


def test_get_organization(client, auth):
    response = client.get("/api/v1/organization", headers=auth("read"))
    assert response.status_code == 200
    assert response.mimetype == JSONAPI
    data = response.get_json()["data"]
    assert data["type"] == "organizations"
    assert data["attributes"]["name"] == "mdmserver"
    assert data["attributes"]["payload_prefix"] == "com.mdmserver.mdm"


def test_patch_organization_changes_and_audits(client, auth, db_session):
    headers = auth("write")
    response = _patch(client, headers, {"name": "Example Corp", "email": "it@example.com",
                                        "phone": "+1 555 0100", "address": "1 Main St",
                                        "payload_prefix": "com.example.mdm"})
    assert response.status_code == 200, response.get_json()
    attributes = response.get_json()["data"]["attributes"]
    assert attributes["name"] == "Example Corp" and attributes["payload_prefix"] == "com.example.mdm"
    again = client.get("/api/v1/organization", headers=auth("read")).get_json()["data"]["attributes"]
    assert again["email"] == "it@example.com"
    event = db_session.scalar(select(AuditEvent).where(AuditEvent.action == "organization:update"))
    assert event is not None and event.actor.startswith("test-") and event.request_id
    assert event.details["after"]["name"] == "Example Corp"


def test_patch_organization_rejects_bad_values_with_pointers(client, auth):
    response = _patch(client, auth("write"), {"email": "not-an-email", "payload_prefix": "nodots", "name": ""})
    assert response.status_code == 422
    pointers = {e["source"]["pointer"] for e in response.get_json()["errors"]}
    assert pointers == {"/data/attributes/email", "/data/attributes/payload_prefix", "/data/attributes/name"}


def test_patch_organization_rejects_unknown_fields(client, auth):
    response = _patch(client, auth("write"), {"favourite_colour": "blue"})
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["source"]["pointer"] == "/data/attributes/favourite_colour"


def test_patch_organization_wrong_type_is_409(client, auth):
    assert _patch(client, auth("write"), {"name": "x"}, type_="devices").status_code == 409


def test_patch_organization_body_not_a_document(client, auth):
    response = client.patch("/api/v1/organization", json=[1, 2], headers=auth("write"))
    assert response.status_code == 422
