"""The set-up machine, every path without a network.

Two :class:`Handshake` machines run against each other through :class:`Relay`,
which does what the signaling server does with their calls; tests hold, change or
replace what it relays, or feed one machine directly.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfs.code import Code, parse_code
from sfs.defaults import MAX_STREAMS
from sfs.errors import (
    CancelledByPeerError,
    PairingMismatchError,
    PeerGoneError,
    ServerLostError,
    SfsError,
    SignalingError,
    WrongCodeError,
)
from sfs.peer.proto.crypto import (
    KeyExchange,
    SessionKeys,
    open_message,
    reconnect_code,
    seal_message,
)
from sfs.peer.proto.framing import Role
from sfs.peer.proto.handshake import (
    PARTNER_GONE_GRACE_SECONDS,
    AcceptAnswers,
    Action,
    AnswerOffers,
    Call,
    Cancelled,
    ChannelOpen,
    ConnectionAccepted,
    ConnectionRequested,
    CreateOffers,
    Done,
    Fail,
    Handshake,
    Leave,
    LocalDescription,
    OpenChannel,
    PartnerAborted,
    PartnerLeft,
    PublicKeyReceived,
    Reconnect,
    Registered,
    SealedReceived,
    ServerLost,
    SetupEvent,
    SetupState,
    ShowCode,
    Status,
    signal_event,
    streams_for,
)
from sfs.signal.messages import IceServer

TIMEOUT = 30.0
WAITER_ID = "ABC-123"
JOINER_ID = "XYZ-789"
STRANGER_ID = "EVL-666"
WORDS = "tiger-lamp"
LEFT = "the other side left before the connection was set up"
AFTER_OFFER = (
    "the other side did not answer within 30 s; this code has had its one try: ask the "
    "receiver for a new code (a new `sfs receive`) instead of retrying it"
)
SERVER_ICE = (IceServer(urls=("stun:stun.example.org",)),)

Tamper = Callable[[str, Call], list[Call]]
OVER = (SetupState.DONE, SetupState.FAILED)
LOCAL = (Registered, LocalDescription, ChannelOpen)


@dataclass
class Side:
    name: str
    peer_id: str
    hs: Handshake
    inbox: deque[SetupEvent] = field(default_factory=deque)
    calls: list[Call] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    keys: SessionKeys | None = None
    error: SfsError | None = None
    accepted: tuple[str, ...] | None = None
    #: The direct TCP addresses this side lists (None: it takes no part), what it
    #: was told of the other's, and how it was asked to open the transport.
    tcp: tuple[str, ...] | None = None
    peer_tcp: tuple[str, ...] | None = None
    direct: bool | None = None
    #: The relay OpenChannel named (None: none).
    relay: str | None = None


class Relay:
    """Two machines and a server between them; ``tamper`` sees every call first."""

    def __init__(
        self,
        *,
        waiter_role: Role = Role.RECEIVER,
        joiner_words: str | None = None,
        streams: int | None = 1,
        tamper: Tamper | None = None,
        open_channels: bool = True,
        relays: tuple[str | None, str | None] = (None, None),
        prepare: bool = False,
        rendezvous: Code | None = None,
        pairing: tuple[str | None, str | None] = (None, None),
    ) -> None:
        """:param relays: the relay the server names to the sender and to the receiver.
        :param prepare: call each machine's ``prepare`` whenever it waits, as app.py does."""
        self.now = 100.0
        self.prepare = prepare
        self.actions: list[Action] = []
        self.tamper = tamper
        self.open_channels = open_channels
        joiner_role = Role.SENDER if waiter_role is Role.RECEIVER else Role.RECEIVER
        waiter = Handshake(
            waiter_role,
            rendezvous=rendezvous,
            connect_timeout=TIMEOUT,
            streams=streams,
            new_words=lambda: WORDS,
            pairing=pairing[0],
        )
        waiter_id = WAITER_ID if rendezvous is None else rendezvous.peer_id
        self.waiter = Side("waiter", waiter_id, waiter)
        waiter_relay, joiner_relay = relays if waiter_role is Role.SENDER else relays[::-1]
        self.deliver(self.waiter, Registered(waiter_id, SERVER_ICE, waiter_relay))
        code = parse_code(self.waiter.shown[-1]) if rendezvous is None else rendezvous
        if joiner_words is not None:
            code = Code(code.peer_id, joiner_words)
        joiner = Handshake(
            joiner_role, code=code, connect_timeout=TIMEOUT, streams=streams, pairing=pairing[1]
        )
        self.joiner = Side("joiner", JOINER_ID, joiner)
        self.joiner.inbox.append(Registered(JOINER_ID, SERVER_ICE, joiner_relay))

    @property
    def sender(self) -> Side:
        return self.waiter if self.waiter.hs.role is Role.SENDER else self.joiner

    @property
    def receiver(self) -> Side:
        return self.joiner if self.waiter.hs.role is Role.SENDER else self.waiter

    def other(self, side: Side) -> Side:
        return self.joiner if side is self.waiter else self.waiter

    def deliver(self, side: Side, event: SetupEvent) -> None:
        if side.hs.state in OVER and isinstance(event, LOCAL):
            return  # app.py stops pumping at the end
        self.perform(side, side.hs.handle(event, self.now))

    def perform(self, side: Side, actions: list[Action]) -> None:
        self.actions.extend(actions)
        for action in actions:
            if isinstance(action, Call):
                side.calls.append(action)
                for call in self.tamper(side.name, action) if self.tamper else [action]:
                    self.route(side, call)
            elif isinstance(action, ShowCode):
                side.shown.append(action.code)
            elif isinstance(action, Status):
                side.statuses.append(action.message)
            elif isinstance(action, CreateOffers):
                assert action.keys == side.hs._keys
                sdps = tuple(f"v=0 offer {i}" for i in range(action.count))
                side.inbox.append(LocalDescription(sdps, side.tcp))
            elif isinstance(action, AnswerOffers):
                assert action.keys == side.hs._keys
                side.peer_tcp = action.tcp
                answers = tuple(f"answer to {s}" for s in action.sdps)
                side.inbox.append(LocalDescription(answers, side.tcp))
            elif isinstance(action, AcceptAnswers):
                side.accepted = action.sdps
                side.peer_tcp = action.tcp
            elif isinstance(action, OpenChannel):
                side.direct = action.direct
                side.relay = action.relay
                if self.open_channels:
                    side.inbox.append(ChannelOpen())
            elif isinstance(action, Done):
                side.keys = action.keys
            elif isinstance(action, Fail):
                side.error = action.error
            else:
                assert isinstance(action, Leave | Reconnect)

    def route(self, side: Side, call: Call) -> None:
        """What the server pushes to the peer named in the call."""
        target = self.other(side)
        if call.payload.get("peer_id") != target.peer_id:
            return
        payload, sender = call.payload, side.peer_id
        if call.event == "send_connection_request":
            target.inbox.append(ConnectionRequested(sender))
        elif call.event == "accept_connection":
            target.inbox.append(ConnectionAccepted(sender))
        elif call.event == "send_public_key":
            target.inbox.append(PublicKeyReceived(sender, payload["key"]))
        elif call.event in ("offer", "answer"):
            target.inbox.append(SealedReceived(sender, call.event, payload["sealed"]))
        elif call.event == "abort":
            target.inbox.append(PartnerAborted(sender, payload["reason"]))

    def step(self) -> bool:
        if self.prepare:
            for side in (self.waiter, self.joiner):
                side.hs.prepare()
        for side in (self.waiter, self.joiner):
            if side.inbox:
                self.deliver(side, side.inbox.popleft())
                return True
        return False

    def run(self, until: Callable[[], bool] = lambda: False) -> None:
        while not until() and self.step():
            pass


