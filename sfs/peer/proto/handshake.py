"""The set-up of one sfs session, sans I/O: pairing, SPAKE2, sealed offer/answer.

One :class:`Handshake` per side.  It is fed events (from the signaling server, from
the peer connection, from the user) with the time ``now``, and answers with actions
for the glue in :mod:`sfs.setup` to carry out; it never waits, sleeps or touches a
socket, so every path below is a unit test (tests/unit/test_handshake.py).

Two flows, the same roles: the sender is always SPAKE2 side A and sends the SDP
offer; what differs is who shows the code and waits, and who types it and joins.

    waiting side (shows the code)       server       joining side (typed the code)
    register_peer -> peer ID, ICE                    register_peer -> ICE
    ShowCode(peer ID + new words)                    find_peer, send_connection_request
                   <- connection_request ------------
    accept_connection -------------------------------> connection_accepted
    send_public_key (SPAKE2)  <-----------------------> send_public_key (SPAKE2)
    sender:   offer {sealed}  ------------------------> receiver: opens it, answers
    sender:   opens the answer <----------------------- answer {sealed}
    both: ICE/DTLS/SCTP until the DataChannel opens, then leave the server

A sealed offer or answer that does not open means the two sides hold different
keys (a typo, a guess, a server in the middle): that side sends ``abort
wrong_code`` and stops.  The partner leaving or aborting ends the set-up at any
step; before the pairing, events of other peers are kept for later (a server may
reorder what it relays), after it they are dropped.

States::

    both:     IDLE -Registered->
    waiting:    AWAITING_REQUEST -ConnectionRequested-> AWAITING_KEY
                (AWAITING_REQUEST -ServerLost-> RECONNECTING -Registered-> AWAITING_REQUEST,
                 with a new code: the server forgot every peer ID)
    joining:    AWAITING_ACCEPT -ConnectionAccepted-> AWAITING_KEY
    sender:   AWAITING_KEY -PublicKeyReceived-> CREATING_OFFERS -LocalDescription->
              AWAITING_ANSWER -SealedReceived(answer)-> OPENING
    receiver: AWAITING_KEY -PublicKeyReceived-> AWAITING_OFFER -SealedReceived(offer)->
              ANSWERING -LocalDescription-> OPENING
    both:     OPENING -ChannelOpen-> DONE
              (OPENING -PartnerLeft-> PARTNER_LEFT -ChannelOpen-> DONE, or the grace
               timer -> FAILED: the partner leaves the server once its own side is open)
              any error, timeout or Cancelled -> FAILED

Each AWAITING_* state after the pairing (and AWAITING_ACCEPT) has a deadline of
``connect_timeout`` from when it was entered; :meth:`Handshake.next_deadline` says
when, :meth:`Handshake.handle_timer` fires it.  The SPAKE2 state and the code's
words are dropped as soon as the keys are derived, and the keys once handed over.
"""

from __future__ import annotations

import base64
import binascii
import enum
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sfs.code import Code, new_secret
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
from sfs.peer.proto.crypto import KeyExchange, SessionKeys, open_message, seal_message
from sfs.peer.proto.description import MAX_RELAY_URL_CHARS as MAX_RELAY_URL_CHARS
from sfs.peer.proto.description import MAX_TCP_ADDRESSES as MAX_TCP_ADDRESSES
from sfs.peer.proto.description import QUIC_VERSION as QUIC_VERSION
from sfs.peer.proto.description import RECONNECT_VERSION as RECONNECT_VERSION
from sfs.peer.proto.description import Description, decode_description, encode_description
from sfs.peer.proto.description import is_relay_url as is_relay_url
from sfs.peer.proto.framing import Role
from sfs.signal.messages import IceServer

logger = logging.getLogger(__name__)

