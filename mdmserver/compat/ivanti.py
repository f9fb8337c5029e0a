"""Ivanti Neurons for MDM's device API (``/api/v1/device/…``), as thin adapters over the native services.

Answers are Ivanti's envelope ``{"errors": null, "result": …}``; errors stay the one JSON:API error
document (with ``meta.request_id``). Devices are named by id, UDID (Ivanti's GUID) or serial number;
Ivanti's form bodies (``ids=1&ids=2``, ``ids=1,2``), query parameters and JSON bodies are all accepted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Response, json, request
from marshmallow import RAISE, Schema, fields, validate

from mdmserver import workflows
from mdmserver.actions import service as actions
from mdmserver.api.apidoc import ApiDoc, Body, NameField, Reply, StrictBoolean
from mdmserver.api.auth import current_actor
from mdmserver.api.jsonapi import ListQuery, load_attributes, load_body, load_query
from mdmserver.attributes import service as attributes
from mdmserver.attributes.schemas import AttributeValuesSchema
from mdmserver.collaborators import public_url, secret_box
from mdmserver.compliance import service as compliance
from mdmserver.compliance.models import RuleType
from mdmserver.db import db, utcnow
from mdmserver.devices import service as devices
from mdmserver.errors import BadRequest, NotFound, UnprocessableEntity
from mdmserver.groups import service as groups
from mdmserver.os_updates.service import IVANTI_PLATFORMS
from mdmserver.records.attributes import ATTRIBUTE_NAME
from mdmserver.records.devices import Device
from mdmserver.records.users import User
from mdmserver.selection import resolve
from mdmserver.selection.filters import conditions_from_mapping
from mdmserver.selection.targets import select_targets
from mdmserver.users import service as users

bp = Blueprint("compat_ivanti", __name__, url_prefix="/api/v1")

#: what Ivanti calls the platforms this server manages
_PLATFORM_TYPES = {"ios": "IOS", "ipados": "IOS", "macos": "OSX", "tvos": "TVOS", "watchos": "WATCHOS",
                   "visionos": "VISIONOS"}
#: Ivanti's list parameters: repeated (``ids=1&ids=2``) or comma-separated, never dropped
_LISTS = frozenset({"ids", "guids", "deviceIds", "policyIds"})


def _ivanti(result: Any, status: int = 200) -> Response:
    return Response(json.dumps({"errors": None, "result": result}), status=status, mimetype="application/json")


def _params() -> dict[str, Any]:
    """Query parameters, form fields and a JSON object body, as one mapping: list parameters as lists
    (repeated or comma-separated), the others as their last value."""
    raw: dict[str, list[Any]] = {}
    for source in (request.args, request.form):
        for key, values in source.lists():
            raw.setdefault(key, []).extend(values)
    if request.is_json:
        body = load_body(_AnyObject(), "body", optional=True)
        for key, value in body.items():
            raw.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    out: dict[str, Any] = {}
    for key, values in raw.items():
        if key in _LISTS:
            out[key] = [part.strip() for value in values for part in str(value).split(",") if part.strip()]
        else:
            out[key] = values[-1]
    return out


class _AnyObject(Schema):
    class Meta:
        unknown = "include"


def _text(max_len: int = 1000) -> fields.String:
    return fields.String(validate=validate.Length(max=max_len))


class _Flag(fields.Boolean):
    """``true``/``false`` as a form field or a JSON boolean."""

    truthy = {True, "true", "True"}
    falsy = {False, "false", "False"}


class TargetsSchema(Schema):
    """``ids`` (ids, UDIDs or serial numbers) and/or ``guids`` (UDIDs): the devices of an action."""

    class Meta:
        unknown = RAISE

    ids = fields.List(NameField())
    guids = fields.List(NameField())
    checkViability = fields.String(validate=validate.Equal("true", error="checkViability must be true"))


class WipeSchema(TargetsSchema):
    iosDisallowProximitySetup = _Flag()
    iosPreserveDataPlan = _Flag()
    message = _text()


class UnlockSchema(TargetsSchema):
    deviceUnlockPin = fields.String(validate=validate.Regexp(r"^$|^[a-zA-Z0-9]{6,8}$",
                                                             error="the unlock PIN is 6 to 8 letters or digits"))


class OSUpdateSchema(TargetsSchema):
    version = _text(64)


class LostModeSchema(TargetsSchema):
    message = _text()
    phoneNumber = _text(64)
    changeFootnote = _Flag()
    footnote = _text()


@dataclass(frozen=True)
class IvantiAction:
    action: str  # our action's name
    schema: type[Schema]
    parameters: Callable[[dict[str, Any]], dict[str, Any]]


def _none(_: dict[str, Any]) -> dict[str, Any]:
    return {}


def _wipe(p: dict[str, Any]) -> dict[str, Any]:
    # EraseDevice carries no message: Ivanti's ``message`` is accepted and not sent (docs/api-mapping.md)
    out = {"disallow_proximity_setup": p.get("iosDisallowProximitySetup"),
           "preserve_data_plan": p.get("iosPreserveDataPlan")}
    return {k: v for k, v in out.items() if v is not None}


def _os_update(p: dict[str, Any]) -> dict[str, Any]:
    return {"product_version": p["version"]} if p.get("version") else {}


def _lost_mode(p: dict[str, Any]) -> dict[str, Any]:
    out = {"message": p.get("message"), "phone_number": p.get("phoneNumber")}
    if p.get("changeFootnote") and p.get("footnote"):
        out["footnote"] = p["footnote"]
    return {k: v for k, v in out.items() if v}


#: Ivanti's action path → our action and how its parameters translate
ACTIONS: dict[str, IvantiAction] = {
    "forceCheckin": IvantiAction("scan", TargetsSchema, _none),
    "wipe": IvantiAction("complete_wipe", WipeSchema, _wipe),
    "lock": IvantiAction("lock", TargetsSchema, _none),
    "unlock": IvantiAction("clear_passcode", UnlockSchema, _none),
    "retire": IvantiAction("retire", TargetsSchema, _none),
    "scheduleOSUpdate": IvantiAction("update_os", OSUpdateSchema, _os_update),
    "restart": IvantiAction("restart", TargetsSchema, _none),
    "enableLostMode": IvantiAction("enable_lost_mode", LostModeSchema, _lost_mode),
    "disableLostMode": IvantiAction("disable_lost_mode", TargetsSchema, _none),
}


def _ivanti_action(name: str) -> IvantiAction:
    try:
        return ACTIONS[name]
    except KeyError:
        raise NotFound(f"no Ivanti device action {name!r} here; supported: {', '.join(sorted(ACTIONS))} "
                       "(see docs/api-mapping.md)") from None


def _targets(params: dict[str, Any]) -> list[str]:
    names = list(dict.fromkeys([*params.get("ids", []), *params.get("guids", [])]))
    if not names:
        raise BadRequest("name the devices: ids= or guids=", parameter="ids")
    return names


def _select(names: list[str]):
    try:
        return select_targets(db.session, devices=names)
    except UnprocessableEntity as exc:  # too many devices: the names came as parameters
        raise BadRequest(exc.detail, parameter="ids") from None


def _search_results(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"totalCount": len(rows), "queryTime": 0, "searchResults": rows, "offset": 0, "limit": len(rows)}


def _check_viability(name: str, params: dict[str, Any]) -> Response:
    """The devices that CANNOT take the action (with our reason as the exception code)."""
    if params.get("checkViability") != "true":
        raise BadRequest("GET on an action checks its viability: give checkViability=true",
                         parameter="checkViability")
    ivanti = _ivanti_action(name)
    action = actions.get_action(ivanti.action)
    # the OS update's viability reads the inventory: the version asked for, the updates offered, and
    # Ivanti documents the call for iOS only
    os_update = {"version": params.get("version") or None, "platforms": IVANTI_PLATFORMS} \
        if ivanti.action == "update_os" else {}
    outcome = actions.viability(db.session, action, _select(_targets(params)), **os_update)
    rows = [{"id": int(item["device_id"]) if item["device_id"] else None,
             "guid": item.get("udid"), "deviceName": item.get("name"),
             "serialNumber": item.get("serial_number"), "actionExceptionCodes": [item["remarks"]]}
            for item in outcome["not_eligible"]]
    return _ivanti(_search_results(rows))


@bp.put("/device/<name>")
def perform(name: str):
    """PUT ``/api/v1/device/<action>`` (forceCheckin, wipe, lock, unlock, retire, scheduleOSUpdate,
    restart, enableLostMode, disableLostMode): ``result`` is the number of devices the action was sent to."""
    ivanti = _ivanti_action(name)
    params = load_query(ivanti.schema(), _params())
    if "checkViability" in params:
        return _check_viability(name, params)
    action = actions.get_action(ivanti.action)
    outcome = actions.run_action(db.session, action, _select(_targets(params)), ivanti.parameters(params),
                                 actor=current_actor(), box=secret_box())
    db.session.commit()
    return _ivanti(len(outcome.success))


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _registration_state(device: Device) -> str:
    retirement = actions.retirement_state(db.session, device)
    if retirement is not None and retirement.get("state") == "completed":
        return "RETIRED"
    if device.admission_status == "accepted":
        return "ACTIVE" if device.enrolled else "RETIRED"
    return device.admission_status.upper()


#: Ivanti's policy rule type for ours (Ivanti's out-of-contact policy is our last check-in rule)
_RULE_TYPES = {RuleType.LAST_CHECKIN.value: "OUT_OF_CONTACT"}
#: our compliance state → Ivanti's ``complianceState`` (null: not known yet)
_COMPLIANT = {"compliant": True, "non_compliant": False}


def _compliance(state: Any) -> dict[str, Any]:
    """Ivanti's compliance fields of a device row from its ``device_compliance`` row (or None)."""
    return {"complianceState": _COMPLIANT.get(state.state) if state is not None else None,
            "policyViolationCount": state.violation_count if state is not None else 0,
            "quarantined": False}


