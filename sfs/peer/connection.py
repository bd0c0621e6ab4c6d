"""aiortc glue: the only module that touches RTCPeerConnection and RTCDataChannel.

It turns one aiortc DataChannel into the small :class:`~sfs.peer.channel.Channel`
interface, with backpressure through ``bufferedAmountLowThreshold`` and the
``bufferedamountlow`` event (never sleep-polling), and it controls which ICE
candidates are gathered: explicit ICE servers only (aiortc's default would contact
a public STUN server) and, optionally, host candidates restricted to given
addresses, which also lets two peers meet on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import functools
import inspect
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import aioice.candidate
import aioice.ice
import aioice.stun
import aiortc
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSctpTransport,
    RTCSessionDescription,
)
from aiortc import sdp as sdp_parser
from aiortc.rtcicetransport import parse_stun_turn_uri
from aiortc.rtcsctptransport import (
    SCTP_DATA_FIRST_FRAG,
    SCTP_DATA_LAST_FRAG,
    DataChunk,
    InboundStream,
    tsn_plus_one,
)
from aiortc.utils import uint32_gt, uint32_gte

from sfs.defaults import DEFAULT_CHUNK_BYTES, MAX_STREAMS
from sfs.errors import (
    IceFailedError,
    PeerConnectionError,
    PeerGoneError,
    RemoteProtocolError,
    SfsError,
)
from sfs.peer.channel import Route
from sfs.signal.messages import IceServer

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: The backpressure mark: stop queueing new frames while this much is buffered.
HIGH_WATER_BYTES = 16 * 1024 * 1024
#: Resume when the buffer drains to this (half the high-water mark).
LOW_WATER_BYTES = HIGH_WATER_BYTES // 2
#: RFC 8841: an endpoint that does not advertise a=max-message-size accepts 64 KiB.
DEFAULT_REMOTE_MAX_MESSAGE_BYTES = 65_536
CHANNEL_LABEL = "sfs"
#: What one link holds for its consumer, received but not yet read (see _ReceiveWindow).
RECEIVE_WINDOW_BYTES = 4 * 1024 * 1024
#: How long a SACK may wait for a second packet (RFC 9260 section 6.2 allows 200 ms;
#: a sender that waits for it to send more must not wait long).
SACK_DELAY_SECONDS = 0.010
#: Nothing at all from the peer for this long means the connection is lost. Each
#: side sends a keepalive every 2 s when idle (sfs.peer.transfer.keepalive), and
#: aiortc itself may take 30 s or more to notice a dead path.
IDLE_TIMEOUT_SECONDS = 10.0
_MAX_MESSAGE_RE = re.compile(r"^a=max-message-size:(\d+)\s*$", re.MULTILINE)

# -- restricting host candidates ----------------------------------------------------------

_host_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "sfs_host_addresses", default=None
)
_original_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _host_addresses.get()
    if chosen is None:
        return list(_original_get_host_addresses(use_ipv4, use_ipv6))
    return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


# -- what sfs relies on inside aioice and aiortc -----------------------------------------
#
# sfs replaces a module function of aioice, reads aioice's candidate lists, and replaces
# two methods on each aiortc SCTP transport.  pyproject.toml bounds both packages to
# the versions tested; these checks are for an install outside those bounds: what
# does not have the expected shape is not patched (aiortc's own behaviour stays, with
# one warning), or is refused with a clear error, never patched blindly.  The tests
# in tests/unit/test_dependency_shapes.py assert the same shapes.


def _names_used(function: Any) -> frozenset[str]:
    """The global and attribute names ``function``'s code uses (``self._x`` -> ``_x``)."""
    code = getattr(function, "__code__", None)
    return frozenset(code.co_names) if code is not None else frozenset()


def _parameters(function: Any) -> list[str] | None:
    try:
        return list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None


def aioice_problem(ice: Any = aioice.ice) -> str | None:
    """What of aioice's insides that sfs uses is not as expected; None if all is."""
    if _parameters(getattr(ice, "get_host_addresses", None)) != ["use_ipv4", "use_ipv6"]:
        return "aioice.ice.get_host_addresses(use_ipv4, use_ipv6) is not there"
    connection = getattr(ice, "Connection", None)
    if "get_host_addresses" not in _names_used(getattr(connection, "gather_candidates", None)):
        return "Connection.gather_candidates no longer asks get_host_addresses"
    missing = _CONNECTION_ATTRIBUTES - _names_used(getattr(connection, "__init__", None))
    if missing:
        return f"Connection has no {', '.join(sorted(missing))}"
    for name in ("server_reflexive_candidate", "relayed_candidate", "StunProtocol"):
        if not callable(getattr(ice, name, None)):
            return f"aioice.ice.{name} is not there"
    return None


