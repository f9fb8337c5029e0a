"""Running the app under gunicorn, with the embedded push worker beside it."""

from __future__ import annotations

import gc
import logging
import os
import ssl
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from gunicorn.app.base import BaseApplication
from gunicorn.config import KNOWN_SETTINGS
from gunicorn.glogging import Logger
from sqlalchemy.orm import configure_mappers

from mdmserver.app import create_app
from mdmserver.config import ConfigError
from mdmserver.ops import metrics
from mdmserver.protocol.secrets import REDACTED, is_secret_query_parameter

log = logging.getLogger("mdmserver.server")


@dataclass(frozen=True)
class TlsFiles:
    """The server certificate (PEM: the server's certificate first, then every intermediate up to, not
    necessarily including, the root: the full chain a device needs) and its private key (PEM)."""

    certificate: Path
    key: Path


def check_tls_files(tls: TlsFiles) -> None:
    """Load the chain and key the way gunicorn will, so a missing file, a wrong password-protected key or
    a key that does not match the certificate stops ``serve`` with one line instead of every worker
    failing its first handshake."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(tls.certificate), str(tls.key), password=_no_password)
    except FileNotFoundError as exc:
        raise ConfigError(f"TLS: no such file: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"TLS: cannot use certificate {tls.certificate} with key {tls.key}: {exc} "
            "(PEM files; the key unencrypted and matching the first certificate of the chain)"
        ) from None


def _tls_context(_conf, default_context_factory) -> ssl.SSLContext:
    """gunicorn's context (certificate chain and key loaded), never below TLS 1.2 (what Apple devices
    require for MDM) whatever the Python or OpenSSL defaults."""
    context = default_context_factory()
    context.minimum_version = max(context.minimum_version, ssl.TLSVersion.TLSv1_2)
    return context


def _no_password() -> bytes:
    raise ssl.SSLError("the private key is encrypted; give an unencrypted key (mode 0600)")


def redact_query(query: str) -> str:
    """The query string with the values of secret parameters (the secrets policy) replaced."""
    parts = []
    for part in query.split("&"):
        name, sep, _value = part.partition("=")
        if is_secret_query_parameter(unquote_plus(name)):
            part = f"{name}={REDACTED}"
        parts.append(part)
    return "&".join(parts)


class AccessLogger(Logger):
    """gunicorn's logger, with secret query parameters (``?secret=…``) redacted from the access log.

    ``/mdm/enroll`` refuses a secret in the URL, but a client may still send one; it must not be
    written to the log on its way to being refused.
    """

    def atoms(self, resp, req, environ, request_time):
        if self.cfg.access_log_format == _COMBINED_FORMAT:
            atoms = self._combined_atoms(resp, environ)
        else:
            atoms = super().atoms(resp, req, environ, request_time)
        query = environ.get("QUERY_STRING") or ""
        safe = redact_query(query)
        if safe != query:
            uri = f"{environ.get('RAW_URI', '').split('?', 1)[0]}?{safe}"
            atoms["r"] = f"{environ.get('REQUEST_METHOD')} {uri} {environ.get('SERVER_PROTOCOL')}"
            atoms["q"] = safe
            atoms["{query_string}e"] = safe
            atoms["{raw_uri}e"] = uri
            atoms["{request_uri}e"] = uri
        return atoms


    def setup(self, cfg) -> None:
        super().setup(cfg)
        self._plain_handler = self._own_plain_access_handler()

    def _own_plain_access_handler(self) -> logging.StreamHandler | None:
        """gunicorn's own handler of the access log, when it alone writes the combined format's lines
        as they are (no logging configuration, syslog, filter or other format of the operator's)."""
        cfg, log = self.cfg, self.access_log
        if cfg.access_log_format != _COMBINED_FORMAT or cfg.logconfig or cfg.logconfig_dict or cfg.logconfig_json:
            return None
        if cfg.syslog or log.filters or len(log.handlers) != 1 or not log.isEnabledFor(logging.INFO):
            return None
        handler = log.handlers[0]
        if not getattr(handler, "_gunicorn", False) or type(handler) not in (logging.StreamHandler, logging.FileHandler):
            return None
        formatter = handler.formatter
        if handler.filters or formatter is None or formatter._fmt != self.access_fmt or handler.level > logging.INFO:
            return None
        return handler

    def access(self, resp, req, environ, request_time) -> None:
        """The access line. Written by gunicorn's own handler alone (``serve``'s default), it is formatted
        and written here under that handler's lock: the same line, without a ``logging`` record, its
        filters and its formatter, which cost most of it (72 µs a request, against about 15 here)."""
        handler = self._plain_handler
        if handler is None or self.access_log.handlers != [handler] or handler.stream is None:
            super().access(resp, req, environ, request_time)
            return
        # the combined format's atoms are all there (:meth:`_combined_atoms`), quotes escaped as SafeAtoms does
        atoms = {key: value.replace('"', '\\"') if isinstance(value, str) else value
                 for key, value in self.atoms(resp, req, environ, request_time).items()}
        line = _COMBINED_FORMAT % atoms
        handler.acquire()
        try:
            handler.stream.write(line + handler.terminator)
            handler.flush()
        except Exception:  # noqa: BLE001 — as gunicorn: a failed log line does not fail the request
            self.error("access log line not written: %s", line)
        finally:
            handler.release()

    def _combined_atoms(self, resp, environ) -> dict[str, Any]:
        """The atoms the default (combined) format prints, valued as gunicorn values them. gunicorn's own
        ``atoms`` also copies every request header, response header and environ entry into the dict,
        which is most of what an access line costs."""
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        sent = getattr(resp, "sent", None)
        return {
            "h": environ.get("REMOTE_ADDR", "-"),
            "l": "-",
            "u": self._get_user(environ) or "-",
            "t": self.now(),
            "r": f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}",
            "s": status,
            "b": sent is not None and str(sent) or "-",
            "f": environ.get("HTTP_REFERER", "-"),
            "a": environ.get("HTTP_USER_AGENT", "-"),
        }


