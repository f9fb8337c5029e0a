"""The simulator's error: what a simulated device raises when the server (or a SCEP service) answers
something a real device would refuse."""

from __future__ import annotations


class SimulatorError(RuntimeError):
    pass


class ResponseTooLarge(SimulatorError):
    """An answer longer than the reader allowed (the rest was not read)."""