_CONNECTION_ATTRIBUTES = frozenset({"_protocols", "_components", "_local_candidates", "_nominated"})
_AIOICE_PROBLEM = aioice_problem()
if _AIOICE_PROBLEM is None:
    # aioice has no option for this; it asks this module-level function during
    # gathering. The context variable keeps the choice per task, so two connections in
    # one process (as in the tests) can use different address sets.
    aioice.ice.get_host_addresses = _get_host_addresses


def _aioice_unusable() -> PeerConnectionError:
    return PeerConnectionError(
        f"this aioice ({getattr(aioice, '__version__', '?')}) is not one sfs works with "
        f"({_AIOICE_PROBLEM}); install the version pyproject.toml asks for"
    )


@contextmanager
def gathering_on(addresses: tuple[str, ...]) -> Iterator[None]:
    if addresses and _AIOICE_PROBLEM is not None:
        raise _aioice_unusable()
    token = _host_addresses.set(addresses or None)
    try:
        yield
    finally:
        _host_addresses.reset(token)


def host_addresses(chosen: tuple[str, ...]) -> tuple[str, ...]:
    """The addresses to offer a peer: ``--ice-address`` if given, else every address
    of this machine that ICE would offer (no loopback, no link-local IPv6)."""
    return chosen or tuple(_original_get_host_addresses(use_ipv4=True, use_ipv6=True))


def check_local_addresses(addresses: Sequence[str]) -> tuple[str, ...]:
    """Validate ``--ice-address`` values: IP literals that this machine can bind.

    :raises PeerConnectionError: with a message naming the bad address.
    """
    checked = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.strip())
        except ValueError:
            raise PeerConnectionError(f"--ice-address {text!r} is not an IP address") from None
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((str(address), 0))
            except OSError:
                raise PeerConnectionError(
                    f"--ice-address {text!r} is not an address of this machine"
                ) from None
        checked.append(str(address))
    return tuple(checked)


def remote_max_message_size(sdp: str) -> int:
    """The largest message the peer accepts, from its SDP (0 in SDP means no limit)."""
    match = _MAX_MESSAGE_RE.search(sdp)
    if match is None:
        return DEFAULT_REMOTE_MAX_MESSAGE_BYTES
    value = int(match.group(1))
    return value if value > 0 else 2**30


# -- the DataChannel as a Channel -----------------------------------------------------------


class IdleClock:
    """When the peer was last heard from.

    One per transfer path: the links of a :class:`StripedChannel` share one, since
    anything heard on any of them proves the peer alive (its keepalives are dealt
    round-robin too, so one link of N hears one only every N pings).
    """

    def __init__(self) -> None:
        self.last_heard = time.monotonic()

    def heard(self) -> None:
        self.last_heard = time.monotonic()


