"""Where the signaling server keeps its peers: the :class:`Registry` interface.

The server (sfs/signal/server.py) checks payloads and moves messages; every decision
about peer IDs, connection requests and pairings is the registry's.  Two registries
implement this interface:

- :class:`~sfs.signal.memory_registry.MemoryRegistry`: one process, everything in a
  :class:`~sfs.signal.memory_registry.PeerTable` in memory (no I/O).  The default, and
  what LAN mode's embedded server uses.
- :class:`~sfs.signal.redis_registry.RedisRegistry`: several ``sfs serve`` nodes share
  their peers through Redis (``sfs serve --redis URL``); each change is one atomic Lua
  script, and python-socketio's ``AsyncRedisManager`` carries emits between the nodes.

What a registry knows about a connection comes in two parts.  The *local* part is the
same in both and never does I/O: the connections of this process, their addresses,
their peer IDs, the lookups each has made and the clock that makes them register in
time.  The *shared* part is where they differ: which peer IDs are taken, who asked
whom for a connection and who is paired with whom, the lookups made from each
address, and the clocks of pending requests and pairings.  Those methods are
coroutines, and a registry that cannot reach its store raises
:class:`RegistryUnavailable` from them (a :class:`Rejected`: the client is told, the
server stays up).

A node's sids are opaque Socket.IO session IDs.  A :class:`Delivery` may name a sid on
another node: emitting to it is the client manager's business
(:meth:`Registry.client_manager`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from sfs.signal import messages as m
from sfs.signal.addresses import address_key as address_key
from sfs.signal.addresses import is_loopback as is_loopback

if TYPE_CHECKING:
    from sfs.signal.config import ServerConfig

# How often register tries a random ID before giving up; with at most
# max_connections live out of 17.6 million IDs, a dozen collisions in a row
# means something is wrong.
MAX_PEER_ID_ATTEMPTS = 50
# The reason metrics give a request refused because the registry was unreachable.
UNAVAILABLE_REASON = "registry_unavailable"


class Rejected(Exception):
    """The server refuses a client's request; *code* is one of the messages error codes.

    :param reason: what metrics count it as (the code, unless said otherwise)
    """

    def __init__(self, code: str, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or code


class RegistryUnavailable(Rejected):
    """The registry's store (Redis) did not answer: the request is refused, nothing
    changed on this node, and the client may try again."""

    def __init__(self) -> None:
        # server_full is the code clients already know for "no peer ID now, try
        # later"; the message says why.
        super().__init__(
            m.SERVER_FULL,
            "the server cannot reach its registry (Redis) just now; try again in a moment",
            reason=UNAVAILABLE_REASON,
        )


# Every refusal both registries make, by name: (error code, message).  {peer_id} is
# the peer the request named (a valid peer ID: the payload was checked).
_REFUSALS: dict[str, tuple[str, str]] = {
    "already_registered": (m.ALREADY_REGISTERED, "already registered as {peer_id}"),
    "no_free_id": (m.SERVER_FULL, "no free peer ID, try again later"),
    "not_registered": (m.NOT_REGISTERED, "register_peer first"),
    "busy_self": (m.BUSY, "you already have a connection or a pending request"),
    "no_request": (m.UNKNOWN_PEER, "no pending connection request from {peer_id}"),
    "not_paired": (m.NOT_PAIRED, "you are not paired with {peer_id}"),
    "connection_lookups": (m.RATE_LIMITED, "too many lookups on this connection"),
    "address_lookups": (m.RATE_LIMITED, "too many lookups from your address, wait a minute"),
    "unknown_peer": (m.UNKNOWN_PEER, "no peer {peer_id}"),
    "self": (m.INVALID, "that is your own peer ID"),
    "busy_target": (m.BUSY, "{peer_id} is busy with another peer"),
    "rendezvous_taken": (m.BUSY, "another connection holds that rendezvous"),
    "used_up": (m.USED_UP, "{peer_id} has served every receiver its sender allowed"),
    "many_requests": (m.INVALID, "a peer that serves several (many) cannot ask for a connection"),
}
REFUSALS = frozenset(_REFUSALS)


def refusal(name: str, peer_id: str = "") -> Rejected:
    """The :class:`Rejected` for refusal *name* (one of :data:`REFUSALS`)."""
    code, template = _REFUSALS[name]
    return Rejected(code, template.format(peer_id=peer_id))


class Standing(Enum):
    """Where a peer stands with respect to one other peer."""

    FREE = "free"
    REQUESTING = "requesting"  # sent a connection request, waiting for accept
    REQUESTED = "requested"  # received a connection request, not yet accepted
    PAIRED = "paired"


@dataclass(frozen=True)
class Delivery:
    """Deliver to *to_sid* a message that names its sender as *from_peer_id*."""

    to_sid: str
    from_peer_id: str


@dataclass(frozen=True)
class Departure:
    """A peer that is gone, and whom to tell.

    :param peer_id: the leaving peer's ID, or None if it never registered
    :param notify_sid: its partner or pending counterpart, to be told it is gone
    :param also: a peer that served several (``register_peer`` ``many``): the rest
        of its partners and pending counterparts, to be told too
    """

    peer_id: str | None
    notify_sid: str | None
    also: tuple[str, ...] = ()

    @property
    def told(self) -> tuple[str, ...]:
        """Every sid to tell that the peer is gone."""
        return self.also if self.notify_sid is None else (self.notify_sid, *self.also)


@dataclass(frozen=True)
class Expiry:
    """What :meth:`Registry.expire` found overdue in the shared state.

    :param stalled: this node's connections whose request or pairing has not ended
        within the pairing timeout: drop them (each named once)
    :param lost: this node's connections whose peer ID the registry no longer holds
        (its store lost it, or it expired while the store was unreachable): drop them
    :param departed: peers that left without this node hearing it (their node died,
        or the store was unreachable when they left), with their partners to tell
    """

    stalled: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    departed: list[Departure] = field(default_factory=list)


_K = TypeVar("_K", bound=Hashable)


class Deadlines(Generic[_K]):
    """Keys that expire *timeout_seconds* after they were started (no I/O).

    All keys share one timeout, so insertion order is deadline order: a dict is
    the queue, and :meth:`expired` costs only what has expired.

    :param timeout_seconds: time from :meth:`start` to expiry
    """

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self._due: dict[_K, float] = {}

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def start(self, key: _K, *, now: float) -> None:
        """(Re)start *key*'s clock."""
        self._due.pop(key, None)  # a restarted key goes to the back
        self._due[key] = now + self.timeout_seconds

    def cancel(self, key: _K) -> None:
        self._due.pop(key, None)

    def expired(self, *, now: float) -> list[_K]:
        """Remove and return the keys whose deadline is *now* or earlier, oldest first."""
        out: list[_K] = []
        for key, due in self._due.items():
            if due > now:
                break
            out.append(key)
        for key in out:
            del self._due[key]
        return out


