"""First-run and upgrade tasks shared by the CLI and the tests."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from flask import Flask
from sqlalchemy import select

from mdmserver.db import db
from mdmserver.ops.readiness import alembic_config
from mdmserver.organization.service import ensure_organization
from mdmserver.pki.service import ensure_ca_and_identity
from mdmserver.tokens.models import ApiToken
from mdmserver.tokens.service import create_token

FIRST_TOKEN_NAME = "initial-admin"


def upgrade_database(app: Flask, revision: str = "heads") -> None:
    with app.app_context(), db.engine.begin() as connection:
        config = alembic_config(app.config["DATABASE_URL"])
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade_database(app: Flask, revision: str) -> None:
    with app.app_context(), db.engine.begin() as connection:
        config = alembic_config(app.config["DATABASE_URL"])
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def initialize(app: Flask) -> Path | None:
    """Idempotent set-up: migrations, organization, CA and server identity, first admin token.

    Returns the path of the file holding the first admin token when this call created it.
    """
    data_dir = Path(app.config["DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    upgrade_database(app)
    with app.app_context():
        session = db.session
        organization = ensure_organization(session, app.config["ORGANIZATION_NAME"])
        ensure_ca_and_identity(session, organization.name)
        token_file = None
        if session.scalar(select(ApiToken.id).limit(1)) is None:
            _, token = create_token(session, FIRST_TOKEN_NAME, ["admin"])
            token_file = data_dir / "admin-token"
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(token + "\n")
        session.commit()
        return token_file
