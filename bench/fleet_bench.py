#!/usr/bin/env python3
"""The fleet bench: N simulated devices against gunicorn serving mdmserver, one command each.

1. gunicorn serves the real app (``connect_apps:mdm_app()``) on PostgreSQL (``--postgres URL``, a
   private schema dropped at the end) or on SQLite in a temporary folder.
2. N simulated devices enroll over HTTP (``--enroll-concurrency`` threads; the server generates each
   device's RSA key, which is what enrollment costs).
3. One admin request queues one ``DeviceLock`` per device: ``POST /api/v1/actions/lock`` with
   ``{"all_devices": true}`` (set-based on the server).
4. Every device's requests are signed (outside the timed part): its ``Idle`` and its
   ``Acknowledged`` of the command the admin answer named for it.
5. The measured phase: ``--concurrency`` client threads; every device sends Idle (the answer must be
   its command), its acknowledgement (the answer must be empty) and Idle again (empty: nothing is
   offered twice). Timed: from the first request of the phase to the last answer; latency per request.
6. Verified in the database: every queued command acknowledged and sent exactly once
   (``commands.attempts``), no other command for these devices; the peak RSS (VmHWM) of the gunicorn
   master and workers.

    .venv/bin/python bench/fleet_bench.py [--devices 10000] [--concurrency 64] [--workers 2]
        [--threads 4] [--postgres URL] [--json]

Exits 1 when any request failed or surprised, or delivery was not exactly once.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from connect_setup import Server, bench_environment, prepared_app, signed  # noqa: E402

from mdmserver.db import db  # noqa: E402
from mdmserver.protocol.plist import load_dict  # noqa: E402
from mdmserver.records.commands import Command, CommandStatus  # noqa: E402
from mdmserver.records.devices import Device  # noqa: E402
from mdmserver.simulator.device import HttpxTransport, SimulatedDevice, SimulatorError  # noqa: E402
from mdmserver.tokens.service import create_token  # noqa: E402

#: the action queued for every device, and the one command it queues
ACTION, REQUEST_TYPE = "lock", "DeviceLock"


class ThreadTransport:
    """One HTTP client per client thread, shared by every device that thread drives (10,000 devices
    must not mean 10,000 open connections)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.local = threading.local()
        self.all: list[HttpxTransport] = []
        self.lock = threading.Lock()

    def request(self, method, path, content=None, headers=None):
        transport = getattr(self.local, "transport", None)
        if transport is None:
            transport = self.local.transport = HttpxTransport(self.url)
            with self.lock:
                self.all.append(transport)
        return transport.request(method, path, content=content, headers=headers)

    def close(self) -> None:
        for transport in self.all:
            transport.close()


