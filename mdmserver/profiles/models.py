"""Configuration profiles and their payloads, stored so the profile can be rebuilt exactly.

Every plist key of a profile or payload is either a typed column (when Apple documents the key and
the value has the documented type) or an entry of ``extras`` in the lossless JSON form of
:mod:`mdmserver.profiles.plist`. ``key_order`` keeps the author's key order, so :meth:`to_plist`
gives back the uploaded dictionary: same keys, same types, same values, same order.

Typed payload subclasses (one joined table each) are generated into ``payload_models.py``.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime
from typing import Any, ClassVar, NamedTuple

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, orm_insert_sentinel, relationship

from mdmserver.db import UTCDateTime, db, utcnow
from mdmserver.errors import ServiceUnavailable
from mdmserver.pki.secretbox import SecretBox, SecretBoxError
from mdmserver.profiles.plist import Sealer, from_json, to_json
from mdmserver.protocol.secrets import is_secret

_INT64 = (-(2**63), 2**63 - 1)
_SEAL_CONTEXT = b"mdmserver.profiles.secret"


class BoxSealer:
    """Seals the secret values of profiles and payloads with a secret box.

    The models never find the box themselves: whoever stores or reads a profile's values (the
    profiles service, the JSON:API schemas) passes ``BoxSealer(box)`` with the box it was given."""

    def __init__(self, box: SecretBox) -> None:
        self.box = box

    def seal(self, value: Any) -> str:
        blob = self.box.encrypt(json.dumps(value).encode(), associated_data=_SEAL_CONTEXT)
        return base64.b64encode(blob).decode("ascii")

    def unseal(self, token: str) -> Any:
        try:
            plain = self.box.decrypt(base64.b64decode(token), associated_data=_SEAL_CONTEXT)
        except (SecretBoxError, ValueError):
            raise ServiceUnavailable(
                "a profile secret cannot be decrypted with the configured secret key", code="secret_unreadable"
            ) from None
        return json.loads(plain)


class PlistField(NamedTuple):
    """One plist key mapped to a column: Apple's key, the attribute name, the catalogue type."""

    key: str
    attr: str
    kind: str  # string integer boolean real date data array dictionary any
    secret: bool = False


def column_fits(kind: str, value: Any) -> bool:
    """Whether ``value`` can live in a column of this kind and come back with the same type."""
    if kind == "string":
        return type(value) is str and "\x00" not in value
    if kind == "integer":
        return type(value) is int and _INT64[0] <= value <= _INT64[1]
    if kind == "boolean":
        return type(value) is bool
    if kind == "real":
        return type(value) is float and math.isfinite(value)
    if kind == "date":
        return isinstance(value, datetime)
    if kind == "data":
        return type(value) is bytes
    if kind == "array":
        return type(value) is list
    if kind == "dictionary":
        return type(value) is dict
    return kind == "any"


def _to_column(kind: str, value: Any, sealer: Sealer) -> Any:
    if kind == "date":
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value
    if kind in ("array", "dictionary", "any"):
        return to_json(value, sealer)
    return value


def _from_column(kind: str, value: Any, sealer: Sealer) -> Any:
    if kind == "date":
        return value.astimezone(UTC).replace(tzinfo=None)
    if kind in ("array", "dictionary", "any"):
        return from_json(value, sealer=sealer)
    return value


