#!/usr/bin/env python3
"""Naming devices one by one: ``resolve_devices`` for 1,000 … 10,000 names (the cap), half of them
unknown, against N seeded devices (default 20,000).

Each figure is the best of ``--repeat`` runs; the ratio is to the 1,000-name run measured in the same
run on the same database, so linear work shows ratios near the name ratio (×10 at 10,000); the old
``missing`` list grew with the square of the unknown names.

    .venv/bin/python bench/resolve_bench.py [--devices 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mdmserver.app import create_app  # noqa: E402
from mdmserver.bootstrap import initialize  # noqa: E402
from mdmserver.db import db  # noqa: E402
from mdmserver.records.devices import Device  # noqa: E402
from mdmserver.selection.resolve import MAX_NAMED_DEVICES, resolve_devices  # noqa: E402
from tests.factories import seed_devices  # noqa: E402


def best(repeat: int, names: list[str]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        resolved = resolve_devices(db.session, names)
        times.append(time.perf_counter() - start)
    assert len(resolved.missing) == sum(1 for n in names if n.startswith("NOPE")), "unexpected resolution"
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="resolve-bench-"))
    app = create_app(overrides={"data_dir": str(tmp / "data"), "database_url": f"sqlite:///{tmp / 'bench.db'}",
                                "log_level": "WARNING", "public_url": "http://127.0.0.1:8080"}, environ={})
    initialize(app)
    with app.app_context():
        seed_devices(db.session, args.devices)
        db.session.commit()
        udids = list(db.session.scalars(db.select(Device.udid).limit(MAX_NAMED_DEVICES // 2)))
        print(f"database: {db.engine.dialect.name}; devices: {args.devices:,}; repeat: {args.repeat}")
        baseline = None
        for count in (1_000, 2_000, 5_000, MAX_NAMED_DEVICES):
            names = [*udids[: count // 2], *(f"NOPE-{i:08d}" for i in range(count - min(count // 2, len(udids))))]
            names = names[:count]
            elapsed = best(args.repeat, names)
            baseline = baseline or elapsed
            print(f"{count:>6,} names: {elapsed * 1000:8.1f} ms  ×{elapsed / baseline:5.1f} (names ×{count / 1000:g})")
        db.session.remove()
        db.engine.dispose()


if __name__ == "__main__":
    main()