#: The ``abort`` reason of a peer whose user pressed Ctrl-C during set-up.
CANCELLED_REASON = "cancelled"
WRONG_CODE_REASON = "wrong_code"
#: The ``abort`` reason of a side that found one side pairing and the other not.
PAIRING_REASON = "pairing_mismatch"
#: How long a channel may still take to open after the partner left the server.
PARTNER_GONE_GRACE_SECONDS = 5.0
#: Early events kept for a later step; a flood only ever costs this many.
BACKLOG_LIMIT = 64
#: ``--streams auto``: one stream up to this round trip (a LAN, a city)...
ONE_STREAM_ROUND_TRIP_SECONDS = 0.020
#: ...then one more per this much round trip, up to AUTO_MAX_STREAMS: one aiortc
#: association is window-bound to ~150 KiB per round trip, and on a 50 ms link 4
#: streams measured fastest (8 were slower: docs/PERFORMANCE.md, "striping").
SECONDS_PER_STREAM = 0.015
AUTO_MAX_STREAMS = 4


def streams_for(round_trip: float | None) -> int:
    """How many peer connections ``--streams auto`` stripes over, for a round trip
    (in seconds) through the signaling server; None (not measured) is one."""
    if round_trip is None or round_trip < ONE_STREAM_ROUND_TRIP_SECONDS:
        return 1
    return max(1, min(AUTO_MAX_STREAMS, math.ceil(round_trip / SECONDS_PER_STREAM)))


_LEFT_MESSAGE = "the other side left before the connection was set up"


# -- events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registered:
    """The server gave us a peer ID (register_peer's reply)."""

    peer_id: str
    ice_servers: tuple[IceServer, ...] = ()
    #: The relay this side will use (absolute ``http(s)://…/relay``), None for none: the
    #: server has none, LAN mode, or ``--relay never``.
    relay: str | None = None


@dataclass(frozen=True)
class ConnectionRequested:
    """Someone typed our code and asks for a connection (``connection_request``)."""

    peer_id: object


@dataclass(frozen=True)
class ConnectionAccepted:
    peer_id: object


@dataclass(frozen=True)
class PublicKeyReceived:
    """The partner's SPAKE2 message, base64 as the server relays it (unchecked)."""

    peer_id: object
    key: object


@dataclass(frozen=True)
class SealedReceived:
    """A sealed ``offer`` or ``answer``, base64 as the server relays it (unchecked)."""

    peer_id: object
    kind: str
    sealed: object


@dataclass(frozen=True)
class PartnerLeft:
    peer_id: object


@dataclass(frozen=True)
class PartnerAborted:
    peer_id: object
    reason: object


@dataclass(frozen=True)
class ServerLost:
    """The connection to the signaling server dropped."""


@dataclass(frozen=True)
class LocalDescription:
    """The peer connection made the offers (sender) or answers (receiver) asked for.

    :param tcp: the addresses this side listens on for a direct TCP connection
        (``"host:port"``); ``None`` when it takes no part in the direct path (not
        the same as an empty list: a side that cannot listen may still dial).
    """

    sdps: tuple[str, ...]
    tcp: tuple[str, ...] | None = None
    #: This side can carry the transfer over QUIC on the WebRTC path
    #: (:mod:`sfs.peer.transport.quic`); a receiver offers it only to a sender that did.
    quic: bool = False


@dataclass(frozen=True)
class ChannelOpen:
    """The DataChannel(s) opened."""


@dataclass(frozen=True)
class Cancelled:
    """The local user gave up (Ctrl-C)."""


SetupEvent = (
    Registered
    | ConnectionRequested
    | ConnectionAccepted
    | PublicKeyReceived
    | SealedReceived
    | PartnerLeft
    | PartnerAborted
    | ServerLost
    | LocalDescription
    | ChannelOpen
    | Cancelled
)


def signal_event(name: str, data: dict[str, object]) -> SetupEvent | None:
    """Turn one pushed signaling event into a handshake event; ``None`` for the ones
    set-up does not use (``peer_found``, ``ice_candidate``, anything unknown)."""
    peer_id = data.get("peer_id")
    if name == "connection_request":
        return ConnectionRequested(peer_id)
    if name == "connection_accepted":
        return ConnectionAccepted(peer_id)
    if name == "receive_public_key":
        return PublicKeyReceived(peer_id, data.get("key"))
    if name in ("offer", "answer"):
        return SealedReceived(peer_id, name, data.get("sealed"))
    if name == "peer_disconnected":
        return PartnerLeft(peer_id)
    if name == "peer_aborted":
        return PartnerAborted(peer_id, data.get("reason"))
    return None