class PlistMapped:
    """Mixin: typed columns + ``extras`` + ``key_order`` ⇄ one plist dictionary."""

    plist_fields: ClassVar[tuple[PlistField, ...]] = ()
    #: Keys handled by the owner itself (a profile's PayloadContent), never stored as values.
    structural_keys: ClassVar[frozenset[str]] = frozenset()
    @staticmethod
    def is_secret_key(key: str, value: Any, payload_type: Any = None) -> bool:
        """Whether a top-level key's value is sealed at rest and hidden from JSON:API output (the
        secrets policy, with the payload type for keys secret only there: PKCS#12 content...)."""
        return is_secret(key, value, payload_type=payload_type)

    extras: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    key_order: Mapped[list[str]] = mapped_column(JSON, default=list)

    @classmethod
    def field_by_key(cls) -> dict[str, PlistField]:
        cached = cls.__dict__.get("_field_by_key")
        if cached is None:
            cached = {f.key: f for f in cls.plist_fields}
            cls._field_by_key = cached
        return cached

    def assign_plist(self, values: dict[str, Any], sealer: Sealer, typed_keys: set[str] | None = None) -> None:
        """Store a plist dictionary: typed columns where the value fits, ``extras`` for the rest.

        ``typed_keys`` are the keys the marshmallow schema accepted; others never go to a column.
        Secret values are sealed with ``sealer``.
        """
        fields = self.field_by_key()
        payload_type = values.get("PayloadType")
        extras: dict[str, Any] = {}
        if self.key_order is not None:  # values were assigned before: clear the old ones
            for f in self.plist_fields:
                if not f.secret and getattr(self, f.attr) is not None:
                    setattr(self, f.attr, None)
        for key, value in values.items():
            if key in self.structural_keys:
                continue
            f = fields.get(key)
            if self.is_secret_key(key, value, payload_type):
                extras[key] = {"$sealed": sealer.seal(to_json(value))}
            elif (
                f is not None and not f.secret and (typed_keys is None or key in typed_keys)
                and column_fits(f.kind, value)
            ):
                setattr(self, f.attr, _to_column(f.kind, value, sealer))
            else:
                extras[key] = to_json(value, sealer)
        self.extras = extras
        self.key_order = list(values)

    def plist_values(self, sealer: Sealer) -> dict[str, Any]:
        """The stored keys and values in the author's order (structural keys left to the owner);
        sealed secrets opened with ``sealer``."""
        fields = self.field_by_key()
        extras = self.extras or {}
        out: dict[str, Any] = {}
        for key in self.key_order or []:
            if key in self.structural_keys:
                out[key] = None  # placeholder keeping the position; the owner fills it
            elif key in extras:
                out[key] = from_json(extras[key], sealer=sealer)
            else:
                f = fields[key]
                out[key] = _from_column(f.kind, getattr(self, f.attr), sealer)
        return out


