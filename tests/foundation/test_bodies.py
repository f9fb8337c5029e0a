"""Every write operation's documented body schema is the schema its view validates with.

For each operation whose body the OpenAPI document describes with a marshmallow schema, a request with a
body the schema accepts is made while ``Schema.load`` is watched: the documented schema must be the one
loaded, and the answer is not a validation fault. A body the documented schema refuses is refused by the
API too (422; 400 on Mender's routes, whose errors are Mender's, and for a payload's profile, as before).
The bodies that were checked by hand in views and services before (group members, the owner, actions,
assignment targets, profile ids, the enqueue envelope, custom attributes, a payload's profile, Mender's)
are all in the table.
"""

from __future__ import annotations

import json
import plistlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from marshmallow import Schema
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource

from mdmserver.admission import service as admission
from mdmserver.api.apidoc import ApiDoc, Body
from mdmserver.collaborators import secret_box
from mdmserver.compliance.models import CompliancePolicy
from mdmserver.ops.openapi import documented_rules, endpoint_docs, openapi_path
from mdmserver.pki import x509
from mdmserver.profiles.service import upload_profile
from mdmserver.records.admission import AuthSet
from mdmserver.records.blueprints import Blueprint
from mdmserver.records.groups import DeviceGroup
from mdmserver.records.users import User
from mdmserver.webhooks.service import create_subscription
from tests.factories import make_app, make_device

JSONAPI = "application/vnd.api+json"
MENDER = "/api/management/v1/admission"
#: how ``parse_list_query`` begins the 400 for a parameter (not a value) the list does not know
_UNKNOWN = ("unknown query parameter", "unknown filter", "unknown paging parameter", "cannot sort by", "cannot include")


@dataclass(frozen=True)
class Case:
    endpoint: str
    method: str
    path: str  # the document's path; ``{…}`` filled from the fixture's ids
    good: Any
    bad: Any
    media: str = "application/json"
    status: int = 422  # the answer to ``bad``


def _pem() -> str:
    key = x509.generate_private_key("ec")
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _resource(type_: str, attributes: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"type": type_, "attributes": attributes}}


