#!/usr/bin/env python3
"""Blueprint reconcile benchmark (issue 15).

N accepted iOS devices (default 500; half report 17.5, half 16.7) in a smart group ``os_version`` ``17.*``.
Measured through the HTTP API (Flask test client, real database), each in a fresh database state:

- baseline: assigning the same two profiles to the same smart group (``POST /api/v1/profiles/<id>/assignments``
  twice): InstallProfile for every member, the existing set-based reconcile;
- blueprint: ``POST /api/v1/blueprints`` with the two profiles and an OS target (17.6) for the group:
  the same InstallProfile commands plus ScheduleOSUpdate, and the member rows;
- blueprint again: ``POST /api/v1/blueprints/<id>/reconcile`` with nothing to do (what the upkeep pays).

Reports milliseconds, SQL statements, commands queued, and the blueprint's ratio to the baseline.

Usage::

    .venv/bin/python bench/blueprints_bench.py [--devices 500]
    MDMSERVER_BENCH_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test .venv/bin/python bench/blueprints_bench.py
"""

from __future__ import annotations

import argparse
import json
import plistlib
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.profiles_bench import make_app, statement_counter  # noqa: E402
from mdmserver.collaborators import secret_box  # noqa: E402
from mdmserver.db import db, utcnow  # noqa: E402
from mdmserver.profiles.service import upload_profile  # noqa: E402
from mdmserver.records.commands import Command  # noqa: E402
from mdmserver.records.devices import Device  # noqa: E402
from mdmserver.tokens.service import create_token  # noqa: E402

JSONAPI = "application/vnd.api+json"


def _devices(count: int) -> None:
    now = utcnow()
    rows = [{"udid": str(uuid.uuid4()).upper(), "serial_number": f"BP{i:08d}", "platform": "ios",
             "product_name": "iPhone14,5", "model": "iPhone14,5", "model_name": "iPhone",
             "os_version": "17.5" if i % 2 == 0 else "16.7", "admission_status": "accepted", "enrolled": True,
             "enrolled_at": now, "is_supervised": True, "created_at": now, "updated_at": now}
            for i in range(count)]
    for offset in range(0, len(rows), 1000):
        db.session.execute(insert(Device), rows[offset:offset + 1000])


def _profile(identifier: str) -> int:
    body = plistlib.dumps({
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": identifier,
        "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadDisplayName": identifier, "PayloadContent": [{
            "PayloadType": "com.apple.wifi.managed", "PayloadVersion": 1, "PayloadIdentifier": f"{identifier}.wifi",
            "PayloadUUID": str(uuid.uuid4()).upper(), "SSID_STR": identifier}]})
    profile, _ = upload_profile(db.session, body, box=secret_box())
    return profile.id


def _timed(engine, call):
    with statement_counter(engine) as statements:
        start = time.perf_counter()
        response = call()
        elapsed = time.perf_counter() - start
    assert response.status_code in (200, 201), response.get_data(as_text=True)[:500]
    return round(elapsed * 1000, 1), len(statements), response.get_json()


def run(devices: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        app, backend, drop = make_app(Path(tmp))
        try:
            with app.app_context():
                _devices(devices)
                profiles = [_profile(f"com.example.bench.bp.{i}") for i in range(4)]
                _, token = create_token(db.session, "bench", ["read", "write"])
                db.session.commit()
                engine = db.engine

            def count_commands() -> int:
                with app.app_context():
                    return db.session.scalar(select(func.count()).select_from(Command))

            h = {"Authorization": f"Bearer {token}"}
            client = app.test_client()
            group = client.post("/api/v1/device_groups", headers={**h, "Content-Type": JSONAPI}, json={"data": {
                "type": "device_groups", "attributes": {"name": "iOS 17", "kind": "smart",
                                                        "filter": {"os_version": "17.*"}}}})
            group_id = int(group.get_json()["data"]["id"])
            in_group = (devices + 1) // 2

            base_ms, base_sql = 0.0, 0
            for profile_id in profiles[:2]:
                ms, sql, _ = _timed(engine, lambda p=profile_id: client.post(
                    f"/api/v1/profiles/{p}/assignments", headers=h, json={"groups": [group_id]}))
                base_ms, base_sql = base_ms + ms, base_sql + sql
            baseline_commands = count_commands()
            assert baseline_commands == 2 * in_group, baseline_commands

            bp_ms, bp_sql, doc = _timed(engine, lambda: client.post(
                "/api/v1/blueprints", headers={**h, "Content-Type": JSONAPI}, json={"data": {
                    "type": "blueprints", "attributes": {
                        "name": "bench", "scope": {"groups": [group_id]}, "profiles": profiles[2:],
                        "os_update": {"version": "17.6", "install_action": "InstallASAP"}}}}))
            queued = doc["meta"]["reconcile"]
            assert queued["profile_install_queued"] == 2 * in_group and queued["os_update_queued"] == in_group, queued
            again_ms, again_sql, again = _timed(engine, lambda: client.post(
                f"/api/v1/blueprints/{doc['data']['id']}/reconcile", headers=h))
            assert not any(again[k] for k in again if k.endswith("_queued")), again
            return {
                "backend": backend, "devices": devices, "devices_in_scope": in_group,
                "baseline_assign_two_profiles_ms": round(base_ms, 1), "baseline_sql_statements": base_sql,
                "blueprint_create_ms": bp_ms, "blueprint_sql_statements": bp_sql,
                "blueprint_commands_queued": queued["profile_install_queued"] + queued["os_update_queued"],
                "blueprint_ratio_to_baseline": round(bp_ms / base_ms, 2) if base_ms else None,
                "reconcile_nothing_to_do_ms": again_ms, "reconcile_nothing_to_do_sql_statements": again_sql,
            }
        finally:
            if drop is not None:
                drop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    args = parser.parse_args()
    print(json.dumps(run(args.devices), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
