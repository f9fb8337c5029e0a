"""The simulator's error: what a simulated device raises when the server (or a SCEP service) answers
something a real device would refuse."""

from __future__ import annotations


class SimulatorError(RuntimeError):
    pass
