"""The Android MDM seed's ("MiDM") scoped profiles, as blueprints (``/api/v1/midm/profiles``).

Seed 003 documents the request and response bodies of its scoped profiles but no paths: this server
serves them at ``/api/v1/midm/profiles`` (create, list, get one, edit by loading and saving the whole
object). A scoped profile is a blueprint (docs/blueprints.md); the fields that have an Apple meaning
map onto it, the Android-only ones are refused with a 422 naming them, never silently dropped:

- ``isGlobal`` → ``is_global``; ``enabled`` → ``enabled``; ``profile.name`` → ``name`` (absent: the
  time stamp ``yyyyMMdd_hh:mm:ss``, as the seed does); ``profile.removeIfNoScope`` →
  ``remove_if_no_scope``; ``profile.unscopeIfApplied`` → ``unscope_if_applied``;
  ``profile.applyOrder`` (``none``/``settings``, ``apps``, ``otas``) → ``first_item`` (``profiles``,
  ``apps``, ``os_update``); ``schedule_date.start_on`` (or ``profile.startsOn``) → ``start_on`` (a
  date is midnight UTC);
- ``scope.group`` → the scope's groups (group ids), ``scope.device`` → its devices (id, UDID or
  serial; an unknown device is a 422: Apple devices enroll themselves, they are not registered here);
- ``apps.install[].uuid`` → the blueprint's apps (app ids); ``silent_install`` / ``silentInstall`` are
  accepted and have no Apple key (a managed install asks the user only where Apple requires it);
- refused when set: ``otas`` (Android system images: the OS target is the native ``os_update``),
  ``settings`` (Android settings: Apple settings are configuration profiles, the native ``profiles``),
  ``profile.applyWhile`` true (``sleeping``, ``offline``), the recurring schedule (``updateVia``,
  ``repeatOption``, ``repeatEvery``, ``repeatPeriod``, ``endsOption``, ``ends``, ``timeOption``,
  ``wakeToApply``), and ``starts_on_update``, ``grant_all``, ``reboots_on_update`` true on an app;
- read-only fields of a loaded object sent back (``siteUuid``, ``writerUuid``, ``writer``, ``created``,
  ``updated``, ``uuid``) are accepted and ignored.

Editing through this route leaves what the seed does not know (configuration profiles, the OS target,
``apply_order``) as it was. Answers use the seed's envelope (``uq`` is the request id); errors stay the
one JSON:API error document.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from flask import Blueprint as FlaskBlueprint
from flask import Response, json, request
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from mdmserver.api.apidoc import ApiDoc, Body, IdField, NameField, Reply
from mdmserver.api.auth import current_actor
from mdmserver.api.jsonapi import is_id, load_body
from mdmserver.api.requests import request_id
from mdmserver.blueprints import service as blueprints
from mdmserver.collaborators import public_url, secret_box
from mdmserver.db import db, isoformat, utcnow
from mdmserver.errors import BadRequest, NotFound, UnprocessableEntity
from mdmserver.records.blueprints import Blueprint, FirstItem

bp = FlaskBlueprint("compat_midm", __name__, url_prefix="/api/v1/midm")

#: the seed's ``applyOrder`` → which kind of item goes first
_APPLY_ORDER = {"none": FirstItem.PROFILES.value, "settings": FirstItem.PROFILES.value,
                "apps": FirstItem.APPS.value, "otas": FirstItem.OS_UPDATE.value}
_FIRST_ITEM_NAMES = {FirstItem.PROFILES.value: "settings", FirstItem.APPS.value: "apps",
                     FirstItem.OS_UPDATE.value: "otas"}
#: the seed's recurring-schedule fields, which have no Apple counterpart
_SCHEDULE = ("updateVia", "repeatOption", "endsOption", "ends", "repeatEvery", "repeatPeriod", "timeOption",
             "wakeToApply")
MAX_PAGE = 500


class _SeedBool(fields.Field):
    """``true``/``false``, or the seed's ``"true"``/``"false"`` strings."""

    default_error_messages = {"invalid": "expected true or false"}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {"oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false"]}]})
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise self.make_error("invalid")


def _unset(value: Any) -> bool:
    return value in (None, "", 0, False, [], {})


class _ApplyWhileSchema(Schema):
    class Meta:
        unknown = RAISE

    sleeping = _SeedBool(validate=validate.Equal(False, error="applying only while sleeping is Android's: "
                                                                "Apple devices apply commands when they check in"))
    offline = _SeedBool(validate=validate.Equal(False, error="applying while offline is Android's"))


