"""The OpenAPI document: valid, complete (every route, both ways), bodies and list parameters described,
and the documented bodies are ones the API accepts."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource

from mdmserver.ops.openapi import undocumented_endpoints
from tests.factories import make_device

JSONAPI = "application/vnd.api+json"
METHODS = {"get", "post", "put", "patch", "delete"}
WRITES = {"post", "put", "patch"}

#: Every paginated list of the API, written down here (not read from the document): each must describe
#: page[number], page[size] and sort, and its filters (device locations have none).
LISTS = {
    "/api/v1/apps/{app_id}/devices",
    "/api/v1/apps",
    "/api/v1/audit_events",
    "/api/v1/blueprints",
    "/api/v1/blueprints/{blueprint_id}/devices",
    "/api/v1/certificates",
    "/api/v1/commands",
    "/api/v1/compliance_policies",
    "/api/v1/device_groups",
    "/api/v1/device_groups/{group_id}/devices",
    "/api/v1/devices",
    "/api/v1/devices/{ident}/apps",
    "/api/v1/devices/{ident}/blueprints",
    "/api/v1/devices/{ident}/certificates",
    "/api/v1/devices/{ident}/commands",
    "/api/v1/devices/{ident}/compliance/history",
    "/api/v1/devices/{ident}/installed_applications",
    "/api/v1/devices/{ident}/installed_profiles",
    "/api/v1/devices/{ident}/locations",
    "/api/v1/devices/{ident}/os_updates",
    "/api/v1/devices/{ident}/profiles",
    "/api/v1/payloads",
    "/api/v1/profiles",
    "/api/v1/profiles/{profile_id}/assignments/status",
    "/api/v1/rsa_private_keys",
    "/api/v1/scheduled_actions",
    "/api/v1/users",
    "/api/v1/users/{user_id}/devices",
    "/api/v1/webhooks",
    "/api/v1/webhooks/{webhook_id}/deliveries",
}
UNFILTERED_LISTS = {"/api/v1/devices/{ident}/locations", "/api/v1/devices/{ident}/compliance/history"}


@pytest.fixture
def spec(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def _operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def _resolve(spec, schema):
    while isinstance(schema, dict) and "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def test_the_document_validates(spec):
    validate(spec)  # raises on an invalid document (the old one: a duplicate operationId)


def test_every_endpoint_has_metadata(app):
    """A new or renamed endpoint must be described in its package's schemas.py OPENAPI registry."""
    assert undocumented_endpoints(app) == []


def test_paths_and_methods_equal_the_url_map(app, spec):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[-1] == "static":
            continue
        path = re.sub(r"<(?:[^>:]+:)?([^>]+)>", r"{\1}", rule.rule)
        routes |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, method, _ in _operations(spec)}
    assert routes - documented == set(), "routes missing from the document"
    assert documented - routes == set(), "documented operations with no route"


def test_operation_ids_are_unique(spec):
    ids = [operation["operationId"] for _, _, operation in _operations(spec)]
    assert len(ids) == len(set(ids))
    assert spec["paths"]["/api/v1/devices/{ident}/commands"]["post"]["operationId"] != \
        spec["paths"]["/api/v1/devices/test/{ident}"]["post"]["operationId"]


def test_path_parameters_are_typed_from_the_converters(spec):
    for path, _, operation in _operations(spec):
        declared = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "path"}
        assert set(declared) == set(re.findall(r"{(\w+)}", path)), path
    key_id = next(p for p in spec["paths"]["/api/v1/rsa_private_keys/{key_id}"]["get"]["parameters"]
                  if p["name"] == "key_id")
    assert key_id["schema"]["type"] == "integer" and key_id["required"] is True
    ident = spec["paths"]["/api/v1/devices/{ident}"]["get"]["parameters"][0]
    assert ident["schema"]["type"] == "string"