def state_of(hs: Handshake) -> SetupState:
    return hs.state  # a call, so mypy does not keep an earlier narrowing


def only_error(actions: list[Action]) -> SfsError:
    assert isinstance(actions[-1], Fail), actions
    return actions[-1].error


def abort_calls(side: Side) -> list[str]:
    return [c.payload["reason"] for c in side.calls if c.event == "abort"]


FLOWS = [Role.RECEIVER, Role.SENDER]  # who waits: receiver-first, sender-first


# -- whole runs -------------------------------------------------------------------------


@pytest.mark.parametrize("waiter_role", FLOWS, ids=["receiver-first", "sender-first"])
@pytest.mark.parametrize("streams", [1, 3])
def test_both_flows_reach_done_with_keys_that_agree(waiter_role: Role, streams: int) -> None:
    relay = Relay(waiter_role=waiter_role, streams=streams)
    relay.run()
    sender, receiver = relay.sender, relay.receiver
    assert sender.keys is not None
    assert receiver.keys is not None
    assert sender.keys.signal_send == receiver.keys.signal_receive
    assert sender.keys.frame_send == receiver.keys.frame_receive
    assert sender.keys.verifier == receiver.keys.verifier
    assert sender.accepted == tuple(f"answer to v=0 offer {i}" for i in range(streams))
    for side in (sender, receiver):
        assert side.hs.state is SetupState.DONE
        assert side.error is None
        assert side.hs.next_deadline() is None
    assert relay.waiter.shown == [f"{WAITER_ID}-{WORDS}"]
    assert relay.joiner.statuses == [f"Connecting to {WAITER_ID}…"]


def test_the_wire_is_what_it_was() -> None:
    """The calls and their payloads, in order, as app.py's helpers sent them."""
    relay = Relay(streams=2)
    relay.run()
    joiner, waiter = relay.joiner.calls, relay.waiter.calls
    assert [c.event for c in joiner] == [
        "find_peer",
        "send_connection_request",
        "send_public_key",
        "offer",
    ]
    assert [c.event for c in waiter] == ["accept_connection", "send_public_key", "answer"]
    assert joiner[0].payload == joiner[1].payload == {"peer_id": WAITER_ID}
    assert waiter[0].payload == {"peer_id": JOINER_ID}
    assert set(joiner[2].payload) == {"peer_id", "key"}
    assert len(base64.b64decode(joiner[2].payload["key"], validate=True)) == 33
    # The sealed offer opens to the same compact JSON as before, with extra_sdps.
    assert relay.receiver.keys is not None
    sealed = base64.b64decode(joiner[3].payload["sealed"])
    plaintext = open_message(key=relay.receiver.keys.signal_receive, kind="offer", sealed=sealed)
    assert plaintext == b'{"type":"offer","sdp":"v=0 offer 0","extra_sdps":["v=0 offer 1"]}'


def test_a_single_stream_has_no_extra_sdps() -> None:
    relay = Relay()
    relay.run()
    assert relay.sender.keys is not None
    answer = next(c for c in relay.receiver.calls if c.event == "answer")
    sealed = base64.b64decode(answer.payload["sealed"])
    key = relay.sender.keys.signal_receive
    assert open_message(key=key, kind="answer", sealed=sealed) == (
        b'{"type":"answer","sdp":"answer to v=0 offer 0"}'
    )


def test_ice_servers_are_the_servers_unless_given() -> None:
    mine = (IceServer(urls=("stun:mine.example.org",)),)
    relay = Relay()
    relay.joiner.hs = Handshake(
        Role.SENDER, code=Code(WAITER_ID, WORDS), connect_timeout=TIMEOUT, ice_servers=mine
    )
    relay.run()
    assert relay.sender.keys is not None
    creating = [a for a in relay.actions if isinstance(a, CreateOffers)]
    assert [(a.count, a.ice_servers) for a in creating] == [(1, mine)]
    answering = [a for a in relay.actions if isinstance(a, AnswerOffers)]
    assert [a.ice_servers for a in answering] == [SERVER_ICE]


def test_secrets_are_dropped_after_key_derivation() -> None:
    relay = Relay()
    relay.run(until=lambda: relay.sender.hs.state is SetupState.CREATING_OFFERS)
    hs = relay.sender.hs
    assert hs._exchange is None
    assert hs._code is None
    relay.run()
    for side in (relay.sender, relay.receiver):
        assert side.hs._exchange is None
        assert side.hs._code is None
        assert side.hs._keys is None


# -- wrong code ---------------------------------------------------------------------------


@pytest.mark.parametrize("waiter_role", FLOWS, ids=["receiver-first", "sender-first"])
def test_wrong_code_ends_both_sides(waiter_role: Role) -> None:
    relay = Relay(waiter_role=waiter_role, joiner_words="tiger-lump")
    relay.run()
    # The receiver cannot open the offer: it says so and stops; the sender hears it.
    assert isinstance(relay.receiver.error, WrongCodeError)
    assert abort_calls(relay.receiver) == ["wrong_code"]
    assert relay.receiver.calls[-1].best_effort
    assert isinstance(relay.sender.error, WrongCodeError)
    assert abort_calls(relay.sender) == []
    assert relay.sender.hs.state is relay.receiver.hs.state is SetupState.FAILED


