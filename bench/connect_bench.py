#!/usr/bin/env python3
"""Connect-path throughput under gunicorn, as a ratio to a minimal baseline measured in the same run.

(a) Idle with an empty queue; (b) deliver-and-acknowledge cycles (each request acknowledges one
command and receives the next). The baseline is a minimal Flask endpoint under the same gunicorn
settings that verifies the same signature and parses the same plist (bench/connect_apps.py).
Requests are signed before the timed part, so client-side signing does not count.

    .venv/bin/python bench/connect_bench.py [--devices 20] [--commands 40] [--idle 3000]
        [--workers 2] [--threads 4] [--concurrency 8] [--database-url URL]
"""

from __future__ import annotations

import argparse
import base64
import collections
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mdmserver.collaborators import secret_box  # noqa: E402
from mdmserver.pki import cms, x509  # noqa: E402
from mdmserver.protocol.plist import dump_plist  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _push_cert(topic: str) -> tuple[bytes, bytes]:
    key = x509.generate_private_key()
    name = cx509.Name([cx509.NameAttribute(NameOID.USER_ID, topic),
                       cx509.NameAttribute(NameOID.COMMON_NAME, "APSP:bench")])
    now = dt.datetime.now(dt.UTC)
    cert = (cx509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(cx509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class Server:
    def __init__(self, factory: str, env: dict[str, str], workers: int, threads: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(ROOT / ".venv/bin/gunicorn"), "--workers", str(workers), "--threads", str(threads),
             "--bind", f"127.0.0.1:{self.port}", "--chdir", str(ROOT / "bench"), "--log-level", "warning",
             f"connect_apps:{factory}()"],
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            # gunicorn puts its starting directory first on sys.path (its default --chdir): start it in
            # bench/, or the mdmserver of this tree would shadow the one of --compare-tree's PYTHONPATH
            cwd=str(ROOT / "bench"),
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                httpx.get(self.url + "/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{factory} did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _run(url: str, jobs: list[list[tuple[bytes, str]]], concurrency: int) -> dict:
    """Each job is a list of (body, signature) sent in order by one worker thread."""
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    queue = list(jobs)

    def worker() -> None:
        client = httpx.Client(timeout=60)
        local, bad = [], []
        while True:
            with lock:
                if not queue:
                    break
                job = queue.pop()
            for body, signature in job:
                start = time.perf_counter()
                response = client.put(url + "/mdm/connect", content=body, headers={"Mdm-Signature": signature})
                local.append(time.perf_counter() - start)
                if response.status_code != 200:
                    bad.append(response.status_code)
        client.close()
        with lock:
            latencies.extend(local)
            errors.extend(bad)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    expected = sum(len(job) for job in jobs)
    if errors or len(latencies) != expected:
        # A ratio computed over error answers measures nothing: stop here, loudly.
        raise SystemExit(
            f"benchmark invalid: {url} answered {len(errors)} of {len(latencies)} requests with a status "
            f"other than 200 ({dict(collections.Counter(errors))}); {expected} requests expected"
        )
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
        "errors": len(errors),
    }


def _alternate(first, second, repeat: int) -> tuple[dict, dict]:
    """Run two measurements alternately ``repeat`` times; keep each one's best run (less noise
    from other processes on a shared machine)."""
    a_runs, b_runs = [], []
    for _ in range(repeat):
        a_runs.append(first())
        b_runs.append(second())
    return max(a_runs, key=lambda r: r["rps"]), max(b_runs, key=lambda r: r["rps"])


def _queue_cycles(app, devices, count: int, signed) -> list[list[tuple[bytes, str]]]:
    """Queue ``count`` commands per device; return per device: Idle + one Acknowledged per command,
    pre-signed, in delivery order."""
    from mdmserver.commands.service import enqueue_commands
    from mdmserver.db import db
    from mdmserver.devices.service import get_device_by_udid

    jobs = []
    with app.app_context():
        for sim in devices:
            device = get_device_by_udid(db.session, sim.udid)
            queued = [enqueue_commands(db.session, [device.id], "DeviceLock", {}, enqueued_by="bench", box=secret_box())[0]["uuid"]
                      for _ in range(count)]
            db.session.commit()
            job = [signed(sim, {"UDID": sim.udid, "Status": "Idle"})]
            job += [signed(sim, {"UDID": sim.udid, "Status": "Acknowledged", "CommandUUID": u}) for u in queued]
            jobs.append(job)
    return jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--commands", type=int, default=40, help="commands per device for (b)")
    parser.add_argument("--idle", type=int, default=3000, help="Idle requests for (a)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="default: as `mdmserver serve`")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary folder")
    parser.add_argument("--postgres", default=None, metavar="URL",
                        help="PostgreSQL server URL: the bench uses a private schema there and drops it")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs; the best of each is kept")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="connect-bench-"))
    env = {"MDMSERVER_DATA_DIR": str(tmp / "data"), "MDMSERVER_LOG_LEVEL": "WARNING",
           "MDMSERVER_ADMISSION_POLICY": "auto", "MDMSERVER_ENROLL_RATE_LIMIT": "0"}
    drop_schema = None
    if args.postgres:
        import sqlalchemy as sa

        schema = f"bench_connect_{os.getpid()}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')

        def drop_schema() -> None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

        separator = "&" if "?" in args.postgres else "?"
        args.database_url = f"{args.postgres}{separator}options=-csearch_path%3D{schema}"
    if args.database_url:
        env["MDMSERVER_DATABASE_URL"] = args.database_url
    os.environ.update(env)
    try:
        return _bench(args, tmp, env)
    finally:
        if drop_schema is not None:
            drop_schema()


def _bench(args, tmp: Path, env: dict[str, str]) -> int:

    from mdmserver.app import create_app
    from mdmserver.bootstrap import initialize
    from mdmserver.db import db
    from mdmserver.pki import service as pki
    from mdmserver.push import service as push_service
    from mdmserver.simulator.device import HttpxTransport, SimulatedDevice

    app = create_app(environ=os.environ)
    initialize(app)
    with app.app_context():
        cert_pem, key_pem = _push_cert(f"com.apple.mgmt.External.{uuid.uuid4()}")
        push_service.import_push_certificate(db.session, cert_pem, key_pem, None, box=secret_box())
        db.session.commit()
        (tmp / "ca.pem").write_text(x509.cert_to_pem(pki.get_ca_certificate(db.session)))

    mdm = Server("mdm_app", env, args.workers, args.threads)
    try:
        transport = HttpxTransport(mdm.url)
        devices = []
        for _ in range(args.devices):
            sim = SimulatedDevice(transport)
            sim.enroll()
            assert sim.authenticate() == 200 and sim.token_update() == 200
            devices.append(sim)

        def signed(sim, message) -> tuple[bytes, str]:
            body = dump_plist(message)
            return body, base64.b64encode(cms.sign(body, sim.identity.certificate, sim.identity.key,
                                                   detached=True)).decode()

        # (a) Idle, empty queue: each device's Idle body signed once, sent repeatedly
        per_job = max(1, args.idle // (args.devices * 4))
        idle_jobs = []
        for _round in range(4):
            for sim in devices:
                idle_jobs.append([signed(sim, {"UDID": sim.udid, "Status": "Idle"})] * per_job)

        baseline = Server("baseline_app", {**env, "BENCH_CA_FILE": str(tmp / "ca.pem")}, args.workers, args.threads)
        results = {}
        try:
            results["baseline_idle"], results["mdm_idle"] = _alternate(
                lambda: _run(baseline.url, idle_jobs, args.concurrency),
                lambda: _run(mdm.url, idle_jobs, args.concurrency), args.repeat)

            # (b) deliver-and-acknowledge: queue commands, pre-sign Idle + one Acknowledged per command
            cycle_runs = {"baseline": [], "mdm": []}
            for _round in range(args.repeat):
                cycle_jobs = _queue_cycles(app, devices, args.commands, signed)
                cycle_runs["baseline"].append(_run(baseline.url, cycle_jobs, args.concurrency))
                cycle_runs["mdm"].append(_run(mdm.url, cycle_jobs, args.concurrency))
            results["baseline_cycles"] = max(cycle_runs["baseline"], key=lambda r: r["rps"])
            results["mdm_cycles"] = max(cycle_runs["mdm"], key=lambda r: r["rps"])
        finally:
            baseline.stop()
        with app.app_context():
            from sqlalchemy import func, select

            from mdmserver.records.commands import Command

            results["commands_not_acknowledged"] = db.session.scalar(
                select(func.count()).select_from(Command).where(Command.status != "acknowledged"))
    finally:
        mdm.stop()

    if results["commands_not_acknowledged"]:
        raise SystemExit(f"benchmark invalid: {results['commands_not_acknowledged']} commands were not "
                         "acknowledged after the deliver-and-acknowledge cycles")
    ratios = {
        "idle_rps_ratio": results["mdm_idle"]["rps"] / results["baseline_idle"]["rps"],
        "cycles_rps_ratio": results["mdm_cycles"]["rps"] / results["baseline_cycles"]["rps"],
        "idle_p50_ratio": results["mdm_idle"]["p50_ms"] / results["baseline_idle"]["p50_ms"],
        "idle_p99_ratio": results["mdm_idle"]["p99_ms"] / results["baseline_idle"]["p99_ms"],
        "cycles_p50_ratio": results["mdm_cycles"]["p50_ms"] / results["baseline_cycles"]["p50_ms"],
        "cycles_p99_ratio": results["mdm_cycles"]["p99_ms"] / results["baseline_cycles"]["p99_ms"],
    }
    report = {"settings": vars(args), "results": results, "ratios": ratios,
              "targets": {"idle_rps_ratio": 0.6, "cycles_rps_ratio": 0.4}}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for name, r in results.items():
            if isinstance(r, dict):
                print(f"{name:16s} {r['requests']:6d} req  {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                      f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}")
        print(f"(a) idle:   throughput ratio {ratios['idle_rps_ratio']:.2f} (target ≥ 0.6), "
              f"p50 ×{ratios['idle_p50_ratio']:.2f}, p99 ×{ratios['idle_p99_ratio']:.2f}")
        print(f"(b) cycles: throughput ratio {ratios['cycles_rps_ratio']:.2f} (target ≥ 0.4), "
              f"p50 ×{ratios['cycles_p50_ratio']:.2f}, p99 ×{ratios['cycles_p99_ratio']:.2f}")
        print(f"commands not acknowledged after the cycles: {results['commands_not_acknowledged']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
