"""Profiles: upload (plain or CMS-signed), validation, storage, versions, reconstruction, signing."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from sqlalchemy import Select, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, noload, selectinload

from mdmserver import errors
from mdmserver.audit.service import record_event
from mdmserver.db import utcnow
from mdmserver.pki import cms
from mdmserver.pki.secretbox import SecretBox
from mdmserver.pki.service import get_server_identity
from mdmserver.profiles import catalogue
from mdmserver.profiles.models import BoxSealer, Payload, Profile, ProfileVersion
from mdmserver.profiles.payload_models import PAYLOAD_CLASSES
from mdmserver.profiles.plist import (
    DEFAULT_MAX_BYTES,
    Sealer,
    check_structure,
    dump_plist,
    from_json,
    load_plist,
    pointer,
    sniff,
    strip_leading,
    to_json,
)
from mdmserver.profiles.schemas import json_to_plist, load_typed

log = logging.getLogger(__name__)

@dataclass
class ParsedProfile:
    """An uploaded profile once its envelope is removed and its plist parsed."""

    value: Any
    source_format: str
    signed: bool = False
    signer_subject: str | None = None
    signer_trusted: bool | None = None
    warnings: list[dict[str, str]] = field(default_factory=list)


def parse_upload(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, trust_roots: Sequence[x509.Certificate] = ()
) -> ParsedProfile:
    """Bytes of a .mobileconfig (XML, binary, or DER CMS SignedData around either) → ParsedProfile.

    A signature that does not verify → 422. A signer that does not chain to ``trust_roots`` is only a
    warning. Every parse failure → 4xx naming the problem.
    """
    if len(data) > max_bytes:
        raise errors.PayloadTooLarge(f"the profile is larger than {max_bytes} bytes", code="too_large")
    warnings: list[dict[str, str]] = []
    body = strip_leading(data)
    signed = False
    subject = None
    trusted = None
    if sniff(body) == "cms":
        try:
            unwrapped = cms.unwrap_signed(body, trust_roots=trust_roots, max_size=max_bytes)
        except cms.CMSError as exc:
            raise errors.UnprocessableEntity(
                f"the signed profile does not verify: {exc.reason}", code="bad_signature"
            ) from None
        signed, subject, trusted = True, unwrapped.signer_subject, unwrapped.trusted
        if not trusted:
            warnings.append({
                "code": "signature.untrusted",
                "detail": f"the signature is intact but its signer ({subject}) does not chain to a trusted root",
                "pointer": "",
            })
        body = unwrapped.content
    loaded = load_plist(body, max_bytes=max_bytes)
    check_structure(loaded.value)
    return ParsedProfile(loaded.value, loaded.format, signed, subject, trusted, warnings)


def _load_payloads(content: list[dict[str, Any]]) -> list[tuple[type[Payload], dict[str, Any], dict[str, Any]]]:
    """(model class, values the schema accepted, schema errors) of each payload, in order."""
    loaded = []
    for item in content:
        cls = payload_class(item.get("PayloadType"))
        typed, failed = load_typed(cls, item, json_mode=False)
        loaded.append((cls, typed, failed))
    return loaded


def load_trust_file(path: str | None) -> list[x509.Certificate]:
    """Extra trust roots for signed profiles: a PEM bundle (setting ``PROFILE_TRUST_FILE``), if set."""
    if not path:
        return []
    try:
        return x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError):
        log.error("profile trust file %s cannot be read as a PEM certificate bundle", path)
        raise errors.ServiceUnavailable(
            "the configured profile trust file cannot be read", code="trust_file_unreadable"
        ) from None


def schema_findings(
    profile: dict[str, Any], loaded: list[tuple[type[Payload], dict[str, Any], dict[str, Any]]] | None = None
) -> list[dict[str, str]]:
    """Apple-schema findings (catalogue and typed-schema checks), deduplicated, each with a pointer."""
    content = profile.get("PayloadContent") or []
    if loaded is None:
        loaded = _load_payloads(content)
    found = [f.as_dict() for f in catalogue.check_profile(profile)]
    seen = {f["pointer"] for f in found}
    for index, (_, _, failed) in enumerate(loaded):
        for key, messages in failed.items():
            where = pointer("PayloadContent", index, key)
            if where not in seen:
                seen.add(where)
                text = "; ".join(messages) if isinstance(messages, list) else str(messages)
                found.append({"code": "schema.wrong_type", "detail": text, "pointer": where})
    return found


def payload_class(payload_type: str | None) -> type[Payload]:
    """The model storing a PayloadType: a typed subclass, else the generic payload."""
    return PAYLOAD_CLASSES.get(payload_type or "", Payload)


def _payload_rows(
    content: list[dict[str, Any]], loaded: list[tuple[type[Payload], dict[str, Any], dict[str, Any]]],
    sealer: Sealer,
) -> list[Payload]:
    rows = []
    for position, (item, (cls, typed, _)) in enumerate(zip(content, loaded, strict=True)):
        row = cls(position=position)
        row.assign_plist(item, sealer, typed_keys=set(typed))
        rows.append(row)
    return rows


def _assign(row: Profile | Payload, values: dict[str, Any], sealer: Sealer) -> None:
    """Store a plist dictionary on a row: typed columns for the keys its schema accepts, else extras."""
    typed, _ = load_typed(type(row), {k: v for k, v in values.items() if k not in row.structural_keys},
                          json_mode=False)
    row.assign_plist(values, sealer, typed_keys=set(typed))


def _patched(model: type, current: dict[str, Any], attributes: dict[str, Any]) -> dict[str, Any]:
    """Apply a PATCH to ``current`` (in place): JSON-shaped attributes replace or add keys, null removes."""
    changes = json_to_plist(model, {k: v for k, v in attributes.items() if v is not None}, _BASE)
    for key, value in attributes.items():
        if value is None:
            current.pop(key, None)
    current.update(changes)
    return current


@contextmanager
def _unique_identifier(session: Session, identifier: Any) -> Iterator[None]:
    """Run the changes in a savepoint and flush them: when a concurrent request stored the same
    PayloadIdentifier first, the unique index refuses ours → 409 (not 500), and the session stays usable.

    ``begin_nested`` flushes what is pending before the savepoint, so the changes must be made inside.
    """
    try:
        with session.begin_nested():
            yield
            session.flush()
    except IntegrityError:
        raise errors.Conflict(
            f"another profile with PayloadIdentifier {identifier!r} was stored at the same time; retry",
            code="duplicate_identifier", pointer="/PayloadIdentifier",
        ) from None


def current_by_identifier(session: Session, identifier: str) -> Profile | None:
    return session.execute(select(Profile).where(Profile.identifier == identifier)).scalar_one_or_none()


def _archive(session: Session, profile: Profile, sealer: Sealer) -> None:
    session.add(ProfileVersion(
        profile_id=profile.id,
        revision=profile.revision,
        content={"$sealed": sealer.seal(to_json(profile.to_plist(sealer)))},
        source_format=profile.source_format,
        signer_subject=profile.signer_subject,
        created_at=profile.updated_at or profile.created_at,
    ))


def _new_revision(session: Session, profile: Profile, sealer: Sealer) -> None:
    """Keep the current content in the history and count a new revision (before any change)."""
    _archive(session, profile, sealer)
    profile.revision += 1
    profile.updated_at = utcnow()


def store_profile(
    session: Session,
    parsed: ParsedProfile,
    *,
    box: SecretBox,
    strict: bool = False,
    replace: bool = False,
    source: str = "upload",
) -> tuple[Profile, list[dict[str, str]]]:
    """Validate and store a parsed profile (its secrets sealed with ``box``); returns (profile, warnings).

    Same PayloadIdentifier as an existing profile → 409, unless ``replace``: then the existing
    profile gets a new revision and the old one is kept in ``profile_versions``.
    """
    value = parsed.value
    check_structure(value)
    content = value.get("PayloadContent") or []
    loaded = _load_payloads(content)
    warnings = parsed.warnings + schema_findings(value, loaded)
    findings = [w for w in warnings if w["code"].startswith("schema.")]
    if strict and findings:
        raise errors.UnprocessableEntity(
            f"{len(findings)} Apple-schema finding(s) and strict=true",
            code="schema_violation",
            errors=[{"detail": w["detail"], "pointer": w["pointer"], "code": w["code"]} for w in findings],
        )
    identifier = value.get("PayloadIdentifier")
    existing = current_by_identifier(session, identifier) if isinstance(identifier, str) else None
    if existing is not None and not replace:
        raise errors.Conflict(
            f"profile {existing.id} already has PayloadIdentifier {identifier!r}; "
            "upload with replace=true to make a new version of it",
            code="duplicate_identifier",
            pointer="/PayloadIdentifier",
            meta={"existing_id": str(existing.id), "existing": f"/api/v1/profiles/{existing.id}"},
        )
    sealer = BoxSealer(box)
    with _unique_identifier(session, identifier):
        if existing is not None:
            _new_revision(session, existing, sealer)
            existing.payloads.clear()
            session.flush()
            profile = existing
            action = "profile:replace"
        else:
            profile = Profile(revision=1)
            session.add(profile)
            action = "profile:create"
        _assign(profile, value, sealer)
        profile.source_format = parsed.source_format
        profile.signed = parsed.signed
        profile.signer_subject = parsed.signer_subject
        profile.signer_trusted = parsed.signer_trusted
        profile.updated_at = utcnow()
        profile.payloads.extend(_payload_rows(content, loaded, sealer))
    record_event(session, action, "profiles", profile.id, {
        "identifier": profile.identifier,
        "revision": profile.revision,
        "source": source,
        "signed": parsed.signed,
        "payload_types": [p.payload_type for p in profile.payloads],
        "warnings": len(warnings),
    })
    return profile, warnings


def upload_profile(
    session: Session,
    data: bytes,
    *,
    box: SecretBox,
    strict: bool = False,
    replace: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    trust_roots: Sequence[x509.Certificate] = (),
) -> tuple[Profile, list[dict[str, str]]]:
    parsed = parse_upload(data, max_bytes=max_bytes, trust_roots=trust_roots)
    return store_profile(session, parsed, box=box, strict=strict, replace=replace)


# --- building profiles from JSON:API documents ------------------------------------------------------

_BASE = ("data", "attributes")


def _default_payload_keys(item: dict[str, Any], profile_identifier: str, index: int) -> dict[str, Any]:
    out = dict(item)
    out.setdefault("PayloadIdentifier", f"{profile_identifier}.{item['PayloadType']}.{index}")
    out.setdefault("PayloadUUID", str(uuid.uuid4()).upper())
    out.setdefault("PayloadVersion", 1)
    return out


def plist_from_json(attributes: dict[str, Any]) -> dict[str, Any]:
    """A profile given as JSON:API attributes (Apple keys, the schemas' JSON shape) → plist dict.

    PayloadIdentifier is required; PayloadType, PayloadVersion and PayloadUUID get their usual
    values when left out, and so do each payload's identifier, UUID and version.
    """
    identifier = attributes.get("PayloadIdentifier")
    if not isinstance(identifier, str) or not identifier:
        raise errors.UnprocessableEntity(
            "PayloadIdentifier is required (a reverse-DNS string)", pointer=pointer(*_BASE, "PayloadIdentifier")
        )
    content = attributes.get("PayloadContent", [])
    if not isinstance(content, list):
        raise errors.UnprocessableEntity("PayloadContent must be an array", pointer=pointer(*_BASE, "PayloadContent"))
    top = {k: v for k, v in attributes.items() if k != "PayloadContent"}
    profile = json_to_plist(Profile, top, _BASE)
    profile.setdefault("PayloadType", "Configuration")
    profile.setdefault("PayloadVersion", 1)
    profile.setdefault("PayloadUUID", str(uuid.uuid4()).upper())
    payloads = []
    for index, item in enumerate(content):
        where = (*_BASE, "PayloadContent", index)
        if not isinstance(item, dict):
            raise errors.UnprocessableEntity("each payload must be an object", pointer=pointer(*where))
        payload_type = item.get("PayloadType")
        if not isinstance(payload_type, str) or not payload_type:
            raise errors.UnprocessableEntity(
                "each payload needs a PayloadType string", pointer=pointer(*where, "PayloadType")
            )
        values = json_to_plist(payload_class(payload_type), item, where)
        payloads.append(_default_payload_keys(values, identifier, index))
    profile["PayloadContent"] = payloads
    return profile


def create_profile_from_json(
    session: Session, attributes: dict[str, Any], *, box: SecretBox, strict: bool = False
) -> tuple[Profile, list[dict[str, str]]]:
    parsed = ParsedProfile(plist_from_json(attributes), "xml")
    return store_profile(session, parsed, box=box, strict=strict, source="api")


def update_profile(
    session: Session, profile: Profile, attributes: dict[str, Any], *, box: SecretBox
) -> tuple[Profile, list[dict[str, str]]]:
    """PATCH top-level keys (Apple keys; null removes a key). PayloadContent is edited via payloads.

    Every content change makes a new revision (the previous one is kept). Returns the Apple-schema
    findings of the result as warnings.
    """
    if "PayloadContent" in attributes:
        raise errors.UnprocessableEntity(
            "PayloadContent cannot be patched here: use /api/v1/payloads", pointer=pointer(*_BASE, "PayloadContent")
        )
    sealer = BoxSealer(box)
    values = _patched(Profile, profile.plist_values(sealer), attributes)
    new_identifier = values.get("PayloadIdentifier")
    if isinstance(new_identifier, str) and new_identifier != profile.identifier:
        other = current_by_identifier(session, new_identifier)
        if other is not None:
            raise errors.Conflict(
                f"profile {other.id} already has PayloadIdentifier {new_identifier!r}",
                pointer=pointer(*_BASE, "PayloadIdentifier"), meta={"existing_id": str(other.id)},
            )
    with _unique_identifier(session, new_identifier):
        _new_revision(session, profile, sealer)
        _assign(profile, values, sealer)
    record_event(session, "profile:update", "profiles", profile.id,
                 {"keys": sorted(attributes), "revision": profile.revision})
    return profile, _top_level_findings(profile.to_plist(sealer))


def _top_level_findings(value: dict[str, Any]) -> list[dict[str, str]]:
    top = {k: v for k, v in value.items() if k != "PayloadContent"}
    return [f.as_dict() for f in catalogue.check_profile(top) if not f.pointer.startswith("/PayloadContent")]


def _payload_findings(profile: Profile, payload: Payload, values: dict[str, Any]) -> list[dict[str, str]]:
    index = next((i for i, p in enumerate(profile.payloads) if p is payload), payload.position)
    return [f.as_dict() for f in catalogue.check_payload(values, ("PayloadContent", index))]


def delete_profile(session: Session, profile: Profile) -> None:
    record_event(session, "profile:delete", "profiles", profile.id, {"identifier": profile.identifier})
    session.delete(profile)
    session.flush()


# --- payloads ------------------------------------------------------------------------------------


def add_payload(
    session: Session, profile: Profile, attributes: dict[str, Any], *, box: SecretBox
) -> tuple[Payload, list[dict[str, str]]]:
    """Append a payload (JSON shape, same schemas as uploads); a new revision of the profile."""
    payload_type = attributes.get("PayloadType")
    if not isinstance(payload_type, str) or not payload_type:
        raise errors.UnprocessableEntity("PayloadType is required", pointer=pointer(*_BASE, "PayloadType"))
    cls = payload_class(payload_type)
    values = json_to_plist(cls, attributes, _BASE)
    position = max((p.position for p in profile.payloads), default=-1) + 1
    values = _default_payload_keys(values, profile.identifier or "payload", position)
    sealer = BoxSealer(box)
    _new_revision(session, profile, sealer)
    row = cls(position=position)
    _assign(row, values, sealer)
    profile.payloads.append(row)
    if "PayloadContent" not in (profile.key_order or []):
        profile.key_order = [*(profile.key_order or []), "PayloadContent"]
    session.flush()
    record_event(session, "profile:payload:create", "payloads", row.id, {
        "profile_id": profile.id, "payload_type": payload_type, "revision": profile.revision})
    return row, _payload_findings(profile, row, values)


def update_payload(
    session: Session, payload: Payload, attributes: dict[str, Any], *, box: SecretBox
) -> tuple[Payload, list[dict[str, str]]]:
    """PATCH a payload's keys (Apple keys, JSON shape; null removes a key). PayloadType is fixed.
    A new revision of its profile."""
    if "PayloadType" in attributes and attributes["PayloadType"] != payload.payload_type:
        raise errors.UnprocessableEntity(
            "PayloadType cannot change: delete this payload and add another", pointer=pointer(*_BASE, "PayloadType")
        )
    if "PayloadType" in attributes and attributes["PayloadType"] is None:
        raise errors.UnprocessableEntity("PayloadType cannot be removed", pointer=pointer(*_BASE, "PayloadType"))
    sealer = BoxSealer(box)
    values = _patched(type(payload), payload.plist_values(sealer), attributes)
    _new_revision(session, payload.profile, sealer)
    _assign(payload, values, sealer)
    session.flush()
    record_event(session, "profile:payload:update", "payloads", payload.id, {
        "keys": sorted(attributes), "profile_id": payload.profile_id, "revision": payload.profile.revision})
    return payload, _payload_findings(payload.profile, payload, values)


def delete_payload(session: Session, payload: Payload, *, box: SecretBox) -> None:
    """Remove a payload from its profile; a new revision of the profile."""
    profile = payload.profile
    _new_revision(session, profile, BoxSealer(box))
    record_event(session, "profile:payload:delete", "payloads", payload.id, {
        "profile_id": payload.profile_id, "payload_type": payload.payload_type, "revision": profile.revision})
    profile.payloads.remove(payload)
    session.flush()


# --- reading ---------------------------------------------------------------------------------------


def get_profile(session: Session, profile_id: int) -> Profile:
    profile = session.get(Profile, profile_id)
    if profile is None:
        raise errors.NotFound(f"no profile with id {profile_id}")
    return profile


def get_payload(session: Session, payload_id: int) -> Payload:
    payload = session.get(Payload, payload_id)
    if payload is None:
        raise errors.NotFound(f"no payload with id {payload_id}")
    return payload


def profiles_query(include_payloads: bool) -> Select:
    """Profiles, with their payload rows (typed subclasses included) only when they are included."""
    stmt = select(Profile)
    return stmt.options(selectinload(Profile.payloads)) if include_payloads else stmt.options(noload(Profile.payloads))


def payload_refs(session: Session, profile_ids: list[int]) -> dict[int, list[tuple[int, str | None, str]]]:
    """(id, PayloadType, kind) of every payload of these profiles, in order, with one query."""
    refs: dict[int, list[tuple[int, str | None, str]]] = {pid: [] for pid in profile_ids}
    if profile_ids:
        rows = session.execute(
            select(Payload.profile_id, Payload.id, Payload.payload_type, Payload.kind)
            .where(Payload.profile_id.in_(profile_ids))
            .order_by(Payload.profile_id, Payload.position)
        )
        for profile_id, payload_id, payload_type, kind in rows:
            refs[profile_id].append((payload_id, payload_type, kind))
    return refs


def has_payload_type(value: str):
    return exists().where(Payload.profile_id == Profile.id, Payload.payload_type == value)


def get_version(session: Session, profile: Profile, revision: int, box: SecretBox) -> dict[str, Any]:
    """The plist of one revision: the current one from the models, an earlier one from history."""
    if revision == profile.revision:
        return profile.to_plist(BoxSealer(box))
    row = session.execute(
        select(ProfileVersion).where(ProfileVersion.profile_id == profile.id, ProfileVersion.revision == revision)
    ).scalar_one_or_none()
    if row is None:
        raise errors.NotFound(f"profile {profile.id} has no revision {revision}", parameter="revision")
    return from_json(row.content, sealer=BoxSealer(box))


def render(value: dict[str, Any], fmt: str) -> bytes:
    return dump_plist(value, fmt)


def sign(session: Session, data: bytes, box: SecretBox) -> bytes:
    """CMS SignedData of ``data`` by the server identity (what devices see as a verified profile);
    its private key is opened with ``box``."""
    cert, key = get_server_identity(session, box)
    return cms.sign(data, cert, key)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def download_filename(profile: Profile) -> str:
    """A file name safe for Content-Disposition: ASCII letters, digits, dot, dash, underscore."""
    base = _UNSAFE.sub("-", profile.display_name or profile.identifier or "")
    base = re.sub(r"\.{2,}", ".", base).strip(".-")[:80]
    return f"{base or f'profile-{profile.id}'}.mobileconfig"


def profile_bytes(
    session: Session, profile: Profile, box: SecretBox, *, signed: bool = True, fmt: str | None = None
) -> bytes:
    """The profile as a device receives it (InstallProfile's ``Payload``): rebuilt from the models
    (secrets opened with ``box``), in the uploaded format unless ``fmt`` says otherwise, CMS-signed by
    the server identity."""
    body = render(profile.to_plist(BoxSealer(box)), fmt or profile.source_format)
    return sign(session, body, box) if signed else body