@dataclass
class Connection:
    """One Socket.IO connection of this node, as a registry keeps it."""

    sid: str
    address: str
    address_key: str
    peer_id: str | None = None
    lookups: int = 0  # find_peer and send_connection_request attempts so far


_C = TypeVar("_C", bound=Connection)


class ConnectionBook(Generic[_C]):
    """The local part of a registry (no I/O): this node's connections, their peer
    IDs, and the clock that makes each register in time.

    :param config: the limits to enforce
    :param make: builds the record of a new connection from its sid, address and
        :func:`address_key`
    """

    def __init__(self, config: ServerConfig, make: Callable[[str, str, str], _C]) -> None:
        self.config = config
        self._make = make
        self._connections: dict[str, _C] = {}
        self._sid_by_peer_id: dict[str, str] = {}
        self._unregistered: Deadlines[str] = Deadlines(config.register_timeout_seconds)
        # Only where the config asks (LAN mode's embedded server, where only the local
        # waiting side has reason to wait): connections from other machines that
        # have not asked for a connection in time.
        self._idle: Deadlines[str] | None = (
            None if config.request_timeout_seconds is None
            else Deadlines(config.request_timeout_seconds)
        )  # fmt: skip

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def is_connected(self, sid: str) -> bool:
        return sid in self._connections

    def address_of(self, sid: str) -> str:
        return self._connections[sid].address

    def peer_id_of(self, sid: str) -> str | None:
        conn = self._connections.get(sid)
        return conn.peer_id if conn else None

    def connect(self, sid: str, address: str, *, now: float) -> bool:
        """Admit a new connection; False when this node is full."""
        if len(self._connections) >= self.config.max_connections:
            return False
        self._connections[sid] = self._make(sid, address, address_key(address))
        self._unregistered.start(sid, now=now)
        if self._idle is not None and not is_loopback(address):
            self._idle.start(sid, now=now)
        return True

    def overdue_registrations(self, *, now: float) -> list[str]:
        """Connections that have not registered in time, or (``request_timeout_seconds``)
        have not asked for a connection in time (each named once)."""
        overdue = self._unregistered.expired(now=now)
        if self._idle is not None:
            overdue += [sid for sid in self._idle.expired(now=now) if sid not in overdue]
        return overdue

    def _progressed(self, sid: str) -> None:
        """*sid* asked for a connection: it is no longer idle."""
        if self._idle is not None:
            self._idle.cancel(sid)

    def _not_yet_registered(self, sid: str) -> _C:
        conn = self._connections[sid]
        if conn.peer_id is not None:
            raise refusal("already_registered", conn.peer_id)
        return conn

    def _set_peer_id(self, conn: _C, peer_id: str) -> None:
        conn.peer_id = peer_id
        self._sid_by_peer_id[peer_id] = conn.sid
        self._unregistered.cancel(conn.sid)

    def _forget(self, sid: str) -> _C | None:
        """Drop *sid* from the book; its record, or None if it was unknown."""
        conn = self._connections.pop(sid, None)
        if conn is None:
            return None
        self._unregistered.cancel(sid)
        self._progressed(sid)
        if conn.peer_id is not None:
            del self._sid_by_peer_id[conn.peer_id]
        return conn

    def _registered(self, sid: str) -> _C:
        conn = self._connections[sid]
        if conn.peer_id is None:
            raise refusal("not_registered")
        return conn

    @staticmethod
    def _id(conn: Connection) -> str:
        assert conn.peer_id is not None  # only registered peers get this far
        return conn.peer_id