class _ProfileSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(validate=validate.Length(min=1, max=200))
    applyOrder = fields.String(validate=validate.OneOf(list(_APPLY_ORDER)))
    removeIfNoScope = _SeedBool()
    unscopeIfApplied = _SeedBool()
    applyWhile = fields.Nested(_ApplyWhileSchema)
    startsOn = fields.String(allow_none=True)
    updateVia = fields.Raw()
    repeatOption = fields.Raw()
    endsOption = fields.Raw()
    ends = fields.Raw()
    repeatEvery = fields.Raw()
    repeatPeriod = fields.Raw()
    timeOption = fields.Raw()
    wakeToApply = fields.Raw()

    @validates_schema
    def _no_recurrence(self, data: dict[str, Any], **_kwargs: Any) -> None:
        given = {name: "recurring schedules are not supported: a blueprint applies continuously from start_on"
                 for name in _SCHEDULE if not _unset(data.get(name))}
        if given:
            raise ValidationError(given)


class _ScopeSchema(Schema):
    class Meta:
        unknown = RAISE

    group = fields.List(IdField(), load_default=list)
    device = fields.List(NameField(), load_default=list)


class _AppInstallSchema(Schema):
    class Meta:
        unknown = RAISE

    uuid = IdField(required=True)
    silent_install = _SeedBool()
    silentInstall = _SeedBool()
    starts_on_update = _SeedBool(validate=validate.Equal(False, error="Android only: refused"))
    grant_all = _SeedBool(validate=validate.Equal(False, error="Android only (runtime permissions): refused"))
    reboots_on_update = _SeedBool(validate=validate.Equal(False, error="Android only: refused"))


class _AppsSchema(Schema):
    class Meta:
        unknown = RAISE

    install = fields.List(fields.Nested(_AppInstallSchema), load_default=list)


class _ScheduleSchema(Schema):
    class Meta:
        unknown = RAISE

    start_on = fields.String(allow_none=True)


class ScopedProfileSchema(Schema):
    """The seed's scoped-profile body (create, or a loaded object sent back to edit it)."""

    class Meta:
        unknown = RAISE

    isGlobal = _SeedBool()
    enabled = _SeedBool()
    profile = fields.Nested(_ProfileSchema, load_default=dict)
    scope = fields.Nested(_ScopeSchema)
    apps = fields.Nested(_AppsSchema)
    otas = fields.List(fields.Raw(), validate=validate.Length(
        max=0, error="Android system images do not apply: set the OS target as os_update on /api/v1/blueprints"))
    schedule_date = fields.Nested(_ScheduleSchema)
    settings = fields.Dict(validate=lambda v: _unset(v) or _refuse(
        "Android settings do not apply: Apple settings are configuration profiles (profiles on /api/v1/blueprints)"))
    # read-only fields of a loaded object: accepted, ignored
    uuid = fields.Raw()
    siteUuid = fields.Raw()
    writerUuid = fields.Raw()
    writer = fields.Raw()
    created = fields.Raw()
    updated = fields.Raw()


def _refuse(message: str) -> bool:
    raise ValidationError(message)


