"""Profiles API: commandment-compatible upload/download, JSON:API profiles, payloads and versions."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request
from sqlalchemy import select

from mdmserver import workflows
from mdmserver.api.auth import current_actor, requires_scope
from mdmserver.api.jsonapi import (
    document,
    is_id,
    jsonapi_response,
    list_document,
    load_attributes,
    paginate,
    parse_list_query,
    parse_resource_body,
    request_json,
)
from mdmserver.collaborators import public_url, secret_box
from mdmserver.db import db
from mdmserver.errors import BadRequest, UnsupportedMediaType
from mdmserver.pki.service import get_ca_certificate
from mdmserver.profiles import service
from mdmserver.profiles.models import Payload, Profile
from mdmserver.profiles.schemas import (
    PayloadRelationshipsSchema,
    payload_resource,
    profile_resource,
    version_resource,
)

bp = Blueprint("profiles", __name__, url_prefix="/api/v1")

ASPEN = "application/x-apple-aspen-config"
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


def _flag(name: str) -> bool:
    raw = request.args.get(name)
    if raw is None:
        return False
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise BadRequest(f"{name} must be true or false, not {raw!r}", parameter=name)


def _only_params(*allowed: str) -> None:
    for name in request.args:
        if name not in allowed:
            raise BadRequest(f"unknown query parameter {name!r}", parameter=name)


def _revised(profile: Profile) -> dict[str, int]:
    """A new revision is installed where the profile is assigned; the counts are ``meta.assignments``."""
    return workflows.profile_revised(db.session, profile, actor=current_actor(), box=secret_box(),
                                     public_url=public_url())


def _created(profile: Profile, warnings: list[dict], status: int = 201) -> Response:
    """Commit, then answer with the stored profile (built before the commit expires the rows)."""
    db.session.flush()
    meta: dict = {"warnings": warnings}
    if profile.revision > 1:
        meta["assignments"] = _revised(profile)
    box = secret_box()
    doc = document(
        profile_resource(profile, box=box),
        meta=meta,
        included=[payload_resource(p, box=box) for p in profile.payloads],
    )
    db.session.commit()
    return jsonapi_response(doc, status=status, headers={"Location": f"/api/v1/profiles/{profile.id}"})


@bp.post("/upload/profiles")
def upload_profile():
    """Upload a configuration profile (.mobileconfig).

    multipart/form-data with the file in the field ``file``: an XML or binary property list, or a CMS
    SignedData around one (its signature is verified; an untrusted signer is a warning). ``strict=true``
    turns Apple-schema findings into a 422; ``replace=true`` makes a new revision of the profile with the
    same PayloadIdentifier instead of a 409. Answers the profile with its payloads and ``meta.warnings``.
    """
    _only_params("strict", "replace")
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType(
            f"upload the profile as multipart/form-data with a field named 'file', not {request.mimetype or 'no Content-Type'}"
        )
    upload = request.files.get("file")
    if upload is None:
        raise BadRequest("the multipart field 'file' is missing", parameter="file")
    strict, replace = _flag("strict"), _flag("replace")
    max_bytes = current_app.config.get("MAX_UPLOAD_BYTES", service.DEFAULT_MAX_BYTES)
    data = upload.stream.read(max_bytes + 1)
    trust_roots = [get_ca_certificate(db.session), *service.load_trust_file(current_app.config.get("PROFILE_TRUST_FILE"))]
    profile, warnings = service.upload_profile(
        db.session, data, box=secret_box(), strict=strict, replace=replace, max_bytes=max_bytes,
        trust_roots=trust_roots,
    )
    return _created(profile, warnings, 200 if profile.revision > 1 else 201)


@bp.get("/download/profiles/<int:profile_id>")
@requires_scope("secrets")
def download_profile(profile_id: int):
    """Download a profile, rebuilt from the database (application/x-apple-aspen-config). Scope
    ``secrets``: the profile carries its passwords, shared secrets and PKCS#12 identities.

    ``signed=true`` wraps it in the server's CMS signature; ``format=xml|binary`` overrides the uploaded
    format; ``revision=N`` gives an earlier revision.
    """
    _only_params("signed", "format", "revision")
    signed = _flag("signed")
    profile = service.get_profile(db.session, profile_id)
    fmt = request.args.get("format", profile.source_format)
    if fmt not in ("xml", "binary"):
        raise BadRequest("format must be xml or binary", parameter="format")
    revision = request.args.get("revision")
    if revision is not None:
        if not is_id(revision):
            raise BadRequest("revision must be a positive integer", parameter="revision")
        value = service.get_version(db.session, profile, int(revision), secret_box())
        body = service.render(value, fmt)
        if signed:
            body = service.sign(db.session, body, secret_box())
    else:
        body = service.profile_bytes(db.session, profile, secret_box(), signed=signed, fmt=fmt)
    response = Response(body, mimetype=ASPEN)
    response.headers["Content-Disposition"] = f'attachment; filename="{service.download_filename(profile)}"'
    return response


# --- profiles --------------------------------------------------------------------------------------


@bp.get("/profiles")
def list_profiles():
    """List profiles.

    Filters ``identifier``, ``display_name``, ``payload_type``, ``uuid``, ``signed``; ``include=payloads``;
    sort and paging as every JSON:API list.
    """
    query = parse_list_query(
        request.args,
        filters={
            "identifier": lambda v: Profile.identifier == v,
            "display_name": lambda v: Profile.display_name == v,
            "payload_type": service.has_payload_type,
            "uuid": lambda v: Profile.uuid == v,
            "signed": lambda v: Profile.signed.is_(v.lower() in _TRUE),
        },
        sorts={
            "id": Profile.id,
            "identifier": Profile.identifier,
            "display_name": Profile.display_name,
            "created_at": Profile.created_at,
            "updated_at": Profile.updated_at,
        },
        default_sort=(Profile.id.asc(),),
        includes=("payloads",),
    )
    include = "payloads" in query.include
    page = paginate(db.session, service.profiles_query(include), query)
    box = secret_box()
    if include:
        included = [payload_resource(p, box=box) for profile in page.items for p in profile.payloads]
        data = [profile_resource(p, box=box) for p in page.items]
    else:
        included = None
        refs = service.payload_refs(db.session, [p.id for p in page.items])
        data = [profile_resource(p, refs[p.id], box=box) for p in page.items]
    fields = query.fields.get("profiles")
    if fields is not None:
        for item in data:
            item["attributes"] = {k: v for k, v in item["attributes"].items() if k in fields}
    return jsonapi_response(list_document(page, data, included=included))


@bp.post("/profiles")
def create_profile():
    """Create a profile from JSON:API attributes (Apple's keys; payloads in PayloadContent), no plist needed."""
    _only_params("strict")
    strict = _flag("strict")
    _, attributes = parse_resource_body(request, "profiles")
    profile, warnings = service.create_profile_from_json(db.session, attributes, box=secret_box(), strict=strict)
    return _created(profile, warnings)


@bp.get("/profiles/<int:profile_id>")
def get_profile(profile_id: int):
    """One profile: its top-level keys and metadata; ``include=payloads`` adds the payloads."""
    _only_params("include")
    include = request.args.get("include")
    if include not in (None, "payloads"):
        raise BadRequest("include must be payloads", parameter="include")
    profile = service.get_profile(db.session, profile_id)
    box = secret_box()
    included = [payload_resource(p, box=box) for p in profile.payloads] if include else None
    return jsonapi_response(document(profile_resource(profile, box=box), included=included))


@bp.patch("/profiles/<int:profile_id>")
def patch_profile(profile_id: int):
    """Change top-level keys (null removes one); a new revision, installed where the profile is assigned."""
    profile = service.get_profile(db.session, profile_id)
    _, attributes = parse_resource_body(request, "profiles", require_id=profile_id)
    _, warnings = service.update_profile(db.session, profile, attributes, box=secret_box())
    doc = document(profile_resource(profile, box=secret_box()), meta={"warnings": warnings, "assignments": _revised(profile)})
    db.session.commit()
    return jsonapi_response(doc)


@bp.delete("/profiles/<int:profile_id>")
def delete_profile(profile_id: int):
    """Delete a profile; where it was assigned and installed, RemoveProfile is queued first."""
    profile = service.get_profile(db.session, profile_id)
    workflows.delete_profile(db.session, profile, actor=current_actor(), box=secret_box(), public_url=public_url())
    db.session.commit()
    return Response(status=204)


@bp.get("/profiles/<int:profile_id>/versions")
def list_versions(profile_id: int):
    """Earlier revisions kept by ``replace=true`` uploads (the current one is the profile itself)."""
    profile = service.get_profile(db.session, profile_id)
    return jsonapi_response(document(
        [version_resource(profile, v) for v in profile.versions],
        meta={"current_revision": profile.revision},
    ))


# --- payloads --------------------------------------------------------------------------------------


def _profile_id(value: str):
    if not is_id(value):
        raise ValueError("profile must be a profile id")
    return Payload.profile_id == int(value)


@bp.get("/payloads")
def list_payloads():
    """List payloads with their typed attributes; filters ``payload_type``, ``profile``, ``kind``, ``identifier``."""
    query = parse_list_query(
        request.args,
        filters={
            "payload_type": lambda v: Payload.payload_type == v,
            "type": lambda v: Payload.payload_type == v,
            "kind": lambda v: Payload.kind == v,
            "profile": _profile_id,
            "identifier": lambda v: Payload.identifier == v,
        },
        sorts={"id": Payload.id, "payload_type": Payload.payload_type, "position": Payload.position},
        default_sort=(Payload.id.asc(),),
    )
    page = paginate(db.session, select(Payload), query)
    box = secret_box()
    data = [payload_resource(p, box=box) for p in page.items]
    fields = query.fields.get("payloads")
    if fields is not None:
        for item in data:
            item["attributes"] = {k: v for k, v in item["attributes"].items() if k in fields}
    return jsonapi_response(list_document(page, data))


@bp.post("/payloads")
def create_payload():
    """Add a payload to the profile named in ``relationships.profile``; a new revision of that profile."""
    _, attributes = parse_resource_body(request, "payloads")
    # a 400, as before the schema: the payload names no profile to be added to
    relationships = load_attributes(PayloadRelationshipsSchema(), request_json()["data"].get("relationships", {}),
                                    "relationships", base="/data/relationships", error=BadRequest)
    profile = service.get_profile(db.session, relationships["profile"]["data"]["id"])
    payload, warnings = service.add_payload(db.session, profile, attributes, box=secret_box())
    doc = document(payload_resource(payload, box=secret_box()), meta={"warnings": warnings, "assignments": _revised(profile)})
    db.session.commit()
    return jsonapi_response(doc, status=201,
                            headers={"Location": f"/api/v1/payloads/{payload.id}"})


@bp.get("/payloads/<int:payload_id>")
def get_payload(payload_id: int):
    """One payload with its typed attributes (secrets left out)."""
    return jsonapi_response(document(payload_resource(service.get_payload(db.session, payload_id), box=secret_box())))


@bp.patch("/payloads/<int:payload_id>")
def patch_payload(payload_id: int):
    """Change a payload's keys (null removes one; PayloadType is fixed); a new revision of its profile."""
    payload = service.get_payload(db.session, payload_id)
    _, attributes = parse_resource_body(request, "payloads", require_id=payload_id)
    _, warnings = service.update_payload(db.session, payload, attributes, box=secret_box())
    doc = document(payload_resource(payload, box=secret_box()),
                   meta={"warnings": warnings, "assignments": _revised(payload.profile)})
    db.session.commit()
    return jsonapi_response(doc)


@bp.delete("/payloads/<int:payload_id>")
def delete_payload(payload_id: int):
    """Remove a payload from its profile; a new revision of that profile."""
    payload = service.get_payload(db.session, payload_id)
    profile = payload.profile
    service.delete_payload(db.session, payload, box=secret_box())
    _revised(profile)
    db.session.commit()
    return Response(status=204)