@pytest.mark.parametrize("waiter_role", FLOWS, ids=["receiver-first", "sender-first"])
def test_a_pairing_seals_each_sides_name_and_both_get_one_secret(waiter_role: Role) -> None:
    relay = Relay(waiter_role=waiter_role, pairing=("laptop", "phone"))
    relay.run()
    assert relay.waiter.hs.peer_pair_name == "phone"
    assert relay.joiner.hs.peer_pair_name == "laptop"
    assert relay.waiter.keys is not None
    assert relay.joiner.keys is not None
    assert len(relay.waiter.keys.pairing) == 32
    assert relay.waiter.keys.pairing == relay.joiner.keys.pairing
    assert relay.waiter.keys.pairing not in (relay.waiter.keys.reconnect, b"\0" * 32)


@pytest.mark.parametrize("waiter_role", FLOWS, ids=["receiver-first", "sender-first"])
@pytest.mark.parametrize("pairing", [("laptop", None), (None, "phone")], ids=["waiter", "joiner"])
def test_pairing_with_a_side_that_transfers_ends_both(
    waiter_role: Role, pairing: tuple[str | None, str | None]
) -> None:
    """One side runs `sfs pair`, the other `sfs send` or `sfs receive` with its code:
    the receiver, opening the offer, finds it out, tells the sender and stops; each
    says it in its own terms. Nobody's name is taken from the other."""
    relay = Relay(waiter_role=waiter_role, pairing=pairing)
    relay.run()
    pairs = relay.waiter if pairing[0] else relay.joiner
    transfers = relay.joiner if pairing[0] else relay.waiter
    assert abort_calls(relay.receiver) == ["pairing_mismatch"]
    for side in (relay.sender, relay.receiver):
        assert isinstance(side.error, PairingMismatchError)
        assert side.hs.state is SetupState.FAILED
        assert side.hs.peer_pair_name is None
    assert "the other side is not pairing" in str(pairs.error)
    assert "the other side is pairing, not transferring" in str(transfers.error)


def corrupt(kind: str) -> Tamper:
    def tamper(name: str, call: Call) -> list[Call]:
        if call.event != kind:
            return [call]
        sealed = bytearray(base64.b64decode(call.payload["sealed"]))
        sealed[-1] ^= 1
        payload = dict(call.payload, sealed=base64.b64encode(bytes(sealed)).decode())
        return [Call(kind, payload)]

    return tamper


def test_an_answer_that_does_not_open_is_a_wrong_code() -> None:
    relay = Relay(tamper=corrupt("answer"), open_channels=False)
    relay.run()
    assert isinstance(relay.sender.error, WrongCodeError)
    assert abort_calls(relay.sender) == ["wrong_code"]
    # The receiver, already opening its channel, hears it from the server.
    assert isinstance(relay.receiver.error, WrongCodeError)


def test_an_invalid_spake2_message_is_a_wrong_code() -> None:
    def tamper(name: str, call: Call) -> list[Call]:
        if call.event == "send_public_key" and name == "joiner":
            return [Call(call.event, dict(call.payload, key=base64.b64encode(b"junk").decode()))]
        return [call]

    relay = Relay(tamper=tamper)
    relay.run()
    assert isinstance(relay.waiter.error, WrongCodeError)
    assert abort_calls(relay.waiter) == ["wrong_code"]
    assert isinstance(relay.joiner.error, WrongCodeError)


def test_a_replayed_offer_from_an_earlier_session_is_a_wrong_code() -> None:
    earlier = Relay()
    earlier.run()
    old_offer = next(c for c in earlier.sender.calls if c.event == "offer")

    def replay(name: str, call: Call) -> list[Call]:
        return [old_offer] if call.event == "offer" else [call]

    relay = Relay(tamper=replay)
    relay.run()
    assert isinstance(relay.receiver.error, WrongCodeError)
    assert abort_calls(relay.receiver) == ["wrong_code"]
    assert isinstance(relay.sender.error, WrongCodeError)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (None, "the signaling server sent a message without key"),
        (42, "the signaling server sent a message without key"),
        ("not base64!", "the signaling server sent a malformed key"),
    ],
)
def test_a_malformed_key_is_a_signaling_error(key: object, message: str) -> None:
    relay = Relay()
    relay.run(until=lambda: relay.receiver.hs.state is SetupState.AWAITING_KEY)
    error = only_error(relay.receiver.hs.handle(PublicKeyReceived(JOINER_ID, key), relay.now))
    assert type(error) is SignalingError
    assert str(error) == message
    assert relay.receiver.hs._exchange is None


def test_a_malformed_sealed_field_is_a_signaling_error() -> None:
    relay = Relay()
    relay.run(until=lambda: relay.receiver.hs.state is SetupState.AWAITING_OFFER)
    hs = relay.receiver.hs
    error = only_error(hs.handle(SealedReceived(JOINER_ID, "offer", "%%%"), relay.now))
    assert str(error) == "the signaling server sent a malformed sealed"


@pytest.mark.parametrize(
    "plaintext",
    [
        b"not json",
        b"[]",
        b'{"type":"answer","sdp":"x"}',
        b'{"type":"offer"}',
        b'{"type":"offer","sdp":"x","extra_sdps":"y"}',
        b'{"type":"offer","sdp":"x","extra_sdps":[1]}',
        json.dumps({"type": "offer", "sdp": "x", "extra_sdps": ["y"] * 8}).encode(),
    ],
)
def test_a_sealed_offer_that_opens_to_nonsense_is_malformed(plaintext: bytes) -> None:
    relay = Relay()
    relay.run(until=lambda: relay.receiver.hs.state is SetupState.AWAITING_OFFER)
    keys = relay.receiver.hs._keys
    assert keys is not None
    sealed = seal_message(key=keys.signal_receive, kind="offer", plaintext=plaintext)
    event = SealedReceived(JOINER_ID, "offer", base64.b64encode(sealed).decode())
    actions = relay.receiver.hs.handle(event, relay.now)
    assert actions == [Fail(only_error(actions))]  # no abort: the code was right
    assert str(only_error(actions)) == "the other side sent a malformed offer"


