"""The one place that turns errors into HTTP responses.

Admin routes answer JSON:API error documents (Mender-compatible routes answer Mender's shape); device routes
(``/mdm``) answer a short plain-text body, as Apple devices expect.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, json, request
from sqlalchemy.exc import DataError, OperationalError
from werkzeug.exceptions import HTTPException

from mdmserver import errors
from mdmserver.api.requests import request_id
from mdmserver.db import db, is_database_busy

log = logging.getLogger("mdmserver.errors")

JSONAPI = "application/vnd.api+json"

# Seconds a client should wait after a 503 because the database was busy.
BUSY_RETRY_AFTER = "1"

_HTTP_TO_APP = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    406: errors.NotAcceptable,
    409: errors.Conflict,
    410: errors.Gone,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
    422: errors.UnprocessableEntity,
    429: errors.TooManyRequests,
    503: errors.ServiceUnavailable,
}


def _is_device_path() -> bool:
    return request.path == "/mdm" or request.path.startswith("/mdm/")


def _is_mender_path() -> bool:
    return request.path.startswith("/api/management/")


#: The answers a pure layer's ``InputError`` may ask for; any other status is answered 400.
_INPUT_STATUSES: dict[int, type[errors.AppError]] = {
    400: errors.BadRequest,
    413: errors.PayloadTooLarge,
    422: errors.UnprocessableEntity,
}


def input_error(exc: errors.InputError) -> errors.AppError:
    """The ``AppError`` for input a pure layer refused (``ProtocolError``, ``CMSError``, ``ProfileError``,
    ``PackageError``, ``PackageTooLarge``):
    its status, detail, code (the status's own when it names none) and JSON pointer."""
    cls = _INPUT_STATUSES.get(exc.status, errors.BadRequest)
    return cls(exc.detail, code=exc.code, pointer=exc.pointer)


def error_response(exc: errors.AppError) -> Response:
    rid = request_id() or getattr(g, "request_id", None)
    if _is_device_path():
        response = Response(exc.detail + "\n", status=exc.status, mimetype="text/plain")
    elif _is_mender_path():
        body = {"error": exc.detail, "request_id": rid}
        response = Response(json.dumps(body), status=exc.status, mimetype="application/json")
    else:
        body = {"errors": exc.error_objects(), "meta": {"request_id": rid, **exc.meta}}
        response = Response(json.dumps(body), status=exc.status, mimetype=JSONAPI)
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(errors.AppError)
    def _app_error(exc: errors.AppError) -> Response:
        if exc.status >= 500:
            log.error("%s: %s", type(exc).__name__, exc.detail)
        return error_response(exc)

    @app.errorhandler(errors.InputError)
    def _input_error(exc: errors.InputError) -> Response:
        return error_response(input_error(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        cls = _HTTP_TO_APP.get(status)
        if cls is None:
            app_error: errors.AppError = errors.AppError("internal error")
        else:
            detail = exc.description or cls.title
            if status == 404:
                detail = f"no such resource: {request.path}"
            elif status == 405:
                detail = f"{request.method} is not allowed on {request.path}"
            app_error = cls(detail)
        response = error_response(app_error)
        if status == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(errors.AppError("internal error; see the server log for this request id"))

    @app.before_request
    def _refuse_nul() -> None:
        # PostgreSQL text cannot hold NUL: a NUL in the path or the query would reach a WHERE clause
        # and fail there (a 500); no identifier, filter or parameter of ours contains one.
        # A decoded argument holds a NUL only if the raw query has one or "%00": most requests (every
        # device request) carry neither and skip parsing the query here.
        query = request.query_string
        if "\x00" in request.path or ((b"\x00" in query or b"%00" in query) and any(
                "\x00" in k or "\x00" in v for k, v in request.args.items(multi=True))):
            raise errors.BadRequest("the URL contains a NUL character", code="nul_character")

    @app.errorhandler(DataError)
    def _data_error(exc: DataError) -> Response:
        # The database refused a value this request carried (PostgreSQL: a NUL in a body string, a
        # number or date out of its range): the request's fault, not the server's.
        db.session.rollback()
        log.warning("database refused a value on %s %s: %s", request.method, request.path,
                    str(getattr(exc, "orig", exc)).splitlines()[0][:200])
        return error_response(errors.BadRequest(
            "a value in this request cannot be stored or compared (for example a NUL character)",
            code="invalid_value",
        ))

    @app.errorhandler(OperationalError)
    def _database_error(exc: OperationalError) -> Response:
        if not is_database_busy(exc):
            return _unexpected(exc)
        # SQLite's write lock was held by another connection for longer than the busy timeout:
        # a temporary condition, not a fault of this request.
        db.session.rollback()
        log.warning("database busy on %s %s: answered 503", request.method, request.path)
        return error_response(errors.ServiceUnavailable(
            "the database is busy; retry shortly", code="database_busy",
            headers={"Retry-After": BUSY_RETRY_AFTER},
        ))