def _cases(ids: dict[str, Any]) -> list[Case]:
    pem = _pem()
    identity = json.dumps({"udid": "BODIES-UDID"})
    members = {"data": [{"type": "devices", "id": str(ids["device"])}]}
    not_members = {"data": [{"type": "users", "id": True}]}
    policy = {"PayloadType": "com.apple.mobiledevice.passwordpolicy", "minLength": 8}
    profile = {"profile": {"data": {"type": "profiles", "id": str(ids["profile_id"])}}}
    return [
        Case("groups.create_group", "post", "/api/v1/device_groups",
             _resource("device_groups", {"name": "bodies"}), _resource("device_groups", {"name": ""}), JSONAPI),
        Case("groups.update_group", "patch", "/api/v1/device_groups/{group_id}",
             _resource("device_groups", {"description": "x"}), _resource("device_groups", {"kind": "magic"}),
             JSONAPI),
        Case("compliance.create_policy", "post", "/api/v1/compliance_policies",
             _resource("compliance_policies", {"name": "bodies", "rule": "supervised"}),
             _resource("compliance_policies", {"name": "", "rule": "supervised"}), JSONAPI),
        Case("compliance.update_policy", "patch", "/api/v1/compliance_policies/{policy_id}",
             _resource("compliance_policies", {"description": "x"}),
             _resource("compliance_policies", {"grace_minutes": -1}), JSONAPI),
        Case("compliance.add_targets", "post", "/api/v1/compliance_policies/{policy_id}/targets",
             {"devices": [ids["device"]]}, {"devices": "all"}),
        Case("compliance.remove_targets", "delete", "/api/v1/compliance_policies/{policy_id}/targets",
             {"devices": [ids["device"]]}, {"groups": ["x"]}),
        Case("groups.add_members", "post", "/api/v1/device_groups/{group_id}/relationships/devices",
             members, not_members),
        Case("groups.remove_members", "delete", "/api/v1/device_groups/{group_id}/relationships/devices",
             members, {"data": []}),
        Case("users.create_user", "post", "/api/v1/users",
             _resource("users", {"name": "Bo", "email": "bo@example.com"}),
             _resource("users", {"name": "Bo"}), JSONAPI),
        Case("users.update_user", "patch", "/api/v1/users/{user_id}",
             _resource("users", {"name": "Bea"}), _resource("users", {"name": ""}), JSONAPI),
        Case("users.set_owner", "put", "/api/v1/devices/{ident}/owner",
             {"data": {"type": "users", "id": str(ids["user_id"])}}, {"data": {"type": "users", "id": "x"}}),
        Case("devices.update_device", "patch", "/api/v1/devices/{ident}",
             _resource("devices", {"asset_tag": "A-1"}), _resource("devices", {"colour": "red"}), JSONAPI),
        Case("actions.perform_action", "post", "/api/v1/devices/{ident}/actions/{name}",
             {"parameters": None}, {"parameters": {}, "other": 1}),
        Case("actions.bulk_action", "post", "/api/v1/actions/{name}",
             {"devices": [ids["device"]]}, {"devices": [ids["device"]], "all_devices": "yes"}),
        Case("compat_manageengine.update_device", "put", "/api/v1/mdm/devices/{ident}",
             {"asset_tag": "A-1"}, {"colour": "red"}),
        Case("compat_manageengine.associate_profiles", "post", "/api/v1/mdm/devices/{ident}/profiles",
             {"profile_ids": [ids["profile_id"]]}, {"profile_ids": []}),
        Case("compat_manageengine.disassociate_profiles", "delete", "/api/v1/mdm/devices/{ident}/profiles",
             {"profile_ids": [str(ids["profile_id"])]}, {"profile_ids": [True]}),
        Case("compat_manageengine.associate_apps", "post", "/api/v1/mdm/devices/{ident}/apps",
             {"app_details": [{"app_id": ids["app_id"], "release_label_id": 1}], "silent_install": True},
             {"app_details": []}),
        Case("compat_manageengine.dissociate_apps", "delete", "/api/v1/mdm/devices/{ident}/apps",
             {"app_ids": [ids["app_id"]]}, {"app_ids": "all"}),
        Case("compat_manageengine.refresh_app_status", "post", "/api/v1/mdm/devices/{ident}/apps/refreshstatus",
             {"app_ids": [str(ids["app_id"])]}, {"app_ids": [], "other": 1}),
        Case("compat_manageengine.perform_action", "post", "/api/v1/mdm/devices/{ident}/actions/{name}",
             {"lock_message": "--", "action_name": "lock"}, {"lock_message": "x", "other": 1}),
        Case("compat_manageengine.bulk_action", "post", "/api/v1/mdm/actions/{name}",
             {"devices": [ids["device"]], "command_name": "DeviceLock"}, {"devices": [ids["device"]], "groups": "x"}),
        Case("assignments.assign", "post", "/api/v1/profiles/{profile_id}/assignments",
             {"devices": [ids["device"]]}, {"groups": ["x"]}),
        Case("assignments.unassign", "delete", "/api/v1/profiles/{profile_id}/assignments",
             {"groups": [ids["group_id"]]}, {"devices": "all"}),
        Case("assignments.device_assign", "post", "/api/v1/devices/{ident}/profiles",
             {"profile_ids": [ids["profile_id"]]}, {"profile_ids": []}),
        Case("assignments.device_unassign", "delete", "/api/v1/devices/{ident}/profiles",
             {"profile_ids": [str(ids["profile_id"])]}, {"profile_ids": [True]}),
        Case("app_assignments.assign", "post", "/api/v1/apps/{app_id}/assignments",
             {"devices": [ids["device"]], "options": {"removable": False}},
             {"devices": [ids["device"]], "options": {"management_flags": 2}}),
        Case("app_assignments.refresh", "post", "/api/v1/apps/{app_id}/refresh",
             {"devices": [ids["device"]]}, {"devices": "all"}),
        Case("app_assignments.update", "post", "/api/v1/apps/{app_id}/update",
             {"devices": [ids["device"]]}, {"devices": "all"}),
        Case("commands.enqueue", "post", "/api/v1/devices/{ident}/commands",
             _resource("commands", {"request_type": "DeviceInformation"}),
             _resource("commands", {"request_type": "DeviceInformation", "priority": "high"}), JSONAPI),
        Case("commands.test_command", "post", "/api/v1/devices/test/{ident}",
             {"request_type": "SecurityInfo"}, {"request_type": ""}),
        Case("attributes.replace_attributes", "post", "/api/v1/devices/{ident}/custom_attributes",
             _resource("custom_attributes", {"dept": "HR"}), _resource("custom_attributes", {"dept": 3}), JSONAPI),
        Case("attributes.merge_attributes", "patch", "/api/v1/devices/{ident}/custom_attributes",
             _resource("custom_attributes", {"dept": None}), _resource("custom_attributes", {"dept": "x" * 600}),
             JSONAPI),
        Case("compat_ivanti.replace_attributes", "post", "/api/v1/device/{ident}/customattributes",
             {"attrs": {"cityid": ["SF"]}}, {"attrs": {"cityid": ["SF"]}, "forceOverwrite": "yes"}),
        Case("compat_ivanti.patch_attributes", "patch", "/api/v1/device/{ident}/customattributes",
             {"attrs": {"a": ["x"]}, "forceOverwrite": False}, {"attrs": {"a": ["x"]}, "extra": 1}),
        Case("compat_ivanti.delete_attributes", "delete", "/api/v1/device/{ident}/customattributes",
             {"attrs": {"a": ["x"]}}, {"forceOverwrite": True}),
        Case("compat_ivanti.bulk_delete_attributes", "delete", "/api/v1/device/customattributes",
             {"ids": [str(ids["device"])], "attrKeys": ["a"]}, {"ids": [str(ids["device"])]}),
        Case("organization.update_organization", "patch", "/api/v1/organization",
             _resource("organizations", {"name": "Example"}), _resource("organizations", {"name": 5}), JSONAPI),
        Case("profiles.create_payload", "post", "/api/v1/payloads",
             {"data": {"type": "payloads", "attributes": policy, "relationships": profile}},
             {"data": {"type": "payloads", "attributes": policy, "relationships": {"profile": {"data": {
                 "type": "users", "id": str(ids["profile_id"])}}}}}, JSONAPI, status=400),
        Case("apps.create_app", "post", "/api/v1/apps",
             _resource("apps", {"platform": "ios", "name": "Pages", "itunes_store_id": 361309726}),
             _resource("apps", {"platform": "android", "name": "Pages", "itunes_store_id": 361309726}), JSONAPI),
        Case("apps.update_app", "patch", "/api/v1/apps/{app_id}",
             _resource("apps", {"name": "Keynote"}), _resource("apps", {"name": ""}), JSONAPI),
        Case("webhooks.create_webhook", "post", "/api/v1/webhooks",
             _resource("webhooks", {"name": "bodies-new", "url": "https://hooks.example.com/mdm",
                                    "event_types": ["device.enrolled"]}),
             _resource("webhooks", {"name": "", "url": "https://hooks.example.com/mdm",
                                    "event_types": ["device.enrolled"]}), JSONAPI),
        Case("webhooks.update_webhook", "patch", "/api/v1/webhooks/{webhook_id}",
             _resource("webhooks", {"event_types": ["command.error"]}),
             _resource("webhooks", {"event_types": ["no.such.event"]}), JSONAPI),
        Case("blueprints.create_blueprint", "post", "/api/v1/blueprints",
             _resource("blueprints", {"name": "bodies-new", "profiles": [ids["profile_id"]]}),
             _resource("blueprints", {"name": "bodies-bad", "enabled": "yes"}), JSONAPI),
        Case("blueprints.update_blueprint", "patch", "/api/v1/blueprints/{blueprint_id}",
             _resource("blueprints", {"description": "changed"}), _resource("blueprints", {"apply_order": "1"}),
             JSONAPI),
        Case("compat_midm.create_profile", "post", "/api/v1/midm/profiles",
             {"profile": {"name": "bodies-midm"}, "isGlobal": False}, {"otas": ["48231c37"]}),
        Case("compat_midm.save_profile", "put", "/api/v1/midm/profiles/{blueprint_id}",
             {"enabled": True}, {"enabled": "yes"}),
        Case("mender.preauthorize", "post", f"{MENDER}/devices",
             {"device_identity": json.dumps({"serial_number": "BODIES-SERIAL"})}, {"device_identity": 5}, status=400),
        Case("mender.submit", "put", f"{MENDER}/devices/{{auth_set_id}}",
             {"device_identity": identity, "key": pem}, {"device_identity": identity, "key": pem, "extra": 1},
             status=400),
        Case("mender.set_status", "put", f"{MENDER}/devices/{{auth_set_id}}/status",
             {"status": "accepted"}, {"status": "pending"}, status=400),
    ]