# -- actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """A request to the signaling server.

    :param best_effort: the session ends either way; a refusal is not worth reporting.
    """

    event: str
    payload: dict[str, str] = field(hash=False)
    best_effort: bool = False


@dataclass(frozen=True)
class ShowCode:
    code: str


@dataclass(frozen=True)
class Status:
    message: str


@dataclass(frozen=True)
class Reconnect:
    """Connect to the server again (retrying a while), then feed a new :class:`Registered`."""


@dataclass(frozen=True)
class CreateOffers:
    """Make ``count`` peer connections (and, if wanted, listen for a direct TCP
    connection, proven with ``keys``) and feed the offers as :class:`LocalDescription`."""

    count: int
    ice_servers: tuple[IceServer, ...]
    keys: SessionKeys


@dataclass(frozen=True)
class AnswerOffers:
    """Make one peer connection per offer and feed the answers as :class:`LocalDescription`.

    :param tcp: the sender's direct TCP addresses, as it sealed them (unchecked
        strings); ``None`` when it takes no part in the direct path.
    """

    sdps: tuple[str, ...]
    ice_servers: tuple[IceServer, ...]
    keys: SessionKeys
    tcp: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AcceptAnswers:
    """:param tcp: the receiver's direct TCP addresses (as in :class:`AnswerOffers`)."""

    sdps: tuple[str, ...]
    tcp: tuple[str, ...] | None = None


@dataclass(frozen=True)
class OpenChannel:
    """Open the transport, then feed :class:`ChannelOpen`.

    :param direct: both descriptions carried TCP addresses: the sender chooses
        between TCP and the DataChannel and says which on it (sfs.peer.transport.tcp).
        Otherwise the DataChannel(s), as before the direct path existed.
    :param relay: the relay both sides offered to meet at: the receiver's, named in
        its sealed answer; None when either side offered none. Its connection runs
        the direct path's proof end to end, so it is one more candidate for the choice.
    """

    direct: bool = False
    relay: str | None = None
    #: Both sides offered QUIC: the sender may carry the transfer over QUIC on every
    #: peer connection's ICE path (striped), and says which channel it chose on them.
    quic: bool = False


@dataclass(frozen=True)
class Leave:
    """Leave the signaling server: the peers talk directly from now on."""


@dataclass(frozen=True)
class Done:
    keys: SessionKeys


@dataclass(frozen=True)
class Fail:
    """The set-up is over: raise ``error`` (after the actions before this one)."""

    error: SfsError


Action = (
    Call
    | ShowCode
    | Status
    | Reconnect
    | CreateOffers
    | AnswerOffers
    | AcceptAnswers
    | OpenChannel
    | Leave
    | Done
    | Fail
)


# -- the machine --------------------------------------------------------------------------


class SetupState(enum.Enum):
    IDLE = "idle"
    AWAITING_REQUEST = "awaiting_request"
    RECONNECTING = "reconnecting"
    AWAITING_ACCEPT = "awaiting_accept"
    AWAITING_KEY = "awaiting_key"
    CREATING_OFFERS = "creating_offers"
    AWAITING_ANSWER = "awaiting_answer"
    AWAITING_OFFER = "awaiting_offer"
    ANSWERING = "answering"
    OPENING = "opening"
    PARTNER_LEFT = "partner_left"
    DONE = "done"
    FAILED = "failed"


#: From the pairing on, the partner is told about a cancel or a wrong code.
_PAIRED = (
    SetupState.AWAITING_KEY,
    SetupState.CREATING_OFFERS,
    SetupState.AWAITING_ANSWER,
    SetupState.AWAITING_OFFER,
    SetupState.ANSWERING,
    SetupState.OPENING,
    SetupState.PARTNER_LEFT,
)
_OVER = (SetupState.DONE, SetupState.FAILED)
_LOCAL = (Registered, LocalDescription, ChannelOpen)


class Handshake:
    """One side's set-up.

    :param role: the sender is SPAKE2 side A and makes the offer, in both flows.
    :param code: the other side's code to join; ``None`` to register, show a new code
        and wait for whoever types it.
    :param connect_timeout: how long each step of the other side may take.
    :param ice_servers: STUN/TURN servers to use; ``None`` for the server's.
    :param streams: peer connections the sender offers (the receiver answers as many);
        ``None`` picks them from the round trip measured during set-up
        (:func:`streams_for`): the sender's request to the partner's accept when it
        joins, its accept to the partner's SPAKE2 message when it waits. Both go
        through the server, so this is the partner's round trip via the server.
    :param new_words: where a waiting side's secret words come from (tests pass their own).
    """

    def __init__(
        self,
        role: Role,
        *,
        code: Code | None = None,
        rendezvous: Code | None = None,
        connect_timeout: float,
        ice_servers: tuple[IceServer, ...] | None = None,
        streams: int | None = 1,
        new_words: Callable[[], str] = new_secret,
        reconnects: bool = False,
        pairing: str | None = None,
    ) -> None:
        if streams is not None and not 1 <= streams <= MAX_STREAMS:
            raise ValueError(f"streams must be 1 to {MAX_STREAMS}, not {streams}")
        if code is not None and rendezvous is not None:
            raise ValueError("a side joins with a code or waits at a rendezvous, not both")
        self.role = role
        self.waits = code is None
        self._reconnects = reconnects
        self._peer_reconnects = False
        # `sfs pair`: this side's name, sealed; the other side's, once opened.
        self._pairing = pairing
        #: The name the other side gave itself in a pairing session (`sfs pair`).
        self.peer_pair_name: str | None = None
        self._was_paired = False
        # A session meeting again after its connection broke: this waiting side
        # registers under the rendezvous ID and shows no code (crypto.reconnect_code).
        self._rendezvous = rendezvous
        self.connect_timeout = connect_timeout
        self._ice_override = ice_servers
        self._server_ice: tuple[IceServer, ...] = ()
        self._streams = streams
        self._new_words = new_words
        # The joining side knows its partner from the code; the waiting side learns it
        # from the first connection_request.
        self._partner: str | None = None if code is None else code.peer_id
        self._code = code
        self._exchange: KeyExchange | None = None
        self._keys: SessionKeys | None = None
        # The direct TCP addresses of each side's sealed description (None: none).
        self._own_tcp: tuple[str, ...] | None = None
        self._peer_tcp: tuple[str, ...] | None = None
        # The relay this side offers (from the server, on registration) and the
        # other side's, from its sealed description.
        self._own_relay: str | None = None
        self._peer_relay: str | None = None
        # Whether each side's sealed description offered QUIC.
        self._own_quic = False
        self._peer_quic = False
        self._backlog: deque[SetupEvent] = deque(maxlen=BACKLOG_LIMIT)
        self._asked_at: float | None = None
        #: The partner's round trip through the server, once measured (seconds).
        self.round_trip: float | None = None
        self._deadline: float | None = None
        self._state = SetupState.IDLE

    @property
    def state(self) -> SetupState:
        return self._state

    @property
    def partner(self) -> str | None:
        return self._partner

    @property
    def paired(self) -> bool:
        """A partner has been paired with (so a Ctrl-C from now on tells it, through
        the server); stays true after the set-up ends."""
        return self._was_paired

    def withhold_reconnect(self) -> None:
        """Do not offer to meet again: the server will not take this session back (an
        older ``sfs serve``). Before the description is sealed."""
        self._reconnects = False

    @property
    def can_reconnect(self) -> bool:
        """Both sides said they keep the session after an outage (``reconnect``)."""
        return self._reconnects and self._peer_reconnects

    @property
    def rendezvous(self) -> str | None:
        """The peer ID this waiting side registers under, if it is meeting again."""
        return None if self._rendezvous is None else self._rendezvous.peer_id

    def _set_state(self, state: SetupState, *, deadline: float | None = None) -> None:
        logger.debug("handshake %s: %s -> %s", self.role.value, self._state.name, state.name)
        self._state = state
        if state in _PAIRED:
            self._was_paired = True
        self._deadline = deadline
        if state in _OVER:
            # Nothing secret outlives the set-up (tests/integration/test_secrets.py).
            self._code = None
            self._rendezvous = None
            self._exchange = None
            self._keys = None
            self._backlog.clear()

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must be called, if the current step can time out."""
        return self._deadline

    def prepare(self) -> None:
        """Work ahead while the glue would only wait: compute this side's SPAKE2
        message as soon as its code is known (the waiting side: once the code is
        shown; the joining side: once its request is out), not when the partner
        pairs.  Each message costs tens of milliseconds of CPU; computed on pairing,
        both sides' came one after the other on the set-up's critical path.

        Changes nothing that is sent, nor when: the message goes out at the same step
        as before, it is only ready.  Still one exchange per code: the one prepared
        is the one used, once.  Call it whenever there is nothing else to do.
        """
        if (
            self._exchange is None
            and self._code is not None
            and self._state in (SetupState.AWAITING_REQUEST, SetupState.AWAITING_ACCEPT)
        ):
            self._new_exchange()

    def handle_timer(self, now: float) -> list[Action]:
        """Fire the deadline if it has passed."""
        if self._deadline is None or now < self._deadline:
            return []
        if self._state is SetupState.PARTNER_LEFT:
            return self._fail(PeerGoneError(_LEFT_MESSAGE))
        message = f"the other side did not answer within {self.connect_timeout:.0f} s"
        if self._state is SetupState.AWAITING_ANSWER:
            # Whoever holds our sealed offer can test one guess of the words against it
            # offline; a server that plays the receiver then says nothing. Retrying the
            # same code would hand it another guess.
            message += (
                "; this code has had its one try: ask the receiver for a new code "
                "(a new `sfs receive`) instead of retrying it"
            )
        return self._fail(SignalingError(message))

    def handle(self, event: SetupEvent, now: float) -> list[Action]:
        """Take one event; return what to do, in order.

        Events from the server never raise (a bad one ends in :class:`Fail`); local
        events the state does not expect are the glue's bug and raise ``ValueError``.
        """
        if self._state in _OVER:
            if isinstance(event, _LOCAL):
                raise ValueError(f"{type(event).__name__} after the handshake is over")
            return []
        if isinstance(event, Cancelled):
            return self._cancel()
        if isinstance(event, _LOCAL):
            return self._local(event, now)
        return self._remote(event, now)

    # -- local events ---------------------------------------------------------------------

    def _local(
        self, event: Registered | LocalDescription | ChannelOpen, now: float
    ) -> list[Action]:
        if isinstance(event, Registered) and self._state in (
            SetupState.IDLE,
            SetupState.RECONNECTING,
        ):
            return self._registered(event, now)
        if isinstance(event, LocalDescription) and self._state is SetupState.CREATING_OFFERS:
            self._own_tcp = event.tcp
            self._own_quic = event.quic
            call = self._sealed_call(
                "offer", event.sdps, event.tcp, self._own_relay, quic=event.quic
            )
            self._set_state(SetupState.AWAITING_ANSWER, deadline=now + self.connect_timeout)
            return [call, *self._from_backlog(now)]
        if isinstance(event, LocalDescription) and self._state is SetupState.ANSWERING:
            # The pair meets at the receiver's relay, offered only to a sender that
            # offered one (an older sfs would not know the key).
            relay = self._own_relay if self._peer_relay is not None else None
            quic = event.quic and self._peer_quic
            call = self._sealed_call("answer", event.sdps, event.tcp, relay, quic=quic)
            self._set_state(SetupState.OPENING)
            direct = event.tcp is not None and self._peer_tcp is not None
            return [call, OpenChannel(direct, relay, quic)]
        if isinstance(event, ChannelOpen) and self._state in (
            SetupState.OPENING,
            SetupState.PARTNER_LEFT,
        ):
            keys = self._keys
            assert keys is not None
            self._set_state(SetupState.DONE)
            return [Leave(), Done(keys)]
        raise ValueError(f"{type(event).__name__} in state {self._state.name}")

    def _registered(self, event: Registered, now: float) -> list[Action]:
        self._server_ice = event.ice_servers
        self._own_relay = event.relay
        if not self.waits:
            assert self._partner is not None
            payload = {"peer_id": self._partner}
            self._asked_at = now
            self._set_state(SetupState.AWAITING_ACCEPT, deadline=now + self.connect_timeout)
            return [
                Call("find_peer", payload),
                Call("send_connection_request", payload),
                Status(f"Connecting to {self._partner}…"),
                *self._from_backlog(now),
            ]
        reconnected = self._state is SetupState.RECONNECTING
        if self._rendezvous is not None:
            if event.peer_id != self._rendezvous.peer_id:
                return self._fail(SignalingError("the signaling server gave another rendezvous"))
            self._code = self._rendezvous
            self._exchange = None
            self._set_state(SetupState.AWAITING_REQUEST)
            return [Status("Waiting for the other side to come back…"), *self._from_backlog(now)]
        self._code = Code(event.peer_id, self._new_words())
        self._exchange = None  # one prepared for the old code, which is dead
        self._set_state(SetupState.AWAITING_REQUEST)
        actions: list[Action] = []
        if reconnected:
            actions.append(Status("Reconnected. The old code no longer works; use this one:"))
        actions.append(ShowCode(str(self._code)))
        return actions + self._from_backlog(now)

    def _cancel(self) -> list[Action]:
        actions: list[Action] = []
        if self._state in _PAIRED:
            # There is no channel yet to carry a CANCEL: only the server can tell the
            # partner at once, so that it does not wait out a timeout.
            actions.append(self._abort_call(CANCELLED_REASON))
        self._set_state(SetupState.FAILED)
        return actions

    # -- server events --------------------------------------------------------------------

    def _remote(self, event: SetupEvent, now: float) -> list[Action]:
        if isinstance(event, ServerLost):
            if self._state is SetupState.AWAITING_REQUEST:
                # The server forgot every peer ID when it went away: come back with a
                # new code rather than wait for a peer that can no longer find us.
                self._set_state(SetupState.RECONNECTING)
                return [Status("Lost the signaling server; reconnecting…"), Reconnect()]
            if self._state in (SetupState.OPENING, SetupState.PARTNER_LEFT):
                return []  # the peers no longer need the server
            return self._fail(ServerLostError())
        peer_id = getattr(event, "peer_id", None)
        if self._partner is None:
            # Not paired yet: only a request pairs; keep the rest for when one does.
            if (
                isinstance(event, ConnectionRequested)
                and self._state is SetupState.AWAITING_REQUEST
            ):
                return self._requested(event, now)
            if isinstance(event, PublicKeyReceived | SealedReceived | ConnectionAccepted):
                self._backlog.append(event)
            return []
        if peer_id != self._partner:
            logger.debug("ignoring %s not from our partner", type(event).__name__)
            return []
        if isinstance(event, PartnerLeft):
            if self._state is SetupState.OPENING:
                # The partner leaves the server as soon as its side of the channel is
                # open, which on a long link is a round trip before ours: only a
                # channel that then stays shut means the partner is really gone.
                self._set_state(SetupState.PARTNER_LEFT, deadline=now + PARTNER_GONE_GRACE_SECONDS)
                return []
            if self._state is SetupState.PARTNER_LEFT:
                return []
            return self._fail(PeerGoneError(_LEFT_MESSAGE))
        if isinstance(event, PartnerAborted):
            if self._state is SetupState.PARTNER_LEFT:
                return []
            return self._fail(_abort_error(event.reason, pairing=self._pairing is not None))
        if self._expects(event):
            return self._step(event, now)
        if isinstance(event, PublicKeyReceived | SealedReceived | ConnectionAccepted):
            self._backlog.append(event)  # maybe early: a server may reorder what it relays
        return []

    def _expects(self, event: SetupEvent) -> bool:
        state = self._state
        if isinstance(event, ConnectionAccepted):
            return state is SetupState.AWAITING_ACCEPT
        if isinstance(event, PublicKeyReceived):
            return state is SetupState.AWAITING_KEY
        if isinstance(event, SealedReceived):
            return (event.kind == "answer" and state is SetupState.AWAITING_ANSWER) or (
                event.kind == "offer" and state is SetupState.AWAITING_OFFER
            )
        return False

    def _from_backlog(self, now: float) -> list[Action]:
        """Take the first kept event the new state was waiting for, if any."""
        if self._partner is None:
            return []
        for event in list(self._backlog):
            if getattr(event, "peer_id", None) == self._partner and self._expects(event):
                self._backlog.remove(event)
                return self._step(event, now)
        return []

    def _requested(self, event: ConnectionRequested, now: float) -> list[Action]:
        if not isinstance(event.peer_id, str):
            return self._fail(SignalingError("the signaling server sent a message without peer_id"))
        # One peer only: the first request takes this code's single attempt.
        self._partner = event.peer_id
        self._asked_at = now
        return [Call("accept_connection", {"peer_id": self._partner}), *self._start_keys(now)]

    def _step(self, event: SetupEvent, now: float) -> list[Action]:
        if isinstance(event, ConnectionAccepted | PublicKeyReceived) and self._asked_at is not None:
            # The first answer to our request (joining) or accept (waiting).
            self.round_trip = now - self._asked_at
            self._asked_at = None
        if isinstance(event, ConnectionAccepted):
            return self._start_keys(now)
        if isinstance(event, PublicKeyReceived):
            return self._finish_keys(event, now)
        assert isinstance(event, SealedReceived)
        if self.role is Role.SENDER:
            return self._answered(event)
        return self._offered(event)

    def _start_keys(self, now: float) -> list[Action]:
        assert self._partner is not None
        if self._exchange is None:  # not prepared ahead
            self._new_exchange()
        assert self._exchange is not None
        key = base64.b64encode(self._exchange.message).decode("ascii")
        self._set_state(SetupState.AWAITING_KEY, deadline=now + self.connect_timeout)
        return [
            Call("send_public_key", {"peer_id": self._partner, "key": key}),
            *self._from_backlog(now),
        ]

    def _new_exchange(self) -> None:
        code = self._code
        assert code is not None
        # The code's peer ID is the side that printed it; the exchange binds both.
        printed_by = self.role if self.waits else _other(self.role)
        self._exchange = KeyExchange(
            role=self.role.value,
            password=code.secret.encode(),
            code_id=code.peer_id,
            printed_by=printed_by.value,
        )
        self._code = None  # the words live on in the SPAKE2 state only, until finish()

    def _finish_keys(self, event: PublicKeyReceived, now: float) -> list[Action]:
        exchange, self._exchange = self._exchange, None  # one attempt, pass or fail
        assert exchange is not None
        try:
            message = _b64(event.key, "key")
            self._keys = exchange.finish(message)
        except WrongCodeError as exc:
            return self._wrong_code(exc)
        except SignalingError as exc:
            return self._fail(exc)
        finally:
            del exchange  # a traceback keeps this frame, and so its locals, alive
        if self.role is Role.SENDER:
            self._set_state(SetupState.CREATING_OFFERS)
            streams = self._streams or streams_for(self.round_trip)
            return [CreateOffers(streams, self._ice(), self._keys)]
        self._set_state(SetupState.AWAITING_OFFER, deadline=now + self.connect_timeout)
        return self._from_backlog(now)

    def _offered(self, event: SealedReceived) -> list[Action]:
        # If the offer does not open, this code has had its one try: tell the sender, end.
        try:
            sdps, self._peer_tcp, self._peer_relay, self._peer_quic = self._open(event)
        except WrongCodeError as exc:
            return self._wrong_code(exc)
        except PairingMismatchError as exc:
            return [self._abort_call(PAIRING_REASON), *self._fail(exc)]
        except SignalingError as exc:
            return self._fail(exc)
        self._set_state(SetupState.ANSWERING)
        assert self._keys is not None
        return [AnswerOffers(sdps, self._ice(), self._keys, self._peer_tcp)]

    def _answered(self, event: SealedReceived) -> list[Action]:
        try:
            sdps, self._peer_tcp, self._peer_relay, self._peer_quic = self._open(event)
        except WrongCodeError as exc:
            return self._wrong_code(exc)
        except PairingMismatchError as exc:
            return [self._abort_call(PAIRING_REASON), *self._fail(exc)]
        except SignalingError as exc:
            return self._fail(exc)
        self._set_state(SetupState.OPENING)
        direct = self._own_tcp is not None and self._peer_tcp is not None
        relay = self._peer_relay if self._own_relay is not None else None
        quic = self._own_quic and self._peer_quic
        return [AcceptAnswers(sdps, self._peer_tcp), OpenChannel(direct, relay, quic)]

    def _ice(self) -> tuple[IceServer, ...]:
        return self._server_ice if self._ice_override is None else self._ice_override

    # -- sealed offer/answer --------------------------------------------------------------

    def _sealed_call(
        self,
        kind: str,
        sdps: tuple[str, ...],
        tcp: tuple[str, ...] | None,
        relay: str | None,
        *,
        quic: bool = False,
    ) -> Call:
        """Seal this side's session description (:mod:`sfs.peer.proto.description`)."""
        assert self._keys is not None
        assert self._partner is not None
        description = Description(
            sdps, tcp, relay, quic=quic, reconnect=self._reconnects, pair=self._pairing
        )
        plaintext = encode_description(kind, description)
        sealed = seal_message(key=self._keys.signal_send, kind=kind, plaintext=plaintext)
        return Call(kind, {"peer_id": self._partner, "sealed": base64.b64encode(sealed).decode()})

    def _open(
        self, event: SealedReceived
    ) -> tuple[tuple[str, ...], tuple[str, ...] | None, str | None, bool]:
        assert self._keys is not None
        sealed = _b64(event.sealed, "sealed")
        plaintext = open_message(key=self._keys.signal_receive, kind=event.kind, sealed=sealed)
        description = decode_description(event.kind, plaintext)
        if self._pairing is not None and description.pair is None:
            raise PairingMismatchError(
                "the other side is not pairing (it ran sfs send or sfs receive, or an sfs "
                "without `sfs pair`): both devices run sfs pair"
            )
        if self._pairing is None and description.pair is not None:
            raise PairingMismatchError(
                "the other side is pairing, not transferring: to pair with it, run "
                "`sfs pair CODE` (with its code)"
            )
        self._peer_reconnects = description.reconnect
        self.peer_pair_name = description.pair
        return description.sdps, description.tcp, description.relay, description.quic

    # -- endings --------------------------------------------------------------------------

    def _abort_call(self, reason: str) -> Call:
        assert self._partner is not None
        return Call("abort", {"peer_id": self._partner, "reason": reason}, best_effort=True)

    def _wrong_code(self, error: WrongCodeError) -> list[Action]:
        """Tell the partner the code did not match (best effort: we stop either way)."""
        call = self._abort_call(WRONG_CODE_REASON)
        return [call, *self._fail(error)]

    def _fail(self, error: SfsError) -> list[Action]:
        self._set_state(SetupState.FAILED)
        return [Fail(error)]


def _other(role: Role) -> Role:
    return Role.RECEIVER if role is Role.SENDER else Role.SENDER


def _abort_error(reason: object, *, pairing: bool) -> SfsError:
    if reason == WRONG_CODE_REASON:
        return WrongCodeError()
    if reason == PAIRING_REASON:
        return PairingMismatchError(
            "the other side is not pairing: both devices run sfs pair"
            if pairing
            else "the other side is pairing, not transferring: to pair with it, run "
            "`sfs pair CODE` (with its code)"
        )
    if reason == CANCELLED_REASON:
        return CancelledByPeerError(
            "the other side was cancelled by its user before the connection was set up"
        )
    return PeerGoneError("the other side gave up before the connection was set up")


def _b64(value: object, key: str) -> bytes:
    if not isinstance(value, str):
        raise SignalingError(f"the signaling server sent a message without {key}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignalingError(f"the signaling server sent a malformed {key}") from None
