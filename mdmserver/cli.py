"""The ``mdmserver`` command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from mdmserver.app import create_app, feature_modules
from mdmserver.audit.service import record_event
from mdmserver.backup import BackupError, create_backup, restore_backup
from mdmserver.bootstrap import (
    ADMIN_TOKEN_FILE,
    PRIVATE_UMASK,
    downgrade_database,
    initialize,
    upgrade_database,
)
from mdmserver.config import ConfigError, public_url_warning
from mdmserver.db import DatabaseUnavailable, check_connection, db, isoformat
from mdmserver.errors import AppError
from mdmserver.jobs import run_standalone
from mdmserver.pki.service import load_secret_box
from mdmserver.server import TlsFiles, check_tls_files, serve
from mdmserver.tokens import service as tokens
from mdmserver.tokens.models import SCOPES


def _create_app(*_args):
    return create_app()


cli = FlaskGroup(
    name="mdmserver",
    create_app=_create_app,
    add_default_commands=False,
    add_version_option=False,
    load_dotenv=False,
    help="mdmserver: a self-hosted MDM server for Apple devices.",
)


@cli.command("init")
@with_appcontext
def init_command() -> None:
    """Run migrations and create the CA, server identity, organization and first admin token (idempotent)."""
    app = current_app._get_current_object()
    Path(app.config["DATA_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)  # where SQLite's file goes
    _require_database()
    token_file = initialize(app)
    click.echo(f"data directory: {app.config['DATA_DIR']}", err=True)
    if token_file is not None:
        click.echo(f"first admin token written to {token_file} (mode 0600)", err=True)
        if token_file.name != ADMIN_TOKEN_FILE:
            click.echo(f"{token_file.with_name(ADMIN_TOKEN_FILE)} already existed (a token of another database?) and "
                       f"was left as it was: the new database's token is the one in {token_file}", err=True)
    _warn_public_url(app.config["PUBLIC_URL"])


def _require_database() -> None:
    """Stop now, with the fix, when the configured database cannot be reached (:func:`check_connection`)."""
    check_connection(db.engine, current_app.config["DATABASE_URL"])


def _warn_public_url(public_url: str) -> None:
    warning = public_url_warning(public_url)
    if warning is not None:
        click.secho(f"WARNING: {warning}", err=True, fg="red", bold=True)


@cli.command("serve")
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--worker-connections", default=1000, show_default=True, type=click.IntRange(1, 100_000),
              help="Connections one worker holds open at most (kept-alive ones included); more wait for "
                   "another worker.")
@click.option("--no-push-worker", is_flag=True, help="Do not run the in-process push worker.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path),
              help="Serve HTTPS: PEM server certificate followed by its intermediates (the full chain).")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path),
              help="PEM private key of --tls-cert (unencrypted; keep it mode 0600).")
@with_appcontext
def serve_command(
    bind: str, workers: int, threads: int, worker_connections: int, no_push_worker: bool, tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """Serve with gunicorn (and, in the embedded setup, exactly one push worker); HTTPS with --tls-cert
    and --tls-key, or plain HTTP behind a TLS proxy (docs/deploy.md)."""
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    tls = TlsFiles(tls_cert, tls_key) if tls_cert is not None else None
    _warn_public_url(current_app.config["PUBLIC_URL"])
    if tls is not None:
        check_tls_files(tls)  # unusable files first: they are named whatever the database's state
    _require_database()
    db.engine.dispose()  # no connection of the master's is inherited by the forked workers
    serve(current_app.config, bind=bind, workers=workers, threads=threads, worker_connections=worker_connections,
          push_worker=not no_push_worker, tls=tls)


@cli.command("push-worker")
@with_appcontext
def push_worker_command() -> None:
    """Run a standalone push worker, with the upkeep jobs (several may run against one PostgreSQL database)."""
    _require_database()
    run_standalone(current_app._get_current_object())


@cli.group("tokens")
def tokens_group() -> None:
    """Admin API tokens."""


@tokens_group.command("create")
@click.option("--name", required=True)
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(SCOPES))
@with_appcontext
def tokens_create(name: str, scopes: tuple[str, ...]) -> None:
    """Create a token and print it (the only line on stdout; it is not shown again)."""
    try:
        row, token = tokens.create_token(db.session, name, scopes)
        record_event(db.session, "token:create", "api_tokens", row.id, {"name": name, "scopes": sorted(scopes)})
        db.session.commit()
    except AppError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(token)


@tokens_group.command("list")
@with_appcontext
def tokens_list() -> None:
    """List tokens (names, scopes, last use; never the tokens)."""
    for row in tokens.list_tokens(db.session):
        state = "revoked" if row.revoked_at else "active"
        click.echo(f"{row.name}\t{row.scopes}\t{state}\tlast used {isoformat(row.last_used_at) or 'never'}")


@tokens_group.command("revoke")
@click.argument("name")
@with_appcontext
def tokens_revoke(name: str) -> None:
    """Revoke a token by name."""
    try:
        row = tokens.revoke_token(db.session, name)
        record_event(db.session, "token:revoke", "api_tokens", row.id, {"name": name})
        db.session.commit()
    except AppError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"revoked {name}", err=True)


@cli.group("db")
def db_group() -> None:
    """Database migrations."""


@db_group.command("upgrade")
@click.argument("revision", default="heads")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: all heads)."""
    upgrade_database(current_app._get_current_object(), revision)


