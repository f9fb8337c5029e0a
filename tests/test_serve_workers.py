"""`mdmserver serve` with several gunicorn workers: /metrics reports the whole server whichever worker
answers, gunicorn's control socket lives in the data directory (two instances never share it), and
``--worker-connections`` caps the connections a worker holds."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    def __init__(self, data_dir: Path, workers: int, options: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, "MDMSERVER_DATA_DIR": str(data_dir), "MDMSERVER_LOG_LEVEL": "WARNING"}
        self.env.pop("MDMSERVER_DATABASE_URL", None)
        self.env.pop("MDMSERVER_CONFIG", None)
        subprocess.run([sys.executable, "-m", "mdmserver", "init"], env=self.env, check=True,
                       capture_output=True, timeout=120)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mdmserver", "serve", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(workers), *options, "--no-push-worker"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.probes = 1  # the /healthz that finds it ready is counted too
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, "server exited"
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


@pytest.fixture
def served(tmp_path):
    started: list[Served] = []

    def start(name: str = "var", workers: int = 2, options: tuple[str, ...] = ()) -> Served:
        instance = Served(tmp_path / name, workers, options)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


def _count(text: str, route: str) -> float:
    found = re.search(
        rf'^mdmserver_http_requests_total\{{method="GET",route="{re.escape(route)}",status="200"\}} (\S+)$',
        text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _histogram_count(text: str, route: str) -> float:
    found = re.search(
        rf'^mdmserver_http_request_duration_seconds_count\{{method="GET",route="{re.escape(route)}"\}} (\S+)$',
        text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_metrics_total_every_worker_whichever_answers(served):
    server = served(workers=2)
    requests = 40
    for _ in range(requests):  # a new connection each time, so both workers take some
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    scrapes = []
    for _ in range(8):
        with httpx.Client(timeout=10) as client:  # a new connection: any worker may answer
            scrapes.append(client.get(f"{server.url}/metrics").text)
    for text in scrapes:
        assert _count(text, "/healthz") == requests + server.probes
        assert _histogram_count(text, "/healthz") == requests + server.probes
    # Each scrape counts the scrapes before it (the one answering is counted after its response).
    seen = sorted(_count(text, "/metrics") for text in scrapes)
    assert seen == list(range(len(scrapes)))
    files = sorted(p.name for p in (server.data_dir / "metrics").iterdir())
    assert len(files) == 2 and all(re.fullmatch(r"\d+\.values", name) for name in files), files


def test_a_restarted_server_counts_from_zero(served):
    first = served(workers=1)
    for _ in range(3):
        httpx.get(f"{first.url}/healthz", timeout=10)
    first.stop()
    again = served(workers=1)
    assert _count(httpx.get(f"{again.url}/metrics", timeout=10).text, "/healthz") == again.probes


def test_control_socket_in_each_data_directory(served):
    one, two = served("one"), served("two", workers=1)
    for instance in (one, two):
        path = instance.data_dir / "gunicorn.ctl"
        deadline = time.monotonic() + 10
        while not path.exists():
            assert time.monotonic() < deadline, f"no control socket at {path}"
            time.sleep(0.1)
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    # each socket answers for its own instance: gunicornc sees one's 2 workers, the other's 1
    gunicornc = Path(sys.executable).parent / "gunicornc"
    if gunicornc.exists():
        for instance, workers in ((one, 2), (two, 1)):
            shown = subprocess.run([str(gunicornc), "-s", str(instance.data_dir / "gunicorn.ctl"), "-c",
                                    "show workers", "-j"], capture_output=True, text=True, timeout=30)
            assert shown.returncode == 0, shown.stderr
            listed = json.loads(shown.stdout)
            assert len(listed.get("workers", listed)) == workers, listed


def test_a_worker_holds_at_most_its_worker_connections(served):
    server = served(workers=1, options=("--threads", "2", "--worker-connections", "1"))
    healthz = f"{server.url}/healthz"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as held:
        held.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")  # a request not yet complete
        time.sleep(0.5)  # taken by the only worker, which now holds its one connection
        # so another is not taken meanwhile, though a thread is free (uncapped, it is answered at once)
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(healthz, timeout=httpx.Timeout(10, read=1.0))
        held.sendall(b"\r\n")
        assert held.recv(65536).startswith(b"HTTP/1.1 200 ")
    assert httpx.get(healthz, timeout=10).status_code == 200  # connections are taken again
