"""Webhook subscription and delivery resources, and the bodies that change them."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from mdmserver.api.apidoc import ApiDoc, Body, Reply, StrictBoolean, listing
from mdmserver.api.jsonapi import resource
from mdmserver.db import isoformat
from mdmserver.webhooks.models import (
    SUBSCRIBABLE,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)

MAX_URL_LENGTH = 2048
URL_SCHEMES = ("http", "https")


def check_url(value: str) -> None:
    """An http(s) URL with a host, no user name or password in it, at most 2 KB."""
    if len(value) > MAX_URL_LENGTH:
        raise ValidationError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValidationError("the URL contains white space or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port  # a bad port raises here
    except ValueError as exc:
        raise ValidationError(f"not a URL: {exc}") from None
    if parts.scheme.lower() not in URL_SCHEMES:
        raise ValidationError("the URL must use http or https")
    if "@" in parts.netloc or parts.username is not None:
        raise ValidationError("the URL must not carry a user name or password (sign with the secret instead)")
    if not parts.hostname:
        raise ValidationError("the URL has no host")
    if port == 0:
        raise ValidationError("the URL's port must be 1 to 65535")


class WebhookCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    url = fields.String(required=True, validate=check_url,
                        metadata={"description": "http or https, no user information, at most 2048 characters"})
    event_types = fields.List(
        fields.String(validate=validate.OneOf(sorted(SUBSCRIBABLE))), required=True,
        validate=validate.Length(min=1, max=len(SUBSCRIBABLE)),
        metadata={"description": "the events to receive (docs/webhooks.md)"},
    )
    enabled = StrictBoolean(load_default=True)


class WebhookUpdateSchema(WebhookCreateSchema):
    name = fields.String(validate=validate.Length(min=1, max=255))
    url = fields.String(validate=check_url)
    event_types = fields.List(fields.String(validate=validate.OneOf(sorted(SUBSCRIBABLE))),
                              validate=validate.Length(min=1, max=len(SUBSCRIBABLE)))
    enabled = StrictBoolean()


class WebhookAttributesSchema(Schema):
    """A webhook as the API shows it (``secret`` only in the answers that create or rotate it, and to
    tokens with scope ``secrets``)."""

    name = fields.String()
    url = fields.String()
    event_types = fields.List(fields.String())
    enabled = fields.Boolean()
    secret = fields.String(metadata={"description": "whsec_…: shown when created or rotated, else only "
                                                    "with scope secrets"})
    secret_rotated_at = fields.String(allow_none=True)
    created_by = fields.String(allow_none=True)
    created_at = fields.String()
    updated_at = fields.String()


class AttemptSchema(Schema):
    attempted_at = fields.String()
    status_code = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    duration_ms = fields.Integer()
    response_body = fields.String(allow_none=True)


class DeliveryAttributesSchema(Schema):
    event_id = fields.String()
    event_type = fields.String()
    subject = fields.String()
    status = fields.String(metadata={"enum": [s.value for s in DeliveryStatus]})
    attempts = fields.Integer()
    created_at = fields.String()
    next_attempt_at = fields.String(allow_none=True)
    completed_at = fields.String(allow_none=True)
    last_status = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    payload = fields.Dict(metadata={"description": "the JSON document POSTed"})
    attempt_log = fields.List(fields.Nested(AttemptSchema))


def webhook_resource(subscription: WebhookSubscription, event_types: list[str], *,
                     secret: str | None = None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "name": subscription.name, "url": subscription.url, "event_types": sorted(event_types),
        "enabled": subscription.enabled,
    }
    if secret is not None:
        attributes["secret"] = secret
    attributes.update(secret_rotated_at=isoformat(subscription.secret_rotated_at),
                      created_by=subscription.created_by, created_at=isoformat(subscription.created_at),
                      updated_at=isoformat(subscription.updated_at))
    base = f"/api/v1/webhooks/{subscription.id}"
    return resource("webhooks", subscription.id, attributes,
                    relationships={"deliveries": {"links": {"related": f"{base}/deliveries"}}},
                    links={"self": base})


def _attempt(attempt: WebhookAttempt) -> dict[str, Any]:
    return {"attempted_at": isoformat(attempt.attempted_at), "status_code": attempt.status_code,
            "error": attempt.error, "duration_ms": attempt.duration_ms, "response_body": attempt.response_body}


def delivery_resource(delivery: WebhookDelivery, event: WebhookEvent, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    waiting = delivery.status == DeliveryStatus.PENDING.value
    attributes = {
        "event_id": event.id, "event_type": event.type, "subject": delivery.subject, "status": delivery.status,
        "attempts": delivery.attempts, "created_at": isoformat(delivery.created_at),
        "next_attempt_at": isoformat(delivery.not_before) if waiting else None,
        "completed_at": isoformat(delivery.completed_at), "last_status": delivery.last_status,
        "last_error": delivery.last_error, "payload": json.loads(event.body),
        "attempt_log": [_attempt(a) for a in attempts],
    }
    return resource("webhook_deliveries", delivery.id, attributes,
                    links={"self": f"/api/v1/webhooks/{delivery.subscription_id}/deliveries/{delivery.id}"})


OPENAPI: dict[str, ApiDoc] = {
    "webhooks.list_webhooks": listing("webhooks", filters=("enabled", "event_type"), sorts=("id", "name", "created_at"),
                                      reply_schema=WebhookAttributesSchema),
    "webhooks.create_webhook": ApiDoc(body=WebhookCreateSchema, type="webhooks", status=201, errors=(409,),
                                      reply_schema=WebhookAttributesSchema),
    "webhooks.get_webhook": ApiDoc(type="webhooks", reply_schema=WebhookAttributesSchema),
    "webhooks.update_webhook": ApiDoc(body=WebhookUpdateSchema, type="webhooks", errors=(409,),
                                      reply_schema=WebhookAttributesSchema),
    "webhooks.delete_webhook": ApiDoc(type="webhooks", reply=Reply.EMPTY),
    "webhooks.rotate_secret": ApiDoc(body_kind=Body.NONE, type="webhooks", reply_schema=WebhookAttributesSchema),
    "webhooks.ping": ApiDoc(body_kind=Body.NONE, type="webhook_deliveries", status=202,
                            reply_schema=DeliveryAttributesSchema),
    "webhooks.list_deliveries": listing("webhook_deliveries", filters=("status", "event_type"),
                                        sorts=("id", "created_at"), reply_schema=DeliveryAttributesSchema),
    "webhooks.get_delivery": ApiDoc(type="webhook_deliveries", reply_schema=DeliveryAttributesSchema),
    "webhooks.replay_delivery": ApiDoc(body_kind=Body.NONE, type="webhook_deliveries", status=202, errors=(409,),
                                       reply_schema=DeliveryAttributesSchema),
}
