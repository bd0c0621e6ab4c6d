"""Bounding what SCTP receives: a narrow patch over aiortc 1.16's SCTP transport
(:class:`ReceiveWindow`), and the checks that aiortc still has the shape it patches.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import inspect
import logging
from collections.abc import Awaitable, Iterator
from typing import Any, Protocol

import aiortc
from aiortc import (
    RTCSctpTransport,
)
from aiortc.rtcsctptransport import (
    SCTP_DATA_FIRST_FRAG,
    SCTP_DATA_LAST_FRAG,
    DataChunk,
    InboundStream,
    tsn_plus_one,
)
from aiortc.utils import uint32_gt, uint32_gte

from sfs.errors import RemoteProtocolError, SfsError
from sfs.peer.transport.gathering import names_used, parameters_of

logger = logging.getLogger(__name__)


class WindowedLink(Protocol):
    """What the window needs of the link it feeds (a DataChannelLink)."""

    def heard(self) -> None:
        """Something arrived from the peer: it is alive."""

    def fail(self, error: SfsError) -> None:
        """End the link with ``error``."""


#: How long a SACK may wait for a second packet (RFC 9260 section 6.2 allows 200 ms;
#: a sender that waits for it to send more must not wait long).
SACK_DELAY_SECONDS = 0.010


# -- bounding what SCTP receives (a narrow patch over aiortc 1.16) ---------------------------

#: A generous estimate of what CPython spends per held SCTP chunk or queued message
#: beyond its payload, so that a flood of tiny ones is bounded in memory, not only
#: in payload bytes.
_OVERHEAD_BYTES_EACH = 256
#: sfs uses one SCTP stream per association; a peer that sends on more than this
#: many is not an sfs peer.
_MAX_INBOUND_STREAMS = 16


#: What ReceiveWindow replaces on a transport, each with the parameters aiortc calls
#: it with, and awaited by aiortc (so a plain function returning an awaitable will do).
_SCTP_REPLACED = {"_receive_data_chunk": ["self", "chunk"], "_send_sack": ["self"]}
#: aiortc's SCTP transport state that ReceiveWindow reads and writes.
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
    """What of aiortc's SCTP insides that :class:`ReceiveWindow` patches is not as
    expected; None if all is."""
    for name, parameters in _SCTP_REPLACED.items():
        method = getattr(transport, name, None)
        if not inspect.iscoroutinefunction(method) or parameters_of(method) != parameters:
            return f"RTCSctpTransport.{name}({', '.join(parameters[1:])}) is not there"
    if "_receive_data_chunk" not in names_used(getattr(transport, "_receive_chunk", None)):
        return "RTCSctpTransport._receive_chunk no longer calls _receive_data_chunk"
    callers = [f for n, f in vars(transport).items() if n != "_send_sack" and inspect.isfunction(f)]
    if not any("_send_sack" in names_used(f) for f in callers):
        return "nothing in RTCSctpTransport calls _send_sack any more"
    for name in ("_abort", "_set_state"):
        if not callable(getattr(transport, name, None)):
            return f"RTCSctpTransport.{name} is not there"
    if not hasattr(getattr(transport, "State", None), "CLOSED"):
        return "RTCSctpTransport.State.CLOSED is not there"
    missing = _SCTP_ATTRIBUTES - names_used(getattr(transport, "__init__", None))
    if missing:
        return f"RTCSctpTransport has no {', '.join(sorted(missing))}"
    if "reassembly" not in names_used(getattr(stream, "__init__", None)):
        return "InboundStream has no reassembly list"
    missing = frozenset({"tsn", "flags", "user_data", "stream_id"}) - names_used(
        getattr(chunk, "__init__", None)
    )
    if missing:
        return f"DataChunk has no {', '.join(sorted(missing))}"
    return None


@functools.cache
def sctp_internals_fit() -> bool:
    """True if :class:`ReceiveWindow` may patch this aiortc; if not, warn once, and
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


class ReceiveWindow:
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

    def __init__(self, transport: Any, link: WindowedLink, window: int) -> None:
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
