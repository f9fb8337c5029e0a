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
import collections
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from connect_setup import (  # noqa: E402
    Server,
    bench_environment,
    enrolled_devices,
    prepared_app,
    queue_cycles,
    signed,
    unacknowledged,
)


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

    if args.database_url and args.postgres:
        parser.error("give --database-url or --postgres, not both")
    with bench_environment("bench-connect", args.postgres) as (tmp, env):
        if args.database_url:
            env["MDMSERVER_DATABASE_URL"] = os.environ["MDMSERVER_DATABASE_URL"] = args.database_url
        return _bench(args, tmp, env)


def _bench(args, tmp: Path, env: dict[str, str]) -> int:
    app = prepared_app(tmp)
    mdm = Server("mdm_app", env, args.workers, args.threads)
    try:
        devices = enrolled_devices(mdm.url, args.devices)

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
                cycle_jobs = queue_cycles(app, devices, args.commands)
                cycle_runs["baseline"].append(_run(baseline.url, cycle_jobs, args.concurrency))
                cycle_runs["mdm"].append(_run(mdm.url, cycle_jobs, args.concurrency))
            results["baseline_cycles"] = max(cycle_runs["baseline"], key=lambda r: r["rps"])
            results["mdm_cycles"] = max(cycle_runs["mdm"], key=lambda r: r["rps"])
        finally:
            baseline.stop()
        results["commands_not_acknowledged"] = unacknowledged(app)
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
