"""`sfs check`'s verdict (pure): when is a transfer to anyone possible?"""

from __future__ import annotations

from sfs.check import Finding, verdict

SERVER_OK = Finding(True, "server http://s:5000", "reachable")
SERVER_DOWN = Finding(False, "server http://s:5000", "cannot reach it")
TURN_OK = Finding(True, "TURN s:3478 (tcp)", "relay allocated")
TURN_REFUSED = Finding(False, "TURN s:3478 (udp)", "refused the credential")
NO_NAT = Finding(True, "NAT", "none on the way: the STUN server sees this machine's own address")
CONE = Finding(True, "NAT", "one public address for every destination")
SYMMETRIC = Finding(False, "NAT", "a new public address per destination (symmetric)")


def test_a_working_relay_reaches_anyone() -> None:
    assert verdict([SERVER_OK, SYMMETRIC, TURN_REFUSED, TURN_OK])[0]


def test_no_server_no_transfer() -> None:
    possible, line = verdict([SERVER_DOWN, TURN_OK])
    assert not possible and "cannot be reached" in line


def test_without_a_relay_only_a_machine_without_nat_qualifies() -> None:
    assert verdict([SERVER_OK, NO_NAT])[0]
    for nat in (CONE, SYMMETRIC):
        possible, line = verdict([SERVER_OK, nat, TURN_REFUSED])
        assert not possible and "sfs serve --turn" in line
