"""Request ids, request logging and the response headers every request gets."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from flask import Flask, Response, g, has_request_context, request

from mdmserver.errors import PayloadTooLarge

F = TypeVar("F", bound=Callable)

#: The setting that limits an admin request's body unless its view names another (``body_limit``).
DEFAULT_BODY_LIMIT = "MAX_UPLOAD_BYTES"


def read_limited_body(limit: int, what: str) -> bytes:
    """The request body, read whole; ``PayloadTooLarge`` (413) past ``limit`` bytes, by its
    Content-Length or while reading (a chunked body has none). ``what`` names the requests in the error."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"{what} are limited to {limit} bytes")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"{what} are limited to {limit} bytes")
    return data


def body_limit(setting: str) -> Callable[[F], F]:
    """Mark a view whose request body is limited by the setting ``setting`` (an ``app.config`` key)
    instead of ``MAX_UPLOAD_BYTES``: an app package upload is streamed to disk, not read into memory."""

    def mark(view: F) -> F:
        view.body_limit = setting  # type: ignore[attr-defined]
        return view

    return mark


def body_limit_setting(view: Callable | None) -> str:
    return getattr(view, "body_limit", None) or DEFAULT_BODY_LIMIT


_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
log = logging.getLogger("mdmserver.request")


def request_id() -> str | None:
    """The id of the current request, or None outside a request."""
    if has_request_context():
        return getattr(g, "request_id", None)
    return None


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every log record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id() or "-"
        return True


_base_factory = logging.getLogRecordFactory()


def _record_with_request_id(*args, **kwargs) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    record.request_id = request_id() or "-"
    return record


def configure_logging(level: str) -> None:
    """Every log record carries ``request_id``; the root handler prints it on every line."""
    if logging.getLogRecordFactory() is not _record_with_request_id:
        logging.setLogRecordFactory(_record_with_request_id)
    root = logging.getLogger()
    if not any(isinstance(f, RequestIdFilter) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
        )
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    root.setLevel(level.upper())


def init_app(app: Flask) -> None:
    @app.before_request
    def _assign_request_id() -> None:
        incoming = request.headers.get("X-Request-ID") or request.headers.get("X-MEN-RequestID")
        g.request_id = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        rid = getattr(g, "request_id", None)
        if rid is None:  # a failure before our before_request ran
            g.request_id = rid = uuid.uuid4().hex
        response.headers["X-Request-ID"] = rid
        if request.path.startswith("/api/management/"):
            response.headers["X-MEN-RequestID"] = rid
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response
