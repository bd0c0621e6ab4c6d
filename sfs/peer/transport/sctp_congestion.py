"""Sending over a long fat link: CUBIC congestion control (RFC 9438) for aiortc 1.16's
SCTP sender, patched onto one transport instance (:class:`CongestionControl`), and the
checks that aiortc still has the exact code it replaces.

aiortc's sender runs RFC 9260's Reno: after the first loss its window grows by one
1 160-byte chunk per round trip (about 23 KB/s per second at 50 ms), so one loss
early in a transfer caps a long link for the rest of it (docs/PERFORMANCE.md, "On
the long link"). What changes here, and only on a transport sfs patches:

- **After a loss** the window shrinks to 0.7 of itself (RFC 9438's beta, not
  Reno's 0.5) and grows back along CUBIC's curve, which reaches the old window in
  a time that does not depend on the round trip, then probes beyond it; never
  slower than Reno would (RFC 9438 section 4.3).
- **Slow start** counts up to two chunks per SACK (RFC 3465's L = 2, the
  appropriate byte counting RFC 9260 section 7.2.1 refers to): sfs's receiver
  acknowledges every second packet, so aiortc's one chunk per SACK grows the window
  by 1.5 per round trip instead of 2.
- **The peer's receive window** bounds what is in flight (RFC 9260 section 6.1,
  rule A); aiortc's sender ignores it, so a window larger than the receiver's got
  chunks dropped and then a T3 timeout, which resets the window to one chunk.
- **No scan per SACK for retransmissions**: aiortc's ``_transmit`` walks every chunk
  in flight on every call, once per SACK; with a window of a thousand chunks that
  costs more than the transfer itself. The scan now runs only when a loss or a
  timeout has marked a chunk for retransmission.

Loss detection (three strikes, fast recovery, T3) and everything else are aiortc's.
The pure window arithmetic is :class:`Cubic` (no aiortc, no clock of its own).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import time
from typing import Any

import aiortc
from aiortc import RTCSctpTransport
from aiortc.rtcsctptransport import (
    SCTP_TSN_MODULO,
    USERDATA_MAX_LENGTH,
)
from aiortc.utils import uint32_gt, uint32_gte

from sfs.peer.transport.gathering import names_used

logger = logging.getLogger(__name__)

#: One chunk's payload: aiortc's MTU unit in its congestion arithmetic.
MTU = USERDATA_MAX_LENGTH
#: RFC 9438 section 4.6: the multiplicative decrease.
BETA = 0.7
#: RFC 9438 section 5.1: the cubic's aggressiveness, in segments per second cubed.
C = 0.4
#: RFC 9438 section 4.3: the additive increase that keeps CUBIC as fair as Reno.
ALPHA = 3 * (1 - BETA) / (1 + BETA)
#: RFC 3465: slow start counts at most this many chunks per SACK.
SLOW_START_CHUNKS_PER_SACK = 2
#: RFC 9260 section 7.2.3: the window never falls below four chunks on a loss.
MIN_SSTHRESH = 4 * MTU
#: RFC 9406 (HyStart++) section 4.3: slow start ends early when a round's least
#: RTT exceeds the previous round's by an eighth, clamped to these (seconds), ...
HYSTART_MIN_ETA, HYSTART_MAX_ETA = 0.004, 0.016
#: ... judged from at least this many samples in the round, ...
HYSTART_SAMPLES = 8
#: ... and only once the window is this large.
HYSTART_LOW_WINDOW = 16 * MTU
#: RFC 9406 section 4.2: after the delay grew, conservative slow start grows a
#: quarter as fast for this many rounds, and returns to slow start if the delay
#: falls back (a false alarm), else ends it.
CSS_GROWTH_DIVISOR, CSS_ROUNDS = 4, 5
#: The share of the peer's last advertised window that may be in flight. sfs's
#: receiver drops a chunk that does not fit (sctp_window) and aiortc's sender then
#: waits for T3 and resends its whole window; the advertisement is a round trip old
#: and the receiver also counts its bookkeeping, so the sender stays clear of the edge.
PEER_WINDOW_SHARE_PERCENT = 75
#: Before the first round trip is measured.
_DEFAULT_RTT = 0.1


class Cubic:
    """CUBIC's window (RFC 9438), in bytes, for one association.

    Sans-I/O: time comes in as ``now`` (seconds) and the smoothed round trip as
    ``rtt``. :meth:`on_ack` is called for a SACK that acknowledges new data while
    the window is full; :meth:`on_loss` when fast retransmit starts (once per
    recovery); :meth:`on_timeout` when T3 expires.
    """

    def __init__(self, cwnd: int, ssthresh: int) -> None:
        self.cwnd = cwnd
        self.ssthresh = ssthresh
        #: The window before the last reduction (RFC 9438's W_max), bytes.
        self.w_max = 0.0
        #: The Reno-friendly estimate (RFC 9438's W_est), bytes.
        self._w_est = 0.0
        self._epoch_start: float | None = None
        self._k = 0.0
        #: Growth not yet whole bytes (slow growth must not round to nothing).
        self._carry = 0.0
        # HyStart's rounds (RFC 9406 section 4.2), by time: one smoothed RTT each.
        self._round_end = 0.0
        self._round_min = float("inf")
        self._round_samples = 0
        self._last_round_min = float("inf")
        #: In conservative slow start: the least RTT before the delay grew.
        self._css_baseline: float | None = None
        self._css_rounds = 0

    def on_rtt_sample(self, sample: float, *, now: float, rtt: float) -> None:
        """A round trip was measured (a SACK for a chunk sent once). In slow start, a
        round whose least RTT grew by more than eta ends it (RFC 9406): a queue is
        building (on this link, the receiver's socket while its CPU is busy), and
        doubling on would overflow it and lose a window's worth of chunks."""
        if now >= self._round_end:
            if self._round_samples:
                self._last_round_min = self._round_min
                if self._css_baseline is not None:
                    self._css_rounds += 1
                    if self._css_rounds >= CSS_ROUNDS:
                        self.ssthresh = self.cwnd - 1  # congestion avoidance from here
                        self._css_baseline = None
            self._round_end = now + rtt
            self._round_min = float("inf")
            self._round_samples = 0
        self._round_min = min(self._round_min, sample)
        self._round_samples += 1
        if (
            self.cwnd <= self.ssthresh
            and self.cwnd >= HYSTART_LOW_WINDOW
            and self._round_samples >= HYSTART_SAMPLES
            and self._last_round_min != float("inf")
        ):
            if self._css_baseline is None:
                eta = min(max(self._last_round_min / 8, HYSTART_MIN_ETA), HYSTART_MAX_ETA)
                if self._round_min >= self._last_round_min + eta:
                    self._css_baseline, self._css_rounds = self._last_round_min, 0
            elif self._round_min < self._css_baseline:
                self._css_baseline = None  # a false alarm: slow start again

    def _w_cubic(self, t: float) -> float:
        """RFC 9438 equation 1, in bytes: the window ``t`` seconds into the epoch."""
        return (C * (t - self._k) ** 3) * MTU + self.w_max

    def on_ack(self, acked: int, *, now: float, rtt: float) -> int:
        """``acked`` new bytes were acknowledged with the window fully used: the new window."""
        if self.cwnd <= self.ssthresh:
            step = min(acked, SLOW_START_CHUNKS_PER_SACK * MTU)
            if self._css_baseline is not None:
                step //= CSS_GROWTH_DIVISOR
            self.cwnd += step
            return self.cwnd
        if self._epoch_start is None:
            # RFC 9438 section 4.2: a congestion avoidance epoch starts.
            self._epoch_start = now
            if self.cwnd < self.w_max:
                self._k = ((self.w_max - self.cwnd) / MTU / C) ** (1 / 3)
            else:
                self._k = 0.0
                self.w_max = self.cwnd
            self._w_est = self.cwnd
        t = now - self._epoch_start
        # RFC 9438 section 4.3: the Reno-friendly region.
        self._w_est += ALPHA * MTU * acked / self.cwnd
        if self._w_cubic(t) < self._w_est:
            target = self._w_est
        else:
            # RFC 9438 section 4.4/4.5: toward the window one round trip ahead,
            # at most 1.5 times the current one.
            target = min(max(self._w_cubic(t + rtt), self.cwnd), 1.5 * self.cwnd)
        growth = (target - self.cwnd) * acked / self.cwnd + self._carry
        whole = int(growth)
        self._carry = growth - whole
        self.cwnd += max(whole, 0)
        return self.cwnd

    def on_loss(self) -> int:
        """Fast retransmit: the reduced window (also the new ssthresh)."""
        # RFC 9438 section 4.7: fast convergence, yield to newer flows.
        if self.cwnd < self.w_max:
            self.w_max = self.cwnd * (1 + BETA) / 2
        else:
            self.w_max = self.cwnd
        self.ssthresh = max(int(self.cwnd * BETA), MIN_SSTHRESH)
        self.cwnd = self.ssthresh
        self._css_baseline = None
        self._epoch_start = None
        self._carry = 0.0
        return self.cwnd

    def on_timeout(self) -> int:
        """T3 expired: one chunk's window, then slow start to the reduced ssthresh
        (RFC 9438 section 4.8, RFC 9260 section 7.2.3)."""
        self.w_max = self.cwnd
        self.ssthresh = max(int(self.cwnd * BETA), MIN_SSTHRESH)
        self.cwnd = MTU
        self._css_baseline = None
        self._epoch_start = None
        self._carry = 0.0
        return self.cwnd


# -- the patch over aiortc 1.16 -------------------------------------------------------------

#: The aiortc methods whose logic CongestionControl carries in its own copy, by the
#: SHA-256 of their source: any change in them (a fix sfs's copy would miss) turns the
#: patch off rather than run stale logic.
_REPLACED_SOURCE_SHA256 = {
    "_receive_sack_chunk": "4b35ccf1372cdec8705f378a04de43d9c4ad5675afae09781eddd69ecdb473b1",
    "_transmit": "aa8941d5f8f020e8b4e438e02084533dd78399da498638a013025252e5fe8115",
    "_t3_expired": "0e759bf4b1b2d8c8afa3d656a8f34839c974d0104cb66f895a9a9d266f6499af",
}
#: The helpers and state the copies use.
_HELPERS = (
    "_flight_size_decrease",
    "_flight_size_increase",
    "_maybe_abandon",
    "_update_rto",
    "_t3_start",
    "_t3_restart",
    "_t3_cancel",
    "_update_advanced_peer_ack_point",
    "_data_channel_flush",
    "_send_chunk",
)
_ATTRIBUTES = frozenset(
    {
        "_cwnd",
        "_flight_size",
        "_fast_recovery_exit",
        "_fast_recovery_transmit",
        "_forward_tsn_chunk",
        "_last_sacked_tsn",
        "_outbound_queue",
        "_partial_bytes_acked",
        "_sent_queue",
        "_srtt",
        "_t3_handle",
    }
)


def source_sha256(function: Any) -> str | None:
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return None
    return hashlib.sha256(source.encode()).hexdigest()


def congestion_problem(transport: Any = RTCSctpTransport) -> str | None:
    """What of aiortc's SCTP sender that :class:`CongestionControl` replaces is not
    as expected; None if all is."""
    for name, digest in _REPLACED_SOURCE_SHA256.items():
        if source_sha256(getattr(transport, name, None)) != digest:
            return f"RTCSctpTransport.{name} is not the code sfs's copy was made from"
    for name in _HELPERS:
        if not callable(getattr(transport, name, None)):
            return f"RTCSctpTransport.{name} is not there"
    missing = _ATTRIBUTES - names_used(getattr(transport, "__init__", None))
    if missing:
        return f"RTCSctpTransport has no {', '.join(sorted(missing))}"
    if "_ssthresh" not in names_used(getattr(transport, "_receive_chunk", None)):
        return "RTCSctpTransport._receive_chunk no longer sets _ssthresh"
    return None


@functools.cache
def congestion_internals_fit() -> bool:
    """True if :class:`CongestionControl` may patch this aiortc; if not, warn once,
    and each link keeps aiortc's own congestion control."""
    problem = congestion_problem()
    if problem is not None:
        logger.warning(
            "aiortc %s is not a version sfs was tested with (%s): using aiortc's own "
            "SCTP congestion control, which is slow on long links; install the aiortc "
            "pyproject.toml asks for",
            getattr(aiortc, "__version__", "?"),
            problem,
        )
    return problem is None


#: The slow-start threshold before the peer's INIT says its receive window.
UNBOUNDED_SSTHRESH = 1 << 31


class CongestionControl:
    """The sending side of one aiortc SCTP association, with :class:`Cubic`'s window.

    Replaces ``_receive_sack_chunk``, ``_transmit`` and ``_t3_expired`` on one
    transport instance (never aiortc's class) with copies of aiortc 1.16's that differ
    only where the module docstring says.
    """

    def __init__(self, transport: Any) -> None:
        if getattr(transport, "_sfs_congestion", None) is not None:
            raise ValueError("one CongestionControl per SCTP association")
        self._transport = transport
        # aiortc sets _ssthresh from the peer's INIT: Cubic takes both from the
        # transport before each step. A transport patched before its INIT (aiortc's
        # own tests drive such transports) has none yet: until the INIT brings the
        # peer's window, slow start is unbounded, as RFC 9260 section 7.2.1 allows.
        if not hasattr(transport, "_ssthresh"):
            transport._ssthresh = UNBOUNDED_SSTHRESH
        self.cubic = Cubic(transport._cwnd, transport._ssthresh)
        #: The peer's last advertised receive window (None: not heard yet).
        self.peer_rwnd: int | None = None
        #: Some chunk may be marked for retransmission: _transmit must look.
        self._retransmit_marked = False
        self._aiortc_t3_expired = transport._t3_expired
        transport._receive_sack_chunk = self._receive_sack_chunk
        transport._transmit = self._transmit
        transport._t3_expired = self._t3_expired
        transport._sfs_congestion = self

    async def _receive_sack_chunk(self, chunk: Any) -> None:
        """aiortc's, with :class:`Cubic` adjusting the window and the peer's window kept."""
        t = self._transport
        if uint32_gt(t._last_sacked_tsn, chunk.cumulative_tsn):
            return

        received_time = time.time()
        t._last_sacked_tsn = chunk.cumulative_tsn
        self.peer_rwnd = chunk.advertised_rwnd
        cwnd_fully_utilized = t._flight_size >= t._cwnd
        done = 0
        done_bytes = 0

        # handle acknowledged data
        cubic = self.cubic
        cubic.cwnd, cubic.ssthresh = t._cwnd, t._ssthresh
        sent_queue = t._sent_queue
        while sent_queue and uint32_gte(t._last_sacked_tsn, sent_queue[0].tsn):
            schunk = sent_queue.popleft()
            done += 1
            if not schunk._acked:
                done_bytes += schunk._book_size
            t._flight_size_decrease(schunk)
            if done == 1 and schunk._sent_count == 1:
                t._update_rto(received_time - schunk._sent_time)
                cubic.on_rtt_sample(
                    received_time - schunk._sent_time,
                    now=received_time,
                    rtt=t._srtt or _DEFAULT_RTT,
                )

        loss = False
        if chunk.gaps:
            loss, gap_acked_bytes = self._handle_gaps(chunk)
            done_bytes += gap_acked_bytes
            self._retransmit_marked = self._retransmit_marked or loss

        # adjust congestion window (sfs: Cubic instead of Reno)
        if t._fast_recovery_exit is None:
            if done and cwnd_fully_utilized:
                t._cwnd = cubic.on_ack(done_bytes, now=received_time, rtt=t._srtt or _DEFAULT_RTT)
            if loss:
                t._cwnd = cubic.on_loss()
                t._partial_bytes_acked = 0
                t._fast_recovery_exit = sent_queue[-1].tsn
                t._fast_recovery_transmit = True
            t._ssthresh = cubic.ssthresh
        elif uint32_gte(chunk.cumulative_tsn, t._fast_recovery_exit):
            t._fast_recovery_exit = None

        if not sent_queue:
            t._t3_cancel()
        elif done:
            t._t3_restart()

        t._update_advanced_peer_ack_point()
        await t._data_channel_flush()
        await t._transmit()

    def _handle_gaps(self, chunk: Any) -> tuple[bool, int]:
        """aiortc's gap-block handling, unchanged: mark what the gaps acknowledge, strike
        what they skip. Whether a chunk was struck for the third time (a loss), and the
        bytes newly acknowledged."""
        t = self._transport
        seen = set()
        highest_seen_tsn = chunk.cumulative_tsn
        for gap in chunk.gaps:
            for pos in range(gap[0], gap[1] + 1):
                highest_seen_tsn = (chunk.cumulative_tsn + pos) % SCTP_TSN_MODULO
                seen.add(highest_seen_tsn)

        acked_bytes = 0
        highest_newly_acked = chunk.cumulative_tsn
        for schunk in t._sent_queue:
            if uint32_gt(schunk.tsn, highest_seen_tsn):
                break
            if schunk.tsn in seen:
                if not schunk._acked:
                    acked_bytes += schunk._book_size
                    schunk._acked = True
                    highest_newly_acked = schunk.tsn
                t._flight_size_decrease(schunk)

        loss = False
        for schunk in t._sent_queue:
            if uint32_gt(schunk.tsn, highest_newly_acked):
                break
            if schunk.tsn not in seen:
                schunk._misses += 1
                if schunk._misses == 3:
                    schunk._misses = 0
                    if not t._maybe_abandon(schunk):
                        schunk._retransmit = True
                    schunk._acked = False
                    t._flight_size_decrease(schunk)
                    loss = True
        return loss, acked_bytes

    def _t3_expired(self) -> None:
        """aiortc's (every chunk in flight marked for retransmission, one chunk's
        window), with :class:`Cubic`'s ssthresh and its state reset."""
        t = self._transport
        self.cubic.cwnd = t._cwnd
        self._retransmit_marked = True
        self._aiortc_t3_expired()
        t._cwnd = self.cubic.on_timeout()
        t._ssthresh = self.cubic.ssthresh

    def _window(self) -> int:
        """What may be in flight: the congestion window, and the peer's receive window."""
        cwnd: int = self._transport._cwnd
        if self.peer_rwnd is not None:
            rwnd = self.peer_rwnd * PEER_WINDOW_SHARE_PERCENT // 100
            if rwnd < cwnd:
                return rwnd
        return cwnd

    async def _transmit(self) -> None:
        """aiortc's, but the window is :meth:`_window`, and the chunks in flight are
        scanned for retransmissions only when some may be marked."""
        t = self._transport
        if t._forward_tsn_chunk is not None:
            await t._send_chunk(t._forward_tsn_chunk)
            t._forward_tsn_chunk = None
            if not t._t3_handle:
                t._t3_start()

        burst_size = 2 * MTU if t._fast_recovery_exit is not None else 4 * MTU
        window = self._window()
        cwnd = min(t._flight_size + burst_size, window)
        # RFC 9260 section 6.1 rule A: with nothing in flight, one chunk (new or a
        # retransmission) may probe a closed receive window.
        if t._flight_size == 0 and cwnd < MTU:
            cwnd = MTU

        if self._retransmit_marked:
            retransmit_earliest = True
            for chunk in t._sent_queue:
                if chunk._retransmit:
                    if t._fast_recovery_transmit:
                        t._fast_recovery_transmit = False
                    elif t._flight_size >= cwnd:
                        return
                    t._flight_size_increase(chunk)
                    chunk._misses = 0
                    chunk._retransmit = False
                    chunk._sent_count += 1
                    await t._send_chunk(chunk)
                    if retransmit_earliest:
                        t._t3_restart()
                retransmit_earliest = False
            self._retransmit_marked = False

        outbound_queue = t._outbound_queue
        while outbound_queue and t._flight_size < cwnd:
            chunk = outbound_queue.popleft()
            t._sent_queue.append(chunk)
            t._flight_size_increase(chunk)
            chunk._sent_count += 1
            chunk._sent_time = time.time()
            await t._send_chunk(chunk)
            if not t._t3_handle:
                t._t3_start()
