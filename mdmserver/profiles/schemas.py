"""marshmallow schemas of profiles and payloads, one per typed payload model.

Fields are named in Python style (the model's attribute) with ``data_key`` set to Apple's key, and
check types exactly: a boolean is not an integer, ``<data>`` is bytes, ``<date>`` a UTC date, an
integer is accepted where a real is expected (and stays an integer).

Each model has two schema classes, differing only in how values are represented:

- plist mode (``json_mode = False``): values as ``plistlib`` gives them (bytes, datetime);
- JSON mode (``json_mode = True``): the JSON:API representation, where ``<data>`` is base64, a date is
  an ISO 8601 string, and nested values and unknown keys use the lossless JSON form of
  :mod:`mdmserver.profiles.plist` (``{"$data": …}``, ``{"$date": …}``).
"""

from __future__ import annotations

import base64
from datetime import datetime
from functools import cache
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from mdmserver.api.apidoc import ApiDoc, Body, IdField, LinkageSchema, Reply, listing
from mdmserver.api.jsonapi import resource
from mdmserver.db import isoformat
from mdmserver.errors import UnprocessableEntity
from mdmserver.pki.secretbox import SecretBox
from mdmserver.profiles.models import BoxSealer, Payload, PlistField, Profile, column_fits
from mdmserver.profiles.plist import (
    ProfileError,
    b64decode,
    date_to_iso,
    from_json,
    iso_to_date,
    plist_type_name,
    pointer,
    redact,
    to_json,
)


class _PlistField(fields.Field):
    kind = "any"

    @property
    def json_mode(self) -> bool:
        return bool(getattr(self.parent, "json_mode", False))

    def _wrong(self, value: Any) -> ValidationError:
        return ValidationError(f"expected {self.kind}, got {_json_type_name(value) if self.json_mode else plist_type_name(value)}")

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs) -> Any:
        if value is None:
            return None
        return to_json(value)


def _json_type_name(value: Any) -> str:
    if isinstance(value, dict) and len(value) == 1:
        tag = next(iter(value))
        if tag in ("$data", "$date", "$real"):
            return {"$data": "data", "$date": "date", "$real": "real"}[tag]
    if value is None:
        return "null"
    return plist_type_name(value)


class _PlistExact(_PlistField):
    """A scalar whose Python type must be exactly ``python_type`` (``True`` is not an integer)."""

    python_type: type

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is not self.python_type:
            raise self._wrong(value)
        return value


class PlistString(_PlistExact):
    kind, python_type = "string", str


class PlistInteger(_PlistExact):
    kind, python_type = "integer", int


class PlistBoolean(_PlistExact):
    kind, python_type = "boolean", bool


class PlistReal(_PlistField):
    """A real; an integer is accepted and kept as an integer (the round trip must not change it)."""

    kind = "real"

    def _deserialize(self, value, attr, data, **kwargs):
        if self.json_mode and isinstance(value, dict):
            try:
                value = from_json(value)
            except ProfileError as exc:
                raise ValidationError(exc.detail) from None
        if type(value) not in (int, float):
            raise self._wrong(value)
        return value


class PlistDate(_PlistField):
    kind = "date"

    def _deserialize(self, value, attr, data, **kwargs):
        if self.json_mode:
            if isinstance(value, dict) and set(value) == {"$date"}:
                value = value["$date"]
            if not isinstance(value, str):
                raise self._wrong(value)
            try:
                return iso_to_date(value)
            except ValueError:
                raise ValidationError("expected an ISO 8601 date such as 2025-01-31T12:00:00Z") from None
        if not isinstance(value, datetime):
            raise self._wrong(value)
        return value

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else date_to_iso(value)


class PlistData(_PlistField):
    kind = "data"

    def _deserialize(self, value, attr, data, **kwargs):
        if self.json_mode:
            if isinstance(value, dict) and set(value) == {"$data"}:
                value = value["$data"]
            if not isinstance(value, str):
                raise self._wrong(value)
            try:
                return b64decode(value)
            except ValueError:
                raise ValidationError("expected base64-encoded data") from None
        if type(value) is not bytes:
            raise self._wrong(value)
        return value

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else base64.b64encode(value).decode("ascii")


class _PlistContainer(_PlistField):
    python_type: type | None = None

    def _deserialize(self, value, attr, data, **kwargs):
        if self.json_mode:
            try:
                value = from_json(value)
            except ProfileError as exc:
                raise ValidationError(f"{exc.detail} at {exc.pointer or '/'}") from None
        if self.python_type is not None and type(value) is not self.python_type:
            raise self._wrong(value)
        return value


class PlistArray(_PlistContainer):
    kind, python_type = "array", list


class PlistDictionary(_PlistContainer):
    kind, python_type = "dictionary", dict


