"""The direct TCP transport: a :class:`~sfs.peer.transport.channel.Channel` over one TCP
connection between the peers, for when they can reach each other directly.

aiortc's SCTP is pure Python and moves ~30 MiB/s; where two sfs CLIs can simply
reach each other, a TCP connection carries the same sealed frames at disk speed.

Each peer listens on an ephemeral port of its host addresses and puts them in its
sealed offer or answer (``"tcp": ["host:port", …]``), so the signaling server neither
sees nor alters them; each dials every address of the other at once.  A connection
carries the transfer only after both ends proved the session key on it, before any
frame (:class:`sfs.peer.proto.proof.Prover`)::

    dialer   -> listener:  MAGIC (8) | nonce_d (16)
    listener -> dialer:    nonce_l (16) | HMAC(proof key of the listener's role, "L" | T)
    dialer   -> listener:  HMAC(proof key of the dialer's role, "D" | T)
    T = MAGIC | nonce_d | nonce_l

Fresh nonces from both ends make a recorded handshake useless; keys per role (and
"L"/"D") make a reflected one fail; a third party that connects first learns
nothing it can use and is closed.  The sender then picks the first proven connection
by sending CHOSEN (one byte) on it; every other connection is closed.  If no TCP
connection is proven in time, the sender sends CHOSEN on the DataChannel instead,
and the transfer runs there.  Transfer frames are the usual sealed frames, under keys
of their own (HKDF labels ``sfs/1 tcp …``: no nonce is ever used under one key on two
transports), each preceded by its length (4 bytes, big endian).
"""

from __future__ import annotations

import asyncio
import enum
import errno
import ipaddress
import logging
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

from sfs.defaults import MAX_CHUNK_BYTES
from sfs.errors import (
    CryptoError,
    PeerGoneError,
    RemoteProtocolError,
    SfsError,
    connection_end,
)
from sfs.peer.proto.crypto import (
    SessionKeys,
)
from sfs.peer.proto.proof import Prover as Prover
from sfs.peer.transport.channel import Route
from sfs.socks import Socks

#: ioctl(SIOCOUTQ) (= TIOCOUTQ) on Linux: the bytes in a TCP socket's send queue.
_SIOCOUTQ: int | None = 0x5411 if sys.platform == "linux" else None

logger = logging.getLogger(__name__)

#: What the sender sends on the connection it chose, before any frame: on a proven
#: TCP connection, or as the DataChannel's first message when TCP was not to be had.
CHOSEN = b"\x01"
_LENGTH = struct.Struct(">I")
#: The largest frame a TcpLink takes (a 4 MiB frame is far beyond what pays).
MAX_FRAME_BYTES = 1024 * 1024 + 64
#: Frames read but not yet taken, beyond which the socket stops being read (TCP's
#: own window then holds the peer back): memory stays flat however fast it sends.
READ_LIMIT_BYTES = 8 * 1024 * 1024
#: Bytes given to the transport and not yet to the kernel, beyond which send() waits.
WRITE_HIGH_BYTES = 4 * 1024 * 1024
#: Socket buffers, set before connecting: large enough for a fast LAN.
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
#: How long one dial may take.
DIAL_SECONDS = 3.0
#: The most addresses taken from the other side's sealed list.
MAX_ADDRESSES = 8
#: The lowest port dialled: sfs listens on an ephemeral port, never a privileged one,
#: so a lower port in a peer's list can only aim at somebody else's service.
MIN_PORT = 1024