class DataChannelLink:
    """One open aiortc DataChannel, seen as a :class:`~sfs.peer.channel.Channel`.

    What arrives waits in an inbox until it is read. On a real aiortc channel the
    inbox counts against the SCTP receive window (:class:`_ReceiveWindow`), so a
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
        self._last_sent = time.monotonic()
        self._clock = IdleClock()
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._held = 0
        self._error: SfsError | None = None
        self._drained = asyncio.Event()
        self._closed = asyncio.Event()
        transport = getattr(channel, "transport", None)
        self._window = (
            _ReceiveWindow(transport, self, receive_window)
            if isinstance(transport, RTCSctpTransport) and sctp_internals_fit()
            else None
        )
        channel.bufferedAmountLowThreshold = high_water // 2
        channel.on("message", self._on_message)
        channel.on("bufferedamountlow", self._drained.set)
        channel.on("close", self.mark_closed)

    def share_idle_clock(self, clock: IdleClock) -> None:
        self._clock = clock

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

    async def send(self, frame: bytes) -> None:
        if self._closed.is_set() or self._channel.readyState != "open":
            raise self._error or PeerGoneError()
        self._channel.send(frame)
        self._last_sent = time.monotonic()
        if self._channel.bufferedAmount > self._high_water:
            # The event fires when the amount falls through the low mark, which it
            # must do from here, since nothing awaited between the check and the clear.
            self._drained.clear()
            await self._within_idle_timeout(self._drained.wait)
            if self._closed.is_set():
                raise self._error or PeerGoneError()

    async def receive(self) -> bytes:
        # A frame already here is delivered whatever the idle clock says: it proves
        # the peer was alive, however long the reader took to come for it.
        frame = self.poll()
        if frame is not None:
            return frame
        item = await self._within_idle_timeout(self._inbox.get)
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

    def seconds_since_send(self) -> float:
        return time.monotonic() - self._last_sent

    async def _within_idle_timeout(self, wait: Callable[[], Awaitable[T]]) -> T:
        """``await wait()``, unless the peer falls silent for IDLE_TIMEOUT_SECONDS."""
        while True:
            remaining = self._clock.last_heard + IDLE_TIMEOUT_SECONDS - time.monotonic()
            if remaining <= 0:
                self.mark_closed()
                raise PeerGoneError(
                    f"lost the connection: nothing from the other side for "
                    f"{IDLE_TIMEOUT_SECONDS:.0f} s"
                )
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for can swallow a
            # cancellation (Ctrl-C) that arrives as the awaited message does.
            try:
                async with asyncio.timeout(remaining):
                    return await wait()
            except TimeoutError:
                continue


# -- bounding what SCTP receives (a narrow patch over aiortc 1.16) ---------------------------

#: A generous estimate of what CPython spends per held SCTP chunk or queued message
#: beyond its payload, so that a flood of tiny ones is bounded in memory, not only
#: in payload bytes.
_OVERHEAD_BYTES_EACH = 256
#: sfs uses one SCTP stream per association; a peer that sends on more than this
#: many is not an sfs peer.
_MAX_INBOUND_STREAMS = 16


#: What _ReceiveWindow replaces on a transport, each with the parameters aiortc calls
#: it with, and awaited by aiortc (so a plain function returning an awaitable will do).
_SCTP_REPLACED = {"_receive_data_chunk": ["self", "chunk"], "_send_sack": ["self"]}
#: aiortc's SCTP transport state that _ReceiveWindow reads and writes.
_SCTP_ATTRIBUTES = frozenset(
    {
        "_advertised_rwnd",
        "_inbound_streams",
        "_last_received_tsn",
        "_sack_duplicates",
        "_sack_misordered",
        "_sack_needed",
        "_association_state",
        # Read, not written: what SCTP still holds of what was sent (unsent_bytes).
        "_flight_size",
        "_outbound_queue",
    }
)


def sctp_problem(
    transport: Any = RTCSctpTransport, stream: Any = InboundStream, chunk: Any = DataChunk
) -> str | None:
    """What of aiortc's SCTP insides that :class:`_ReceiveWindow` patches is not as
    expected; None if all is."""
    for name, parameters in _SCTP_REPLACED.items():
        method = getattr(transport, name, None)
        if not inspect.iscoroutinefunction(method) or _parameters(method) != parameters:
            return f"RTCSctpTransport.{name}({', '.join(parameters[1:])}) is not there"
    if "_receive_data_chunk" not in _names_used(getattr(transport, "_receive_chunk", None)):
        return "RTCSctpTransport._receive_chunk no longer calls _receive_data_chunk"
    callers = [f for n, f in vars(transport).items() if n != "_send_sack" and inspect.isfunction(f)]
    if not any("_send_sack" in _names_used(f) for f in callers):
        return "nothing in RTCSctpTransport calls _send_sack any more"
    for name in ("_abort", "_set_state"):
        if not callable(getattr(transport, name, None)):
            return f"RTCSctpTransport.{name} is not there"
    if not hasattr(getattr(transport, "State", None), "CLOSED"):
        return "RTCSctpTransport.State.CLOSED is not there"
    missing = _SCTP_ATTRIBUTES - _names_used(getattr(transport, "__init__", None))
    if missing:
        return f"RTCSctpTransport has no {', '.join(sorted(missing))}"
    if "reassembly" not in _names_used(getattr(stream, "__init__", None)):
        return "InboundStream has no reassembly list"
    missing = frozenset({"tsn", "flags", "user_data", "stream_id"}) - _names_used(
        getattr(chunk, "__init__", None)
    )
    if missing:
        return f"DataChunk has no {', '.join(sorted(missing))}"
    return None


@functools.cache
def sctp_internals_fit() -> bool:
    """True if :class:`_ReceiveWindow` may patch this aiortc; if not, warn once, and
    each link keeps aiortc's own receive window and SACKs."""
    problem = sctp_problem()
    if problem is not None:
        logger.warning(
            "aiortc %s is not a version sfs was tested with (%s): using aiortc's own "
            "SCTP receive window and acknowledgements, which do not bound what the "
            "other side may make this side hold; install the aiortc pyproject.toml asks for",
            getattr(aiortc, "__version__", "?"),
            problem,
        )
    return problem is None