class PlistAny(_PlistContainer):
    kind = "any"


FIELD_CLASSES: dict[str, type[_PlistField]] = {
    "string": PlistString,
    "integer": PlistInteger,
    "boolean": PlistBoolean,
    "real": PlistReal,
    "date": PlistDate,
    "data": PlistData,
    "array": PlistArray,
    "dictionary": PlistDictionary,
    "any": PlistAny,
}


class PlistSchema(Schema):
    """Base of the generated schemas: keys the schema does not know are handled by the caller."""

    #: True for the JSON:API representation, False for plistlib values.
    json_mode = False

    class Meta:
        unknown = EXCLUDE


def _field(f: PlistField) -> fields.Field:
    return FIELD_CLASSES[f.kind](data_key=f.key, attribute=f.attr, load_only=f.secret, allow_none=False)


@cache
def schema_class(model: type, json_mode: bool = False) -> type[PlistSchema]:
    """The marshmallow schema of a model (Profile, the generic Payload or a typed payload)."""
    attrs: dict[str, Any] = {f.attr: _field(f) for f in model.plist_fields}
    attrs["json_mode"] = json_mode
    suffix = "JSONSchema" if json_mode else "Schema"
    return type(f"{model.__name__}{suffix}", (PlistSchema,), attrs)


@cache
def _schema(model: type, json_mode: bool) -> PlistSchema:
    return schema_class(model, json_mode)()