def _details(device: Device) -> dict[str, Any]:
    owner: User | None = users.owner_of(db.session, device)
    security = compliance.security_of(db.session, device.id)
    results = compliance.device_results(db.session, device.id)
    ios = device.platform in ("ios", "ipados")
    return {
        **_search_row(device, owner.id if owner else None, attributes.get_attributes(db.session, device.id)),
        **_compliance(compliance.device_state(db.session, device.id)),
        "violatedPolicies": [{"id": p.id, "name": p.name, "policyRuleType": _RULE_TYPES.get(p.rule, p.rule.upper()),
                              "observedValue": r.observed}
                             for r, p in results if r.status == "non_compliant"],
        "passcodeCompliant": security.passcode_compliant if ios and security is not None else None,
        "passcodeCompliantWithProfiles": (security.passcode_compliant_with_profiles
                                          if ios and security is not None else None),
        "jailbroken": None,  # Apple's MDM protocol does not report it
        "registrationState": _registration_state(device),
        "iccid": device.iccid, "phoneNumber": device.phone_number,
        "activationLockEnabled": device.activation_lock_enabled,
        "availableCapacity": device.available_capacity_gb, "totalCapacity": device.capacity_gb,
        "emailAddress": owner.email if owner else None,
        "groups": [{"id": g.id, "name": g.name, "description": g.description, "type": "DEVICE",
                    "membershipStatic": g.kind == "static"}
                   for g in groups.groups_of_device(db.session, device)],
    }


