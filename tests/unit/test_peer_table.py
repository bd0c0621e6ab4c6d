"""The server's exhaustion limits without a network: address keys, deadlines, the
PeerTable's registration and pairing clocks, connection admission and byte budgets."""

from __future__ import annotations

import pytest

from sfs.defaults import FD_SPARE, LISTEN_BACKLOG
from sfs.signal import messages as m
from sfs.signal.admission import Admission, QueueMeter
from sfs.signal.config import ServerConfig
from sfs.signal.memory_registry import PeerTable
from sfs.signal.registry import Deadlines, Rejected, address_key

A, B, C = "AAA-001", "BBB-002", "CCC-003"


def _table(*ids: str, **limits: float) -> PeerTable:
    it = iter(ids)
    return PeerTable(ServerConfig(**limits), new_id=lambda: next(it))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- address keys


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"),
        ("2001:db8:1:2::1", "2001:DB8:1:2:0:0:0:99"),
        ("fe80::1%eth0", "fe80::2"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("192.0.2.7", "192.0.2.7"),
    ],
)
def test_addresses_that_count_as_one(one: str, other: str) -> None:
    assert address_key(one) == address_key(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:3::1"),
        ("192.0.2.7", "192.0.2.8"),
        ("::ffff:192.0.2.7", "::ffff:192.0.2.8"),
        ("::1", "127.0.0.1"),
    ],
)
def test_addresses_that_count_apart(one: str, other: str) -> None:
    assert address_key(one) != address_key(other)


def test_address_key_forms() -> None:
    assert address_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert address_key("10.0.0.1") == "10.0.0.1"
    assert address_key("unknown") == "unknown"  # what _remote says when aiohttp cannot tell


# --------------------------------------------------------------------------- deadlines


def test_deadlines_expire_in_order_once() -> None:
    clock: Deadlines[str] = Deadlines(10.0)
    clock.start("a", now=0.0)
    clock.start("b", now=1.0)
    clock.start("c", now=2.0)
    assert clock.expired(now=9.9) == []
    assert clock.expired(now=11.0) == ["a", "b"]
    assert clock.expired(now=11.0) == []
    assert "c" in clock
    assert len(clock) == 1


def test_deadlines_restart_and_cancel() -> None:
    clock: Deadlines[str] = Deadlines(10.0)
    clock.start("a", now=0.0)
    clock.start("b", now=1.0)
    clock.start("a", now=5.0)  # restarted: now after b
    clock.cancel("b")
    clock.cancel("never-started")
    assert clock.expired(now=14.0) == []
    assert clock.expired(now=15.0) == ["a"]


# --------------------------------------------------------------------------- registration clock


def test_a_connection_must_register_in_time() -> None:
    table = _table(A, register_timeout_seconds=5.0)
    table.connect("lurker", "10.0.0.1", now=0.0)
    table.connect("peer", "10.0.0.2", now=1.0)
    table.register("peer")
    table.connect("gone", "10.0.0.3", now=2.0)
    table.disconnect("gone")
    assert table.overdue_registrations(now=4.9) == []
    assert table.overdue_registrations(now=100.0) == ["lurker"]
    assert table.overdue_registrations(now=200.0) == []  # named once


def test_with_a_request_timeout_remote_clients_must_ask_and_loopback_may_wait() -> None:
    """LAN mode's embedded server: only its own waiting side (on loopback) may sit
    registered and idle; a neighbour that registers and never asks is dropped."""
    table = _table(A, B, C, register_timeout_seconds=5, request_timeout_seconds=10)
    table.connect("waiter", "::ffff:127.0.0.1", now=0.0)
    table.register("waiter")
    table.connect("idler", "10.0.0.7", now=0.0)
    table.register("idler")
    table.connect("joiner", "10.0.0.8", now=1.0)
    table.register("joiner")
    table.request("joiner", A, now=2.0)
    assert table.overdue_registrations(now=9.9) == []
    assert table.overdue_registrations(now=10.0) == ["idler"]
    assert table.overdue_registrations(now=100.0) == []  # the waiter and the joiner stay


def test_without_a_request_timeout_registered_clients_may_wait() -> None:
    table = _table(A)
    table.connect("peer", "10.0.0.7", now=0.0)
    table.register("peer")
    assert table.overdue_registrations(now=1e6) == []


def test_a_request_timeout_is_for_the_memory_registry_only() -> None:
    with pytest.raises(ValueError, match="without Redis"):
        ServerConfig(request_timeout_seconds=10, redis_url="redis://127.0.0.1:6379")
    with pytest.raises(ValueError, match="positive"):
        ServerConfig(request_timeout_seconds=0)


# --------------------------------------------------------------------------- pairing clock


def _registered(*sids: str, **limits: float) -> PeerTable:
    table = _table(A, B, C, **limits)
    for sid in sids:
        table.connect(sid, "10.0.0.1", now=0.0)
        table.register(sid)
    return table


def test_a_pairing_must_end_in_time_accepted_or_not() -> None:
    table = _registered("sa", "sb", "sc", pairing_timeout_seconds=30.0)
    table.request("sa", B, now=10.0)
    table.accept("sb", A)  # accepting does not restart the clock
    assert table.stalled_pairings(now=39.9) == []
    assert sorted(table.stalled_pairings(now=40.0)) == ["sa", "sb"]
    assert table.stalled_pairings(now=1000.0) == []  # sc, free all along, never expires


