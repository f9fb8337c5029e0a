"""``mdmserver simulate`` against a live server."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mdmserver.db import db
from mdmserver.simulator.cli import simulate
from tests.factories import install_push_topic


@pytest.fixture
def live(live_server, monkeypatch):
    monkeypatch.setitem(live_server.app.config, "ENROLL_RATE_LIMIT", 0)
    monkeypatch.setitem(live_server.app.config, "ADMISSION_POLICY", "auto")
    with live_server.app.app_context():
        install_push_topic(db.session, monkeypatch)
    return live_server


def test_simulate_load_with_commands(live) -> None:
    result = CliRunner().invoke(simulate, [
        "--url", live.url, "--devices", "3", "--iterations", "2", "--concurrency", "3",
        "--token", live.token("read", "write"), "--command", "DeviceInformation", "--json",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["enrolled"] == 3 and summary["polling"]["errors"] == {}
    # each session: Idle → command, result → empty
    assert summary["polling"]["statuses"] == {"/mdm/connect 200": 12}
    assert summary["polling"]["p99_ms"] >= summary["polling"]["p50_ms"] > 0


def test_simulate_misbehaving_devices(live) -> None:
    result = CliRunner().invoke(simulate, ["--url", live.url, "--devices", "2", "--iterations", "1",
                                           "--misbehave", "foreign_cert"])
    assert result.exit_code == 0, result.output
    assert "/mdm/connect 403" in result.output and "errors: none" in result.output


def test_simulate_usage_errors(live) -> None:
    result = CliRunner().invoke(simulate, ["--url", live.url, "--command", "DeviceLock"])
    assert result.exit_code != 0 and "--command needs --token" in result.output
    result = CliRunner().invoke(simulate, ["--url", "http://127.0.0.1:9", "--devices", "1", "--iterations", "0"])
    assert result.exit_code != 0 and "no device could enroll" in result.output