class _ReceiveWindow:
    """The receive side of one aiortc SCTP association, bounded.

    aiortc (1.16) frees its receive window as soon as a message is handed to the
    DataChannel's ``message`` callback, its sender ignores the window its peer
    advertises, and its receiver reassembles a message of any size. So a peer that
    sends faster than sfs reads, or one enormous message, grows the receiver's
    memory without bound. This class replaces ``_receive_data_chunk`` on one
    transport instance (never aiortc's class) and changes three things:

    - The window covers what the link holds for its reader too: the link calls
      :meth:`hold` when it queues a message and :meth:`release` when the reader takes
      it, so ``_advertised_rwnd`` (what aiortc's SACKs advertise) is what is really
      free of ``window`` bytes.
    - A new DATA chunk that does not fit is dropped, as RFC 9260 section 6.2 says
      for a full window, and the SACK that follows does not acknowledge it. The
      sender keeps it and sends it again: aiortc's sender when its T3 timer expires
      (about once a second), a browser's when it probes the window. So the sender is
      held back, and nothing is lost. Only when the reader holds nothing is the
      next chunk in sequence taken regardless, since nothing else could free the
      window (a full reassembly queue waiting on one lost chunk, say).
    - A message whose fragments add up to more than the max-message-size that
      aiortc advertises (``a=max-message-size``) aborts the association, and the
      link fails with a protocol error. Fragments are tracked in runs (consecutive
      TSNs, which RFC 9260 requires for the fragments of one message): each run's two
      end chunks carry ``_sfs_run = (other end, bytes)``, so a chunk joins its
      neighbours' runs without a scan.
    - A SACK goes for every second packet of DATA, or SACK_DELAY_SECONDS after a
      packet left unacknowledged, as RFC 9260 section 6.2 asks, instead of after
      every packet: aiortc's receiver acknowledges each one, and building and
      sending those SACKs, and the sender's handling of them, were the largest
      single cost of a transfer on both sides (docs/PERFORMANCE.md). A packet that
      leaves a gap, a duplicate, or a chunk dropped for the window is acknowledged
      at once, so loss recovery and the window report are as before.
    """

    def __init__(self, transport: Any, link: DataChannelLink, window: int) -> None:
        if getattr(transport, "_sfs_window", None) is not None:
            raise ValueError("one DataChannelLink per SCTP association")
        self._transport = transport
        self._link = link
        self._max_message = RTCSctpTransport.getCapabilities().maxMessageSize
        if window < 2 * self._max_message:
            raise ValueError("the receive window must hold at least two messages")
        self._reader_holds = 0
        held = sum(len(c.user_data) for c in self._reassembling())
        transport._advertised_rwnd = window - held
        self._aiortc_receive_data_chunk = transport._receive_data_chunk
        transport._receive_data_chunk = self._receive_data_chunk
        self._aiortc_send_sack = transport._send_sack
        transport._send_sack = self._send_sack
        #: A packet's SACK was left for the next packet (or the timer).
        self._sack_owed = False
        #: The next SACK must not wait: a chunk was dropped for the window.
        self._sack_now = False
        self._sack_timer: asyncio.TimerHandle | None = None
        transport._sfs_window = self

    def hold(self, size: int) -> None:
        self._reader_holds += size + _OVERHEAD_BYTES_EACH
        self._transport._advertised_rwnd -= size + _OVERHEAD_BYTES_EACH

    def release(self, size: int) -> None:
        self._reader_holds -= size + _OVERHEAD_BYTES_EACH
        self._transport._advertised_rwnd += size + _OVERHEAD_BYTES_EACH

    def _reassembling(self) -> Iterator[Any]:
        for stream in self._transport._inbound_streams.values():
            yield from stream.reassembly

    def _receive_data_chunk(self, chunk: Any) -> Awaitable[None]:
        """aiortc awaits what this returns for every DATA chunk (~1 200 bytes each).

        A plain function, not a coroutine, with a fast path for the usual chunk (the
        next in sequence on the one stream, with room for it): a coroutine frame and
        the general checks per chunk cost sfs 12 % of its throughput over WebRTC.
        """
        transport = self._transport
        if transport._association_state is _CLOSED:
            return _nothing()  # aborted: the rest of this packet
        self._link.heard()  # a chunk proves the peer alive, whether kept or dropped
        last = transport._last_received_tsn
        streams = transport._inbound_streams
        if last is not None and chunk.tsn == (last + 1) % _TSN_MODULO and len(streams) == 1:
            stream = streams.get(chunk.stream_id)
            if stream is not None:
                # Not a duplicate (the next TSN never is), not a new stream; the same
                # window rule as below: in sequence, so taken when the reader holds
                # nothing even if it does not fit.
                reassembly = stream.reassembly
                free = transport._advertised_rwnd - _OVERHEAD_BYTES_EACH * (len(reassembly) + 1)
                if free < len(chunk.user_data) and self._reader_holds:
                    transport._sack_needed = self._sack_now = True
                    return _nothing()
                if _join_run(reassembly, chunk) > self._max_message:
                    return self._abort(_TOO_LARGE.format(self._max_message))
                awaitable: Awaitable[None] = self._aiortc_receive_data_chunk(chunk)
                return awaitable
        return self._receive_unusual_chunk(chunk)

    async def _receive_unusual_chunk(self, chunk: Any) -> None:
        """The general case: duplicates, gaps, new streams, several streams."""
        transport = self._transport
        last = transport._last_received_tsn
        if last is not None and (
            uint32_gte(last, chunk.tsn) or chunk.tsn in transport._sack_misordered
        ):
            await self._aiortc_receive_data_chunk(chunk)  # a duplicate: aiortc reports it
            return
        streams = transport._inbound_streams
        if chunk.stream_id not in streams and len(streams) >= _MAX_INBOUND_STREAMS:
            await self._abort(f"the other side used more than {_MAX_INBOUND_STREAMS} streams")
            return
        stream = streams.get(chunk.stream_id)
        reassembly = stream.reassembly if stream is not None else []
        held_chunks = sum(len(s.reassembly) for s in streams.values())
        free = transport._advertised_rwnd - _OVERHEAD_BYTES_EACH * (held_chunks + 1)
        next_in_sequence = last is None or chunk.tsn == tsn_plus_one(last)
        if free < len(chunk.user_data) and not (self._reader_holds == 0 and next_in_sequence):
            transport._sack_needed = self._sack_now = True  # report the window; it resends
            return
        if _join_run(reassembly, chunk) > self._max_message:
            await self._abort(_TOO_LARGE.format(self._max_message))
            return
        await self._aiortc_receive_data_chunk(chunk)

    def _send_sack(self) -> Awaitable[None]:
        """What aiortc awaits after each packet that needs a SACK: the SACK every second
        time, or at once when there is news for the sender (a gap, a duplicate, a
        dropped chunk); otherwise a timer sends it if no packet comes first."""
        transport = self._transport
        if (
            self._sack_owed
            or self._sack_now
            or transport._sack_misordered
            or transport._sack_duplicates
        ):
            self._sack_owed = self._sack_now = False
            if self._sack_timer is not None:
                self._sack_timer.cancel()
                self._sack_timer = None
            awaitable: Awaitable[None] = self._aiortc_send_sack()
            return awaitable
        self._sack_owed = True
        self._sack_timer = asyncio.get_running_loop().call_later(
            SACK_DELAY_SECONDS, self._sack_overdue
        )
        return _nothing()

    def _sack_overdue(self) -> None:
        self._sack_timer = None
        transport = self._transport
        if not self._sack_owed or transport._association_state is _CLOSED:
            return
        self._sack_owed = False
        if transport._sack_needed:
            task = asyncio.ensure_future(self._aiortc_send_sack())
            task.add_done_callback(_log_failure)

    async def _abort(self, reason: str) -> None:
        logger.debug("aborting the SCTP association: %s", reason)
        self._link.fail(RemoteProtocolError(reason))
        await self._transport._abort()
        self._transport._set_state(RTCSctpTransport.State.CLOSED)


