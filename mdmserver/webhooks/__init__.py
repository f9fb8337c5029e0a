"""Webhooks: subscriptions, the event outbox and its delivery worker (issue 16 item 3)."""
