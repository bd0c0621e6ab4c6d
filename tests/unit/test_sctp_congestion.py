"""CUBIC for aiortc's SCTP sender (sfs.peer.transport.sctp_congestion): the window
arithmetic against RFC 9438, and the patch on a real aiortc transport."""

from __future__ import annotations

import socket
import types
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCSctpTransport
from aiortc.rtcsctptransport import SackChunk

from sfs.peer.transport import sctp_congestion, webrtc
from sfs.peer.transport.sctp_congestion import BETA, MTU, CongestionControl, Cubic

RTT = 0.05


def _fake_dtls() -> Any:
    return types.SimpleNamespace(
        state="new", transport=None, _register_data_receiver=lambda *args: None
    )


def _round_trips(cubic: Cubic, seconds: float, *, start: float = 0.0) -> float:
    """Acknowledge a full window every RTT (a SACK per two chunks) for ``seconds``."""
    now = start
    while now < start + seconds:
        for _ in range(max(cubic.cwnd // (2 * MTU), 1)):
            cubic.on_ack(2 * MTU, now=now, rtt=RTT)
        now += RTT
    return now


def test_slow_start_doubles_the_window_each_round_trip_with_delayed_sacks() -> None:
    cubic = Cubic(4 * MTU, 10**9)
    _round_trips(cubic, 5 * RTT)
    assert cubic.cwnd == 4 * MTU * 2**5


def test_a_loss_takes_the_window_to_beta_not_half() -> None:
    cubic = Cubic(1000 * MTU, 10**9)
    assert cubic.on_loss() == int(1000 * MTU * BETA)
    assert cubic.ssthresh == cubic.cwnd
    assert cubic.w_max == 1000 * MTU


def test_after_a_loss_the_window_regains_its_old_size_in_seconds_not_minutes() -> None:
    """At 50 ms aiortc's Reno regains one chunk per round trip: 500 chunks lost by
    halving a 1 000-chunk window take 25 s. CUBIC's curve is back near W_max
    within K = cbrt(W_max (1 - beta) / C) seconds (9.1 s here), most of it far sooner."""
    cubic = Cubic(1000 * MTU, 10**9)
    cubic.on_loss()
    _round_trips(cubic, 2.0)
    assert cubic.cwnd > 850 * MTU  # Reno: 500 + 40 chunks
    _round_trips(cubic, 8.0, start=2.0)
    assert 990 * MTU <= cubic.cwnd <= 1100 * MTU  # plateau around W_max, then probing


def test_a_second_loss_below_w_max_yields_fast_convergence() -> None:
    cubic = Cubic(1000 * MTU, 10**9)
    cubic.on_loss()
    cubic.on_loss()
    assert cubic.w_max == pytest.approx(700 * MTU * (1 + BETA) / 2)


def test_a_timeout_restarts_from_one_chunk_with_a_reduced_ssthresh() -> None:
    cubic = Cubic(100 * MTU, 10**9)
    assert cubic.on_timeout() == MTU
    assert cubic.ssthresh == int(100 * MTU * BETA)
    _round_trips(cubic, 20 * RTT)
    assert cubic.cwnd > cubic.ssthresh  # slow start to ssthresh, then CUBIC


def _slow_start_with_delay(cubic: Cubic, rtt_of_round: list[float], now: float = 0.0) -> float:
    """One round per entry: 16 RTT samples, then a window's worth of SACKs."""
    for sample in rtt_of_round:
        for i in range(16):
            cubic.on_rtt_sample(sample, now=now + i * 0.001, rtt=RTT)
        for _ in range(cubic.cwnd // (2 * MTU)):
            cubic.on_ack(2 * MTU, now=now, rtt=RTT)
        now += RTT
    return now


def test_hystart_ends_slow_start_when_the_delay_grows() -> None:
    """RFC 9406: a round whose least RTT is an eighth above the last one's (a queue
    building) slows growth to a quarter for five rounds, then ends slow start."""
    cubic = Cubic(16 * MTU, 10**9)
    now = _slow_start_with_delay(cubic, [RTT, RTT, RTT + 0.010])
    assert cubic._css_baseline == RTT
    grown = cubic.cwnd
    _slow_start_with_delay(cubic, [RTT + 0.010] * 6, now)
    assert cubic.ssthresh < 10**9  # congestion avoidance now
    assert cubic.cwnd < grown * 2**6  # far less than six doublings


def test_hystart_keeps_slow_start_when_the_delay_stays() -> None:
    cubic = Cubic(16 * MTU, 10**9)
    _slow_start_with_delay(cubic, [RTT] * 6)
    assert cubic.ssthresh == 10**9
    assert cubic._css_baseline is None
    assert cubic.cwnd == 16 * MTU * 2**6


def test_slow_growth_is_not_lost_to_rounding() -> None:
    cubic = Cubic(10 * MTU, 5 * MTU)  # congestion avoidance from the start
    before = cubic.cwnd
    for i in range(200):
        cubic.on_ack(100, now=i * 0.001, rtt=RTT)
    assert cubic.cwnd > before


# -- the patch on aiortc's transport ---------------------------------------------------------


def test_aiortc_has_the_code_sfs_copied() -> None:
    assert sctp_congestion.congestion_problem() is None
    assert sctp_congestion.congestion_internals_fit()


def test_a_changed_method_turns_the_patch_off() -> None:
    async def _transmit(self: Any) -> None:
        pass

    namespace = dict(vars(RTCSctpTransport))
    namespace["_transmit"] = _transmit
    changed = type("RTCSctpTransport", (), namespace)
    assert "_transmit is not the code" in (sctp_congestion.congestion_problem(changed) or "")
    del namespace["_update_rto"]
    namespace["_transmit"] = RTCSctpTransport._transmit
    changed = type("RTCSctpTransport", (), namespace)
    assert "_update_rto is not there" in (sctp_congestion.congestion_problem(changed) or "")


class _Channel:
    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.bufferedAmountLowThreshold = 0

    def on(self, event: str, handler: Any) -> None:
        pass


async def test_a_link_patches_its_own_transport_only() -> None:
    transport = RTCSctpTransport(_fake_dtls())
    link = webrtc.DataChannelLink(_Channel(transport), max_message_size=65536)
    assert link._congestion is not None
    for name in ("_receive_sack_chunk", "_transmit", "_t3_expired"):
        assert name in vars(transport)
    assert "_transmit" not in vars(RTCSctpTransport(_fake_dtls()))
    with pytest.raises(ValueError, match="one CongestionControl per SCTP association"):
        CongestionControl(transport)


async def test_the_switch_keeps_aiortcs_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFS_SCTP_CUBIC", "0")
    transport = RTCSctpTransport(_fake_dtls())
    link = webrtc.DataChannelLink(_Channel(transport), max_message_size=65536)
    assert link._congestion is None
    assert "_transmit" not in vars(transport)


def _sending_transport() -> tuple[Any, list[Any]]:
    """A real aiortc transport, established on paper, whose packets are collected."""
    transport: Any = RTCSctpTransport(_fake_dtls())
    sent: list[Any] = []

    async def send_chunk(chunk: Any) -> None:
        sent.append(chunk)

    transport._send_chunk = send_chunk
    transport._ssthresh = 1024 * 1024
    transport._association_state = RTCSctpTransport.State.ESTABLISHED
    CongestionControl(transport)
    return transport, sent


def _sack(transport: Any, cumulative: int, gaps: list[tuple[int, int]], rwnd: int) -> Any:
    sack = SackChunk()
    sack.cumulative_tsn = cumulative
    sack.gaps = gaps
    sack.advertised_rwnd = rwnd
    return sack


async def test_the_sender_grows_backs_off_retransmits_and_respects_the_peer_window() -> None:
    transport, sent = _sending_transport()
    control: CongestionControl = transport._sfs_congestion
    try:
        await transport._send(1, 53, b"x" * (400 * MTU))
        assert len(sent) == 3  # aiortc's initial window: 3 chunks
        first = sent[0].tsn
        # Acknowledge two at a time: slow start, two chunks more per SACK.
        await transport._receive_sack_chunk(_sack(transport, first + 1, [], 10**6))
        assert transport._cwnd == 5 * MTU
        assert len(sent) == 3 + 4  # 2 freed + 2 grown
        # A loss: chunk first+2 missing in three SACKs that see later chunks.
        cwnd = transport._cwnd
        for end in (1, 2, 3):
            await transport._receive_sack_chunk(_sack(transport, first + 1, [(2, 1 + end)], 10**6))
        assert transport._cwnd == max(int(cwnd * BETA), 4 * MTU)
        assert transport._fast_recovery_exit is not None
        assert [c.tsn for c in sent].count(first + 2) == 2  # fast retransmit
        # The peer's window closes: nothing new goes out beyond it.
        before = len(sent)
        last = max(c.tsn for c in sent)
        await transport._receive_sack_chunk(_sack(transport, last, [], 0))
        assert len(sent) == before + 1  # one chunk probes the closed window
        assert transport._flight_size == MTU
        await transport._transmit()
        assert len(sent) == before + 1
        assert control.peer_rwnd == 0
    finally:
        transport._t3_cancel()


def test_the_ice_sockets_get_a_larger_receive_buffer() -> None:
    """aiortc's chain down to aioice's sockets; the kernel caps the size at
    net.core.rmem_max (and reports double what it keeps)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        before = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        udp = types.SimpleNamespace(get_extra_info=lambda name: sock if name == "socket" else None)
        connection = types.SimpleNamespace(_protocols=[types.SimpleNamespace(transport=udp)])
        sctp = types.SimpleNamespace(
            transport=types.SimpleNamespace(transport=types.SimpleNamespace(_connection=connection))
        )
        webrtc.widen_receive_buffers(sctp)
        after = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
        assert after >= min(2 * rmem_max, 2 * webrtc.UDP_RECEIVE_BUFFER_BYTES) or after > before
