"""Command parameters are stored once per distinct body (content-addressed), purged when unreferenced,
and moved in and out of the queue table by the 0008 migration."""

from __future__ import annotations

import hashlib
import plistlib
import threading
from datetime import timedelta

import sqlalchemy as sa
from alembic import command as alembic_command
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mdmserver.bootstrap import upgrade_database
from mdmserver.collaborators import secret_box
from mdmserver.commands import service as commands
from mdmserver.db import db, utcnow
from mdmserver.ops.readiness import alembic_config
from mdmserver.pki.cms import unwrap_signed
from mdmserver.records.commands import Command, CommandParameters
from tests.conftest import make_app
from tests.factories import make_device, make_wifi_profile, seed_devices


def _profile(db_session):
    return make_wifi_profile(db_session, "com.example.dedupe")


def _parameter_bytes(db_session) -> tuple[int, int]:
    rows = db_session.scalar(select(func.count()).select_from(CommandParameters))
    size = db_session.scalar(select(func.coalesce(func.sum(func.length(CommandParameters.body)), 0)))
    return rows, size


def test_install_profile_for_200_devices_stores_one_parameter_row(client, auth, db_session, capsys):
    h = auth("read", "write")
    profile = _profile(db_session)
    ids = seed_devices(db_session, 200)
    response = client.post("/api/v1/device_groups", headers={**h, "Content-Type": "application/vnd.api+json"},
                           json={"data": {"type": "device_groups", "attributes": {"name": "all 200"}}})
    assert response.status_code == 201, response.get_json()
    group = int(response.get_json()["data"]["id"])
    members = client.post(f"/api/v1/device_groups/{group}/relationships/devices", headers=h,
                          json={"data": [{"type": "devices", "id": str(i)} for i in ids]})
    assert members.status_code < 300, members.get_json()
    rows_before, bytes_before = _parameter_bytes(db_session)

    response = client.post(f"/api/v1/profiles/{profile.id}/assignments", headers=h, json={"groups": [group]})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["install_queued"] == 200

    installs = db_session.scalars(select(Command).where(Command.request_type == "InstallProfile")).all()
    assert len(installs) == 200 and len({c.parameters_id for c in installs}) == 1
    # one new row for the profile (the reconcile's RemoveProfile for nobody may add a small one)
    rows_after, bytes_after = _parameter_bytes(db_session)
    assert rows_after - rows_before in (1, 2)
    body = installs[0].parameters
    assert len(body) > 1000
    assert db_session.scalar(select(func.count()).select_from(CommandParameters).where(
        CommandParameters.id.in_(select(Command.parameters_id).where(Command.request_type == "InstallProfile")))) == 1
    assert bytes_after - bytes_before < len(body) + 400
    payload = commands.command_parameters(installs[-1], secret_box())["Payload"]
    assert plistlib.loads(unwrap_signed(payload).content)["PayloadIdentifier"] == "com.example.dedupe"
    stored = db_session.get(CommandParameters, installs[0].parameters_id)
    # a profile may carry secrets: its body is sealed and addressed by a keyed digest
    assert commands.is_sealed(stored.body)
    plain = commands.open_blob(stored.body, secret_box(), commands.PARAMETERS_CONTEXT)
    assert stored.sha256 not in (hashlib.sha256(stored.body).hexdigest(), hashlib.sha256(plain).hexdigest())
    with capsys.disabled():
        print(f"\n200 x InstallProfile: {len(body)} parameter bytes stored for the profile, "
              f"{bytes_after - bytes_before} in all (one blob per command: {200 * len(body)})")

    # the same body queued again (another path: the per-device enqueue) reuses the row
    again = commands.enqueue_commands(db_session, ids[:3], "InstallProfile", commands.command_parameters(body, secret_box()),
                                      enqueued_by="t", validate=False, box=secret_box())
    reused = db_session.scalars(select(Command.parameters_id).where(
        Command.uuid.in_([r["uuid"] for r in again]))).all()
    assert set(reused) == {installs[0].parameters_id}
    assert _parameter_bytes(db_session) == (rows_after, bytes_after)


def test_distinct_bodies_get_distinct_rows_and_api_shows_them(client, auth, db_session):
    h = auth("read", "write")
    a, b = make_device(db_session), make_device(db_session)
    first = commands.enqueue_commands(db_session, [a.id, b.id], "DeviceLock", {"Message": "one"}, enqueued_by="t", box=secret_box())
    second = commands.enqueue_commands(db_session, [a.id], "DeviceLock", {"Message": "two"}, enqueued_by="t", box=secret_box())
    by_uuid = {c.uuid: c for c in db_session.scalars(select(Command).where(Command.device_id.in_([a.id, b.id])))}
    assert by_uuid[first[0]["uuid"]].parameters_id == by_uuid[first[1]["uuid"]].parameters_id
    assert by_uuid[second[0]["uuid"]].parameters_id != by_uuid[first[0]["uuid"]].parameters_id
    db_session.commit()
    listed = client.get(f"/api/v1/devices/{a.id}/commands", headers=h)
    assert listed.status_code == 200, listed.get_json()
    messages = sorted(d["attributes"]["parameters"]["Message"] for d in listed.get_json()["data"])
    assert messages == ["one", "two"]


