"""Admin authentication: every route under /api/ needs a bearer token with the right scope.

The check is one app-level hook, so a new view cannot forget it: GET and HEAD need ``read``, every other
method ``write``; a view that needs more says so with ``@requires_scope``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Flask, current_app, g, request

from mdmserver.db import db
from mdmserver.errors import Forbidden, Unauthorized
from mdmserver.tokens import service as tokens
from mdmserver.tokens.models import ApiToken

F = TypeVar("F", bound=Callable)

PUBLIC_API_PATHS = frozenset({"/api/openapi.json", "/api/docs"})


def requires_scope(scope: str) -> Callable[[F], F]:
    """Mark a view as needing ``scope`` (on top of the method's default)."""

    def mark(view: F) -> F:
        view.required_scope = scope  # type: ignore[attr-defined]
        return view

    return mark


def required_scope(view: Callable | None, method: str) -> str:
    declared = getattr(view, "required_scope", None)
    if declared:
        return declared
    return "read" if method in ("GET", "HEAD", "OPTIONS") else "write"


def current_token() -> ApiToken | None:
    return getattr(g, "api_token", None)


def current_actor() -> str | None:
    """The name of the token behind this request (who enqueued a command, who changed a row)."""
    token = current_token()
    return token.name if token is not None else None


def may_read_secrets() -> bool:
    """Whether this request's token has the ``secrets`` scope (``admin`` includes it): views that
    show secret values to such tokens and ``[redacted]`` to others ask this."""
    token = current_token()
    return token is not None and token.allows("secrets")


def is_protected(path: str) -> bool:
    return (path == "/api" or path.startswith("/api/")) and path not in PUBLIC_API_PATHS


def _challenge(detail: str) -> Unauthorized:
    return Unauthorized(detail, headers={"WWW-Authenticate": 'Bearer realm="mdmserver"'})


def init_app(app: Flask) -> None:
    @app.before_request
    def _authenticate_admin() -> None:
        if not is_protected(request.path) or request.method == "OPTIONS":
            return
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise _challenge("a bearer token is required (Authorization: Bearer <token>)")
        token = tokens.authenticate(db.session, credential.strip())
        if token is None:
            raise _challenge("the bearer token is not valid")
        g.api_token = token
        if request.url_rule is None:
            return  # unknown route: the 404/405 handler answers, after authentication
        view = current_app.view_functions.get(request.endpoint)
        scope = required_scope(view, request.method)
        if not token.allows(scope):
            raise Forbidden(f"this token lacks the {scope!r} scope", code="insufficient_scope")