@db_group.command("downgrade")
@click.argument("revision")
@with_appcontext
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION."""
    downgrade_database(current_app._get_current_object(), revision)


class _BackupFailed(click.ClickException):
    """A refused backup or restore: its reason on stderr, exit status 2."""

    exit_code = 2


@cli.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def backup_command(file: Path) -> None:
    """Write FILE (tar.gz, mode 0600): a consistent copy of the database (SQLite's online backup, or
    PostgreSQL's pg_dump of the configured schema), the secret key and the data directory's other files."""
    try:
        manifest = create_backup(current_app.config, file)
    except BackupError as exc:
        raise _BackupFailed(str(exc)) from None
    names = ", ".join(entry["name"] for entry in manifest["files"])
    click.echo(f"backup written to {file} (mode 0600): {names}", err=True)
    click.echo("keep it as safe as the server: it holds the secret key that opens every stored private key",
               err=True)


@cli.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace the existing database, secret key and data files.")
@with_appcontext
def restore_command(file: Path, force: bool) -> None:
    """Restore FILE made by `mdmserver backup` (stop the server first). The archive is checked (manifest,
    digests, the database, the secret key opening a stored private key) before anything is replaced;
    existing data is replaced only with --force. PostgreSQL: pg_restore into the configured database and
    schema, in one transaction."""
    db.engine.dispose()  # no pooled connection keeps the file being replaced
    try:
        manifest = restore_backup(current_app.config, file, force=force)
    except BackupError as exc:
        raise _BackupFailed(str(exc)) from None
    load_secret_box.cache_clear()
    click.echo(f"restored the backup of {manifest['created_at']} (database revision "
               f"{manifest['database']['alembic_revision']}); run `mdmserver init` to apply newer migrations",
               err=True)


click.version_option(package_name="mdmserver", prog_name="mdmserver", message="%(prog)s %(version)s")(cli)

for _module in feature_modules("cli"):
    for _command in getattr(_module, "commands", []):
        cli.add_command(_command)


def main() -> None:
    # Everything the server writes (secret key, SQLite database and its WAL, admin token) is for
    # its own user only; gunicorn's workers and the push worker inherit the mask.
    os.umask(PRIVATE_UMASK)
    try:
        sys.exit(cli.main(prog_name="mdmserver"))
    except ConfigError as exc:
        click.echo(f"mdmserver: configuration error: {exc.detail}", err=True)
        sys.exit(2)
    except DatabaseUnavailable as exc:
        click.echo(f"mdmserver: {exc}", err=True)
        sys.exit(2)
