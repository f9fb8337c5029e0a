#!/usr/bin/env python3
"""The enrollment bench: N simulated devices enroll in full against gunicorn serving mdmserver.

1. gunicorn serves the real app (``connect_apps:mdm_app()``, ``--workers`` × ``--threads``) on SQLite in
   a temporary folder, or on PostgreSQL (``--postgres URL``: a private schema, dropped at the end);
   admission is automatic and the enrollment rate limit is off (bench/connect_setup.py).
2. One enrollment profile is fetched before the timed phase (a warm-up, not counted): the identity its
   MDM payload's ``IdentityCertificateUUID`` names says the mode — ``scep`` (the device makes its key
   and obtains its certificate through the profile's SCEP payload) or ``pkcs12`` (the server makes the
   key and ships it in the profile).
3. With SCEP, every device's RSA key (the payload's Keysize) is generated before the timed phase: on a
   device it is the device's own cost, not the server's (reported apart, ``device_keys_seconds``).
4. The timed phase: ``--concurrency`` client threads; every device enrolls in full — ``GET
   /mdm/enroll`` (profile), its identity (SCEP: GetCACaps, GetCACert, PKCSReq; PKCS#12: opened),
   ``Authenticate``, ``TokenUpdate``. Timed from the first request to the last answer; latency per
   enrollment (the four steps).
5. Verified in the database: every device that finished is enrolled, with the push token it sent and
   the identity certificate it holds.

    .venv/bin/python bench/enroll_bench.py [--devices 200] [--concurrency 8] [--workers 2]
        [--threads 4] [--postgres URL] [--json]

Exits 1 when any enrollment failed or the database disagrees.
"""

from __future__ import annotations

import argparse
import json
import plistlib
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from connect_setup import Server, bench_environment, prepared_app  # noqa: E402
from fleet_bench import ThreadTransport  # noqa: E402

from mdmserver.db import db  # noqa: E402
from mdmserver.pki import cms, x509  # noqa: E402
from mdmserver.records.devices import Device  # noqa: E402
from mdmserver.simulator.device import (  # noqa: E402
    IDENTITY_PAYLOADS,
    SCEP_PAYLOAD,
    SimulatedDevice,
    SimulatorError,
)
from mdmserver.simulator.scep import ScepSettings, generate_key  # noqa: E402


def offered_identity(url: str) -> tuple[str, int | None]:
    """The identity mode the server's enrollment profile offers (``scep`` or ``pkcs12``) and, for
    SCEP, the key size its payload asks for. One profile is fetched (untimed)."""
    response = httpx.get(url + "/mdm/enroll", timeout=120)
    if response.status_code != 200:
        raise SystemExit(f"GET /mdm/enroll answered {response.status_code}: {response.text[:300]}")
    profile = plistlib.loads(cms.unwrap_signed(response.content).content)
    by_uuid = {p.get("PayloadUUID"): p for p in profile["PayloadContent"]}
    mdm = next(p for p in profile["PayloadContent"] if p.get("PayloadType") == "com.apple.mdm")
    identity = by_uuid.get(mdm.get("IdentityCertificateUUID"), {})
    kind = identity.get("PayloadType")
    if kind not in IDENTITY_PAYLOADS:
        raise SystemExit(f"the enrollment profile's identity is {kind!r}, which the simulator does not know")
    if kind == SCEP_PAYLOAD:
        return "scep", ScepSettings.from_payload(identity).key_size
    return "pkcs12", None


class Enrollments:
    """The timed phase: per device, profile + identity + Authenticate + TokenUpdate."""

    def __init__(self, transport) -> None:
        self.transport = transport
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.modes: Counter[str] = Counter()
        self.devices: list[SimulatedDevice] = []
        self.lock = threading.Lock()

    def one(self, key: Any) -> None:
        sim = SimulatedDevice(self.transport, scep_key=key)
        start = time.perf_counter()
        try:
            sim.enroll()
            status = sim.authenticate()
            kind = None if status == 200 else f"Authenticate answered HTTP {status}"
            if kind is None:
                status = sim.token_update()
                kind = None if status == 200 else f"TokenUpdate answered HTTP {status}"
        except (SimulatorError, OSError, httpx.HTTPError, ValueError) as exc:
            kind = f"{type(exc).__name__}: {str(exc)[:120]}"
        elapsed = time.perf_counter() - start
        with self.lock:
            if kind is not None:
                self.errors[kind] += 1
                return
            self.latencies.append(elapsed)
            self.modes[sim.identity_mode] += 1
            self.devices.append(sim)

    def summary(self, seconds: float) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float:
            if not ordered:
                return 0.0
            return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000, 1)

        return {"enrolled": len(ordered), "seconds": round(seconds, 3),
                "enrollments_per_second": round(len(ordered) / seconds, 1) if seconds else 0.0,
                "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": pct(100),
                "errors": sum(self.errors.values()), "error_kinds": dict(self.errors),
                "identity_modes": dict(self.modes)}


