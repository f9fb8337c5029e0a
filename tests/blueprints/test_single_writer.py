"""One writer per table: only ``blueprints/service.py`` writes the blueprint tables (the profile and app
reconciles read them through ``selection/blueprints.py``; ``apps/service.py`` reads one by name)."""

from __future__ import annotations

import re
from pathlib import Path

import mdmserver

ROOT = Path(mdmserver.__file__).parent
WRITER = "mdmserver/blueprints/service.py"
_MODELS = "Blueprint|BlueprintProfile|BlueprintApp|BlueprintTarget|BlueprintMember|BlueprintOSUpdate"
_TABLES = "blueprints|blueprint_profiles|blueprint_apps|blueprint_targets|blueprint_members|blueprint_os_updates"
WRITES = re.compile(rf"\b(insert|update|delete)\(\s*({_MODELS})(\.__table__)?\s*\)|\b({_MODELS})\((?![\"'])"
                    rf"|(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?({_TABLES})\"?\s", re.IGNORECASE)


def test_only_the_blueprints_service_writes_its_tables():
    writers = {str(path.relative_to(ROOT.parent)) for path in ROOT.rglob("*.py")
               if not str(path).endswith("records/blueprints.py") and WRITES.search(path.read_text())}
    assert writers == {WRITER}


def test_the_pattern_sees_a_write():
    assert WRITES.search("session.execute(insert(BlueprintMember), rows)")
    assert WRITES.search("session.add(Blueprint(name='x'))")
    assert not WRITES.search("select(BlueprintMember.device_id)")
    assert not WRITES.search('bp = Blueprint("groups", __name__)')  # Flask's
