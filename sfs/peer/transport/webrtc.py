"""aiortc glue: the only module that touches RTCPeerConnection and RTCDataChannel.

It turns one aiortc DataChannel into the small :class:`~sfs.peer.transport.channel.Channel`
interface, with backpressure through ``bufferedAmountLowThreshold`` and the
``bufferedamountlow`` event (never sleep-polling), and it controls which ICE
candidates are gathered: explicit ICE servers only (aiortc's default would contact
a public STUN server) and, optionally, host candidates restricted to given
addresses, which also lets two peers meet on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCSctpTransport,
    RTCSessionDescription,
)
from aiortc import sdp as sdp_parser

from sfs.defaults import DEFAULT_CHUNK_BYTES, MAX_STREAMS
from sfs.errors import (
    IceFailedError,
    PeerConnectionError,
    PeerGoneError,
    SfsError,
)
from sfs.peer.proto.crypto import SessionKeys
from sfs.peer.transport.channel import Route
from sfs.peer.transport.gathering import (
    AIOICE_PROBLEM,
    PairEnd,
    aioice_unusable,
    gather_from_servers,
    gathering_on,
    ice_urls,
    local_networks,
    route_of,
)
from sfs.peer.transport.quic import WRITE_HIGH_BYTES, QuicPath
from sfs.peer.transport.sctp_congestion import CongestionControl, congestion_internals_fit
from sfs.peer.transport.sctp_window import ReceiveWindow, sctp_internals_fit
from sfs.peer.transport.striping import StripedChannel
from sfs.peer.transport.tcp import TcpLink
from sfs.signal.messages import IceServer

logger = logging.getLogger(__name__)

#: The backpressure mark: stop queueing new frames while this much is buffered.
HIGH_WATER_BYTES = 16 * 1024 * 1024
#: Resume when the buffer drains to this (half the high-water mark).
LOW_WATER_BYTES = HIGH_WATER_BYTES // 2
#: RFC 8841: an endpoint that does not advertise a=max-message-size accepts 64 KiB.
DEFAULT_REMOTE_MAX_MESSAGE_BYTES = 65_536
CHANNEL_LABEL = "sfs"
#: What one link holds for its consumer, received but not yet read (see ReceiveWindow).
RECEIVE_WINDOW_BYTES = 4 * 1024 * 1024
#: What the kernel may buffer of UDP arriving on the ICE sockets (capped by
#: net.core.rmem_max): Linux's default, 208 KiB, holds about 90 of aiortc's 1 200-byte
#: packets, a few milliseconds of a fast transfer, so a receiver busy for that long
#: lost a burst of them, and the sender halved its window (docs/PERFORMANCE.md).
#: SFS_UDP_RECEIVE_BUFFER overrides it (0: the kernel's default), for measuring.
UDP_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
_MAX_MESSAGE_RE = re.compile(r"^a=max-message-size:(\d+)\s*$", re.MULTILINE)


def remote_max_message_size(sdp: str) -> int:
    """The largest message the peer accepts, from its SDP (0 in SDP means no limit)."""
    match = _MAX_MESSAGE_RE.search(sdp)
    if match is None:
        return DEFAULT_REMOTE_MAX_MESSAGE_BYTES
    value = int(match.group(1))
    return value if value > 0 else 2**30


def widen_receive_buffers(sctp: Any) -> None:
    """Ask for UDP_RECEIVE_BUFFER_BYTES on every ICE socket under ``sctp``
    (RTCSctpTransport -> RTCDtlsTransport -> RTCIceTransport -> aioice Connection,
    whose ``_protocols`` gathering.aioice_problem checks); best effort."""
    ice = getattr(getattr(sctp, "transport", None), "transport", None)
    widen_ice_buffers(getattr(ice, "_connection", None))


def widen_ice_buffers(connection: Any) -> None:
    """Ask for UDP_RECEIVE_BUFFER_BYTES on every socket of an aioice Connection (its
    ``_protocols``); best effort. QUIC needs it as much: it starts before the
    DataChannel that widens them otherwise."""
    size = int(os.environ.get("SFS_UDP_RECEIVE_BUFFER", UDP_RECEIVE_BUFFER_BYTES))
    for protocol in getattr(connection, "_protocols", ()):
        transport = getattr(protocol, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None and size > 0:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


# -- the DataChannel as a Channel -----------------------------------------------------------


class IdleClock:
    """When the peer was last heard from (the conversation judges idleness by it:
    :mod:`sfs.peer.proto.conversation`; a striped channel by the latest of its links')."""

    def __init__(self) -> None:
        self.last_heard = time.monotonic()

    def heard(self) -> None:
        self.last_heard = time.monotonic()


class DataChannelLink:
    """One open aiortc DataChannel, seen as a :class:`~sfs.peer.transport.channel.Channel`.

    What arrives waits in an inbox until it is read. On a real aiortc channel the
    inbox counts against the SCTP receive window (:class:`ReceiveWindow`), so a
    peer cannot make it grow beyond ``receive_window`` bytes: when it is full, the
    peer's SCTP sender is held back until the reader catches up.
    """

    def __init__(
        self,
        channel: Any,
        *,
        max_message_size: int,
        high_water: int = HIGH_WATER_BYTES,
        receive_window: int = RECEIVE_WINDOW_BYTES,
    ) -> None:
        self._channel = channel
        self.max_message_size = max_message_size
        #: 64 KiB frames: measured fastest through aiortc's SCTP (docs/PERFORMANCE.md).
        self.preferred_chunk_size = DEFAULT_CHUNK_BYTES
        #: How the data flows (set once the connection is up).
        self.route: Route | None = None
        self._high_water = high_water
        self._clock = IdleClock()
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._held = 0
        self._error: SfsError | None = None
        self._drained = asyncio.Event()
        self._closed = asyncio.Event()
        transport = getattr(channel, "transport", None)
        self._window = (
            ReceiveWindow(transport, self, receive_window)
            if isinstance(transport, RTCSctpTransport) and sctp_internals_fit()
            else None
        )
        #: CUBIC instead of aiortc's Reno for what this side sends (sctp_congestion);
        #: SFS_SCTP_CUBIC=0 keeps aiortc's, for measuring one against the other.
        self._congestion = (
            CongestionControl(transport)
            if isinstance(transport, RTCSctpTransport)
            and os.environ.get("SFS_SCTP_CUBIC", "1") != "0"
            and congestion_internals_fit()
            else None
        )
        if isinstance(transport, RTCSctpTransport):
            widen_receive_buffers(transport)
        channel.bufferedAmountLowThreshold = high_water // 2
        channel.on("message", self._on_message)
        channel.on("bufferedamountlow", self._drained.set)
        channel.on("close", self.mark_closed)

    def heard(self) -> None:
        self._clock.heard()

    def _on_message(self, message: bytes | str) -> None:
        self._clock.heard()
        # Text messages are not part of the protocol; a bytes-like sentinel makes the
        # protocol layer reject them like any other malformed frame.
        frame = message if isinstance(message, bytes) else b""
        self._held += len(frame)
        if self._window is not None:
            self._window.hold(len(frame))
        self._inbox.put_nowait(frame)

    def _taken(self, frame: bytes) -> bytes:
        self._held -= len(frame)
        if self._window is not None:
            self._window.release(len(frame))
        return frame

    def mark_closed(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._drained.set()
            self._inbox.put_nowait(None)

    def fail(self, error: SfsError) -> None:
        """Close the link; reading past what is queued raises ``error``."""
        if not self._closed.is_set():
            self._error = error
        self.mark_closed()

    @property
    def received_bytes_held(self) -> int:
        """Bytes received from the peer and not yet read."""
        return self._held

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def send(self, frame: bytes) -> None:
        if self._closed.is_set() or self._channel.readyState != "open":
            if self._held:
                # As TcpLink.send: the peer's frames before its close are read first.
                logger.debug("a frame not sent: the other side closed; reading its last")
                return
            raise self._error or PeerGoneError()
        self._channel.send(frame)

    @property
    def congested(self) -> bool:
        return bool(self._channel.bufferedAmount > self._high_water)

    async def drain(self) -> None:
        if self._channel.bufferedAmount > self._high_water and not self._closed.is_set():
            # The event fires when the amount falls through the low mark, which it
            # must do from here, since nothing awaited between the check and the clear.
            self._drained.clear()
            await self._drained.wait()
        if self._closed.is_set():
            raise self._error or PeerGoneError()

    async def receive(self) -> bytes:
        frame = self.poll()
        if frame is not None:
            return frame
        item = await self._inbox.get()
        if item is None:
            self._inbox.put_nowait(None)  # every later receive() sees the close too
            raise self._error or PeerGoneError()
        return self._taken(item)

    def poll(self) -> bytes | None:
        if self._inbox.empty():
            return None
        item = self._inbox.get_nowait()
        if item is None:
            self._inbox.put_nowait(None)
            raise self._error or PeerGoneError()
        return self._taken(item)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def unsent_bytes(self) -> int:
        # aiortc's bufferedAmount counts what it has not yet handed to SCTP; SCTP then
        # holds what waits for the congestion window and what is in flight, not yet
        # acknowledged by the peer's SCTP (sfs has one channel per association).
        held = int(self._channel.bufferedAmount)
        sctp = getattr(self._channel, "transport", None)
        # Only where aiortc's insides are as tested (sctp_internals_fit): elsewhere the
        # progress counts what left aiortc's own buffer, a window ahead at most.
        if isinstance(sctp, RTCSctpTransport) and sctp_internals_fit():
            held += int(sctp._flight_size)
            held += sum(len(chunk.user_data) for chunk in sctp._outbound_queue)
        return held

    def seconds_since_receive(self) -> float:
        return time.monotonic() - self._clock.last_heard


# -- the peer connection --------------------------------------------------------------------


def _unusable(kind: str, exc: Exception) -> PeerConnectionError:
    return PeerConnectionError(
        f"the other side's {kind} is not usable: {exc or type(exc).__name__}"
    )


class PeerLink:
    """An RTCPeerConnection with one reliable, ordered DataChannel.

    The sender calls :meth:`create_offer` then :meth:`accept_answer`; the receiver
    calls :meth:`answer_offer`.  Both then await :meth:`open`.
    """

    def __init__(
        self,
        *,
        ice_servers: Sequence[IceServer],
        host_addresses: tuple[str, ...],
        high_water: int = HIGH_WATER_BYTES,
    ):
        # An explicit, empty list: None would make aiortc use public STUN; the
        # STUN/TURN servers are ours to gather from (see sfs.peer.transport.gathering).
        self._pc = RTCPeerConnection(configuration=RTCConfiguration(iceServers=[]))
        self._ice_urls = ice_urls(ice_servers)
        self._relays: dict[int, str] = {}
        self._refused: set[str] = set()
        self._host_addresses = host_addresses
        self._high_water = high_water
        self._channel: Any = None
        self._channel_ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._link: DataChannelLink | None = None
        self._remote_max_message = DEFAULT_REMOTE_MAX_MESSAGE_BYTES
        self._pc.on("connectionstatechange", self._on_state)
        self._pc.on("datachannel", self._on_datachannel)
        #: Resolved once ICE has a nominated pair (QUIC needs no more: it starts
        #: while DTLS and SCTP still set up).
        self._ice_ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pc.on("iceconnectionstatechange", self._on_ice_state)

    async def __aenter__(self) -> PeerLink:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._pc.close()
        if self._channel_ready.done() and not self._channel_ready.cancelled():
            self._channel_ready.exception()  # consumed: a failure was already reported
        if self._link is not None:
            self._link.mark_closed()

    def _on_state(self) -> None:
        state = self._pc.connectionState
        logger.debug("peer connection state: %s", state)
        if state in ("failed", "closed"):
            if not self._channel_ready.done():
                self._channel_ready.set_exception(IceFailedError())
            if self._link is not None:
                self._link.mark_closed()

    def _on_ice_state(self) -> None:
        if self._ice_ready.done():
            return
        state = self._pc.iceConnectionState
        if state in ("connected", "completed"):
            self._ice_ready.set_result(None)
        elif state in ("failed", "closed"):
            self._ice_ready.set_exception(IceFailedError())
            self._ice_ready.exception()  # the DataChannel reports ICE's failure

    async def ice_connected(self) -> None:
        """Wait until ICE has nominated a pair (the caller bounds the wait)."""
        await asyncio.shield(self._ice_ready)

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != CHANNEL_LABEL or self._channel is not None:
            logger.debug("ignoring unexpected data channel %r", channel.label)
            return
        self._watch(channel)

    def _watch(self, channel: Any) -> None:
        # Wrap the channel at once: a message that arrived before the wrapper's
        # handler was attached would be lost.
        self._channel = channel
        self._link = DataChannelLink(
            channel, max_message_size=self._remote_max_message, high_water=self._high_water
        )

        def opened() -> None:
            if not self._channel_ready.done():
                self._channel_ready.set_result(channel)

        if channel.readyState == "open":
            opened()
        channel.on("open", opened)

    async def create_offer(self) -> dict[str, str]:
        self._watch(self._pc.createDataChannel(CHANNEL_LABEL, ordered=True))
        offer = await self._pc.createOffer()
        with gathering_on(self._host_addresses):
            await self._gather()
            await self._pc.setLocalDescription(offer)
        return self._local_description()

    async def answer_offer(self, offer: dict[str, str]) -> dict[str, str]:
        await self._set_remote(offer, "offer")
        answer = await self._pc.createAnswer()
        with gathering_on(self._host_addresses):
            await self._gather()
            await self._pc.setLocalDescription(answer)
        return self._local_description()

    def _ice_failed(self, what: str) -> IceFailedError:
        if self._refused:
            return IceFailedError(
                f"{what}, and the TURN relay {', '.join(sorted(self._refused))} refused the "
                "credential (expired, or sfs serve's --turn-secret-file differs from "
                "coturn's static-auth-secret)"
            )
        return IceFailedError(
            f"{what} (ICE failed). Across NATs or firewalls, use an sfs serve that "
            "relays (not --no-relay there, not --relay never here), or configure a "
            "STUN/TURN server with --ice-server."
        )

    def _gatherer(self) -> Any:
        sctp = self._pc.sctp
        assert sctp is not None  # made by createDataChannel / the remote offer
        return sctp.transport.transport.iceGatherer

    def _ice(self) -> Any:
        """aioice's Connection under this link's (only) ICE transport."""
        return self._gatherer()._connection

    def ice(self) -> Any:
        """aioice's Connection under this link (QUIC shares its path)."""
        return self._ice()

    async def _gather(self) -> None:
        """Gather every candidate before aiortc would (it then finds them gathered)."""
        gatherer = self._gatherer()
        started = time.monotonic()
        await gatherer.gather()  # host candidates: aiortc was given no servers
        if self._ice_urls and AIOICE_PROBLEM is not None:
            raise aioice_unusable()  # sfs gathers from STUN/TURN with aioice's insides
        await gather_from_servers(self._ice(), self._ice_urls, self._relays, self._refused)
        kinds = [c.type for c in self._ice().local_candidates]
        logger.debug("gathered %s in %.2f s", kinds, time.monotonic() - started)

    def route(self) -> Route | None:
        """How the data flows, once connected (None if aioice does not say)."""
        try:
            pair = self._ice()._nominated[1]
        except (AttributeError, KeyError):
            return None
        ice = self._ice()
        local, remote = pair.local_candidate, pair.remote_candidate
        # aioice reports a direct path through a NAT with our host candidate (the
        # base) as local: our own reflexive candidates are what show our NAT.
        own = {c.host for c in ice.local_candidates if c.type == "host"}
        behind_nat = any(c.type == "srflx" and c.host not in own for c in ice.local_candidates)
        return route_of(
            PairEnd(local.type, local.host),
            PairEnd(remote.type, remote.host),
            networks=local_networks(),
            behind_nat=behind_nat,
            our_relay=self._relays.get(id(pair.protocol), ""),
        )

    async def accept_answer(self, answer: dict[str, str]) -> None:
        await self._set_remote(answer, "answer")

    async def _set_remote(self, description: dict[str, str], kind: str) -> None:
        sdp = description.get("sdp")
        if description.get("type") != kind or not isinstance(sdp, str):
            raise PeerConnectionError(f"the other side sent a malformed {kind}")
        # aiortc's SDP parser checks some things with assert, and without a DTLS
        # fingerprint it fails later, in a background task that only logs a traceback.
        unusable = (ValueError, TypeError, KeyError, IndexError, AssertionError)
        try:
            parsed = sdp_parser.SessionDescription.parse(sdp)
        except unusable as exc:
            raise _unusable(kind, exc) from exc
        if not parsed.media:
            raise PeerConnectionError(f"the other side's {kind} offers no data channel")
        if any(not m.dtls or not m.dtls.fingerprints for m in parsed.media):
            raise PeerConnectionError(
                f"the other side's {kind} has no DTLS certificate fingerprint, so the "
                "connection could not be secured; it is not a WebRTC peer sfs can talk to"
            )
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except unusable as exc:
            raise _unusable(kind, exc) from exc
        self._remote_max_message = remote_max_message_size(sdp)
        if self._link is not None:
            self._link.max_message_size = self._remote_max_message

    def _local_description(self) -> dict[str, str]:
        desc = self._pc.localDescription
        return {"type": desc.type, "sdp": desc.sdp}

    async def open(self, seconds: float) -> DataChannelLink:
        """Wait until the DataChannel is open.

        :raises IceFailedError: no connection within ``seconds``, or ICE failed.
        """
        try:
            async with asyncio.timeout(seconds):
                channel = await self._channel_ready
        except TimeoutError:
            raise self._ice_failed(f"no direct connection within {seconds:.0f} s") from None
        except IceFailedError:
            raise self._ice_failed("no direct connection") from None
        assert self._link is not None
        if channel.readyState != "open":
            self._link.mark_closed()
        self._link.route = self.route()
        # The time, precisely, is for scripts/bench (connect time), which reads it at -v.
        logger.info("connected at %.6f: %s", time.time(), self._link.route or "route unknown")
        return self._link


class PeerLinks:
    """One to :data:`MAX_STREAMS` :class:`PeerLink` objects used as one transfer path."""

    def __init__(
        self, count: int, *, ice_servers: Sequence[IceServer], host_addresses: tuple[str, ...]
    ) -> None:
        if not 1 <= count <= MAX_STREAMS:
            raise ValueError(f"1 to {MAX_STREAMS} streams")
        # The buffering budget is shared, so memory does not grow with the stream count.
        self._links = [
            PeerLink(
                ice_servers=ice_servers,
                host_addresses=host_addresses,
                high_water=HIGH_WATER_BYTES // count,
            )
            for _ in range(count)
        ]
        self._quic: list[QuicPath] = []

    async def __aenter__(self) -> PeerLinks:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for path in self._quic:
            path.close()
        await asyncio.gather(*(link.close() for link in self._links))

    async def create_offers(self) -> list[dict[str, str]]:
        return [await link.create_offer() for link in self._links]

    async def answer_offers(self, offers: Sequence[dict[str, str]]) -> list[dict[str, str]]:
        return [await link.answer_offer(o) for link, o in zip(self._links, offers, strict=True)]

    async def accept_answers(self, answers: Sequence[dict[str, str]]) -> None:
        """Use as many links as the peer answered; close the rest."""
        if not 1 <= len(answers) <= len(self._links):
            raise PeerConnectionError("the other side answered with a wrong number of streams")
        for link in self._links[len(answers) :]:
            await link.close()
        self._links = self._links[: len(answers)]
        for link, answer in zip(self._links, answers, strict=True):
            await link.accept_answer(answer)

    async def open(self, seconds: float) -> DataChannelLink | StripedChannel:
        links = await asyncio.gather(*(link.open(seconds) for link in self._links))
        return links[0] if len(links) == 1 else StripedChannel(links)

    async def quic_links(self, keys: SessionKeys, seconds: float) -> list[TcpLink]:
        """(Sender) QUIC over every peer connection's ICE path, each connected as soon
        as its ICE has nominated a pair (:mod:`sfs.peer.transport.quic`): the proven
        links, in the peer connections' order (the striping's), within ``seconds``."""

        async def one(link: PeerLink) -> TcpLink:
            await link.ice_connected()
            return await self._quic_path(link, client=True, keys=keys).link(seconds)

        return list(await asyncio.gather(*(one(link) for link in self._links)))

    async def quic_chosen(self, keys: SessionKeys, seconds: float) -> list[TcpLink]:
        """(Receiver) listen for QUIC on every peer connection's ICE path from now on
        (the sender's first datagram may come before this side's ICE has nominated
        its pair); the links the sender proved itself on and chose, in order."""
        paths = [self._quic_path(link, client=False, keys=keys) for link in self._links]
        return list(await asyncio.gather(*(path.chosen(seconds) for path in paths)))

    def _quic_path(self, link: PeerLink, *, client: bool, keys: SessionKeys) -> QuicPath:
        widen_ice_buffers(link.ice())
        path = QuicPath(
            link.ice(),
            client=client,
            keys=keys,
            route=link.route,
            write_high=WRITE_HIGH_BYTES // len(self._links),
        )
        self._quic.append(path)
        return path
