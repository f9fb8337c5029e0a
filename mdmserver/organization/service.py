from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mdmserver.audit.service import record_event
from mdmserver.errors import ServiceUnavailable
from mdmserver.organization.models import Organization


def _default_prefix(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "mdm"
    return f"com.{slug}.mdm"


def enrollment_profile_identifier(payload_prefix: str) -> str:
    """The PayloadIdentifier of the enrollment profile issued under this payload prefix."""
    return f"{payload_prefix.rstrip('.')}.enroll"


def ensure_organization(session: Session, name: str) -> Organization:
    """Create the organization row on first run (idempotent)."""
    row = session.scalar(select(Organization).order_by(Organization.id).limit(1))
    if row is None:
        row = Organization(name=name, payload_prefix=_default_prefix(name), x509_o=name[:64])
        session.add(row)
        session.flush()
    return row


def get_organization(session: Session) -> Organization:
    row = session.scalar(select(Organization).order_by(Organization.id).limit(1))
    if row is None:
        raise ServiceUnavailable("the server is not initialised: run `mdmserver init`")
    return row


def update_organization(session: Session, changes: dict[str, Any]) -> Organization:
    row = get_organization(session)
    before = {key: getattr(row, key) for key in changes}
    for key, value in changes.items():
        setattr(row, key, value)
    record_event(session, "organization:update", "organizations", row.id, {"before": before, "after": changes})
    session.commit()
    return row