# -- what a listener holds for strangers --------------------------------------------------
# Anyone who reaches a listening port can connect and say nothing, or dribble a byte
# now and then.  Such connections cost a socket each, so a listening side holds at
# most MAX_UNPROVEN unproven ones, and at most MAX_UNPROVEN_PER_SOURCE from one source
# (an IPv4 address, or an IPv6 /64: one host commonly has a whole /64), far below the
# total so that one host cannot fill it.  A newcomer past either cap is let in and the
# weakest unproven connection of that source (or, past the total, of all) is closed:
# one whose hello (magic and nonce, 24 bytes) has not arrived whole, oldest first.
# Refusing newcomers instead would let whoever came first keep the real peer out.
# The real peer's dialer sends its hello with its connect, so it is never the weakest
# while a silent or slow stranger is held; it proves one round trip later.  Only a
# flood of complete hellos from its own source, more than MAX_UNPROVEN_PER_SOURCE
# within that round trip, could push it out (SECURITY.md says so).
#: Unproven connections accepted at once, on all listeners of one side (sockets).
MAX_UNPROVEN = 32
#: Of them, from one source (sockets).
MAX_UNPROVEN_PER_SOURCE = 4
#: The IPv6 prefix that counts as one source (bits).
SOURCE_PREFIX_V6_BITS = 64
#: How long a connection may take to prove the key, from its connect (seconds): the
#: real peer needs one round trip and a half; a stranger's socket is freed by then.
PROOF_SECONDS = 3.0
#: How long a side lets its direct dials and WebRTC try before it joins the relay
#: (magic-wormhole's transit gives the peers the same head start): on a LAN the
#: direct connection is chosen first and the relay never sees the pair.
RELAY_HEAD_START_SECONDS = 1.5

#: Connects to the relay at a URL with the session's token and, once the partner is
#: there, runs the protocol the factory makes on the connection
#: (:func:`sfs.peer.transport.relay.open_relay`); raises an SfsError saying why not.
JoinRelay = Callable[
    [str, bytes, Callable[[], "TcpLink"]], Awaitable[tuple[asyncio.Transport, "TcpLink"]]
]


# -- one connection ---------------------------------------------------------------------------


class _Stage(enum.Enum):
    PROVING = "proving"
    AWAITING_CHOICE = "awaiting_choice"  # the receiver's end, proven
    FRAMES = "frames"
    CLOSED = "closed"


