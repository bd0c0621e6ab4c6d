"""The signaling server: introduces two peers and relays their sealed messages.

The server is untrusted by design.  It hands out peer IDs, lets one peer ask
another for a connection, and then relays opaque base64 strings between the two
peers of a pairing, and only between them.  It never sees a key it could use (the
peers run SPAKE2 through it and seal their SDP with the result), and it never
tells anyone which peer IDs exist: there is no peer list, and lookups are rate
limited per connection and per client address.

All bookkeeping lives in :class:`PeerTable`, which does no I/O and is unit tested
on its own; :class:`_SignalServer` only validates payloads, calls the table and
emits what the table says to emit.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import socketio
from aiohttp import web
from socketio import packet as sio_packet

from sfs.signal import messages as m

logger = logging.getLogger(__name__)

DEFAULT_PORT = 5000
# Far above the largest valid payload (a 64 KiB sealed SDP) yet small enough
# that nobody can make the server buffer much for them.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024
# How often register tries a random ID before giving up; with at most
# max_connections live out of 17.6 million IDs, a dozen collisions in a row
# means something is wrong.
MAX_PEER_ID_ATTEMPTS = 50
# On shutdown every client has already been sent a disconnect; some (the
# python-socketio client among them) never finish the websocket closing
# handshake, and aiohttp waits this long, twice, before it drops them.
SHUTDOWN_TIMEOUT_SECONDS = 0.25
MAX_EVENT_NAME_CHARS = 64
# A client that leaves this many packets (acks, errors, relayed messages) unread
# is dropped: at up to a 64 KiB sealed SDP each, this bounds what one connection
# can make the server hold for it.  A working client reads them at once.
MAX_QUEUED_PACKETS = 128
# Event names that python-socketio routes to the server's own connect, disconnect
# and catch-all handlers instead of treating them as events.
_SOCKETIO_HANDLER_NAMES = frozenset({"connect", "disconnect", "*"})


@dataclass(frozen=True)
class ServerConfig:
    """Settings of ``sfs serve``.

    :param host: address to bind
    :param port: TCP port to bind; 0 picks a free one
    :param ice_servers: STUN/TURN servers handed to every registering peer
    :param max_connections: concurrent Socket.IO connections; more are refused
    :param max_lookups_per_connection: find_peer/send_connection_request attempts
        one connection may make in its lifetime
    :param max_lookups_per_address: attempts from one client address per window
    :param lookup_window_seconds: length of that sliding window
    :param max_message_bytes: largest frame accepted; a larger one drops the connection
    """

    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    ice_servers: tuple[m.IceServer, ...] = ()
    max_connections: int = 10000
    max_lookups_per_connection: int = 10
    max_lookups_per_address: int = 60
    lookup_window_seconds: float = 60.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        if len(self.ice_servers) > m.MAX_ICE_SERVERS:
            raise ValueError(f"at most {m.MAX_ICE_SERVERS} ICE servers can be configured")
        for name in (
            "max_connections",
            "max_lookups_per_connection",
            "max_lookups_per_address",
            "max_message_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.lookup_window_seconds <= 0:
            raise ValueError("lookup_window_seconds must be positive")


class Rejected(Exception):
    """The server refuses a client's request; *code* is one of the messages error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Link(Enum):
    """Where a peer stands with respect to one other peer."""

    FREE = "free"
    REQUESTING = "requesting"  # sent a connection request, waiting for accept
    REQUESTED = "requested"  # received a connection request, not yet accepted
    PAIRED = "paired"


@dataclass
class _Connection:
    sid: str
    address: str
    peer_id: str | None = None
    lookups: int = 0
    link: Link = Link.FREE
    other_sid: str | None = None  # the counterpart of any link but FREE


@dataclass(frozen=True)
class Route:
    """Deliver to *to_sid* a message that names its sender as *from_peer_id*."""

    to_sid: str
    from_peer_id: str


@dataclass(frozen=True)
class Departure:
    """What :meth:`PeerTable.disconnect` leaves to do.

    :param peer_id: the leaving peer's ID, or None if it never registered
    :param notify_sid: its partner or pending counterpart, to be told it is gone
    """

    peer_id: str | None
    notify_sid: str | None


