"""A small Prometheus text-format registry: request counts by route and status, latency histogram.

Counters live in the process that serves the request. Under ``mdmserver serve`` (several gunicorn
workers) every process also keeps its values in its own file of a shared directory (:func:`share_through`:
``<data dir>/metrics``, emptied when the server starts): each change stores the series' 8-byte value in
place in the file's shared memory mapping before the response leaves (a store, no system call; a request
changes three values). ``/metrics`` adds every other process's file to its own values, so whichever worker answers reports the whole server, including workers that have exited since (counters
never go down). Features add counters with ``counter(name, help)``; figures other processes keep in the
database (the push worker's) are rendered by collectors (:func:`register_collector`).
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import mmap
import os
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from flask import Flask, Response, g, request

log = logging.getLogger("mdmserver.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# --- Several processes: one value file each in a shared directory ------------------------------------
#
# A value file: an 8-byte little-endian count of the bytes in use, then records, each a 4-byte key length,
# the key (JSON: [metric name, label pairs, part]), spaces up to a multiple of 8 bytes, and the value (an
# 8-byte double). A record is written in full before the count that covers it, so a reader that reads
# the count first never parses a half-written record; a value is then updated in place. A histogram's
# parts are its buckets' own counts (part i: observations in bucket i alone, the last part past every
# bound; not cumulative, so an observation changes one) and "sum".

_USED = struct.Struct("<Q")
_LENGTH = struct.Struct("<I")
_VALUE = struct.Struct("<d")
VALUES_SUFFIX = ".values"
#: The shared directory, in the data directory (``mdmserver serve``): transient, never backed up.
DIRECTORY_NAME = "metrics"
#: A value file grows by this many bytes (zeros past the count of bytes in use are not records).
_CHUNK = 64 * 1024


class _ValueFile:
    """This process's value file (opened on first write, so a forked worker never writes its parent's),
    mapped into memory (``MAP_SHARED``): a change is a store into the page cache, which another process
    reading the file sees at once, without a system call per value (a request changes about 13)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.size = 0
        self.map: mmap.mmap | None = None
        self._grow(_CHUNK)
        self.used = _USED.size
        self.offsets: dict[tuple, int] = {}
        _USED.pack_into(self.map, 0, self.used)

    def _grow(self, at_least: int) -> None:
        size = max(self.size * 2, at_least + -at_least % _CHUNK)
        os.ftruncate(self.fd, size)
        mapped = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        if self.map is not None:
            self.map.close()
        self.map, self.size = mapped, size

    def set(self, key: tuple, value: float) -> None:
        offset = self.offsets.get(key)
        if offset is not None:
            _VALUE.pack_into(self.map, offset, value)
            return
        encoded = _key(*key).encode()
        padding = b" " * (-(_LENGTH.size + len(encoded)) % 8)
        record = _LENGTH.pack(len(encoded)) + encoded + padding + _VALUE.pack(value)
        if self.used + len(record) > self.size:
            self._grow(self.used + len(record))
        self.map[self.used:self.used + len(record)] = record
        self.offsets[key] = self.used + len(record) - _VALUE.size
        self.used += len(record)
        _USED.pack_into(self.map, 0, self.used)  # after the record: a reader never sees half of one


def read_values(path: Path) -> dict[str, float]:
    """The values of one value file by key (empty when it is unreadable or not one)."""
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    if len(data) < _USED.size:
        return {}
    used = min(_USED.unpack_from(data)[0], len(data))
    values, position = {}, _USED.size
    while position + _LENGTH.size <= used:
        (length,) = _LENGTH.unpack_from(data, position)
        start = position + _LENGTH.size
        value_at = start + length + (-(_LENGTH.size + length) % 8)
        if value_at + _VALUE.size > used:
            break
        values[data[start:start + length].decode(errors="replace")] = _VALUE.unpack_from(data, value_at)[0]
        position = value_at + _VALUE.size
    return values


class _Shared:
    """Where values are shared (``None``: this process alone) and this process's open value file."""

    def __init__(self) -> None:
        self.directory: Path | None = None
        self.lock = threading.Lock()
        self.file: _ValueFile | None = None
        self.pid = 0

    def write(self, key: tuple, value: float) -> None:
        directory = self.directory
        if directory is None:
            return
        with self.lock:
            try:
                if self.file is None:
                    self.pid = os.getpid()
                    self.file = _ValueFile(directory / f"{self.pid}{VALUES_SUFFIX}")
                self.file.set(key, value)
            except OSError as exc:  # the directory removed or full: requests go on, counted here alone
                log.warning("metrics no longer shared with the other workers (%s): %s", directory, exc)
                self.directory, self.file = None, None

    def others(self) -> list[dict[str, float]]:
        directory = self.directory
        if directory is None:
            return []
        own = f"{os.getpid()}{VALUES_SUFFIX}"
        return [read_values(path) for path in directory.glob(f"*{VALUES_SUFFIX}") if path.name != own]


_shared = _Shared()


def _forget_file() -> None:
    """In a forked child: its own file on its first change, never the parent's (a new lock too: the
    parent's may have been held by another thread at the fork)."""
    _shared.file, _shared.lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_file)


def _key(name: str, labels: tuple, part: int | str | None = None) -> str:
    return json.dumps([name, [list(pair) for pair in labels], part], separators=(",", ":"))


def share_through(directory: Path | None) -> None:
    """From now on, keep this process's values in ``<directory>/<pid>.values`` and add every other
    process's file there to what :func:`render` reports (``None``: this process alone). Set in the gunicorn
    master before it forks, so every worker inherits it."""
    _shared.directory = None if directory is None else Path(directory)