#: gunicorn's default access log format (Apache's combined format), the one ``serve`` uses
_COMBINED_FORMAT = next(setting.default for setting in KNOWN_SETTINGS if setting.name == "access_log_format")


def _freeze_loaded_app(_worker) -> None:
    """Once a web worker has loaded the app, move everything allocated so far (modules, mappers,
    schemas, routes: hundreds of thousands of objects that live as long as the process) out of the
    garbage collector's reach. Otherwise every full collection walks them all again, a pause of a few
    hundred milliseconds that stalls every request of that worker: the connect path's p99 (measured in
    docs/deploy.md)."""
    configure_mappers()
    gc.freeze()


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return create_app()


#: gunicorn's control socket, in the data directory.
CONTROL_SOCKET = "gunicorn.ctl"
#: sun_path holds 108 bytes on Linux (104 on the BSDs and macOS), the terminating NUL included.
_MAX_SOCKET_PATH = 103


def _control_socket_options(data_dir: Path) -> dict[str, Any]:
    """gunicorn's control socket (``gunicornc``) in the data directory, so two instances on one host
    never share gunicorn's default path ($XDG_RUNTIME_DIR or ~/.gunicorn/gunicorn.ctl). A data directory
    too deep for a Unix socket path gets none (logged), rather than a shared one."""
    if not any(setting.name == "control_socket" for setting in KNOWN_SETTINGS):
        return {}  # gunicorn before 25.1 has no control socket
    path = (data_dir / CONTROL_SOCKET).absolute()
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        log.warning("no gunicorn control socket: %s is longer than a Unix socket path may be", path)
        return {"control_socket_disable": True}
    return {"control_socket": str(path), "control_socket_mode": 0o600}


def serve(
    config: Mapping[str, Any], *, bind: str, workers: int, threads: int, worker_connections: int,
    push_worker: bool, tls: TlsFiles | None = None,
) -> None:
    """Serve the app; the gunicorn master also supervises exactly one push worker process (the outbox
    and the upkeep jobs: :mod:`mdmserver.jobs`). With ``tls``, gunicorn terminates TLS itself (HTTP/1.1
    over TLS, TLS 1.2 or later, the ``ssl`` module's default ciphers).

    The push worker is a separate ``mdmserver push-worker`` process (started once, by the master, whatever
    the number of web workers), so web workers forked later inherit nothing of it.
    """
    children: list[subprocess.Popen] = []

    def when_ready(server) -> None:
        if not push_worker:
            return
        process = subprocess.Popen([sys.executable, "-m", "mdmserver", "push-worker"])
        children.append(process)
        server.log.info("push worker started (pid %s)", process.pid)

    def on_exit(server) -> None:
        for process in children:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    data_dir = Path(config["DATA_DIR"])
    # Every worker writes its counters here and /metrics sums them (inherited through the fork).
    metrics_dir = data_dir / metrics.DIRECTORY_NAME
    metrics.prepare_directory(metrics_dir)
    metrics.share_through(metrics_dir)
    options = {
        "bind": bind,
        "workers": workers,
        "threads": threads,
        "worker_connections": worker_connections,
        "worker_class": "gthread",
        "timeout": 60,
        "graceful_timeout": 30,
        "accesslog": "-",
        "logger_class": AccessLogger,
        "when_ready": when_ready,
        "on_exit": on_exit,
        "post_worker_init": _freeze_loaded_app,
        **_control_socket_options(data_dir),
    }
    if tls is not None:
        check_tls_files(tls)
        options |= {"certfile": str(tls.certificate), "keyfile": str(tls.key), "ssl_context": _tls_context}
    _Gunicorn(options).run()