@pytest.mark.parametrize("waiter_role", FLOWS, ids=["receiver-first", "sender-first"])
@pytest.mark.parametrize(
    ("sender_tcp", "receiver_tcp"),
    [
        (("127.0.0.1:4000", "[::1]:4001"), ("10.0.0.2:5000",)),
        (("127.0.0.1:4000",), ()),  # a receiver that cannot listen still dials
        ((), ("10.0.0.2:5000",)),
        (("127.0.0.1:4000",), None),  # an older receiver, the page, --transport datachannel
        (None, ("10.0.0.2:5000",)),
        (None, None),
    ],
)
def test_direct_addresses_travel_sealed_and_both_sides_agree_on_the_choice(
    waiter_role: Role,
    sender_tcp: tuple[str, ...] | None,
    receiver_tcp: tuple[str, ...] | None,
) -> None:
    relay = Relay(waiter_role=waiter_role)
    relay.sender.tcp, relay.receiver.tcp = sender_tcp, receiver_tcp
    relay.run()
    assert relay.sender.keys is not None
    assert relay.receiver.keys is not None
    # The receiver learns the sender's addresses only if it was asked to list its own
    # (with the offer), the sender the receiver's with the answer.
    assert relay.receiver.peer_tcp == sender_tcp
    assert relay.sender.peer_tcp == receiver_tcp
    both = sender_tcp is not None and receiver_tcp is not None
    assert relay.sender.direct is relay.receiver.direct is both
    # On the wire they are inside the sealed blob, never in clear.
    for call in relay.sender.calls + relay.receiver.calls:
        assert "127.0.0.1" not in json.dumps(call.payload)
        assert "10.0.0.2" not in json.dumps(call.payload)


SENDERS_RELAY = "https://a.example/relay"
RECEIVERS_RELAY = "http://[fd00::2]:5000/node/2/relay"


@pytest.mark.parametrize("waiter_role", FLOWS, ids=["receiver-first", "sender-first"])
@pytest.mark.parametrize(
    ("relays", "met_at"),
    [
        ((SENDERS_RELAY, RECEIVERS_RELAY), RECEIVERS_RELAY),  # the receiver's node
        ((SENDERS_RELAY, None), None),  # --relay never, a server without one, LAN mode
        ((None, RECEIVERS_RELAY), None),  # the receiver answers with none
        ((None, None), None),
    ],
)
def test_both_sides_meet_at_the_receivers_relay_named_sealed(
    waiter_role: Role, relays: tuple[str | None, str | None], met_at: str | None
) -> None:
    relay = Relay(waiter_role=waiter_role, relays=relays)
    relay.run()
    assert relay.sender.keys is not None
    assert relay.receiver.keys is not None
    assert relay.sender.relay == relay.receiver.relay == met_at
    for call in relay.sender.calls + relay.receiver.calls:
        assert "example" not in json.dumps(call.payload)
        assert "fd00" not in json.dumps(call.payload)


@pytest.mark.parametrize(
    "url",
    [
        7,
        ["https://a/relay"],
        "ftp://a.example/relay",
        "https:///relay",
        "https://user:pw@a.example/relay",
        "https://a.example/relay?x=1",
        "https://a.example/relay#x",
        "https://a.example:99999/relay",
        "https://a.example/re lay",
        "https://a.example/\x1b[2J",
        "https://a.example/" + "r" * 512,
    ],
)
def test_a_malformed_relay_url_is_malformed(url: object) -> None:
    assert offered_with(relay=url) == "the other side sent a malformed offer"


def offered_with(**fields: object) -> str:
    """What a receiver fails with when a sealed offer carries ``fields`` besides its SDP."""
    relay = Relay()
    relay.run(until=lambda: relay.receiver.hs.state is SetupState.AWAITING_OFFER)
    keys = relay.receiver.hs._keys
    assert keys is not None
    plaintext = json.dumps({"type": "offer", "sdp": "x", **fields}).encode()
    sealed = seal_message(key=keys.signal_receive, kind="offer", plaintext=plaintext)
    event = SealedReceived(JOINER_ID, "offer", base64.b64encode(sealed).decode())
    return str(only_error(relay.receiver.hs.handle(event, relay.now)))


@pytest.mark.parametrize(
    "tcp",
    [
        "127.0.0.1:4000",
        {"a": 1},
        [1],
        ["x" * 65],
        ["127.0.0.1:1"] * 9,
    ],
)
def test_a_malformed_direct_address_list_is_malformed(tcp: object) -> None:
    assert offered_with(tcp=tcp) == "the other side sent a malformed offer"


# -- the partner gone or giving up --------------------------------------------------------

PAIRED_STATES = [
    (Role.SENDER, SetupState.AWAITING_KEY),
    (Role.SENDER, SetupState.CREATING_OFFERS),
    (Role.SENDER, SetupState.AWAITING_ANSWER),
    (Role.RECEIVER, SetupState.AWAITING_KEY),
    (Role.RECEIVER, SetupState.AWAITING_OFFER),
    (Role.RECEIVER, SetupState.ANSWERING),
]


def relay_at(
    role: Role, state: SetupState, waiter_role: Role = Role.RECEIVER
) -> tuple[Relay, Side]:
    relay = Relay(waiter_role=waiter_role, open_channels=False)
    side = relay.sender if role is Role.SENDER else relay.receiver
    relay.run(until=lambda: side.hs.state is state)
    assert side.hs.state is state
    return relay, side


@pytest.mark.parametrize(("role", "state"), PAIRED_STATES)
def test_partner_gone_at_each_stage(role: Role, state: SetupState) -> None:
    relay, side = relay_at(role, state)
    partner = relay.other(side).peer_id
    error = only_error(side.hs.handle(PartnerLeft(partner), relay.now))
    assert type(error) is PeerGoneError
    assert str(error) == LEFT
    assert side.hs.state is SetupState.FAILED


def test_partner_gone_before_accepting_the_joiner() -> None:
    relay = Relay()
    relay.run(until=lambda: relay.joiner.hs.state is SetupState.AWAITING_ACCEPT)
    error = only_error(relay.joiner.hs.handle(PartnerLeft(WAITER_ID), relay.now))
    assert str(error) == LEFT


def test_the_waiting_side_ignores_who_leaves_before_pairing() -> None:
    relay = Relay()
    hs = relay.waiter.hs
    assert hs.handle(PartnerLeft(JOINER_ID), relay.now) == []
    assert hs.handle(PartnerAborted(JOINER_ID, "wrong_code"), relay.now) == []
    assert hs.state is SetupState.AWAITING_REQUEST
    relay.run()
    assert relay.waiter.keys is not None


@pytest.mark.parametrize("role", [Role.SENDER, Role.RECEIVER])
def test_partner_gone_while_opening_gets_a_grace_period(role: Role) -> None:
    relay, side = relay_at(role, SetupState.OPENING)
    partner = relay.other(side).peer_id
    assert side.hs.handle(PartnerLeft(partner), relay.now) == []
    assert side.hs.state is SetupState.PARTNER_LEFT
    assert side.hs.next_deadline() == relay.now + PARTNER_GONE_GRACE_SECONDS
    # Once it has left, nothing more it says through the server counts.
    assert side.hs.handle(PartnerLeft(partner), relay.now) == []
    assert side.hs.handle(PartnerAborted(partner, "wrong_code"), relay.now) == []
    # Its side opened a round trip before ours: the channel still opens.
    assert side.hs.handle_timer(relay.now + PARTNER_GONE_GRACE_SECONDS - 0.1) == []
    actions = side.hs.handle(ChannelOpen(), relay.now + 1)
    assert isinstance(actions[0], Leave)
    assert isinstance(actions[1], Done)


def test_partner_gone_while_opening_and_the_channel_stays_shut() -> None:
    relay, side = relay_at(Role.SENDER, SetupState.OPENING)
    side.hs.handle(PartnerLeft(relay.other(side).peer_id), relay.now)
    assert side.hs.handle(ServerLost(), relay.now) == []
    error = only_error(side.hs.handle_timer(relay.now + PARTNER_GONE_GRACE_SECONDS))
    assert type(error) is PeerGoneError
    assert str(error) == LEFT


@pytest.mark.parametrize(
    ("reason", "kind", "message"),
    [
        ("wrong_code", WrongCodeError, WrongCodeError().args[0]),
        (
            "cancelled",
            CancelledByPeerError,
            "the other side was cancelled by its user before the connection was set up",
        ),
        ("other", PeerGoneError, "the other side gave up before the connection was set up"),
        (None, PeerGoneError, "the other side gave up before the connection was set up"),
    ],
)
@pytest.mark.parametrize(("role", "state"), [*PAIRED_STATES, (Role.SENDER, SetupState.OPENING)])
def test_partner_aborted(
    reason: object, kind: type[SfsError], message: str, role: Role, state: SetupState
) -> None:
    relay, side = relay_at(role, state)
    partner = relay.other(side).peer_id
    error = only_error(side.hs.handle(PartnerAborted(partner, reason), relay.now))
    assert type(error) is kind
    assert str(error) == message


# -- timeouts -----------------------------------------------------------------------------

PLAIN_TIMEOUT = "the other side did not answer within 30 s"


@pytest.mark.parametrize(
    ("role", "state", "message"),
    [
        (Role.SENDER, SetupState.AWAITING_ACCEPT, PLAIN_TIMEOUT),
        (Role.RECEIVER, SetupState.AWAITING_ACCEPT, PLAIN_TIMEOUT),
        (Role.SENDER, SetupState.AWAITING_KEY, PLAIN_TIMEOUT),
        (Role.SENDER, SetupState.AWAITING_ANSWER, AFTER_OFFER),
        (Role.RECEIVER, SetupState.AWAITING_KEY, PLAIN_TIMEOUT),
        (Role.RECEIVER, SetupState.AWAITING_OFFER, PLAIN_TIMEOUT),
    ],
)
@pytest.mark.parametrize("waiter_role", FLOWS, ids=["receiver-first", "sender-first"])
def test_timeouts_at_each_wait(
    role: Role, state: SetupState, message: str, waiter_role: Role
) -> None:
    joins = (role is Role.SENDER) == (waiter_role is Role.RECEIVER)
    if state is SetupState.AWAITING_ACCEPT and not joins:
        pytest.skip("only the joining side waits for an accept")
    relay = Relay(waiter_role=waiter_role)
    side = relay.sender if role is Role.SENDER else relay.receiver
    relay.now = 500.0  # the deadline counts from when the wait began
    relay.run(until=lambda: side.hs.state is state)
    assert side.hs.next_deadline() == 500.0 + TIMEOUT
    assert side.hs.handle_timer(500.0 + TIMEOUT - 0.01) == []
    error = only_error(side.hs.handle_timer(500.0 + TIMEOUT))
    assert type(error) is SignalingError
    assert str(error) == message
    assert abort_calls(side) == []


def test_the_waiting_side_waits_for_a_request_without_a_deadline() -> None:
    relay = Relay()
    assert relay.waiter.hs.state is SetupState.AWAITING_REQUEST
    assert relay.waiter.hs.next_deadline() is None
    assert relay.waiter.hs.handle_timer(1e9) == []


# -- cancel -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "state"),
    [*PAIRED_STATES, (Role.SENDER, SetupState.OPENING), (Role.RECEIVER, SetupState.OPENING)],
)
def test_cancel_after_pairing_tells_the_partner(role: Role, state: SetupState) -> None:
    relay, side = relay_at(role, state)
    actions = side.hs.handle(Cancelled(), relay.now)
    partner = relay.other(side)
    assert actions == [Call("abort", {"peer_id": partner.peer_id, "reason": "cancelled"}, True)]
    assert side.hs.state is SetupState.FAILED
    relay.perform(side, actions)
    side.inbox.clear()
    relay.run()
    assert isinstance(partner.error, CancelledByPeerError)


@pytest.mark.parametrize("which", ["waiter", "joiner"])
def test_cancel_before_pairing_tells_no_one(which: str) -> None:
    relay = Relay()
    side = relay.waiter if which == "waiter" else relay.joiner
    relay.run(until=lambda: relay.joiner.hs.state is SetupState.AWAITING_ACCEPT)
    assert side.hs.handle(Cancelled(), relay.now) == []
    assert side.hs.state is SetupState.FAILED


# -- strangers, reordering, reconnecting, out-of-state events ----------------------------


def test_events_from_strangers_are_ignored_after_pairing() -> None:
    relay, side = relay_at(Role.RECEIVER, SetupState.AWAITING_OFFER)
    relay.open_channels = True
    hs = side.hs
    strangers: list[SetupEvent] = [
        PartnerLeft(STRANGER_ID),
        PartnerAborted(STRANGER_ID, "wrong_code"),
        SealedReceived(STRANGER_ID, "offer", "AAAA"),
        PublicKeyReceived(STRANGER_ID, "AAAA"),
        ConnectionRequested(STRANGER_ID),
        ConnectionAccepted(None),
        PartnerLeft(None),
    ]
    for event in strangers:
        assert hs.handle(event, relay.now) == []
    assert hs.state is SetupState.AWAITING_OFFER
    relay.run()
    assert relay.sender.keys is not None
    assert relay.receiver.keys is not None


