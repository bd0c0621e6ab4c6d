"""The in-memory registry: one process's peers in a :class:`PeerTable` (no I/O).

The default of ``sfs serve``, and what LAN mode's embedded server uses.
:class:`MemoryRegistry` is the :class:`~sfs.signal.registry.Registry` face of a
:class:`PeerTable`, whose methods are plain functions of its state and *now*, and
are unit tested on their own (tests/unit/test_peer_table.py, test_messages.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import socketio

from sfs.signal import messages as m
from sfs.signal.registry import (
    MAX_PEER_ID_ATTEMPTS,
    Connection,
    ConnectionBook,
    Deadlines,
    Delivery,
    DeliveryCheck,
    Departure,
    Expiry,
    OwnRoomsOnly,
    Registry,
    Standing,
    refusal,
)

if TYPE_CHECKING:
    from sfs.signal.config import ServerConfig


@dataclass
class _Connection(Connection):
    standing: Standing = Standing.FREE
    other_sid: str | None = None  # the counterpart of any link but FREE
    # A peer that serves several (register_peer "many", `sfs send --many`): how many
    # may ask it in all, how many have, and its links (each asker's sid: REQUESTED or
    # PAIRED).  Its own standing stays FREE; each asker's link is as usual.
    many: int = 0
    served: int = 0
    links: dict[str, Standing] = field(default_factory=dict)


class PeerTable(ConnectionBook[_Connection]):
    """Live connections, peer IDs, pending requests and pairings (no I/O).

    Connections are keyed by their opaque Socket.IO session ID.  Each peer has at
    most one link at a time; both ends of a link point at each other.  A peer that
    registered with ``many`` (``sfs send --many``) is the exception: it has a link
    to each peer that asked it (at most ``many`` in all, ever), each ending on its
    own, and never asks anyone itself.  Methods
    raise :class:`Rejected` and leave the links unchanged when they refuse.
    Time comes in as *now* (monotonic seconds).  A connection must register
    within ``register_timeout_seconds`` of connecting, and a link must end within
    ``pairing_timeout_seconds`` of its request: :meth:`overdue_registrations` and
    :meth:`stalled_pairings` name the connections to drop.

    :param config: the limits to enforce
    :param new_id: source of candidate peer IDs (tests pass a predictable one)
    """

    def __init__(self, config: ServerConfig, *, new_id: Callable[[], str] = m.new_peer_id) -> None:
        super().__init__(config, _Connection)
        self._new_id = new_id
        self._lookups_by_address: dict[str, deque[float]] = {}
        self._last_sweep = float("-inf")
        self._linked: Deadlines[str] = Deadlines(config.pairing_timeout_seconds)

    # ------------------------------------------------------------------ queries

    def stats(self) -> dict[str, int]:
        """Counts only (what ``GET /stats`` serves): never an ID or an address.

        ``pending`` counts connection requests not yet accepted, ``pairs`` pairings.
        """
        links = [conn.standing for conn in self._connections.values()]
        for conn in self._connections.values():
            links += conn.links.values()  # each serving peer's end of its links
        return {
            "connections": len(self._connections),
            "peers": len(self._sid_by_peer_id),
            "pending": links.count(Standing.REQUESTING),
            "pairs": links.count(Standing.PAIRED) // 2,
        }

    @property
    def sids(self) -> list[str]:
        return list(self._connections)

    def sid_of(self, peer_id: str) -> str | None:
        return self._sid_by_peer_id.get(peer_id)

    def standing_of(self, sid: str) -> tuple[Standing, str | None]:
        """Return the link state of *sid* and the peer ID at its other end."""
        conn = self._connections[sid]
        other = self._connections[conn.other_sid] if conn.other_sid else None
        return conn.standing, other.peer_id if other else None

    # ------------------------------------------------------------------ lifecycle

    def register(self, sid: str, rendezvous: str | None = None, many: int = 0) -> str:
        """Give *sid* a peer ID that no live peer has (*rendezvous*, if given); with
        *many*, up to that many peers may ask it for a connection, in all."""
        conn = self._not_yet_registered(sid)
        conn.many = many
        if rendezvous is not None:
            if rendezvous in self._sid_by_peer_id:
                raise refusal("rendezvous_taken")
            self._set_peer_id(conn, rendezvous)
            return rendezvous
        for _ in range(MAX_PEER_ID_ATTEMPTS):
            peer_id = self._new_id()
            if peer_id not in self._sid_by_peer_id:
                self._set_peer_id(conn, peer_id)
                return peer_id
        raise refusal("no_free_id")

    def disconnect(self, sid: str) -> Departure | None:
        """Forget *sid*, its request and its pairing; None if it was unknown."""
        conn = self._forget(sid)
        if conn is None:
            return None
        self._linked.cancel(sid)
        if conn.many:
            for other in conn.links:
                self._free(self._connections[other])
            return Departure(peer_id=conn.peer_id, notify_sid=None, also=tuple(conn.links))
        notify = conn.other_sid
        if notify is not None:
            self._unlink(self._connections[notify], sid)
        return Departure(peer_id=conn.peer_id, notify_sid=notify)

    def stalled_pairings(self, *, now: float) -> list[str]:
        """Both ends of every request or pairing that has not ended in time (each named once)."""
        return self._linked.expired(now=now)

    # ------------------------------------------------------------------ events

    def find(self, sid: str, peer_id: str, *, now: float) -> None:
        """Check that *peer_id* is there and free to be asked (a rate-limited lookup)."""
        self._registered(sid)
        self._lookup(sid, peer_id, now=now)

    def request(self, sid: str, peer_id: str, *, now: float) -> Delivery:
        """Record a connection request from *sid* to *peer_id*."""
        conn = self._registered(sid)
        if conn.many:
            raise refusal("many_requests")
        if conn.standing is not Standing.FREE:
            raise refusal("busy_self")
        target = self._lookup(sid, peer_id, now=now)
        conn.standing, conn.other_sid = Standing.REQUESTING, target.sid
        if target.many:
            # Its own link: it runs out with the asker's clock, and drops the asker only.
            target.links[sid] = Standing.REQUESTED
            target.served += 1
        else:
            target.standing, target.other_sid = Standing.REQUESTED, sid
            self._linked.start(target.sid, now=now)
        self._progressed(sid)
        self._linked.start(sid, now=now)
        return Delivery(to_sid=target.sid, from_peer_id=self._id(conn))

    def accept(self, sid: str, peer_id: str) -> Delivery:
        """Pair *sid* with *peer_id*, which must have asked *sid* for a connection."""
        conn = self._registered(sid)
        requester_sid = self._sid_by_peer_id.get(peer_id)
        if requester_sid is None or self._link(conn, requester_sid) is not Standing.REQUESTED:
            raise refusal("no_request", peer_id)
        requester = self._connections[requester_sid]
        requester.standing = Standing.PAIRED
        if conn.many:
            conn.links[requester_sid] = Standing.PAIRED
        else:
            conn.standing = Standing.PAIRED
        return Delivery(to_sid=requester_sid, from_peer_id=self._id(conn))

    def relay(self, sid: str, peer_id: str) -> Delivery:
        """Route a message from *sid* to *peer_id*, which must be its partner."""
        conn = self._registered(sid)
        partner_sid = self._sid_by_peer_id.get(peer_id)
        if partner_sid is None or self._link(conn, partner_sid) is not Standing.PAIRED:
            raise refusal("not_paired", peer_id)
        return Delivery(to_sid=partner_sid, from_peer_id=self._id(conn))

    def abort(self, sid: str, peer_id: str) -> Delivery:
        """Like :meth:`relay`, then dissolve the pairing: nothing more may pass."""
        route = self.relay(sid, peer_id)
        self._unlink(self._connections[route.to_sid], sid)
        self._unlink(self._connections[sid], route.to_sid)
        return route

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _link(conn: _Connection, other_sid: str) -> Standing:
        """Where *conn* stands with *other_sid*."""
        if conn.many:
            return conn.links.get(other_sid, Standing.FREE)
        return conn.standing if conn.other_sid == other_sid else Standing.FREE

    def _unlink(self, conn: _Connection, other_sid: str) -> None:
        """End *conn*'s link with *other_sid* (gone, or aborted)."""
        if conn.many:
            conn.links.pop(other_sid, None)
        else:
            self._free(conn)

    def _free(self, conn: _Connection) -> None:
        conn.standing, conn.other_sid = Standing.FREE, None
        self._linked.cancel(conn.sid)

    def _lookup(self, sid: str, peer_id: str, *, now: float) -> _Connection:
        # The rate limit comes first and counts misses as well as hits: the
        # peer ID space is small, and guessing is what it must slow down.
        self._consume_lookup(self._connections[sid], now=now)
        target_sid = self._sid_by_peer_id.get(peer_id)
        if target_sid is None:
            raise refusal("unknown_peer", peer_id)
        if target_sid == sid:
            raise refusal("self")
        target = self._connections[target_sid]
        if target.many:
            if target.served >= target.many:
                raise refusal("used_up", peer_id)
        elif target.standing is not Standing.FREE:
            raise refusal("busy_target", peer_id)
        return target

    def _consume_lookup(self, conn: _Connection, *, now: float) -> None:
        if conn.lookups >= self.config.max_lookups_per_connection:
            raise refusal("connection_lookups")
        self._sweep(now)
        window = self._lookups_by_address.setdefault(conn.address_key, deque())
        horizon = now - self.config.lookup_window_seconds
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) >= self.config.max_lookups_per_address:
            raise refusal("address_lookups")
        conn.lookups += 1
        window.append(now)

    def _sweep(self, now: float) -> None:
        # Drop addresses idle for a whole window, at most once per window, so the
        # table cannot grow with every address that ever made one lookup.
        if now - self._last_sweep < self.config.lookup_window_seconds:
            return
        self._last_sweep = now
        horizon = now - self.config.lookup_window_seconds
        idle = [a for a, w in self._lookups_by_address.items() if not w or w[-1] <= horizon]
        for address in idle:
            del self._lookups_by_address[address]

    @property
    def tracked_addresses(self) -> int:
        """Addresses with lookups still in memory (for tests)."""
        return len(self._lookups_by_address)


