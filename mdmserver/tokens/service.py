"""Creating, checking and revoking API tokens."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from mdmserver.db import is_database_busy, is_read_only, set_read_only, utcnow
from mdmserver.errors import Conflict, NotFound, UnprocessableEntity
from mdmserver.tokens.models import SCOPES, ApiToken

TOKEN_PREFIX = "mdm_"
LAST_USED_RESOLUTION = timedelta(minutes=1)

log = logging.getLogger("mdmserver.tokens")


def hash_token(token: str) -> str:
    """Tokens carry 256 random bits, so a plain SHA-256 is a safe and fast lookup key."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str, scopes: Iterable[str]) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the token itself, which is shown once and never stored."""
    scope_list = sorted(set(scopes))
    unknown = set(scope_list) - set(SCOPES)
    if not name or len(name) > 100:
        raise UnprocessableEntity("a token name of 1 to 100 characters is required")
    if not scope_list or unknown:
        raise UnprocessableEntity(f"scopes must be among {', '.join(SCOPES)}")
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise Conflict(f"a token named {name!r} exists")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(token), scopes=",".join(scope_list))
    session.add(row)
    session.flush()
    return row, token


def authenticate(session: Session, token: str) -> ApiToken | None:
    """The live token row for ``token``, or None. Records the last use at most once a minute."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        _record_use(session, row, now)
    return row


def _record_use(session: Session, row: ApiToken, now: datetime) -> None:
    """Write ``last_used_at`` in its own short transaction, so a read-only request stays a reader
    (on SQLite it never holds the write lock). Bookkeeping: a busy database skips it, it never
    fails the request."""
    read_only, token_id, name = is_read_only(session), row.id, row.name
    if read_only:
        session.commit()  # end the read; the write below is a transaction of its own
        set_read_only(session, False)
    try:
        session.execute(
            update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
        session.commit()
    except OperationalError as exc:
        session.rollback()
        if not is_database_busy(exc):
            raise
        log.info("database busy: last use of token %r not recorded", name)
    finally:
        set_read_only(session, read_only)


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.name)))


def revoke_token(session: Session, name: str) -> ApiToken:
    row = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if row is None:
        raise NotFound(f"no token named {name!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row
