"""The devices service's dispatch of command answers to the inventory."""

from __future__ import annotations

from mdmserver.devices import service
from mdmserver.protocol import inventory


def test_every_parsed_answer_has_an_inventory_handler():
    """A request type the protocol parses but nobody applies would be parsed for nothing (and the other way
    round, a handler without a parser is never reached)."""
    assert set(service._INVENTORY_HANDLERS) == set(inventory.PARSERS)
    assert not set(service.LOST_MODE_STATE) & set(inventory.PARSERS)