@pytest.fixture
def ids(db_session) -> dict[str, Any]:
    device = make_device(db_session, platform="ios")
    profile, _ = upload_profile(db_session, plistlib.dumps({
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.example.bodies",
        "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadDisplayName": "Bodies", "PayloadContent": []}),
        box=secret_box())
    user = User(name="Al", email="al@example.com")
    db_session.add(user)
    db_session.flush()
    group = DeviceGroup(name="bodies-group", kind="static")
    db_session.add(group)
    db_session.flush()
    app = make_app(db_session, "com.example.bodies")
    hook, _secret = create_subscription(db_session, {"name": "bodies-hook", "url": "https://hooks.example.com/",
                                                     "event_types": ["device.enrolled"]},
                                        box=secret_box(), actor="tests")
    blueprint = Blueprint(name="bodies-blueprint")
    policy = CompliancePolicy(name="bodies-policy", rule="supervised", parameters={})
    db_session.add_all([blueprint, policy])
    db_session.commit()
    return {"device": device.id, "ident": device.id, "profile_id": profile.id, "user_id": user.id,
            "group_id": group.id, "app_id": app.id, "webhook_id": hook.id, "blueprint_id": blueprint.id,
            "policy_id": policy.id, "name": "lock", "db_session": db_session}


def _auth_set(db_session, pem: str | None = None) -> str:
    """A pending auth set; with ``pem``, the one the ``mender.submit`` case's body computes to."""
    udid = "BODIES-UDID" if pem else "BODIES-PENDING"
    canonical = admission.identity_data(udid, None, None)
    set_id = admission.auth_set_id(canonical, pem or _pem())
    if pem:
        return set_id
    device = make_device(db_session, index=7, udid=udid, admission_status="pending")
    db_session.add(AuthSet(id=set_id, device_id=device.id, identity_data=canonical, pubkey="unused",
                           status="pending"))
    db_session.commit()
    return set_id