@bp.get("/device/<name>")
def get_device(name: str):
    """Device details (``/api/v1/device/<id or GUID>``), or on an action's path Ivanti's viability check
    (``/api/v1/device/<action>?checkViability=true&ids=…``)."""
    if name in ACTIONS:
        return _check_viability(name, load_query(ACTIONS[name].schema(), _params()))
    if request.args:
        raise BadRequest(f"unknown query parameter {next(iter(request.args))!r}", parameter=next(iter(request.args)))
    return _ivanti(_details(resolve.get_device(db.session, name)))


class AttrsSchema(Schema):
    """``{"attrs": {"name": ["value", …]}, "forceOverwrite": true|false}`` (values are loaded by the
    native :class:`AttributeValuesSchema`)."""

    class Meta:
        unknown = RAISE

    attrs = fields.Dict(required=True)
    forceOverwrite = StrictBoolean(load_default=True)


def _attrs(*, text_plain: bool = False) -> tuple[dict[str, list[str]], bool]:
    body = load_body(AttrsSchema(), "custom attributes", text_plain=text_plain)
    values = load_attributes(AttributeValuesSchema(), body["attrs"], "custom attributes", base="/attrs")
    return values, body["forceOverwrite"]


def _attributes_changed() -> None:
    workflows.custom_attributes_changed(db.session, actor=current_actor(), box=secret_box(), public_url=public_url())
    db.session.commit()


