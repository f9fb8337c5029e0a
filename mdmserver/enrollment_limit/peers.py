"""Who is on the other end of a device request: trusted proxies and the client address behind them.

A header set by a proxy (the client certificate, ``X-Forwarded-For``) is only as good as the proxy:
anyone can send those headers, so they are believed only when the TCP peer is one of the configured
``trusted_proxies``. Pure functions, no Flask.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: IPv6 clients are counted per /64: one subscriber usually holds a whole /64.
IPV6_CLIENT_PREFIX = 64


@functools.lru_cache(maxsize=32)
def trusted_networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    """The configured ``trusted_proxies`` (addresses or CIDRs) as networks."""
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def parse_address(text: str | None) -> Address | None:
    """An IP address from a peer or forwarded-for entry; ``None`` when it is not one."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: Address | str | None, networks: Iterable[Network]) -> bool:
    """True when ``address`` is inside one of the trusted proxy networks."""
    if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        address = parse_address(address)
    return address is not None and any(address in network for network in networks)


def client_address(remote_addr: str | None, forwarded_for: Iterable[str], networks: Iterable[Network]) -> str:
    """The address of the client a request comes from.

    When the TCP peer is not a trusted proxy, it is the client. Otherwise ``X-Forwarded-For`` is read
    from the right: each entry was appended by the hop to its right, so the right-most entry that is
    not itself a trusted proxy is the first address no trusted party vouches past. Entries further
    left are whatever the client chose to send and are ignored. An unreadable entry stops the walk at
    the last trusted hop.
    """
    networks = tuple(networks)
    current = parse_address(remote_addr)
    if current is None:
        return (remote_addr or "unknown")[:64]
    if is_trusted(current, networks):
        hops = [hop for header in forwarded_for for hop in header.split(",")]
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                break
            current = address
            if not is_trusted(address, networks):
                break
    return str(current)


def limit_key(client: str) -> str:
    """The key a per-client limit counts under: the address, or its /64 for IPv6."""
    address = parse_address(client)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return client[:64]
