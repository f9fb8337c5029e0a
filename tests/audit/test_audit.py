from __future__ import annotations


def test_audit_events_list_and_filter(client, auth):
    client.patch("/api/v1/organization", json={"data": {"type": "organizations", "attributes": {"phone": "1"}}},
                 headers=auth("write"))
    headers = auth("admin")
    doc = client.get("/api/v1/audit_events?filter[action]=organization:update", headers=headers).get_json()
    assert doc["meta"]["total"] >= 1
    event = doc["data"][0]["attributes"]
    assert event["resource_type"] == "organizations" and event["request_id"]
    assert event["created_at"].endswith("Z")
    bad = client.get("/api/v1/audit_events?filter[since]=yesterday", headers=headers)
    assert bad.status_code == 400 and bad.get_json()["errors"][0]["source"]["parameter"] == "filter[since]"