_TSN_MODULO = 2**32
_CLOSED = RTCSctpTransport.State.CLOSED
_TOO_LARGE = "the other side sent a message larger than {} bytes, the most this side accepts"


async def _nothing() -> None:
    """What aiortc awaits for a chunk that is dropped, or a SACK left for later."""


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("a delayed SACK could not be sent: %s", task.exception())


def _join_run(reassembly: list[Any], chunk: Any) -> int:
    """Record the not yet held ``chunk`` in its run of one message's fragments, and
    return the run's size in bytes. ``reassembly`` is aiortc's list, sorted by TSN."""
    tsn = chunk.tsn
    if not reassembly or uint32_gt(tsn, reassembly[-1].tsn):
        pos = len(reassembly)  # the usual case: in order
    elif uint32_gt(reassembly[0].tsn, tsn):
        pos = 0
    else:
        base = reassembly[0].tsn
        pos = bisect.bisect_left(
            reassembly, (tsn - base) % _TSN_MODULO, key=lambda c: (c.tsn - base) % _TSN_MODULO
        )
    first = last = chunk
    size = len(chunk.user_data)
    if pos > 0 and not chunk.flags & SCTP_DATA_FIRST_FRAG:
        left = reassembly[pos - 1]  # if in this run, it is its last chunk so far
        if left.tsn == (tsn - 1) % _TSN_MODULO and not left.flags & SCTP_DATA_LAST_FRAG:
            first, left_size = getattr(left, "_sfs_run", (left, len(left.user_data)))
            size += left_size
    if pos < len(reassembly) and not chunk.flags & SCTP_DATA_LAST_FRAG:
        right = reassembly[pos]  # if in this run, it is its first chunk so far
        if right.tsn == (tsn + 1) % _TSN_MODULO and not right.flags & SCTP_DATA_FIRST_FRAG:
            last, right_size = getattr(right, "_sfs_run", (right, len(right.user_data)))
            size += right_size
    if first.flags & SCTP_DATA_FIRST_FRAG and last.flags & SCTP_DATA_LAST_FRAG:
        # Whole: no chunk can join it now. Drop the ends' references to each other, so
        # the message is freed as soon as aiortc delivers it, not at the next GC.
        first.__dict__.pop("_sfs_run", None)
        last.__dict__.pop("_sfs_run", None)
    else:
        first._sfs_run = (last, size)
        last._sfs_run = (first, size)
    return size


