"""`sfs check`'s verdict (pure): when is a transfer possible, and with whom?"""

from __future__ import annotations

import pytest

from sfs.check import Finding, verdict

SERVER_OK = Finding("ok", "server http://s:5000", "reachable")
SERVER_DOWN = Finding("fail", "server http://s:5000", "cannot reach it")
NO_STUN = Finding("warn", "STUN", "the server hands out no STUN server")
NO_TURN = Finding("warn", "TURN", "the server hands out no TURN relay")
STUN_OK = Finding("ok", "STUN s:3478", "seen as 203.0.113.7:40001")
STUN_SILENT = Finding("fail", "STUN s:3478", "no answer; UDP blocked?")
TURN_OK = Finding("ok", "TURN s:3478 (tcp)", "relay allocated")
TURN_REFUSED = Finding("fail", "TURN s:3478 (udp)", "refused the credential")
NO_NAT = Finding("ok", "NAT", "none on the way: the STUN server sees this machine's own address")
CONE = Finding("ok", "NAT", "one public address for every destination")
SYMMETRIC = Finding("warn", "NAT", "a new public address per destination (symmetric)")


def test_a_working_relay_reaches_anyone() -> None:
    possible, line = verdict([SERVER_OK, STUN_OK, SYMMETRIC, TURN_REFUSED, TURN_OK])
    assert possible
    assert line.startswith("yes: with anyone")


def test_no_server_no_transfer() -> None:
    possible, line = verdict([SERVER_DOWN, TURN_OK])
    assert not possible
    assert "cannot be reached" in line


def test_a_plain_server_is_enough_on_one_network() -> None:
    """`sfs serve` with neither STUN nor TURN: peers on one network connect, and the
    line says what crossing NATs would take, not that nothing works."""
    possible, line = verdict([SERVER_OK, NO_STUN, NO_TURN])
    assert possible
    assert line.startswith("on the same network only: across NATs")
    assert "sfs serve --stun" in line


def test_without_a_relay_only_a_machine_without_nat_reaches_anyone() -> None:
    assert verdict([SERVER_OK, STUN_OK, NO_NAT, NO_TURN]) == (
        True,
        "yes: no NAT on the way and UDP works (peers can reach this machine)",
    )
    for nat in (CONE, SYMMETRIC):
        possible, line = verdict([SERVER_OK, STUN_OK, nat, TURN_REFUSED])
        assert possible
        assert line.startswith("on the same network and across most NATs")
        assert "not with everyone" in line
        assert "sfs serve --turn" in line


@pytest.mark.parametrize("stun", [NO_STUN, STUN_SILENT])
def test_without_stun_or_relay_it_is_one_network(stun: Finding) -> None:
    possible, line = verdict([SERVER_OK, stun, TURN_REFUSED])
    assert possible
    assert line.startswith("on the same network only")


def test_levels() -> None:
    assert [f.ok for f in (SERVER_OK, NO_STUN, SYMMETRIC, TURN_REFUSED)] == [
        True,
        True,
        True,
        False,
    ]


RELAY_OK = Finding("ok", "relay http://s:5000/relay", "pairs and relays over TCP")
RELAY_FAILED = Finding("fail", "relay http://s:5000/relay", "refused (HTTP 503)")
NO_RELAY = Finding("warn", "relay", "the server has no relay")


def test_the_servers_relay_reaches_anyone_who_reaches_the_server() -> None:
    """`sfs serve` with neither STUN nor TURN but its relay: a transfer with anyone."""
    possible, line = verdict([SERVER_OK, NO_STUN, NO_TURN, RELAY_OK])
    assert possible
    assert line.startswith("yes: with anyone who reaches the server")
    for relay in (RELAY_FAILED, NO_RELAY):
        possible, line = verdict([SERVER_OK, NO_STUN, NO_TURN, relay])
        assert line.startswith("on the same network only")
