#!/usr/bin/env python3
"""Connect path against the floor: mdmserver ``PUT /mdm/connect`` vs bare Flask endpoints, driven by wrk.

Targets, every one under the same gunicorn settings (bench/connect_apps.py):

- ``mdm idle``: mdmserver, ``Idle`` with an empty queue;
- ``mdm cycles``: mdmserver, deliver-and-acknowledge (each request acknowledges one command and
  receives the next);
- ``floor parse`` (a): bare Flask, read the body, ``plistlib.loads``, 200;
- ``floor verify`` (b): (a) + base64 + the two RSA-2048 verifies a signed request needs (signer over
  the signed attributes, CA over the certificate) with ``cryptography`` directly: the crypto floor.

The client is wrk (C, cheap): every request is signed before the timed part and written into a Lua
table; wrk runs one thread per connection, each thread sending its own device's requests in order
(so acknowledgements follow deliveries) and stopping after its last one: every run is bounded in
count. The rate is the requests over the time from the first request sent to the last answer received
(see ``wrk()``: not wrk's own clock). Every server caps the connections a worker holds at its even share
(``--worker-connections``: 8 each for 16 connections and 2 workers). Uncapped, the workers' race to accept
split the 16 kept-alive connections anywhere from 5/11 to 8/8, a new split every run: a worker that had
fewer finished its connections early and left its core idle while the other worked through the rest (up to
40 % of a run), so each target's rate depended on the split it drew more than on its code. The cap has a
cost of its own, paid by the fastest targets most: gunicorn keeps a connection alive only while fewer
than (cap − threads) others wait idle, so it closes some and wrk opens them again (measured from
``/proc/net/snmp``: about 270 connections opened for a floor's 9,600 requests, 40–80 for mdmserver's). Rounds are
interleaved (floor, mdm, floor, mdm…) and the best round of each target is kept: the machine is small and
shared, one round is noise. With a second mdmserver
(``--compare-tree`` and the like) the two take turns going first in each round. The server CPU per request
(the gunicorn workers' user + system time over the run, from ``/proc``) is reported beside it: it does
not depend on what else the machine runs, so it is the steadier comparison of two targets.

    .venv/bin/python bench/connect_floor_bench.py [--connections 16] [--requests 600] [--commands 100]
        [--workers 2] [--threads 4] [--rounds 3] [--postgres URL] [--compare-tree DIR]
        [--compare-workers N] [--compare-threads N] [--mdm-via serve|factory] [--json]

The mdmserver targets are ``mdmserver serve`` itself by default (its gunicorn options, access log and
metrics shared across workers: what a deployment pays; without the push worker); ``--mdm-via factory``
serves ``create_app()`` under bare gunicorn as the floors are.

``--compare-tree DIR`` serves a second mdmserver from another checkout (e.g. ``git archive`` of an
older commit) on the same database, measured in the same interleaved rounds: before and after (its
``mdmserver serve`` must know ``--worker-connections``: a tree older than that option does not start).
``--compare-workers`` / ``--compare-threads`` serve that second mdmserver (of this tree, without
``--compare-tree``) with other gunicorn counts: two worker models measured in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from connect_setup import (  # noqa: E402
    ROOT,
    Server,
    bench_environment,
    enrolled_devices,
    prepared_app,
    queue_cycles,
    signed,
    unacknowledged,
)

_LUA = r"""
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end
function init(args)
  requests = dofile("%(data)s" .. id .. ".lua")
  index = 0
  answered = 0
end
function request()
  if index == 0 then
    local f = io.open("%(started)s" .. id, "w")
    f:close()
  end
  index = index + 1
  if index > #requests then index = #requests end
  return requests[index]
end
function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 then bad = (bad or 0) + 1 end
  if answered == #requests then
    local f = io.open("%(done)s" .. id, "w")
    f:close()
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"errors": %%d}\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
  io.flush()
