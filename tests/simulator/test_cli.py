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


def test_summary_counts_commands_delivered_and_acknowledged(live) -> None:
    result = CliRunner().invoke(simulate, [
        "--url", live.url, "--devices", "2", "--iterations", "2", "--concurrency", "2",
        "--token", live.token("read", "write"), "--command", "DeviceInformation",
    ])
    assert result.exit_code == 0, result.output
    assert "commands: 4 queued, 4 delivered, 4 acknowledged" in result.output
    assert "errors: none" in result.output and "note:" not in result.output


def test_summary_says_when_devices_stayed_pending(live, monkeypatch) -> None:
    monkeypatch.setitem(live.app.config, "ADMISSION_POLICY", "manual")
    result = CliRunner().invoke(simulate, [
        "--url", live.url, "--devices", "2", "--iterations", "1", "--concurrency", "2",
        "--token", live.token("read", "write"), "--command", "DeviceInformation", "--json",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["polling"]["commands"] == {"queued": 2, "delivered": 0, "acknowledged": 0}
    assert summary["polling"]["errors"] == {"device pending admission: no command delivered": 2}
    [note] = summary["notes"]
    assert "2 of 2 queued command(s) were not delivered" in note
    assert "2 device(s) stayed pending admission" in note and "MDMSERVER_ADMISSION_POLICY=auto" in note

    text = CliRunner().invoke(simulate, [
        "--url", live.url, "--devices", "1", "--iterations", "1",
        "--token", live.token("read", "write"), "--command", "DeviceInformation",
    ])
    assert "errors: none" not in text.output and "commands: 1 queued, 0 delivered" in text.output
    assert "stayed pending admission" in text.output


def test_enrollment_rate_limit_is_explained(live, monkeypatch) -> None:
    monkeypatch.setitem(live.app.config, "ENROLL_RATE_LIMIT", 2)
    result = CliRunner().invoke(simulate, ["--url", live.url, "--devices", "4", "--iterations", "1",
                                           "--concurrency", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):result.stdout.rindex("}") + 1])
    assert summary["enrolled"] == 2
    assert summary["enrollment"]["statuses"]["/mdm/enroll 429"] == 2
    [note] = summary["notes"]
    assert "2 enrollment request(s) answered 429" in note and "MDMSERVER_ENROLL_RATE_LIMIT" in note

    refused = CliRunner().invoke(simulate, ["--url", live.url, "--devices", "1", "--iterations", "0"])
    assert refused.exit_code != 0 and "no device could enroll" in refused.output
    assert "answered 429 Too Many Requests" in refused.output and "MDMSERVER_ENROLL_RATE_LIMIT" in refused.output
