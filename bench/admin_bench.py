#!/usr/bin/env python3
"""Admin API at scale: device list, facets, a bulk action on every device, profile assignment to a
group of every device — with N seeded devices (default 100,000), in-process through the Flask test
client (HTTP parsing, auth, JSON:API serialisation included).

Each figure is a median over ``--repeat`` runs, with the number of SQL statements the request ran
(counted at the SQLAlchemy level; SAVEPOINT bookkeeping excluded) and a ratio to a baseline measured
in the same run on the same database: the bare SQL the endpoint cannot avoid (the same filtered
page, the same GROUP BYs, one ``INSERT … SELECT`` of the same commands).

    .venv/bin/python bench/admin_bench.py [--devices 100000] [--repeat 3] [--database-url URL]
"""

from __future__ import annotations

import argparse
import os
import plistlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import (  # noqa: E402
    String,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    select,
    text,
)

from mdmserver.app import create_app  # noqa: E402
from mdmserver.assignments.models import DeviceProfileState, ProfileAssignment  # noqa: E402
from mdmserver.bootstrap import initialize  # noqa: E402
from mdmserver.collaborators import secret_box  # noqa: E402
from mdmserver.commands.service import store_parameters  # noqa: E402
from mdmserver.db import UTCDateTime, db, utcnow  # noqa: E402
from mdmserver.profiles.service import profile_bytes, upload_profile  # noqa: E402
from mdmserver.records.commands import Command, CommandParameters  # noqa: E402
from mdmserver.records.devices import Device  # noqa: E402
from mdmserver.records.groups import DeviceGroup, GroupMember  # noqa: E402
from mdmserver.records.push import PushRequest  # noqa: E402
from mdmserver.selection.sql import uuid_expression  # noqa: E402
from mdmserver.tokens.service import create_token  # noqa: E402
from tests.factories import seed_devices  # noqa: E402


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, conn, clause, *args) -> None:
        if not str(clause).startswith(("SAVEPOINT", "RELEASE", "ROLLBACK TO")):
            self.count += 1


def timed(engine, run: Callable[[], object]) -> tuple[float, int]:
    counter = Counter()
    event.listen(engine, "before_execute", counter)
    try:
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
    finally:
        event.remove(engine, "before_execute", counter)
    return elapsed, counter.count


def median_of(engine, run, repeat: int, reset: Callable[[], None] | None = None) -> tuple[float, int]:
    times, statements = [], []
    for _ in range(repeat):
        if reset:
            reset()
        elapsed, count = timed(engine, run)
        times.append(elapsed)
        statements.append(count)
    return statistics.median(times), max(statements)


def _database_url(tmp: Path, given: str | None) -> tuple[str, Callable[[], None]]:
    if not given:
        return f"sqlite:///{tmp / 'bench.db'}", lambda: None
    schema = f"bench_{os.getpid()}"
    admin = create_engine(given, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in given else "?"

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()

    return f"{given}{separator}options=-csearch_path%3D{schema}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default=os.environ.get("MDMSERVER_BENCH_DATABASE_URL"))
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="admin-bench-"))
    url, drop = _database_url(tmp, args.database_url)
    app = create_app(overrides={"data_dir": str(tmp / "data"), "database_url": url, "log_level": "WARNING",
                                "public_url": "http://127.0.0.1:8080"}, environ={})
    initialize(app)
    try:
        with app.app_context():
            run(app, args)
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        drop()


