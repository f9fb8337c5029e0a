"""The device protocol's OpenAPI description: property-list bodies and answers, plain-text errors."""

from __future__ import annotations

from mdmserver.api.apidoc import ApiDoc, Body, Reply

OPENAPI: dict[str, ApiDoc] = {
    "checkin.checkin": ApiDoc(body_kind=Body.PLIST, reply=Reply.PLIST, errors=(403,)),
    "checkin.connect": ApiDoc(body_kind=Body.PLIST, reply=Reply.PLIST, errors=(403,)),
    "checkin.dispatch": ApiDoc(body_kind=Body.PLIST, reply=Reply.PLIST, errors=(403,)),
    "checkin.enroll": ApiDoc(reply=Reply.FILE, errors=(403, 429), query={"secret": "the enrollment secret"}),
}