# -- the peer connection --------------------------------------------------------------------


def to_rtc_ice_servers(servers: Sequence[IceServer]) -> list[Any]:
    return [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
        for s in servers
    ]


# -- gathering ----------------------------------------------------------------------------------
#
# aiortc hands aioice one STUN and one TURN server (the first of each), and aioice waits
# up to 5 s for them: with two TURN URLs (UDP and TCP) only the UDP one was tried, so a
# network that blocks UDP got no relay, and its gathering always took the full 5 s.
# sfs gives aiortc no STUN/TURN server at all (host candidates only) and gathers the
# rest itself, here and only here, with aioice's own candidate functions: every STUN
# and TURN URL at once, done when all answered, GATHER_SECONDS at most, and only
# RELAY_GRACE_SECONDS more for the others once a relay is in hand.  This touches
# aioice internals (the connection's candidate and protocol lists); the tests in
# tests/integration/test_nat_matrix.py are what prove it still works.

#: The longest gathering may take (STUN and TURN answer within a round trip or two).
GATHER_SECONDS = 3.0
#: Once a relay candidate is in, how long the rest may still take: a STUN answer
#: that is later than a whole TURN allocation is most likely not coming (UDP blocked).
RELAY_GRACE_SECONDS = 0.5


@dataclass(frozen=True)
class IceUrl:
    """One STUN or TURN URL with what aioice needs for it."""

    kind: str  # "stun" or "turn"
    host: str
    port: int
    transport: str = "udp"
    tls: bool = False
    username: str | None = None
    password: str | None = None


