"""Load generation with simulated devices: many devices, each enrolling and polling, measured."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import httpx

from mdmserver.simulator.device import HttpxTransport, SimulatedDevice, SimulatorError

#: The status a device answers a command it carried out with.
ACKNOWLEDGED = "Acknowledged"
ENROLL_PATH = "/mdm/enroll"


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    #: commands devices received, and those they answered ``Acknowledged``
    delivered: int = 0
    acknowledged: int = 0
    #: requests sent again because the server had closed the kept-alive connection under them
    reconnects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handled(self, results: list[tuple[str, str, str]]) -> None:
        """Count the (uuid, request type, status) a device's session handled."""
        with self.lock:
            self.delivered += len(results)
            self.acknowledged += sum(1 for _uuid, _type, status in results if status == ACKNOWLEDGED)

    def status_count(self, path: str, status: int) -> int:
        return self.statuses.get((path, status), 0)

    def record(self, path: str, status: int, seconds: float) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.statuses[(path.split("?")[0], status)] += 1

    def reconnected(self) -> None:
        with self.lock:
            self.reconnects += 1

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] += 1

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[index]

    def summary(self, elapsed: float) -> dict:
        count = len(self.latencies)
        return {
            "requests": count,
            "seconds": round(elapsed, 3),
            "requests_per_second": round(count / elapsed, 1) if elapsed else 0.0,
            "p50_ms": round(self.percentile(50) * 1000, 2),
            "p90_ms": round(self.percentile(90) * 1000, 2),
            "p99_ms": round(self.percentile(99) * 1000, 2),
            "mean_ms": round(statistics.fmean(self.latencies) * 1000, 2) if count else 0.0,
            "statuses": {f"{path} {status}": n for (path, status), n in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "reconnects": self.reconnects,
            "commands": {"delivered": self.delivered, "acknowledged": self.acknowledged},
        }


def rate_limit_explanation(enroll_stats: Stats) -> str | None:
    """What a 429 from ``/mdm/enroll`` means and how to raise the limit, or ``None`` when there was none."""
    refused = enroll_stats.status_count(ENROLL_PATH, 429)
    if not refused:
        return None
    return (f"{refused} enrollment request(s) answered 429 Too Many Requests: the server's enrollment rate "
            "limit (MDMSERVER_ENROLL_RATE_LIMIT, default 30 a minute per client address) counts every "
            "GET /mdm/enroll from this address, and these simulated devices all share it. Wait a minute, "
            "enroll fewer devices, or restart the server with a higher MDMSERVER_ENROLL_RATE_LIMIT (0 turns "
            "the limit off: for a test server only).")


def undelivered_explanation(queued: int, delivered: int, admission: Counter) -> str | None:
    """Why commands queued were not delivered (``admission``: the admission status of the devices that
    received none), or ``None`` when every queued command was delivered."""
    if queued <= delivered:
        return None
    pending = admission.get("pending", 0)
    reason = ""
    if pending:
        reason = (f"; {pending} device(s) stayed pending admission, and a pending device is given no command: "
                  "accept them (PUT /api/management/v1/admission/devices/<auth set id>/status with "
                  '{"status": "accepted"}) or set MDMSERVER_ADMISSION_POLICY=auto on the server')
    others = {status: n for status, n in admission.items() if status != "pending"}
    if others:
        reason += f"; admission status of the devices that received none: {others}"
    return f"{queued - delivered} of {queued} queued command(s) were not delivered{reason}."


class TimedTransport:
    """Wraps a transport and records every request's latency and status (and its resends on a new
    connection, when it makes any)."""

    def __init__(self, inner, stats: Stats) -> None:
        self.inner, self.stats = inner, stats
        if hasattr(inner, "on_reconnect"):
            inner.on_reconnect = lambda: self.stats.reconnected()

    def request(self, method, path, content=None, headers=None):
        start = time.perf_counter()
        status, response_headers, body = self.inner.request(method, path, content=content, headers=headers)
        self.stats.record(path, status, time.perf_counter() - start)
        return status, response_headers, body


def enroll_devices(
    url: str, count: int, *, concurrency: int, platform: str, secret: str | None, stats: Stats,
    on_progress: Callable[[int], None] = lambda n: None,
) -> list[SimulatedDevice]:
    """Enroll ``count`` devices (Authenticate + TokenUpdate); failures are counted, not raised."""
    devices: list[SimulatedDevice] = []

    def one(index: int) -> SimulatedDevice | None:
        sim = SimulatedDevice(TimedTransport(HttpxTransport(url), stats), platform=platform)
        try:
            sim.enroll(secret=secret)
            if sim.authenticate() != 200:
                stats.error("authenticate refused")
                return None
            if sim.token_update() != 200:
                stats.error("token update refused")
                return None
        except (SimulatorError, OSError, httpx.HTTPError, ValueError) as exc:
            stats.error(type(exc).__name__)
            return None
        return sim

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in as_completed([pool.submit(one, i) for i in range(count)]):
            sim = future.result()
            if sim is not None:
                devices.append(sim)
            on_progress(1)
    return devices


def poll(
    devices: list[SimulatedDevice], iterations: int, *, concurrency: int, stats: Stats,
    misbehave: str | None = None, on_progress: Callable[[int], None] = lambda n: None,
) -> float:
    """Each device runs ``iterations`` check-in sessions (Idle, answer every command); returns seconds."""

    def one(sim: SimulatedDevice) -> None:
        for _ in range(iterations):
            try:
                if misbehave:
                    other = next((d for d in devices if d is not sim), None)
                    status, _ = sim.send("/mdm/connect", {"UDID": sim.udid, "Status": "Idle"},
                                         misbehave=misbehave, other=other)
                    if status not in (400, 403):
                        stats.error(f"misbehaviour {misbehave} answered {status}")
                else:
                    stats.handled(sim.run_session())
            except (SimulatorError, OSError, httpx.HTTPError, ValueError) as exc:
                stats.error(type(exc).__name__)
            on_progress(1)

    for sim in devices:
        if isinstance(sim.transport, TimedTransport):
            sim.transport.stats = stats
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in as_completed([pool.submit(one, d) for d in devices]):
            future.result()
    return time.perf_counter() - start
