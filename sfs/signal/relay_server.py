"""The relay's I/O in ``sfs serve``: ``GET /relay`` joins two connections that present
one token and copies bytes between them, both ways (docs/PROTOCOL.md "Relay").

Which connections wait, pair or are refused is :class:`~sfs.signal.relay.RelayTable`'s
decision; this module carries it out and enforces the limits the table only carries
(bytes per second, bytes in all, idle time).

A raw end (``Upgrade: sfs-relay``, the CLI) leaves aiohttp as soon as it waits or
pairs: its transport is handed to a :class:`_RawEnd` (``transport.set_protocol``), a
``BufferedProtocol`` that reads into one large buffer and writes it to the partner's
transport, so a relayed byte costs no Python object of its own.  aiohttp parses only
``Upgrade: websocket`` as an upgrade, so the hand-over happens before the answer is
written, in the same step of the loop, and clients send nothing before the answer.
aiohttp's protocol (behind the admission gate's) is told when the connection ends,
which releases the gate's per-address count, and the handler does not return until
then: when it returns, aiohttp closes the transport.

A WebSocket end (the page: browsers cannot set headers) sends the token as its first
binary message and gets the text ``paired``; after that its binary messages carry
the stream.  Either kind pairs with either kind.

Flow control: one end stops reading while the other's write buffer is above
``HIGH_WATER_BYTES`` (and while the pair's rate budget is spent), so what the relay
holds per pair is bounded whatever the peers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections import deque
from collections.abc import Hashable

from aiohttp import WSMsgType, web

from sfs.signal.metrics import Metrics
from sfs.signal.relay import (
    NO_PARTNER,
    NO_PARTNER_STATUS,
    REFUSAL_STATUS,
    REFUSAL_TEXT,
    Pair,
    Refuse,
    RelayLimits,
    RelayTable,
    TokenBucket,
    http_refusal,
    token_from_header,
    token_from_message,
)

logger = logging.getLogger(__name__)

RELAY_PATH = "/relay"  # also sfs.signal.admission.RELAY_PATH (sessions' fd reserve)
UPGRADE = "sfs-relay"
TOKEN_HEADER = "Sfs-Relay-Token"
SWITCHING_PROTOCOLS = (
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: sfs-relay\r\n\r\n"
)
#: What one read of a raw end takes at most (one buffer per paired end).
BUFFER_BYTES = 256 * 1024
#: An end stops reading while its partner has more than this waiting to be sent.
HIGH_WATER_BYTES = 1 << 20
#: The kernel's send buffer of a paired end: the admission gate set 64 KiB, right for
#: signaling, too small for bulk data (the kernel caps it at net.core.wmem_max).
PAIRED_SEND_BUFFER_BYTES = 4 << 20
#: What a waiting end may send before its answer (a client should send nothing); past
#: it the end stops being read until it pairs.
EARLY_BYTES = 64 * 1024
#: The rate limit's burst: this many seconds' worth of bytes.
BURST_SECONDS = 0.25
#: A WebSocket end's largest message, and its close codes: 4000 + the HTTP status.
WS_MAX_MESSAGE_BYTES = 1 << 20
WS_CLOSE_BASE = 4000
WS_PAIRED = "paired"
#: A WebSocket end's goodbye when the relay ends its pair (limits, shutdown).
WS_CLOSE_ENDED = 4000


class _End:
    """One connection of the relay as its pair sees it (raw or WebSocket)."""

    def __init__(self, relay: RelayServer, conn_id: int) -> None:
        self.relay = relay
        self.conn_id = conn_id
        self.pair: _Pair | None = None
        self._pauses: set[str] = set()
        self._early = bytearray()  # sent before the answer (a client should send nothing)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pause(self, why: str) -> None:
        """Stop reading for *why* (``partner``: its writes are backed up; ``rate``)."""
        if not self._pauses:
            self._stop_reading()
        self._pauses.add(why)

    def resume(self, why: str) -> None:
        if why in self._pauses:
            self._pauses.discard(why)
            if not self._pauses:
                self._start_reading()

    def _stop_reading(self) -> None:
        raise NotImplementedError

    def _start_reading(self) -> None:
        raise NotImplementedError

    def write(self, data: memoryview) -> bool:
        """Queue *data* for this end; True if the end still holds *data* itself."""
        raise NotImplementedError

    def paired(self, pair: _Pair) -> None:
        """Answer: paired (raw: the 101, now)."""
        raise NotImplementedError

    def flush_early(self) -> None:
        """Pass on what the end sent before its answer (once both ends have theirs)."""
        if self.pair is not None and self._early:
            early, self._early = self._early, bytearray()
            self.pair.forward(self, memoryview(early))
        self.resume("early")

    def refuse(self, status: int, reason: str) -> None:
        """Answer a waiting end: refused, and close it."""
        raise NotImplementedError

    def close(self, *, abort: bool = False) -> None:
        """Close after what is queued for this end is sent (or at once with *abort*)."""
        raise NotImplementedError


class _RawEnd(_End, asyncio.BufferedProtocol):
    """A raw end: owns the connection's transport once aiohttp has parsed the request."""

    def __init__(self, relay: RelayServer, conn_id: int, transport: asyncio.Transport) -> None:
        super().__init__(relay, conn_id)
        self.transport = transport
        self.previous = transport.get_protocol()  # the gate's, around aiohttp's
        self._view = memoryview(bytearray(EARLY_BYTES))
        # The swap comes before anything is written, in this step of the loop: bytes
        # that arrive from now on are ours, not aiohttp's parser's.
        transport.set_protocol(self)
        if not transport.is_reading():
            transport.resume_reading()

    def _stop_reading(self) -> None:
        if not self.transport.is_closing():
            self.transport.pause_reading()

    def _start_reading(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        pair = self.pair
        if pair is None:  # sent before its answer: held until it pairs
            self._early += self._view[:nbytes]
            if len(self._early) >= EARLY_BYTES:
                self.pause("early")
            return
        if pair.forward(self, self._view[:nbytes]):
            # The partner's transport keeps a reference to what it could not send yet.
            self._view = memoryview(bytearray(BUFFER_BYTES))

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost ends the pair

    def pause_writing(self) -> None:
        if self.pair is not None:
            self.pair.partner(self).pause("partner")

    def resume_writing(self) -> None:
        if self.pair is not None:
            self.pair.partner(self).resume("partner")

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.gone(self)
        with contextlib.suppress(Exception):  # aiohttp's and the gate's bookkeeping
            self.previous.connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: memoryview) -> bool:
        if self.transport.is_closing():
            return False
        self.transport.write(data)
        return self.transport.get_write_buffer_size() > 0

    def paired(self, pair: _Pair) -> None:
        self.pair = pair
        self.transport.write(SWITCHING_PROTOCOLS)
        self.transport.set_write_buffer_limits(high=HIGH_WATER_BYTES)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PAIRED_SEND_BUFFER_BYTES)
        self._view = memoryview(bytearray(BUFFER_BYTES))

    def refuse(self, status: int, reason: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(http_refusal(status, reason))
        self.close()

    def close(self, *, abort: bool = False) -> None:
        if abort:
            self.transport.abort()
        else:
            self.transport.close()


class _WsEnd(_End):
    """A WebSocket end: a task reads its messages; what the partner sends is queued and
    sent by a second task."""

    def __init__(self, relay: RelayServer, conn_id: int, ws: web.WebSocketResponse) -> None:
        super().__init__(relay, conn_id)
        self.ws = ws
        self._readable = asyncio.Event()
        self._readable.set()
        self._outgoing: deque[bytes] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._refusal: tuple[int, str] | None = None
        self._closing = False

    def _stop_reading(self) -> None:
        self._readable.clear()

    def _start_reading(self) -> None:
        self._readable.set()

    def write(self, data: memoryview) -> bool:
        if self._closing:
            return False
        self._outgoing.append(bytes(data))
        self._queued += len(data)
        if self._queued > HIGH_WATER_BYTES and self.pair is not None:
            self.pair.partner(self).pause("partner")
        self._wake.set()
        return False

    def paired(self, pair: _Pair) -> None:
        self.pair = pair
        self._wake.set()

    def refuse(self, status: int, reason: str) -> None:
        self._refusal = (status, reason)
        self._wake.set()

    def close(self, *, abort: bool = False) -> None:
        self._closing = True
        self._wake.set()

    async def run(self) -> None:
        """Serve this end until it closes: wait for the answer, then pump both ways."""
        reader = asyncio.create_task(self._read())
        try:
            await self._write(reader)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self.relay.gone(self)
            if not self.closed.done():
                self.closed.set_result(None)

    async def _read(self) -> None:
        while True:
            await self._readable.wait()
            msg = await self.ws.receive()
            if msg.type != WSMsgType.BINARY:
                return  # a close, an error, or text, which means nothing here
            if self.pair is None:
                self._early += msg.data
                if len(self._early) >= EARLY_BYTES:
                    self.pause("early")
            else:
                self.pair.forward(self, memoryview(msg.data))

    async def _write(self, reader: asyncio.Task[None]) -> None:
        told = False
        while True:
            waking = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait({waking, reader}, return_when=asyncio.FIRST_COMPLETED)
            waking.cancel()
            if reader.done():  # the client went away (or sent what means goodbye)
                await self._flush()
                await self.ws.close()
                return
            self._wake.clear()
            if self._refusal is not None:
                status, reason = self._refusal
                await self.ws.close(code=WS_CLOSE_BASE + status, message=reason.encode())
                return
            if self.pair is not None and not told:
                told = True
                await self.ws.send_str(WS_PAIRED)
            await self._flush()
            if self._closing:
                await self.ws.close(code=WS_CLOSE_ENDED, message=b"relay closed")
                return

    async def _flush(self) -> None:
        while self._outgoing and not self.ws.closed:
            data = self._outgoing.popleft()
            await self.ws.send_bytes(data)
            self._queued -= len(data)
            if self._queued <= HIGH_WATER_BYTES // 2 and self.pair is not None:
                self.pair.partner(self).resume("partner")


class _Pair:
    """Two ends that present one token: counts, rate budget and idle clock."""

    def __init__(self, relay: RelayServer, first: _End, second: _End, *, now: float) -> None:
        self.relay = relay
        self.ends = (first, second)
        limits = relay.limits
        self.max_bytes = limits.max_bytes_per_pair
        self.moved = 0
        self.last_moved = now
        self.bucket = (
            TokenBucket(
                rate=limits.bytes_per_second_per_pair,
                burst=max(limits.bytes_per_second_per_pair * BURST_SECONDS, 1),
                now=now,
            )
            if limits.bytes_per_second_per_pair is not None
            else None
        )
        loop = asyncio.get_running_loop()
        self._idle = loop.call_at(now + limits.idle_seconds, self._check_idle)
        self._rate: asyncio.TimerHandle | None = None
        self.over = False

    def partner(self, end: _End) -> _End:
        return self.ends[1] if end is self.ends[0] else self.ends[0]

    def forward(self, src: _End, data: memoryview) -> bool:
        """Pass *data* from *src* to its partner within the limits; True if the partner
        holds *data* (so *src* must not reuse its buffer)."""
        if self.over:
            return False
        if self.max_bytes is not None and self.moved + len(data) > self.max_bytes:
            data = data[: self.max_bytes - self.moved]
            self.over = True
        now = asyncio.get_running_loop().time()
        self.moved += len(data)
        self.last_moved = now
        self.relay.metrics.relay_bytes.inc(len(data))
        held = self.partner(src).write(data) if data else False
        if self.over:
            logger.debug("relay: a pair reached its byte limit")
            self.close()
            return held
        if self.bucket is not None:
            delay = self.bucket.spend(len(data), now=now)
            if delay > 0 and self._rate is None:
                for end in self.ends:
                    end.pause("rate")
                self._rate = asyncio.get_running_loop().call_later(delay, self._refilled)
        return held

    def _refilled(self) -> None:
        self._rate = None
        for end in self.ends:
            end.resume("rate")

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        due = self.last_moved + self.relay.limits.idle_seconds
        if loop.time() >= due:
            logger.debug("relay: closed an idle pair")
            self.close()
        else:
            self._idle = loop.call_at(due, self._check_idle)

    def close(self, *, abort: bool = False) -> None:
        self._idle.cancel()
        if self._rate is not None:
            self._rate.cancel()
        for end in self.ends:
            end.close(abort=abort)


class RelayServer:
    """The relay of one ``sfs serve`` node: the route's handler and everything it holds."""

    def __init__(self, limits: RelayLimits, metrics: Metrics) -> None:
        self.limits = limits
        self.metrics = metrics
        self.table = RelayTable(limits)
        self._ends: dict[Hashable, _End] = {}
        self._ids = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /relay``: a raw upgrade or a WebSocket."""
        upgrade = request.headers.get("Upgrade", "").lower()
        if upgrade == "websocket":
            return await self._handle_ws(request)
        if upgrade != UPGRADE:
            return web.Response(status=400, text="send Upgrade: sfs-relay (or a WebSocket)\n")
        transport = request.transport
        if transport is None or transport.is_closing() or self._stopping:
            return web.Response(status=503, text="the relay is closing\n")
        conn_id = next(self._ids)
        token = token_from_header(request.headers.get(TOKEN_HEADER))
        decision = self.table.arrive(conn_id, _address(transport), token, now=_now())
        if isinstance(decision, Refuse):
            self.metrics.relay_refused.labels(reason=decision.reason.value).inc()
            status = REFUSAL_STATUS[decision.reason]
            return web.Response(status=status, text=REFUSAL_TEXT[decision.reason] + "\n")
        end = _RawEnd(self, conn_id, transport)
        self._ends[conn_id] = end
        if isinstance(decision, Pair):
            self._pair(decision)
        self._schedule()
        try:
            await end.closed
        finally:
            if not end.closed.done():  # cancelled: the server is stopping
                end.close(abort=True)
        # The connection is gone: aiohttp's attempt to send this ends quietly.
        return web.Response(status=204)

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=WS_MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        try:
            async with asyncio.timeout(self.limits.wait_seconds):
                first = await ws.receive()
        except TimeoutError:
            first = None
        if first is None or first.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
            await ws.close()
            return ws
        conn_id = next(self._ids)
        token = token_from_message(first.data if first.type == WSMsgType.BINARY else "?")
        transport = request.transport
        address = _address(transport) if transport is not None else "unknown"
        decision = self.table.arrive(conn_id, address, token, now=_now())
        if isinstance(decision, Refuse):
            self.metrics.relay_refused.labels(reason=decision.reason.value).inc()
            code = WS_CLOSE_BASE + REFUSAL_STATUS[decision.reason]
            await ws.close(code=code, message=REFUSAL_TEXT[decision.reason].encode())
            return ws
        end = _WsEnd(self, conn_id, ws)
        self._ends[conn_id] = end
        if isinstance(decision, Pair):
            self._pair(decision)
        self._schedule()
        await end.run()
        return ws

    def _pair(self, decision: Pair) -> None:
        first, second = self._ends[decision.first], self._ends[decision.second]
        pair = _Pair(self, first, second, now=_now())
        # Both answers in this step of the loop; only then what either sent early.
        first.paired(pair)
        second.paired(pair)
        for end in (first, second):
            end.flush_early()
        logger.debug("relay: paired two connections (%d pairs)", self.table.active_pairs)

    def gone(self, end: _End) -> None:
        """*end*'s connection is closed: forget it, close its partner."""
        if self._ends.pop(end.conn_id, None) is None:
            return
        partner = self.table.leave(end.conn_id, now=_now())
        if end.pair is not None:
            end.pair.close()
        elif partner is not None:  # cannot happen: a paired end has its pair
            self._ends[partner].close()
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self.table.next_deadline()
        if due is not None and not self._stopping:
            self._timer = asyncio.get_running_loop().call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        wait = self.limits.wait_seconds
        for conn_id in self.table.handle_timer(_now()):
            end = self._ends.get(conn_id)
            if end is not None:
                self.metrics.relay_refused.labels(reason=NO_PARTNER).inc()
                end.refuse(NO_PARTNER_STATUS, f"no partner came within {wait:g} s")
        self._schedule()

    def close_all(self) -> None:
        """Close every relay connection now (the server is stopping)."""
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
        for end in list(self._ends.values()):
            end.close(abort=True)


def _now() -> float:
    return asyncio.get_running_loop().time()


def _address(transport: asyncio.BaseTransport) -> str:
    """The client's address (the table counts it per address_key: an IPv6 /64)."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
