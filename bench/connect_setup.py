"""What the connect-path benches share: the database (SQLite in a temporary folder, or a private schema
on a PostgreSQL server), the initialised app with a push certificate, gunicorn serving a factory of
bench/connect_apps.py, enrolled simulated devices, pre-signed check-in bodies and queued commands."""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mdmserver.app import create_app  # noqa: E402
from mdmserver.bootstrap import initialize  # noqa: E402
from mdmserver.collaborators import secret_box  # noqa: E402
from mdmserver.commands.service import enqueue_commands  # noqa: E402
from mdmserver.db import db  # noqa: E402
from mdmserver.devices.service import get_device_by_udid  # noqa: E402
from mdmserver.pki import cms, x509  # noqa: E402
from mdmserver.pki import service as pki  # noqa: E402
from mdmserver.protocol.plist import dump_plist  # noqa: E402
from mdmserver.push import service as push_service  # noqa: E402
from mdmserver.records.commands import Command  # noqa: E402
from mdmserver.simulator.device import HttpxTransport, SimulatedDevice  # noqa: E402

#: a pre-signed check-in request: (plist body, base64 detached CMS signature for Mdm-Signature)
Signed = tuple[bytes, str]


@contextmanager
def bench_environment(prefix: str, postgres: str | None, keep: Path | None = None) -> Iterator[tuple[Path, dict[str, str]]]:
    """A temporary data folder and the server's environment (also set in ``os.environ``); with
    ``postgres``, a private schema on that server, dropped at the end (the folder is deleted too: it
    holds the database's secret key and, on SQLite, the database).

    With ``keep`` (a folder, made mode 0700), the data folder is ``keep/data`` and the schema is the
    one named in ``keep/schema`` (made on the first run): both stay, for a later run with the same
    ``keep``."""
    if keep is not None:
        keep.mkdir(mode=0o700, parents=True, exist_ok=True)
        keep.chmod(0o700)
    tmp = keep if keep is not None else Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    env = {"MDMSERVER_DATA_DIR": str(tmp / "data"), "MDMSERVER_LOG_LEVEL": "WARNING",
           "MDMSERVER_ADMISSION_POLICY": "auto", "MDMSERVER_ENROLL_RATE_LIMIT": "0"}
    admin = schema = None
    if postgres:
        schema = f"{prefix.replace('-', '_')}_{os.getpid()}"
        if keep is not None:
            named = keep / "schema"
            if not named.exists():
                named.write_text(f"{prefix.replace('-', '_')}_kept_{uuid.uuid4().hex[:12]}\n")
            schema = named.read_text().strip()
        admin = sa.create_engine(postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        separator = "&" if "?" in postgres else "?"
        env["MDMSERVER_DATABASE_URL"] = f"{postgres}{separator}options=-csearch_path%3D{schema}"
    os.environ.update(env)
    try:
        yield tmp, env
    finally:
        if admin is not None and keep is None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _push_cert(topic: str) -> tuple[bytes, bytes]:
    key = x509.generate_private_key()
    name = cx509.Name([cx509.NameAttribute(NameOID.USER_ID, topic),
                       cx509.NameAttribute(NameOID.COMMON_NAME, "APSP:bench")])
    now = dt.datetime.now(dt.UTC)
    cert = (cx509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(cx509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def prepared_app(tmp: Path):
    """The app on the bench's database, initialised, with a push certificate; our CA written to
    ``tmp/ca.pem`` for the floor apps."""
    app = create_app(environ=os.environ)
    initialize(app)
    with app.app_context():
        cert_pem, key_pem = _push_cert(f"com.apple.mgmt.External.{uuid.uuid4()}")
        push_service.import_push_certificate(db.session, cert_pem, key_pem, None, box=secret_box())
        db.session.commit()
        (tmp / "ca.pem").write_text(x509.cert_to_pem(pki.get_ca_certificate(db.session)))
    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """gunicorn serving ``connect_apps:<factory>()`` on a free port, with gthread workers as ``mdmserver
    serve`` (also with one thread: gunicorn's default for that would be the sync worker). ``worker_connections``
    caps the connections each worker takes (gunicorn's ``--worker-connections``; more wait for another worker).

    With ``serve``, the server is ``mdmserver serve`` itself (the factory is not used): its gunicorn
    options, access log (to /dev/null here) and metrics shared across workers, every cost a deployment
    pays; without its push worker (``--no-push-worker``), which would send the queued commands' pushes to
    Apple and is not part of serving a request."""

    def __init__(self, factory: str, env: dict[str, str], workers: int, threads: int, *, serve: bool = False,
                 worker_connections: int | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        capped = ["--worker-connections", str(worker_connections)] if worker_connections is not None else []
        if serve:
            command = [sys.executable, "-m", "mdmserver", "serve", "--bind", f"127.0.0.1:{self.port}",
                       "--workers", str(workers), "--threads", str(threads), *capped, "--no-push-worker"]
        else:
            command = [str(ROOT / ".venv/bin/gunicorn"), "--worker-class", "gthread", "--workers", str(workers),
                       "--threads", str(threads), *capped,
                       "--bind", f"127.0.0.1:{self.port}", "--chdir", str(ROOT / "bench"), "--log-level", "warning",
                       f"connect_apps:{factory}()"]
        self.process = subprocess.Popen(
            command,
            # the profiles it serves name its own URL (the SCEP payload's URL is one a device fetches)
            env={**os.environ, "PYTHONPATH": str(ROOT), "MDMSERVER_PUBLIC_URL": self.url, **env},
            # gunicorn puts its starting directory first on sys.path (its default --chdir): start it in
            # bench/, or the mdmserver of this tree would shadow the one of --compare-tree's PYTHONPATH
            cwd=str(ROOT / "bench"),
            stdout=subprocess.DEVNULL if serve else None,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                httpx.get(self.url + "/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{factory} did not start")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the workers have used so far (Linux ``/proc``; 0 elsewhere): per
        request, what a target costs whatever else the shared machine runs meanwhile."""
        pid = self.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            total = 0
            for child in children:
                fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            return 0.0
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def enrolled_devices(url: str, count: int) -> list[SimulatedDevice]:
    """``count`` simulated devices, enrolled, authenticated and with a push token, against ``url``."""
    transport = HttpxTransport(url)
    devices = []
    for _ in range(count):
        sim = SimulatedDevice(transport)
        sim.enroll()
        assert sim.authenticate() == 200 and sim.token_update() == 200
        devices.append(sim)
    return devices


def signed(sim: SimulatedDevice, message: dict[str, Any]) -> Signed:
    body = dump_plist(message)
    return body, base64.b64encode(cms.sign(body, sim.identity.certificate, sim.identity.key, detached=True)).decode()


def queue_cycles(app, devices: list[SimulatedDevice], count: int) -> list[list[Signed]]:
    """Queue ``count`` commands per device; return per device: Idle + one Acknowledged per command,
    pre-signed, in delivery order."""
    jobs = []
    with app.app_context():
        for sim in devices:
            device = get_device_by_udid(db.session, sim.udid)
            queued = [enqueue_commands(db.session, [device.id], "DeviceLock", {}, enqueued_by="bench",
                                       box=secret_box())[0]["uuid"] for _ in range(count)]
            db.session.commit()
            job = [signed(sim, {"UDID": sim.udid, "Status": "Idle"})]
            job += [signed(sim, {"UDID": sim.udid, "Status": "Acknowledged", "CommandUUID": u}) for u in queued]
            jobs.append(job)
    return jobs


def unacknowledged(app) -> int:
    """Commands not acknowledged: after the cycles, any is a delivery the bench lost."""
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(Command).where(Command.status != "acknowledged"))
