"""Which TCP connections the signaling server takes, and what it holds for them.

Every TCP connection counts against a cap per client address (per /64 for IPv6)
and against the file descriptor limit, with a reserve kept so that ``/healthz``
answers when Socket.IO clients are turned away (:class:`Admission`, applied by
:class:`Gate` before aiohttp sees the connection); and what waits unread for a
client is bounded in bytes per connection and in all (:class:`QueueMeter`, fed by
each session's :class:`MeteredQueue`).  The server (sfs.signal.server) wires them
in and decides whom to drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from aiohttp import web

from sfs.defaults import FD_SPARE, LISTEN_BACKLOG
from sfs.signal.addresses import is_loopback
from sfs.signal.config import ServerConfig
from sfs.signal.registry import address_key

logger = logging.getLogger(__name__)

# The kernel's send buffer per connection.  Left to autotuning it grows to
# tcp_wmem's maximum (4 MiB by default) for a client that does not read, outside
# every budget here; signaling messages are at most a sealed SDP (64 KiB).
SEND_BUFFER_BYTES = 64 * 1024
# The share of a packet queued for a client beyond its payload (the objects that
# carry it), so that a flood of tiny packets also counts.
PACKET_OVERHEAD_BYTES = 64
# Where python-socketio serves (its default path).
SOCKETIO_PATH = "/socket.io/"
# Where the relay serves (sfs.signal.relay_server.RELAY_PATH): its connections last as
# long as a transfer, so they count as sessions against the fd reserve too.
RELAY_PATH = "/relay"

WebHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Admission:
    """Which TCP connections to take: per client address, and within the fd limit (no I/O).

    Every connection costs a file descriptor, and once the process has none left,
    accept() fails for everyone, ``/healthz`` included.  So the fds are shared out:
    websocket sessions may use all but *fd_reserve* of them, and only plain
    requests and connections that have yet to send one go beyond that.  The last
    ``LISTEN_BACKLOG + FD_SPARE`` fds are never used: one pass of the event loop
    may accept that many at once; before they are reached, :meth:`must_shed` asks
    for the oldest connection without a request to be closed.

    :param max_per_address: connections one :func:`address_key` may hold
    :param fd_reserve: fds websocket sessions leave to everything else
    """

    def __init__(self, *, max_per_address: int, fd_reserve: int, loopback_extra: int = 0) -> None:
        self._max_per_address = max_per_address
        self._loopback_extra = loopback_extra
        self._fd_reserve = fd_reserve
        self._fd_limit = float("inf")  # until set_fd_limit()
        self._fds_before = 0
        self._by_address: Counter[str] = Counter()
        self.connections = 0
        self.sessions = 0

    def set_fd_limit(self, fd_limit: int, *, fds_in_use: int) -> None:
        """The process's fd limit, and the fds it holds before any connection."""
        self._fd_limit = fd_limit
        self._fds_before = fds_in_use

    @property
    def fds_in_use(self) -> int:
        return self._fds_before + self.connections

    @property
    def session_capacity(self) -> float:
        """Websocket sessions the fd limit leaves room for."""
        return max(self._fd_limit - self._fd_reserve - self._fds_before, 0)

    @property
    def tracked_addresses(self) -> int:
        return len(self._by_address)

    def open(self, key: str) -> bool:
        """Count a new connection from *key*; False (and nothing counted) if it has its share."""
        limit = self._max_per_address
        if self._loopback_extra and is_loopback(key):
            limit += self._loopback_extra
        if self._by_address[key] >= limit:
            return False
        self._by_address[key] += 1
        self.connections += 1
        return True

    def close(self, key: str) -> None:
        """Forget one connection that :meth:`open` counted."""
        left = self._by_address[key] - 1
        if left > 0:
            self._by_address[key] = left
        else:
            del self._by_address[key]
        self.connections -= 1

    def must_shed(self) -> bool:
        """True when a connection must go before the fds a burst of accepts needs are used."""
        return self.fds_in_use > self._fd_limit - LISTEN_BACKLOG - FD_SPARE

    def start_session(self) -> bool:
        """Count a websocket session; False if it would eat into the reserve."""
        if self.sessions >= self.session_capacity:
            return False
        self.sessions += 1
        return True

    def end_session(self) -> None:
        self.sessions -= 1


class QueueMeter:
    """Bytes waiting for clients to read them, per queue and in all (no I/O).

    :param per_queue: what one client may leave unread
    :param total: what all of them together may
    """

    def __init__(self, *, per_queue: int, total: int) -> None:
        self.per_queue = per_queue
        self.total = total
        self.queued_bytes = 0
        self._by_queue: dict[Hashable, int] = {}

    def add(self, queue: Hashable, n: int) -> None:
        self._by_queue[queue] = self._by_queue.get(queue, 0) + n
        self.queued_bytes += n

    def remove(self, queue: Hashable, n: int) -> None:
        left = self._by_queue.get(queue, 0) - n
        if left > 0:
            self._by_queue[queue] = left
        else:
            self._by_queue.pop(queue, None)
        self.queued_bytes -= n

    def forget(self, queue: Hashable) -> None:
        """Stop counting *queue* (its client is gone), whatever it still holds."""
        self.queued_bytes -= self._by_queue.pop(queue, 0)

    def queued(self, queue: Hashable) -> int:
        return self._by_queue.get(queue, 0)

    def over_total(self) -> bool:
        return self.queued_bytes > self.total

    def largest(self) -> Hashable | None:
        """The queue holding the most, or None if all are empty."""
        if not self._by_queue:
            return None
        return max(self._by_queue, key=self._by_queue.__getitem__)

    @property
    def tracked_queues(self) -> int:
        return len(self._by_queue)


