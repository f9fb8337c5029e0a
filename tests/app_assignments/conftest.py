from __future__ import annotations

import pytest

from mdmserver.simulator.device import FlaskTransport, SimulatedDevice
from tests.factories import install_push_topic


@pytest.fixture
def enrolled(app, client, db_session, monkeypatch):
    """A factory of simulated devices enrolled through the test client and admitted (auto admission),
    with their push token sent."""
    monkeypatch.setitem(app.config, "ENROLL_RATE_LIMIT", 0)
    monkeypatch.setitem(app.config, "ADMISSION_POLICY", "auto")
    install_push_topic(db_session, monkeypatch)

    def make(platform: str = "ios", **kwargs) -> SimulatedDevice:
        sim = SimulatedDevice(FlaskTransport(client), platform=platform, **kwargs)
        sim.enroll()
        assert sim.authenticate() == 200
        assert sim.token_update() == 200
        return sim

    return make