def test_every_write_has_a_request_body_with_a_schema(spec):
    writes = [(path, method, op) for path, method, op in _operations(spec) if method in WRITES]
    assert len(writes) > 30
    for path, method, operation in writes:
        content = operation.get("requestBody", {}).get("content")
        assert content, f"{method.upper()} {path} has no request body"
        for media, entry in content.items():
            assert entry.get("schema"), f"{method.upper()} {path} {media} has no schema"


def test_bodies_once_checked_by_hand_have_schemas(spec):
    """The bodies the views once checked by hand are described, not left as a bare object (and
    test_bodies.py shows the described schema is the one each view loads)."""
    def schema_of(path, method, media="application/json"):
        return _resolve(spec, spec["paths"][path][method]["requestBody"]["content"][media]["schema"])

    linkage = schema_of("/api/v1/device_groups/{group_id}/relationships/devices", "post")
    assert set(_resolve(spec, linkage["properties"]["data"]["items"])["required"]) == {"type", "id"}
    enqueue = schema_of("/api/v1/devices/{ident}/commands", "post", JSONAPI)
    attributes = _resolve(spec, enqueue["properties"]["data"]["properties"]["attributes"])
    assert attributes["required"] == ["request_type"] and "priority" in attributes["properties"]
    bulk = schema_of("/api/v1/actions/{name}", "post")
    assert {"devices", "groups", "filter", "all_devices", "parameters"} <= set(bulk["properties"])
    assert set(schema_of("/api/v1/profiles/{profile_id}/assignments", "post")["properties"]) == {"devices", "groups"}
    assert schema_of("/api/v1/devices/{ident}/profiles", "post")["required"] == ["profile_ids"]


def test_lists_document_their_query_parameters(spec):
    documented_lists = {path for path, method, op in _operations(spec) if method == "get"
                        and any(p["name"] == "page[number]" for p in op.get("parameters", []))}
    assert documented_lists == LISTS
    for path in LISTS:
        names = {p["name"] for p in spec["paths"][path]["get"]["parameters"] if p["in"] == "query"}
        assert {"page[number]", "page[size]", "sort"} <= names, path
        if path not in UNFILTERED_LISTS:
            assert any(n == "filter" or n.startswith("filter[") for n in names), path
    devices = {p["name"] for p in spec["paths"]["/api/v1/devices"]["get"]["parameters"]}
    assert {"facets", "fields[devices]", "filter"} <= devices
    groups = {p["name"] for p in spec["paths"]["/api/v1/device_groups"]["get"]["parameters"]}
    assert {"filter[name]", "filter[kind]", "filter[parent]"} <= groups


def test_every_operation_documents_its_answers_and_errors(spec):
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    errors = spec["components"]["schemas"]["Errors"]
    assert errors["required"] == ["errors"] and "request_id" in errors["properties"]["meta"]["properties"]
    for path, method, operation in _operations(spec):
        responses = operation["responses"]
        success = [s for s in responses if s.startswith("2")]
        assert success, f"{method.upper()} {path} has no success answer"
        for status in success:
            if status != "204":
                assert all(e.get("schema") for e in responses[status]["content"].values()), (path, method)
        if path.startswith("/api/v1/"):
            assert {"401", "403"} <= set(responses), (path, method)
            assert responses["401"]["content"][JSONAPI]["schema"] == {"$ref": "#/components/schemas/Errors"}
            scope = operation["x-required-scope"]
            assert scope in {"read", "write", "secrets", "admin"}
            assert f"`{scope}`" in operation["description"]
            assert operation["security"] == [{"bearer": []}]
        if "{" in path:
            assert "404" in responses, (path, method)
        json_body = operation.get("requestBody", {}).get("content", {})
        if method in WRITES and ("application/json" in json_body and operation["requestBody"]["required"]):
            assert {"400", "413", "422"} <= set(responses), (path, method)


