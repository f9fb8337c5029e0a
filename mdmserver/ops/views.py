"""Operations endpoints: liveness, readiness, metrics, API description."""

from __future__ import annotations

import html

from flask import Blueprint, Response, current_app, jsonify

from mdmserver.db import db
from mdmserver.ops import metrics
from mdmserver.ops.openapi import build_openapi
from mdmserver.ops.readiness import BUSY, run_checks

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Readiness: the database answers and its migrations are current.

    A database that is only busy (SQLite's lock held too long) says so, with ``Retry-After``: it is
    reachable, unlike one that fails to answer."""
    checks = run_checks(db.session)
    ready = all(value == "ok" for value in checks.values())
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
    """A human-readable list of every route, its scope and purpose."""
    spec = build_openapi(current_app._get_current_object())
    rows = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op.get('x-required-scope', '-'))}</td><td>{html.escape(op['summary'])}</td></tr>"
            )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>mdmserver API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;border-bottom:1px solid #ddd;"
        "text-align:left}</style></head><body><h1>mdmserver API</h1>"
        "<p>Admin routes need <code>Authorization: Bearer &lt;token&gt;</code> with the scope shown. "
        "The machine-readable description is at <a href='/api/openapi.json'>/api/openapi.json</a>.</p>"
        "<table><tr><th>method</th><th>path</th><th>scope</th><th>summary</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
    return Response(page, mimetype="text/html")