class OwnRoomsOnly:
    """A python-socketio client manager without its scan of every room per disconnect.

    Mixed in before the manager class.  The stock ``basic_disconnect`` looks for the
    leaving client in every room of the namespace, and every client has a room of
    its own, so each disconnect costs O(clients) and all of them leaving
    O(clients**2): 0.7 ms of event loop per disconnect and 3.9 s of CPU for all of
    them at 10 000 clients (scripts/load, docs/PERFORMANCE.md).  sfs puts a client in
    no room but the two python-socketio gives it, the namespace's (``None``) and its
    own, so only those are left.
    """

    rooms: dict[str, dict[str | None, dict[str, str]]]
    callbacks: dict[str, object]
    pending_connect: dict[str, set[str]]
    pending_disconnect: dict[str, set[str]]

    def basic_enter_room(
        self, sid: str, namespace: str, room: str | None, eio_sid: str | None = None
    ) -> None:
        if room is not None and room != sid:  # basic_disconnect would miss it
            raise ValueError("sfs puts clients in no rooms")
        cast(Any, super()).basic_enter_room(sid, namespace, room, eio_sid=eio_sid)

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: object) -> None:
        # The rest is what python-socketio 5's basic_disconnect does.
        if namespace not in self.rooms:
            return
        for room in (sid, None):
            cast(Any, self).basic_leave_room(sid, namespace, room)  # no-op where it is not in
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]


#: Called by a client manager before it delivers an emit that came from another
#: node to a client of this one: False if the client was dropped instead (it left
#: too much unread).
DeliveryCheck = Callable[[str], Awaitable[bool]]