def test_a_second_request_is_ignored_once_paired() -> None:
    relay = Relay()
    relay.run(until=lambda: relay.waiter.hs.state is SetupState.AWAITING_KEY)
    assert relay.waiter.hs.handle(ConnectionRequested(STRANGER_ID), relay.now) == []
    assert relay.waiter.hs.partner == JOINER_ID


def test_a_request_without_peer_id_is_a_signaling_error() -> None:
    relay = Relay()
    error = only_error(relay.waiter.hs.handle(ConnectionRequested(None), relay.now))
    assert str(error) == "the signaling server sent a message without peer_id"


def test_an_offer_relayed_before_the_key_is_kept_for_later() -> None:
    """A server may reorder: the receiver gets the offer before the sender's key."""
    held: list[Call] = []

    def hold_key(name: str, call: Call) -> list[Call]:
        if call.event == "send_public_key" and name == "joiner":
            held.append(call)
            return []
        if call.event == "offer":
            return [call, *held]
        return [call]

    relay = Relay(tamper=hold_key)
    # The sender needs the receiver's key first; that one goes through.
    relay.run()
    assert relay.sender.keys is not None
    assert relay.receiver.keys is not None


def test_early_events_before_pairing_are_kept_for_the_partner() -> None:
    """Before a request pairs it, the waiting side keeps what comes (a server may
    reorder), and later uses only what its partner sent."""
    joiner = KeyExchange(role="sender", password=WORDS.encode(), code_id=WAITER_ID)
    key = base64.b64encode(joiner.message).decode()
    hs = Handshake(Role.RECEIVER, connect_timeout=TIMEOUT, new_words=lambda: WORDS)
    hs.handle(Registered(WAITER_ID), 0.0)
    assert hs.handle(PublicKeyReceived(STRANGER_ID, "AAAA"), 0.0) == []
    assert hs.handle(PublicKeyReceived(JOINER_ID, key), 0.0) == []
    assert state_of(hs) is SetupState.AWAITING_REQUEST
    actions = hs.handle(ConnectionRequested(JOINER_ID), 1.0)
    assert [a.event for a in actions if isinstance(a, Call)] == [
        "accept_connection",
        "send_public_key",
    ]
    assert hs.state is SetupState.AWAITING_OFFER
    assert hs.next_deadline() == 1.0 + TIMEOUT


def test_a_lost_server_while_waiting_gives_a_new_code() -> None:
    words = iter(["tiger-lamp", "otter-bell"])
    hs = Handshake(Role.RECEIVER, connect_timeout=TIMEOUT, new_words=lambda: next(words))
    assert hs.handle(Registered(WAITER_ID), 0.0) == [ShowCode(f"{WAITER_ID}-tiger-lamp")]
    assert hs.handle(ServerLost(), 1.0) == [
        Status("Lost the signaling server; reconnecting…"),
        Reconnect(),
    ]
    assert state_of(hs) is SetupState.RECONNECTING
    assert hs.handle(Registered("NEW-456"), 2.0) == [
        Status("Reconnected. The old code no longer works; use this one:"),
        ShowCode("NEW-456-otter-bell"),
    ]
    assert hs.state is SetupState.AWAITING_REQUEST


@pytest.mark.parametrize(
    ("role", "state"), [*PAIRED_STATES, (Role.SENDER, SetupState.AWAITING_ACCEPT)]
)
def test_a_lost_server_after_pairing_ends_the_set_up(role: Role, state: SetupState) -> None:
    relay, side = relay_at(role, state)
    error = only_error(side.hs.handle(ServerLost(), relay.now))
    assert type(error) is ServerLostError


def test_a_lost_server_while_opening_does_not_matter() -> None:
    relay, side = relay_at(Role.RECEIVER, SetupState.OPENING)
    assert side.hs.handle(ServerLost(), relay.now) == []
    assert isinstance(side.hs.handle(ChannelOpen(), relay.now)[-1], Done)


def test_duplicates_and_wrong_kinds_from_the_partner_are_ignored() -> None:
    relay, side = relay_at(Role.SENDER, SetupState.AWAITING_ANSWER)
    hs = side.hs
    assert hs.handle(ConnectionAccepted(WAITER_ID), relay.now) == []
    assert hs.handle(PublicKeyReceived(WAITER_ID, "AAAA"), relay.now) == []
    assert hs.handle(SealedReceived(WAITER_ID, "offer", "AAAA"), relay.now) == []
    assert hs.state is SetupState.AWAITING_ANSWER


@pytest.mark.parametrize(
    ("event", "state"),
    [
        (ChannelOpen(), SetupState.IDLE),
        (LocalDescription(("x",)), SetupState.IDLE),
        (ChannelOpen(), SetupState.AWAITING_KEY),
        (LocalDescription(("x",)), SetupState.AWAITING_KEY),
        (Registered(WAITER_ID), SetupState.AWAITING_KEY),
        (LocalDescription(("x",)), SetupState.DONE),
        (ChannelOpen(), SetupState.FAILED),
    ],
)
def test_local_events_out_of_state_are_a_bug(event: SetupEvent, state: SetupState) -> None:
    relay = Relay()
    hs = relay.joiner.hs
    if state is SetupState.IDLE:
        hs = Handshake(Role.SENDER, code=Code(WAITER_ID, WORDS), connect_timeout=TIMEOUT)
    elif state is SetupState.FAILED:
        hs.handle(Cancelled(), relay.now)
    else:
        relay.run(until=lambda: hs.state is state)
    assert hs.state is state
    with pytest.raises(ValueError, match=f"^{type(event).__name__} (in state|after the)"):
        hs.handle(event, relay.now)


def test_server_events_after_the_end_are_ignored() -> None:
    relay = Relay()
    relay.run()
    hs = relay.sender.hs
    assert hs.handle(PartnerLeft(WAITER_ID), relay.now) == []
    assert hs.handle(Cancelled(), relay.now) == []
    assert hs.handle_timer(1e9) == []


def test_an_empty_description_is_a_bug() -> None:
    relay = Relay(open_channels=False)
    relay.run(until=lambda: relay.sender.hs.state is SetupState.CREATING_OFFERS)
    with pytest.raises(ValueError, match="at least one session description"):
        relay.sender.hs.handle(LocalDescription(()), relay.now)


