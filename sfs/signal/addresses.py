"""Client addresses as the server's per-address limits count them (no I/O).

Its own module so that the registries, the admission gate and the relay's table
(:mod:`sfs.signal.relay`, pure) share one rule without importing each other.
"""

from __future__ import annotations

import ipaddress

# An IPv6 client usually holds a whole /64: limits per address apply to that.
IPV6_PREFIX_BITS = 64


def is_loopback(address: str) -> bool:
    """Whether a client address is this machine's loopback (IPv4-mapped included)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def address_key(address: str) -> str:
    """The client address that per-address limits count: an IPv6 address's /64.

    An IPv6 host is usually given a whole /64 and can pick any address in it, so
    counting single addresses would let one client be 2**64 of them.  IPv4-mapped
    IPv6 addresses (from a dual-stack socket) count as the IPv4 address they are;
    anything unparsable counts as itself.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # no zone index
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX_BITS), strict=False))
    return str(ip)
