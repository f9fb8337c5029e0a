"""What the OpenAPI document says about each endpoint, declared beside the package's schemas.

Every package's ``schemas.py`` holds an ``OPENAPI`` mapping of endpoint name (``blueprint.function``) to
an :class:`ApiDoc`: the request body's schema, the response's shape and, for lists, the query parameters.
``mdmserver.ops.openapi`` joins these with the URL map; keying by endpoint name (not by module) lets a
view move between packages without its description going stale, and a test fails when an endpoint has
none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from marshmallow import RAISE, Schema, fields

from mdmserver.api.jsonapi import is_id


class Body(StrEnum):
    """How a write operation's body is shaped."""

    RESOURCE = "resource"  # {"data": {"type": …, "id"?: …, "attributes": <schema>}}
    JSON = "json"  # a plain JSON object described by the schema
    MULTIPART = "multipart"  # a file upload (multipart/form-data), or the raw file
    PLIST = "plist"  # a device's property list
    PKI_MESSAGE = "pki_message"  # a SCEP pkiMessage (DER CMS), application/x-pki-message
    NONE = "none"  # no body is read (an empty JSON object may be sent)


class Reply(StrEnum):
    """What a successful answer carries."""

    RESOURCE = "resource"  # {"data": {resource}}
    COLLECTION = "collection"  # {"data": [resources], "meta": {"total"}} without paging
    LIST = "list"  # a paginated JSON:API list: data, links, meta.total (and facets on device lists)
    META = "meta"  # {"data": null, "meta": {…}} or a plain JSON object of counts
    EMPTY = "empty"  # 204 No Content
    JSON = "json"  # a plain JSON object (health, Mender-compatible routes)
    PLIST = "plist"  # an XML property list (device protocol)
    FILE = "file"  # a download (PEM, DER, mobileconfig)
    TEXT = "text"  # text/plain (metrics)
    HTML = "html"  # a web page


@dataclass(frozen=True)
class ApiDoc:
    """The OpenAPI facts about one endpoint that the URL map and docstring cannot tell."""

    body: type[Schema] | Mapping[str, Any] | None = None  # a schema, or a JSON Schema object
    body_kind: Body = Body.RESOURCE
    type: str | None = None  # the JSON:API resource type of the body and the answer
    plain_too: bool = False  # a RESOURCE body whose attributes may also be sent as a plain JSON object
    body_optional: bool = False  # the body may be left out (then no Content-Type is needed either)
    relationships: type[Schema] | None = None  # a RESOURCE body's required ``data.relationships``
    reply: Reply = Reply.RESOURCE
    reply_schema: type[Schema] | None = None  # the resource's attributes, where a schema describes them
    status: int = 200  # the success status of write operations (201 for creations)
    filters: tuple[str, ...] = ()  # filter[<name>] values a list accepts
    open_filters: bool = False  # a list that also takes filter[custom.<name>] and stored filter names
    sorts: tuple[str, ...] = ()
    paged: bool = False
    facets: bool = False
    fields: bool = False  # fields[<type>] sparse fieldsets
    #: other query parameters: the schema the view loads them with, or (for views that read one or two
    #: by hand) name → description
    query: type[Schema] | Mapping[str, str] = field(default_factory=dict)
    errors: tuple[int, ...] = ()  # statuses beyond the ones every operation of its kind can answer


def query_parameters(doc: ApiDoc) -> list[tuple[str, str, bool]]:
    """(name, description, required) of the other query parameters an endpoint takes."""
    if isinstance(doc.query, type) and issubclass(doc.query, Schema):
        return [(f.data_key or name, f.metadata.get("description", ""), f.required)
                for name, f in doc.query().fields.items()]
    return [(name, description, False) for name, description in doc.query.items()]


def listing(type_: str, *, filters: tuple[str, ...] = (), sorts: tuple[str, ...] = (), **extra) -> ApiDoc:
    """A paginated JSON:API list."""
    return ApiDoc(type=type_, reply=Reply.LIST, filters=filters, sorts=sorts, paged=True, **extra)


class EmptyBodySchema(Schema):
    """No body is read; send nothing or ``{}``."""

    class Meta:
        unknown = RAISE


class NameField(fields.Field):
    """A device named by its id, UDID or serial number: a non-blank string or an integer (not a boolean).
    Loads as given; ``selection.resolve`` looks the names up."""

    default_error_messages = {"invalid": "a device is named by its id, UDID or serial number"}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {"oneOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]})
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | int:
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            raise self.make_error("invalid")
        return value


class IdField(fields.Field):
    """A row id, given as an integer or as a string of digits; loads as an ``int``."""

    default_error_messages = {"invalid": "expected an id (an integer or a string of digits)"}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {"oneOf": [{"type": "string", "pattern": "^[0-9]+$"}, {"type": "integer"}]})
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
        if not is_id(text):
            raise self.make_error("invalid")
        return int(text)


class StrictBoolean(fields.Boolean):
    """``true`` or ``false`` only (marshmallow's Boolean also takes ``"yes"``, ``1``, ``"on"``…)."""

    default_error_messages = {"invalid": "expected true or false"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class CommaList(fields.Field):
    """A query parameter listing values separated by commas (``?ids=1,2,3``), each loaded by ``inner``;
    an empty list is refused."""

    default_error_messages = {"empty": "list at least one value"}

    def __init__(self, inner: fields.Field, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = inner

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        items = [part.strip() for part in str(value).split(",") if part.strip()]
        if not items:
            raise self.make_error("empty")
        return [self.inner.deserialize(item) for item in items]


class LinkageSchema(Schema):
    """A JSON:API resource identifier: ``{"type": …, "id": …}``; a subclass pins ``type`` to its resource's
    (``fields.String(validate=validate.Equal("devices"))``)."""

    class Meta:
        unknown = RAISE

    type = fields.String(required=True)
    id = NameField(required=True)