def test_scopes_come_from_the_declaration(spec):
    assert spec["paths"]["/api/v1/rsa_private_keys/{key_id}/download"]["get"]["x-required-scope"] == "secrets"
    assert spec["paths"]["/api/v1/audit_events"]["get"]["x-required-scope"] == "admin"
    assert spec["paths"]["/api/v1/organization"]["patch"]["x-required-scope"] == "write"
    assert spec["paths"]["/api/v1/devices"]["get"]["x-required-scope"] == "read"
    assert spec["paths"]["/api/openapi.json"]["get"]["security"] == []


def _absolute_refs(node):
    if isinstance(node, dict):
        return {k: ("urn:openapi" + v if k == "$ref" and v.startswith("#") else _absolute_refs(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_absolute_refs(v) for v in node]
    return node


def _check(spec, path, method, media, body):
    schema = _absolute_refs(spec["paths"][path][method]["requestBody"]["content"][media]["schema"])
    registry = Registry().with_resource("urn:openapi", Resource.opaque(spec))
    errors = list(OAS30Validator(schema, registry=registry).iter_errors(body))
    assert not errors, [e.message for e in errors]


def test_documented_bodies_are_accepted_and_bad_ones_refused(client, auth, spec, db_session):
    """A body that fits the documented schema passes the view's own checks; one that does not is refused
    by both the schema and the API."""
    h = {**auth("write"), "Content-Type": JSONAPI}
    device = make_device(db_session)
    db_session.commit()
    group_path = "/api/v1/device_groups"
    group_body = {"data": {"type": "device_groups", "attributes": {"name": "openapi-doc", "kind": "static"}}}
    _check(spec, group_path, "post", JSONAPI, group_body)
    response = client.post(group_path, json=group_body, headers=h)
    assert response.status_code == 201, response.get_json()
    group_id = response.get_json()["data"]["id"]

    members_path = "/api/v1/device_groups/{group_id}/relationships/devices"
    members = {"data": [{"type": "devices", "id": str(device.id)}]}
    _check(spec, members_path, "post", "application/json", members)
    response = client.post(members_path.format(group_id=group_id), json=members, headers=h)
    assert response.status_code == 200 and response.get_json()["meta"]["added"] == 1

    for bad in ({"data": []}, {"data": [{"id": "1"}]}, {}):
        with pytest.raises(AssertionError):
            _check(spec, members_path, "post", "application/json", bad)
        response = client.post(members_path.format(group_id=group_id), json=bad, headers=h)
        assert response.status_code == 422, bad

    targets_path = "/api/v1/profiles/{profile_id}/assignments"
    with pytest.raises(AssertionError):
        _check(spec, targets_path, "post", "application/json", {"devices": [], "everyone": True})
    enqueue_path = "/api/v1/devices/{ident}/commands"
    enqueue = {"data": {"type": "commands", "attributes": {"request_type": "DeviceInformation", "priority": 5}}}
    _check(spec, enqueue_path, "post", JSONAPI, enqueue)
    response = client.post(enqueue_path.format(ident=device.id), json=enqueue, headers=h)
    assert response.status_code == 201, response.get_json()
    with pytest.raises(AssertionError):
        _check(spec, enqueue_path, "post", JSONAPI, {"data": {"type": "commands", "attributes": {"priority": 5}}})
    plain = {"request_type": "SecurityInfo"}  # the enqueue body may also be the attributes alone
    _check(spec, enqueue_path, "post", "application/json", plain)
    response = client.post(enqueue_path.format(ident=device.id), json=plain, headers=auth("write"))
    assert response.status_code == 201, response.get_json()


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        self.references += [value or "" for name, value in attrs if name in {"src", "href", "action", "srcset"}]


def test_docs_page_is_self_contained(client):
    response = client.get("/api/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    parser = _Assets()
    parser.feed(page)
    assert parser.scripts == 2  # the embedded document and the renderer, both inline
    assert parser.references and all(ref.startswith("/") and not ref.startswith("//")
                                      for ref in parser.references), parser.references
    assert not re.search(r"@import|url\(", page)
    assert "/api/v1/organization" in page  # the document travels with the page
    assert "</script" not in page.split('id="openapi">', 1)[1].split("</script>", 1)[0]
