"""The models and the migrations describe the same schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from mdmserver.db import db
from mdmserver.ops.readiness import script_heads


def test_models_match_migrations(app):
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, db.metadata)
    summary = [_describe(entry) for entry in diff]
    assert summary == [], f"models and migrations differ; write a migration for: {summary}"


def _describe(entry) -> str:
    if isinstance(entry, list):  # column-level changes come as lists of tuples
        return "; ".join(_describe(item) for item in entry)
    operation, *rest = entry
    names = [getattr(part, "name", None) or str(part) for part in rest[:3]]
    return f"{operation} {' '.join(str(n) for n in names)}"


def test_database_is_at_every_head(app):
    with app.app_context(), db.engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    assert current == script_heads()
