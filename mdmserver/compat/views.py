"""The blueprints of the compatibility routes: one module per seed product (``mdmserver/compat/<product>.py``,
each with its ``bp``), collected here for the app factory, which registers every package's ``views``."""

from __future__ import annotations

import importlib
import pkgutil

from flask import Blueprint

import mdmserver.compat

#: modules of this package that hold no routes
_NOT_ROUTES = frozenset({"views", "schemas"})

blueprints: list[Blueprint] = [
    importlib.import_module(f"mdmserver.compat.{info.name}").bp
    for info in sorted(pkgutil.iter_modules(mdmserver.compat.__path__), key=lambda i: i.name)
    if info.name not in _NOT_ROUTES
]