def load_typed(model: type, values: dict[str, Any], *, json_mode: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate ``values`` (Apple keys) with the model's schema.

    Returns (typed values keyed by Apple key, errors keyed by Apple key). Keys the schema does not
    know are in neither.
    """
    schema = _schema(model, json_mode)
    try:
        loaded = schema.load(values)
        errors: dict[str, Any] = {}
    except ValidationError as exc:
        loaded = exc.valid_data or {}
        errors = exc.messages if isinstance(exc.messages, dict) else {"": exc.messages}
    by_attr = {f.attr: f.key for f in model.plist_fields}
    return {by_attr[attr]: value for attr, value in loaded.items()}, errors


def json_to_plist(model: type, attributes: dict[str, Any], base: tuple = ()) -> dict[str, Any]:
    """A JSON:API representation (Apple keys) → a plist dictionary; 422 faults carry pointers."""
    typed, errors = load_typed(model, attributes, json_mode=True)
    if errors:
        faults = []
        for key, messages in errors.items():
            for message in messages if isinstance(messages, list) else [messages]:
                faults.append({"detail": f"{key}: {message}", "pointer": pointer(*base, key)})
        raise UnprocessableEntity(faults[0]["detail"], pointer=faults[0]["pointer"], errors=faults)
    known = model.field_by_key()
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in typed:
            out[key] = typed[key]
        elif key in known:
            continue  # a typed key whose value was null: left out
        else:
            try:
                out[key] = from_json(value)
            except ProfileError as exc:
                raise UnprocessableEntity(exc.detail, pointer=pointer(*base, key) + (exc.pointer or "")) from None
    return out


def plist_to_json(model: type, values: dict[str, Any]) -> dict[str, Any]:
    """A plist dictionary → its JSON:API representation (Apple keys, secrets left out)."""
    known = model.field_by_key()
    schema = _schema(model, True)
    payload_type = values.get("PayloadType")
    out: dict[str, Any] = {}
    for key, value in values.items():
        f = known.get(key)
        if model.is_secret_key(key, value, payload_type) or f is not None and f.secret:
            continue
        if f is not None and (column_fits(f.kind, value) or f.kind == "real" and type(value) is int):
            out[key] = redact(schema.fields[f.attr]._serialize(value, f.attr, None))
        else:
            out[key] = redact(to_json(value))
    return out


# --- JSON:API resources ------------------------------------------------------------------------------


def profile_resource(
    profile: Profile, refs: list[tuple[int, str | None, str]] | None = None, *, box: SecretBox
) -> dict[str, Any]:
    """A profile: its top-level keys (Apple's names, JSON shape) plus server metadata.

    ``refs`` are the payloads' (id, PayloadType, kind) when the payload rows were not loaded; ``box``
    opens the sealed values (secrets themselves are left out).
    """
    values = profile.plist_values(BoxSealer(box))
    values.pop("PayloadContent", None)
    attributes = plist_to_json(Profile, values)
    attributes.update({
        "revision": profile.revision,
        "source_format": profile.source_format,
        "signed": profile.signed,
        "signer_subject": profile.signer_subject,
        "signer_trusted": profile.signer_trusted,
        "created_at": isoformat(profile.created_at),
        "updated_at": isoformat(profile.updated_at),
    })
    if refs is None:
        refs = [(p.id, p.payload_type, p.kind) for p in profile.payloads]
    payloads = [{"type": "payloads", "id": str(pid), "meta": {"payload_type": ptype, "kind": kind}}
                for pid, ptype, kind in refs]
    return resource(
        "profiles", profile.id, attributes,
        relationships={"payloads": {"data": payloads, "links": {"related": f"/api/v1/payloads?filter[profile]={profile.id}"}}},
        links={"self": f"/api/v1/profiles/{profile.id}", "download": f"/api/v1/download/profiles/{profile.id}"},
    )


def payload_resource(payload: Payload, *, box: SecretBox) -> dict[str, Any]:
    """A payload: its kind and position, then its keys (Apple's names, JSON shape, secrets left out)."""
    attributes = {"kind": payload.kind, "position": payload.position}
    attributes.update(plist_to_json(type(payload), payload.to_plist(BoxSealer(box))))
    return resource(
        "payloads", payload.id, attributes,
        relationships={"profile": {"data": {"type": "profiles", "id": str(payload.profile_id)}}},
        links={"self": f"/api/v1/payloads/{payload.id}"},
    )


def version_resource(profile: Profile, version) -> dict[str, Any]:
    return resource("profile_versions", f"{profile.id}.{version.revision}", {
        "revision": version.revision,
        "source_format": version.source_format,
        "signer_subject": version.signer_subject,
        "created_at": isoformat(version.created_at),
        "replaced_at": isoformat(version.replaced_at),
    }, links={"download": f"/api/v1/download/profiles/{profile.id}?revision={version.revision}"})

class ProfileUploadSchema(Schema):
    """The upload form: the .mobileconfig in the field ``file``."""

    file = fields.Raw(required=True, metadata={"type": "string", "format": "binary"})


class ProfileLinkageSchema(LinkageSchema):
    """The profile a payload belongs to: ``{"type": "profiles", "id": …}``."""

    type = fields.String(required=True, validate=validate.Equal("profiles", error="type must be 'profiles'"),
                         metadata={"enum": ["profiles"]})
    id = IdField(required=True)


class ProfileRelationshipSchema(Schema):
    class Meta:
        unknown = RAISE

    data = fields.Nested(ProfileLinkageSchema, required=True)


class PayloadRelationshipsSchema(Schema):
    """A new payload's ``relationships``: the profile it is added to."""

    class Meta:
        unknown = RAISE

    profile = fields.Nested(ProfileRelationshipSchema, required=True)


#: A profile's or payload's attributes are Apple's keys (PayloadDisplayName, PayloadContent, …), typed
#: per payload type by the catalogue and checked by ``load_typed``.
_APPLE_KEYS = {"type": "object", "additionalProperties": True,
               "description": "Apple's payload keys; payloads of a profile in PayloadContent"}

OPENAPI: dict[str, ApiDoc] = {
    "profiles.upload_profile": ApiDoc(body=ProfileUploadSchema, body_kind=Body.MULTIPART, type="profiles",
                                      status=201, errors=(409, 415, 422), query={
                                          "strict": "true: Apple-schema findings are a 422",
                                          "replace": "true: a new revision of the profile with this identifier"}),
    "profiles.download_profile": ApiDoc(reply=Reply.FILE, query={
        "signed": "true: signed by the server's identity",
        "format": "xml or binary",
        "revision": "an earlier revision"}),
    "profiles.list_profiles": listing("profiles", filters=("identifier", "display_name", "payload_type", "uuid", "signed"),
                                      sorts=("id", "identifier", "display_name", "created_at", "updated_at"),
                                      fields=True, query={"include": "payloads"}),
    "profiles.create_profile": ApiDoc(body=_APPLE_KEYS, type="profiles", status=201,
                                      query={"strict": "true: Apple-schema findings are a 422"}),
    "profiles.get_profile": ApiDoc(type="profiles", query={"include": "payloads"}),
    "profiles.patch_profile": ApiDoc(body=_APPLE_KEYS, type="profiles"),
    "profiles.delete_profile": ApiDoc(type="profiles", reply=Reply.EMPTY, errors=(409,)),
    "profiles.list_versions": ApiDoc(type="profile_versions", reply=Reply.COLLECTION),
    "profiles.list_payloads": listing("payloads", filters=("payload_type", "type", "kind", "profile", "identifier"),
                                      sorts=("id", "payload_type", "position"), fields=True),
    "profiles.create_payload": ApiDoc(body=_APPLE_KEYS, type="payloads", relationships=PayloadRelationshipsSchema,
                                      status=201),
    "profiles.get_payload": ApiDoc(type="payloads"),
    "profiles.patch_payload": ApiDoc(body=_APPLE_KEYS, type="payloads"),
    "profiles.delete_payload": ApiDoc(type="payloads", reply=Reply.EMPTY),
}
