"""Running the app under gunicorn, with the embedded push worker beside it."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from gunicorn.app.base import BaseApplication

log = logging.getLogger("mdmserver.server")


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from mdmserver.app import create_app

        return create_app()


def serve(config: Mapping[str, Any], *, bind: str, workers: int, threads: int, push_worker: bool) -> None:
    """Serve the app; the gunicorn master also supervises exactly one push worker process.

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

    options = {
        "bind": bind,
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 60,
        "graceful_timeout": 30,
        "accesslog": "-",
        "when_ready": when_ready,
        "on_exit": on_exit,
    }
    _Gunicorn(options).run()
