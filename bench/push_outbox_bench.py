"""Full push path vs the bare HTTP/2 client, and worker memory at 10k vs 100k pushes.

Full path = outbox rows → push worker (claim, send, record results, device state, counters) →
APNs emulator. Baseline = the same HTTP/2 client sending the same pushes straight to the same
emulator, measured in the same run. The emulator runs in its own process.

    .venv/bin/python bench/push_outbox_bench.py [--pushes 10000] [--memory 10000,100000]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Without --database-url each run gets a fresh SQLite database in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from push_clients_bench import TOPIC, start_emulator, tokens  # noqa: E402


def _schema_url(base: str) -> tuple[str, callable]:
    import sqlalchemy as sa

    schema = f"bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()

    return f"{base}{sep}options=-csearch_path%3D{schema}", drop


def prepare(folder: Path, url: str, emulator_dir: Path, count: int, database_url: str | None):
    """A fresh server database with a push certificate and ``count`` devices each owed a push."""
    from mdmserver.app import create_app
    from mdmserver.bootstrap import initialize
    from mdmserver.collaborators import secret_box
    from mdmserver.db import db
    from mdmserver.push import service

    sys.path.insert(0, str(ROOT / "tests"))
    from push.helpers import make_devices

    drop = None
    if database_url:
        database_url, drop = _schema_url(database_url)
    overrides = {
        "data_dir": str(folder / "data"),
        "database_url": database_url or f"sqlite:///{folder / 'bench.db'}",
        "apns_url": url,
        "apns_ca_file": str(emulator_dir / "emulator-ca.pem"),
        "log_level": "WARNING",
    }
    app = create_app(overrides=overrides, environ={})
    initialize(app)
    with app.app_context():
        service.import_push_certificate(
            db.session,
            (emulator_dir / "push-cert.pem").read_bytes(),
            (emulator_dir / "push-key.pem").read_bytes(),
            box=secret_box(),
        )
        started = time.perf_counter()
        ids = make_devices(db.session, count, topic=TOPIC)
        db.session.commit()
        fill = time.perf_counter() - started
        started = time.perf_counter()
        service.request_push(db.session, ids)
        db.session.commit()
        enqueue = time.perf_counter() - started
        db.session.remove()
        db.engine.dispose()
    return overrides, fill, enqueue, drop


def current_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_worker(overrides: dict, queue) -> None:
    """Child process: drain the outbox with one worker; report time, count, RSS after the first
    batch (connections and caches warm) and the highest RSS seen after any later batch."""
    from mdmserver.app import create_app
    from mdmserver.push.worker import PushWorker

    app = create_app(overrides=overrides, environ={})
    worker = PushWorker(app)
    started = time.perf_counter()
    sent = 0
    warm = None
    highest = 0.0
    while True:
        report = worker.run_once()
        sent += report.sent
        rss = current_rss_mib()
        if warm is None:
            warm = rss
        highest = max(highest, rss)
        if report.claimed == 0:
            break
    elapsed = time.perf_counter() - started
    worker.close()
    queue.put((sent, elapsed, warm or 0.0, highest))


def run_bare(url: str, emulator_dir: Path, count: int, batch: int, queue) -> None:
    from mdmserver.pki import x509 as px
    from mdmserver.push.apns import HttpxAPNsClient, PushIdentity, PushMessage

    cert = (emulator_dir / "push-cert.pem").read_text()
    key = (emulator_dir / "push-key.pem").read_text()
    identity = PushIdentity(TOPIC, cert, key, px.fingerprint_sha256(px.cert_from_pem(cert)))

    async def go() -> int:
        client = HttpxAPNsClient(url, lambda t: identity, ca_file=str(emulator_dir / "emulator-ca.pem"))
        messages = [PushMessage(t, "magic", TOPIC) for t in tokens(count)]
        ok = 0
        try:
            for start in range(0, count, batch):
                ok += sum(r.ok for r in await client.send_batch(messages[start : start + batch]))
        finally:
            await client.aclose()
        return ok

    started = time.perf_counter()
    ok = asyncio.run(go())
    queue.put((ok, time.perf_counter() - started, 0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def in_child(target, *args):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get(timeout=3600)
    proc.join()
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushes", type=int, default=10_000)
    parser.add_argument("--memory", default="10000,100000", help="push counts for the memory run ('' to skip)")
    parser.add_argument("--database-url", default=os.environ.get("MDMSERVER_BENCH_DATABASE_URL"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    db_label = "PostgreSQL" if args.database_url else "SQLite"
    with tempfile.TemporaryDirectory() as tmp:
        emulator_dir = Path(tmp) / "emulator"
        emulator, url = start_emulator(emulator_dir)
        try:
            n = args.pushes
            best_bare: dict[str, float] = {}
            best_full = float("inf")
            for _ in range(args.repeats):
                for label, batch in (("one batch", n), ("batches of 500", 500)):
                    ok, elapsed, _b, _rss = in_child(run_bare, url, emulator_dir, n, batch)
                    print(f"bare client, {label:15s}: {ok}/{n} in {elapsed:6.2f}s = {n / elapsed:7.0f} pushes/s")
                    best_bare[label] = min(best_bare.get(label, float("inf")), elapsed)
                run_dir = Path(tmp) / f"run{secrets.token_hex(3)}"
                overrides, fill, enqueue, drop = prepare(run_dir, url, emulator_dir, n, args.database_url)
                try:
                    sent, full, _before, _peak = in_child(run_worker, overrides)
                finally:
                    if drop:
                        drop()
                print(f"full path ({db_label}): {sent}/{n} in {full:6.2f}s = {n / full:7.0f} pushes/s "
                      f"(outbox filled by one request_push of {n} devices in {enqueue:.2f}s)")
                best_full = min(best_full, full)
            bare = min(best_bare.values())
            print(f"best of {args.repeats}: bare {n / bare:.0f} pushes/s, full path {n / best_full:.0f} pushes/s, "
                  f"ratio full/bare {bare / best_full:.2f} (target >= 0.7)")
            counts = [int(c) for c in args.memory.split(",") if c.strip()]
            peaks = []
            for count in counts:
                overrides, _fill, _enq, drop = prepare(Path(tmp) / f"mem{count}", url, emulator_dir, count,
                                                       args.database_url)
                try:
                    sent, elapsed, before, peak = in_child(run_worker, overrides)
                finally:
                    if drop:
                        drop()
                peaks.append(peak)
                print(f"worker memory : {sent:7d} pushes in {elapsed:7.1f}s, RSS after first batch "
                      f"{before:6.1f} MiB, highest RSS after any batch {peak:6.1f} MiB")
            if len(peaks) == 2:
                print(f"highest RSS, {counts[1]} vs {counts[0]} pushes: {peaks[1] / peaks[0]:.2f}x")
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
