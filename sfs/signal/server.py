"""The signaling server: introduces two peers and relays their sealed messages.

The server is untrusted by design.  It hands out peer IDs, lets one peer ask
another for a connection, and then relays opaque base64 strings between the two
peers of a pairing, and only between them.  It never sees a key it could use (the
peers run SPAKE2 through it and seal their SDP with the result), and it never
tells anyone which peer IDs exist: there is no peer list, and lookups are rate
limited per connection and per client address.

All bookkeeping lives in a :class:`~sfs.signal.registry.Registry`: in this process's
memory (:class:`~sfs.signal.memory_registry.MemoryRegistry`, the default, whose
:class:`~sfs.signal.memory_registry.PeerTable` does no I/O and is unit tested on its
own), or in Redis, shared by several nodes behind a load balancer
(:class:`~sfs.signal.redis_registry.RedisRegistry`, ``--redis URL``).
:class:`_SignalServer` only validates payloads, asks the registry and emits what the
registry says to emit; clients cannot tell which registry is in use.  ``GET /metrics``
serves this node's counts (sfs.signal.metrics).

No client may hold the server's resources for long or in bulk.  Every TCP
connection counts against a cap per client address and against the file
descriptor limit, and what waits unread for a client is bounded
(sfs.signal.admission); a request must arrive within the header timeout, a
websocket session must join the Socket.IO namespace within the join timeout,
register within the register timeout, and a pairing must end (the peers leave once
their DataChannel is open) within the pairing timeout (:class:`Deadlines`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import socketio
from aiohttp import web
from socketio import packet as sio_packet

from sfs import platform
from sfs.defaults import FD_SPARE, LISTEN_BACKLOG
from sfs.signal import messages as m
from sfs.signal.admission import Gate, MeteredQueue, QueueMeter, WebHandler
from sfs.signal.config import ServerConfig
from sfs.signal.memory_registry import MemoryRegistry
from sfs.signal.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from sfs.signal.metrics import Metrics
from sfs.signal.page import add_page_routes
from sfs.signal.redis_registry import RedisRegistry
from sfs.signal.registry import Deadlines, Departure, Expiry, Registry, Rejected
from sfs.signal.relay_server import RELAY_PATH, RelayServer
from sfs.signal.turn import rest_credential

logger = logging.getLogger(__name__)

# On shutdown every client has already been sent a disconnect; some (the
# python-socketio client among them) never finish the websocket closing
# handshake, and aiohttp waits this long, twice, before it drops them.
SHUTDOWN_TIMEOUT_SECONDS = 0.25
MAX_EVENT_NAME_CHARS = 64
# A client that leaves this many packets (acks, errors, relayed messages) unread
# is dropped: at up to a 64 KiB sealed SDP each, this bounds what one connection
# can make the server hold for it.  A working client reads them at once.
MAX_QUEUED_PACKETS = 128
# Where the soft fd limit goes when the hard one is unlimited.
UNLIMITED_FD_TARGET = 1 << 20
# Sweeps for overdue sessions run this many times per shortest timeout, but at
# least every SWEEP_MAX_SECONDS and at most every SWEEP_MIN_SECONDS.
SWEEPS_PER_TIMEOUT = 4
SWEEP_MIN_SECONDS = 0.05
SWEEP_MAX_SECONDS = 1.0
# Event names that python-socketio routes to the server's own connect, disconnect
# and catch-all handlers instead of treating them as events.
_SOCKETIO_HANDLER_NAMES = frozenset({"connect", "disconnect", "*"})


# --------------------------------------------------------------------------- Socket.IO glue

_Handler = Callable[[str, object], Awaitable[dict[str, object]]]

REGISTRY_KEY = web.AppKey("sfs_signal_registry", Registry)
GATE_KEY = web.AppKey("sfs_signal_gate", Gate)
METER_KEY = web.AppKey("sfs_signal_meter", QueueMeter)


def new_registry(config: ServerConfig) -> Registry:
    """The registry *config* asks for: in Redis with ``redis_url``, else in memory."""
    if config.redis_url is not None:
        return RedisRegistry(config)
    return MemoryRegistry(config)


class _SignalServer:
    """Binds a :class:`~sfs.signal.registry.Registry` to a python-socketio
    ``AsyncServer`` (untyped)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.registry = new_registry(config)
        self.metrics = Metrics()
        self.meter = QueueMeter(
            per_queue=config.max_queued_bytes_per_connection, total=config.max_queued_bytes
        )
        self._unjoined: Deadlines[str] = Deadlines(config.join_timeout_seconds)
        shortest = min(
            config.join_timeout_seconds,
            config.register_timeout_seconds,
            config.pairing_timeout_seconds,
        )
        self.sweep_seconds = min(
            max(shortest / SWEEPS_PER_TIMEOUT, SWEEP_MIN_SECONDS), SWEEP_MAX_SECONDS
        )
        # async_handlers=False: each connection's events are handled in order
        # (an offer must not overtake its candidates), and a flood of events
        # cannot pile up tasks.
        # websocket only: it is all the client speaks, and the only transport a
        # misbehaving client can be dropped from at once.
        self.sio: Any = socketio.AsyncServer(
            async_mode="aiohttp",
            client_manager=self.registry.client_manager(check_delivery=self._check_delivery),
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
        self._handle_eio_disconnect = self.sio.eio.handlers["disconnect"]
        self.sio.eio.on("connect", self._on_eio_connect)
        self.sio.eio.on("message", self._on_eio_message)
        self.sio.eio.on("disconnect", self._on_eio_disconnect)
        # Each session's outgoing packets are counted as they queue up.
        self.sio.eio.create_queue = lambda *args, **kwargs: MeteredQueue(self.meter)
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
        """Emit to *to*, a client of this node or (through the registry's client
        manager) of another."""
        eio_sid = self.sio.manager.eio_sid_from_sid(to, "/")
        if eio_sid is not None and not await self._make_room(eio_sid):
            return
        await self.sio.emit(event, data, to=to)

    async def _check_delivery(self, sid: str) -> bool:
        """Before an emit from another node reaches *sid*: the same budget checks."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        return eio_sid is not None and await self._make_room(eio_sid)

    async def _make_room(self, eio_sid: str) -> bool:
        """Check the unread budgets before something more is queued for *eio_sid*;
        False if that client was dropped instead."""
        if self._over_budget(eio_sid):
            logger.debug("dropped a client that does not read its messages")
            await self._drop(eio_sid, "unread")
            return False
        # Over the global budget, the client with the most unread data goes:
        # that is who holds the memory, not whoever happens to send next.
        while self.meter.over_total():
            victim = self.meter.largest()
            if not isinstance(victim, MeteredQueue) or victim.owner is None:
                break  # cannot happen: every counted queue has its session
            logger.debug("dropped the client with the most unread data: budget spent")
            await self._drop(victim.owner, "unread")
            if victim.owner == eio_sid:
                return False
        return True

    async def _fail(
        self, sid: str, event: str, code: str, message: str, *, reason: str | None = None
    ) -> dict[str, object]:
        who = self.registry.peer_id_of(sid) or "an unregistered client"
        logger.debug("rejected %s from %s: %s", event, who, reason or code)
        self.metrics.reject(reason or code, code)
        await self._emit(m.ERROR, m.error_event(event, code, message), sid)
        return m.error_ack(code, message)

    def _guarded(
        self, event: str, handler: _Handler
    ) -> Callable[..., Awaitable[dict[str, object]]]:
        # Socket.IO passes one positional argument per item the client sent, so
        # take any number and insist on exactly one: a wrong count must become an
        # "invalid" ack, not a TypeError inside python-socketio.
        async def on_event(sid: str, *args: object) -> dict[str, object]:
            if not self.registry.is_connected(sid):  # cannot happen; never trust that
                return m.error_ack(m.NOT_REGISTERED, "not connected")
            try:
                if len(args) != 1:
                    raise m.InvalidMessage("send exactly one payload object")
                return await handler(sid, args[0])
            except Rejected as exc:
                return await self._fail(sid, event, exc.code, exc.message, reason=exc.reason)
            except m.InvalidMessage as exc:
                return await self._fail(sid, event, exc.code, str(exc))

        return on_event

    # ------------------------------------------------------------------ engine.io

    async def _on_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> object:
        sock = self.sio.eio.sockets.get(eio_sid)
        queue = getattr(sock, "queue", None)
        # Count engine.io sessions too (this one included): one that never joins
        # the Socket.IO namespace would otherwise escape max_connections.
        if len(self.sio.eio.sockets) > self.config.max_connections:
            logger.warning("refused a connection from %s: server full", _remote(environ))
            if isinstance(queue, MeteredQueue):
                queue.close()  # engine.io drops the session without a disconnect
            return False
        if isinstance(queue, MeteredQueue):
            queue.owner = eio_sid
        self._unjoined.start(eio_sid, now=asyncio.get_running_loop().time())
        return await self._handle_eio_connect(eio_sid, environ)

    async def _on_eio_disconnect(self, eio_sid: str, reason: object = None) -> None:
        self._forget(eio_sid)
        await self._handle_eio_disconnect(eio_sid, reason)

    def _forget(self, eio_sid: str) -> None:
        """Stop the join clock and the byte count of a session that is going away."""
        self._unjoined.cancel(eio_sid)
        queue = getattr(self.sio.eio.sockets.get(eio_sid), "queue", None)
        if isinstance(queue, MeteredQueue):
            queue.close()

    async def _on_eio_message(self, eio_sid: str, data: object) -> None:
        if self._over_budget(eio_sid):
            logger.debug("dropped a client that does not read its replies")
        elif not self._acceptable(eio_sid, data):
            logger.debug("dropped a client that sent a malformed packet")
        else:
            await self._handle_eio_message(eio_sid, data)
            return
        await self._drop(eio_sid, "malformed")

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

    def _over_budget(self, eio_sid: str) -> bool:
        """Tell whether *eio_sid* has left more unread than one client may.

        That is packets in engine.io's queue, by count and in bytes, plus the bytes
        in the transport's buffer (which aiohttp keeps near its high-water mark).
        """
        sock = self.sio.eio.sockets.get(eio_sid)
        if sock is None:
            return False
        if sock.queue.qsize() > MAX_QUEUED_PACKETS:
            return True
        request = (self.sio.environ.get(eio_sid) or {}).get("aiohttp.request")
        transport = getattr(request, "transport", None)
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        return bool(self.meter.queued(sock.queue) + buffered > self.meter.per_queue)

    async def _drop(self, eio_sid: str, reason: str) -> None:
        """Disconnect a misbehaving client now, without waiting for it to read a goodbye.

        :param reason: what metrics count it as (sfs.signal.metrics.DROP_REASONS)
        """
        self.metrics.drop(reason)
        self._forget(eio_sid)  # its unread data no longer counts against anyone
        request = (self.sio.environ.get(eio_sid) or {}).get("aiohttp.request")
        sid = self.sio.manager.sid_from_eio_sid(eio_sid, "/")
        if sid is not None:
            await self.sio.disconnect(sid)  # frees its slot and its pairing
        transport = getattr(request, "transport", None)
        if transport is not None:
            transport.abort()  # engine.io's websocket loop then ends and cleans up

    @web.middleware
    async def close_broken_sessions(
        self, request: web.Request, handler: WebHandler
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
            self._forget(eio_sid)
            sock = self.sio.eio.sockets.pop(eio_sid, None)
            if sock is not None:
                # What engine.io's websocket loop does when it ends normally.
                sock.queue.put_nowait(None)
                await sock.close(wait=False, abort=True)
            raise web.HTTPBadRequest() from exc  # a 4xx: aiohttp logs no traceback

    # ------------------------------------------------------------------ connection

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: object = None) -> bool:
        address = _remote(environ)
        if not self.registry.connect(sid, address, now=asyncio.get_running_loop().time()):
            logger.warning("refused a connection from %s: server full", address)
            return False  # still unjoined: the join timeout ends the session
        self._unjoined.cancel(self.sio.manager.eio_sid_from_sid(sid, "/"))
        logger.debug("connection from %s", address)
        return True

    async def _on_disconnect(self, sid: str, reason: object = None) -> None:
        departure = await self.registry.disconnect(sid)
        if departure is None:
            return
        if departure.peer_id is None:
            logger.debug("a connection closed before registering")
            return
        logger.info("disconnected %s", departure.peer_id)
        await self._tell_departure(departure)

    async def _tell_departure(self, departure: Departure) -> None:
        if departure.peer_id is None:
            return
        for sid in departure.told:
            await self._emit(m.PEER_DISCONNECTED, m.PeerRef(departure.peer_id).to_dict(), sid)

    async def _on_unknown(self, event: str, sid: str, *args: object) -> dict[str, object]:
        # The name is the client's own data: echo it back, but not at any length.
        name = event[:MAX_EVENT_NAME_CHARS]
        return await self._fail(sid, name, m.UNKNOWN_EVENT, "unknown event")

    # ------------------------------------------------------------------ timeouts

    async def sweep_forever(self) -> None:
        """Drop overdue sessions every ``sweep_seconds`` until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sweep_seconds)
            await self.sweep(now=loop.time())

    async def sweep(self, *, now: float) -> None:
        """Drop every session that has not joined, registered or ended its pairing in
        time, or that the registry lost; tell the partners of peers that left unseen."""
        for eio_sid in self._unjoined.expired(now=now):
            logger.debug("dropped a websocket that did not join the namespace in time")
            await self._drop(eio_sid, "no_join")
        for sid in self.registry.overdue_registrations(now=now):
            logger.debug("dropped a client that did not register (or ask) in time")
            await self._drop_sid(sid, "no_register")
        expiry: Expiry = await self.registry.expire(now=now)
        for sid in expiry.stalled:
            logger.info("dropped %s: its pairing made no progress", self.registry.peer_id_of(sid))
            await self._drop_sid(sid, "stalled")
        for sid in expiry.lost:
            logger.info("dropped %s: the registry lost it", self.registry.peer_id_of(sid))
            await self._drop_sid(sid, "lost")
        for departure in expiry.departed:
            logger.info("%s is gone without a goodbye", departure.peer_id)
            await self._tell_departure(departure)

    async def _drop_sid(self, sid: str, reason: str) -> None:
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is not None:
            await self._drop(eio_sid, reason)
        else:  # cannot happen: the registry names only this node's joined sessions
            await self._on_disconnect(sid)

    async def close_all(self) -> None:
        """Disconnect every client, so the web server can stop without waiting."""
        # Close the engine.io sockets, not just the Socket.IO namespace: only
        # that ends each websocket handler, which aiohttp would otherwise wait
        # for until its shutdown timeout.  Without waiting for the goodbye to be
        # sent: a session whose websocket has just ended has no writer left, and
        # engine.io's own disconnect() would wait for it forever.
        for sock in list(self.sio.eio.sockets.values()):
            await sock.close(wait=False)

    # ------------------------------------------------------------------ events

    async def _register_peer(self, sid: str, payload: object) -> dict[str, object]:
        registration = m.parse_register_peer(payload)
        peer_id = await self.registry.register(sid, registration.rendezvous, registration.many)
        self.metrics.registrations.inc()
        many = f", for {registration.many} peers" if registration.many else ""
        logger.info("registered %s (%s)%s", peer_id, self.registry.address_of(sid), many)
        servers = [*self.config.ice_servers, *self._issued_ice_servers(peer_id)]
        ack = m.ok_ack(peer_id=peer_id, ice_servers=[s.to_dict() for s in servers])
        relay = self._relay_url()
        if relay is not None:
            ack["relay"] = relay
        if self.config.come_back:
            # A session that loses its connection may meet again here (a rendezvous).
            ack["rendezvous"] = True
        if registration.many:
            ack["many"] = registration.many  # an older server refuses the key instead
        return ack

    def _relay_url(self) -> str | None:
        """The register ack's ``relay``: "" is this server's own ``/relay``, a URL
        another relay (--relay-url), None (no key) no relay."""
        if self.config.relay_url is not None:
            return self.config.relay_url
        return "" if self.config.relay else None

    def _issued_ice_servers(self, peer_id: str) -> list[m.IceServer]:
        """The --stun servers, and the --turn servers with a credential for this peer
        alone, valid for --turn-ttl (coturn checks the expiry itself)."""
        servers = []
        if self.config.stun_urls:
            servers.append(m.IceServer(urls=self.config.stun_urls))
        if self.config.turn_urls:
            assert self.config.turn_secret is not None  # ServerConfig checks it
            username, password = rest_credential(
                secret=self.config.turn_secret,
                name=peer_id,
                expires=int(time.time()) + self.config.turn_ttl_seconds,
            )
            servers.append(m.IceServer(self.config.turn_urls, username, password))
        return servers

    async def _find_peer(self, sid: str, payload: object) -> dict[str, object]:
        ref = m.parse_peer_ref(payload)
        await self.registry.find(sid, ref.peer_id, now=asyncio.get_running_loop().time())
        await self._emit(m.PEER_FOUND, ref.to_dict(), sid)
        return m.ok_ack(peer_id=ref.peer_id)

    async def _send_connection_request(self, sid: str, payload: object) -> dict[str, object]:
        ref = m.parse_peer_ref(payload)
        route = await self.registry.request(sid, ref.peer_id, now=asyncio.get_running_loop().time())
        logger.debug("%s asks %s for a connection", route.from_peer_id, ref.peer_id)
        await self._emit(
            m.CONNECTION_REQUEST, m.PeerRef(route.from_peer_id).to_dict(), route.to_sid
        )
        return m.ok_ack(peer_id=ref.peer_id)

    async def _accept_connection(self, sid: str, payload: object) -> dict[str, object]:
        ref = m.parse_peer_ref(payload)
        route = await self.registry.accept(sid, ref.peer_id)
        self.metrics.paired.inc()
        logger.info("paired %s with %s", ref.peer_id, route.from_peer_id)
        await self._emit(
            m.CONNECTION_ACCEPTED, m.PeerRef(route.from_peer_id).to_dict(), route.to_sid
        )
        return m.ok_ack(peer_id=ref.peer_id)

    async def _send_public_key(self, sid: str, payload: object) -> dict[str, object]:
        msg = m.parse_public_key(payload)
        route = await self.registry.relay(sid, msg.peer_id)
        self.metrics.relayed.labels(event=m.SEND_PUBLIC_KEY).inc()
        relayed = m.PublicKey(peer_id=route.from_peer_id, key=msg.key)
        await self._emit(m.RECEIVE_PUBLIC_KEY, relayed.to_dict(), route.to_sid)
        return m.ok_ack()

    def _make_sealed_relay(self, event: str) -> _Handler:
        max_chars = m.SEALED_LIMITS[event]
        counter = self.metrics.relayed.labels(event=event)

        async def relay(sid: str, payload: object) -> dict[str, object]:
            msg = m.parse_sealed(payload, max_chars=max_chars)
            route = await self.registry.relay(sid, msg.peer_id)
            counter.inc()
            relayed = m.Sealed(peer_id=route.from_peer_id, sealed=msg.sealed)
            await self._emit(event, relayed.to_dict(), route.to_sid)
            return m.ok_ack()

        return relay

    async def _abort(self, sid: str, payload: object) -> dict[str, object]:
        msg = m.parse_abort(payload)
        route = await self.registry.abort(sid, msg.peer_id)
        self.metrics.relayed.labels(event=m.ABORT).inc()
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
    """Build the aiohttp application: Socket.IO at ``/socket.io/``, ``GET /healthz``,
    ``GET /stats``, ``GET /metrics`` and the relay at ``GET /relay`` (unless
    ``config.relay`` is off; sfs.signal.relay_server).

    The app's :class:`~sfs.signal.registry.Registry` is available as
    ``app[REGISTRY_KEY]``, and the gate that counts TCP connections as
    ``app[GATE_KEY]``: :func:`run_server` puts it in front of the listening socket,
    which the per-address and fd limits need.  ``app[METER_KEY]`` counts the bytes
    queued for clients.  The registry connects to its store when the app starts
    (a Redis that cannot be reached fails the start with
    :class:`~sfs.errors.RegistryUnreachableError`).
    """
    server = _SignalServer(config)
    gate = Gate(config)
    app = web.Application(middlewares=[gate.middleware, server.close_broken_sessions])
    app[GATE_KEY] = gate
    app[METER_KEY] = server.meter
    server.sio.attach(app)
    app.router.add_get("/healthz", _healthz)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(await server.registry.stats())

    relay = RelayServer(config.relay_limits(), server.metrics) if config.relay else None

    async def metrics(request: web.Request) -> web.Response:
        if relay is not None:
            server.metrics.relay_pairs.set(relay.table.active_pairs)
            server.metrics.relay_waiting.set(relay.table.waiting)
        counts = await server.registry.stats()
        # Registry.stats leaves the shared counts out when its store did not answer.
        body = server.metrics.render(counts, registry_up="pending" in counts)
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    app.router.add_get("/stats", stats)
    app.router.add_get("/metrics", metrics)
    if relay is not None:
        app.router.add_get(RELAY_PATH, relay.handle)
    if config.page:
        add_page_routes(app)
    app[REGISTRY_KEY] = server.registry

    async def on_shutdown(app: web.Application) -> None:
        if relay is not None:
            relay.close_all()
        await server.close_all()
        await server.sio.shutdown()

    async def registry(app: web.Application) -> AsyncIterator[None]:
        await server.registry.start()
        try:
            yield
        finally:  # after on_shutdown: every client has left by now
            await server.registry.close()

    async def sweeper(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(server.sweep_forever())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.on_shutdown.append(on_shutdown)
    app.cleanup_ctx.append(registry)
    app.cleanup_ctx.append(sweeper)
    return app


def raise_fd_limit() -> int | None:
    """Raise the soft limit on open files to the hard one; return the soft limit now.

    The common soft limit of 1024 is what one client filled with idle sockets; the
    hard limit is what the administrator allows.  None where there is no such limit.
    """
    return platform.raise_fd_limit(UNLIMITED_FD_TARGET)


def _open_fds() -> int:
    count = platform.open_fd_count()
    return 2 * FD_SPARE if count is None else count  # a guess; the reserve absorbs the error


def _url(address: object, *, tls: bool = False) -> str:
    if not isinstance(address, tuple) or len(address) < 2:
        raise ValueError(f"unexpected socket address {address!r}")
    host, port = str(address[0]), int(address[1])
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The server side of TLS: the certificate chain and its key, TLS 1.2 or newer.

    :raises ValueError: with a line for the user when the files do not load.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise ValueError(f"cannot load the TLS certificate and key: {reason}") from None
    return context


async def run_server(
    config: ServerConfig,
    *,
    ready: Callable[[str], None] | None = None,
    sock: socket.socket | None = None,
    extend: Callable[[web.Application], None] | None = None,
) -> None:
    """Serve signaling on ``config.host:config.port`` until cancelled.

    :param ready: called once with the bound URL (e.g. ``http://127.0.0.1:43121``),
        which tells the real port when ``config.port`` is 0
    :param sock: a bound socket to listen on instead of ``config.host:config.port``
        (the embedded server's one dual-stack port)
    :param extend: adds routes of its own to the app before it starts (the embedded
        server's probe); they sit behind the same gate and limits
    """
    context = tls_context(*config.tls) if config.tls is not None else None
    fd_limit = raise_fd_limit()
    app = create_app(config)
    if extend is not None:
        extend(app)
    gate = app[GATE_KEY]
    # No access log: one INFO line per register, pair and disconnect is the log.
    # aiohttp's keep-alive timer starts when a connection is made and closes it if
    # no whole request has arrived by then: that is the header timeout.  The gate
    # closes every connection after one response, so it never times out a second.
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        keepalive_timeout=config.header_timeout_seconds,
        lingering_time=config.header_timeout_seconds,
    )
    await runner.setup()
    listener: asyncio.Server | None = None
    try:
        assert runner.server is not None  # set up above
        # Not a web.TCPSite: the gate must see each connection before aiohttp does.
        loop = asyncio.get_running_loop()
        # A TLS handshake that does not finish counts against the header timeout.
        tls: dict[str, Any] = (
            {"ssl": context, "ssl_handshake_timeout": config.header_timeout_seconds}
            if context is not None
            else {}
        )
        if sock is not None:
            listener = await loop.create_server(
                gate.wrap(runner.server), sock=sock, backlog=LISTEN_BACKLOG, **tls
            )
        else:
            listener = await loop.create_server(
                gate.wrap(runner.server),
                config.host,
                config.port,
                backlog=LISTEN_BACKLOG,
                **tls,
            )
        if fd_limit is not None:
            registry = app[REGISTRY_KEY]
            gate.admission.set_fd_limit(fd_limit, fds_in_use=_open_fds() + registry.descriptors)
            room = gate.admission.session_capacity
            logger.debug("open-files limit %d: room for %d clients", fd_limit, room)
            if room < config.max_connections:
                logger.warning(
                    "the open-files limit (%d) allows %d clients, fewer than "
                    "--max-connections (%d); raise `ulimit -n` for more",
                    fd_limit,
                    room,
                    config.max_connections,
                )
        url = _url(listener.sockets[0].getsockname(), tls=context is not None)
        logger.info("sfs signaling server listening on %s", url)
        if ready is not None:
            ready(url)
        await asyncio.Event().wait()
    finally:
        if listener is not None:
            listener.close()
        await runner.cleanup()