@bp.get("/device/<ident>/customattributes")
def get_attributes(ident: str):
    """The device's custom attributes: ``{"deviceId", "guid", "attrs": {name: [values]}}``."""
    device = resolve.get_device(db.session, ident)
    return _ivanti({"deviceId": device.id, "guid": device.udid,
                    "attrs": attributes.get_attributes(db.session, device.id)})


@bp.post("/device/<ident>/customattributes")
def replace_attributes(ident: str):
    """Replace all the device's custom attributes."""
    device = resolve.get_device(db.session, ident)
    values, _ = _attrs()
    attributes.replace_attributes(db.session, device, values)
    _attributes_changed()
    return _ivanti(1)


@bp.patch("/device/<ident>/customattributes")
def patch_attributes(ident: str):
    """Keep the others; ``forceOverwrite: true`` (the default) replaces the named ones' values,
    ``false`` appends the values to them; new ones are added either way. The document's examples send
    ``Content-Type: text/plain`` after ``application/json`` (the server keeps the last one): a JSON body
    labelled ``text/plain`` is read too."""
    device = resolve.get_device(db.session, ident)
    values, overwrite = _attrs(text_plain=True)
    attributes.merge_attributes(db.session, device, dict(values), append=not overwrite)
    _attributes_changed()
    return _ivanti(1)


@bp.delete("/device/<ident>/customattributes")
def delete_attributes(ident: str):
    """Method 2: delete the attributes named in ``{"attrs": {name: [...]}}`` (the whole attribute)."""
    device = resolve.get_device(db.session, ident)
    values, _ = _attrs()
    attributes.delete_attributes(db.session, device, list(values))
    _attributes_changed()
    return _ivanti(1)


class BulkDeleteSchema(Schema):
    class Meta:
        unknown = RAISE

    ids = fields.List(NameField(), required=True, validate=validate.Length(min=1))
    attrKeys = fields.List(fields.String(validate=validate.Regexp(ATTRIBUTE_NAME, error="not an attribute name")),
                           required=True, validate=validate.Length(min=1))


@bp.delete("/device/customattributes")
def bulk_delete_attributes():
    """Method 1: ``{"ids": [...], "attrKeys": [...]}``; an unknown device is a 422 (nothing deleted)."""
    body = load_body(BulkDeleteSchema(), "custom attribute deletion")
    resolved = resolve.resolve_devices(db.session, body["ids"], pointer="/ids")
    if resolved.missing:
        raise UnprocessableEntity("unknown devices; nothing was deleted", errors=[
            {"detail": f"no device {name!r}", "pointer": f"/ids/{body['ids'].index(name)}"}
            for name in resolved.missing])
    names = [n[:-2] if n.endswith("_#") else n for n in body["attrKeys"]]
    attributes.bulk_delete(db.session, list(dict.fromkeys(names)), resolved.ids)
    _attributes_changed()
    return _ivanti(1)


class AssignSchema(Schema):
    class Meta:
        unknown = RAISE

    accountId = fields.Integer(required=True)
    deviceIds = fields.List(NameField(), required=True, validate=validate.Length(min=1))


@bp.put("/device/updateAccount")
def update_account():
    """Assign devices to a user (``accountId`` a user id): ``result.searchResults`` lists the devices
    that were not assigned (unknown ones)."""
    params = load_query(AssignSchema(), _params())
    user = db.session.get(User, params["accountId"])
    if user is None:
        raise UnprocessableEntity(f"no user {params['accountId']}", parameter="accountId")
    resolved = resolve.resolve_devices(db.session, params["deviceIds"], parameter="deviceIds")
    for device_id in resolved.ids:
        users.set_owner(db.session, db.session.get(Device, device_id), user)
    db.session.commit()
    rejected = [{"id": None, "deviceIdentifier": name, "actionExceptionCodes": ["DEVICE_NOT_FOUND"]}
                for name in resolved.missing]
    return _ivanti({**_search_results(rejected), "limit": 0})


class DeleteDevicesSchema(Schema):
    class Meta:
        unknown = RAISE

    deviceIds = fields.List(NameField(), required=True, validate=validate.Length(min=1))


@bp.delete("/device")
def delete_devices():
    """``DELETE /api/v1/device?deviceIds=…``: forget the devices; ``result`` is how many were deleted."""
    params = load_query(DeleteDevicesSchema(), _params())
    resolved = resolve.resolve_devices(db.session, params["deviceIds"], parameter="deviceIds")
    for device_id in resolved.ids:
        workflows.delete_device(db.session, db.session.get(Device, device_id))
    db.session.commit()
    return _ivanti(len(resolved.ids))


