"""``mdmserver demo``: the whole loop on one machine, without Apple certificates.

One command starts the bundled APNs emulator (which issues a test push certificate), the server
(``mdmserver init``, ``push-cert import``, ``serve``, in its own data directory, auto admission) and N
simulated devices that enroll and answer every push the way a device does: they check in and run the
queued commands. Everything runs in the demo's process group and stops on Ctrl-C or SIGTERM.

The simulator talks to the server over HTTP only; the server is a child process run through its CLI.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import httpx

from mdmserver.simulator.apns_emulator import APNsEmulator, Push
from mdmserver.simulator.device import SimulatedDevice, SimulatorError
from mdmserver.simulator.load import Stats, enroll_devices

DEMO_TOPIC = "com.apple.mgmt.External.demo"
#: settings of the caller's environment that would point the demo server somewhere else
_INHERITED = ("MDMSERVER_CONFIG", "MDMSERVER_DATABASE_URL", "MDMSERVER_SECRET_KEY_FILE",
              "MDMSERVER_ENROLLMENT_SECRET", "MDMSERVER_DEVICE_AUTH", "MDMSERVER_CLIENT_CERT_HEADER",
              "MDMSERVER_TRUSTED_PROXIES", "MDMSERVER_PREAUTHORIZED")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DemoError(click.ClickException):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_env(data_dir: Path, public_url: str, emulator: APNsEmulator, ca_file: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _INHERITED}
    env.update({
        "MDMSERVER_DATA_DIR": str(data_dir),
        "MDMSERVER_PUBLIC_URL": public_url,
        "MDMSERVER_APNS_URL": emulator.url,
        "MDMSERVER_APNS_CA_FILE": str(ca_file),
        "MDMSERVER_ADMISSION_POLICY": "auto",
        # every simulated device enrolls from 127.0.0.1: one rate-limit bucket
        "MDMSERVER_ENROLL_RATE_LIMIT": "0",
        "MDMSERVER_ORGANIZATION_NAME": "mdmserver demo",
    })
    return env


def _run_step(args: list[str], env: dict[str, str], log_file: Path) -> None:
    with log_file.open("a") as log:
        result = subprocess.run([sys.executable, "-m", "mdmserver", *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT, timeout=300, check=False)
    if result.returncode != 0:
        raise DemoError(f"`mdmserver {' '.join(args)}` failed; see {log_file}")


def _wait_ready(url: str, server: subprocess.Popen, log_file: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise DemoError(f"the server exited with status {server.returncode}; see {log_file}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise DemoError(f"the server did not become ready in {timeout:.0f} s; see {log_file}")


def _stop_server(server: subprocess.Popen) -> None:
    """SIGTERM to the gunicorn master: it stops its workers and its push worker (``on_exit``)."""
    if server.poll() is None:
        server.terminate()
    try:
        server.wait(timeout=45)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


class _Fleet:
    """The simulated devices; a push to a device's token makes it check in (as APNs wakes a device)."""

    def __init__(self) -> None:
        self.by_token: dict[str, SimulatedDevice] = {}
        self.locks: dict[str, threading.Lock] = {}
        self.stats = Stats()
        self.stopping = threading.Event()

    def add(self, devices: list[SimulatedDevice]) -> None:
        for sim in devices:
            token = sim.push_token.hex()
            self.by_token[token], self.locks[token] = sim, threading.Lock()

    def on_push(self, push: Push) -> None:
        self.wake(push.token)

    def wake(self, token: str) -> None:
        """The device with this push token checks in and answers every queued command."""
        sim = self.by_token.get(token)
        if sim is None or self.stopping.is_set():
            return
        with self.locks[token]:
            try:
                sim.run_session()
            except (SimulatorError, OSError, httpx.HTTPError, ValueError) as exc:
                self.stats.error(type(exc).__name__)


