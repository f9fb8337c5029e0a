"""``mdmserver push-cert import|show`` (``mdmserver push-worker`` is in ``mdmserver/cli.py``: it runs
:mod:`mdmserver.jobs`, which is above push)."""

from __future__ import annotations

from pathlib import Path

import click
from flask.cli import with_appcontext

from mdmserver.audit.service import record_event
from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.errors import AppError
from mdmserver.push import service


@click.group("push-cert")
def push_cert_group() -> None:
    """The APNs MDM push certificate."""


@push_cert_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM private key, when it is not inside FILE.")
@click.option("--password", default=None, help="Password of the PKCS#12 file or of the encrypted key.")
@with_appcontext
def push_cert_import(file: Path, key_file: Path | None, password: str | None) -> None:
    """Import FILE (PEM certificate [+ key] or PKCS#12); the topic is read from its UID."""
    try:
        row = service.import_push_certificate(
            db.session,
            file.read_bytes(),
            key_file.read_bytes() if key_file else None,
            password.encode() if password else None,
            box=secret_box(),
        )
        record_event(
            db.session, "push_certificate:import", "push_certificates", row.id,
            {"topic": row.topic, "not_after": row.not_after.isoformat()},
        )
        db.session.commit()
    except AppError as exc:
        db.session.rollback()
        raise click.ClickException(exc.detail) from None
    info = service.certificate_info(row)
    click.echo(f"push certificate imported: topic {row.topic}, expires {row.not_after:%Y-%m-%d} "
               f"({info['days_left']} days)")
    if info["warning"]:
        click.echo(f"warning: {info['warning']}", err=True)


@push_cert_group.command("show")
@with_appcontext
def push_cert_show() -> None:
    """Show the active push certificate."""
    row = service.get_active_certificate(db.session)
    if row is None:
        raise click.ClickException("no push certificate imported")
    info = service.certificate_info(row)
    for key in ("topic", "subject", "not_after", "days_left", "warning", "stopped_at", "stop_reason"):
        if info[key] is not None:
            click.echo(f"{key}: {info[key]}")


commands = [push_cert_group]
