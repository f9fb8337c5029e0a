"""Services receive their collaborators: nothing below the entry floor reads ``flask.current_app`` or
``flask.g``, and no module imports another ``mdmserver`` module inside a function (to dodge a cycle).

The entry floor is every ``*.views`` and ``*.cli`` module, ``mdmserver.cli``, ``mdmserver.app``,
``mdmserver.collaborators`` (which turns the running app into a secret box for the services), the
request plumbing of ``mdmserver.api`` and the request hooks of ``mdmserver.ops.metrics``. Each check
scans a tree given as an argument, so the tests below also run it on a copy with a planted use (as
``test_layers.py`` does for the import contracts) and see it fail.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from mdmserver.audit.models import AuditEvent
from mdmserver.audit.service import NO_REQUEST, audit_context, record_event

ROOT = Path(__file__).resolve().parents[2]

#: Modules allowed to read Flask's application and request globals.
ENTRY_FLOOR = ("mdmserver.cli", "mdmserver.app", "mdmserver.collaborators", "mdmserver.ops.metrics")
ENTRY_PACKAGES = ("mdmserver.api",)
ENTRY_SUFFIXES = (".views", ".cli")
FLASK_GLOBALS = frozenset({"current_app", "g"})

#: Function-level imports still waiting for their fix, each with its owner. ``admission.service``
#: asks the queue for a push after an acceptance: the "device accepted → push if queued" reaction
#: moves to ``mdmserver.workflows`` (issue 10 item 3, the ``floors`` slice).
KNOWN_FUNCTION_IMPORTS: frozenset[tuple[str, str]] = frozenset()


def _modules(tree: Path):
    for path in sorted((tree / "mdmserver").rglob("*.py")):
        parts = path.relative_to(tree).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_entry(module: str) -> bool:
    return (
        module in ENTRY_FLOOR
        or module.endswith(ENTRY_SUFFIXES)
        or any(module == p or module.startswith(p + ".") for p in ENTRY_PACKAGES)
    )


def flask_global_reads(tree: Path) -> list[str]:
    """``module:line name`` of every import or attribute use of ``flask.current_app`` / ``flask.g``
    below the entry floor."""
    found = []
    for module, parsed in _modules(tree):
        if _is_entry(module):
            continue
        for node in ast.walk(parsed):
            if isinstance(node, ast.ImportFrom) and node.module in ("flask", "flask.globals"):
                found += [f"{module}:{node.lineno} {a.name}" for a in node.names if a.name in FLASK_GLOBALS]
            elif (isinstance(node, ast.Attribute) and node.attr in FLASK_GLOBALS
                  and isinstance(node.value, ast.Name) and node.value.id == "flask"):
                found.append(f"{module}:{node.lineno} flask.{node.attr}")
    return found


def function_level_imports(tree: Path) -> set[tuple[str, str]]:
    """(module, imported) for every ``mdmserver`` import inside a function body."""
    found = set()
    for module, parsed in _modules(tree):
        for func in ast.walk(parsed):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mdmserver"):
                    found.add((module, node.module))
                elif isinstance(node, ast.Import):
                    found |= {(module, a.name) for a in node.names if a.name.startswith("mdmserver")}
    return found


def test_nothing_below_the_views_reads_flask_globals() -> None:
    assert flask_global_reads(ROOT) == []


def test_no_new_function_level_imports() -> None:
    assert function_level_imports(ROOT) == KNOWN_FUNCTION_IMPORTS


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "mdmserver", tmp_path / "mdmserver", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _append(tree: Path, module: str, text: str) -> None:
    with (tree / (module.replace(".", "/") + ".py")).open("a", encoding="utf-8") as handle:
        handle.write("\n" + text + "\n")


@pytest.mark.parametrize(("module", "text", "expected"), [
    ("mdmserver.push.service", "from flask import current_app", "mdmserver.push.service:"),
    ("mdmserver.profiles.models", "from flask import g as _g", "mdmserver.profiles.models:"),
    ("mdmserver.audit.service", "import flask\n\ndef _actor():\n    return flask.g.api_token",
     "flask.g"),
    ("mdmserver.workflows", "from flask.globals import current_app as _app", "mdmserver.workflows:"),
])
def test_a_planted_flask_global_is_found(tmp_path: Path, module: str, text: str, expected: str) -> None:
    tree = _copy(tmp_path)
    _append(tree, module, text)
    found = flask_global_reads(tree)
    assert len(found) == 1 and expected in found[0], found


def test_flask_globals_stay_allowed_at_the_entry_floor(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    _append(tree, "mdmserver.groups.views", "from flask import current_app as _app")
    _append(tree, "mdmserver.api.requests", "from flask import g as _g")
    assert flask_global_reads(tree) == []


def test_a_planted_function_level_import_is_found(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    _append(tree, "mdmserver.push.service",
            "def _late():\n    from mdmserver.assignments import service\n\n    return service")
    assert function_level_imports(tree) - KNOWN_FUNCTION_IMPORTS == {
        ("mdmserver.push.service", "mdmserver.assignments")
    }


def test_the_request_binds_the_audit_context_and_unbinds_it(client, db_session, make_token) -> None:
    """A service records the request's token and id without reading ``g``; after the request the
    session holds no context, so a later direct call records ``cli`` as before."""
    token = make_token("write")
    response = client.patch(
        "/api/v1/organization", json={"data": {"type": "organizations", "attributes": {"phone": "2"}}},
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "collab-audit-1"},
    )
    assert response.status_code == 200
    event = db_session.scalar(select(AuditEvent).where(AuditEvent.request_id == "collab-audit-1"))
    assert event is not None and event.action == "organization:update" and event.actor.startswith("test-")
    assert audit_context(db_session) is NO_REQUEST
    direct = record_event(db_session, "test:direct", "tests", 1)
    assert (direct.actor, direct.request_id) == ("cli", None)