class _ClientManager(OwnRoomsOnly, socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's client manager for one process, without its scan of every
    room per disconnect (:class:`~sfs.signal.registry.OwnRoomsOnly`)."""


class MemoryRegistry(Registry):
    """A :class:`PeerTable` behind the :class:`~sfs.signal.registry.Registry` interface.

    Every emit stays in this process, so the server's own checks before each emit
    are all there is: *check_delivery* has nothing to do.
    """

    def __init__(self, config: ServerConfig) -> None:
        # The table's own default source of IDs (tests/lan_rogue.py replaces it).
        self.table = PeerTable(config)

    def client_manager(self, *, check_delivery: DeliveryCheck) -> Any:
        return _ClientManager()

    def connect(self, sid: str, address: str, *, now: float) -> bool:
        return self.table.connect(sid, address, now=now)

    def is_connected(self, sid: str) -> bool:
        return self.table.is_connected(sid)

    def address_of(self, sid: str) -> str:
        return self.table.address_of(sid)

    def peer_id_of(self, sid: str) -> str | None:
        return self.table.peer_id_of(sid)

    def overdue_registrations(self, *, now: float) -> list[str]:
        return self.table.overdue_registrations(now=now)

    @property
    def connection_count(self) -> int:
        return self.table.connection_count

    async def register(self, sid: str, rendezvous: str | None = None, many: int = 0) -> str:
        return self.table.register(sid, rendezvous, many)

    async def disconnect(self, sid: str) -> Departure | None:
        return self.table.disconnect(sid)

    async def find(self, sid: str, peer_id: str, *, now: float) -> None:
        self.table.find(sid, peer_id, now=now)

    async def request(self, sid: str, peer_id: str, *, now: float) -> Delivery:
        return self.table.request(sid, peer_id, now=now)

    async def accept(self, sid: str, peer_id: str) -> Delivery:
        return self.table.accept(sid, peer_id)

    async def relay(self, sid: str, peer_id: str) -> Delivery:
        return self.table.relay(sid, peer_id)

    async def abort(self, sid: str, peer_id: str) -> Delivery:
        return self.table.abort(sid, peer_id)

    async def expire(self, *, now: float) -> Expiry:
        return Expiry(stalled=self.table.stalled_pairings(now=now))

    async def stats(self) -> dict[str, int]:
        return self.table.stats()
