"""The application factory."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import IntegerConverter

import mdmserver
from mdmserver import collaborators, records
from mdmserver.api import auth, errors, requests, transactions
from mdmserver.api.jsonapi import MAX_ID
from mdmserver.config import load_config
from mdmserver.db import db
from mdmserver.errors import PayloadTooLarge
from mdmserver.ops import metrics


def feature_modules(name: str) -> list[ModuleType]:
    """Import ``mdmserver.<feature>.<name>`` for every feature package that has one."""
    modules = []
    for info in sorted(pkgutil.iter_modules(mdmserver.__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        qualified = f"mdmserver.{info.name}.{name}"
        try:
            spec = importlib.util.find_spec(qualified)
        except ModuleNotFoundError:
            spec = None
        if spec is not None:
            modules.append(importlib.import_module(qualified))
    return modules


def import_all_models() -> None:
    """Import every table mapping (the records package and each feature's models) so the metadata is
    complete (Alembic, tests)."""
    for info in pkgutil.iter_modules(records.__path__):
        importlib.import_module(f"{records.__name__}.{info.name}")
    feature_modules("models")


class MdmFlask(Flask):
    """Flask, deciding once per view or hook whether it is a coroutine function.

    Flask asks ``inspect.iscoroutinefunction`` again for every hook and view of every request (a dozen
    calls per device request); the answer cannot change, so it is kept."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync_callables: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            return self._sync_callables[func]
        except (KeyError, TypeError):  # TypeError: an unhashable callable, asked every time
            sync = super().ensure_sync(func)
            try:
                self._sync_callables[func] = sync
            except TypeError:
                pass
            return sync


def create_app(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Flask:
    app = MdmFlask("mdmserver")
    app.url_map.converters["int"] = DatabaseIdConverter
    app.config.update(load_config(environ=environ, overrides=overrides))
    app.json.sort_keys = False
    requests.configure_logging(app.config["LOG_LEVEL"])

    import_all_models()
    db.init_app(app)

    requests.init_app(app)
    metrics.init_app(app)
    errors.init_app(app)
    transactions.init_app(app)  # before auth: the token lookup is the first statement
    auth.init_app(app)
    collaborators.init_app(app)  # after auth: the audit context names the checked token
    _limit_admin_bodies(app)
    _cors(app)

    for module in feature_modules("views"):
        for blueprint in getattr(module, "blueprints", None) or [getattr(module, "bp", None)]:
            if blueprint is not None:
                app.register_blueprint(blueprint)
    return app


class DatabaseIdConverter(IntegerConverter):
    """``<int:…>`` in our routes: ASCII digits only, and within a 32-bit key, so an id no row can have
    is a 404 rather than a database overflow error."""

    regex = r"[0-9]+"

    def __init__(self, map, *args, **kwargs) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def _limit_admin_bodies(app: Flask) -> None:
    """Admin bodies have their own limit; device routes check theirs where they read the body."""

    @app.before_request
    def _check_length() -> None:
        if request.path.startswith("/mdm"):
            return
        view = app.view_functions.get(request.endpoint) if request.url_rule is not None else None
        setting = requests.body_limit_setting(view)
        limit = app.config[setting]
        if setting != requests.DEFAULT_BODY_LIMIT:
            request.max_content_length = limit  # a view with its own limit reads past MAX_CONTENT_LENGTH
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"request bodies are limited to {limit} bytes")

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge):
        return errors.error_response(PayloadTooLarge("the request body is too large"))


def _cors(app: Flask) -> None:
    origins = set(app.config["CORS_ORIGINS"])
    if not origins:
        return

    @app.after_request
    def _allow(response):
        origin = request.headers.get("Origin")
        if origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, X-Request-ID"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE"
            response.headers["Vary"] = "Origin"
        return response
