"""``mdmserver identities purge``: delete enrollment identities never used for an Authenticate."""

from __future__ import annotations

from datetime import timedelta

import click
from flask.cli import with_appcontext

from mdmserver.checkin.enrollment import UNUSED_IDENTITY_AGE, purge_unused_identities
from mdmserver.db import db


@click.group("identities")
def identities_group() -> None:
    """Device identities issued by /mdm/enroll."""


@identities_group.command("purge")
@click.option("--hours", type=click.IntRange(0, 24 * 36500), default=None,
              help=f"Age after which an unused identity goes (default {UNUSED_IDENTITY_AGE.days * 24}).")
@with_appcontext
def purge(hours: int | None) -> None:
    """Delete device certificates issued by /mdm/enroll that no device is bound to, once they are
    older than the age (the push worker does this every hour)."""
    age = UNUSED_IDENTITY_AGE if hours is None else timedelta(hours=hours)
    deleted = purge_unused_identities(db.session, older_than=age)
    click.echo(f"{deleted} unused enrollment identities older than {age} deleted")


commands = [identities_group]