class Phase:
    """The measured phase: per device (Idle, Acknowledged, Idle), pre-signed, over plain
    ``http.client`` keep-alive connections (one per client thread: the client costs little CPU)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.local = threading.local()
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.lock = threading.Lock()

    def _put(self, body: bytes, signature: str) -> tuple[int, bytes]:
        headers = {"Mdm-Signature": signature, "Content-Type": "application/x-apple-aspen-mdm"}
        for attempt in (1, 2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                conn.request("PUT", "/mdm/connect", body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # the server closed an idle keep-alive connection: reconnect once, not an error
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _timed(self, body: bytes, signature: str) -> tuple[int, bytes]:
        start = time.perf_counter()
        status, content = self._put(body, signature)
        elapsed = time.perf_counter() - start
        with self.lock:
            self.latencies.append(elapsed)
        return status, content

    def _error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def device(self, job: dict[str, Any]) -> None:
        """Idle → its command; Acknowledged → nothing; Idle → nothing. Any surprise is an error."""
        try:
            status, content = self._timed(*job["idle"])
            if status != 200:
                return self._error(f"Idle answered HTTP {status}")
            command = load_dict(content) if content else None
            if command is None:
                return self._error("Idle answered no command")
            if command.get("CommandUUID") != job["uuid"] or command.get("Command", {}).get("RequestType") != REQUEST_TYPE:
                return self._error("Idle answered another command")
            status, content = self._timed(*job["ack"])
            if status != 200:
                return self._error(f"Acknowledged answered HTTP {status}")
            if content:
                return self._error("Acknowledged answered a command")
            status, content = self._timed(*job["idle"])
            if status != 200:
                return self._error(f"second Idle answered HTTP {status}")
            if content:
                return self._error("second Idle answered a command")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self._error(type(exc).__name__)

    def close_thread(self) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()

    def summary(self, seconds: float) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float:
            if not ordered:
                return 0.0
            return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000, 2)

        return {"requests": len(ordered), "seconds": round(seconds, 3),
                "requests_per_second": round(len(ordered) / seconds, 1) if seconds else 0.0,
                "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": pct(100),
                "errors": sum(self.errors.values()), "error_kinds": dict(self.errors)}


def enroll(transport: ThreadTransport, count: int, concurrency: int) -> tuple[list[SimulatedDevice], dict[str, int]]:
    """``count`` devices enrolled (profile, Authenticate, TokenUpdate) by ``concurrency`` threads; the
    failures counted by kind."""
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def one(_: int) -> SimulatedDevice | None:
        sim = SimulatedDevice(transport)
        try:
            sim.enroll()
            if sim.authenticate() == 200 and sim.token_update() == 200:
                return sim
            kind = "Authenticate or TokenUpdate refused"
        except (SimulatorError, OSError, httpx.HTTPError, ValueError) as exc:
            kind = type(exc).__name__
        with lock:
            errors[kind] = errors.get(kind, 0) + 1
        return None

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        devices = [sim for sim in pool.map(one, range(count)) if sim is not None]
    return devices, errors


def peak_rss(master_pid: int) -> dict[str, Any]:
    """VmHWM (peak resident set) of the gunicorn master and its workers, in KiB, from /proc."""
    pids = [master_pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid …: comm may hold spaces, so split after its closing parenthesis
            if int(stat.rpartition(")")[2].split()[1]) == master_pid:
                pids.append(int(entry.name))
    peaks = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        line = next((ln for ln in status.splitlines() if ln.startswith("VmHWM:")), None)
        if line is not None:
            peaks[pid] = int(line.split()[1])
    return {"master_kib": peaks.get(master_pid, 0),
            "workers_kib": [kib for pid, kib in sorted(peaks.items()) if pid != master_pid],
            "total_mib": round(sum(peaks.values()) / 1024, 1)}


def delivery(app, queued: dict[str, str]) -> dict[str, Any]:
    """What the database says of the queued commands: every one acknowledged, sent once, and no other
    command for the enrolled devices. ``queued``: command UUID → device UDID."""
    uuids = list(queued)
    with app.app_context():
        rows = []
        for offset in range(0, len(uuids), 1000):
            rows += db.session.execute(
                sa.select(Command.uuid, Command.status, Command.attempts, Device.udid)
                .join(Device, Device.id == Command.device_id)
                .where(Command.uuid.in_(uuids[offset:offset + 1000]))
            ).all()
        total = db.session.scalar(sa.select(sa.func.count()).select_from(Command))
    acknowledged = sum(1 for r in rows if r.status == CommandStatus.ACKNOWLEDGED.value)
    sent_once = sum(1 for r in rows if r.attempts == 1)
    right_device = sum(1 for r in rows if queued[r.uuid] == r.udid)
    exactly_once = bool(queued) and (len(rows) == len(queued) == acknowledged == sent_once == right_device == total)
    return {"queued": len(queued), "found": len(rows), "acknowledged": acknowledged, "sent_once": sent_once,
            "on_the_named_device": right_device, "commands_in_database": total, "exactly_once": exactly_once}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64, help="client threads of the measured phase")
    parser.add_argument("--enroll-concurrency", type=int, default=8, help="client threads enrolling")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="default: as `mdmserver serve`")
    parser.add_argument("--postgres", default=None, metavar="URL",
                        help="PostgreSQL server URL: the bench uses a private schema there and drops it")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.devices < 1 or args.concurrency < 1 or args.enroll_concurrency < 1:
        parser.error("--devices, --concurrency and --enroll-concurrency must be at least 1")
    with bench_environment("bench-fleet", args.postgres) as (tmp, env):
        report = _bench(args, tmp, env)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print(report)
    ok = not report["phase"]["errors"] and not report["enrollment"]["errors"] and report["delivery"]["exactly_once"]
    return 0 if ok else 1


def _log(args, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr, flush=True)


def _bench(args, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    app = prepared_app(tmp)
    with app.app_context():
        _, token = create_token(db.session, "fleet-bench", ["read", "write"])
        db.session.commit()
    server = Server("mdm_app", env, args.workers, args.threads)
    transport = ThreadTransport(server.url)
    try:
        _log(args, f"enrolling {args.devices} devices…")
        started = time.perf_counter()
        devices, errors = enroll(transport, args.devices, args.enroll_concurrency)
        enroll_seconds = time.perf_counter() - started
        enrollment = {"enrolled": len(devices), "seconds": round(enroll_seconds, 1),
                      "devices_per_second": round(len(devices) / enroll_seconds, 1),
                      "errors": sum(errors.values()), "error_kinds": errors}

        _log(args, f"queueing one {REQUEST_TYPE} per device in one request…")
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as api:
            started = time.perf_counter()
            response = api.post(f"/api/v1/actions/{ACTION}", json={"all_devices": True})
            queue_seconds = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"the bulk action answered {response.status_code}: {response.text[:500]}")
        result = response.json()
        uuid_of = {entry["udid"]: entry["command_uuids"] for entry in result["success_list"]}
        remarks = sorted({entry["remarks"] for entry in result["na_list"]})
        queue = {"request": f"POST /api/v1/actions/{ACTION} {{\"all_devices\": true}}",
                 "seconds": round(queue_seconds, 3), "success_count": result["success_count"],
                 "not_applicable_count": result["not_applicable_count"], "not_applicable_remarks": remarks}

        _log(args, "signing the devices' requests…")
        started = time.perf_counter()
        jobs, queued = [], {}
        for sim in devices:
            uuids = uuid_of.get(sim.udid, [])
            if len(uuids) != 1:
                enrollment["errors"] += 1
                enrollment["error_kinds"][f"{len(uuids)} commands queued for a device"] = \
                    enrollment["error_kinds"].get(f"{len(uuids)} commands queued for a device", 0) + 1
                continue
            queued[uuids[0]] = sim.udid
            jobs.append({"uuid": uuids[0], "idle": signed(sim, {"UDID": sim.udid, "Status": "Idle"}),
                         "ack": signed(sim, {"UDID": sim.udid, "Status": "Acknowledged", "CommandUUID": uuids[0]})})
        signing_seconds = time.perf_counter() - started

        _log(args, f"measured phase: {len(jobs)} devices × (Idle, Acknowledged, Idle), "
                   f"{args.concurrency} client threads…")
        phase = Phase(server.url)
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            started = time.perf_counter()
            list(pool.map(phase.device, jobs))
            phase_seconds = time.perf_counter() - started
            list(pool.map(lambda _: phase.close_thread(), range(args.concurrency)))
        rss = peak_rss(server.process.pid)
    finally:
        transport.close()
        server.stop()
    return {"settings": {k: v for k, v in vars(args).items() if k != "postgres"},
            "database": "postgresql" if args.postgres else "sqlite",
            "enrollment": enrollment, "queue": queue, "signing_seconds": round(signing_seconds, 1),
            "phase": phase.summary(phase_seconds), "delivery": delivery(app, queued), "peak_rss": rss,
            }


def _print(report: dict[str, Any]) -> None:
    s, e, q, p, d, r = (report[k] for k in ("settings", "enrollment", "queue", "phase", "delivery", "peak_rss"))
    print(f"database {report['database']}; gunicorn {s['workers']} workers × {s['threads']} threads; "
          f"{s['devices']} devices, {s['concurrency']} client threads")
    print(f"enrollment: {e['enrolled']} devices in {e['seconds']} s ({e['devices_per_second']}/s), "
          f"errors {e['errors']} {e['error_kinds'] or ''}")
    print(f"queue: {q['request']}: {q['success_count']} queued in {q['seconds']} s")
    print(f"signing (not timed): {report['signing_seconds']} s")
    print(f"phase: {p['requests']} requests in {p['seconds']} s = {p['requests_per_second']} req/s; "
          f"p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, max {p['max_ms']} ms; errors {p['errors']} {p['error_kinds'] or ''}")
    print(f"delivery: {d['acknowledged']}/{d['queued']} acknowledged, {d['sent_once']} sent once, "
          f"{d['commands_in_database']} commands in the database: "
          f"{'exactly once' if d['exactly_once'] else 'NOT exactly once'}")
    print(f"peak RSS: master {r['master_kib'] // 1024} MiB, workers {[k // 1024 for k in r['workers_kib']]} MiB, "
          f"total {r['total_mib']} MiB")


if __name__ == "__main__":
    sys.exit(main())
