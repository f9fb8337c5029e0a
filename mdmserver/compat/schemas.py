"""Schemas shared by the compatibility routes, and the ``OPENAPI`` registry of all of them.

Each product module (``mdmserver/compat/<product>.py``) declares its own ``OPENAPI`` mapping next to its
routes; ``mdmserver.ops.openapi`` reads a package's registry from its ``schemas`` module, so this module
collects the product modules' mappings when asked (lazily: a product module may import this one).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import mdmserver.compat

#: modules of this package that hold no routes
_NOT_ROUTES = frozenset({"views", "schemas"})


def _collect() -> dict[str, Any]:
    registry: dict[str, Any] = {}
    for info in sorted(pkgutil.iter_modules(mdmserver.compat.__path__), key=lambda i: i.name):
        if info.name not in _NOT_ROUTES:
            module = importlib.import_module(f"mdmserver.compat.{info.name}")
            for endpoint, doc in getattr(module, "OPENAPI", {}).items():
                if endpoint in registry:
                    raise RuntimeError(f"OpenAPI metadata for {endpoint!r} is declared twice")
                registry[endpoint] = doc
    return registry


def __getattr__(name: str) -> Any:
    if name == "OPENAPI":
        return _collect()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