def _packet_bytes(pkt: object) -> int:
    data = getattr(pkt, "data", None)
    return PACKET_OVERHEAD_BYTES + (len(data) if isinstance(data, str | bytes) else 0)


class MeteredQueue(asyncio.Queue[Any]):
    """engine.io's queue of packets for one client, counted by a :class:`QueueMeter`.

    engine.io makes one per session (``create_queue``) and its writer task takes
    packets from it as fast as the client reads, so what it holds is what the
    client has left unread (beyond the transport's own bounded buffer).
    """

    def __init__(self, meter: QueueMeter) -> None:
        super().__init__()
        self._meter = meter
        self.owner: str | None = None  # the engine.io session ID, once it is known
        self.closed = False

    def _put(self, item: Any) -> None:
        super()._put(item)
        if item is not None and not self.closed:  # None: engine.io's end-of-queue marker
            self._meter.add(self, _packet_bytes(item))

    def _get(self) -> Any:
        item = super()._get()
        if item is not None and not self.closed:
            self._meter.remove(self, _packet_bytes(item))
        return item

    def close(self) -> None:
        """Stop counting: the session is gone, whatever is left goes with it."""
        self.closed = True
        self._meter.forget(self)


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one TCP connection, behind :class:`Gate`'s checks."""

    def __init__(self, gate: Gate, inner: asyncio.Protocol) -> None:
        self.gate = gate
        self.inner = inner
        self.key: str | None = None  # counted under this address key while set
        self.transport: asyncio.BaseTransport | None = None
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self.gate.admit(self):
            transport.abort()  # type: ignore[attr-defined]
            return
        self._admitted = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self._admitted else None

    def pause_writing(self) -> None:
        if self._admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.release(self)
        if self._admitted:
            self.inner.connection_lost(exc)


class Gate:
    """Counts TCP connections with :class:`Admission`, before aiohttp sees them.

    Connections that have not sent a request yet are kept oldest first: under fd
    pressure the oldest is closed to make room.  Its middleware turns websocket
    sessions away with 503 when only the reserve is left, and closes every other
    connection after its one response, so that each connection is waiting for its
    first request (bounded by the header timeout), being answered, or a session.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.admission = Admission(
            max_per_address=config.max_connections_per_address,
            fd_reserve=config.fd_reserve,
            loopback_extra=config.loopback_extra_connections,
        )
        self._waiting: dict[object, _GuardedProtocol] = {}  # by aiohttp's protocol
        self._shedding = False

    def wrap(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for the listening socket, around aiohttp's *make*."""
        return lambda: _GuardedProtocol(self, make())

    def admit(self, conn: _GuardedProtocol) -> bool:
        assert conn.transport is not None
        peer = conn.transport.get_extra_info("peername")
        key = address_key(str(peer[0]) if isinstance(peer, tuple) and peer else "unknown")
        if not self.admission.open(key):
            logger.debug("closed a connection from %s: too many from there", key)
            return False
        conn.key = key
        shedding = self.admission.must_shed()
        if shedding and not self._shedding:  # once per episode, not per connection
            logger.warning(
                "file descriptors are running out (%d in use): closing connections "
                "that have not sent a request, oldest first",
                self.admission.fds_in_use,
            )
        self._shedding = shedding
        while self.admission.must_shed() and self._waiting:
            oldest = self._waiting.pop(next(iter(self._waiting)))
            self._uncount(oldest)
            if oldest.transport is not None:
                oldest.transport.abort()  # type: ignore[attr-defined]
        if self.admission.must_shed():  # nothing left to shed: this one cannot stay
            self._uncount(conn)
            return False
        sock = conn.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        self._waiting[conn.inner] = conn
        return True

    def release(self, conn: _GuardedProtocol) -> None:
        self._waiting.pop(conn.inner, None)
        self._uncount(conn)

    def _uncount(self, conn: _GuardedProtocol) -> None:
        if conn.key is not None:
            self.admission.close(conn.key)
            conn.key = None

    @web.middleware
    async def middleware(self, request: web.Request, handler: WebHandler) -> web.StreamResponse:
        """Count sessions against the fd reserve; one response per plain connection."""
        self._waiting.pop(request.protocol, None)  # it has sent its request
        session = request.path.startswith(SOCKETIO_PATH) or request.path == RELAY_PATH
        if session and not self.admission.start_session():
            logger.debug("refused a long-lived client: file descriptors are running out")
            busy = web.Response(status=503, text="server busy, try again later")
            busy.force_close()
            return busy
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.force_close()
            raise
        finally:
            if session:
                self.admission.end_session()
        response.force_close()
        return response
