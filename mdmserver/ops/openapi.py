"""An OpenAPI 3 document built from Flask's URL map, so every route is listed by construction.

Each operation's summary and description come from the view's docstring; admin routes carry the bearer
security requirement and the scope they need.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from flask import Flask

from mdmserver import __version__
from mdmserver.api.auth import is_protected, required_scope

_CONVERTER = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
_TYPES = {"int": {"type": "integer"}, "float": {"type": "number"}, "path": {"type": "string"}}


def openapi_path(rule: str) -> str:
    return _CONVERTER.sub(lambda m: "{" + m.group(2) + "}", rule)


def build_openapi(app: Flask) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        doc = inspect.getdoc(view) or ""
        summary, _, description = doc.partition("\n\n")
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": _TYPES.get(conv or "", {"type": "string"})}
            for conv, name in _CONVERTER.findall(rule.rule)
        ]
        path_item = paths.setdefault(openapi_path(rule.rule), {})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation: dict[str, Any] = {
                "operationId": f"{rule.endpoint}.{method.lower()}",
                "summary": summary.replace("\n", " ") or rule.endpoint.replace("_", " "),
                "tags": [rule.endpoint.split(".")[0]],
                "responses": {"default": {"description": "JSON:API document or error document"}},
            }
            if description:
                operation["description"] = description
            if parameters:
                operation["parameters"] = parameters
            if is_protected(rule.rule):
                scope = required_scope(view, method)
                operation["security"] = [{"bearer": [scope]}]
                operation["x-required-scope"] = scope
            path_item[method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "mdmserver", "version": __version__,
                 "description": "Self-hosted Apple MDM server: device protocol and admin API."},
        "servers": [{"url": app.config.get("PUBLIC_URL", "/")}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }
