"""The relay's pure core: which connections :class:`RelayTable` pairs, refuses and closes."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sfs.peer.proto.crypto import RELAY_TOKEN_BYTES as PEER_TOKEN_BYTES
from sfs.signal.relay import (
    RELAY_TOKEN_BYTES,
    Pair,
    Refusal,
    Refuse,
    RelayLimits,
    RelayTable,
    Wait,
)

A = "192.0.2.1"
B = "198.51.100.2"
C = "203.0.113.3"


def token(n: int) -> bytes:
    return bytes([n]) * RELAY_TOKEN_BYTES


def test_the_server_and_the_peers_agree_on_the_token_size() -> None:
    assert RELAY_TOKEN_BYTES == PEER_TOKEN_BYTES


def test_two_connections_with_one_token_form_a_pair() -> None:
    table = RelayTable()
    assert table.arrive("a", A, token(1), now=0) == Wait()
    assert table.arrive("b", B, token(1), now=1) == Pair("a", "b")
    assert table.partner("a") == "b"
    assert table.partner("b") == "a"
    assert (table.active_pairs, table.waiting) == (1, 0)


def test_two_peers_behind_one_address_pair() -> None:
    table = RelayTable()
    assert table.arrive("a", A, token(1), now=0) == Wait()
    assert table.arrive("b", A, token(1), now=0) == Pair("a", "b")


def test_other_tokens_do_not_pair() -> None:
    table = RelayTable()
    assert table.arrive("a", A, token(1), now=0) == Wait()
    assert table.arrive("b", B, token(2), now=0) == Wait()
    assert table.waiting == 2


def test_a_third_party_with_an_active_pairs_token_is_refused() -> None:
    table = RelayTable()
    table.arrive("a", A, token(1), now=0)
    table.arrive("b", B, token(1), now=0)
    assert table.arrive("evil", C, token(1), now=1) == Refuse(Refusal.TOKEN_USED)
    assert table.partner("a") == "b"  # the pair is untouched
    assert table.waiting == 0


def test_a_token_is_good_for_one_pair_even_after_the_pair_ended() -> None:
    limits = RelayLimits(token_memory_seconds=60)
    table = RelayTable(limits)
    table.arrive("a", A, token(1), now=0)
    table.arrive("b", B, token(1), now=0)
    assert table.leave("a", now=100) == "b"
    assert table.leave("b", now=100) is None  # the I/O layer reports the partner's close too
    assert table.arrive("evil", C, token(1), now=159) == Refuse(Refusal.TOKEN_USED)
    assert table.next_deadline() == 160
    assert table.handle_timer(160) == []
    assert table.remembered_tokens == 0
    assert table.arrive("later", C, token(1), now=160) == Wait()


def test_remembered_tokens_are_bounded_oldest_forgotten_first() -> None:
    table = RelayTable(RelayLimits(max_remembered_tokens=2))
    for n in range(3):
        table.arrive(("a", n), A, token(n), now=n)
        table.arrive(("b", n), B, token(n), now=n)
        table.leave(("a", n), now=n)
    assert table.remembered_tokens == 2
    assert table.arrive("x", C, token(0), now=3) == Wait()
    assert table.arrive("y", C, token(1), now=3) == Refuse(Refusal.TOKEN_USED)


@pytest.mark.parametrize(
    ("presented", "reason"),
    [
        (None, Refusal.NO_TOKEN),
        (b"", Refusal.NO_TOKEN),
        (b"\x01" * 31, Refusal.MALFORMED_TOKEN),
        (b"\x01" * 33, Refusal.MALFORMED_TOKEN),
        (bytearray(32), Refusal.MALFORMED_TOKEN),
        ("x" * 32, Refusal.MALFORMED_TOKEN),
    ],
    ids=["none", "empty", "short", "long", "bytearray", "text"],
)
def test_no_token_or_a_malformed_one_is_refused(presented: object, reason: Refusal) -> None:
    table = RelayTable()
    assert table.arrive("a", A, presented, now=0) == Refuse(reason)  # type: ignore[arg-type]
    assert (table.waiting, table.active_pairs, table.next_deadline()) == (0, 0, None)


def test_a_flood_of_tokens_from_one_address_holds_only_its_share() -> None:
    """One address's flood is refused past its share, and a real pair still forms at once."""
    table = RelayTable(RelayLimits(max_waiting_per_address=3))
    decisions = [table.arrive(n, A, token(n), now=0) for n in range(10)]
    assert decisions[:3] == [Wait()] * 3
    assert decisions[3:] == [Refuse(Refusal.WAITING_PER_ADDRESS)] * 7
    assert table.waiting == 3
    assert table.arrive("real-a", B, token(100), now=0) == Wait()
    assert table.arrive("real-b", C, token(100), now=0) == Pair("real-a", "real-b")
    # The flood's address may still be one end of a pair whose partner is waiting.
    assert table.arrive("c-wait", C, token(101), now=0) == Wait()
    assert table.arrive("a-join", A, token(101), now=0) == Pair("c-wait", "a-join")


def test_an_ipv6_client_is_one_address_per_64() -> None:
    table = RelayTable(RelayLimits(max_waiting_per_address=2))
    assert table.arrive(1, "2001:db8::1", token(1), now=0) == Wait()
    assert table.arrive(2, "2001:db8::ffff:2", token(2), now=0) == Wait()
    refused = table.arrive(3, "2001:db8::abcd", token(3), now=0)
    assert refused == Refuse(Refusal.WAITING_PER_ADDRESS)
    assert table.arrive(4, "2001:db8:0:1::1", token(4), now=0) == Wait()


def test_the_relay_holds_at_most_max_waiting() -> None:
    table = RelayTable(RelayLimits(max_waiting=2))
    assert table.arrive(1, A, token(1), now=0) == Wait()
    assert table.arrive(2, B, token(2), now=0) == Wait()
    assert table.arrive(3, C, token(3), now=0) == Refuse(Refusal.RELAY_BUSY)
    assert table.arrive(4, C, token(1), now=0) == Pair(1, 4)  # a partner is never "busy"


def test_pairs_per_address() -> None:
    table = RelayTable(RelayLimits(max_pairs_per_address=1))
    table.arrive(1, A, token(1), now=0)
    assert table.arrive(2, B, token(1), now=0) == Pair(1, 2)
    # A is in its one pair: it may neither wait ...
    assert table.arrive(3, A, token(2), now=0) == Refuse(Refusal.PAIRS_PER_ADDRESS)
    # ... nor join one waiting elsewhere; and a partner from elsewhere cannot pair with
    # a connection from A that waited before A's pair formed.
    table.arrive(4, C, token(3), now=0)
    assert table.arrive(5, A, token(3), now=0) == Refuse(Refusal.PAIRS_PER_ADDRESS)
    assert table.leave(1, now=1) == 2
    assert table.arrive(6, A, token(3), now=1) == Pair(4, 6)


def test_a_waiting_connection_whose_address_filled_up_cannot_pair() -> None:
    table = RelayTable(RelayLimits(max_pairs_per_address=1))
    assert table.arrive("early", A, token(9), now=0) == Wait()
    table.arrive(1, A, token(1), now=0)
    table.arrive(2, B, token(1), now=0)
    assert table.arrive("late", C, token(9), now=0) == Refuse(Refusal.PAIRS_PER_ADDRESS)
    assert table.waiting == 1  # "early" keeps waiting for a partner it may still get


def test_the_relay_holds_at_most_max_pairs() -> None:
    table = RelayTable(RelayLimits(max_pairs=1))
    table.arrive(1, A, token(1), now=0)
    table.arrive(2, B, token(1), now=0)
    table.arrive(3, A, token(2), now=0)
    assert table.arrive(4, C, token(2), now=0) == Refuse(Refusal.RELAY_FULL)
    assert table.waiting == 1
    table.leave(1, now=1)
    assert table.arrive(4, C, token(2), now=1) == Pair(3, 4)


