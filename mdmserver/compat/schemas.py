"""The OpenAPI registry of the compatibility routes: every product module's own ``OPENAPI`` (as
``views.py`` collects their blueprints), so that each product keeps its metadata beside its routes."""

from __future__ import annotations

import importlib
import pkgutil

import mdmserver.compat
from mdmserver.api.apidoc import ApiDoc

#: modules of this package that hold no routes
_NOT_ROUTES = frozenset({"views", "schemas"})

OPENAPI: dict[str, ApiDoc] = {}
for _info in sorted(pkgutil.iter_modules(mdmserver.compat.__path__), key=lambda i: i.name):
    if _info.name not in _NOT_ROUTES:
        for _endpoint, _doc in getattr(importlib.import_module(f"mdmserver.compat.{_info.name}"), "OPENAPI", {}).items():
            if _endpoint in OPENAPI:
                raise RuntimeError(f"OpenAPI metadata for {_endpoint!r} is declared twice")
            OPENAPI[_endpoint] = _doc
