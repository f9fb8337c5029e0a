"""The OpenAPI 3 document, built with apispec from Flask's URL map and the packages' schemas.

Every route of the URL map becomes an operation (so none can be left out); what the map cannot tell — the
body's schema, the answer's shape, a list's query parameters — comes from the ``OPENAPI`` registry in each
package's ``schemas.py`` (see ``mdmserver.api.apidoc``), keyed by endpoint name. Summaries and
descriptions come from the views' docstrings; scopes from the app's own scope declaration.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from collections import Counter
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from werkzeug.routing import Rule

import mdmserver
from mdmserver import __version__
from mdmserver.api.apidoc import ApiDoc, Body, EmptyBodySchema, Reply, query_parameters
from mdmserver.api.auth import is_protected, required_scope
from mdmserver.api.jsonapi import JSONAPI, MAX_ID, MAX_PAGE_NUMBER, MAX_PAGE_SIZE

_CONVERTER = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
_TYPES = {
    "int": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
    "float": {"type": "number"},
    "path": {"type": "string"},
    "uuid": {"type": "string", "format": "uuid"},
}
_WRITES = {"POST", "PUT", "PATCH"}
_ERROR_TEXT = {
    400: "Bad request: malformed JSON or an unknown or invalid query parameter",
    401: "No bearer token, or one that is not valid",
    403: "The token lacks the operation's scope (device routes: the device is not allowed)",
    404: "No such resource",
    406: "None of the offered formats is acceptable",
    409: "The body's type or id does not match the URL, or the change conflicts with the current state",
    413: "The request body is too large",
    415: "The body is not JSON",
    422: "The body or a value in it is invalid; each error points at the offending member",
    429: "Too many enrollment requests from this client address; retry after Retry-After seconds",
}


def openapi_path(rule: str) -> str:
    return _CONVERTER.sub(lambda m: "{" + m.group(2) + "}", rule)


def endpoint_docs() -> dict[str, ApiDoc]:
    """Every package's ``OPENAPI`` registry, merged (an endpoint declared twice is a programming error)."""
    docs: dict[str, ApiDoc] = {}
    for info in sorted(pkgutil.iter_modules(mdmserver.__path__), key=lambda i: i.name):
        if not info.ispkg or importlib.util.find_spec(f"mdmserver.{info.name}.schemas") is None:
            continue
        registry = getattr(importlib.import_module(f"mdmserver.{info.name}.schemas"), "OPENAPI", {})
        for endpoint, doc in registry.items():
            if endpoint in docs:
                raise RuntimeError(f"OpenAPI metadata for {endpoint!r} is declared twice")
            docs[endpoint] = doc
    return docs


def documented_rules(app: Flask) -> list[Rule]:
    """The routes the document describes: every rule except static files."""
    return sorted((r for r in app.url_map.iter_rules() if not r.endpoint.split(".")[-1] == "static"),
                  key=lambda r: r.rule)


def undocumented_endpoints(app: Flask) -> list[str]:
    """Endpoints of the URL map with no entry in any package's ``OPENAPI`` registry."""
    docs = endpoint_docs()
    return sorted({r.endpoint for r in documented_rules(app)} - set(docs))


def build_openapi(app: Flask) -> dict[str, Any]:
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="mdmserver",
        version=__version__,
        openapi_version="3.0.3",
        plugins=[plugin],
        info={"description": "Self-hosted Apple MDM server: device protocol and admin API. Admin routes "
                             "need `Authorization: Bearer <token>` with the scope each operation names."},
        servers=[{"url": app.config.get("PUBLIC_URL") or "/"}],
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name, schema in _SHARED_SCHEMAS.items():
        spec.components.schema(name, schema)
    docs = endpoint_docs()
    rules = documented_rules(app)
    rules_per_endpoint = Counter(r.endpoint for r in rules)
    paths: dict[str, dict[str, Any]] = {}
    for rule in rules:
        doc = docs.get(rule.endpoint, ApiDoc())
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation = _operation(app, rule, method, doc)
            operation_id = f"{rule.endpoint}.{method.lower()}"
            if rules_per_endpoint[rule.endpoint] > 1:  # one view on several URLs: name each URL
                operation_id += "." + "_".join(re.findall(r"\w+", openapi_path(rule.rule)))
            operation["operationId"] = operation_id
            paths.setdefault(openapi_path(rule.rule), {})[method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    # A schema whose Meta has ``openapi`` adds what marshmallow cannot say (the value type of an open
    # mapping, a nullable reference in OpenAPI 3.0); its own fields still validate and document the rest.
    for schema_key, name in plugin.converter.refs.items():
        extra = getattr(getattr(schema_key[0], "Meta", None), "openapi", None)
        if extra:
            target = document["components"]["schemas"][name]
            for key, value in extra.items():
                if key == "properties":
                    target.setdefault("properties", {}).update(value)
                else:
                    target[key] = value
    # Validators' bounds may be Decimals (a price): JSON numbers in the document, not strings.
    return json.loads(json.dumps(document, default=float))


def _operation(app: Flask, rule: Rule, method: str, doc: ApiDoc) -> dict[str, Any]:
    view = app.view_functions[rule.endpoint]
    summary, _, description = (inspect.getdoc(view) or "").partition("\n\n")
    operation: dict[str, Any] = {
        "summary": summary.replace("\n", " ") or rule.endpoint.replace("_", " "),
        "tags": [rule.endpoint.split(".")[0]],
    }
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": dict(_TYPES.get(conv or "", {"type": "string"}))}
        for conv, name in _CONVERTER.findall(rule.rule)
    ]
    parameters += _query_parameters(doc)
    if parameters:
        operation["parameters"] = parameters
    if method in _WRITES or (method == "DELETE" and doc.body is not None):
        operation["requestBody"] = _request_body(doc)
    if is_protected(rule.rule):
        scope = required_scope(view, method)
        operation["security"] = [{"bearer": []}]
        operation["x-required-scope"] = scope
        description = f"{description}\n\nRequires a bearer token with the `{scope}` scope.".strip()
    else:
        operation["security"] = []
    if description:
        operation["description"] = description
    operation["responses"] = {**_success(rule, method, doc), **_errors(rule, method, doc, bool(parameters))}
    return operation


def _query_parameters(doc: ApiDoc) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in doc.filters:
        params.append({"name": f"filter[{name}]", "in": "query", "required": False, "schema": {"type": "string"},
                       "description": f"only rows whose {name} matches (a comma-separated list where it "
                                      "takes several values)"})
    if doc.open_filters:
        params.append({"name": "filter", "in": "query", "required": False, "style": "deepObject", "explode": True,
                       "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                       "description": "device filters by name, `filter[custom.<attribute>]` for custom "
                                      "attributes; an unknown filter is a 400"})
    if doc.sorts:
        params.append({"name": "sort", "in": "query", "required": False, "schema": {"type": "string"},
                       "description": "comma-separated fields, `-` first for descending; allowed: "
                                      + ", ".join(doc.sorts)})
    if doc.paged:
        params += [
            {"name": "page[number]", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_NUMBER, "default": 1}},
            {"name": "page[size]", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 50}},
        ]
    if doc.facets:
        params.append({"name": "facets", "in": "query", "required": False, "schema": {"type": "string"},
                       "description": "comma-separated fields to count values of (meta.facets)"})
    if doc.fields and doc.type:
        params.append({"name": f"fields[{doc.type}]", "in": "query", "required": False,
                       "schema": {"type": "string"}, "description": "comma-separated attributes to return"})
    for name, description, required in query_parameters(doc):
        params.append({"name": name, "in": "query", "required": required, "schema": {"type": "string"},
                       "description": description})
    return params


