"""Client addresses behind trusted proxies (pure functions; expected values written by hand)."""

from __future__ import annotations

import pytest

from mdmserver.enrollment_limit.peers import client_address, is_trusted, limit_key, trusted_networks

PROXIES = trusted_networks(("10.0.0.0/8", "192.0.2.1/32", "2001:db8:ffff::/48"))


@pytest.mark.parametrize(
    "peer,forwarded,expected",
    [
        # a peer that is not a trusted proxy is the client, whatever it claims
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),
        ("203.0.113.5", [], "203.0.113.5"),
        # behind a trusted proxy: the right-most entry that is not a trusted proxy
        ("10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
        ("10.1.2.3", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
        ("10.1.2.3", ["6.6.6.6, 198.51.100.1, 192.0.2.1"], "198.51.100.1"),
        ("10.1.2.3", ["6.6.6.6", "198.51.100.1, 10.9.9.9"], "198.51.100.1"),  # several headers
        # nothing forwarded, or only proxies: the left-most proxy we reached
        ("10.1.2.3", [], "10.1.2.3"),
        ("10.1.2.3", ["10.4.4.4, 192.0.2.1"], "10.4.4.4"),
        # an unreadable entry stops at the last trusted hop
        ("10.1.2.3", ["198.51.100.1, unknown"], "10.1.2.3"),
        ("10.1.2.3", ["unknown, 198.51.100.1"], "198.51.100.1"),
        # IPv6, and IPv4 mapped into IPv6
        ("2001:db8:ffff::1", ["2001:db8:1:2::5"], "2001:db8:1:2::5"),
        ("::ffff:10.1.2.3", ["198.51.100.7"], "198.51.100.7"),
        (None, ["198.51.100.1"], "unknown"),
    ],
)
def test_client_address(peer, forwarded, expected) -> None:
    assert client_address(peer, forwarded, PROXIES) == expected


def test_nobody_is_trusted_by_default() -> None:
    assert not is_trusted("127.0.0.1", trusted_networks(()))
    assert client_address("127.0.0.1", ["198.51.100.1"], trusted_networks(())) == "127.0.0.1"
    assert is_trusted("192.0.2.1", PROXIES) and not is_trusted("192.0.2.2", PROXIES)
    assert not is_trusted("not an address", PROXIES)


def test_limit_key_groups_ipv6_by_64() -> None:
    assert limit_key("198.51.100.1") == "198.51.100.1"
    assert limit_key("2001:db8:1:2::5") == limit_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::5") != limit_key("2001:db8:1:2::5")