class TcpLink(asyncio.BufferedProtocol):
    """One TCP connection to the peer: first the proof, then the Channel.

    Reads go straight into each frame's own buffer (no copy, no coroutine per frame);
    reading pauses while more than READ_LIMIT_BYTES wait to be taken, and send()
    waits while the transport holds more than WRITE_HIGH_BYTES.
    """

    route = Route("tcp")
    #: 256 KiB frames: measured fastest on this path (64 and 128 KiB moved 10 % less,
    #: 512 KiB and 1 MiB a third less; docs/PERFORMANCE.md).
    preferred_chunk_size = MAX_CHUNK_BYTES

    def __init__(
        self,
        prover: Prover,
        *,
        awaits_choice: bool,
        on_made: Callable[[TcpLink], None] | None = None,
        relayed_by: str = "",
    ) -> None:
        loop = asyncio.get_running_loop()
        if relayed_by:
            self.route = Route("server", relayed_by)
        #: Through sfs serve's relay (the host), not to the peer itself.
        self.relayed_by = relayed_by
        self.max_message_size = MAX_FRAME_BYTES
        self.peer = ""
        #: Where the connection comes from, as a listener counts it (source_of).
        self.source = ""
        self.since = time.monotonic()
        self._on_made = on_made
        self._prover = prover
        self._awaits_choice = awaits_choice
        self._stage = _Stage.PROVING
        self._transport: asyncio.Transport | None = None
        #: Resolved once both ends proved the key here; an exception if they did not.
        self.proven: asyncio.Future[TcpLink] = loop.create_future()
        #: (Receiver's end) resolved when the sender chose this connection.
        self.chosen: asyncio.Future[TcpLink] = loop.create_future()
        self._want = bytearray(prover.wanted or 1)
        self._filled = 0
        self._length: int | None = None
        self._inbox: deque[bytearray] = deque()
        self._held = 0
        self._paused = False
        self._arrived = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closed = asyncio.Event()
        self._error: Exception | None = None
        self._last_heard = time.monotonic()
        self._proof_timer = loop.call_later(PROOF_SECONDS, self._proof_overdue)

    # -- asyncio.BufferedProtocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but are ones.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_BYTES)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        self.source = source_of(str(peer[0])) if isinstance(peer, tuple) else ""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            tune(sock)
        if hello := self._prover.hello():
            transport.write(hello)
        if self._on_made is not None:
            self._on_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._want)[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self._last_heard = time.monotonic()
        self._filled += nbytes
        if self._filled < len(self._want):
            return
        try:
            if self._stage is _Stage.FRAMES:
                self._frame_part_done()
            elif self._stage is _Stage.PROVING:
                self._proof_part_done()
            elif self._stage is _Stage.AWAITING_CHOICE:
                self._choice_done()
        except (CryptoError, RemoteProtocolError) as exc:
            self._fail(exc)

    def _proof_part_done(self) -> None:
        reply = self._prover.receive(bytes(self._want))
        if reply and self._transport is not None:
            self._transport.write(reply)
        if not self._prover.proven:
            self._expect(self._prover.wanted)
            return
        self._proof_timer.cancel()
        if self._awaits_choice:
            self._stage = _Stage.AWAITING_CHOICE
            self._expect(len(CHOSEN))
        else:
            self._stage = _Stage.FRAMES
            self._expect(_LENGTH.size)
        if not self.proven.done():
            self.proven.set_result(self)

    def _choice_done(self) -> None:
        if bytes(self._want) != CHOSEN:
            raise RemoteProtocolError("the other side sent something else than its choice")
        self._stage = _Stage.FRAMES
        self._expect(_LENGTH.size)
        if not self.chosen.done():
            self.chosen.set_result(self)

    def _frame_part_done(self) -> None:
        if self._length is None:
            (length,) = _LENGTH.unpack(self._want)
            if not 0 < length <= MAX_FRAME_BYTES:
                raise RemoteProtocolError(
                    f"the other side sent a frame of {length} bytes (at most {MAX_FRAME_BYTES})"
                )
            self._length = length
            self._expect(length)
            return
        self._inbox.append(self._want)
        self._held += self._length
        self._length = None
        self._expect(_LENGTH.size)
        self._arrived.set()
        if self._held > READ_LIMIT_BYTES and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _expect(self, n: int) -> None:
        self._want = bytearray(n)
        self._filled = 0

    def eof_received(self) -> bool | None:
        self._end(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)

    def pause_writing(self) -> None:
        self._drained.clear()

    def resume_writing(self) -> None:
        self._drained.set()

    def _end(self, exc: Exception | None) -> None:
        # Called twice when the peer's FIN comes first (eof_received, then
        # connection_lost, perhaps with the reset its kernel sent for what arrived after
        # it closed): the second call may say why, never that a link that carried frames
        # was not set up.
        self._proof_timer.cancel()
        if self._stage in (_Stage.PROVING, _Stage.AWAITING_CHOICE) and self._error is None:
            self._error = PeerGoneError("the direct connection closed before it was set up")
        if exc is not None and self._error is None:
            self._error = PeerGoneError(f"the direct connection broke: {connection_end(exc)}")
        if self._length is not None or self._filled:
            # Cut inside a frame: what came is not a frame, and says so.
            self._error = self._error or PeerGoneError("the direct connection broke mid-frame")
        self._stage = _Stage.CLOSED
        self._settle()
        self._closed.set()
        self._arrived.set()
        self._drained.set()

    def _settle(self) -> None:
        error = self._error or PeerGoneError()
        for future in (self.proven, self.chosen):
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a connection that failed is no news

    def _proof_overdue(self) -> None:
        self._fail(CryptoError("the other end of a direct connection did not prove itself in time"))

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        logger.debug("direct connection %s: %s", self.peer, error)
        if self._transport is not None:
            self._transport.abort()
        self._end(None)

    # -- Channel ------------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        if self._closed.is_set() or self._transport is None:
            if self._inbox:
                # The peer closed after frames not yet read (its last word, a CANCEL,
                # behind data): what it said comes first, and receive() says it is
                # gone once they are read. A PING or an ack now goes nowhere.
                logger.debug("a frame not sent: the other side closed; reading its last")
                return
            raise self._gone()
        self._transport.writelines((_LENGTH.pack(len(frame)), frame))

    @property
    def congested(self) -> bool:
        return not self._drained.is_set()

    async def drain(self) -> None:
        await self._drained.wait()
        if self._closed.is_set() and self._error is not None:
            raise self._gone()

    async def receive(self) -> bytes:
        while True:
            frame = self.poll()
            if frame is not None:
                return frame
            if self._closed.is_set():
                raise self._gone()
            self._arrived.clear()
            await self._arrived.wait()

    def poll(self) -> bytes | None:
        if not self._inbox:
            if self._closed.is_set() and self._error is not None:
                raise self._error
            return None
        frame = self._inbox.popleft()
        self._held -= len(frame)
        if self._paused and self._held <= READ_LIMIT_BYTES // 2 and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        # A bytearray is bytes-like everywhere a frame goes (AES-GCM, struct, slicing).
        return frame  # type: ignore[return-value]

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def seconds_since_receive(self) -> float:
        return time.monotonic() - self._last_heard

    def unsent_bytes(self) -> int:
        if self._transport is None:
            return 0
        return self._transport.get_write_buffer_size() + self._kernel_unacked()

    def _kernel_unacked(self) -> int:
        """What the kernel's send queue still holds, unsent or not yet acknowledged by
        the peer's TCP (Linux's SIOCOUTQ; 0 elsewhere): megabytes on a slow link."""
        sock = None if self._transport is None else self._transport.get_extra_info("socket")
        if sock is None or _SIOCOUTQ is None:
            return 0
        import fcntl  # POSIX only

        try:
            held = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return 0
        return max(0, int.from_bytes(held, sys.byteorder, signed=True))

    @property
    def open(self) -> bool:
        return self._transport is not None and self._stage is not _Stage.CLOSED

    @property
    def usable(self) -> bool:
        return self._stage is _Stage.FRAMES

    @property
    def accepted(self) -> bool:
        """A listener accepted this connection (this side did not dial it)."""
        return not self._prover.dialer and not self.relayed_by

    @property
    def closed(self) -> bool:
        return self._stage is _Stage.CLOSED

    @property
    def unproven(self) -> bool:
        """Still proving the key, and not closed."""
        return self._stage is _Stage.PROVING

    @property
    def knock(self) -> Knock:
        """What a listener weighs when it must close one unproven connection."""
        return Knock(self.source, self._prover.greeted, self.since)

    def evict(self) -> None:
        """Close this unproven connection to make room for a newer one."""
        self._fail(PeerGoneError("closed unproven to make room for a newer connection"))

    def choose(self) -> None:
        """(Sender) make this the connection of the transfer: tell the other end."""
        assert self._transport is not None
        assert self._stage is _Stage.FRAMES
        self._transport.write(CHOSEN)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        else:
            self._end(None)

    def _gone(self) -> Exception:
        return self._error or PeerGoneError()


def tune(sock: Any) -> None:
    """No Nagle delay for the small control frames; large buffers for a fast link."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        logger.debug("could not set TCP_NODELAY", exc_info=True)
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        except OSError:  # capped by the system: what it allows is fine
            logger.debug("could not set a socket buffer", exc_info=True)


# -- both ends of the attempt -----------------------------------------------------------------


# -- pure rules: whom a listener closes, whom a side dials ------------------------------------


def source_of(host: str) -> str:
    """The source a connection from ``host`` counts against: the IPv4 address (also
    when written IPv4-mapped), or the IPv6 address's /SOURCE_PREFIX_V6_BITS prefix."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        bare = ipaddress.IPv6Address(int(address))  # without a scope
        return str(ipaddress.IPv6Network((bare, SOURCE_PREFIX_V6_BITS), strict=False))
    return str(address)


@dataclass(frozen=True)
class Knock:
    """What a listener knows of one unproven connection it accepted."""

    #: :func:`source_of` its address.
    source: str
    #: Its hello arrived whole (the real peer's always has, one round trip before it proves).
    greeted: bool
    #: When it connected (monotonic seconds).
    since: float


def to_evict(held: Sequence[Knock], source: str) -> int | None:
    """Which of the unproven connections ``held`` to close as a newcomer from
    ``source`` comes in (its index), or None while both caps have room.

    Past MAX_UNPROVEN_PER_SOURCE, one of the newcomer's own source; else past
    MAX_UNPROVEN, one of all.  The weakest goes: not greeted before greeted, then
    the oldest."""
    same = [i for i, knock in enumerate(held) if knock.source == source]
    if len(same) >= MAX_UNPROVEN_PER_SOURCE:
        candidates = same
    elif len(held) >= MAX_UNPROVEN:
        candidates = list(range(len(held)))
    else:
        return None
    return min(candidates, key=lambda i: (held[i].greeted, held[i].since))


_Ip = ipaddress.IPv4Address | ipaddress.IPv6Address
#: IPv4 0.0.0.0/8 is "this network": Linux connects 0.0.0.0 to this machine itself.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def _plain(address: _Ip) -> _Ip:
    """An IPv4-mapped IPv6 address as the IPv4 address it is (the socket reaches that)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _link_local_here(address: _Ip, own: Sequence[_Ip]) -> bool:
    """A link-local address is reachable only over a link this side is on: one of its
    own addresses is link-local too (IPv6: with the same scope, the interface)."""
    if isinstance(address, ipaddress.IPv6Address):
        scopes = {
            o.scope_id for o in own if isinstance(o, ipaddress.IPv6Address) and o.is_link_local
        }
        return address.scope_id is not None and address.scope_id in scopes
    return any(isinstance(o, ipaddress.IPv4Address) and o.is_link_local for o in own)


def _refusal(address: _Ip, port: int, own: Sequence[_Ip]) -> str | None:
    """Why ``address``:``port`` from the other side's list is not dialled, or None.

    The list comes from whoever holds the code, before anyone accepted anything:
    only an address the peer could have, that this side could reach, is dialled."""
    if port < MIN_PORT:
        return "a privileged port, where sfs never listens"
    if address.is_unspecified or address in _THIS_NETWORK:
        return "unspecified (it would reach this machine)"
    if address.is_multicast:
        return "multicast"
    if address.is_loopback:
        if any(o.is_loopback for o in own):
            return None
        return "loopback, and this side is not on loopback (the peer is elsewhere)"
    if address.is_reserved:  # IPv4 240.0.0.0/4 with 255.255.255.255; IPv6 ::/8 and more
        return "reserved or broadcast"
    if address.is_link_local and not _link_local_here(address, own):
        return "link-local, on no link of this side"
    return None


def dialable(
    offered: Sequence[tuple[str, int]], *, own_hosts: Sequence[str]
) -> tuple[list[tuple[str, int]], list[tuple[str, int, str]]]:
    """Split the other side's parsed addresses into those to dial and those refused
    (with the reason), given the hosts this side listens on.

    Loopback is dialled only by a side that is on loopback itself (its own hosts
    include one, as ``--ice-address 127.0.0.1`` makes them): such a side can only
    have been reached by a peer on this machine, which could connect to any local
    port anyway.  Duplicates go; at most MAX_ADDRESSES are kept."""
    own = [_plain(ipaddress.ip_address(h)) for h in own_hosts]
    kept: list[tuple[str, int]] = []
    refused: list[tuple[str, int, str]] = []
    for host, port in offered:
        address = _plain(ipaddress.ip_address(host))
        reason = _refusal(address, port, own)
        if reason is not None:
            refused.append((host, port, reason))
        elif (str(address), port) not in kept and len(kept) < MAX_ADDRESSES:
            kept.append((str(address), port))
    return kept, refused


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_addresses(offered: object) -> list[tuple[str, int]]:
    """The other side's listening addresses from its sealed description: a list of
    ``"host:port"`` / ``"[v6]:port"`` strings with IP literals; anything else is
    skipped, and at most MAX_ADDRESSES are kept."""
    if not isinstance(offered, list | tuple):
        return []
    found: list[tuple[str, int]] = []
    for entry in offered:
        if not isinstance(entry, str) or len(found) >= MAX_ADDRESSES:
            continue
        host, sep, port = entry.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            continue
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            continue
        found.append((str(address), int(port)))
    return found


class DirectPath:
    """One side's listeners and dials for one session, and the connections they made.

    :param sender: the sender chooses the connection, the receiver waits to be told.
    :param keys: the session keys (their proof keys are used here).
    :param hosts: this side's addresses: it listens on them, and they say which of
        the other side's addresses it may dial (:func:`dialable`).
    """

    def __init__(
        self,
        *,
        sender: bool,
        keys: SessionKeys,
        hosts: Sequence[str],
        proxy: Socks | None = None,
    ) -> None:
        self._sender = sender
        # --proxy: dials go through it, and nothing listens (nothing could come in
        # through it; a listener would only show where this side is).
        self._proxy = proxy
        self._keys = keys
        self._hosts = tuple(hosts)
        self._servers: list[asyncio.AbstractServer] = []
        self._links: list[TcpLink] = []
        self._dials: list[asyncio.Task[None]] = []
        #: Proven connections, or the relay's failure when it was the only way.
        self._proven: asyncio.Queue[TcpLink | SfsError] = asyncio.Queue()
        self._chosen: asyncio.Future[TcpLink] = asyncio.get_running_loop().create_future()
        self._taken: TcpLink | None = None
        #: A relay joins (or joined) the attempt: a connection may still come after
        #: the direct dials gave up.
        self.relaying = False
        #: Why the relay gave no connection, once it gave up.
        self.relay_error: SfsError | None = None
        self._relay_failed = asyncio.Event()

    def _new_link(self, *, dialer: bool, relayed_by: str = "") -> TcpLink:
        prover = Prover(
            dialer=dialer, own_key=self._keys.proof_send, peer_key=self._keys.proof_receive
        )
        on_made = None if dialer or relayed_by else self._admit
        link = TcpLink(
            prover, awaits_choice=not self._sender, on_made=on_made, relayed_by=relayed_by
        )
        self._links.append(link)
        link.proven.add_done_callback(self._on_proven)
        if not self._sender:
            link.chosen.add_done_callback(self._on_chosen)
        return link

    def _accept(self) -> TcpLink:
        return self._new_link(dialer=False)

    def _admit(self, newcomer: TcpLink) -> None:
        """A connection came to a listener: make room for it (module comment above)."""
        if self._taken is not None:
            newcomer.close()
            return
        self._links = [link for link in self._links if not link.closed]
        held = [
            link
            for link in self._links
            if link.accepted and link.unproven and link.open and link is not newcomer
        ]
        victim = to_evict([link.knock for link in held], newcomer.source)
        if victim is not None:
            logger.debug("closing unproven direct connection %s for a newer one", held[victim].peer)
            held[victim].evict()

    @property
    def connected_count(self) -> int:
        """Connections open, proven or still proving."""
        return sum(1 for link in self._links if link.open)

    @property
    def proven_count(self) -> int:
        """Connections proven and still open."""
        return sum(1 for link in self._links if link.open and link.proven.done())

    def _on_proven(self, future: asyncio.Future[TcpLink]) -> None:
        if not future.cancelled() and future.exception() is None:
            logger.debug("direct connection %s proven", future.result().peer)
            self._proven.put_nowait(future.result())

    def _on_chosen(self, future: asyncio.Future[TcpLink]) -> None:
        if not future.cancelled() and future.exception() is None and not self._chosen.done():
            self._chosen.set_result(future.result())

    async def listen(self) -> tuple[str, ...]:
        """Listen on an ephemeral port of each of this side's hosts; return ``host:port``
        strings for the sealed description (none if no address can listen)."""
        loop = asyncio.get_running_loop()
        addresses: list[str] = []
        if self._proxy is not None:
            logger.info("listening for no direct connection: through the proxy, dials only")
            return ()
        for host in self._hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                tune(sock)  # accepted sockets inherit the buffer sizes
                sock.bind((host, 0))
                sock.listen(MAX_UNPROVEN)
                sock.setblocking(False)
                server = await loop.create_server(lambda: self._accept(), sock=sock)
            except OSError as exc:
                sock.close()
                logger.debug("cannot listen on %s: %s", host, exc)
                continue
            self._servers.append(server)
            addresses.append(format_address(host, sock.getsockname()[1]))
        logger.info("listening for a direct connection on %s", ", ".join(addresses) or "nothing")
        return tuple(addresses)

    def dial(self, offered: object) -> None:
        """Dial every address of the other side's sealed list that it could have
        (:func:`dialable`) at once."""
        addresses, refused = dialable(parse_addresses(offered), own_hosts=self._hosts)
        for host, port, reason in refused:
            logger.info("not dialing %s: %s", format_address(host, port), reason)
        logger.info("dialing %s", ", ".join(format_address(*a) for a in addresses) or "nothing")
        for host, port in addresses:
            self._dials.append(asyncio.ensure_future(self._dial(host, port)))

    async def _dial(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if self._proxy is not None:
                sock.close()
                sock = await self._proxy.connect(host, port, DIAL_SECONDS)
            tune(sock)
            sock.setblocking(False)
            if self._proxy is None:
                async with asyncio.timeout(DIAL_SECONDS):
                    await loop.sock_connect(sock, (host, port))
            await loop.create_connection(lambda: self._new_link(dialer=True), sock=sock)
        except (OSError, TimeoutError) as exc:
            sock.close()
            reason = errno.errorcode.get(getattr(exc, "errno", 0) or 0, type(exc).__name__)
            logger.info("dialing %s: %s", format_address(host, port), reason)

    def relay(self, url: str, join: JoinRelay, *, delay: float, sole: bool = False) -> None:
        """Join the pair's relay at ``url`` after ``delay`` seconds: one more connection
        on which the proof runs end to end (the sender dials, the receiver listens),
        so the relay carries only sealed bytes and the choice treats it like any other.

        :param sole: the relay is the only way (``--relay only``): its failure ends
            the attempt at once, with its reason.
        """
        host = urlsplit(url).hostname or url
        self.relaying = True
        self._dials.append(asyncio.ensure_future(self._join(url, host, join, delay, sole)))

    async def _join(self, url: str, host: str, join: JoinRelay, delay: float, sole: bool) -> None:
        await asyncio.sleep(delay)
        logger.info("joining the relay at %s", host)
        try:
            _, link = await join(url, self._keys.relay_token, lambda: self._new_link(
                dialer=self._sender, relayed_by=host
            ))  # fmt: skip
            # What the relay joined this side to must prove the session key: a relay
            # that pairs strangers (or tampers) is found out here, and says so.
            try:
                await link.proven
            except CryptoError:
                raise CryptoError(
                    f"the relay at {host} joined this side to something that did not prove "
                    "the session key: nothing was sent through it"
                ) from None
        except SfsError as exc:
            logger.info("the relay at %s: %s", host, exc)
            self.relay_error = exc
            self._relay_failed.set()
            if sole:
                self._proven.put_nowait(exc)
                if not self._chosen.done():
                    self._chosen.set_exception(exc)
                    self._chosen.exception()  # retrieved: chosen() raises it if asked

    @property
    def relay_pending(self) -> bool:
        """A relayed connection may still come (joined, and the relay has not refused)."""
        return self.relaying and self.relay_error is None

    async def relay_failed(self) -> None:
        """Wait until the relay gave up (never returns while it may yet connect)."""
        await self._relay_failed.wait()

    async def choose(self) -> TcpLink:
        """(Sender) wait for the first proven connection, choose it, close the rest."""
        while True:
            link = await self._proven.get()
            if isinstance(link, SfsError):
                raise link
            if link.usable:  # else closed since it was proven
                break
        link.choose()
        self._taken = link
        await self.close()
        return link

    async def chosen(self) -> TcpLink:
        """(Receiver) wait until the sender chose one of the proven connections."""
        link = await self._chosen
        self._taken = link
        await self.close()
        return link

    async def close(self) -> None:
        """Stop listening and dialing; close every connection but the chosen one."""
        for server in self._servers:
            server.close()
        self._servers.clear()
        for task in self._dials:
            task.cancel()
        await asyncio.gather(*self._dials, return_exceptions=True)
        self._dials.clear()
        for link in self._links:
            if link is not self._taken:
                link.close()
        self._links = [] if self._taken is None else [self._taken]