class PeerTable:
    """Live connections, peer IDs, pending requests and pairings (no I/O).

    Connections are keyed by their opaque Socket.IO session ID.  Each peer has at
    most one link at a time; both ends of a link point at each other.  Methods
    raise :class:`Rejected` and leave the links unchanged when they refuse.
    Time comes in as *now* (monotonic seconds).

    :param config: the limits to enforce
    :param new_id: source of candidate peer IDs (tests pass a predictable one)
    """

    def __init__(self, config: ServerConfig, *, new_id: Callable[[], str] = m.new_peer_id) -> None:
        self.config = config
        self._new_id = new_id
        self._connections: dict[str, _Connection] = {}
        self._sid_by_peer_id: dict[str, str] = {}
        self._lookups_by_address: dict[str, deque[float]] = {}
        self._last_sweep = float("-inf")

    # ------------------------------------------------------------------ queries

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def stats(self) -> dict[str, int]:
        """Counts only (what ``GET /stats`` serves): never an ID or an address.

        ``pending`` counts connection requests not yet accepted, ``pairs`` pairings.
        """
        links = [conn.link for conn in self._connections.values()]
        return {
            "connections": len(self._connections),
            "peers": len(self._sid_by_peer_id),
            "pending": links.count(Link.REQUESTING),
            "pairs": links.count(Link.PAIRED) // 2,
        }

    @property
    def sids(self) -> list[str]:
        return list(self._connections)

    def is_connected(self, sid: str) -> bool:
        return sid in self._connections

    def address_of(self, sid: str) -> str:
        return self._connections[sid].address

    def peer_id_of(self, sid: str) -> str | None:
        conn = self._connections.get(sid)
        return conn.peer_id if conn else None

    def sid_of(self, peer_id: str) -> str | None:
        return self._sid_by_peer_id.get(peer_id)

    def link_of(self, sid: str) -> tuple[Link, str | None]:
        """Return the link state of *sid* and the peer ID at its other end."""
        conn = self._connections[sid]
        other = self._connections[conn.other_sid] if conn.other_sid else None
        return conn.link, other.peer_id if other else None

    # ------------------------------------------------------------------ lifecycle

    def connect(self, sid: str, address: str) -> bool:
        """Admit a new connection; False when the server is full."""
        if len(self._connections) >= self.config.max_connections:
            return False
        self._connections[sid] = _Connection(sid=sid, address=address)
        return True

    def register(self, sid: str) -> str:
        """Give *sid* a peer ID that no live peer has."""
        conn = self._connections[sid]
        if conn.peer_id is not None:
            raise Rejected(m.ALREADY_REGISTERED, f"already registered as {conn.peer_id}")
        for _ in range(MAX_PEER_ID_ATTEMPTS):
            peer_id = self._new_id()
            if peer_id not in self._sid_by_peer_id:
                conn.peer_id = peer_id
                self._sid_by_peer_id[peer_id] = sid
                return peer_id
        raise Rejected(m.SERVER_FULL, "no free peer ID, try again later")

    def disconnect(self, sid: str) -> Departure | None:
        """Forget *sid*, its request and its pairing; None if it was unknown."""
        conn = self._connections.pop(sid, None)
        if conn is None:
            return None
        if conn.peer_id is not None:
            del self._sid_by_peer_id[conn.peer_id]
        notify = conn.other_sid
        if notify is not None:
            self._free(self._connections[notify])
        return Departure(peer_id=conn.peer_id, notify_sid=notify)

    # ------------------------------------------------------------------ events

    def find(self, sid: str, peer_id: str, *, now: float) -> None:
        """Check that *peer_id* is there and free to be asked (a rate-limited lookup)."""
        self._registered(sid)
        self._lookup(sid, peer_id, now=now)

    def request(self, sid: str, peer_id: str, *, now: float) -> Route:
        """Record a connection request from *sid* to *peer_id*."""
        conn = self._registered(sid)
        if conn.link is not Link.FREE:
            raise Rejected(m.BUSY, "you already have a connection or a pending request")
        target = self._lookup(sid, peer_id, now=now)
        conn.link, conn.other_sid = Link.REQUESTING, target.sid
        target.link, target.other_sid = Link.REQUESTED, sid
        return Route(to_sid=target.sid, from_peer_id=self._id(conn))

    def accept(self, sid: str, peer_id: str) -> Route:
        """Pair *sid* with *peer_id*, which must have asked *sid* for a connection."""
        conn = self._registered(sid)
        requester_sid = self._sid_by_peer_id.get(peer_id)
        if (
            requester_sid is None
            or conn.link is not Link.REQUESTED
            or conn.other_sid != requester_sid
        ):
            raise Rejected(m.UNKNOWN_PEER, f"no pending connection request from {peer_id}")
        requester = self._connections[requester_sid]
        conn.link = requester.link = Link.PAIRED
        return Route(to_sid=requester_sid, from_peer_id=self._id(conn))

    def relay(self, sid: str, peer_id: str) -> Route:
        """Route a message from *sid* to *peer_id*, which must be its partner."""
        conn = self._registered(sid)
        partner_sid = self._sid_by_peer_id.get(peer_id)
        if conn.link is not Link.PAIRED or partner_sid is None or conn.other_sid != partner_sid:
            raise Rejected(m.NOT_PAIRED, f"you are not paired with {peer_id}")
        return Route(to_sid=partner_sid, from_peer_id=self._id(conn))

    def abort(self, sid: str, peer_id: str) -> Route:
        """Like :meth:`relay`, then dissolve the pairing: nothing more may pass."""
        route = self.relay(sid, peer_id)
        self._free(self._connections[route.to_sid])
        self._free(self._connections[sid])
        return route

    # ------------------------------------------------------------------ helpers

    def _registered(self, sid: str) -> _Connection:
        conn = self._connections[sid]
        if conn.peer_id is None:
            raise Rejected(m.NOT_REGISTERED, "register_peer first")
        return conn

    @staticmethod
    def _id(conn: _Connection) -> str:
        assert conn.peer_id is not None  # only registered peers get this far
        return conn.peer_id

    @staticmethod
    def _free(conn: _Connection) -> None:
        conn.link, conn.other_sid = Link.FREE, None

    def _lookup(self, sid: str, peer_id: str, *, now: float) -> _Connection:
        # The rate limit comes first and counts misses as well as hits: the
        # peer ID space is small, and guessing is what it must slow down.
        self._consume_lookup(self._connections[sid], now=now)
        target_sid = self._sid_by_peer_id.get(peer_id)
        if target_sid is None:
            raise Rejected(m.UNKNOWN_PEER, f"no peer {peer_id}")
        if target_sid == sid:
            raise Rejected(m.INVALID, "that is your own peer ID")
        target = self._connections[target_sid]
        if target.link is not Link.FREE:
            raise Rejected(m.BUSY, f"{peer_id} is busy with another peer")
        return target

    def _consume_lookup(self, conn: _Connection, *, now: float) -> None:
        if conn.lookups >= self.config.max_lookups_per_connection:
            raise Rejected(m.RATE_LIMITED, "too many lookups on this connection")
        self._sweep(now)
        window = self._lookups_by_address.setdefault(conn.address, deque())
        horizon = now - self.config.lookup_window_seconds
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) >= self.config.max_lookups_per_address:
            raise Rejected(m.RATE_LIMITED, "too many lookups from your address, wait a minute")
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