# --- device search: GET /api/v1/device?fq=…&rows=…&start=… -------------------------------------------

#: Ivanti's search fields (``fq=<field> EQ <value>`` or ``<field>=<value>``) → our device filters
_FQ_FIELDS = {"id": "id", "guid": "udid", "udid": "udid", "serialnumber": "serial_number",
              "emailaddress": "owner_email", "uid": "owner_uid", "devicename": "name",
              "platformversion": "os_version",
              "supervised": "supervised", "lostmodeenabled": "lost_mode"}
#: ``<field><'[dd:]hh:mm:ss'``: within the last … → our "after" filter
_FQ_SINCE = {"lastcheckin": "last_seen_after", "lastregistrationtime": "enrolled_after"}
_FQ_TERM = re.compile(
    r"^(?:CFDEVICE\[(?P<cf>[^\]]+)\]\s*=\s*(?P<cf_value>.+)"
    r"|(?P<field>[A-Za-z]+)\s*(?:=|\s+EQ\s+)\s*(?P<value>.+)"
    r"|(?P<since>[A-Za-z]+)\s*<\s*'(?P<duration>[0-9]+(?::[0-9]+){2,3})')$")


def _duration(text: str) -> timedelta:
    parts = [int(p) for p in text.split(":")]
    seconds, minutes, hours = parts[-1], parts[-2], parts[-3]
    days = parts[-4] if len(parts) == 4 else 0
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _fq_filter(fq: str) -> dict[str, str]:
    """Ivanti's ``fq`` (terms joined by ``AND``) → our device filter object; an unknown field is a 400."""
    out: dict[str, str] = {}
    for term in re.split(r"\s+AND\s+", fq.strip()):
        match = _FQ_TERM.match(term.strip())
        if match is None:
            raise BadRequest(f"cannot read the fq term {term!r} (see docs/api-mapping.md)", parameter="fq")
        if match["cf"] is not None:
            name = match["cf"].removesuffix("_#")
            out[f"custom.{name}"] = match["cf_value"].strip().strip("'")
        elif match["since"] is not None:
            since = _FQ_SINCE.get(match["since"].lower())
            if since is None:
                raise BadRequest(f"fq: no time filter on {match['since']!r}; allowed: lastCheckin, "
                                 "lastRegistrationTime", parameter="fq")
            out[since] = (utcnow() - _duration(match["duration"])).isoformat()
        else:
            name = _FQ_FIELDS.get(match["field"].lower())
            if name is None:
                raise BadRequest(f"fq: no search on {match['field']!r}; allowed: CFDEVICE[<name>], "
                                 f"{', '.join(sorted(_FQ_FIELDS))}, lastCheckin<…, lastRegistrationTime<…",
                                 parameter="fq")
            out[name] = match["value"].strip().strip("'")
    return out


class SearchSchema(Schema):
    class Meta:
        unknown = RAISE

    fq = fields.String()
    q = fields.String()
    dmPartitionId = fields.Integer()  # one device space here: accepted, not used
    rows = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    start = fields.Integer(load_default=0, validate=validate.Range(min=0))


def _search_row(device: Device, owner_id: int | None, values: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "id": device.id, "guid": device.udid, "udid": device.udid, "serialNumber": device.serial_number,
        "deviceModel": device.model, "prettyModel": device.model_name or device.product_name,
        "deviceName": device.device_name, "manufacturer": "Apple Inc.",
        "platformType": _PLATFORM_TYPES.get(device.platform or "", (device.platform or "").upper() or None),
        "platformVersion": device.os_version, "osBuildVersion": device.build_version,
        "lastCheckin": _ms(device.last_seen_at), "lastRegistrationTime": _ms(device.enrolled_at),
        "supervised": device.is_supervised, "lostModeEnabled": device.lost_mode_enabled,
        "imei": device.imei, "meid": device.meid, "wifiMacAddress": device.wifi_mac, "ownerId": owner_id,
        "customAttributes": {"attrs": values} if values else None,
    }