class Registry(ABC):
    """Peer IDs, connection requests and pairings, for one signaling node.

    Methods raise :class:`Rejected` and change nothing when they refuse.  Time comes
    in as *now* (the event loop's monotonic seconds) for this node's own clocks; a
    registry shared by several nodes keeps its shared clocks by its store's time.
    A connection must register within ``register_timeout_seconds`` of connecting,
    and a request or pairing must end within ``pairing_timeout_seconds``.
    """

    #: File descriptors the registry may open once the server runs (connections to
    #: its store), which the server keeps out of what clients may use.
    descriptors = 0

    # ------------------------------------------------------------------ set-up

    @abstractmethod
    def client_manager(self, *, check_delivery: DeliveryCheck) -> Any:
        """The python-socketio client manager for the server: how an emit reaches a
        sid, wherever its node is.  *check_delivery* runs before an emit from another
        node is delivered here."""

    async def start(self) -> None:
        """Connect to the store (once the server's event loop runs).

        :raises sfs.errors.RegistryUnreachableError: when it cannot.
        """
        return None  # the in-memory registry has nothing to connect to

    async def close(self) -> None:
        """Let go of the store (after every connection of this node has left)."""
        return None

    def describe(self) -> str:
        """Where the registry keeps its peers, for the log (no secrets)."""
        return "in memory"

    # ------------------------------------------------------------------ local (no I/O)

    @abstractmethod
    def connect(self, sid: str, address: str, *, now: float) -> bool:
        """Admit a new connection; False when this node is full."""

    @abstractmethod
    def is_connected(self, sid: str) -> bool: ...

    @abstractmethod
    def address_of(self, sid: str) -> str: ...

    @abstractmethod
    def peer_id_of(self, sid: str) -> str | None:
        """The peer ID of this node's connection *sid*, if it registered."""

    @abstractmethod
    def overdue_registrations(self, *, now: float) -> list[str]:
        """Connections that have not registered in time (each named once)."""

    @property
    @abstractmethod
    def connection_count(self) -> int: ...

    # ------------------------------------------------------------------ shared

    @abstractmethod
    async def register(self, sid: str, rendezvous: str | None = None, many: int = 0) -> str:
        """Give *sid* a peer ID that no live peer has, on any node: *rendezvous* if
        given (a session meeting again; refused while another connection has it).

        :param many: (``sfs send --many``) this peer may be asked for a connection
            by up to *many* peers in all, each its own pairing, at once or in turn;
            0 is the usual one request, one partner at a time."""

    @abstractmethod
    async def disconnect(self, sid: str) -> Departure | None:
        """Forget *sid*, its request and its pairing; None if it was unknown.

        Never raises: a registry that cannot reach its store now forgets the
        connection here and the rest later (:attr:`Expiry.departed`).
        """

    @abstractmethod
    async def find(self, sid: str, peer_id: str, *, now: float) -> None:
        """Check that *peer_id* is there and free to be asked (a rate-limited lookup)."""

    @abstractmethod
    async def request(self, sid: str, peer_id: str, *, now: float) -> Delivery:
        """Record a connection request from *sid* to *peer_id* (a lookup too): of
        two requests for one peer, exactly one wins."""

    @abstractmethod
    async def accept(self, sid: str, peer_id: str) -> Delivery:
        """Pair *sid* with *peer_id*, which must have asked *sid* for a connection."""

    @abstractmethod
    async def relay(self, sid: str, peer_id: str) -> Delivery:
        """Route a message from *sid* to *peer_id*, which must be its partner."""

    @abstractmethod
    async def abort(self, sid: str, peer_id: str) -> Delivery:
        """Like :meth:`relay`, then dissolve the pairing: nothing more may pass."""

    @abstractmethod
    async def expire(self, *, now: float) -> Expiry:
        """What has run out in the shared state since the last call (see :class:`Expiry`)."""

    @abstractmethod
    async def stats(self) -> dict[str, int]:
        """Counts only (what ``GET /stats`` serves): never an ID or an address.

        ``connections`` and ``peers`` count this node's; ``pending`` (connection
        requests not yet accepted) and ``pairs`` count those whose requester is on
        this node, so that the sums over all nodes are the totals.  Never raises:
        when the store does not answer, ``pending`` and ``pairs`` are left out.
        """
