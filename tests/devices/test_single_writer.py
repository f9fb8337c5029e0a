"""One module writes ``devices``: every INSERT, UPDATE and DELETE on it, and every change of a loaded
``Device``'s columns, is in ``mdmserver/devices/service.py`` (issue 10: "who writes ``devices``?" has
one answer). Deleting a device's commands first is the queue's business (``commands/service.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import mdmserver

ROOT = Path(mdmserver.__file__).parent
WRITER = "mdmserver/devices/service.py"
#: Core/ORM statements on the table, constructing a row, and assigning a column of a loaded device
PATTERNS = {
    "statement": re.compile(r"\b(insert|update|delete)\(\s*Device\s*\)"),
    "core": re.compile(r"\b(insert|update|delete)\(\s*Device\.__table__\s*\)"),
    "text": re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?devices\"?\s", re.IGNORECASE),
    "new row": re.compile(r"(?<![\w.])Device\("),
    "column assignment": re.compile(r"\b(device|existing|holder|bound)\.[a-z_]+\s*=(?!=)"),
    "setattr": re.compile(r"setattr\(\s*device\b"),
    "session.delete": re.compile(r"session\.delete\(\s*device\b"),
}


def _writers(pattern: re.Pattern[str]) -> set[str]:
    found = set()
    for path in ROOT.rglob("*.py"):
        relative = str(path.relative_to(ROOT.parent))
        if relative.startswith(("mdmserver/simulator/", "mdmserver/records/")) or relative.endswith("/models.py"):
            continue  # the simulator is the device's side; records and models define the tables
        if pattern.search(path.read_text()):
            found.add(relative)
    return found


def test_only_the_devices_service_writes_devices():
    for kind, pattern in PATTERNS.items():
        assert _writers(pattern) <= {WRITER}, kind


def test_the_patterns_see_the_writer():
    """Each pattern matches the form the writer uses (so an empty result above means something)."""
    text = (ROOT / "devices" / "service.py").read_text()
    for kind in ("statement", "new row", "column assignment", "setattr", "session.delete"):
        assert PATTERNS[kind].search(text), kind
    assert PATTERNS["text"].search('text("UPDATE devices SET push_token = NULL")')
    assert PATTERNS["core"].search("delete(Device.__table__)")
