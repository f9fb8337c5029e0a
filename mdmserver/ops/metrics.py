"""A small Prometheus text-format registry: request counts by route and status, latency histogram.

Counters live in the process that serves the request; under gunicorn each worker reports its own, which
Prometheus sums when it scrapes through a load balancer or per-worker port. Features add counters with
``counter(name, help)``.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from flask import Flask, Response, g, request

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            for key, value in sorted(self._values.items()):
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
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            for index, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[index] += 1
            counts[-1] += 1
            self._sums[key] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for key, counts in sorted(self._counts.items()):
                labels = dict(key)
                for bound, count in zip(self.buckets, counts, strict=False):
                    lines.append(f"{self.name}_bucket{_labels({**labels, 'le': f'{bound:g}'})} {count}")
                lines.append(f"{self.name}_bucket{_labels({**labels, 'le': '+Inf'})} {counts[-1]}")
                lines.append(f"{self.name}_sum{_labels(labels)} {self._sums[key]:.6f}")
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
    for metric in metrics:
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
