"""Concurrent reconciles of one app queue each install once (real connections, no test transaction)."""

from __future__ import annotations

from mdmserver.app_assignments.models import AppAssignment
from mdmserver.app_assignments.service import reconcile
from mdmserver.apps.models import App
from mdmserver.collaborators import secret_box
from mdmserver.db import db
from tests.concurrency import commands_per_device, race
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

        errors = race(server, lambda own: reconcile(own, own.get(App, app_id), actor="race", box=secret_box(),
                                                     public_url="https://mdm.example"))
        assert errors == []
        per_device = commands_per_device(server, "InstallApplication")
        assert len(per_device) == 20 and set(per_device.values()) == {1}
    finally:
        cleanup()
