"""`mdmserver serve` runs gunicorn and exactly one push worker, and stops both on SIGTERM."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from mdmserver.server import _freeze_loaded_app, redact_query


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every descendant of ``pid`` (Linux /proc)."""
    found = []
    parents = {pid}
    for _ in range(3):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError, IndexError):
                continue
            if ppid in parents and int(entry) not in {p for p, _ in found}:
                found.append((int(entry), cmdline))
        parents |= {p for p, _ in found}
    return found


def test_serve_runs_one_push_worker_beside_several_web_workers(tmp_path):
    env = {**os.environ, "MDMSERVER_DATA_DIR": str(tmp_path / "var"), "MDMSERVER_LOG_LEVEL": "WARNING"}
    env.pop("MDMSERVER_DATABASE_URL", None)
    subprocess.run([sys.executable, "-m", "mdmserver", "init"], env=env, check=True, capture_output=True,
                   timeout=120)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mdmserver", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "3"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.3)
        time.sleep(1)
        children = _children(server.pid)
        push_workers = [c for c in children if "push-worker" in c[1]]
        web_workers = [c for c in children if " serve " in c[1] + " "]
        assert len(push_workers) == 1, children
        assert len(web_workers) == 3, children
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert server.returncode == 0
    time.sleep(0.5)
    for pid, _ in push_workers:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]


def test_access_log_redacts_the_query_parameters_the_secrets_policy_names():
    query = "secret=s3&api_token=t0k&NewPIN=1234&new%5Fpassword=pw&page=2&ids=1,2"
    assert redact_query(query) == (
        "secret=[redacted]&api_token=[redacted]&NewPIN=[redacted]&new%5Fpassword=[redacted]&page=2&ids=1,2"
    )


def _access_line(logger_class, environ: dict, status: str = "200 OK", sent: int | None = 17) -> str:
    """The access log line ``logger_class`` writes for one request (gunicorn's own formatting path)."""
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn.config import Config

    config = Config()
    config.set("accesslog", "-")
    logger = logger_class(config)
    logger.now = lambda: "[28/Nov/2026:03:00:00 +0000]"  # one clock for both loggers
    response = SimpleNamespace(status=status, sent=sent, headers=[("Content-Type", "application/xml")])
    request = SimpleNamespace(headers=[("USER-AGENT", "MDM/1.0")])
    atoms = logger.atoms_wrapper_class(logger.atoms(response, request, environ, timedelta(microseconds=1500)))
    return config.access_log_format % atoms


def test_access_line_is_gunicorns_combined_line_and_still_redacts():
    from gunicorn.glogging import Logger

    from mdmserver.server import AccessLogger

    base = {"REMOTE_ADDR": "10.0.0.7", "REQUEST_METHOD": "PUT", "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_USER_AGENT": 'MDM "quoted" agent', "HTTP_REFERER": "https://ref.example/"}
    device = {**base, "RAW_URI": "/mdm/connect", "PATH_INFO": "/mdm/connect", "QUERY_STRING": ""}
    ours = _access_line(AccessLogger, device)
    assert ours == _access_line(Logger, device)
    assert ours == ('10.0.0.7 - - [28/Nov/2026:03:00:00 +0000] "PUT /mdm/connect HTTP/1.1" 200 17 '
                    '"https://ref.example/" "MDM \\"quoted\\" agent"')
    # no Content-Length sent, no referer, a Basic user: as gunicorn prints them
    basic = {**device, "HTTP_AUTHORIZATION": "Basic dXNlcjpzM2NyZXQ="}
    del basic["HTTP_REFERER"]
    assert _access_line(AccessLogger, basic, "404 NOT FOUND", None) == _access_line(Logger, basic, "404 NOT FOUND", None)
    assert '- user [' in _access_line(AccessLogger, basic) and "s3cret" not in _access_line(AccessLogger, basic)
    enroll = {**base, "REQUEST_METHOD": "GET", "RAW_URI": "/mdm/enroll?secret=s3&page=2", "PATH_INFO": "/mdm/enroll",
              "QUERY_STRING": "secret=s3&page=2"}
    line = _access_line(AccessLogger, enroll)
    assert '"GET /mdm/enroll?secret=[redacted]&page=2 HTTP/1.1"' in line and "s3" not in line


