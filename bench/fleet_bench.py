#!/usr/bin/env python3
"""The fleet bench: N simulated devices against gunicorn serving mdmserver, one command each.

1. gunicorn serves the real app (``connect_apps:mdm_app()``) on PostgreSQL (``--postgres URL``, a
   private schema dropped at the end) or on SQLite in a temporary folder.
2. N simulated devices enroll over HTTP (``--enroll-concurrency`` threads; each makes its RSA key and
   gets its certificate through SCEP, or with ``MDMSERVER_ENROLLMENT_IDENTITY=pkcs12`` the server makes
   the key: the keys are what enrollment costs).
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
        [--threads 4] [--postgres URL] [--reuse DIR] [--json]

``--reuse DIR`` keeps what enrollment made for the next run: the server's data folder (its secret key,
the SQLite database) and, on PostgreSQL, the schema named in ``DIR/schema`` are not deleted, and the
enrolled devices' identities (certificate and private key, PEM, mode 0600 in a 0700 folder) are kept
in ``DIR/devices.jsonl``. A later run with the same DIR enrolls only the devices still missing (more
devices than DIR holds is refused) and measures the same phase: commands of earlier runs are not
counted, active ones left by an interrupted run are cancelled first. Delete DIR (and drop the schema
named in ``DIR/schema``) to start over.

Exits 1 when any request failed or surprised, or delivery was not exactly once.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parent))

from connect_setup import Server, bench_environment, prepared_app, signed  # noqa: E402

from mdmserver.app import create_app  # noqa: E402
from mdmserver.bootstrap import initialize  # noqa: E402
from mdmserver.commands.service import cancel_queue  # noqa: E402
from mdmserver.db import db  # noqa: E402
from mdmserver.pki import x509  # noqa: E402
from mdmserver.protocol.plist import load_dict  # noqa: E402
from mdmserver.records.commands import Command, CommandStatus  # noqa: E402
from mdmserver.records.devices import Device  # noqa: E402
from mdmserver.simulator.device import HttpxTransport, Identity, SimulatedDevice, SimulatorError  # noqa: E402
from mdmserver.tokens.service import create_token  # noqa: E402

#: the action queued for every device, and the one command it queues
ACTION, REQUEST_TYPE = "lock", "DeviceLock"

#: the files of ``--reuse DIR``
DEVICES_FILE, STATE_FILE = "devices.jsonl", "fleet.json"


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
        self.reconnects = 0
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
                # the server closed an idle keep-alive connection: reconnect once (counted), not an error
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
                with self.lock:
                    self.reconnects += 1
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
                "errors": sum(self.errors.values()), "error_kinds": dict(self.errors),
                "reconnects": self.reconnects}


def enroll(transport: ThreadTransport, count: int, concurrency: int) -> tuple[list[SimulatedDevice], dict[str, int]]:
    """``count`` devices enrolled (profile, Authenticate, TokenUpdate) by ``concurrency`` threads; the
    failures counted by kind."""
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def one(_: int) -> SimulatedDevice | None:
        sim = SimulatedDevice(transport)
        try:
            sim.enroll()
            status = sim.authenticate()
            if status == 200:
                status = sim.token_update()
                if status == 200:
                    return sim
                kind = f"TokenUpdate answered HTTP {status}"
            else:
                kind = f"Authenticate answered HTTP {status}"
        except (SimulatorError, OSError, httpx.HTTPError, ValueError) as exc:
            kind = type(exc).__name__
        with lock:
            errors[kind] = errors.get(kind, 0) + 1
        return None

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        devices = [sim for sim in pool.map(one, range(count)) if sim is not None]
    return devices, errors


def load_kept(keep: Path, transport: ThreadTransport) -> list[SimulatedDevice]:
    """The devices enrolled by earlier runs with ``--reuse keep``, ready to sign."""
    path = keep / DEVICES_FILE
    if not path.exists():
        return []
    devices = []
    for line in path.read_text().splitlines():
        kept = json.loads(line)
        # our own bench's keys, written by this script: the (slow) RSA consistency check adds nothing
        key = serialization.load_pem_private_key(kept["key"].encode(), None, unsafe_skip_rsa_key_validation=True)
        devices.append(SimulatedDevice(transport, udid=kept["udid"], topic=kept["topic"], enrolled=True,
                                       identity=Identity(x509.cert_from_pem(kept["cert"]), key)))
    return devices


def keep_devices(keep: Path, devices: list[SimulatedDevice]) -> None:
    """Append the identities of newly enrolled devices to ``keep/devices.jsonl`` (mode 0600)."""
    fd = os.open(keep / DEVICES_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as out:
        for sim in devices:
            out.write(json.dumps({"udid": sim.udid, "topic": sim.topic, "cert": x509.cert_to_pem(sim.identity.certificate),
                                  "key": x509.key_to_pem(sim.identity.key)}) + "\n")


def prepare(tmp: Path, reuse: Path | None, database: str):
    """The initialised app: the first time, with a new push certificate (``prepared_app``); with a kept
    folder made by an earlier run, only brought up to date (migrations)."""
    state = reuse / STATE_FILE if reuse is not None else None
    if state is None or not state.exists():
        app = prepared_app(tmp)
        if state is not None:
            state.write_text(json.dumps({"database": database}) + "\n")
        return app
    kept = json.loads(state.read_text())["database"]
    if kept != database:
        raise SystemExit(f"{reuse} keeps a {kept} database: run with the same database or another folder")
    app = create_app(environ=os.environ)
    initialize(app)
    return app


def check_kept(app, devices: list[SimulatedDevice]) -> int:
    """Refuse kept devices the database does not know (a dropped schema…); cancel the active commands
    an interrupted run left them (they would be delivered first). Returns how many were cancelled."""
    udids = [sim.udid for sim in devices]
    with app.app_context():
        ids = []
        for offset in range(0, len(udids), 1000):
            ids += db.session.scalars(sa.select(Device.id).where(Device.udid.in_(udids[offset:offset + 1000]))).all()
        total = db.session.scalar(sa.select(sa.func.count()).select_from(Device))
        if len(ids) != len(udids) or total != len(udids):
            # a dropped schema, or devices of an enrollment that failed half-way: the bulk action would
            # queue commands no simulated device answers
            raise SystemExit(f"the database holds {total} devices, {len(ids)} of the {len(udids)} kept ones: "
                             "delete the --reuse folder (and its schema) and start over")
        leftover = db.session.scalars(sa.select(Command.device_id).where(
            Command.status.in_([s.value for s in (CommandStatus.QUEUED, CommandStatus.SENT, CommandStatus.NOT_NOW)])
        ).distinct()).all()
        cancelled = sum(cancel_queue(db.session, device_id) for device_id in leftover)
        db.session.commit()
    return cancelled


def last_command_id(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.coalesce(sa.func.max(Command.id), 0)))


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


def delivery(app, queued: dict[str, str], after_id: int) -> dict[str, Any]:
    """What the database says of the queued commands: every one acknowledged, sent once, and no other
    command queued in this run (id above ``after_id``). ``queued``: command UUID → device UDID."""
    uuids = list(queued)
    with app.app_context():
        rows = []
        for offset in range(0, len(uuids), 1000):
            rows += db.session.execute(
                sa.select(Command.uuid, Command.status, Command.attempts, Device.udid)
                .join(Device, Device.id == Command.device_id)
                .where(Command.uuid.in_(uuids[offset:offset + 1000]))
            ).all()
        total = db.session.scalar(sa.select(sa.func.count()).select_from(Command).where(Command.id > after_id))
    acknowledged = sum(1 for r in rows if r.status == CommandStatus.ACKNOWLEDGED.value)
    sent_once = sum(1 for r in rows if r.attempts == 1)
    right_device = sum(1 for r in rows if queued[r.uuid] == r.udid)
    exactly_once = bool(queued) and (len(rows) == len(queued) == acknowledged == sent_once == right_device == total)
    return {"queued": len(queued), "found": len(rows), "acknowledged": acknowledged, "sent_once": sent_once,
            "on_the_named_device": right_device, "commands_of_this_run": total, "exactly_once": exactly_once}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64, help="client threads of the measured phase")
    parser.add_argument("--enroll-concurrency", type=int, default=8, help="client threads enrolling")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="default: as `mdmserver serve`")
    parser.add_argument("--postgres", default=None, metavar="URL",
                        help="PostgreSQL server URL: the bench uses a private schema there and drops it")
    parser.add_argument("--reuse", type=Path, default=None, metavar="DIR",
                        help="keep the database and the enrolled identities in DIR for the next run "
                             "(later runs enroll only the devices missing)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.devices < 1 or args.concurrency < 1 or args.enroll_concurrency < 1:
        parser.error("--devices, --concurrency and --enroll-concurrency must be at least 1")
    with bench_environment("bench-fleet", args.postgres, keep=args.reuse) as (tmp, env):
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
    app = prepare(tmp, args.reuse, "postgresql" if args.postgres else "sqlite")
    with app.app_context():
        _, token = create_token(db.session, f"fleet-bench {time.strftime('%Y-%m-%dT%H:%M:%S')} {os.getpid()}",
                                ["read", "write"])
        db.session.commit()
    server = Server("mdm_app", env, args.workers, args.threads)
    transport = ThreadTransport(server.url)
    try:
        kept = load_kept(args.reuse, transport) if args.reuse is not None else []
        if len(kept) > args.devices:
            raise SystemExit(f"{args.reuse} holds {len(kept)} devices: run with --devices {len(kept)} or another folder")
        cancelled = check_kept(app, kept) if kept else 0
        _log(args, f"enrolling {args.devices - len(kept)} devices ({len(kept)} kept)…")
        started = time.perf_counter()
        fresh, errors = enroll(transport, args.devices - len(kept), args.enroll_concurrency)
        enroll_seconds = time.perf_counter() - started
        if args.reuse is not None:
            keep_devices(args.reuse, fresh)
        devices = kept + fresh
        enrollment = {"enrolled": len(fresh), "kept": len(kept), "seconds": round(enroll_seconds, 1),
                      "devices_per_second": round(len(fresh) / enroll_seconds, 1) if fresh else None,
                      "errors": sum(errors.values()), "error_kinds": errors,
                      "leftover_commands_cancelled": cancelled}
        after_id = last_command_id(app)

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
    # the PostgreSQL URL may hold a password: not in the report
    return {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "postgres"},
            "database": "postgresql" if args.postgres else "sqlite",
            "enrollment": enrollment, "queue": queue, "signing_seconds": round(signing_seconds, 1),
            "phase": phase.summary(phase_seconds), "delivery": delivery(app, queued, after_id), "peak_rss": rss,
            }


def _print(report: dict[str, Any]) -> None:
    s, e, q, p, d, r = (report[k] for k in ("settings", "enrollment", "queue", "phase", "delivery", "peak_rss"))
    print(f"database {report['database']}; gunicorn {s['workers']} workers × {s['threads']} threads; "
          f"{s['devices']} devices, {s['concurrency']} client threads")
    print(f"enrollment: {e['enrolled']} devices in {e['seconds']} s ({e['devices_per_second']}/s), {e['kept']} kept, "
          f"errors {e['errors']} {e['error_kinds'] or ''}"
          + (f"; {e['leftover_commands_cancelled']} active commands of an interrupted run cancelled"
             if e["leftover_commands_cancelled"] else ""))
    print(f"queue: {q['request']}: {q['success_count']} queued in {q['seconds']} s")
    print(f"signing (not timed): {report['signing_seconds']} s")
    print(f"phase: {p['requests']} requests in {p['seconds']} s = {p['requests_per_second']} req/s; "
          f"p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, max {p['max_ms']} ms; errors {p['errors']} {p['error_kinds'] or ''}; "
          f"{p['reconnects']} keep-alive reconnects")
    print(f"delivery: {d['acknowledged']}/{d['queued']} acknowledged, {d['sent_once']} sent once, "
          f"{d['commands_of_this_run']} commands queued in this run: "
          f"{'exactly once' if d['exactly_once'] else 'NOT exactly once'}")
    print(f"peak RSS: master {r['master_kib'] // 1024} MiB, workers {[k // 1024 for k in r['workers_kib']]} MiB, "
          f"total {r['total_mib']} MiB")


if __name__ == "__main__":
    sys.exit(main())