def test_bad_stream_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="streams must be 1 to 8, not 0"):
        Handshake(Role.SENDER, connect_timeout=TIMEOUT, streams=0)
    with pytest.raises(ValueError, match="streams must be 1 to 8, not 9"):
        Handshake(Role.SENDER, connect_timeout=TIMEOUT, streams=MAX_STREAMS + 1)


@pytest.mark.parametrize(
    ("name", "data", "event"),
    [
        ("connection_request", {"peer_id": "A"}, ConnectionRequested("A")),
        ("connection_accepted", {}, ConnectionAccepted(None)),
        ("receive_public_key", {"peer_id": "A", "key": "k"}, PublicKeyReceived("A", "k")),
        ("offer", {"peer_id": "A", "sealed": "s"}, SealedReceived("A", "offer", "s")),
        ("answer", {"peer_id": "A"}, SealedReceived("A", "answer", None)),
        ("peer_disconnected", {"peer_id": "A"}, PartnerLeft("A")),
        ("peer_aborted", {"peer_id": "A", "reason": "x"}, PartnerAborted("A", "x")),
        ("peer_found", {"peer_id": "A"}, None),
        ("ice_candidate", {"peer_id": "A"}, None),
    ],
)
def test_signal_event(name: str, data: dict[str, object], event: SetupEvent | None) -> None:
    assert signal_event(name, data) == event


# -- fuzzing ------------------------------------------------------------------------------