def _written_lines(logger_class, tmp_path, name: str, environs: list[dict], **settings) -> list[str]:
    """The access log file ``logger_class`` writes for one request of each environ (its ``access``)."""
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn.config import Config

    config = Config()
    config.set("accesslog", str(tmp_path / f"{name}.log"))
    for key, value in settings.items():
        config.set(key, value)
    logger = logger_class(config)
    logger.now = lambda: "[28/Nov/2026:03:00:00 +0000]"
    request = SimpleNamespace(headers=[("USER-AGENT", "MDM/1.0")])
    for index, environ in enumerate(environs):
        response = SimpleNamespace(status="200 OK" if index % 2 == 0 else "404 NOT FOUND",
                                   sent=17 if index % 2 == 0 else None, headers=[])
        logger.access(response, request, environ, timedelta(microseconds=1500))
    for handler in logger.access_log.handlers:
        handler.flush()
    lines = (tmp_path / f"{name}.log").read_text().splitlines()
    for handler in list(logger.access_log.handlers):
        logger.access_log.removeHandler(handler)
        handler.close()
    return lines


def test_access_lines_written_without_logging_are_gunicorns_own(tmp_path, monkeypatch):
    """``serve``'s access log (gunicorn's handler alone, the combined format) is written by AccessLogger
    itself, without a logging record: byte for byte the lines gunicorn's Logger writes through logging;
    with a format of the operator's, the lines go through logging as before."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    from mdmserver.server import AccessLogger

    # as in a worker: gunicorn's handler alone (pytest adds its capture handlers, which take the logging path)
    monkeypatch.setattr(logging.getLogger("gunicorn.access"), "handlers", [])
    base = {"REMOTE_ADDR": "10.0.0.7", "REQUEST_METHOD": "PUT", "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_USER_AGENT": 'MDM "quoted" agent', "HTTP_REFERER": "https://ref.example/",
            "RAW_URI": "/mdm/connect", "PATH_INFO": "/mdm/connect", "QUERY_STRING": ""}
    environs = [base, {**base, "HTTP_AUTHORIZATION": "Basic dXNlcjpzM2NyZXQ="},
                {**base, "REQUEST_METHOD": "GET", "RAW_URI": "/api/v1/devices?page=2", "QUERY_STRING": "page=2"}]
    config = Config()
    config.set("accesslog", str(tmp_path / "probe.log"))
    assert AccessLogger(config)._plain_handler is not None  # serve's settings take the direct path
    ours = _written_lines(AccessLogger, tmp_path, "ours", environs)
    assert len(ours) == 3 and ours == _written_lines(Logger, tmp_path, "theirs", environs)
    assert ours[0] == ('10.0.0.7 - - [28/Nov/2026:03:00:00 +0000] "PUT /mdm/connect HTTP/1.1" 200 17 '
                       '"https://ref.example/" "MDM \\"quoted\\" agent"')
    custom = {"access_log_format": '%(h)s "%(r)s" %(s)s'}
    assert _written_lines(AccessLogger, tmp_path, "ours-custom", environs, **custom) == \
        _written_lines(Logger, tmp_path, "theirs-custom", environs, **custom)


def test_a_loaded_worker_keeps_the_app_out_of_the_collectors_reach(app):
    """What a web worker runs once it has loaded the app (gunicorn's post_worker_init): the app and
    everything allocated with it are no longer walked by the garbage collector's full collections,
    whose pause over them was the connect path's latency tail."""
    def tracked(obj) -> bool:
        return any(candidate is obj for candidate in gc.get_objects())

    assert tracked(app.url_map)
    try:
        _freeze_loaded_app(None)
        assert gc.get_freeze_count() > 0
        assert not tracked(app.url_map)
        gc.collect()  # a full collection still runs and leaves the frozen app alone
        assert not tracked(app.url_map) and app.url_map.bind("localhost").match("/healthz")
    finally:
        gc.unfreeze()
    assert tracked(app.url_map)
