"""Running the app under gunicorn, with the embedded push worker beside it."""

from __future__ import annotations

import logging
import multiprocessing
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


def _push_worker_target() -> None:
    from mdmserver.push.worker import run_embedded_worker

    run_embedded_worker()


def serve(config: Mapping[str, Any], *, bind: str, workers: int, threads: int, push_worker: bool) -> None:
    """Serve the app; the gunicorn master also supervises one push worker process."""
    worker_process: list[multiprocessing.Process] = []

    def when_ready(server) -> None:
        if not push_worker:
            return
        try:
            from mdmserver.push import worker  # noqa: F401
        except ImportError:
            log.warning("no push worker available in this build; devices are not woken by APNs")
            return
        process = multiprocessing.get_context("spawn").Process(target=_push_worker_target, name="push-worker")
        process.start()
        worker_process.append(process)
        server.log.info("push worker started (pid %s)", process.pid)

    def on_exit(server) -> None:
        for process in worker_process:
            process.terminate()
            process.join(timeout=30)

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