REMOTE_TYPES = (
    ConnectionRequested,
    ConnectionAccepted,
    PublicKeyReceived,
    SealedReceived,
    PartnerLeft,
    PartnerAborted,
    ServerLost,
    Cancelled,
)
PEER_IDS = st.sampled_from([WAITER_ID, JOINER_ID, STRANGER_ID, None, 7])
JUNK = st.one_of(st.none(), st.integers(), st.text(max_size=12), st.just("AAAA"))
REASONS = st.one_of(JUNK, st.sampled_from(["wrong_code", "cancelled"]))
REMOTE = st.one_of(
    st.builds(ConnectionRequested, PEER_IDS),
    st.builds(ConnectionAccepted, PEER_IDS),
    st.builds(PublicKeyReceived, PEER_IDS, JUNK),
    st.builds(SealedReceived, PEER_IDS, st.sampled_from(["offer", "answer"]), JUNK),
    st.builds(PartnerLeft, PEER_IDS),
    st.builds(
        PartnerAborted, PEER_IDS, st.one_of(JUNK, st.sampled_from(["wrong_code", "cancelled"]))
    ),
    st.builds(ServerLost),
    st.builds(Cancelled),
)
STEPS = st.lists(
    st.one_of(
        st.just("honest"),  # the next message the real partner sent
        st.floats(min_value=0, max_value=40),  # time passes
        REMOTE,
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    waiter_role=st.sampled_from(FLOWS),
    fuzz_waiter=st.booleans(),
    steps=STEPS,
)
def test_random_event_sequences_only_end_in_sfs_errors(
    waiter_role: Role, fuzz_waiter: bool, steps: list[object]
) -> None:
    """Whatever the server does, the machine answers with actions or a Fail of an
    sfs error; never another exception, and nothing after the end."""
    relay = Relay(waiter_role=waiter_role)
    target = relay.waiter if fuzz_waiter else relay.joiner
    honest = relay.other(target)
    # The fuzzed side's own local events (its connection) it gets at once; what the
    # honest partner sends waits in its inbox for an "honest" step.
    for step in steps:
        while honest.inbox:
            relay.deliver(honest, honest.inbox.popleft())
        for event in [e for e in target.inbox if isinstance(e, LOCAL)]:
            target.inbox.remove(event)
            relay.deliver(target, event)
        over = target.hs.state in (SetupState.DONE, SetupState.FAILED)
        if step == "honest":
            if not target.inbox:
                continue
            actions = target.hs.handle(target.inbox.popleft(), relay.now)
        elif isinstance(step, float):
            relay.now += step
            actions = target.hs.handle_timer(relay.now)
        else:
            assert not isinstance(step, str)
            assert isinstance(step, REMOTE_TYPES)
            actions = target.hs.handle(cast(SetupEvent, step), relay.now)
        if over:
            assert actions == []
        relay.perform(target, actions)
        for action in actions:
            if isinstance(action, Fail):
                assert isinstance(action.error, SfsError)
                assert action is actions[-1]
                assert target.hs.state is SetupState.FAILED
            if isinstance(action, Done):
                assert target.hs.state is SetupState.DONE
        if target.hs.state is SetupState.FAILED:
            assert target.hs._exchange is None
            assert target.hs._keys is None


@pytest.mark.parametrize(
    ("round_trip", "streams"),
    [(None, 1), (0.0, 1), (0.019, 1), (0.021, 2), (0.031, 3), (0.05, 4), (2.0, 4)],
)
def test_streams_auto_grows_with_the_round_trip(round_trip: float | None, streams: int) -> None:
    assert streams_for(round_trip) == streams


class DelayedRelay(Relay):
    """Every message through the server takes ``hop`` seconds (half a round trip)."""

    hop = 0.0

    def deliver(self, side: Side, event: SetupEvent) -> None:
        if not isinstance(event, LOCAL):
            self.now += self.hop
        super().deliver(side, event)


@pytest.mark.parametrize("waiter_role", FLOWS, ids=["receiver-first", "sender-first"])
@pytest.mark.parametrize(("hop", "streams"), [(0.001, 1), (0.025, 4)])
def test_streams_auto_offers_as_many_as_the_measured_round_trip_needs(
    waiter_role: Role, hop: float, streams: int
) -> None:
    relay = DelayedRelay(waiter_role=waiter_role, streams=None)
    relay.hop = hop
    relay.run()
    assert relay.sender.keys is not None
    assert relay.receiver.keys is not None
    assert relay.sender.hs.round_trip == pytest.approx(2 * hop)
    offers = [a for a in relay.actions if isinstance(a, CreateOffers)]
    assert [a.count for a in offers] == [streams]
    assert relay.sender.accepted is not None
    assert len(relay.sender.accepted) == streams


# -- working ahead ------------------------------------------------------------------------


def _sent_keys(side: Side) -> list[str]:
    return [c.payload["key"] for c in side.calls if c.event == "send_public_key"]


@pytest.mark.parametrize("waiter_role", FLOWS, ids=["receiver-first", "sender-first"])
def test_a_side_prepares_its_spake2_message_before_pairing_and_sends_that_one(
    waiter_role: Role,
) -> None:
    relay = Relay(waiter_role=waiter_role, prepare=True)
    waiter, joiner = relay.waiter, relay.joiner
    waiter.hs.prepare()  # the code is shown: nothing else to do until a request
    prepared = waiter.hs._exchange
    assert prepared is not None
    assert waiter.hs._code is None  # the words live on in the SPAKE2 state only
    waiter.hs.prepare()
    assert waiter.hs._exchange is prepared  # once per code
    relay.step()  # the joiner registers and sends its request
    joiner.hs.prepare()
    assert joiner.hs._exchange is not None
    joined = base64.b64encode(joiner.hs._exchange.message).decode()
    waited = base64.b64encode(prepared.message).decode()
    relay.run()
    assert _sent_keys(waiter) == [waited]
    assert _sent_keys(joiner) == [joined]
    sender, receiver = relay.sender, relay.receiver
    assert sender.keys is not None
    assert receiver.keys is not None
    assert sender.keys.frame_send == receiver.keys.frame_receive
    for side in (sender, receiver):
        assert side.hs.state is SetupState.DONE
        assert side.hs._exchange is None


def test_prepare_before_a_code_or_after_pairing_does_nothing() -> None:
    hs = Handshake(Role.RECEIVER, connect_timeout=TIMEOUT, new_words=lambda: WORDS)
    hs.prepare()
    assert hs._exchange is None  # no code yet
    hs.handle(Registered(WAITER_ID), 0.0)
    hs.handle(ConnectionRequested(JOINER_ID), 1.0)  # computed on pairing, as before
    assert hs.state is SetupState.AWAITING_KEY
    exchange = hs._exchange
    hs.prepare()
    assert hs._exchange is exchange


def test_a_wrong_code_still_has_one_try_when_prepared() -> None:
    relay = Relay(joiner_words="tiger-lump", prepare=True)
    relay.run()
    assert isinstance(relay.waiter.error, WrongCodeError)
    assert isinstance(relay.joiner.error, WrongCodeError)
    assert len(_sent_keys(relay.waiter)) == len(_sent_keys(relay.joiner)) == 1


def test_a_new_code_after_a_lost_server_gets_a_new_exchange() -> None:
    words = iter(["tiger-lamp", "otter-bell"])
    hs = Handshake(Role.RECEIVER, connect_timeout=TIMEOUT, new_words=lambda: next(words))
    hs.handle(Registered(WAITER_ID), 0.0)
    hs.prepare()
    old = hs._exchange
    assert old is not None
    hs.handle(ServerLost(), 1.0)
    hs.prepare()  # reconnecting: no code to work for
    hs.handle(Registered("NEW-456"), 2.0)
    assert hs._exchange is None  # the one for the dead code is gone
    hs.prepare()
    new = hs._exchange
    assert new is not None
    assert new is not old
    actions = hs.handle(ConnectionRequested(JOINER_ID), 3.0)
    keys = [
        a.payload["key"] for a in actions if isinstance(a, Call) and a.event == "send_public_key"
    ]
    assert keys == [base64.b64encode(new.message).decode()]
    joiner = KeyExchange(
        role=Role.SENDER.value, password=b"otter-bell", code_id="NEW-456", printed_by="receiver"
    )
    hs.handle(PublicKeyReceived(JOINER_ID, base64.b64encode(joiner.message).decode()), 4.0)
    assert hs.state is SetupState.AWAITING_OFFER  # the new code's words agree


# -- meeting again after an outage (issue 28) --------------------------------------------


def _reconnect_code(keys: SessionKeys, password: bytes | None = None) -> Code:
    rendezvous, derived = reconnect_code(keys.reconnect)
    return Code(rendezvous, (password or derived).decode("ascii"))


def test_a_session_meets_again_at_its_rendezvous_with_new_keys() -> None:
    """The receiver waits at the rendezvous both sides derive from the first
    session, shows no code, and a fresh SPAKE2 on the derived password gives both
    new keys that agree."""
    first = Relay()
    first.run()
    assert first.sender.keys is not None
    assert first.receiver.keys is not None
    assert first.sender.keys.reconnect == first.receiver.keys.reconnect
    code = _reconnect_code(first.receiver.keys)
    assert code == _reconnect_code(first.sender.keys)
    assert code.peer_id.startswith("~")
    assert WAITER_ID not in code.peer_id
    again = Relay(rendezvous=code)
    assert again.waiter.hs.rendezvous == code.peer_id
    again.run()
    sender, receiver = again.sender, again.receiver
    assert sender.keys is not None
    assert receiver.keys is not None
    assert sender.keys.frame_send == receiver.keys.frame_receive
    assert sender.keys.frame_send != first.sender.keys.frame_send
    assert again.waiter.shown == []
    assert again.waiter.statuses == ["Waiting for the other side to come back…"]


def test_a_stranger_at_the_rendezvous_gets_nothing() -> None:
    """Someone who learned the rendezvous ID (the server) but not the first session's
    key: the sealed offer does not open, and the set-up fails on both sides."""
    first = Relay()
    first.run()
    assert first.receiver.keys is not None
    code = _reconnect_code(first.receiver.keys)
    again = Relay(rendezvous=code, joiner_words="0" * 64)
    again.run()
    assert isinstance(again.receiver.error, WrongCodeError)
    assert again.sender.keys is None
    assert again.receiver.keys is None


def test_a_waiting_side_given_another_id_than_its_rendezvous_fails() -> None:
    first = Relay()
    first.run()
    assert first.receiver.keys is not None
    hs = Handshake(
        Role.RECEIVER, rendezvous=_reconnect_code(first.receiver.keys), connect_timeout=TIMEOUT
    )
    assert isinstance(only_error(hs.handle(Registered(WAITER_ID), 0.0)), SignalingError)


def test_reconnect_code_known_answer() -> None:
    """The rendezvous ID and password from a known secret: the page will derive the
    same (sfs/web/test/vectors.json, when it reconnects)."""
    rendezvous, password = reconnect_code(bytes(range(32)))
    assert len(rendezvous) == 27
    assert rendezvous[0] == "~"
    assert (rendezvous, password) == reconnect_code(bytes(range(32)))
    assert reconnect_code(bytes(32))[0] == "~ty6hnk4wprw5lmh2msfn4rdp3q"
    with pytest.raises(ValueError, match="cannot reconnect"):
        reconnect_code(b"")
