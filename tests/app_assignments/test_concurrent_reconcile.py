"""Concurrent reconciles of one app queue each install once (real connections, no test transaction)."""

from __future__ import annotations

import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mdmserver.app_assignments.models import AppAssignment
from mdmserver.app_assignments.service import reconcile
from mdmserver.apps.models import App
from mdmserver.collaborators import secret_box
from mdmserver.db import db
from mdmserver.records.commands import Command
from tests.conftest import make_app as make_server
from tests.factories import make_app, make_device


def test_concurrent_reconciles_do_not_double_queue(tmp_path):
    server, cleanup = make_server(tmp_path)
    try:
        with server.app_context():
            session = db.session
            catalogue_app = make_app(session, "com.example.race")
            devices = [make_device(session, i, platform="ios") for i in range(20)]
            session.add_all(AppAssignment(app_id=catalogue_app.id, device_id=d.id) for d in devices)
            session.commit()
            app_id = catalogue_app.id
            engine = db.engine

        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def run() -> None:
            with server.app_context(), Session(engine) as own:
                try:
                    barrier.wait(timeout=30)
                    reconcile(own, own.get(App, app_id), actor="race", box=secret_box(),
                              public_url="https://mdm.example")
                    own.commit()
                except BaseException as exc:  # collected and asserted below
                    errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

        assert errors == []
        with server.app_context():
            per_device = db.session.execute(
                select(Command.device_id, func.count()).where(Command.request_type == "InstallApplication")
                .group_by(Command.device_id)
            ).all()
        assert len(per_device) == 20 and {count for _, count in per_device} == {1}
    finally:
        cleanup()
