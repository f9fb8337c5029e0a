"""Racing reconciles on real connections (no test transaction): the helper both assignment features'
concurrency tests use."""

from __future__ import annotations

import threading
from collections.abc import Callable

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mdmserver.db import db
from mdmserver.records.commands import Command


def race(server: Flask, work: Callable[[Session], None], *, threads: int = 4) -> list[BaseException]:
    """Run ``work`` in ``threads`` threads at once, each with its own session, committed; returns the
    exceptions raised."""
    with server.app_context():
        engine = db.engine
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run() -> None:
        with server.app_context(), Session(engine) as own:
            try:
                barrier.wait(timeout=30)
                work(own)
                own.commit()
            except BaseException as exc:  # collected and returned
                errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    return errors


def commands_per_device(server: Flask, request_type: str) -> dict[int, int]:
    """How many commands of ``request_type`` each device has."""
    with server.app_context():
        return dict(db.session.execute(
            select(Command.device_id, func.count()).where(Command.request_type == request_type)
            .group_by(Command.device_id)
        ).all())
