"""``/api/v1/webhooks``: scopes, validation (every bad input a 4xx JSON:API error, nothing written), the
secret (shown once, sealed at rest), deliveries, replay and ping."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from mdmserver.db import db
from mdmserver.webhooks.models import (
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
    WebhookSubscriptionEvent,
)

JSONAPI = "application/vnd.api+json"
URL = "https://hooks.example.com/mdm"


def _body(**attributes) -> dict:
    return {"data": {"type": "webhooks", "attributes": {"name": "siem", "url": URL,
                                                         "event_types": ["device.enrolled"], **attributes}}}


def _create(client, headers, **attributes):
    return client.post("/api/v1/webhooks", json=_body(**attributes), headers={**headers, "Content-Type": JSONAPI})


def _count(db_session, model) -> int:
    return db_session.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize("scopes", [("read",), ("write",), ("secrets",), ("read", "write", "secrets")])
def test_only_admin_tokens_reach_webhooks(client, auth, scopes):
    h = auth(*scopes)
    for method, path in (("GET", "/api/v1/webhooks"), ("POST", "/api/v1/webhooks"),
                         ("GET", "/api/v1/webhooks/1/deliveries"), ("POST", "/api/v1/webhooks/1/ping")):
        response = client.open(path, method=method, headers=h, json=_body())
        assert response.status_code == 403, (method, path, scopes)
        assert response.get_json()["errors"][0]["code"] == "insufficient_scope"


def test_create_shows_the_secret_once_and_seals_it(client, auth, db_session):
    admin = auth("admin")
    created = _create(client, admin, event_types=["command.error", "device.enrolled", "command.error"])
    assert created.status_code == 201, created.get_json()
    data = created.get_json()["data"]
    secret = data["attributes"]["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert created.headers["Location"] == f"/api/v1/webhooks/{data['id']}"
    assert data["attributes"]["event_types"] == ["command.error", "device.enrolled"]
    assert data["attributes"]["enabled"] is True
    hook = data["id"]

    # every other answer to an admin token leaves it out
    answers = [
        client.get("/api/v1/webhooks", headers=admin),
        client.get(f"/api/v1/webhooks/{hook}", headers=admin),
        client.patch(f"/api/v1/webhooks/{hook}", headers={**admin, "Content-Type": JSONAPI},
                     json={"data": {"type": "webhooks", "id": hook, "attributes": {"enabled": False}}}),
        client.post(f"/api/v1/webhooks/{hook}/ping", headers=admin),
        client.get(f"/api/v1/webhooks/{hook}/deliveries", headers=admin),
        client.get("/api/v1/audit_events", headers=admin),
        client.get("/api/openapi.json"),
    ]
    for answer in answers:
        assert answer.status_code < 300, answer.get_json()
        assert secret not in answer.get_data(as_text=True)
    assert "secret" not in answers[1].get_json()["data"]["attributes"]
    # a token that was given the secrets scope reads it
    shown = client.get(f"/api/v1/webhooks/{hook}", headers=auth("admin", "secrets")).get_json()
    assert shown["data"]["attributes"]["secret"] == secret

    # encrypted at rest: no column of any table holds it, in text or bytes
    db_session.flush()
    for table in db.metadata.sorted_tables:
        for row in db_session.execute(select(table)):
            for value in row:
                if isinstance(value, str):
                    assert secret not in value, table.name
                elif isinstance(value, bytes | memoryview):
                    assert secret.encode() not in bytes(value), table.name
    assert _count(db_session, WebhookSubscription) == 1


def test_rotate_gives_a_new_secret(client, auth):
    admin = auth("admin")
    created = _create(client, admin).get_json()["data"]
    rotated = client.post(f"/api/v1/webhooks/{created['id']}/rotate_secret", headers=admin)
    assert rotated.status_code == 200
    attributes = rotated.get_json()["data"]["attributes"]
    assert attributes["secret"].startswith("whsec_") and attributes["secret"] != created["attributes"]["secret"]
    assert attributes["secret_rotated_at"].endswith("Z")
    shown = client.get(f"/api/v1/webhooks/{created['id']}", headers=auth("admin", "secrets")).get_json()
    assert shown["data"]["attributes"]["secret"] == attributes["secret"]


@pytest.mark.parametrize("url", [
    "file:///etc/passwd",
    "gopher://127.0.0.1:70/_hello",
    "ftp://hooks.example.com/x",
    "javascript:alert(1)",
    "https://user:pass@hooks.example.com/mdm",
    "https://user@hooks.example.com/mdm",
    "https://:pass@hooks.example.com/mdm",
    "https:///no-host",
    "hooks.example.com/mdm",
    "https://hooks.example.com:99999/",
    "https://hooks.example.com/a b",
    "https://hooks.example.com/\r\nX-Injected: 1",
    "https://hooks.example.com/" + "a" * 2100,
    "",
])
def test_bad_urls_are_refused_and_nothing_is_written(client, auth, db_session, url):
    response = _create(client, auth("admin"), url=url)
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert body["errors"][0]["source"]["pointer"] == "/data/attributes/url"
    assert body["meta"]["request_id"] == response.headers["X-Request-ID"]
    assert _count(db_session, WebhookSubscription) == 0


@pytest.mark.parametrize(("attributes", "pointer"), [
    ({"event_types": []}, "/data/attributes/event_types"),
    ({"event_types": ["device.exploded"]}, "/data/attributes/event_types/0"),
    ({"event_types": ["ping"]}, "/data/attributes/event_types/0"),
    ({"event_types": "device.enrolled"}, "/data/attributes/event_types"),
    ({"name": ""}, "/data/attributes/name"),
    ({"enabled": "yes"}, "/data/attributes/enabled"),
    ({"secret": "mine"}, "/data/attributes/secret"),
])
def test_bad_attributes_are_422_with_a_pointer(client, auth, db_session, attributes, pointer):
    response = _create(client, auth("admin"), **attributes)
    assert response.status_code == 422, response.get_json()
    assert pointer in [e["source"]["pointer"] for e in response.get_json()["errors"]]
    assert _count(db_session, WebhookSubscription) == 0


def test_bodies_that_are_not_a_webhook(client, auth, db_session):
    admin = {**auth("admin"), "Content-Type": JSONAPI}
    assert client.post("/api/v1/webhooks", data="{", headers=admin).status_code == 400
    wrong_type = {"data": {"type": "users", "attributes": _body()["data"]["attributes"]}}
    assert client.post("/api/v1/webhooks", json=wrong_type, headers=admin).status_code == 409
    assert _create(client, admin).status_code == 201
    duplicate = _create(client, admin)
    assert duplicate.status_code == 409
    assert duplicate.get_json()["errors"][0]["source"]["pointer"] == "/data/attributes/name"
    assert _count(db_session, WebhookSubscription) == 1


def test_update_list_filter_and_delete(client, auth, db_session):
    admin = auth("admin")
    first = _create(client, admin, name="a").get_json()["data"]["id"]
    second = _create(client, admin, name="b", event_types=["command.error"]).get_json()["data"]["id"]
    patch = {"data": {"type": "webhooks", "id": second, "attributes": {
        "url": "http://10.0.0.5:8080/in", "event_types": ["command.error", "app.install_failed"], "enabled": False}}}
    changed = client.patch(f"/api/v1/webhooks/{second}", json=patch, headers={**admin, "Content-Type": JSONAPI})
    assert changed.status_code == 200
    assert changed.get_json()["data"]["attributes"]["event_types"] == ["app.install_failed", "command.error"]
    bad = {"data": {"type": "webhooks", "id": second, "attributes": {"url": "gopher://x/"}}}
    assert client.patch(f"/api/v1/webhooks/{second}", json=bad,
                        headers={**admin, "Content-Type": JSONAPI}).status_code == 422
    assert db_session.get(WebhookSubscription, int(second)).url == "http://10.0.0.5:8080/in"

    def names(query: str) -> list[str]:
        response = client.get(f"/api/v1/webhooks{query}", headers=admin)
        assert response.status_code == 200, response.get_json()
        return [d["attributes"]["name"] for d in response.get_json()["data"]]

    assert names("") == ["a", "b"]
    assert names("?filter[enabled]=false") == ["b"]
    assert names("?filter[event_type]=app.install_failed") == ["b"]
    assert names("?sort=-name") == ["b", "a"]
    assert client.get("/api/v1/webhooks?filter[url]=x", headers=admin).status_code == 400
    assert client.get("/api/v1/webhooks/999999", headers=admin).status_code == 404
    assert client.get("/api/v1/webhooks/x", headers=admin).status_code == 404
    assert client.delete(f"/api/v1/webhooks/{first}", headers=admin).status_code == 204
    assert client.delete(f"/api/v1/webhooks/{first}", headers=admin).status_code == 404
    assert names("") == ["b"]
    assert db_session.scalar(select(func.count()).select_from(WebhookSubscriptionEvent)
                             .where(WebhookSubscriptionEvent.subscription_id == int(first))) == 0


def test_ping_deliveries_filter_and_replay(client, auth, db_session):
    admin = auth("admin")
    hook = _create(client, admin).get_json()["data"]["id"]
    other = _create(client, admin, name="other").get_json()["data"]["id"]
    pinged = client.post(f"/api/v1/webhooks/{hook}/ping", headers=admin)
    assert pinged.status_code == 202
    delivery = pinged.get_json()["data"]
    attributes = delivery["attributes"]
    assert attributes["event_type"] == "ping" and attributes["status"] == "pending"
    assert attributes["payload"]["type"] == "ping"
    assert attributes["payload"]["data"] == {"webhook": {"id": hook, "name": "siem"}}
    assert attributes["payload"]["id"] == attributes["event_id"]
    # the ping is for this webhook only
    assert client.get(f"/api/v1/webhooks/{other}/deliveries", headers=admin).get_json()["data"] == []

    listed = client.get(f"/api/v1/webhooks/{hook}/deliveries?filter[status]=pending", headers=admin).get_json()
    assert [d["id"] for d in listed["data"]] == [delivery["id"]] and listed["meta"]["total"] == 1
    assert client.get(f"/api/v1/webhooks/{hook}/deliveries?filter[status]=dead",
                      headers=admin).get_json()["data"] == []
    assert client.get(f"/api/v1/webhooks/{hook}/deliveries?filter[event_type]=ping",
                      headers=admin).get_json()["meta"]["total"] == 1
    unknown = client.get(f"/api/v1/webhooks/{hook}/deliveries?filter[status]=lost", headers=admin)
    assert unknown.status_code == 400 and unknown.get_json()["errors"][0]["source"]["parameter"] == "filter[status]"

    # another webhook's delivery is not found through this one
    assert client.get(f"/api/v1/webhooks/{other}/deliveries/{delivery['id']}", headers=admin).status_code == 404
    assert client.post(f"/api/v1/webhooks/{other}/deliveries/{delivery['id']}/replay",
                       headers=admin).status_code == 404
    row = db_session.get(WebhookDelivery, int(delivery["id"]))
    row.status, row.attempts, row.last_status = "dead", 8, 500
    db_session.commit()
    replayed = client.post(f"/api/v1/webhooks/{hook}/deliveries/{delivery['id']}/replay", headers=admin)
    assert replayed.status_code == 202
    assert (replayed.get_json()["data"]["attributes"]["status"], replayed.get_json()["data"]["attributes"]["attempts"]
            ) == ("pending", 0)
    row.status = "sending"
    db_session.commit()
    busy = client.post(f"/api/v1/webhooks/{hook}/deliveries/{delivery['id']}/replay", headers=admin)
    assert busy.status_code == 409
    db_session.refresh(row)
    assert row.status == "sending"


def test_events_are_stored_only_for_enabled_subscribers(client, auth, db_session, enrolled):
    enrolled()  # no webhook yet: the enrollment's events leave no row
    assert _count(db_session, WebhookEvent) == 0
    admin = auth("admin")
    hook = _create(client, admin, event_types=["device.enrolled"]).get_json()["data"]["id"]
    sim = enrolled()
    events = db_session.scalars(select(WebhookEvent)).all()
    assert [e.type for e in events] == ["device.enrolled"]
    assert json.loads(events[0].body)["data"]["device"]["udid"] == sim.udid
    client.patch(f"/api/v1/webhooks/{hook}", headers={**admin, "Content-Type": JSONAPI},
                 json={"data": {"type": "webhooks", "id": hook, "attributes": {"enabled": False}}})
    enrolled()
    assert _count(db_session, WebhookEvent) == 1 and _count(db_session, WebhookDelivery) == 1