def test_a_pending_request_expires_too() -> None:
    table = _registered("sa", "sb", pairing_timeout_seconds=30.0)
    table.request("sa", B, now=0.0)
    assert sorted(table.stalled_pairings(now=30.0)) == ["sa", "sb"]


def test_ending_a_pairing_stops_its_clock() -> None:
    table = _registered("sa", "sb", "sc", pairing_timeout_seconds=30.0)
    table.request("sa", B, now=0.0)
    table.accept("sb", A)
    table.abort("sa", B)
    table.request("sc", A, now=20.0)  # a new request has a clock of its own
    table.disconnect("sc")  # and leaving ends it for both ends
    assert table.stalled_pairings(now=1000.0) == []


def test_a_refused_request_starts_no_clock() -> None:
    table = _registered("sa", "sb", pairing_timeout_seconds=30.0, max_lookups_per_connection=1)
    table.find("sa", B, now=0.0)
    with pytest.raises(Rejected):
        table.request("sa", B, now=0.0)  # out of lookups
    assert table.stalled_pairings(now=1000.0) == []


# --------------------------------------------------------------------------- lookups per /64


def test_lookups_are_limited_per_ipv6_64() -> None:
    table = _table(A, B, C, max_lookups_per_address=2, lookup_window_seconds=60.0)
    table.connect("s1", "2001:db8:1:2::1", now=0.0)
    table.connect("s2", "2001:db8:1:2::ffff", now=0.0)
    table.connect("s3", "2001:db8:1:3::1", now=0.0)
    for sid in ("s1", "s2", "s3"):
        table.register(sid)
    table.find("s1", C, now=0.0)
    table.find("s2", C, now=1.0)
    with pytest.raises(Rejected) as info:
        table.find("s2", C, now=2.0)  # another address, the same /64
    assert info.value.code == m.RATE_LIMITED
    table.find("s3", A, now=2.0)  # the next /64 has its own window
    assert table.address_of("s2") == "2001:db8:1:2::ffff"  # logs keep the address


# --------------------------------------------------------------------------- admission


def test_connections_are_capped_per_address() -> None:
    gate = Admission(max_per_address=2, fd_reserve=256)
    assert gate.open("a")
    assert gate.open("a")
    assert not gate.open("a")
    assert gate.open("b")
    assert gate.connections == 3
    gate.close("a")
    assert gate.open("a")
    for _ in range(2):
        gate.close("a")
    gate.close("b")
    assert gate.connections == 0
    assert gate.tracked_addresses == 0


def test_sessions_leave_the_fd_reserve_free() -> None:
    gate = Admission(max_per_address=10_000, fd_reserve=256)
    assert gate.start_session()  # no fd limit known yet: no limit
    gate.end_session()
    gate.set_fd_limit(512, fds_in_use=20)
    assert gate.session_capacity == 512 - 256 - 20
    started = 0
    while gate.start_session():
        started += 1
    assert started == 236
    gate.end_session()
    assert gate.start_session()


def test_shedding_starts_before_a_burst_of_accepts_could_run_out() -> None:
    gate = Admission(max_per_address=10_000, fd_reserve=256)
    gate.set_fd_limit(512, fds_in_use=20)
    room = 512 - LISTEN_BACKLOG - FD_SPARE - 20
    for _ in range(room):
        gate.open("x")
    assert not gate.must_shed()
    gate.open("x")
    assert gate.must_shed()
    gate.close("x")
    assert not gate.must_shed()


def test_a_tiny_fd_limit_leaves_no_room_for_sessions() -> None:
    gate = Admission(max_per_address=10, fd_reserve=256)
    gate.set_fd_limit(200, fds_in_use=20)
    assert gate.session_capacity == 0
    assert not gate.start_session()


# --------------------------------------------------------------------------- byte budgets


def test_queue_meter_counts_per_queue_and_in_all() -> None:
    meter = QueueMeter(per_queue=100, total=150)
    meter.add("q1", 80)
    meter.add("q2", 60)
    assert meter.queued("q1") == 80
    assert meter.queued_bytes == 140
    assert not meter.over_total()
    meter.add("q2", 20)
    assert meter.over_total()
    assert meter.largest() == "q1"
    meter.remove("q1", 80)
    assert meter.largest() == "q2"
    assert not meter.over_total()
    meter.forget("q2")
    assert meter.queued_bytes == 0
    assert meter.largest() is None
    assert meter.tracked_queues == 0


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_connections_per_address": 0},
        {"header_timeout_seconds": 0.0},
        {"join_timeout_seconds": -1.0},
        {"register_timeout_seconds": 0.0},
        {"pairing_timeout_seconds": float("nan")},
        {"max_queued_bytes_per_connection": 0},
        {"max_queued_bytes": 10, "max_queued_bytes_per_connection": 20},
        {"fd_reserve": LISTEN_BACKLOG},
    ],
)
def test_server_config_rejects_bad_limits(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=f"^{next(iter(kwargs))} must be"):
        ServerConfig(**kwargs)  # type: ignore[arg-type]