# --------------------------------------------------------------------------- Socket.IO glue

_Handler = Callable[[str, object], Awaitable[dict[str, object]]]
_WebHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SIGNAL_TABLE_KEY = web.AppKey("sfs_signal_table", PeerTable)


class _ClientManager(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's client manager without its scan of every room per disconnect.

    The stock ``basic_disconnect`` looks for the leaving client in every room of the
    namespace, and every client has a room of its own, so each disconnect costs
    O(clients) and all of them leaving O(clients**2): 0.7 ms of event loop per
    disconnect and 3.9 s of CPU for all of them at 10 000 clients (scripts/load,
    docs/PERFORMANCE.md).  sfs puts a client in no room but the two python-socketio
    gives it, the namespace's (``None``) and its own, so only those are left.
    """

    def basic_enter_room(
        self, sid: str, namespace: str, room: str | None, eio_sid: str | None = None
    ) -> None:
        if room is not None and room != sid:  # basic_disconnect would miss it
            raise ValueError("sfs puts clients in no rooms")
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: object) -> None:
        # The rest is what python-socketio 5's basic_disconnect does.
        if namespace not in self.rooms:
            return
        for room in (sid, None):
            self.basic_leave_room(sid, namespace, room)  # no-op where it is not in
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]


class _SignalServer:
    """Binds a :class:`PeerTable` to a python-socketio ``AsyncServer`` (untyped)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.table = PeerTable(config)
        # async_handlers=False: each connection's events are handled in order
        # (an offer must not overtake its candidates), and a flood of events
        # cannot pile up tasks.
        # websocket only: it is all the client speaks, and the only transport a
        # misbehaving client can be dropped from at once.
        self.sio: Any = socketio.AsyncServer(
            async_mode="aiohttp",
            client_manager=_ClientManager(),
            async_handlers=False,
            max_http_buffer_size=config.max_message_bytes,
            transports=["websocket"],
            logger=False,
            engineio_logger=False,
        )
        # Every engine.io session and message passes our checks before
        # python-socketio's own handlers see it.
        self._handle_eio_connect = self.sio.eio.handlers["connect"]
        self._handle_eio_message = self.sio.eio.handlers["message"]
        self.sio.eio.on("connect", self._on_eio_connect)
        self.sio.eio.on("message", self._on_eio_message)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("*", self._on_unknown)
        handlers: dict[str, _Handler] = {
            m.REGISTER_PEER: self._register_peer,
            m.FIND_PEER: self._find_peer,
            m.SEND_CONNECTION_REQUEST: self._send_connection_request,
            m.ACCEPT_CONNECTION: self._accept_connection,
            m.SEND_PUBLIC_KEY: self._send_public_key,
            m.OFFER: self._make_sealed_relay(m.OFFER),
            m.ANSWER: self._make_sealed_relay(m.ANSWER),
            m.ICE_CANDIDATE: self._make_sealed_relay(m.ICE_CANDIDATE),
            m.ABORT: self._abort,
        }
        for event, handler in handlers.items():
            self.sio.on(event, self._guarded(event, handler))

    async def _emit(self, event: str, data: dict[str, object], to: str) -> None:
        eio_sid = self.sio.manager.eio_sid_from_sid(to, "/")
        if eio_sid is not None and self._backlog(eio_sid) > MAX_QUEUED_PACKETS:
            logger.debug("dropped a client that does not read its messages")
            await self._drop(eio_sid)
            return
        await self.sio.emit(event, data, to=to)

    async def _fail(self, sid: str, event: str, code: str, message: str) -> dict[str, object]:
        who = self.table.peer_id_of(sid) or "an unregistered client"
        logger.debug("rejected %s from %s: %s", event, who, code)
        await self._emit(m.ERROR, m.error_event(event, code, message), sid)
        return m.error_ack(code, message)

    def _guarded(
        self, event: str, handler: _Handler
    ) -> Callable[..., Awaitable[dict[str, object]]]:
        # Socket.IO passes one positional argument per item the client sent, so
        # take any number and insist on exactly one: a wrong count must become an
        # "invalid" ack, not a TypeError inside python-socketio.
        async def on_event(sid: str, *args: object) -> dict[str, object]:
            if not self.table.is_connected(sid):  # cannot happen; never trust that
                return m.error_ack(m.NOT_REGISTERED, "not connected")
            try:
                if len(args) != 1:
                    raise m.InvalidMessage("send exactly one payload object")
                return await handler(sid, args[0])
            except Rejected as exc:
                return await self._fail(sid, event, exc.code, exc.message)
            except m.InvalidMessage as exc:
                return await self._fail(sid, event, exc.code, str(exc))

        return on_event

    # ------------------------------------------------------------------ engine.io

    async def _on_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> object:
        # Count engine.io sessions too (this one included): one that never joins
        # the Socket.IO namespace would otherwise escape max_connections.
        if len(self.sio.eio.sockets) > self.config.max_connections:
            logger.warning("refused a connection from %s: server full", _remote(environ))
            return False
        return await self._handle_eio_connect(eio_sid, environ)

    async def _on_eio_message(self, eio_sid: str, data: object) -> None:
        if self._backlog(eio_sid) > MAX_QUEUED_PACKETS:
            logger.debug("dropped a client that does not read its replies")
        elif not self._acceptable(eio_sid, data):
            logger.debug("dropped a client that sent a malformed packet")
        else:
            await self._handle_eio_message(eio_sid, data)
            return
        await self._drop(eio_sid)

    def _acceptable(self, eio_sid: str, data: object) -> bool:
        """Tell whether *data* is a packet a client of this server may send.

        That is a text CONNECT or DISCONNECT of the default namespace, or an EVENT
        in it, once joined, headed by an event name.  On anything else
        python-socketio would raise and ignore it, keep binary attachments until
        the last of up to 10**10 arrived, or run its own connect, disconnect and
        catch-all handlers for a client's event of that name.
        """
        if not isinstance(data, str):
            return False
        try:
            pkt = self.sio.packet_class(encoded_packet=data)
        except (ValueError, RecursionError):
            return False
        if pkt.namespace not in (None, "/"):
            return False
        if pkt.packet_type in (sio_packet.CONNECT, sio_packet.DISCONNECT):
            return True
        if pkt.packet_type != sio_packet.EVENT or not isinstance(pkt.data, list) or not pkt.data:
            return False
        name = pkt.data[0]
        if not isinstance(name, str) or name in _SOCKETIO_HANDLER_NAMES:
            return False
        return self.sio.manager.sid_from_eio_sid(eio_sid, "/") is not None

    def _backlog(self, eio_sid: str) -> int:
        """Packets queued for *eio_sid* that its client has not taken yet."""
        sock = self.sio.eio.sockets.get(eio_sid)
        return int(sock.queue.qsize()) if sock is not None else 0

    async def _drop(self, eio_sid: str) -> None:
        """Disconnect a misbehaving client now, without waiting for it to read a goodbye."""
        request = (self.sio.environ.get(eio_sid) or {}).get("aiohttp.request")
        sid = self.sio.manager.sid_from_eio_sid(eio_sid, "/")
        if sid is not None:
            await self.sio.disconnect(sid)  # frees its slot and its pairing
        transport = getattr(request, "transport", None)
        if transport is not None:
            transport.abort()  # engine.io's websocket loop then ends and cleans up

    @web.middleware
    async def close_broken_sessions(
        self, request: web.Request, handler: _WebHandler
    ) -> web.StreamResponse:
        """Clean up after a frame that engine.io itself cannot decode.

        engine.io decodes websocket frames outside its error handling, so such a
        frame ends the request with an exception and leaves the session open
        (and counted) until its ping times out, some 45 s later.
        """
        try:
            return await handler(request)
        except Exception as exc:
            eio_sid = next(
                (
                    k
                    for k, v in list(self.sio.environ.items())
                    if v.get("aiohttp.request") is request
                ),
                None,
            )
            if eio_sid is None:
                raise
            logger.debug("dropped a client that sent a malformed frame")
            if request.transport is not None:
                request.transport.abort()
            sock = self.sio.eio.sockets.pop(eio_sid, None)
            if sock is not None:
                # What engine.io's websocket loop does when it ends normally.
                sock.queue.put_nowait(None)
                await sock.close(wait=False, abort=True)
            raise web.HTTPBadRequest() from exc  # a 4xx: aiohttp logs no traceback

    # ------------------------------------------------------------------ connection

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: object = None) -> bool:
        address = _remote(environ)
        if not self.table.connect(sid, address):
            logger.warning("refused a connection from %s: server full", address)
            return False
        logger.debug("connection from %s", address)
        return True

    async def _on_disconnect(self, sid: str, reason: object = None) -> None:
        departure = self.table.disconnect(sid)
        if departure is None:
            return
        if departure.peer_id is None:
            logger.debug("a connection closed before registering")
            return
        logger.info("disconnected %s", departure.peer_id)
        if departure.notify_sid is not None:
            await self._emit(
                m.PEER_DISCONNECTED, m.PeerRef(departure.peer_id).to_dict(), departure.notify_sid
            )

    async def _on_unknown(self, event: str, sid: str, *args: object) -> dict[str, object]:
        # The name is the client's own data: echo it back, but not at any length.
        name = event[:MAX_EVENT_NAME_CHARS]
        return await self._fail(sid, name, m.UNKNOWN_EVENT, "unknown event")

    async def close_all(self) -> None:
        """Disconnect every client, so the web server can stop without waiting."""
        # Close the engine.io sockets, not just the Socket.IO namespace: only
        # that ends each websocket handler, which aiohttp would otherwise wait
        # for until its shutdown timeout.  (engine.io's disconnect() with no
        # sockets at all would call asyncio.wait([]), which raises.)
        if self.sio.eio.sockets:
            await self.sio.eio.disconnect()

    # ------------------------------------------------------------------ events

    async def _register_peer(self, sid: str, payload: object) -> dict[str, object]:
        m.parse_register_peer(payload)
        peer_id = self.table.register(sid)
        logger.info("registered %s (%s)", peer_id, self.table.address_of(sid))
        return m.ok_ack(peer_id=peer_id, ice_servers=[s.to_dict() for s in self.config.ice_servers])

    async def _find_peer(self, sid: str, payload: object) -> dict[str, object]:
        ref = m.parse_peer_ref(payload)
        self.table.find(sid, ref.peer_id, now=asyncio.get_running_loop().time())
        await self._emit(m.PEER_FOUND, ref.to_dict(), sid)
        return m.ok_ack(peer_id=ref.peer_id)

    async def _send_connection_request(self, sid: str, payload: object) -> dict[str, object]:
        ref = m.parse_peer_ref(payload)
        route = self.table.request(sid, ref.peer_id, now=asyncio.get_running_loop().time())
        logger.debug("%s asks %s for a connection", route.from_peer_id, ref.peer_id)
        await self._emit(
            m.CONNECTION_REQUEST, m.PeerRef(route.from_peer_id).to_dict(), route.to_sid
        )
        return m.ok_ack(peer_id=ref.peer_id)

    async def _accept_connection(self, sid: str, payload: object) -> dict[str, object]:
        ref = m.parse_peer_ref(payload)
        route = self.table.accept(sid, ref.peer_id)
        logger.info("paired %s with %s", ref.peer_id, route.from_peer_id)
        await self._emit(
            m.CONNECTION_ACCEPTED, m.PeerRef(route.from_peer_id).to_dict(), route.to_sid
        )
        return m.ok_ack(peer_id=ref.peer_id)

    async def _send_public_key(self, sid: str, payload: object) -> dict[str, object]:
        msg = m.parse_public_key(payload)
        route = self.table.relay(sid, msg.peer_id)
        relayed = m.PublicKey(peer_id=route.from_peer_id, key=msg.key)
        await self._emit(m.RECEIVE_PUBLIC_KEY, relayed.to_dict(), route.to_sid)
        return m.ok_ack()

    def _make_sealed_relay(self, event: str) -> _Handler:
        max_chars = m.SEALED_LIMITS[event]

        async def relay(sid: str, payload: object) -> dict[str, object]:
            msg = m.parse_sealed(payload, max_chars=max_chars)
            route = self.table.relay(sid, msg.peer_id)
            relayed = m.Sealed(peer_id=route.from_peer_id, sealed=msg.sealed)
            await self._emit(event, relayed.to_dict(), route.to_sid)
            return m.ok_ack()

        return relay

    async def _abort(self, sid: str, payload: object) -> dict[str, object]:
        msg = m.parse_abort(payload)
        route = self.table.abort(sid, msg.peer_id)
        logger.debug("%s aborted with %s (%s)", route.from_peer_id, msg.peer_id, msg.reason)
        relayed = m.Abort(peer_id=route.from_peer_id, reason=msg.reason)
        await self._emit(m.PEER_ABORTED, relayed.to_dict(), route.to_sid)
        return m.ok_ack()


