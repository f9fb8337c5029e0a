"""One module writes the command queue: every INSERT, UPDATE and DELETE on ``commands`` is in
``mdmserver/commands/service.py`` (issue 10: "who writes ``commands``?" has one answer)."""

from __future__ import annotations

import re
from pathlib import Path

import mdmserver

ROOT = Path(mdmserver.__file__).parent
WRITER = ROOT / "commands" / "service.py"
ORM_WRITE = re.compile(r"\b(insert|update|delete)\(\s*Command\s*\)")
CORE_WRITE = re.compile(r"\b(insert|update|delete)\(\s*(Command\.__table__|commands_table)\s*\)")
TEXT_WRITE = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?commands\"?\b", re.IGNORECASE)


def _writers(pattern: re.Pattern[str]) -> set[str]:
    return {str(path.relative_to(ROOT.parent)) for path in ROOT.rglob("*.py") if pattern.search(path.read_text())}


def test_only_the_commands_service_writes_the_queue():
    assert _writers(ORM_WRITE) == {"mdmserver/commands/service.py"}
    assert _writers(CORE_WRITE) <= {"mdmserver/commands/service.py"}
    assert _writers(TEXT_WRITE) <= {"mdmserver/commands/service.py"}


def test_the_patterns_see_a_writer():
    """The patterns match the forms the writer uses (so an empty result above means something)."""
    text = WRITER.read_text()
    assert {m.group(1) for m in ORM_WRITE.finditer(text)} == {"insert", "update", "delete"}
    assert TEXT_WRITE.search('text("DELETE FROM commands WHERE id = :id")')
    assert CORE_WRITE.search("update(Command.__table__)")