def test_purge_deletes_unreferenced_parameters_only(db_session):
    a, b = make_device(db_session), make_device(db_session)
    old = commands.enqueue_commands(db_session, [a.id], "DeviceLock", {"Message": "old only"}, enqueued_by="t", box=secret_box())
    shared = commands.enqueue_commands(db_session, [a.id, b.id], "DeviceLock", {"Message": "shared"},
                                       enqueued_by="t", box=secret_box())
    rows = {c.uuid: c for c in db_session.scalars(select(Command).where(Command.device_id.in_([a.id, b.id])))}
    long_ago = utcnow() - timedelta(days=100)
    for item in (old[0], shared[0]):  # finished long ago; the shared body is still queued for b
        rows[item["uuid"]].status = "acknowledged"
        rows[item["uuid"]].completed_at = long_ago
    old_parameters = rows[old[0]["uuid"]].parameters_id
    shared_parameters = rows[shared[0]["uuid"]].parameters_id
    orphan = commands.store_parameters(db_session, {"Message": "never queued"}, box=secret_box())
    db_session.flush()

    assert commands.purge_finished(db_session, retention_days=30, commit=False) == 2
    db_session.expire_all()
    remaining = set(db_session.scalars(select(CommandParameters.id)))
    assert old_parameters not in remaining and orphan not in remaining
    assert shared_parameters in remaining
    assert commands.command_parameters(db_session.scalar(
        select(Command).where(Command.uuid == shared[1]["uuid"])), secret_box()) == {"Message": "shared"}
    # idempotent: nothing left to delete
    assert commands.purge_unreferenced_parameters(db_session, commit=False) == 0


def test_migration_moves_blobs_out_and_back(tmp_path):
    app, cleanup = make_app(tmp_path)
    try:
        with app.app_context():
            session = db.session
            devices = [make_device(session, index=i) for i in range(3)]
            ids = [d.id for d in devices]
            commands.enqueue_commands(session, ids, "DeviceLock", {"Message": "same"}, enqueued_by="t", box=secret_box())
            commands.enqueue_commands(session, ids[:1], "DeviceLock", {"Message": "other"}, enqueued_by="t", box=secret_box())
            session.commit()
            session.remove()
        with app.app_context(), db.engine.begin() as connection:
            config = alembic_config(app.config["DATABASE_URL"])
            config.attributes["connection"] = connection
            alembic_command.downgrade(config, "0008_command_parameters-1")
        with app.app_context(), db.engine.connect() as connection:
            inspector = sa.inspect(connection)
            assert "command_parameters" not in inspector.get_table_names()
            blobs = connection.execute(sa.text("SELECT parameters FROM commands ORDER BY id")).scalars().all()
        assert [plistlib.loads(b) for b in blobs] == [{"Message": "same"}] * 3 + [{"Message": "other"}]

        upgrade_database(app)
        with app.app_context():
            session = db.session
            assert session.scalar(select(func.count()).select_from(CommandParameters)) == 2
            rows = session.scalars(select(Command).order_by(Command.id)).all()
            assert [commands.command_parameters(c, secret_box()) for c in rows] == [{"Message": "same"}] * 3 + [{"Message": "other"}]
            assert len({c.parameters_id for c in rows[:3]}) == 1
            for stored in session.scalars(select(CommandParameters)):
                assert stored.sha256 == hashlib.sha256(stored.body).hexdigest()
            # enqueueing the migrated body again finds the migrated row
            again = commands.enqueue_commands(session, ids[1:2], "DeviceLock", {"Message": "other"},
                                              enqueued_by="t", box=secret_box())
            latest = session.scalar(select(Command).where(Command.uuid == again[0]["uuid"]))
            assert latest.parameters_id == rows[3].parameters_id
            session.rollback()
            session.remove()
            if db.engine.dialect.name == "sqlite":
                with db.engine.connect() as connection:
                    sql = connection.exec_driver_sql(
                        "SELECT sql FROM sqlite_master WHERE name = 'ix_commands_active_queue'").scalar()
                assert "WHERE" in sql.upper()
    finally:
        cleanup()



def test_concurrent_store_and_purge_are_safe(tmp_path):
    """Two transactions storing the same body get one row; a purge running while an enqueue holds
    a body it has not referenced yet leaves that body alone (PostgreSQL: the row is locked and
    skipped; SQLite: the purge waits for the database write lock)."""
    app, cleanup = make_app(tmp_path)
    try:
        with app.app_context():
            device_id = make_device(db.session).id
            db.session.commit()
            db.session.remove()
            body = {"Message": "concurrent"}
            first = Session(db.engine)
            first_id = commands.store_parameters(first, body, box=secret_box())  # inserted, not committed yet
            seen: dict[str, object] = {}

            def second_store() -> None:
                with app.app_context(), Session(db.engine) as second:
                    seen["id"] = commands.store_parameters(second, body, box=secret_box())
                    second.commit()

            thread = threading.Thread(target=second_store)
            thread.start()
            first.commit()
            thread.join(30)
            assert not thread.is_alive()
            assert seen["id"] == first_id
            with Session(db.engine) as check:
                assert check.scalar(select(func.count()).select_from(CommandParameters)) == 1

            # an enqueue holds the (unreferenced) row while a purge runs
            holder = Session(db.engine)
            assert commands.store_parameters(holder, body, box=secret_box()) == first_id

            def purge() -> None:
                with app.app_context(), Session(db.engine) as purger:
                    seen["purged"] = commands.purge_unreferenced_parameters(purger)

            purger = threading.Thread(target=purge)
            purger.start()
            if db.engine.dialect.name == "postgresql":
                purger.join(30)  # skips the locked row without waiting
                assert not purger.is_alive() and seen["purged"] == 0
            queued = commands.enqueue_commands(holder, [device_id], "DeviceLock", body, enqueued_by="t", box=secret_box())
            holder.commit()
            purger.join(30)
            assert not purger.is_alive() and seen["purged"] == 0
            with Session(db.engine) as check:
                stored = check.scalar(select(Command).where(Command.uuid == queued[0]["uuid"]))
                assert stored.parameters_id == first_id
                assert commands.command_parameters(stored, secret_box()) == body
            holder.close()
            first.close()
    finally:
        cleanup()