def test_silent_connections_are_closed_at_their_deadline() -> None:
    table = RelayTable(RelayLimits(wait_seconds=10))
    assert table.next_deadline() is None
    table.arrive("a", A, token(1), now=0)
    table.arrive("b", B, token(2), now=4)
    assert table.next_deadline() == 10
    assert table.handle_timer(9.999) == []
    assert table.handle_timer(10) == ["a"]
    assert table.next_deadline() == 14
    assert table.handle_timer(20) == ["b"]
    assert (table.waiting, table.next_deadline()) == (0, None)
    assert table.leave("a", now=20) is None  # the close the I/O layer reports
    # No pair was formed: the token was never used, and may wait again.
    assert table.arrive("a2", A, token(1), now=20) == Wait()


def test_a_waiting_connection_that_leaves_frees_its_token_and_its_place() -> None:
    table = RelayTable(RelayLimits(max_waiting_per_address=1))
    table.arrive("a", A, token(1), now=0)
    assert table.leave("a", now=1) is None
    assert table.next_deadline() is None
    assert table.arrive("a2", A, token(1), now=1) == Wait()


def test_leaving_a_pair_names_the_partner_and_frees_the_addresses() -> None:
    table = RelayTable(RelayLimits(max_pairs_per_address=1))
    table.arrive("a", A, token(1), now=0)
    table.arrive("b", B, token(1), now=0)
    assert table.leave("b", now=1) == "a"
    assert table.partner("a") is None
    assert table.active_pairs == 0
    assert table.arrive("a2", A, token(2), now=1) == Wait()
    assert table.arrive("b2", B, token(2), now=1) == Pair("a2", "b2")


def test_unknown_connections_may_leave() -> None:
    assert RelayTable().leave("never-seen", now=0) is None


def test_a_connection_arrives_once() -> None:
    table = RelayTable()
    table.arrive("a", A, token(1), now=0)
    with pytest.raises(ValueError, match="already arrived"):
        table.arrive("a", A, token(2), now=0)


@pytest.mark.parametrize(
    "bad",
    [
        {"max_waiting_per_address": 0},
        {"max_pairs": 0},
        {"wait_seconds": 0},
        {"idle_seconds": -1},
        {"max_remembered_tokens": -1},
    ],
)
def test_limits_are_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RelayLimits(**bad)  # type: ignore[arg-type]


# -- a state machine: random arrivals, departures and timers ---------------------------------

LIMITS = RelayLimits(
    wait_seconds=10,
    max_waiting_per_address=2,
    max_waiting=4,
    max_pairs_per_address=2,
    max_pairs=3,
    token_memory_seconds=30,
    max_remembered_tokens=100,
)
ADDRESSES = [A, B, C]
TOKENS: list[bytes | None] = [*(token(n) for n in range(5)), None, b"short"]


@dataclass
class _Waiter:
    token: bytes
    address: str
    due: float


