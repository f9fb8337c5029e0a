"""Bare HTTP/2 APNs clients against the emulator: httpx[http2] (our choice) vs aioapns.

Runs the emulator in its own process (so it does not share the GIL with the client), then each
client in a fresh child process sending the same N pushes over one connection; reports pushes/s,
the ratio of each client to httpx, and the child's peak RSS growth.

    .venv/bin/python bench/push_clients_bench.py [--pushes 10000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOPIC = "com.apple.mgmt.External.bench-0000-0000-0000-000000000000"


def start_emulator(folder: Path, mode: int | None = None) -> tuple[subprocess.Popen, str]:
    extra = ["--mode", str(mode)] if mode else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "mdmserver.simulator.apns_emulator", "--port", "0", "--quiet",
         "--issue-push-cert", TOPIC, "--out", str(folder), *extra],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("APNs emulator listening on "):
            return proc, line.rsplit(" ", 1)[1].strip()
    raise RuntimeError("emulator did not start")


def tokens(n: int) -> list[str]:
    return [f"{i:064x}" for i in range(n)]


async def run_httpx(url: str, folder: Path, n: int) -> int:
    from mdmserver.pki import x509 as px
    from mdmserver.push.apns import HttpxAPNsClient, PushIdentity, PushMessage

    cert = (folder / "push-cert.pem").read_text()
    key = (folder / "push-key.pem").read_text()
    identity = PushIdentity(TOPIC, cert, key, px.fingerprint_sha256(px.cert_from_pem(cert)))
    client = HttpxAPNsClient(url, lambda t: identity, ca_file=str(folder / "emulator-ca.pem"))
    try:
        results = await client.send_batch([PushMessage(t, "magic", TOPIC) for t in tokens(n)])
    finally:
        await client.aclose()
    return sum(r.ok for r in results)


async def run_aioapns(url: str, folder: Path, n: int) -> int:
    import ssl
    from urllib.parse import urlsplit

    from aioapns.common import NotificationRequest, PushType
    from aioapns.connection import APNsCertConnectionPool, APNsTLSClientProtocol

    parts = urlsplit(url)

    class EmulatorProtocol(APNsTLSClientProtocol):
        # aioapns hard-codes Apple's hosts: a subclass is the only way to point it elsewhere.
        APNS_SERVER = parts.hostname
        APNS_PORT = parts.port

    combined = folder / "combined.pem"
    combined.write_text((folder / "push-cert.pem").read_text() + (folder / "push-key.pem").read_text())
    ctx = ssl.create_default_context(cafile=str(folder / "emulator-ca.pem"))
    pool = APNsCertConnectionPool(str(combined), topic=TOPIC, max_connections=1, ssl_context=ctx)
    pool.protocol_class = EmulatorProtocol
    limit = asyncio.Semaphore(1000)

    async def one(token: str) -> bool:
        async with limit:
            request = NotificationRequest(
                device_token=token, message={"mdm": "magic"}, time_to_live=7 * 24 * 3600,
                priority=10, push_type=PushType.MDM,
            )
            result = await pool.send_notification(request)
            return result.is_successful

    try:
        ok = await asyncio.gather(*(one(t) for t in tokens(n)))
    finally:
        pool.close()
    return sum(ok)


def child(name: str, url: str, folder: str, n: int, queue) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    runner = run_httpx if name == "httpx" else run_aioapns
    started = time.perf_counter()
    try:
        ok = asyncio.run(asyncio.wait_for(runner(url, Path(folder), n), 600))
    except Exception as exc:  # noqa: BLE001 — reported as a failed run
        print(f"  {name} failed: {exc!r}")
        ok = -1
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((ok, elapsed, (peak - before) / 1024))


def measure(name: str, url: str, folder: Path, n: int) -> tuple[int, float, float]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(name, url, str(folder), n, queue))
    proc.start()
    result = queue.get(timeout=600)
    proc.join()
    return result


def scenario(label: str, mode: int | None, pushes: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        emulator, url = start_emulator(folder, mode)
        try:
            best: dict[str, tuple[int, float, float]] = {}
            for _ in range(repeats):
                for name in ("httpx", "aioapns"):
                    ok, elapsed, rss = measure(name, url, folder, pushes)
                    print(f"  {name:8s} {ok}/{pushes} ok in {elapsed:6.2f}s "
                          f"= {pushes / elapsed:8.0f} pushes/s, peak RSS +{rss:.1f} MiB")
                    if name not in best or elapsed < best[name][1]:
                        best[name] = (ok, elapsed, rss)
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
    base = pushes / best["httpx"][1]
    print(f"== {label}: best of {repeats}, {pushes} pushes, one HTTP/2 connection, "
          "emulator in its own process")
    for name, (ok, elapsed, rss) in best.items():
        rate = pushes / elapsed
        print(f"   {name:8s} {rate:8.0f} pushes/s  ratio to httpx {rate / base:4.2f}  "
              f"answered 200: {ok}  peak RSS +{rss:.1f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushes", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    scenario("every push answered 200", None, args.pushes, args.repeats)
    # Error answers carry a JSON body: a client that never acknowledges received DATA exhausts
    # the connection's flow-control window and stalls (aioapns 4.0 does; it recovers only when
    # its 10 s inactivity timer drops the connection).
    scenario("every push answered 410 Unregistered", 410, max(args.pushes // 3, 1), 1)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    raise SystemExit(main())