@bp.get("/device")
def search_devices():
    """Ivanti's device search: ``fq`` (``CFDEVICE[name]=value``, ``EMAILADDRESS EQ …``, ``guid=…``,
    ``lastCheckin<'hh:mm:ss'``, ``lastRegistrationTime<'dd:hh:mm:ss'``, joined by ``AND``), ``q``
    (free text), ``rows`` (at most 500) and ``start`` (a multiple of ``rows``)."""
    params = load_query(SearchSchema(), _params())
    if params["start"] % params["rows"]:
        raise BadRequest("start must be a multiple of rows (pages of rows devices)", parameter="start")
    mapping = _fq_filter(params["fq"]) if params.get("fq", "").strip() else {}
    if params.get("q", "").strip():
        mapping["q"] = params["q"].strip()
    try:
        conditions = conditions_from_mapping(db.session, mapping)
    except ValueError as exc:  # FilterError included
        raise BadRequest(str(exc), parameter="fq") from None
    page = devices.list_devices(db.session, ListQuery(filters=conditions, order_by=[Device.id.asc()],
                                                      number=params["start"] // params["rows"] + 1,
                                                      size=params["rows"]))
    ids = [d.id for d in page.items]
    owners = devices.owners_of(db.session, ids)
    values = attributes.attributes_of(db.session, ids)
    states = compliance.states_of(db.session, ids)
    rows = [{**_search_row(d, owners.get(d.id), values.get(d.id, {})), **_compliance(states.get(d.id))}
            for d in page.items]
    return _ivanti({"totalCount": page.total, "searchResults": rows, "offset": params["start"], "queryTime": 0})


@bp.get("/device/<ident>/policies")
def device_policies(ident: str):
    """Ivanti's "Get Compliance Status of a Particular Device": every compliance policy that applies to
    the device, with its device counts and whether this device complies (``pendingCompliant``: not
    violated, possibly not judged yet)."""
    if request.args:
        raise BadRequest(f"unknown query parameter {next(iter(request.args))!r}", parameter=next(iter(request.args)))
    device = resolve.get_device(db.session, ident)
    results = compliance.device_results(db.session, device.id)
    counts = compliance.policy_counts(db.session, [p.id for _, p in results])
    rows = [{
        "id": p.id, "name": p.name, "systemName": None, "description": p.description, "policyType": "POLICY",
        "policyRuleType": _RULE_TYPES.get(p.rule, p.rule.upper()), "uuid": None, "enabled": p.enabled,
        "priority": index + 1, "totalDeviceCount": sum(counts[p.id].values()),
        "installedDeviceCount": sum(counts[p.id].values()), "violationDeviceCount": counts[p.id]["non_compliant"],
        "modifiedAt": _ms(p.updated_at), "modifiedBy": p.created_by, "actions": p.remediation,
        "compliant": r.status == "compliant", "pendingCompliant": r.status != "non_compliant",
    } for index, (r, p) in enumerate(results)]
    return _ivanti({"totalCount": len(rows), "queryTime": 0, "searchResults": rows, "offset": 0, "limit": len(rows)})


OPENAPI: dict[str, ApiDoc] = {
    "compat_ivanti.device_policies": ApiDoc(reply=Reply.JSON),
    "compat_ivanti.perform": ApiDoc(body_kind=Body.NONE, reply=Reply.JSON, query=TargetsSchema),
    "compat_ivanti.get_device": ApiDoc(reply=Reply.JSON, query=TargetsSchema),
    "compat_ivanti.search_devices": ApiDoc(reply=Reply.JSON, query=SearchSchema),
    "compat_ivanti.get_attributes": ApiDoc(reply=Reply.JSON),
    "compat_ivanti.replace_attributes": ApiDoc(body=AttrsSchema, body_kind=Body.JSON, reply=Reply.JSON),
    "compat_ivanti.patch_attributes": ApiDoc(body=AttrsSchema, body_kind=Body.JSON, reply=Reply.JSON),
    "compat_ivanti.delete_attributes": ApiDoc(body=AttrsSchema, body_kind=Body.JSON, reply=Reply.JSON),
    "compat_ivanti.bulk_delete_attributes": ApiDoc(body=BulkDeleteSchema, body_kind=Body.JSON, reply=Reply.JSON),
    "compat_ivanti.update_account": ApiDoc(body_kind=Body.NONE, reply=Reply.JSON, query=AssignSchema),
    "compat_ivanti.delete_devices": ApiDoc(reply=Reply.JSON, query=DeleteDevicesSchema),
}