def run(app, args) -> None:
    session, engine = db.session, db.engine
    print(f"database: {engine.dialect.name}; devices: {args.devices:,}; repeat: {args.repeat}")
    start = time.perf_counter()
    seed_devices(session, args.devices)
    session.commit()
    ids = session.scalars(select(Device.id)).all()
    group = DeviceGroup(name="everyone", kind="static")
    session.add(group)
    session.flush()
    now = utcnow()
    for offset in range(0, len(ids), 10_000):
        session.execute(insert(GroupMember), [{"group_id": group.id, "device_id": i, "added_at": now}
                                              for i in ids[offset:offset + 10_000]])
    profile_body = plistlib.dumps({
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.example.bench",
        "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadDisplayName": "Bench Wi-Fi",
        "PayloadContent": [{"PayloadType": "com.apple.wifi.managed", "PayloadVersion": 1,
                            "PayloadIdentifier": "com.example.bench.wifi", "PayloadUUID": str(uuid.uuid4()).upper(),
                            "SSID_STR": "Office", "EncryptionType": "None"}],
    })
    profile, _ = upload_profile(session, profile_body, box=secret_box())
    _, token = create_token(session, "bench", ["read", "write"])
    session.commit()
    group_id, profile_id = group.id, profile.id
    print(f"seeded in {time.perf_counter() - start:.1f} s")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    client.get("/api/v1/actions", headers=headers)  # the token's first use is recorded once
    rows = []

    def row(name, endpoint, baseline, statements, note=""):
        rows.append((name, endpoint, baseline, statements, note))
        print(f"  {name}: {endpoint * 1000:.1f} ms (baseline {baseline * 1000:.1f} ms, "
              f"ratio {endpoint / baseline:.2f}), {statements} statements {note}")

    # 1. a page of the device list with two filters
    def page():
        response = client.get("/api/v1/devices?filter[platform]=ios&filter[os_version]=17.*&page[size]=50",
                              headers=headers)
        assert response.status_code == 200, response.get_json()

    def page_baseline():
        where = (Device.platform == "ios", Device.os_version.like("17.%"))
        session.execute(select(func.count()).select_from(Device).where(*where)).scalar_one()
        session.execute(select(Device).where(*where).order_by(Device.id).limit(50)).scalars().all()
        session.rollback()

    endpoint, statements = median_of(engine, page, args.repeat * 3)
    baseline, _ = median_of(engine, page_baseline, args.repeat * 3)
    row("device list page (2 filters, 50 rows)", endpoint, baseline, statements)

    # 2. facets over four fields
    facets = ("platform", "os_version", "model", "admission_status")

    def facet_page():
        response = client.get(f"/api/v1/devices?facets={','.join(facets)}&page[size]=1", headers=headers)
        assert response.status_code == 200 and len(response.get_json()["meta"]["facets"]) == 4

    def facet_baseline():
        for name in facets:
            column = getattr(Device, name)
            session.execute(select(column, func.count()).group_by(column)).all()
        session.rollback()

    endpoint, statements = median_of(engine, facet_page, args.repeat)
    baseline, _ = median_of(engine, facet_baseline, args.repeat)
    row("facets over 4 fields", endpoint, baseline, statements)

    # 3. a bulk action on every device (lock: one DeviceLock per device, Macs get the PIN)
    def clear_commands():
        session.execute(delete(PushRequest))
        session.execute(delete(DeviceProfileState))
        session.execute(delete(Command))
        session.commit()

    def bulk():
        response = client.post("/api/v1/actions/lock", headers=headers,
                               json={"all_devices": True, "parameters": {"message": "bench", "pin": "123456"}})
        body = response.get_json()
        assert response.status_code == 200 and body["success_count"] == args.devices, body["total_count"]

    def insert_baseline(request_type: str, params: dict):
        parameters_id = store_parameters(session, params, box=secret_box())  # stored once, outside the timed part
        session.commit()

        def run_insert():
            session.execute(insert(Command).from_select(
                ["uuid", "device_id", "request_type", "parameters_id", "priority", "status", "enqueued_by",
                 "created_at", "attempts"],
                select(uuid_expression(session), Device.id, literal(request_type, String),
                       literal(parameters_id), literal(0), literal("queued", String), literal("bench", String),
                       literal(utcnow(), UTCDateTime), literal(0)),
            ))
            session.commit()
        return run_insert

    endpoint, statements = median_of(engine, bulk, args.repeat, reset=clear_commands)
    baseline, _ = median_of(engine, insert_baseline("DeviceLock", {"Message": "bench"}),
                            args.repeat, reset=clear_commands)
    row(f"bulk lock on all {args.devices:,} devices", endpoint, baseline, statements,
        "(baseline: one bare INSERT … SELECT of the same commands)")

    # 4. assign a profile to a group of every device (InstallProfile for each, signed profile inline)
    def clear_assignment():
        clear_commands()
        session.execute(delete(ProfileAssignment))
        session.commit()

    def assign():
        response = client.post(f"/api/v1/profiles/{profile_id}/assignments", headers=headers,
                               json={"groups": [group_id]})
        body = response.get_json()
        assert response.status_code == 200 and body["install_queued"] == args.devices, body

    endpoint, statements = median_of(engine, assign, args.repeat, reset=clear_assignment)
    install = {"Payload": profile_bytes(session, session.get(type(profile), profile_id), secret_box(), signed=True)}
    blob = plistlib.dumps(install)
    stored = session.execute(select(func.count(), func.coalesce(func.sum(func.length(CommandParameters.body)), 0))
                             .select_from(CommandParameters)).one()
    session.rollback()
    print(f"command parameters after the assignment: {stored[0]} rows, {stored[1]:,} bytes "
          f"(one blob per command would be {args.devices * len(blob):,} bytes)")
    baseline, _ = median_of(engine, insert_baseline("InstallProfile", install), args.repeat, reset=clear_assignment)
    row(f"assign a profile to a group of {args.devices:,}", endpoint, baseline, statements,
        f"(InstallProfile parameters {len(blob):,} bytes, stored once)")
    clear_assignment()
    session.execute(text("SELECT 1"))

    print("\n| operation | median | baseline | ratio | SQL statements |")
    print("|---|---|---|---|---|")
    for name, endpoint, baseline, statements, _note in rows:
        print(f"| {name} | {endpoint * 1000:.1f} ms | {baseline * 1000:.1f} ms | {endpoint / baseline:.2f} | "
              f"{statements} |")


if __name__ == "__main__":
    main()