def ice_urls(servers: Sequence[IceServer]) -> list[IceUrl]:
    """Every URL of ``servers`` that aioice can use (aiortc's own parser)."""
    urls = []
    for server in servers:
        for url in server.urls:
            try:
                parsed = parse_stun_turn_uri(url)
            except ValueError:
                logger.debug("skipping an ICE URL aiortc cannot parse: %s", url)
                continue
            if parsed["scheme"] == "stun":
                urls.append(IceUrl("stun", parsed["host"], parsed["port"]))
            elif parsed["scheme"] in ("turn", "turns") and parsed["transport"] in ("udp", "tcp"):
                if parsed["scheme"] == "turns" and parsed["transport"] != "tcp":
                    continue
                urls.append(
                    IceUrl(
                        "turn",
                        parsed["host"],
                        parsed["port"],
                        parsed["transport"],
                        parsed["scheme"] == "turns",
                        server.username,
                        server.credential,
                    )
                )
    return urls


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class PairEnd:
    """What is known of one end of the nominated candidate pair."""

    type: str  # "host", "srflx", "prflx" or "relay"
    address: str  # an IP address, or a browser's mDNS name (``….local``), or ""


def route_of(
    local: PairEnd,
    remote: PairEnd,
    *,
    networks: Sequence[Network],
    behind_nat: bool,
    our_relay: str = "",
) -> Route:
    """How the data flows, from what is known of both candidates (pure).

    :param networks: the networks of this machine's interfaces (address and prefix).
    :param behind_nat: a STUN server saw this machine at an address not its own.
    :param our_relay: how to name our TURN relay, when the local end is one.

    First match wins:

    ====================  ===========================================  ==========
    local                 remote                                       route
    ====================  ===========================================  ==========
    relay                 any                                          relay (ours)
    any                   relay                                        relay (theirs)
    any                   an address on one of our networks, or an     local
                          mDNS name (mDNS answers on the link only)
    srflx / prflx         any                                          nat
    any                   srflx (the peer's address as its NAT maps)   nat
    any, behind a NAT     any                                          nat
    any                   any (host or prflx elsewhere: routed, a      direct
                          VPN, or a NAT we cannot see)
    ====================  ===========================================  ==========

    A peer-reflexive remote is an address learnt from the peer's own checks: a
    NAT's, or a host address the peer did not signal (a browser hides its host
    addresses behind mDNS names), so only where it is says anything.  When
    nothing is known, the route is "direct", never a guess.
    """
    if local.type == "relay":
        return Route("relay", our_relay or local.address)
    if remote.type == "relay":
        return Route("relay", remote.address)
    if remote.address.lower().endswith(".local") or _on(remote.address, networks):
        return Route("local")
    if local.type in ("srflx", "prflx") or remote.type == "srflx" or behind_nat:
        return Route("nat")
    return Route("direct")


