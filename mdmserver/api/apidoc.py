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


class Body(StrEnum):
    """How a write operation's body is shaped."""

    RESOURCE = "resource"  # {"data": {"type": …, "id"?: …, "attributes": <schema>}}
    JSON = "json"  # a plain JSON object described by the schema
    MULTIPART = "multipart"  # a file upload (multipart/form-data), or the raw file
    PLIST = "plist"  # a device's property list
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
    reply: Reply = Reply.RESOURCE
    reply_schema: type[Schema] | None = None  # the resource's attributes, where a schema describes them
    status: int = 200  # the success status of write operations (201 for creations)
    filters: tuple[str, ...] = ()  # filter[<name>] values a list accepts
    open_filters: bool = False  # a list that also takes filter[custom.<name>] and stored filter names
    sorts: tuple[str, ...] = ()
    paged: bool = False
    facets: bool = False
    fields: bool = False  # fields[<type>] sparse fieldsets
    query: Mapping[str, str] = field(default_factory=dict)  # other query parameters: name → description
    errors: tuple[int, ...] = ()  # statuses beyond the ones every operation of its kind can answer


def listing(type_: str, *, filters: tuple[str, ...] = (), sorts: tuple[str, ...] = (), **extra) -> ApiDoc:
    """A paginated JSON:API list."""
    return ApiDoc(type=type_, reply=Reply.LIST, filters=filters, sorts=sorts, paged=True, **extra)


class EmptyBodySchema(Schema):
    """No body is read; send nothing or ``{}``."""

    class Meta:
        unknown = RAISE


class LinkageSchema(Schema):
    """A JSON:API resource identifier: ``{"type": …, "id": …}``."""

    type = fields.String(required=True)
    id = fields.String(required=True, metadata={"description": "an id (a number as a string or an integer)"})