def _validator(spec: dict, path: str, method: str, media: str) -> OAS30Validator:
    def absolute(node):
        if isinstance(node, dict):
            return {k: ("urn:openapi" + v if k == "$ref" and v.startswith("#") else absolute(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [absolute(v) for v in node]
        return node

    schema = absolute(spec["paths"][path][method]["requestBody"]["content"][media]["schema"])
    return OAS30Validator(schema, registry=Registry().with_resource("urn:openapi", Resource.opaque(spec)))


def _documented(doc: ApiDoc) -> type[Schema] | None:
    """The marshmallow schema the document shows for the body (a payload's attributes are Apple's keys,
    checked per payload type by the catalogue: its relationships are the schema)."""
    if isinstance(doc.body, type) and issubclass(doc.body, Schema):
        return doc.body
    return doc.relationships


@pytest.fixture
def loaded(monkeypatch) -> list[type[Schema]]:
    """The schema classes whose ``load`` ran, in order."""
    seen: list[type[Schema]] = []
    original: Callable[..., Any] = Schema.load

    def load(self, *args, **kwargs):
        seen.append(type(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Schema, "load", load)
    return seen


def test_every_schema_body_is_in_the_table(app):
    """A new write operation with a schema body must be added to the table below."""
    docs = endpoint_docs()
    schema_bodies = {r.endpoint for r in documented_rules(app)
                     if (doc := docs.get(r.endpoint)) is not None and _documented(doc) is not None
                     and doc.body_kind in (Body.RESOURCE, Body.JSON)}
    covered = {case.endpoint for case in _cases({"device": 1, "user_id": 1, "group_id": 1, "profile_id": 1, "app_id": 1,
                                                  "webhook_id": 1, "blueprint_id": 1, "policy_id": 1})}
    assert schema_bodies == covered


def test_the_documented_schema_is_the_one_the_view_loads(client, auth, ids, loaded):
    spec = client.get("/api/openapi.json").get_json()
    docs = endpoint_docs()
    h = auth("read", "write", "admin")
    cases = _cases(ids)
    submitted = cases[-2].good
    ids["auth_set_id"] = _auth_set(ids["db_session"])
    for case in cases:
        documented = _documented(docs[case.endpoint])
        url_ids = dict(ids)
        if case.endpoint == "mender.submit":
            url_ids["auth_set_id"] = _auth_set(ids["db_session"], submitted["key"])
        url = case.path.format(**url_ids)
        headers = {**h, "Content-Type": case.media}
        validator = _validator(spec, case.path, case.method, case.media)
        assert not list(validator.iter_errors(case.good)), (case.endpoint, "the document refuses the good body")
        assert list(validator.iter_errors(case.bad)), (case.endpoint, "the document accepts the bad body")

        loaded.clear()
        bad = client.open(url, method=case.method.upper(), data=json.dumps(case.bad), headers=headers)
        assert bad.status_code == case.status, (case.endpoint, bad.get_json())
        assert documented in loaded, (case.endpoint, loaded)

        loaded.clear()
        good = client.open(url, method=case.method.upper(), data=json.dumps(case.good), headers=headers)
        assert good.status_code < 400, (case.endpoint, good.status_code, good.get_json())
        assert documented in loaded, (case.endpoint, loaded)


def test_pointers_name_each_bad_member(client, auth, ids):
    """One 422 lists every fault of a body, each with its JSON pointer (RFC 6901 escaped)."""
    h = auth("read", "write")
    response = client.post("/api/v1/actions/lock", headers=h, json={
        "devices": [ids["device"], None], "groups": ["x"], "all_devices": 1, "extra": 1})
    assert response.status_code == 422
    assert {e["source"]["pointer"] for e in response.get_json()["errors"]} == {
        "/devices/1", "/groups/0", "/all_devices", "/extra"}
    response = client.post(f"/api/v1/devices/{ids['device']}/custom_attributes", headers=h,
                           json={"data": {"type": "custom_attributes", "attributes": {"a/b~c": "x"}}})
    assert [e["source"]["pointer"] for e in response.get_json()["errors"]] == ["/data/attributes/a~1b~0c"]
    response = client.post("/api/v1/actions/lock", headers=h, json={})
    assert [e["source"]["pointer"] for e in response.get_json()["errors"]] == [""]


def test_query_schemas_document_and_validate(client, auth, ids):
    """The viability and Mender list queries are loaded by the schemas that document them: a 400 names the
    parameter (Mender's: one message)."""
    spec = client.get("/api/openapi.json").get_json()
    names = {p["name"] for p in spec["paths"]["/api/v1/actions/{name}/viability"]["get"]["parameters"]
             if p["in"] == "query"}
    assert names == {"ids", "groups", "version"}  # version: update_os viability checks the offered updates
    h = auth("read")
    for query, parameter in (("", "ids"), ("?ids=", "ids"), ("?groups=x", "groups"), ("?colour=1", "colour")):
        response = client.get(f"/api/v1/actions/lock/viability{query}", headers=h)
        assert response.status_code == 400, query
        assert response.get_json()["errors"][0]["source"]["parameter"] == parameter
    assert client.get(f"/api/v1/actions/lock/viability?ids={ids['device']}", headers=h).status_code == 200
    mender = {p["name"]: p for p in spec["paths"][f"{MENDER}/devices"]["get"]["parameters"]}
    assert set(mender) == {"page", "per_page", "status", "device_id"} and "500" in mender["per_page"]["description"]
    for query in ("per_page=501", "page=0", "status=decommissioned", "colour=red"):
        response = client.get(f"{MENDER}/devices?{query}", headers=h)
        assert response.status_code == 400 and set(response.get_json()) == {"error", "request_id"}, query


def test_every_documented_list_parameter_is_accepted(app, client, auth, ids):
    """Each filter, sort and paging parameter a list documents is one the view knows (an unknown one
    would be a 400 naming it as unknown)."""
    spec = client.get("/api/openapi.json").get_json()
    h = auth("read", "admin")
    fill = {"ident": ids["device"], "group_id": ids["group_id"], "profile_id": ids["profile_id"],
            "user_id": ids["user_id"], "app_id": ids["app_id"], "webhook_id": ids["webhook_id"],
            "blueprint_id": ids["blueprint_id"], "policy_id": ids["policy_id"]}
    checked = 0
    for path, item in spec["paths"].items():
        operation = item.get("get")
        if not operation or not any(p["name"] == "page[number]" for p in operation.get("parameters", [])):
            continue
        url = openapi_path(path).format(**fill)
        for parameter in operation["parameters"]:
            if parameter["in"] != "query" or parameter["name"] == "filter":
                continue
            if parameter["name"] == "sort":
                queries = [{"sort": f"-{name}"} for name in parameter["description"].split("allowed: ")[1].split(", ")]
            elif parameter["name"] == "include":  # its description is what may be included
                queries = [{"include": parameter["description"]}]
            else:
                queries = [{parameter["name"]: "1"}]
            for query in queries:
                response = client.get(url, query_string=query, headers=h)
                checked += 1
                if response.status_code == 400:
                    detail = response.get_json()["errors"][0]["detail"]
                    assert not detail.startswith(_UNKNOWN), (path, query, detail)
    assert checked > 50
