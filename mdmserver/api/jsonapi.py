"""JSON:API 1.0 helpers shared by every resource: list queries, pagination in SQL, documents, bodies."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask import Request, Response, json, request
from marshmallow import ValidationError
from marshmallow import fields as ma_fields
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from mdmserver.db import isoformat
from mdmserver.errors import (
    AppError,
    BadRequest,
    Conflict,
    UnprocessableEntity,
    UnsupportedMediaType,
)
from mdmserver.protocol.plist import TreeError, check_tree

JSONAPI = "application/vnd.api+json"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

_FILTER_PARAM = re.compile(r"^filter\[([A-Za-z0-9_.\-]+)\]$")
_PAGE_PARAM = re.compile(r"^page\[([a-z]+)\]$")
_FIELDS_PARAM = re.compile(r"^fields\[([A-Za-z0-9_\-]+)\]$")

FilterFn = Callable[[str], ColumnElement[bool]]

MAX_ID = 2**31 - 1
#: Highest ``page[number]``: with ``page[size]`` ≤ 500 the SQL OFFSET stays far inside a 64-bit integer
#: (a 20-digit page number overflowed SQLite's INTEGER into a 500).
MAX_PAGE_NUMBER = MAX_ID
#: Deepest nesting of arrays and objects accepted in a JSON request body (deeper → 400).
MAX_JSON_DEPTH = 64
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def is_id(text: str) -> bool:
    """ASCII digits that fit an integer primary key (``²`` or 40 digits are not ids)."""
    return text.isascii() and text.isdigit() and len(text) <= 10 and int(text) <= MAX_ID


def parse_bool(value: str) -> bool:
    """A boolean query value (true/false, 1/0, yes/no); ValueError otherwise."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected true or false, not {value!r}")


class UTCField(ma_fields.Field):
    """A marshmallow field that dumps a datetime as ISO 8601 UTC with ``Z``."""

    def _serialize(self, value, attr, obj, **kwargs):
        return isoformat(value)


@dataclass
class ListQuery:
    filters: list[ColumnElement[bool]] = field(default_factory=list)
    filter_values: dict[str, str] = field(default_factory=dict)
    order_by: list[ColumnElement[Any]] = field(default_factory=list)
    number: int = 1
    size: int = DEFAULT_PAGE_SIZE
    include: set[str] = field(default_factory=set)
    fields: dict[str, set[str]] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Page:
    items: list[Any]
    total: int
    number: int
    size: int

    @property
    def last(self) -> int:
        return max(1, math.ceil(self.total / self.size))


