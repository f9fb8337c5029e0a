"""The one error hierarchy. Services raise ``AppError``; pure layers raise ``InputError``;
``mdmserver.api.errors`` turns both into responses."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """An error with an HTTP status that may be shown to the client."""

    status: int = 500
    title: str = "Internal Server Error"
    code: str = "internal_error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        title: str | None = None,
        pointer: str | None = None,
        parameter: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if code:
            self.code = code
        if title:
            self.title = title
        self.pointer = pointer
        self.parameter = parameter
        self.errors = errors or []
        self.meta = meta or {}
        self.headers = headers or {}

    def error_objects(self) -> list[dict[str, Any]]:
        """JSON:API error objects: one per fault in ``errors``, else one for this error."""
        faults = self.errors or [{"detail": self.detail, "pointer": self.pointer, "parameter": self.parameter}]
        objects = []
        for fault in faults:
            obj: dict[str, Any] = {
                "status": str(self.status),
                "code": fault.get("code", self.code),
                "title": fault.get("title", self.title),
                "detail": fault.get("detail", self.detail),
            }
            source = {}
            if fault.get("pointer") is not None:
                source["pointer"] = fault["pointer"]
            if fault.get("parameter") is not None:
                source["parameter"] = fault["parameter"]
            if source:
                obj["source"] = source
            objects.append(obj)
        return objects


class InputError(ValueError):
    """Input refused by a pure layer (the device protocol, CMS, profile parsing), which knows no HTTP.

    It carries what the answer needs: ``status`` (400, 413 or 422), ``detail``, and optionally ``code``
    (``None``: the status's own code) and ``pointer``. ``mdmserver.api.errors`` translates every one
    in one registered handler, so callers let it propagate and catch it only to add context.
    """

    def __init__(self, detail: str, *, status: int = 400, code: str | None = None, pointer: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.code = code
        self.pointer = pointer


class BadRequest(AppError):
    status, title, code = 400, "Bad Request", "bad_request"


class Unauthorized(AppError):
    status, title, code = 401, "Unauthorized", "unauthorized"


class Forbidden(AppError):
    status, title, code = 403, "Forbidden", "forbidden"


class NotFound(AppError):
    status, title, code = 404, "Not Found", "not_found"


class MethodNotAllowed(AppError):
    status, title, code = 405, "Method Not Allowed", "method_not_allowed"


class NotAcceptable(AppError):
    status, title, code = 406, "Not Acceptable", "not_acceptable"


class Conflict(AppError):
    status, title, code = 409, "Conflict", "conflict"


class Gone(AppError):
    status, title, code = 410, "Gone", "gone"


class PayloadTooLarge(AppError):
    status, title, code = 413, "Payload Too Large", "payload_too_large"


class UnsupportedMediaType(AppError):
    status, title, code = 415, "Unsupported Media Type", "unsupported_media_type"


class UnprocessableEntity(AppError):
    status, title, code = 422, "Unprocessable Entity", "validation_error"


class TooManyRequests(AppError):
    status, title, code = 429, "Too Many Requests", "rate_limited"


class ServiceUnavailable(AppError):
    status, title, code = 503, "Service Unavailable", "service_unavailable"
