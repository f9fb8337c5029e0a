"""Hostile admin input answers 400/422, never 500: huge page numbers on every list, out-of-range dates,
deeply nested JSON bodies, and fuzzed query values and bodies.

The list of collections is derived from the URL map (so a new list is covered as soon as it exists);
the expected answer, 400, is written here.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import make_device

HUGE = "99999999999999999999"  # past 2**64: SQLite's OFFSET overflowed into a 500
JSONAPI = "application/vnd.api+json"


def _fixtures(client, h, db_session) -> dict[str, str]:
    """A value for each path variable of the GET routes (an existing object where one is needed)."""
    device = make_device(db_session)
    group = client.post("/api/v1/device_groups", headers={**h, "Content-Type": JSONAPI},
                        json={"data": {"type": "device_groups", "attributes": {"name": "q", "kind": "static"}}})
    user = client.post("/api/v1/users", headers={**h, "Content-Type": JSONAPI},
                       json={"data": {"type": "users", "attributes": {"username": "q", "email": "q@example.com"}}})
    command = client.post(f"/api/v1/devices/{device.id}/commands", headers=h, json={"request_type": "ProfileList"})
    profile = client.post("/api/v1/profiles", headers={**h, "Content-Type": JSONAPI}, json={"data": {
        "type": "profiles", "attributes": {"PayloadIdentifier": "com.example.q", "PayloadDisplayName": "Q",
                                           "PayloadContent": []}}})
    values = {"ident": str(device.id), "name": "scan", "certificate_id": "1", "key_id": "1"}
    if group.status_code == 201:
        values["group_id"] = group.get_json()["data"]["id"]
    if user.status_code == 201:
        values["user_id"] = user.get_json()["data"]["id"]
    if command.status_code in (201, 202):
        data = command.get_json()["data"]
        values["command_uuid"] = (data[0] if isinstance(data, list) else data)["id"]
    if profile.status_code == 201:
        values["profile_id"] = profile.get_json()["data"]["id"]
    return values


def _collections(app, client, h, values) -> dict[str, str]:
    """GET routes under /api/ that answer a paginated list: JSON:API with meta.total, or a JSON array."""
    found = {}
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or not rule.rule.startswith("/api/"):
            continue
        names = re.findall(r"<(?:[a-z]+:)?([a-z_]+)>", rule.rule)
        if any(name not in values for name in names):
            continue
        url = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: values[m.group(1)], rule.rule)
        if rule.rule.endswith("/viability"):
            url += "?ids=1"
        response = client.get(url, headers=h)
        body = response.get_json(silent=True) if response.status_code == 200 else None
        if isinstance(body, list):
            found[rule.rule] = url
        elif isinstance(body, dict) and isinstance(body.get("meta"), dict) and "total" in body["meta"]:
            found[rule.rule] = url
    return found


def test_huge_page_numbers_are_400_on_every_list(app, client, auth, db_session):
    h = auth("read", "write", "admin")
    values = _fixtures(client, h, db_session)
    collections = _collections(app, client, h, values)
    # the derivation must find the lists we know of (so it cannot silently find none)
    assert {"/api/v1/devices", "/api/v1/commands", "/api/v1/profiles", "/api/v1/device_groups", "/api/v1/users",
            "/api/v1/audit_events", "/api/v1/devices/<ident>/commands",
            "/api/management/v1/admission/devices"} <= set(collections)
    wrong = []
    for rule, url in sorted(collections.items()):
        sep = "&" if "?" in url else "?"
        params = [f"page={HUGE}", f"per_page={HUGE}"] if rule.startswith("/api/management/") else \
            [f"page[number]={HUGE}", f"page[size]={HUGE}", f"page[number]={'9' * 5000}"]
        for param in params:
            response = client.get(f"{url}{sep}{param}", headers=h)
            if response.status_code != 400:
                wrong.append((rule, param[:30], response.status_code))
    assert not wrong


# the first two parse, but their UTC time is outside the years 1 to 9999 (the 500s came from those)
OUT_OF_RANGE_DATES = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "99999-01-01T00:00:00Z",
                      "0000-01-01", "10000-01-01T00:00:00Z", "-1-01-01", "2024-13-01", "9" * 40,
                      "2024-01-01T00:00:00+99:00"]


@pytest.mark.parametrize("value", OUT_OF_RANGE_DATES)
def test_out_of_range_dates_in_filters_are_400(client, auth, db_session, value):
    h = auth("read")
    for name in ("last_seen_before", "last_seen_after"):
        response = client.get(f"/api/v1/devices?filter[{name}]={value}", headers=h)
        assert response.status_code == 400, (name, value, response.status_code)
        assert response.get_json()["errors"][0]["source"]["parameter"] == f"filter[{name}]"
    for name in ("created_after", "created_before", "completed_after", "completed_before"):
        assert client.get(f"/api/v1/commands?filter[{name}]={value}", headers=h).status_code == 400, (name, value)


@pytest.mark.parametrize("value", OUT_OF_RANGE_DATES)
def test_out_of_range_expires_at_is_4xx(client, auth, db_session, value):
    h = auth("read", "write")
    device = make_device(db_session)
    response = client.post(f"/api/v1/devices/{device.id}/commands", headers=h,
                           json={"request_type": "ProfileList", "expires_at": value})
    assert response.status_code in (400, 422), (value, response.status_code)


@pytest.mark.parametrize("value", OUT_OF_RANGE_DATES[:2])
def test_a_smart_group_cannot_store_an_out_of_range_date(client, auth, db_session, value):
    """The filter is checked when the group is saved; a stored one would break every use of the group."""
    h = {**auth("read", "write"), "Content-Type": JSONAPI}
    response = client.post("/api/v1/device_groups", headers=h, json={"data": {"type": "device_groups", "attributes": {
        "name": "broken", "kind": "smart", "filter": {"last_seen_before": value}}}})
    assert response.status_code in (400, 422), (value, response.status_code, response.get_data(as_text=True)[:300])
    assert client.get("/api/v1/device_groups?filter[name]=broken", headers=h).get_json()["meta"]["total"] == 0
    response = client.post("/api/v1/actions/scan", headers=h, json={"filter": {"last_seen_after": value}})
    assert response.status_code in (400, 422), (value, response.status_code)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [200, 5_000, 100_000])
def test_deeply_nested_json_bodies_are_4xx(client, auth, db_session, depth):
    h = auth("read", "write", "admin")
    device = make_device(db_session)
    body = '{"data": {"type": "device_groups", "attributes": {"name": ' + _nested(depth) + "}}}"
    targets = [("POST", "/api/v1/device_groups", JSONAPI), ("POST", "/api/v1/profiles", JSONAPI),
               ("POST", "/api/v1/actions/scan", "application/json"),
               ("POST", f"/api/v1/devices/{device.id}/commands", "application/json"),
               ("PATCH", f"/api/v1/devices/{device.id}", JSONAPI),
               ("POST", f"/api/v1/devices/{device.id}/custom_attributes", JSONAPI)]
    for method, url, media in targets:
        for text in (body, _nested(depth), '{"devices": ' + _nested(depth) + "}"):
            response = client.open(url, method=method, data=text, headers={**h, "Content-Type": media})
            assert 400 <= response.status_code < 500, (method, url, depth, response.status_code)
            assert response.get_json()["meta"]["request_id"]


_LIST_URLS = ["/api/v1/devices", "/api/v1/commands", "/api/v1/profiles", "/api/v1/device_groups", "/api/v1/users",
              "/api/v1/payloads", "/api/v1/audit_events"]
_PARAMS = ["page[number]", "page[size]", "sort", "filter[last_seen_before]", "filter[last_seen_after]",
           "filter[id]", "filter[platform]", "filter[created_after]", "filter[status]", "filter[device]",
           "filter[group]", "include", "fields[devices]", "facets", "filter[custom.x]"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(url=st.sampled_from(_LIST_URLS), param=st.sampled_from(_PARAMS),
       value=st.one_of(st.text(max_size=40), st.integers().map(str), st.sampled_from(OUT_OF_RANGE_DATES + [HUGE])))
def test_fuzzed_query_values_are_never_500(client, auth, db_session, url, param, value):
    response = client.get(url, query_string={param: value}, headers=auth("read", "admin"))
    assert response.status_code < 500, (url, param, value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from([("POST", "/api/v1/device_groups", JSONAPI), ("POST", "/api/v1/actions/scan", None),
                               ("POST", "/api/v1/profiles", JSONAPI), ("POST", "/api/v1/users", JSONAPI)]),
       key=st.sampled_from(["name", "kind", "filter", "PayloadContent", "devices", "groups", "expires_at",
                            "parameters", "all_devices", "username"]),
       value=_json)
def test_fuzzed_bodies_are_never_500(client, auth, db_session, target, key, value):
    method, url, media = target
    attrs = {"name": "f", "kind": "smart", "username": "f", "PayloadIdentifier": "com.example.f", key: value}
    body = {"data": {"type": url.rsplit("/", 1)[-1], "attributes": attrs}} if media else {key: value}
    response = client.open(url, method=method, data=json.dumps(body),
                           headers={**auth("read", "write"), "Content-Type": media or "application/json"})
    assert response.status_code < 500, (url, key, value, response.get_data(as_text=True)[:200])