class Profile(PlistMapped, db.Model):
    """A configuration profile (the outer ``Configuration`` dictionary); the current revision."""

    __tablename__ = "profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identifier: Mapped[str | None] = mapped_column(Text, unique=True)
    uuid: Mapped[str | None] = mapped_column(Text)
    payload_type: Mapped[str | None] = mapped_column(Text)
    payload_version: Mapped[int | None] = mapped_column(BigInteger)
    display_name: Mapped[str | None] = mapped_column(Text, index=True)
    description: Mapped[str | None] = mapped_column(Text)
    organization: Mapped[str | None] = mapped_column(Text)
    scope: Mapped[str | None] = mapped_column(Text)
    removal_disallowed: Mapped[bool | None] = mapped_column(Boolean)
    has_removal_passcode: Mapped[bool | None] = mapped_column(Boolean)
    is_encrypted: Mapped[bool | None] = mapped_column(Boolean)
    removal_date: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expiration_date: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duration_until_removal: Mapped[float | None] = mapped_column(Float)
    target_device_type: Mapped[int | None] = mapped_column(BigInteger)
    consent_text: Mapped[Any | None] = mapped_column(JSON)

    # Server-side metadata.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    source_format: Mapped[str] = mapped_column(String(16), default="xml")
    signed: Mapped[bool] = mapped_column(Boolean, default=False)
    signer_subject: Mapped[str | None] = mapped_column(Text)
    signer_trusted: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    payloads: Mapped[list[Payload]] = relationship(
        back_populates="profile",
        order_by="Payload.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    versions: Mapped[list[ProfileVersion]] = relationship(
        back_populates="profile",
        order_by="ProfileVersion.revision",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    structural_keys = frozenset({"PayloadContent"})
    plist_fields = (
        PlistField("PayloadIdentifier", "identifier", "string"),
        PlistField("PayloadUUID", "uuid", "string"),
        PlistField("PayloadType", "payload_type", "string"),
        PlistField("PayloadVersion", "payload_version", "integer"),
        PlistField("PayloadDisplayName", "display_name", "string"),
        PlistField("PayloadDescription", "description", "string"),
        PlistField("PayloadOrganization", "organization", "string"),
        PlistField("PayloadScope", "scope", "string"),
        PlistField("PayloadRemovalDisallowed", "removal_disallowed", "boolean"),
        PlistField("HasRemovalPasscode", "has_removal_passcode", "boolean"),
        PlistField("IsEncrypted", "is_encrypted", "boolean"),
        PlistField("RemovalDate", "removal_date", "date"),
        PlistField("PayloadExpirationDate", "expiration_date", "date"),
        PlistField("DurationUntilRemoval", "duration_until_removal", "real"),
        PlistField("TargetDeviceType", "target_device_type", "integer"),
        PlistField("ConsentText", "consent_text", "dictionary"),
    )

    def to_plist(self, sealer: Sealer) -> dict[str, Any]:
        """The profile as a plist dictionary, rebuilt from the columns and the payload rows."""
        values = self.plist_values(sealer)
        if "PayloadContent" in values:
            values["PayloadContent"] = [payload.to_plist(sealer) for payload in self.payloads]
        return values


class ProfileVersion(db.Model):
    """An earlier revision of a profile, kept when an upload with ``replace=true`` supersedes it."""

    __tablename__ = "profile_versions"
    __table_args__ = (UniqueConstraint("profile_id", "revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    #: The whole profile of that revision in the lossless JSON form, sealed as one secret (it may
    #: hold passwords and keys, and nothing queries it).
    content: Mapped[Any] = mapped_column(JSON)
    source_format: Mapped[str] = mapped_column(String(16))
    signer_subject: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    replaced_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    profile: Mapped[Profile] = relationship(back_populates="versions")


class Payload(PlistMapped, db.Model):
    """One item of PayloadContent. The base class stores any payload type losslessly (the generic
    payload); typed subclasses add one column per documented key."""

    __tablename__ = "payloads"
    __table_args__ = (
        UniqueConstraint("profile_id", "position"),
        Index("ix_payloads_payload_type_profile_id", "payload_type", "profile_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    payload_type: Mapped[str | None] = mapped_column(Text)
    identifier: Mapped[str | None] = mapped_column(Text)
    uuid: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int | None] = mapped_column(BigInteger)
    display_name: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    organization: Mapped[str | None] = mapped_column(Text)

    #: Lets SQLite batch the INSERTs of many payloads (RETURNING order needs a sentinel there).
    _sentinel: Mapped[int | None] = orm_insert_sentinel()

    profile: Mapped[Profile] = relationship(back_populates="payloads")

    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "generic"}

    payload_types: ClassVar[tuple[str, ...]] = ()
    plist_fields = (
        PlistField("PayloadType", "payload_type", "string"),
        PlistField("PayloadIdentifier", "identifier", "string"),
        PlistField("PayloadUUID", "uuid", "string"),
        PlistField("PayloadVersion", "version", "integer"),
        PlistField("PayloadDisplayName", "display_name", "string"),
        PlistField("PayloadDescription", "description", "string"),
        PlistField("PayloadOrganization", "organization", "string"),
    )

    def to_plist(self, sealer: Sealer) -> dict[str, Any]:
        return self.plist_values(sealer)


# Register the generated typed payload tables with the metadata (after Payload exists).
from mdmserver.profiles import payload_models as _payload_models  # noqa: E402,F401