class RelayMachine(RuleBasedStateMachine):
    """The table against a model kept from its own answers."""

    @initialize()
    def start(self) -> None:
        self.table = RelayTable(LIMITS)
        self.now = 0.0
        self.next_id = 0
        self.waiting: dict[Hashable, _Waiter] = {}
        self.pairs: dict[Hashable, tuple[Hashable, bytes]] = {}  # both ends
        self.addresses: dict[Hashable, str] = {}
        self.pair_ended: dict[bytes, float] = {}  # token -> when its last pair ended
        self.paired_tokens: set[bytes] = set()

    @rule(address=st.sampled_from(ADDRESSES), presented=st.sampled_from(TOKENS))
    def arrive(self, address: str, presented: bytes | None) -> None:
        conn = self.next_id
        self.next_id += 1
        decision = self.table.arrive(conn, address, presented, now=self.now)
        if presented is None:
            assert decision == Refuse(Refusal.NO_TOKEN)
        elif len(presented) != RELAY_TOKEN_BYTES:
            assert decision == Refuse(Refusal.MALFORMED_TOKEN)
        elif presented in self.paired_tokens:  # a third party, while the pair is active
            assert decision == Refuse(Refusal.TOKEN_USED)
        if isinstance(decision, Wait):
            assert presented is not None
            assert presented not in self.paired_tokens
            assert all(w.token != presented for w in self.waiting.values())
            self.waiting[conn] = _Waiter(presented, address, self.now + LIMITS.wait_seconds)
            self.addresses[conn] = address
        elif isinstance(decision, Pair):
            assert decision.second == conn
            first = self.waiting.pop(decision.first)
            assert first.token == presented
            assert presented not in self.paired_tokens  # never two pairs at once
            ended = self.pair_ended.get(presented)
            # ... nor again while the last pair's token is remembered
            assert ended is None or self.now >= ended + LIMITS.token_memory_seconds
            self.pairs[decision.first] = (conn, presented)
            self.pairs[conn] = (decision.first, presented)
            self.addresses[conn] = address
            self.paired_tokens.add(presented)
        elif decision == Refuse(Refusal.TOKEN_USED):
            assert presented in self.paired_tokens or presented in self.pair_ended

    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        known = sorted(self.waiting.keys() | self.pairs.keys(), key=repr)
        conn = data.draw(st.sampled_from([*known, "stranger"]))
        partner = self.table.leave(conn, now=self.now)
        if conn in self.pairs:
            expected, token_ = self.pairs.pop(conn)
            assert partner == expected
            del self.pairs[expected]
            self.paired_tokens.discard(token_)
            self.pair_ended[token_] = self.now
            assert self.table.leave(expected, now=self.now) is None
        else:
            assert partner is None
            self.waiting.pop(conn, None)

    @rule(seconds=st.sampled_from([0.0, 1.0, 5.0, 9.5, 10.0, 31.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        self._timer()

    @rule()
    def wake_at_the_deadline(self) -> None:
        deadline = self.table.next_deadline()
        if deadline is not None:
            assert deadline > self.now  # every earlier one was handled when time moved
            self.now = max(self.now, deadline)
            self._timer()

    def _timer(self) -> None:
        closed = self.table.handle_timer(self.now)
        overdue = [conn for conn, w in self.waiting.items() if w.due <= self.now]
        assert closed == overdue
        for conn in closed:
            del self.waiting[conn]
            assert self.table.leave(conn, now=self.now) is None

    @invariant()
    def pairs_are_two_connections_with_one_token(self) -> None:
        for conn, (partner, token_) in self.pairs.items():
            assert partner != conn
            assert self.pairs[partner] == (conn, token_)
            assert self.table.partner(conn) == partner
        tokens = [token_ for _, token_ in self.pairs.values()]
        assert all(tokens.count(t) == 2 for t in tokens)  # one pair per token
        assert self.table.active_pairs == len(self.pairs) // 2 <= LIMITS.max_pairs

    @invariant()
    def no_connection_is_both_waiting_and_paired(self) -> None:
        assert not self.waiting.keys() & self.pairs.keys()
        assert self.table.waiting == len(self.waiting) <= LIMITS.max_waiting

    @invariant()
    def every_address_keeps_to_its_limits(self) -> None:
        for address in ADDRESSES:
            waiting = sum(w.address == address for w in self.waiting.values())
            assert waiting <= LIMITS.max_waiting_per_address
            pairs = {
                frozenset((conn, partner))
                for conn, (partner, _) in self.pairs.items()
                if address in (self.addresses[conn], self.addresses[partner])
            }
            assert len(pairs) <= LIMITS.max_pairs_per_address

    @invariant()
    def every_waiting_connection_is_closed_by_its_deadline(self) -> None:
        if self.waiting:
            deadline = self.table.next_deadline()
            assert deadline is not None
            assert deadline <= min(w.due for w in self.waiting.values())
            assert all(w.due > self.now for w in self.waiting.values())  # none overdue


TestRelayMachine = RelayMachine.TestCase
TestRelayMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