def _int_param(name: str, raw: str, low: int, high: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, not {raw!r}", parameter=name) from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadRequest(f"{name} must be {bound}", parameter=name)
    return value


def parse_list_query(
    args: Mapping[str, str],
    *,
    filters: Mapping[str, FilterFn] | None = None,
    sorts: Mapping[str, ColumnElement[Any]] | None = None,
    default_sort: Sequence[ColumnElement[Any]] = (),
    includes: Sequence[str] = (),
    extra_params: Sequence[str] = (),
    dynamic_filters: Mapping[str, Callable[[str, str], ColumnElement[bool]]] | None = None,
) -> ListQuery:
    """Validate JSON:API query parameters against the resource's whitelist.

    Unknown filters or sort fields are refused (400): silently ignoring a filter could turn a filtered
    bulk operation into one over every row. ``dynamic_filters`` maps a prefix such as ``custom.`` to a
    function of (suffix, value) for open-ended filter names.
    """
    filters = filters or {}
    sorts = sorts or {}
    dynamic_filters = dynamic_filters or {}
    query = ListQuery()
    for name in args:
        values = args.getlist(name) if hasattr(args, "getlist") else [args[name]]
        raw = values[-1]
        if match := _FILTER_PARAM.match(name):
            key = match.group(1)
            build = filters.get(key)
            if build is None:
                for prefix, dynamic in dynamic_filters.items():
                    if key.startswith(prefix) and len(key) > len(prefix):
                        suffix = key[len(prefix):]

                        def build(value, _d=dynamic, _s=suffix):
                            return _d(_s, value)

                        break
            if build is None:
                allowed = ", ".join(sorted(filters)) or "none"
                raise BadRequest(f"unknown filter {key!r}; allowed: {allowed}", parameter=name)
            try:
                query.filters.append(build(raw))
            except ValueError as exc:
                raise BadRequest(f"bad value for {name}: {exc}", parameter=name) from None
            query.filter_values[key] = raw
        elif match := _PAGE_PARAM.match(name):
            key = match.group(1)
            if key == "number":
                query.number = _int_param(name, raw, 1, MAX_PAGE_NUMBER)
            elif key == "size":
                query.size = _int_param(name, raw, 1, MAX_PAGE_SIZE)
            else:
                raise BadRequest(f"unknown paging parameter {name!r}", parameter=name)
        elif name == "sort":
            for part in filter(None, (p.strip() for p in raw.split(","))):
                descending = part.startswith("-")
                key = part.lstrip("-")
                column = sorts.get(key)
                if column is None:
                    allowed = ", ".join(sorted(sorts)) or "none"
                    raise BadRequest(f"cannot sort by {key!r}; allowed: {allowed}", parameter="sort")
                query.order_by.append(column.desc() if descending else column.asc())
        elif name == "include":
            requested = {p.strip() for p in raw.split(",") if p.strip()}
            unknown = requested - set(includes)
            if unknown:
                raise BadRequest(f"cannot include {', '.join(sorted(unknown))}", parameter="include")
            query.include = requested
        elif match := _FIELDS_PARAM.match(name):
            query.fields[match.group(1)] = {p.strip() for p in raw.split(",") if p.strip()}
        elif name in extra_params:
            query.extra[name] = raw
        else:
            raise BadRequest(f"unknown query parameter {name!r}", parameter=name)
    if not query.order_by:
        query.order_by = list(default_sort)
    return query


def refuse_query_params(args: Mapping[str, str], allowed: Sequence[str] = ()) -> None:
    """400 for any query parameter not in ``allowed``: a list that has no paging or filters says so
    rather than answering every row to ``page[number]=…`` or ``filter[…]=…``."""
    for name in args:
        if name not in allowed:
            raise BadRequest(f"unknown query parameter {name!r}", parameter=name)


def paginate(session: Session, stmt: Select, query: ListQuery, *, scalars: bool = True) -> Page:
    """Apply the query's filters, order and page to ``stmt`` and run it with one COUNT and one SELECT."""
    for condition in query.filters:
        stmt = stmt.where(condition)
    count_stmt = select(func.count()).select_from(stmt.order_by(None).subquery())
    total = session.execute(count_stmt).scalar_one()
    paged = stmt.order_by(*query.order_by).limit(query.size).offset((query.number - 1) * query.size)
    result = session.execute(paged)
    items = list(result.scalars()) if scalars else list(result)
    return Page(items=items, total=total, number=query.number, size=query.size)


def resource(
    type_: str,
    id_: Any,
    attributes: dict[str, Any],
    relationships: dict[str, Any] | None = None,
    links: dict[str, str] | None = None,
    fields: set[str] | None = None,
) -> dict[str, Any]:
    """A JSON:API resource object; ``fields`` applies a sparse fieldset."""
    if fields is not None:
        attributes = {k: v for k, v in attributes.items() if k in fields}
    obj: dict[str, Any] = {"type": type_, "id": str(id_), "attributes": attributes}
    if relationships:
        obj["relationships"] = relationships
    if links:
        obj["links"] = links
    return obj


def document(
    data: Any, meta: dict[str, Any] | None = None, included: list[dict] | None = None,
    links: dict[str, str] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {"data": data}
    if included is not None:
        doc["included"] = included
    if meta:
        doc["meta"] = meta
    if links:
        doc["links"] = links
    doc["jsonapi"] = {"version": "1.0"}
    return doc


def _page_link(req: Request, number: int, size: int) -> str:
    params = [(k, v) for k, v in req.args.items(multi=True) if not k.startswith("page[")]
    params += [("page[number]", str(number)), ("page[size]", str(size))]
    return f"{req.base_url}?{urlencode(params)}"


def list_document(
    page: Page, data: list[dict], req: Request | None = None, meta: dict[str, Any] | None = None,
    included: list[dict] | None = None,
) -> dict[str, Any]:
    req = req or request
    links = {
        "self": _page_link(req, page.number, page.size),
        "first": _page_link(req, 1, page.size),
        "last": _page_link(req, page.last, page.size),
        "prev": _page_link(req, page.number - 1, page.size) if page.number > 1 else None,
        "next": _page_link(req, page.number + 1, page.size) if page.number < page.last else None,
    }
    return document(data, meta={"total": page.total, **(meta or {})}, included=included, links=links)


def jsonapi_response(doc: dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = "" if doc is None else json.dumps(doc)
    response = Response(body, status=status, mimetype=JSONAPI)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def plain_response(body: Any, status: int = 200) -> Response:
    """A plain JSON answer (the compatibility shapes, bulk results, assignment counts)."""
    return Response(json.dumps(body), status=status, mimetype="application/json")


def has_body(req: Request | None = None) -> bool:
    """Whether the request carries a body (some bytes, or a declared length): a route whose body is
    optional reads none when this is false, whatever the Content-Type (or its absence)."""
    req = req or request
    return bool(req.get_data(cache=True)) or bool(req.content_length)


def request_json(req: Request | None = None, *, text_plain: bool = False) -> Any:
    """The request body as JSON; 415 for another media type, 400 for bad JSON. ``text_plain``: a JSON
    body labelled ``text/plain`` is read too (a compatibility route whose documented examples send it)."""
    req = req or request
    mimetype = req.mimetype or ""
    plain = text_plain and mimetype == "text/plain"
    if mimetype not in ("application/json", JSONAPI) and not mimetype.endswith("+json") and not plain:
        raise UnsupportedMediaType(
            f"expected a JSON body ({JSONAPI} or application/json), got {mimetype or 'no Content-Type'}"
        )
    data = json_body(req, force=plain)
    if data is None:
        raise BadRequest("the request body is not valid JSON", pointer="")
    return data


def json_body(req: Request, *, force: bool = False) -> Any:
    """The body parsed as JSON (None when it is not JSON; ``force``: whatever its media type); 400 when
    nested deeper than ``MAX_JSON_DEPTH`` or larger than the walk budget, so no recursive code below
    ever sees it."""
    try:
        data = req.get_json(silent=True, force=force)
    except RecursionError:  # the json module's own limit, which ``silent`` does not cover
        raise BadRequest(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels", pointer="") from None
    try:
        check_tree(data, max_depth=MAX_JSON_DEPTH)
    except TreeError as exc:
        raise BadRequest(f"the JSON body is refused: {exc.message}", pointer="") from None
    return data


def parse_resource_body(req: Request | None, type_: str, *, require_id: Any = None) -> tuple[str | None, dict]:
    """Return (id, attributes) of a JSON:API ``{"data": {"type", "id"?, "attributes"}}`` body.

    With ``require_id`` (the resource named by the URL), a ``data.id`` that is given must equal it (409).
    """
    return _resource_document(request_json(req), type_, require_id)


def parse_attributes_body(req: Request | None, type_: str) -> tuple[dict, str]:
    """(attributes, pointer base) of a JSON:API resource body, or of a plain JSON object (one without
    ``data``) that is the attributes themselves (base ``""``)."""
    body = request_json(req)
    if not isinstance(body, dict):
        raise UnprocessableEntity("the body must be a JSON object", pointer="")
    if "data" not in body:
        return body, ""
    return _resource_document(body, type_, None)[1], "/data/attributes"


def _resource_document(body: Any, type_: str, require_id: Any) -> tuple[str | None, dict]:
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise UnprocessableEntity("the body must be a JSON:API document with a data object", pointer="/data")
    data = body["data"]
    if data.get("type") != type_:
        raise Conflict(f"data.type must be {type_!r}", pointer="/data/type")
    attributes = data.get("attributes", {})
    if not isinstance(attributes, dict):
        raise UnprocessableEntity("attributes must be an object", pointer="/data/attributes")
    id_ = data.get("id")
    if require_id is not None and id_ is not None and str(id_) != str(require_id):
        raise Conflict("data.id does not match the URL", pointer="/data/id")
    return (None if id_ is None else str(id_)), attributes


def load_body(
    schema: Any, what: str, req: Request | None = None, *, optional: bool = False, text_plain: bool = False
) -> Any:
    """A plain JSON object body loaded by ``schema``: 415/400 as :func:`request_json`, 422 ``invalid
    <what>`` listing every fault with its pointer from the body's root. ``optional``: an empty body is
    ``{}``; ``text_plain``: see :func:`request_json`."""
    req = req or request
    body = {} if optional and not has_body(req) else request_json(req, text_plain=text_plain)
    if not isinstance(body, dict):
        raise UnprocessableEntity("the body must be a JSON object", pointer="")
    return load_attributes(schema, body, what, base="")


def load_query(schema: Any, args: Mapping[str, str], what: str = "query parameters") -> Any:
    """Query parameters loaded by ``schema`` (unknown ones refused): 400 listing every fault with its
    parameter."""
    try:
        return schema.load(dict(args))
    except ValidationError as exc:
        faults = [{"detail": "; ".join(_texts(messages)), "parameter": name}
                  for name, messages in exc.messages.items()]
        raise BadRequest(f"invalid {what}", errors=faults) from None


def _texts(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for value in node.values() for text in _texts(value)]
    return [text for item in node for text in _texts(item)]


def load_attributes(
    schema: Any, attributes: Any, what: str, base: str = "/data/attributes",
    error: type[AppError] = UnprocessableEntity,
) -> Any:
    """``schema.load(attributes)``; a validation failure is one 422 (or ``error``) ``invalid <what>``
    listing every fault with its JSON pointer under ``base``."""
    try:
        return schema.load(attributes)
    except ValidationError as exc:
        raise error(f"invalid {what}", errors=marshmallow_errors(exc.messages, base)) from None


def marshmallow_errors(messages: Any, base: str = "/data/attributes") -> list[dict[str, str]]:
    """Flatten marshmallow's nested error messages into JSON:API faults with pointers."""
    faults: list[dict[str, str]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                # ``_schema``: a fault of the object itself (not a dict, or a rule over several members)
                walk(value, path if key == "_schema" else f"{path}/{_escape(str(key))}")
        elif isinstance(node, list) and all(isinstance(item, str) for item in node):
            for item in node:
                faults.append({"detail": item, "pointer": path})
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{path}/{index}")
        else:
            faults.append({"detail": str(node), "pointer": path})

    walk(messages, base)
    return faults


def _escape(token: str) -> str:
    """One JSON pointer reference token (RFC 6901): ``~`` and ``/`` escaped."""
    return token.replace("~", "~0").replace("/", "~1")
