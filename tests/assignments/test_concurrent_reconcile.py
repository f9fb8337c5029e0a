"""Concurrent reconciles of one profile queue each InstallProfile once (real connections, no test transaction)."""

from __future__ import annotations

from mdmserver.assignments.models import ProfileAssignment
from mdmserver.assignments.service import reconcile
from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.profiles.models import Profile
from tests.concurrency import commands_per_device, race
from tests.conftest import make_app
from tests.factories import make_device, make_wifi_profile


def test_concurrent_reconciles_do_not_double_queue(tmp_path):
    app, cleanup = make_app(tmp_path)
    try:
        with app.app_context():
            session = db.session
            profile = make_wifi_profile(session, "com.example.race")
            devices = [make_device(session, i) for i in range(20)]
            session.add_all(ProfileAssignment(profile_id=profile.id, device_id=d.id) for d in devices)
            session.commit()
            profile_id = profile.id

        errors = race(app, lambda own: reconcile(own, own.get(Profile, profile_id), actor="race", box=secret_box()))
        assert errors == []
        per_device = commands_per_device(app, "InstallProfile")
        assert len(per_device) == 20 and set(per_device.values()) == {1}
    finally:
        cleanup()