def _on(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


def local_networks() -> tuple[Network, ...]:
    """The networks of this machine's interfaces, loopback and link-local included
    (a peer there is on the same link)."""
    import ifaddr

    networks: list[Network] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                networks.append(
                    ipaddress.ip_network(f"{address.split('%')[0]}/{ip.network_prefix}", False)
                )
            except ValueError:
                continue
    return tuple(networks)


#: The STUN error codes of a TURN server that refuses the credential (RFC 8489 14.8).
REFUSED_CREDENTIAL_CODES = frozenset({401, 431, 441})


async def _gather(
    connection: Any, urls: Sequence[IceUrl], relays: dict[int, str], refused: set[str]
) -> None:
    """Add server-reflexive and relay candidates to aioice ``connection``, whose host
    candidates are gathered; ``relays`` learns which TURN server each relay is on,
    ``refused`` which TURN servers refused the credential."""
    hosts = [p for p in connection._protocols if p.local_candidate.type == "host"]
    tasks: list[asyncio.Task[Any]] = []
    for url in urls:
        if url.kind == "stun":
            for protocol in hosts:
                if ipaddress.ip_address(protocol.local_candidate.host).version == 4:
                    tasks.append(
                        asyncio.ensure_future(
                            aioice.ice.server_reflexive_candidate(protocol, (url.host, url.port))
                        )
                    )
        else:
            for component in connection._components:
                task = asyncio.ensure_future(_relay(connection, component, url))
                relays[id(task)] = f"{url.host} ({url.transport})"
                tasks.append(task)
    if not tasks:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GATHER_SECONDS
    pending = set(tasks)
    try:
        while pending and (left := deadline - loop.time()) > 0:
            done, pending = await asyncio.wait(
                pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task.cancelled() or task.exception() is not None:
                    error = task.exception()
                    logger.debug("an ICE server did not answer: %s", error)
                    if isinstance(error, aioice.stun.TransactionFailed):
                        code = error.response.attributes.get("ERROR-CODE", (0, ""))[0]
                        if code in REFUSED_CREDENTIAL_CODES and id(task) in relays:
                            refused.add(relays[id(task)].split(" ")[0])
                    continue
                candidate, protocol = task.result()
                connection._local_candidates.append(candidate)
                if protocol is not None:
                    connection._protocols.append(protocol)
                    relays[id(protocol)] = relays.pop(id(task))
                    deadline = min(deadline, loop.time() + RELAY_GRACE_SECONDS)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


#: Local preference of a relay reached over TCP (RFC 8445 5.1.2.1): below UDP's 65535,
#: so when both relays work the UDP one carries the data (no head-of-line blocking
#: under SCTP's own retransmissions); TCP is for networks where nothing else works.
TCP_RELAY_PREFERENCE = 32767


async def _relay(connection: Any, component: int, url: IceUrl) -> tuple[Any, Any]:
    candidate, protocol = await _allocate_relay(connection, component, url)
    if url.transport == "tcp":
        candidate.priority = aioice.candidate.candidate_priority(
            component, "relay", local_pref=TCP_RELAY_PREFERENCE
        )
    return candidate, protocol


async def _allocate_relay(connection: Any, component: int, url: IceUrl) -> tuple[Any, Any]:
    return await aioice.ice.relayed_candidate(
        component=component,
        hide_related_address=False,
        protocol_factory=lambda: aioice.ice.StunProtocol(connection),
        turn_server=(url.host, url.port),
        turn_username=url.username,
        turn_password=url.password,
        turn_ssl=url.tls,
        turn_transport=url.transport,
    )


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
        # STUN/TURN servers are ours to gather from (see "gathering" above).
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
            f"{what} (ICE failed). Across NATs or firewalls, configure a STUN/TURN "
            "server with --ice-server."
        )

    def _gatherer(self) -> Any:
        sctp = self._pc.sctp
        assert sctp is not None  # made by createDataChannel / the remote offer
        return sctp.transport.transport.iceGatherer

    def _ice(self) -> Any:
        """aioice's Connection under this link's (only) ICE transport."""
        return self._gatherer()._connection

    async def _gather(self) -> None:
        """Gather every candidate before aiortc would (it then finds them gathered)."""
        gatherer = self._gatherer()
        started = time.monotonic()
        await gatherer.gather()  # host candidates: aiortc was given no servers
        if self._ice_urls and _AIOICE_PROBLEM is not None:
            raise _aioice_unusable()  # sfs gathers from STUN/TURN with aioice's insides
        await _gather(self._ice(), self._ice_urls, self._relays, self._refused)
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


# -- striping ---------------------------------------------------------------------------------


class StripedChannel:
    """Several DataChannels, each on its own peer connection, seen as one channel.

    Frames are dealt round-robin: frame k of a direction goes on link k mod N, and the
    other side reads the links in the same order, so the frames come out in exactly
    the order they went in, with no change to the protocol above (its strict counters
    still hold). The links share one idle clock: the peer is alive while any of them
    hears from it. Each link is its own SCTP association with its own window, which is
    what lifts throughput on long links (docs/PERFORMANCE.md).
    """

    def __init__(self, links: Sequence[DataChannelLink]) -> None:
        if not links:
            raise ValueError("at least one link")
        self._links = list(links)
        clock = IdleClock()
        for link in self._links:
            link.share_idle_clock(clock)
        self._next_send = 0
        self._next_receive = 0

    @property
    def max_message_size(self) -> int:
        return min(link.max_message_size for link in self._links)

    @property
    def preferred_chunk_size(self) -> int:
        return self._links[0].preferred_chunk_size

    @property
    def route(self) -> Route | None:
        return self._links[0].route

    async def send(self, frame: bytes) -> None:
        link = self._links[self._next_send % len(self._links)]
        self._next_send += 1
        await link.send(frame)

    async def receive(self) -> bytes:
        frame = await self._links[self._next_receive % len(self._links)].receive()
        self._next_receive += 1
        return frame

    def poll(self) -> bytes | None:
        frame = self._links[self._next_receive % len(self._links)].poll()
        if frame is not None:
            self._next_receive += 1
        return frame

    async def wait_closed(self) -> None:
        await asyncio.gather(*(link.wait_closed() for link in self._links))

    def seconds_since_send(self) -> float:
        return min(link.seconds_since_send() for link in self._links)

    def unsent_bytes(self) -> int:
        return sum(link.unsent_bytes() for link in self._links)


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

    async def __aenter__(self) -> PeerLinks:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
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
