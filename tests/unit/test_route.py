"""How a connection is labelled, from what is known of both candidates (pure)."""

from __future__ import annotations

import ipaddress

import pytest

from sfs.peer.transport.channel import Route
from sfs.peer.transport.gathering import PairEnd, route_of

LAN = (
    ipaddress.ip_network("192.168.1.0/24"),
    ipaddress.ip_network("fd00::/64"),
    ipaddress.ip_network("127.0.0.0/8"),
)
LOCAL = "direct on the local network"
NAT = "direct through NAT"
DIRECT = "direct"
OURS = "relayed by TURN turn.example (udp)"
THEIRS = "relayed by the other side's TURN 198.51.100.9"

CASES = [
    # (local type, local address), (remote type, remote address), behind a NAT, label
    # The case: a browser on the same /24 hides its host address behind an
    # mDNS name, so aioice learns it as peer-reflexive from the browser's checks.
    (("host", "192.168.1.20"), ("prflx", "192.168.1.30"), False, LOCAL),
    (("host", "192.168.1.20"), ("prflx", "192.168.1.30"), True, LOCAL),
    (("host", "192.168.1.20"), ("host", "1f0e8c2a-77aa.local"), False, LOCAL),
    (("host", "192.168.1.20"), ("host", "192.168.1.30"), False, LOCAL),
    (("host", "fd00::20"), ("host", "fd00::30"), False, LOCAL),
    (("host", "127.0.0.1"), ("host", "127.0.0.1"), False, LOCAL),
    # Across NATs: the peer's reflexive address, or ours, shows one.
    (("host", "192.168.1.20"), ("srflx", "203.0.113.7"), False, NAT),
    (("host", "192.168.1.20"), ("prflx", "203.0.113.7"), True, NAT),
    (("srflx", "198.51.100.2"), ("host", "203.0.113.7"), False, NAT),
    (("prflx", "198.51.100.2"), ("host", "203.0.113.7"), False, NAT),
    (("host", "192.168.1.20"), ("host", "203.0.113.7"), True, NAT),
    # Nothing shows a NAT, and the peer is not on our networks: routed, or a VPN.
    (("host", "192.168.1.20"), ("host", "10.8.0.5"), False, DIRECT),
    (("host", "192.168.1.20"), ("prflx", "10.8.0.5"), False, DIRECT),
    (("host", "192.168.1.20"), ("prflx", ""), False, DIRECT),
    (("host", "192.168.1.20"), ("host", "not an address"), False, DIRECT),
    # Relays, whatever else holds.
    (("relay", "198.51.100.2"), ("host", "192.168.1.30"), False, OURS),
    (("host", "192.168.1.20"), ("relay", "198.51.100.9"), True, THEIRS),
]  # fmt: skip


@pytest.mark.parametrize(("local", "remote", "behind_nat", "label"), CASES)
def test_route_label(
    local: tuple[str, str], remote: tuple[str, str], behind_nat: bool, label: str
) -> None:
    route = route_of(
        PairEnd(*local),
        PairEnd(*remote),
        networks=LAN,
        behind_nat=behind_nat,
        our_relay="turn.example (udp)",
    )
    assert str(route) == label


def test_direct_says_no_more_than_is_known() -> None:
    assert str(Route("direct")) == "direct"