end
"""


def _lua_string(raw: bytes) -> str:
    out = []
    for byte in raw:
        if 32 <= byte < 127 and byte not in (34, 92):
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def _http_request(port: int, body: bytes, signature: str) -> bytes:
    return (f"PUT /mdm/connect HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nMdm-Signature: {signature}\r\n"
            f"Content-Type: application/x-apple-aspen-mdm\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def wrk(url: str, port: int, jobs: list[list[tuple[bytes, str]]], work: Path) -> dict:
    """One wrk run: ``jobs[i]`` is the ordered list of (body, signature) of connection i."""
    # one file per connection: each wrk thread loads only its own requests
    data = work / f"requests-{port}-"
    for index, job in enumerate(jobs, start=1):
        with (work / f"{data.name}{index}.lua").open("w") as out:
            out.write("return {" + ",\n".join(_lua_string(_http_request(port, b, s)) for b, s in job) + "}\n")
    script = work / f"script-{port}.lua"
    done = work / f"done-{port}-"
    started = work / f"started-{port}-"
    n = len(jobs)
    script.write_text(_LUA % {"data": data, "done": done, "started": started})
    for old in [*work.glob(done.name + "*"), *work.glob(started.name + "*")]:
        old.unlink()
    # wrk's own clock runs for -d whatever its threads do: each thread marks its end with a file, and
    # SIGINT, once all have, makes wrk print its summary over the time actually taken.
    proc = subprocess.Popen(["wrk", "-t", str(n), "-c", str(n), "-d", "300s", "--timeout", "10s",
                             "-s", str(script), url], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(list(work.glob(done.name + "*"))) < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=30)
    line = next(ln for ln in stdout.splitlines() if ln.startswith("{"))
    r = json.loads(line)
    expected = sum(len(job) for job in jobs)
    if r["errors"] or r["requests"] < expected:
        raise SystemExit(f"benchmark invalid: {url}: {r} ({expected} requests expected)\n{stdout}")
    # The time is taken from the files (first request sent, last answer received), not from wrk's own
    # clock: wrk starts that clock only after it has created every thread, and each thread loads its
    # requests when it is created while those created before it are already sending, so a fast target
    # did much of its work before the clock started and its rate came out several times too high.
    first = min(path.stat().st_mtime_ns for path in work.glob(started.name + "*"))
    last = max(path.stat().st_mtime_ns for path in work.glob(done.name + "*"))
    seconds = (last - first) / 1e9
    return {"requests": r["requests"], "rps": r["requests"] / seconds,
            "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16, help="one device and one wrk thread each")
    parser.add_argument("--requests", type=int, default=600, help="Idle requests per connection")
    parser.add_argument("--commands", type=int, default=100, help="commands per device for the cycles")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="default: as `mdmserver serve`")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--postgres", default=None, metavar="URL",
                        help="PostgreSQL server URL: the bench uses a private schema there and drops it")
    parser.add_argument("--compare-tree", default=None, metavar="DIR",
                        help="another mdmserver checkout, served as mdm_other on the same database")
    parser.add_argument("--compare-workers", type=int, default=None, metavar="N",
                        help="gunicorn workers of mdm_other (default: --workers); without --compare-tree, "
                             "mdm_other is this tree")
    parser.add_argument("--compare-threads", type=int, default=None, metavar="N",
                        help="threads per worker of mdm_other (default: --threads)")
    parser.add_argument("--mdm-via", choices=("serve", "factory"), default="serve",
                        help="serve: mdmserver targets are `mdmserver serve` itself (access log, metrics shared "
                             "across workers; no push worker); factory: gunicorn on create_app() alone")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: `apt-get install -y wrk` (make bench does it)")

    with bench_environment("bench-floor", args.postgres) as (tmp, env):
        return _bench(args, tmp, env)


def _share(connections: int, workers: int) -> int:
    """The connections each gunicorn worker may hold (``--worker-connections``): its even share, so that
    no worker takes more of wrk's connections than another."""
    return -(-connections // workers)


def _bench(args, tmp: Path, env: dict[str, str]) -> int:
    app = prepared_app(tmp)
    floor_env = {**env, "BENCH_CA_FILE": str(tmp / "ca.pem")}
    serve = args.mdm_via == "serve"
    share = _share(args.connections, args.workers)
    servers = {"mdm": Server("mdm_app", env, args.workers, args.threads, serve=serve, worker_connections=share)}
    try:
        servers["floor_parse"] = Server("floor_parse_app", floor_env, args.workers, args.threads,
                                        worker_connections=share)
        servers["floor_verify"] = Server("floor_verify_app", floor_env, args.workers, args.threads,
                                         worker_connections=share)
        compare = args.compare_tree or args.compare_workers or args.compare_threads
        if compare:
            other = Path(args.compare_tree or ROOT).resolve()
            # bench/connect_apps.py of this tree, mdmserver of the other (PYTHONPATH comes first)
            other_workers = args.compare_workers or args.workers
            servers["other"] = Server("mdm_app", {**env, "PYTHONPATH": f"{other}:{ROOT / 'bench'}"},
                                      other_workers, args.compare_threads or args.threads, serve=serve,
                                      worker_connections=_share(args.connections, other_workers))
        devices = enrolled_devices(servers["mdm"].url, args.connections)
        idle_jobs = [[signed(sim, {"UDID": sim.udid, "Status": "Idle"})] * args.requests for sim in devices]

        def run(name: str, jobs) -> dict:
            server = servers[name]
            before = server.cpu_seconds()
            result = wrk(server.url, server.port, jobs, tmp)
            result["cpu_us"] = (server.cpu_seconds() - before) / result["requests"] * 1e6
            return result

        names = ["floor_parse", "floor_verify", "mdm_idle", "mdm_cycles"]
        if compare:
            names += ["other_idle", "other_cycles"]
        rounds: dict[str, list[dict]] = {k: [] for k in names}
        for index in range(args.rounds):
            rounds["floor_parse"].append(run("floor_parse", idle_jobs))
            rounds["floor_verify"].append(run("floor_verify", idle_jobs))
            # the two mdmservers take turns going first: the one that follows the other's cycles meets the
            # database still settling from them (PostgreSQL's autovacuum, SQLite's checkpoint)
            for server in (("other", "mdm") if index % 2 == 0 else ("mdm", "other")) if compare else ("mdm",):
                rounds[f"{server}_idle"].append(run(server, idle_jobs))
                rounds[f"{server}_cycles"].append(run(server, queue_cycles(app, devices, args.commands)))
        not_acknowledged = unacknowledged(app)
    finally:
        for server in servers.values():
            server.stop()
    if not_acknowledged:
        raise SystemExit(f"benchmark invalid: {not_acknowledged} commands not acknowledged after the cycles")

    best = {name: max(runs, key=lambda r: r["rps"]) for name, runs in rounds.items()}
    floor = best["floor_verify"]["rps"]
    report = {"settings": vars(args), "database": "postgresql" if args.postgres else "sqlite",
              "best": best, "rounds": rounds,
              "ratio_to_crypto_floor": {name: r["rps"] / floor for name, r in best.items()}}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"database {report['database']}; mdmserver via {args.mdm_via}; "
          f"gunicorn {args.workers} workers × {args.threads} threads; "
          f"wrk {args.connections} connections; best of {args.rounds} interleaved rounds")
    if compare:
        print(f"mdm_other: {args.compare_tree or 'this tree'}; gunicorn {args.compare_workers or args.workers} "
              f"workers × {args.compare_threads or args.threads} threads")
    print(f"{'target':14s} {'requests':>8s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'× floor (b)':>11s} "
          f"{'server CPU µs/req':>17s}")
    for name, r in best.items():
        print(f"{name:14s} {r['requests']:8d} {r['rps']:9.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{report['ratio_to_crypto_floor'][name]:11.2f} {r['cpu_us']:17.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