def prepare_directory(directory: Path) -> None:
    """Create ``directory`` (mode 0700) and remove the files of a previous run, so a restarted server
    counts from zero as a single process does."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in directory.glob(f"*{VALUES_SUFFIX}"):
        stale.unlink(missing_ok=True)


def _by_metric(files: list[dict[str, float]]) -> dict[str, list[dict[tuple, dict]]]:
    """Other processes' values by metric name: one ``{label pairs: {part: value}}`` per process."""
    found: dict[str, list[dict[tuple, dict]]] = defaultdict(list)
    for values in files:
        series: dict[str, dict[tuple, dict]] = defaultdict(lambda: defaultdict(dict))
        for key, value in values.items():
            try:
                metric, pairs, part = json.loads(key)
                labels = tuple(tuple(pair) for pair in pairs)
            except (ValueError, TypeError):
                continue
            series[metric][labels][part] = value
        for metric, rows in series.items():
            found[metric].append(rows)
    return found


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self._values: dict[tuple[tuple[str, str], ...], float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] += amount
            _shared.write((self.name, key), self._values[key])

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self, others: Iterable[dict[tuple, dict]] = ()) -> list[str]:
        """The text format, with ``others`` (other processes' series, :func:`_by_metric`) added in."""
        with self._lock:
            totals: dict[tuple, float] = defaultdict(float, self._values)
        for series in others:
            for labels, parts in series.items():
                totals[labels] += parts.get(None, 0.0)
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for key, value in sorted(totals.items()):
            lines.append(f"{self.name}{_labels(dict(key))} {value:g}")
        return lines


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name = name
        self.help = help_text
        self.buckets = buckets
        self._counts: dict[tuple, list[int]] = {}
        self._sums: dict[tuple, float] = defaultdict(float)
        self._lock = threading.Lock()

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        # one bucket each (not cumulative: one count changes per observation), the last past every bound
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            counts = self._counts.get(key)
            if counts is None:
                counts = self._counts[key] = [0] * (len(self.buckets) + 1)
            counts[index] += 1
            self._sums[key] += value
            _shared.write((self.name, key, index), counts[index])
            _shared.write((self.name, key, "sum"), self._sums[key])

    def render(self, others: Iterable[dict[tuple, dict]] = ()) -> list[str]:
        """The text format, with ``others`` (other processes' series, :func:`_by_metric`) added in."""
        with self._lock:
            merged = {key: list(counts) for key, counts in self._counts.items()}
            sums = defaultdict(float, self._sums)
        for series in others:
            for labels, parts in series.items():
                counts = merged.setdefault(labels, [0] * (len(self.buckets) + 1))
                for index in range(len(counts)):
                    counts[index] += int(parts.get(index, 0))
                sums[labels] += parts.get("sum", 0.0)
        for key, counts in merged.items():
            merged[key] = list(itertools.accumulate(counts))  # Prometheus buckets are cumulative
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, counts in sorted(merged.items()):
            labels = dict(key)
            for bound, count in zip(self.buckets, counts, strict=False):
                lines.append(f"{self.name}_bucket{_labels({**labels, 'le': f'{bound:g}'})} {count}")
            lines.append(f"{self.name}_bucket{_labels({**labels, 'le': '+Inf'})} {counts[-1]}")
            lines.append(f"{self.name}_sum{_labels(labels)} {sums[key]:.6f}")
            lines.append(f"{self.name}_count{_labels(labels)} {counts[-1]}")
        return lines


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    escaped = (f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels.items())
    return "{" + ",".join(escaped) + "}"


_registry: dict[str, Counter | Histogram] = {}
_registry_lock = threading.Lock()


def register_collector(collector) -> None:
    """Add an object with ``name`` and ``render() -> list[str]`` whose lines are rendered on each scrape
    (for figures that live elsewhere, such as counters another process keeps in the database)."""
    with _registry_lock:
        _registry.setdefault(collector.name, collector)


def counter(name: str, help_text: str) -> Counter:
    with _registry_lock:
        metric = _registry.get(name)
        if metric is None:
            metric = _registry[name] = Counter(name, help_text)
        return metric  # type: ignore[return-value]


def histogram(name: str, help_text: str) -> Histogram:
    with _registry_lock:
        metric = _registry.get(name)
        if metric is None:
            metric = _registry[name] = Histogram(name, help_text)
        return metric  # type: ignore[return-value]


#: Methods labelled by name; any other method a client makes up is counted as ``other``, so a client
#: cannot create one time series per invented method.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"


def method_label(method: str) -> str:
    """The metrics label of an HTTP method: its name when it is a standard one, else ``other``."""
    return method if method in KNOWN_METHODS else OTHER_METHOD


REQUESTS = counter("mdmserver_http_requests_total", "HTTP requests by method, route and status.")
LATENCY = histogram("mdmserver_http_request_duration_seconds", "HTTP request latency by method and route.")


def render() -> str:
    lines: list[str] = []
    with _registry_lock:
        metrics = list(_registry.values())
    others = _by_metric(_shared.others())
    for metric in metrics:
        if isinstance(metric, Counter | Histogram):
            lines.extend(metric.render(others.get(metric.name, ())))
        else:
            lines.extend(metric.render())
    return "\n".join(lines) + "\n"


def init_app(app: Flask) -> None:
    @app.after_request
    def _count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        method = method_label(request.method)
        REQUESTS.inc(method=method, route=route, status=str(response.status_code))
        started = getattr(g, "request_started", None)
        if started is not None:
            LATENCY.observe(time.perf_counter() - started, method=method, route=route)
        return response
