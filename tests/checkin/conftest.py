from __future__ import annotations

import pytest

from tests.factories import install_push_topic


@pytest.fixture
def topic(app, db_session, monkeypatch):
    """A push certificate (hence a topic) and no enrollment rate limit (tests enroll a lot)."""
    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    return install_push_topic(db_session, monkeypatch)


@pytest.fixture
def auto_admission(app, monkeypatch):
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "auto")
