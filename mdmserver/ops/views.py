"""Operations endpoints: liveness, readiness, metrics, API description."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from flask import Blueprint, Response, current_app, jsonify

from mdmserver.db import db
from mdmserver.ops import metrics
from mdmserver.ops.openapi import build_openapi
from mdmserver.ops.readiness import BUSY, is_ready, run_checks

bp = Blueprint("ops", __name__)


@bp.get("/")
def index():
    """Where to start: the API documentation and the probes."""
    response = jsonify(name="mdmserver", api_docs="/api/docs", openapi="/api/openapi.json", api="/api/v1",
                       health="/healthz", readiness="/readyz")
    response.headers["Link"] = '</api/docs>; rel="service-doc", </api/openapi.json>; rel="service-desc"'
    return response


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Readiness: the database answers and its migrations are current (and every registered check).

    A check that only advises (no push certificate yet) is shown as such, not as ``ok``, and leaves the
    server ready: a fresh server must be reachable to be set up.

    A database that is only busy (SQLite's lock held too long) says so, with ``Retry-After``: it is
    reachable, unlike one that fails to answer."""
    checks = run_checks(db.session)
    ready = is_ready(checks)
    response = jsonify(status="ready" if ready else "not ready", checks=checks)
    response.status_code = 200 if ready else 503
    if BUSY in checks.values():
        response.headers["Retry-After"] = "1"
    return response


@bp.get("/metrics")
def metrics_text():
    """Prometheus metrics in the text exposition format."""
    return Response(metrics.render(), mimetype="text/plain", content_type="text/plain; version=0.0.4")


@bp.get("/api/openapi.json")
def openapi_json():
    """The OpenAPI 3 description of every route."""
    return jsonify(build_openapi(current_app._get_current_object()))


@bp.get("/api/docs")
def api_docs():
    """The OpenAPI document rendered for people: one self-contained page.

    The renderer ships in the package (``mdmserver/ops/static``) and is inlined with the document, so the
    page loads nothing from anywhere else."""
    spec = json.dumps(build_openapi(current_app._get_current_object()))
    # Inside <script>, "<", ">" and "&" as JSON escapes: no value can close the element.
    spec = spec.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    html, css, script = (_asset(name) for name in ("docs.html", "docs.css", "docs.js"))
    page = html.replace("/*CSS*/", css).replace("/*JS*/", script).replace("/*SPEC*/", spec)
    return Response(page, mimetype="text/html")


@cache
def _asset(name: str) -> str:
    return resources.files("mdmserver.ops").joinpath("static", name).read_text(encoding="utf-8")