def _remote(environ: dict[str, Any]) -> str:
    # engine.io fills REMOTE_ADDR with a constant under aiohttp; ask aiohttp.
    # Behind a reverse proxy this is the proxy: X-Forwarded-For is not trusted,
    # since any client could set it to dodge the per-address limit.
    return str(getattr(environ.get("aiohttp.request"), "remote", None) or "unknown")


# --------------------------------------------------------------------------- entry points


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app(config: ServerConfig) -> web.Application:
    """Build the aiohttp application: Socket.IO at ``/socket.io/``, ``GET /healthz``
    and ``GET /stats``.

    The app's :class:`PeerTable` is available as ``app[SIGNAL_TABLE_KEY]``.
    """
    server = _SignalServer(config)
    app = web.Application(middlewares=[server.close_broken_sessions])
    server.sio.attach(app)
    app.router.add_get("/healthz", _healthz)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(server.table.stats())

    app.router.add_get("/stats", stats)
    app[SIGNAL_TABLE_KEY] = server.table

    async def on_shutdown(app: web.Application) -> None:
        await server.close_all()
        await server.sio.shutdown()

    app.on_shutdown.append(on_shutdown)
    return app


def _url(address: object) -> str:
    if not isinstance(address, tuple) or len(address) < 2:
        raise ValueError(f"unexpected socket address {address!r}")
    host, port = str(address[0]), int(address[1])
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def run_server(config: ServerConfig, *, ready: Callable[[str], None] | None = None) -> None:
    """Serve signaling on ``config.host:config.port`` until cancelled.

    :param ready: called once with the bound URL (e.g. ``http://127.0.0.1:43121``),
        which tells the real port when ``config.port`` is 0
    """
    # No access log: one INFO line per register, pair and disconnect is the log.
    runner = web.AppRunner(
        create_app(config), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        url = _url(runner.addresses[0])
        logger.info("sfs signaling server listening on %s", url)
        if ready is not None:
            ready(url)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
