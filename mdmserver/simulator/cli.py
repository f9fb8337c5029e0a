"""``mdmserver simulate``: simulated devices as an end-to-end driver and load generator."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

import click
import httpx

from mdmserver.simulator.demo import demo
from mdmserver.simulator.device import MISBEHAVIOURS
from mdmserver.simulator.load import (
    Stats,
    enroll_devices,
    poll,
    rate_limit_explanation,
    undelivered_explanation,
)


@click.command("simulate")
@click.option("--url", required=True, help="Base URL of the server (as in the enrollment profile).")
@click.option("--devices", "count", default=10, show_default=True, type=click.IntRange(1, 100000))
@click.option("--iterations", default=5, show_default=True, type=click.IntRange(0, 100000),
              help="Check-in sessions per device (Idle, then answer every queued command).")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 1000))
@click.option("--platform", type=click.Choice(["ios", "ipados", "macos"]), default="ios", show_default=True)
@click.option("--secret", default=None, help="Enrollment secret, if the server requires one.")
@click.option("--token", default=None, help="Admin API token (scope write) to queue commands.")
@click.option("--command", "request_type", default=None,
              help="Queue this request type for every device before each session (needs --token).")
@click.option("--misbehave", type=click.Choice(MISBEHAVIOURS), default=None,
              help="Send forged or malformed requests instead of polling (expects 400/403).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def simulate(url, count, iterations, concurrency, platform, secret, token, request_type, misbehave, as_json):
    """Enroll N simulated devices and let them poll; print throughput, latency percentiles and errors."""
    if request_type and not token:
        raise click.UsageError("--command needs --token")
    enroll_stats = Stats()
    started = time.perf_counter()
    with click.progressbar(length=count, label="enrolling", file=sys.stderr) as bar:
        devices = enroll_devices(url, count, concurrency=concurrency, platform=platform, secret=secret,
                                 stats=enroll_stats, on_progress=bar.update)
    enroll_seconds = time.perf_counter() - started
    rate_limited = rate_limit_explanation(enroll_stats)
    if not devices:
        raise click.ClickException(f"no device could enroll: {dict(enroll_stats.errors)}"
                                   + (f"\n{rate_limited}" if rate_limited else ""))
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) if token else None
    stats = Stats()
    queued = 0
    total_seconds = 0.0
    with click.progressbar(length=len(devices) * iterations, label="polling",
                           file=sys.stderr) as bar:
        for _ in range(iterations):
            if api is not None and request_type:
                for sim in devices:
                    response = api.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": request_type})
                    if response.status_code != 201:
                        stats.error(f"enqueue answered {response.status_code}")
                    else:
                        queued += 1
            total_seconds += poll(devices, 1, concurrency=concurrency, stats=stats, misbehave=misbehave,
                                  on_progress=bar.update)
    admission: Counter = Counter()
    if api is not None:
        if queued > stats.delivered:
            admission = _admission_of([sim for sim in devices if not sim.handled], api)
        api.close()
    undelivered = undelivered_explanation(queued, stats.delivered, admission)
    if admission.get("pending"):
        stats.errors["device pending admission: no command delivered"] += admission["pending"]
    elif undelivered:
        stats.errors["queued commands not delivered"] += queued - stats.delivered
    summary = {"enrolled": len(devices), "enrollment": enroll_stats.summary(enroll_seconds),
               "polling": stats.summary(total_seconds)}
    summary["polling"]["commands"]["queued"] = queued
    summary["notes"] = [note for note in (rate_limited, undelivered) if note]
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    polling = summary["polling"]
    click.echo(f"devices enrolled: {len(devices)}/{count}")
    click.echo(f"requests: {polling['requests']} in {polling['seconds']} s "
               f"= {polling['requests_per_second']} req/s")
    click.echo(f"latency ms: p50 {polling['p50_ms']}  p90 {polling['p90_ms']}  p99 {polling['p99_ms']}")
    click.echo(f"responses: {polling['statuses']}"
               + (f" ({polling['reconnects']} resent on a new connection: the server had closed the kept-alive one)"
                  if polling["reconnects"] else ""))
    click.echo(f"commands: {queued} queued, {stats.delivered} delivered, {stats.acknowledged} acknowledged"
               + ("" if queued or request_type else " (--token and --command queue one per device per iteration)"))
    errors = {**enroll_stats.errors, **stats.errors}
    click.echo(f"errors: {errors or 'none'}")
    for note in summary["notes"]:
        click.secho(f"note: {note}", err=True, fg="yellow")


def _admission_of(devices, api: httpx.Client) -> Counter:
    """The admission status of ``devices`` on the server (``unknown`` when the API does not say)."""
    found: Counter = Counter()
    for sim in devices:
        response = api.get(f"/api/v1/devices/{sim.udid}")
        status = "unknown"
        if response.status_code == 200:
            status = response.json().get("data", {}).get("attributes", {}).get("admission_status") or status
        found[status] += 1
    return found


commands = [simulate, demo]