def _start_on(text: str | None, pointer: str) -> datetime | None:
    if text in (None, ""):
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UnprocessableEntity("invalid scoped profile", errors=[
            {"detail": "expected a date (2024-02-06) or a date-time with a zone", "pointer": pointer}]) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _values(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """The native blueprint values of a seed body (only the fields it carries)."""
    profile = body.get("profile") or {}
    values: dict[str, Any] = {}
    if "name" in profile:
        values["name"] = profile["name"]
    elif creating:
        values["name"] = utcnow().strftime("%Y%m%d_%H:%M:%S")
    simple = {"isGlobal": "is_global", "enabled": "enabled"}
    values.update({ours: body[theirs] for theirs, ours in simple.items() if theirs in body})
    flags = {"removeIfNoScope": "remove_if_no_scope", "unscopeIfApplied": "unscope_if_applied"}
    values.update({ours: profile[theirs] for theirs, ours in flags.items() if theirs in profile})
    if "applyOrder" in profile:
        values["first_item"] = _APPLY_ORDER[profile["applyOrder"]]
    start = (body.get("schedule_date") or {}).get("start_on")
    pointer = "/schedule_date/start_on"
    if start in (None, "") and profile.get("startsOn") not in (None, ""):
        start, pointer = profile["startsOn"], "/profile/startsOn"
    if "schedule_date" in body or "startsOn" in profile:
        values["start_on"] = _start_on(start, pointer)
    if "scope" in body:
        values["scope"] = {"groups": body["scope"]["group"], "devices": body["scope"]["device"]}
    if values.get("is_global"):
        values["scope"] = {"groups": [], "devices": []}  # "If isGlobal is true, any scope will be ignored."
    if "apps" in body:
        install = body["apps"]["install"]
        if len({a["uuid"] for a in install}) != len(install):
            raise UnprocessableEntity("invalid scoped profile", errors=[
                {"detail": "an app is listed twice", "pointer": "/apps/install"}])
        values["apps"] = [{"app_id": a["uuid"], "options": {}} for a in install]
    return values


def _seed_pointers(exc: UnprocessableEntity) -> UnprocessableEntity:
    """The native service's pointers (``/data/attributes/…``) in the seed's terms."""
    renames = {"/data/attributes/scope/groups": "/scope/group", "/data/attributes/scope/devices": "/scope/device",
               "/data/attributes/apps": "/apps/install", "/data/attributes/name": "/profile/name"}
    errors = []
    for error in exc.errors or [{"detail": exc.detail, "pointer": exc.pointer or ""}]:
        pointer = error.get("pointer") or ""
        for ours, theirs in renames.items():
            if pointer.startswith(ours):
                pointer = theirs + pointer[len(ours):].replace("/app_id", "/uuid")
                break
        errors.append({"detail": error["detail"], "pointer": pointer})
    return UnprocessableEntity(exc.detail, errors=errors)


def _envelope(data: Any, status: int = 200, **extra: Any) -> Response:
    body = {"uq": request_id(), "doc_version": "latest", "result": True, "code": 0, "message": "", "build": "",
            "data": data, **extra}
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _millis(moment: datetime | None) -> int:
    return int(moment.timestamp() * 1000) if moment is not None else 0


def _seed_object(row: Blueprint, items: blueprints.Contents) -> dict[str, Any]:
    return {
        "uuid": str(row.id), "isGlobal": row.is_global, "enabled": row.enabled, "writerUuid": row.created_by,
        "profile": {"name": row.name, "applyOrder": _FIRST_ITEM_NAMES[row.first_item],
                    "removeIfNoScope": row.remove_if_no_scope, "unscopeIfApplied": row.unscope_if_applied,
                    "startsOn": isoformat(row.start_on)},
        "scope": {"group": [str(g) for g in items.group_ids], "device": [str(d) for d in items.device_ids]},
        "apps": {"install": [{"uuid": str(a["app_id"])} for a in items.apps]},
        "otas": [], "schedule_date": {"start_on": isoformat(row.start_on)},
        "created": isoformat(row.created_at), "updated": isoformat(row.updated_at),
    }


def _with() -> blueprints.Collaborators:
    return blueprints.Collaborators(actor=current_actor(), box=secret_box(), public_url=public_url())


def _blueprint(profile_id: str) -> Blueprint:
    if not is_id(profile_id):
        raise NotFound(f"no scoped profile {profile_id!r}")
    return blueprints.get_blueprint(db.session, int(profile_id))


def _saved(row: Blueprint, status: int) -> Response:
    return _envelope({"uuid": str(row.id), "name": row.name, "updated": _millis(row.updated_at)}, status)


@bp.post("/profiles")
def create_profile():
    """Create a scoped profile (a blueprint) from the seed's body."""
    body = load_body(ScopedProfileSchema(), "scoped profile")
    try:
        row, _ = blueprints.create_blueprint(db.session, _values(body, creating=True), with_=_with())
    except UnprocessableEntity as exc:
        raise _seed_pointers(exc) from None
    db.session.commit()
    return _saved(row, 201)


@bp.put("/profiles/<blueprint_id>")
def save_profile(blueprint_id: str):
    """Save a loaded scoped profile: the fields the seed knows change; profiles and the OS target stay."""
    row = _blueprint(blueprint_id)
    body = load_body(ScopedProfileSchema(), "scoped profile")
    try:
        row, _ = blueprints.update_blueprint(db.session, row, _values(body, creating=False), with_=_with())
    except UnprocessableEntity as exc:
        raise _seed_pointers(exc) from None
    db.session.commit()
    return _saved(row, 200)


@bp.get("/profiles/<blueprint_id>")
def get_profile(blueprint_id: str):
    """One scoped profile in the seed's shape."""
    row = _blueprint(blueprint_id)
    return _envelope(_seed_object(row, blueprints.contents(db.session, [row.id])[row.id]))


class _PagingSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_PAGE))


@bp.get("/profiles")
def list_profiles():
    """Scoped profiles, ``page`` (from 1) and ``size`` (≤ 500), with the seed's ``totalPage``, ``size``,
    ``totalSize``."""
    try:
        paging = _PagingSchema().load(request.args)
    except ValidationError as exc:
        raise BadRequest("invalid paging", errors=[
            {"detail": "; ".join(messages), "parameter": name} for name, messages in exc.messages.items()]
        ) from None
    rows, total = blueprints.page_of_blueprints(db.session, paging["page"], paging["size"])
    items = blueprints.contents(db.session, [r.id for r in rows])
    return _envelope([_seed_object(r, items[r.id]) for r in rows], totalPage=-(-total // paging["size"]),
                     size=len(rows), totalSize=total)


OPENAPI: dict[str, ApiDoc] = {
    "compat_midm.create_profile": ApiDoc(body=ScopedProfileSchema, body_kind=Body.JSON, reply=Reply.JSON, status=201),
    "compat_midm.save_profile": ApiDoc(body=ScopedProfileSchema, body_kind=Body.JSON, reply=Reply.JSON),
    "compat_midm.get_profile": ApiDoc(reply=Reply.JSON),
    "compat_midm.list_profiles": ApiDoc(reply=Reply.JSON, query={"page": "page number, from 1",
                                                                 "size": "page size, at most 500"}),
}
