"""The import contracts of ``make lint`` (``lint-imports``, configured in pyproject.toml) hold on this
tree and break when a forbidden import is added.

Each case copies the package and pyproject.toml into a temporary directory, changes the copy, and runs
``lint-imports`` there with the copy first on the import path, so the contracts are checked against the
changed code, never against the installed tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed")


def _copy_tree(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "mdmserver",
        tmp_path / "mdmserver",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _append(tree: Path, module: str, line: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"\n{line}\n")


def test_contracts_hold_on_the_unmodified_tree(tmp_path: Path) -> None:
    result = _lint_imports(_copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert " broken" in result.stdout and "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract", "chain"),
    [
        (
            "mdmserver.protocol.plist",
            "import flask  # noqa",
            "Protocol and pure crypto import neither Flask nor SQLAlchemy nor the database",
            "mdmserver.protocol.plist -> flask",
        ),
        (
            "mdmserver.pki.cms",
            "import mdmserver.db  # noqa",
            "Protocol and pure crypto import neither Flask nor SQLAlchemy nor the database",
            "mdmserver.pki.cms -> mdmserver.db",
        ),
        (
            "mdmserver.protocol.checkin",
            "import mdmserver.assignments  # noqa",
            "Protocol and pure crypto import no other mdmserver package",
            "mdmserver.protocol.checkin -> mdmserver.assignments",
        ),
        (
            "mdmserver.push.apns",
            "import mdmserver.assignments  # noqa",
            "The APNs HTTP/2 client imports no feature package",
            "mdmserver.push.apns -> mdmserver.assignments",
        ),
        (  # issue 10: the worker's upkeep lives in mdmserver.jobs, above push
            "mdmserver.push.worker",
            "import mdmserver.assignments  # noqa",
            "Push is below the queue and the features",
            "mdmserver.push.worker -> mdmserver.assignments",
        ),
        (
            "mdmserver.push.service",
            "import mdmserver.commands.service  # noqa",
            "Push is below the queue and the features",
            "mdmserver.push.service -> mdmserver.commands.service",
        ),
        (
            "mdmserver.api.requests",
            "import mdmserver.records.devices  # noqa",
            "The shared floor (db, errors, config, api plumbing, tokens, audit, ops)",
            "mdmserver.api.requests -> mdmserver.records.devices",
        ),
        (
            "mdmserver.simulator.device",
            "import mdmserver.commands.service  # noqa",
            "The device simulator talks HTTP only",
            "mdmserver.simulator.device -> mdmserver.commands.service",
        ),
        (
            "mdmserver.checkin.views",
            "import mdmserver.simulator.device  # noqa",
            "No server package imports the device simulator",
            "mdmserver.checkin.views -> mdmserver.simulator.device",
        ),
        # the floors (issue 10): a view imports no other view; a floor imports nothing above it
        (
            "mdmserver.users.views",
            "import mdmserver.devices.views  # noqa",
            "Floors, top to bottom",
            "mdmserver.users.views -> mdmserver.devices.views",
        ),
        (
            "mdmserver.groups.service",
            "import mdmserver.workflows  # noqa",
            "Floors, top to bottom",
            "mdmserver.groups.service -> mdmserver.workflows",
        ),
        (
            "mdmserver.commands.service",
            "import mdmserver.assignments.service  # noqa",
            "Floors, top to bottom",
            "mdmserver.commands.service -> mdmserver.assignments.service",
        ),
        (
            "mdmserver.devices.service",
            "import mdmserver.commands.service  # noqa",
            "Floors, top to bottom",
            "mdmserver.devices.service -> mdmserver.commands.service",
        ),
        (
            "mdmserver.profiles.models",
            "import mdmserver.pki.service  # noqa",
            "Floors, top to bottom",
            "mdmserver.profiles.models -> mdmserver.pki.service",
        ),
        # the records below selection, selection below the features (issue 10, models counted)
        (
            "mdmserver.selection.filters",
            "import mdmserver.assignments.models  # noqa",
            "The records (the tables every feature selects devices by) and selection import no feature package",
            "mdmserver.selection.filters -> mdmserver.assignments.models",
        ),
        (
            "mdmserver.records.devices",
            "import mdmserver.devices.schemas  # noqa",
            "The records (the tables every feature selects devices by) and selection import no feature package",
            "mdmserver.records.devices -> mdmserver.devices.schemas",
        ),
    ],
)
def test_a_forbidden_import_breaks_lint(
    tmp_path: Path, module: str, line: str, contract: str, chain: str
) -> None:
    tree = _copy_tree(tmp_path)
    _append(tree, module, line)

    result = _lint_imports(tree)

    assert result.returncode == 1, result.stdout + result.stderr
    output = " ".join(result.stdout.split())  # lint-imports wraps long lines
    assert f"{contract}" in output and "BROKEN" in output, output
    assert chain in output, output


IMPORT_CYCLES = ROOT / "tools" / "import_cycles.py"


def _import_cycles(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, str(IMPORT_CYCLES)], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


def test_no_package_cycle_with_models_and_schemas_counted(tmp_path: Path) -> None:
    result = _import_cycles(_copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no import cycle" in result.stdout


def test_a_cycle_inside_one_floor_is_caught(tmp_path: Path) -> None:
    """Two packages of the resources floor importing each other: the floors contract allows it
    (siblings), tools/import_cycles.py (run by make lint) does not."""
    tree = _copy_tree(tmp_path)
    _append(tree, "mdmserver.groups.service", "import mdmserver.users.service  # noqa")
    _append(tree, "mdmserver.users.service", "import mdmserver.groups.service  # noqa")
    assert _lint_imports(tree).returncode == 0
    result = _import_cycles(tree)
    assert result.returncode == 1, result.stdout
    assert "cycle of 2: groups, users" in result.stdout


def test_a_cycle_through_a_packages_models_is_caught(tmp_path: Path) -> None:
    """A package's models count as the package: selection reading a table that a feature above it keeps
    in its own models module closes a cycle (selection -> profiles -> selection)."""
    tree = _copy_tree(tmp_path)
    _append(tree, "mdmserver.profiles.service", "import mdmserver.selection.filters  # noqa")
    _append(tree, "mdmserver.selection.filters", "import mdmserver.profiles.models  # noqa")
    result = _import_cycles(tree)
    assert result.returncode == 1, result.stdout
    assert "cycle of 2: profiles, selection" in result.stdout
    assert "    selection -> profiles" in result.stdout
