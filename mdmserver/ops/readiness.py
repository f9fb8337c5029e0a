"""Readiness checks: the database answers, migrations are current, and any check a feature registers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.orm import Session

from mdmserver.db import is_database_busy

BUSY = "busy: another connection holds the database lock; retry shortly"


class Advisory(str):
    """A check's result that is reported instead of ``ok`` but leaves the server ready (something not
    set up yet, such as the push certificate of a fresh server)."""


# name -> function returning None when healthy, else a short problem description (or an Advisory)
_checks: dict[str, Callable[[Session], str | None]] = {}

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


def register_check(name: str, check: Callable[[Session], str | None]) -> None:
    _checks[name] = check


def alembic_config(database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url:
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def script_heads() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def is_ready(checks: dict[str, str]) -> bool:
    """Every check is ``ok`` or only advises."""
    return all(value == "ok" or isinstance(value, Advisory) for value in checks.values())


def run_checks(session: Session) -> dict[str, str]:
    """Each check's result: ``ok`` or the problem."""
    results: dict[str, str] = {}
    try:
        session.execute(text("SELECT 1"))
        results["database"] = "ok"
    except Exception as exc:  # any driver failure means not ready
        session.rollback()
        results["database"] = BUSY if is_database_busy(exc) else f"unreachable: {type(exc).__name__}"
        return results
    current = set(MigrationContext.configure(session.connection()).get_current_heads())
    expected = script_heads()
    results["migrations"] = "ok" if current == expected else (
        f"database at {sorted(current) or 'nothing'}, code expects {sorted(expected)}: run `mdmserver db upgrade`"
    )
    for name, check in _checks.items():
        try:
            problem = check(session)
        except Exception as exc:  # a failing check reports, it does not crash the probe
            session.rollback()
            problem = BUSY if is_database_busy(exc) else f"check failed: {type(exc).__name__}"
        results[name] = problem or "ok"
    return results
