"""Concurrent reconciles of one profile queue each InstallProfile once (real connections, no test transaction)."""

from __future__ import annotations

import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mdmserver.assignments.models import ProfileAssignment
from mdmserver.assignments.service import reconcile
from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.profiles.models import Profile
from mdmserver.records.commands import Command
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
            engine = db.engine

        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def run() -> None:
            with app.app_context(), Session(engine) as own:
                try:
                    barrier.wait(timeout=30)
                    reconcile(own, own.get(Profile, profile_id), actor="race", box=secret_box())
                    own.commit()
                except BaseException as exc:  # collected and asserted below
                    errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

        assert errors == []
        with app.app_context():
            per_device = db.session.execute(
                select(Command.device_id, func.count()).where(Command.request_type == "InstallProfile")
                .group_by(Command.device_id)
            ).all()
        assert len(per_device) == 20 and {count for _, count in per_device} == {1}
    finally:
        cleanup()
