"""``/api/v1/webhooks``: subscriptions, their deliveries, replay and the test ping (scope ``admin``)."""

from __future__ import annotations

from flask import Blueprint, request
from sqlalchemy import select

from mdmserver.api.auth import current_actor, current_token, requires_scope
from mdmserver.api.jsonapi import (
    document,
    jsonapi_response,
    list_document,
    load_attributes,
    paginate,
    parse_bool,
    parse_list_query,
    parse_resource_body,
)
from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.selection.filters import split_list
from mdmserver.webhooks import service
from mdmserver.webhooks.models import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)
from mdmserver.webhooks.models import WebhookSubscriptionEvent as Subscribed
from mdmserver.webhooks.schemas import (
    WebhookCreateSchema,
    WebhookUpdateSchema,
    delivery_resource,
    webhook_resource,
)

bp = Blueprint("webhooks", __name__, url_prefix="/api/v1")

TYPE = "webhooks"
_STATUSES = {s.value for s in DeliveryStatus}


def _statuses(value: str):
    wanted = split_list(value)
    unknown = sorted(set(wanted) - _STATUSES)
    if unknown:
        raise ValueError(f"unknown status {', '.join(unknown)}; one of {', '.join(sorted(_STATUSES))}")
    return WebhookDelivery.status.in_(wanted)


def _shows_secrets() -> bool:
    """Whether this token was given the ``secrets`` scope itself: every webhook route needs ``admin``
    (which implies ``secrets`` elsewhere), so an admin token alone sees a secret only when it is created
    or rotated."""
    token = current_token()
    return token is not None and "secrets" in token.scope_set


def _resources(subscriptions: list[WebhookSubscription]) -> list[dict]:
    types = service.event_types(db.session, [s.id for s in subscriptions])
    reveal = _shows_secrets()
    box = secret_box() if reveal else None
    return [webhook_resource(s, types[s.id], secret=service.reveal_secret(s, box=box) if box else None)
            for s in subscriptions]


def _deliveries(deliveries: list[WebhookDelivery]) -> list[dict]:
    events, attempts = service.delivery_details(db.session, deliveries)
    return [delivery_resource(d, events[d.event_id], attempts[d.id]) for d in deliveries]


@bp.get("/webhooks")
@requires_scope("admin")
def list_webhooks():
    """Webhook subscriptions (each secret only to a token that was given the ``secrets`` scope itself)."""
    query = parse_list_query(
        request.args,
        filters={
            "enabled": lambda v: WebhookSubscription.enabled.is_(parse_bool(v)),
            "event_type": lambda v: WebhookSubscription.id.in_(
                select(Subscribed.subscription_id).where(Subscribed.event_type.in_(split_list(v)))),
        },
        sorts={"id": WebhookSubscription.id, "name": WebhookSubscription.name,
               "created_at": WebhookSubscription.created_at},
        default_sort=[WebhookSubscription.id.asc()],
    )
    page = paginate(db.session, select(WebhookSubscription), query)
    return jsonapi_response(list_document(page, _resources(list(page.items))))


@bp.post("/webhooks")
@requires_scope("admin")
def create_webhook():
    """Subscribe a URL to event types; the answer carries the signing secret, shown this once."""
    _, attributes = parse_resource_body(None, TYPE)
    values = load_attributes(WebhookCreateSchema(), attributes, "webhook")
    subscription, secret = service.create_subscription(db.session, values, box=secret_box(), actor=current_actor())
    db.session.commit()
    types = service.event_types(db.session, [subscription.id])[subscription.id]
    return jsonapi_response(document(webhook_resource(subscription, types, secret=secret)), status=201,
                            headers={"Location": f"/api/v1/webhooks/{subscription.id}"})


@bp.get("/webhooks/<webhook_id>")
@requires_scope("admin")
def get_webhook(webhook_id: str):
    """One webhook subscription."""
    return jsonapi_response(document(_resources([service.get_subscription(db.session, webhook_id)])[0]))


@bp.patch("/webhooks/<webhook_id>")
@requires_scope("admin")
def update_webhook(webhook_id: str):
    """Change a webhook's name, URL, event types or enabled flag."""
    subscription = service.get_subscription(db.session, webhook_id)
    _, attributes = parse_resource_body(None, TYPE, require_id=subscription.id)
    service.update_subscription(db.session, subscription, load_attributes(WebhookUpdateSchema(), attributes, "webhook"))
    db.session.commit()
    return jsonapi_response(document(_resources([subscription])[0]))


@bp.delete("/webhooks/<webhook_id>")
@requires_scope("admin")
def delete_webhook(webhook_id: str):
    """Delete a webhook and its deliveries."""
    service.delete_subscription(db.session, service.get_subscription(db.session, webhook_id))
    db.session.commit()
    return jsonapi_response(None, status=204)


@bp.post("/webhooks/<webhook_id>/rotate_secret")
@requires_scope("admin")
def rotate_secret(webhook_id: str):
    """A new signing secret (in the answer, shown this once); the old one signs nothing from now on."""
    subscription = service.get_subscription(db.session, webhook_id)
    secret = service.rotate_secret(db.session, subscription, box=secret_box())
    db.session.commit()
    types = service.event_types(db.session, [subscription.id])[subscription.id]
    return jsonapi_response(document(webhook_resource(subscription, types, secret=secret)))


@bp.post("/webhooks/<webhook_id>/ping")
@requires_scope("admin")
def ping(webhook_id: str):
    """Queue a ``ping`` event for this webhook (202); its delivery shows what the receiver answered."""
    delivery = service.ping(db.session, service.get_subscription(db.session, webhook_id))
    db.session.commit()
    return jsonapi_response(document(_deliveries([delivery])[0]), status=202)


@bp.get("/webhooks/<webhook_id>/deliveries")
@requires_scope("admin")
def list_deliveries(webhook_id: str):
    """The webhook's deliveries, newest first, with each attempt's answer (filter by status, event type)."""
    subscription = service.get_subscription(db.session, webhook_id)
    query = parse_list_query(
        request.args,
        filters={
            "status": _statuses,
            "event_type": lambda v: WebhookDelivery.event_id.in_(
                select(WebhookEvent.id).where(WebhookEvent.type.in_(split_list(v)))),
        },
        sorts={"id": WebhookDelivery.id, "created_at": WebhookDelivery.created_at},
        default_sort=[WebhookDelivery.id.desc()],
    )
    page = paginate(db.session, select(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription.id),
                    query)
    return jsonapi_response(list_document(page, _deliveries(list(page.items))))


@bp.get("/webhooks/<webhook_id>/deliveries/<delivery_id>")
@requires_scope("admin")
def get_delivery(webhook_id: str, delivery_id: str):
    """One delivery with its attempts."""
    delivery = service.get_delivery(db.session, service.get_subscription(db.session, webhook_id), delivery_id)
    return jsonapi_response(document(_deliveries([delivery])[0]))


@bp.post("/webhooks/<webhook_id>/deliveries/<delivery_id>/replay")
@requires_scope("admin")
def replay_delivery(webhook_id: str, delivery_id: str):
    """Send a delivery again (202): pending now, with a fresh set of attempts."""
    delivery = service.get_delivery(db.session, service.get_subscription(db.session, webhook_id), delivery_id)
    service.replay(db.session, delivery)
    db.session.commit()
    return jsonapi_response(document(_deliveries([delivery])[0]), status=202)