def _print_welcome(url: str, token: str, udid: str, data_dir: Path, count: int, enrolled: int, kept: bool) -> None:
    auth = f'-H "Authorization: Bearer {token}"'
    lines = [
        "",
        f"mdmserver demo: {enrolled}/{count} simulated devices enrolled, pushed through the APNs emulator",
        f"  admin API    {url}/api/v1   (API docs: {url}/api/docs)",
        f"  admin token  {token}",
        f"  data dir     {data_dir}{'' if kept else ' (deleted on exit)'}; server log: {data_dir / 'server.log'}",
        "",
        "Try:",
        f"  curl -g {auth} '{url}/api/v1/devices?facets=platform,os_version&page[size]=5'",
        f"  curl -g {auth} -H 'Content-Type: application/json' -d '{{\"request_type\": \"DeviceInformation\"}}' "
        f"'{url}/api/v1/devices/{udid}/commands'",
        f"  curl -g {auth} '{url}/api/v1/devices?filter[platform]=ios&fields[devices]=udid,device_name'",
        "",
        "Press Ctrl-C to stop everything.",
    ]
    click.echo("\n".join(lines))
    sys.stdout.flush()


@click.command("demo")
@click.option("--devices", "count", default=25, show_default=True, type=click.IntRange(1, 10000),
              help="Simulated devices to enroll.")
@click.option("--port", default=0, type=click.IntRange(0, 65535), help="Server port (default: a free one).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the demo server's data here (default: a temporary directory deleted on exit).")
def demo(count: int, port: int, data_dir: Path | None) -> None:
    """Run the server, the APNs emulator and N simulated devices together (auto admission); print the
    admin URL, a token and curl commands to try; stop everything on Ctrl-C or SIGTERM."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    kept = data_dir is not None
    data_dir = (data_dir or Path(tempfile.mkdtemp(prefix="mdmserver-demo-"))).resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_file = data_dir / "server.log"
    fleet = _Fleet()
    emulator = APNsEmulator(on_push=fleet.on_push)
    server: subprocess.Popen | None = None
    try:
        emulator.start()
        apns_dir = data_dir / "apns"
        apns_dir.mkdir(exist_ok=True, mode=0o700)
        ca_file = apns_dir / "emulator-ca.pem"
        ca_file.write_text(emulator.ca_pem)
        cert_pem, key_pem = emulator.issue_push_certificate(DEMO_TOPIC)
        (apns_dir / "push-cert.pem").write_text(cert_pem)
        key_file = apns_dir / "push-key.pem"
        key_file.write_text(key_pem)
        key_file.chmod(0o600)
        url = f"http://127.0.0.1:{port or _free_port()}"
        env = _server_env(data_dir, url, emulator, ca_file)
        click.echo(f"starting the server in {data_dir} (log: {log_file})", err=True)
        _run_step(["init"], env, log_file)
        token_file = data_dir / "admin-token"
        if not token_file.exists():
            raise DemoError(f"{data_dir} was initialised before without its admin-token file; use another --data-dir")
        token = token_file.read_text().strip()
        _run_step(["push-cert", "import", str(apns_dir / "push-cert.pem"), "--key", str(key_file)], env,
                  log_file)
        with log_file.open("a") as log:
            # Same process group as the demo: Ctrl-C in the terminal reaches every process.
            server = subprocess.Popen(
                [sys.executable, "-m", "mdmserver", "serve", "--bind", url.removeprefix("http://"),
                 "--workers", "2"],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        _wait_ready(url, server, log_file)
        if stop.is_set():
            return
        click.echo(f"enrolling {count} simulated devices", err=True)
        devices = enroll_devices(url, count, concurrency=min(8, count), platform="ios", secret=None,
                                 stats=fleet.stats)
        fleet.add(devices)
        for sim in devices:  # the first check-in answers what enrollment queued
            if stop.is_set():
                break
            fleet.wake(sim.push_token.hex())
        udid = devices[0].udid if devices else "UDID"
        _print_welcome(url, token, udid, data_dir, count, len(devices), kept)
        if fleet.stats.errors:
            click.echo(f"errors while enrolling: {dict(fleet.stats.errors)}", err=True)
        while not stop.wait(0.5):
            if server.poll() is not None:
                raise DemoError(f"the server exited with status {server.returncode}; see {log_file}")
    finally:
        fleet.stopping.set()
        click.echo("stopping the demo", err=True)
        if server is not None:
            _stop_server(server)
        emulator.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not kept:
            shutil.rmtree(data_dir, ignore_errors=True)
        click.echo("demo stopped", err=True)
