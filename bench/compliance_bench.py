#!/usr/bin/env python3
"""Compliance evaluation at scale: every enabled policy over N seeded devices (default 10,000).

Figures (each a median over ``--repeat`` runs, with the SQL statements counted): the first evaluation
(every result and state inserted), a re-evaluation where nothing changed, and one after 10% of the
devices reported a new OS version; each with a ratio to a baseline measured in the same run on the
same database: the bare reads the evaluation cannot avoid (the policies' UNION ALL over the devices,
fetched). Then the plan of the device list filtered by ``compliance_state=non_compliant``, which must
use the index on ``device_compliance.state``.

    .venv/bin/python bench/compliance_bench.py [--devices 10000] [--repeat 3] [--database-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import delete, event, select, text, update  # noqa: E402

from mdmserver.app import create_app  # noqa: E402
from mdmserver.bootstrap import initialize  # noqa: E402
from mdmserver.compliance import service  # noqa: E402
from mdmserver.compliance.models import (  # noqa: E402
    ComplianceHistory,
    CompliancePolicy,
    CompliancePolicyTarget,
    DevicePolicyResult,
)
from mdmserver.db import db, utcnow  # noqa: E402
from mdmserver.records.compliance import DeviceCompliance  # noqa: E402
from mdmserver.records.devices import Device, DeviceSecurityInfo  # noqa: E402
from mdmserver.records.groups import DeviceGroup  # noqa: E402
from mdmserver.selection.filters import compliance_state_condition  # noqa: E402
from mdmserver.selection.sql import dialect_name  # noqa: E402
from tests.factories import seed_devices  # noqa: E402


def timed(run: Callable[[], object]) -> tuple[float, int]:
    count = 0

    def before(conn, cursor, statement, *args) -> None:
        nonlocal count
        if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK TO")):
            count += 1

    event.listen(db.engine, "before_cursor_execute", before)
    try:
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
    return elapsed, count


def median(run: Callable[[], object], repeat: int, reset: Callable[[], None] | None = None) -> tuple[float, int]:
    times, counts = [], []
    for _ in range(repeat):
        if reset:
            reset()
        elapsed, count = timed(run)
        times.append(elapsed)
        counts.append(count)
    return statistics.median(times), max(counts)


def seed(session, devices: int) -> None:
    ids = seed_devices(session, devices)
    # one device in 20 runs an old iOS: the non-compliant ones are a minority, as in a managed fleet
    session.execute(update(Device).values(last_seen_at=utcnow(), is_supervised=Device.id % 50 != 0))
    session.execute(update(Device).where(Device.id.in_(ids[::20])).values(os_version="15.0"))
    session.execute(DeviceSecurityInfo.__table__.insert(), [
        {"device_id": i, "passcode_present": True, "passcode_compliant": True,
         "passcode_compliant_with_profiles": n % 100 != 0, "hardware_encryption_caps": 3, "fde_enabled": True,
         "updated_at": utcnow()} for n, i in enumerate(ids)])
    group = DeviceGroup(name="bench iPhones", kind="smart", filter={"platform": "ios"})
    session.add(group)
    session.flush()
    session.add_all([
        CompliancePolicy(name="min OS", rule="os_version_min", parameters={"versions": {"ios": "16.0", "macos": "13.0"}},
                         all_devices=True, remediation={"action": "scan"}),
        CompliancePolicy(name="passcode", rule="passcode", parameters={"with_profiles": True}, all_devices=True),
        CompliancePolicy(name="encryption", rule="encryption", parameters={}, all_devices=True),
        CompliancePolicy(name="checked in", rule="last_checkin", parameters={"hours": 24}, all_devices=True),
    ])
    supervised = CompliancePolicy(name="supervised iPhones", rule="supervised", parameters={})
    session.add(supervised)
    session.flush()
    session.add(CompliancePolicyTarget(policy_id=supervised.id, group_id=group.id))
    session.commit()


def plans(session) -> dict[str, str]:
    """The plans of the device list's two queries filtered by compliance_state: its page and its count."""
    condition = compliance_state_condition("non_compliant")
    queries = {"page": select(Device.id).where(condition).order_by(Device.id).limit(50),
               "count (meta.total)": select(db.func.count()).select_from(Device).where(condition)}
    prefix = "EXPLAIN " if dialect_name(session) == "postgresql" else "EXPLAIN QUERY PLAN "
    session.execute(text("ANALYZE"))
    out = {}
    for name, query in queries.items():
        compiled = query.compile(dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True})
        rows = session.execute(text(prefix + str(compiled))).all()
        out[name] = "\n".join(" ".join(str(c) for c in row) for row in rows)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", help="an empty database (default: SQLite in a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        app = create_app(overrides={"data_dir": tmp, "database_url": url, "log_level": "WARNING"}, environ={})
        initialize(app)
        with app.app_context():
            session = db.session
            seed(session, args.devices)
            policies = list(session.scalars(select(CompliancePolicy).order_by(CompliancePolicy.id)))

            def baseline() -> None:
                computed = service._computed(session, policies, Device.id.is_not(None), utcnow())
                session.execute(select(computed)).all()

            def clear() -> None:
                for model in (ComplianceHistory, DevicePolicyResult, DeviceCompliance):
                    session.execute(delete(model))
                session.commit()

            def evaluate() -> None:
                service.evaluate(session)
                session.commit()

            base, base_count = median(baseline, args.repeat)
            first, first_count = median(evaluate, args.repeat, reset=clear)
            again, again_count = median(evaluate, args.repeat)

            flip = {"n": 0}

            def change_tenth() -> None:
                flip["n"] += 1
                version = "15.1" if flip["n"] % 2 else "17.5"
                session.execute(update(Device).where(Device.id % 10 == 0).values(os_version=version))
                session.commit()

            changed, changed_count = median(evaluate, args.repeat, reset=change_tenth)
            explained = plans(session)
            states = dict(session.execute(select(DeviceCompliance.state, db.func.count())
                                          .group_by(DeviceCompliance.state)).all())
        uses_index = {name: "ix_device_compliance_state_device" in text_ for name, text_ in explained.items()}
        print(f"compliance bench: {args.devices} devices, {len(policies)} policies, "
              f"{'PostgreSQL' if url.startswith('postgresql') else 'SQLite'}, median of {args.repeat}")
        print(f"  baseline (the policies' reads, fetched):   {base * 1000:8.1f} ms  {base_count:3d} statements")
        for label, seconds, count in (("first evaluation (all inserted)", first, first_count),
                                      ("re-evaluation, nothing changed", again, again_count),
                                      ("re-evaluation, 10% new OS", changed, changed_count)):
            print(f"  {label:<40} {seconds * 1000:8.1f} ms  {count:3d} statements  x{seconds / base:5.2f} baseline")
        print(f"  states: {states}")
        for name, text_ in explained.items():
            print(f"  filter[compliance_state]=non_compliant, {name}: index used: {uses_index[name]}")
            print("    " + text_.replace("\n", "\n    "))
        # the count reads every matching device: without the index it would scan them all
        return 0 if uses_index["count (meta.total)"] else 1


if __name__ == "__main__":
    sys.exit(main())