def _request_body(doc: ApiDoc) -> dict[str, Any]:
    if doc.body_kind is Body.RESOURCE:
        data: dict[str, Any] = {"type": "object", "required": ["type"], "properties": {
            "type": {"type": "string", **({"enum": [doc.type]} if doc.type else {})},
            "id": {"type": "string", "description": "optional; when given, the id in the URL"},
            "attributes": doc.body or {"type": "object"},
        }}
        if doc.relationships is not None:
            data["properties"]["relationships"] = doc.relationships
            data["required"].append("relationships")
        schema: Any = {"type": "object", "required": ["data"], "properties": {"data": data}}
        plain = {"oneOf": [schema, doc.body]} if doc.plain_too and doc.body is not None else schema
        return {"required": not doc.body_optional,
                "content": {JSONAPI: {"schema": schema}, "application/json": {"schema": plain}}}
    if doc.body_kind is Body.JSON:
        schema = doc.body or {"type": "object"}
        return {"required": True, "content": {"application/json": {"schema": schema}, JSONAPI: {"schema": schema}}}
    if doc.body_kind is Body.MULTIPART:
        return {"required": True, "content": {
            "multipart/form-data": {"schema": doc.body or {"type": "object"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        }}
    if doc.body_kind is Body.PLIST:
        return {"required": True, "content": {
            "application/x-apple-aspen-mdm": {"schema": {"type": "string", "description": "an XML property list"}},
            "application/xml": {"schema": {"type": "string", "description": "an XML property list"}},
        }}
    if doc.body_kind is Body.PKI_MESSAGE:
        return {"required": True, "content": {
            "application/x-pki-message": {"schema": {"type": "string", "format": "binary",
                                                      "description": "a SCEP pkiMessage (RFC 8894), DER"}},
        }}
    return {"required": False, "content": {"application/json": {"schema": EmptyBodySchema}}}


def _success(rule: Rule, method: str, doc: ApiDoc) -> dict[str, Any]:
    reply = doc.reply
    status = doc.status if method in _WRITES else 200
    if reply is Reply.EMPTY:
        return {"204": {"description": "Done; no content"}}
    if doc.reply_schema is not None and reply in (Reply.RESOURCE, Reply.LIST, Reply.COLLECTION):
        typed = {"type": "object", "required": ["type", "id"], "properties": {
            "type": {"type": "string", **({"enum": [doc.type]} if doc.type else {})},
            "id": {"type": "string"},
            "attributes": doc.reply_schema,
            "relationships": {"type": "object"},
            "links": {"type": "object"},
        }}
        if reply is Reply.RESOURCE:
            schema: Any = {"type": "object", "required": ["data"],
                           "properties": {"data": typed, "meta": {"type": "object"}}}
        else:
            schema = {"allOf": [_REPLY_SCHEMAS[reply],
                                {"type": "object", "properties": {"data": {"type": "array", "items": typed}}}]}
    else:
        schema = _REPLY_SCHEMAS[reply]
    media = _REPLY_MEDIA.get(reply, JSONAPI)
    if media == JSONAPI and rule.rule.startswith("/api/management/"):
        media = "application/json"
    return {str(status): {"description": _REPLY_TEXT[reply], "content": {media: {"schema": schema}}}}


def _errors(rule: Rule, method: str, doc: ApiDoc, has_parameters: bool) -> dict[str, Any]:
    statuses: set[int] = set(doc.errors)
    if is_protected(rule.rule):
        statuses |= {401, 403}
    if has_parameters and "<" in rule.rule:
        statuses.add(404)
    if doc.paged or doc.query or doc.filters:
        statuses.add(400)
    writes = method in _WRITES or (method == "DELETE" and doc.body is not None)
    if writes and doc.body_kind in (Body.RESOURCE, Body.JSON):
        statuses |= {400, 413, 415, 422}
    if writes and doc.body_kind is Body.RESOURCE:
        statuses.add(409)
    if writes and doc.body_kind in (Body.MULTIPART, Body.PLIST, Body.PKI_MESSAGE):
        statuses |= {400, 413}
    if rule.rule == "/mdm" or rule.rule.startswith("/mdm/"):
        content: dict[str, Any] = {"text/plain": {"schema": {"type": "string"}}}
    elif rule.rule.startswith("/api/management/"):
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/MenderError"}}}
    else:
        content = {JSONAPI: {"schema": {"$ref": "#/components/schemas/Errors"}}}
    return {str(s): {"description": _ERROR_TEXT[s], "content": content} for s in sorted(statuses)}


_RESOURCE = {"type": "object", "required": ["type", "id"], "properties": {
    "type": {"type": "string"},
    "id": {"type": "string"},
    "attributes": {"type": "object"},
    "relationships": {"type": "object"},
    "links": {"type": "object"},
}}
_SHARED_SCHEMAS: dict[str, dict[str, Any]] = {
    "Resource": _RESOURCE,
    "ResourceDocument": {"type": "object", "required": ["data"], "properties": {
        "data": {"allOf": [{"$ref": "#/components/schemas/Resource"}], "nullable": True},
        "meta": {"type": "object"},
    }},
    "CollectionDocument": {"type": "object", "required": ["data"], "properties": {
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Resource"}},
        "meta": {"type": "object", "properties": {"total": {"type": "integer"}}},
    }},
    "ListDocument": {"type": "object", "required": ["data", "meta", "links"], "properties": {
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Resource"}},
        "meta": {"type": "object", "properties": {
            "total": {"type": "integer"},
            "facets": {"type": "object", "additionalProperties": {"type": "object"}},
        }},
        "links": {"type": "object", "properties": {
            name: {"type": "string", "nullable": True} for name in ("self", "first", "prev", "next", "last")
        }},
    }},
    "MetaDocument": {"type": "object", "properties": {
        "data": {"nullable": True},
        "meta": {"type": "object"},
    }, "additionalProperties": True},
    "Errors": {"type": "object", "required": ["errors"], "properties": {
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "status": {"type": "string"},
            "code": {"type": "string"},
            "title": {"type": "string"},
            "detail": {"type": "string"},
            "source": {"type": "object", "properties": {
                "pointer": {"type": "string"}, "parameter": {"type": "string"},
            }},
        }}},
        "meta": {"type": "object", "properties": {"request_id": {"type": "string"}}},
    }},
    "MenderError": {"type": "object", "properties": {
        "error": {"type": "string"}, "request_id": {"type": "string"},
    }},
}
_REPLY_SCHEMAS: dict[Reply, Any] = {
    Reply.RESOURCE: {"$ref": "#/components/schemas/ResourceDocument"},
    Reply.COLLECTION: {"$ref": "#/components/schemas/CollectionDocument"},
    Reply.LIST: {"$ref": "#/components/schemas/ListDocument"},
    Reply.META: {"$ref": "#/components/schemas/MetaDocument"},
    Reply.JSON: {"type": "object"},
    Reply.PLIST: {"type": "string", "description": "an XML property list"},
    Reply.FILE: {"type": "string", "format": "binary"},
    Reply.TEXT: {"type": "string"},
    Reply.HTML: {"type": "string"},
}
_REPLY_MEDIA = {
    Reply.JSON: "application/json",
    Reply.PLIST: "application/xml",
    Reply.FILE: "application/octet-stream",
    Reply.TEXT: "text/plain",
    Reply.HTML: "text/html",
}
_REPLY_TEXT = {
    Reply.RESOURCE: "A JSON:API document with one resource",
    Reply.COLLECTION: "A JSON:API document with every matching resource",
    Reply.LIST: "One page of a JSON:API list, with links to the others and meta.total",
    Reply.META: "Counts of what was done (meta)",
    Reply.EMPTY: "Done; no content",
    Reply.JSON: "A JSON object",
    Reply.PLIST: "An XML property list",
    Reply.FILE: "The file",
    Reply.TEXT: "Plain text",
    Reply.HTML: "A web page",
}
