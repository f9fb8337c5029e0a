"""``mdmserver commands purge``: retention of finished commands."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from mdmserver.commands import service
from mdmserver.db import db


@click.group("commands")
def commands_group() -> None:
    """The command queue."""


@commands_group.command("purge")
@click.option("--days", type=click.IntRange(0, 36500), default=None,
              help="Keep finished commands this many days (default: the retention_days setting).")
@with_appcontext
def purge(days: int | None) -> None:
    """Mark overdue commands expired and delete finished commands older than the retention, in batches."""
    retention = current_app.config["RETENTION_DAYS"] if days is None else days
    deleted = service.purge_finished(db.session, retention_days=retention)
    click.echo(f"{deleted} finished commands older than {retention} days deleted")


commands = [commands_group]