def check_database(app, devices: list[SimulatedDevice]) -> dict[str, Any]:
    """Every finished device is enrolled in the database, with its push token and its identity."""
    by_udid = {sim.udid: sim for sim in devices}
    udids = list(by_udid)
    with app.app_context():
        rows = []
        for offset in range(0, len(udids), 1000):
            rows += db.session.execute(
                sa.select(Device.udid, Device.enrolled, Device.push_token, Device.identity_fingerprint)
                .where(Device.udid.in_(udids[offset:offset + 1000]))).all()
    agreeing = sum(1 for r in rows if r.enrolled and r.push_token == by_udid[r.udid].push_token
                   and r.identity_fingerprint == x509.fingerprint_sha256(by_udid[r.udid].identity.certificate))
    return {"devices": len(devices), "found": len(rows), "enrolled_with_token_and_identity": agreeing,
            "agrees": agreeing == len(devices)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8, help="client threads enrolling")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="default: as `mdmserver serve`")
    parser.add_argument("--postgres", default=None, metavar="URL",
                        help="PostgreSQL server URL: the bench uses a private schema there and drops it")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.devices < 1 or args.concurrency < 1:
        parser.error("--devices and --concurrency must be at least 1")
    with bench_environment("bench-enroll", args.postgres) as (tmp, env):
        report = _bench(args, tmp, env)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print(report)
    ok = report["phase"]["enrolled"] == args.devices and not report["phase"]["errors"] and report["database"]["agrees"]
    return 0 if ok else 1


def _log(args, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr, flush=True)


def _bench(args, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    app = prepared_app(tmp)
    server = Server("mdm_app", env, args.workers, args.threads)
    transport = ThreadTransport(server.url)
    try:
        mode, key_size = offered_identity(server.url)
        keys: list[Any] = [None] * args.devices
        keys_seconds = 0.0
        if mode == "scep":
            _log(args, f"generating {args.devices} device keys (RSA {key_size}, untimed: the devices' own cost)…")
            started = time.perf_counter()
            keys = [generate_key(key_size) for _ in range(args.devices)]
            keys_seconds = time.perf_counter() - started
        _log(args, f"enrolling {args.devices} devices ({mode}), {args.concurrency} client threads…")
        phase = Enrollments(transport)
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            started = time.perf_counter()
            list(pool.map(phase.one, keys))
            seconds = time.perf_counter() - started
    finally:
        transport.close()
        server.stop()
    return {"settings": {k: v for k, v in vars(args).items() if k != "postgres"},  # the URL may hold a password
            "database_kind": "postgresql" if args.postgres else "sqlite",
            "identity": mode, "device_key_size": key_size, "device_keys_seconds": round(keys_seconds, 1),
            "phase": phase.summary(seconds), "database": check_database(app, phase.devices)}


def _print(report: dict[str, Any]) -> None:
    s, p, d = report["settings"], report["phase"], report["database"]
    print(f"database {report['database_kind']}; gunicorn {s['workers']} workers × {s['threads']} threads; "
          f"{s['devices']} devices, {s['concurrency']} client threads; identity {report['identity']}"
          + (f" (device keys RSA {report['device_key_size']} made before the timed phase in "
             f"{report['device_keys_seconds']} s)" if report["identity"] == "scep" else " (keys made by the server)"))
    print(f"enrollment (profile + identity + Authenticate + TokenUpdate): {p['enrolled']} in {p['seconds']} s = "
          f"{p['enrollments_per_second']} enrollments/s; p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, "
          f"max {p['max_ms']} ms; errors {p['errors']} {p['error_kinds'] or ''}; modes {p['identity_modes']}")
    print(f"database: {d['enrolled_with_token_and_identity']}/{d['devices']} enrolled with their token and identity"
          f"{'' if d['agrees'] else ' — DISAGREES'}")


if __name__ == "__main__":
    sys.exit(main())
