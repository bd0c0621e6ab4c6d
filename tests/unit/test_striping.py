"""Round-robin striping keeps frame order across links that deliver at different paces."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from sfs.errors import PeerGoneError
from sfs.peer.transport import webrtc
from sfs.peer.transport.webrtc import DataChannelLink, StripedChannel
from tests.helpers import QueueChannel


class ClockedQueueChannel(QueueChannel):
    def share_idle_clock(self, clock: object) -> None:
        pass  # in memory, nothing is ever idle


def clocked_pair() -> tuple[ClockedQueueChannel, ClockedQueueChannel]:
    a, b = ClockedQueueChannel(), ClockedQueueChannel()
    a.peer, b.peer = b, a
    return a, b


def striped_pair(n: int) -> tuple[StripedChannel, StripedChannel, list[QueueChannel]]:
    """(sending side, receiving side, the sending ends of each link)."""
    pairs = [clocked_pair() for _ in range(n)]
    a = StripedChannel([cast(Any, p[0]) for p in pairs])
    b = StripedChannel([cast(Any, p[1]) for p in pairs])
    return a, b, [p[0] for p in pairs]


async def test_frames_come_out_in_order_even_if_links_deliver_out_of_step() -> None:
    a, b, sending_ends = striped_pair(3)
    # Hold back everything on link 1 until the others have delivered all theirs.
    held: list[bytes] = []
    sending_ends[1].tamper = lambda index, frame: held.append(frame)
    frames = [f"frame {i}".encode() for i in range(30)]
    for frame in frames:
        await a.send(frame)
    got = [await b.receive()]  # frame 0 (link 0)
    assert b.poll() is None  # frame 1 is on the held link: nothing yet, order kept
    assert sending_ends[1].peer is not None
    for frame in held:
        sending_ends[1].peer.inbox.put_nowait(frame)
    while len(got) < len(frames):
        got.append(await b.receive())
    assert got == frames


async def test_poll_and_close() -> None:
    a, b, sending_ends = striped_pair(2)
    await a.send(b"x")
    assert b.poll() == b"x"
    assert b.poll() is None
    sending_ends[1].close()  # link 1 closes
    with pytest.raises(PeerGoneError):
        await asyncio.wait_for(b.receive(), 1)


def test_needs_a_link() -> None:
    with pytest.raises(ValueError, match="at least one link"):
        StripedChannel([])


class FakeDataChannel:
    """The part of aiortc's RTCDataChannel that DataChannelLink uses, in memory."""

    def __init__(self) -> None:
        self.readyState = "open"
        self.bufferedAmount = 0
        self.bufferedAmountLowThreshold = 0
        self.peer: FakeDataChannel | None = None
        self._handlers: dict[str, Any] = {}

    def on(self, event: str, handler: Any) -> None:
        self._handlers[event] = handler

    def send(self, frame: bytes) -> None:
        assert self.peer is not None
        self.peer._handlers["message"](frame)


def striped_links(n: int) -> tuple[StripedChannel, StripedChannel, list[DataChannelLink]]:
    """(sending side, receiving side, the sending side's links)."""
    ends = []
    for _ in range(n):
        a, b = FakeDataChannel(), FakeDataChannel()
        a.peer, b.peer = b, a
        ends.append(
            (DataChannelLink(a, max_message_size=1000), DataChannelLink(b, max_message_size=1000))
        )
    senders = [e[0] for e in ends]
    return StripedChannel(senders), StripedChannel([e[1] for e in ends]), senders


async def test_striped_links_share_one_idle_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """With N links and round-robin pings, each link hears something only every N
    pings; the peer is alive as long as any link hears from it (issue 8, item 7)."""
    monkeypatch.setattr(webrtc, "IDLE_TIMEOUT_SECONDS", 0.5)
    sender, receiver, sending_links = striped_links(8)
    # A ping every 0.1 s, dealt over 8 links: each link hears one every 0.8 s,
    # longer than the idle timeout. The receiver reads nothing meanwhile (its user
    # is at the prompt), then reads everything.
    frames = [f"ping {i}".encode() for i in range(24)]
    for frame in frames:
        await sender.send(frame)
        await asyncio.sleep(0.1)
    got = [await receiver.receive() for _ in frames]
    assert got == frames
    # Waiting on one link while the others hear from the peer is not idle either.
    waiting = asyncio.create_task(receiver.receive())  # on link 0
    for _ in range(10):  # 1 s of pings on links 1..7 only
        for link in sending_links[1:]:
            await link.send(b"ping")
        await asyncio.sleep(0.1)
    assert not waiting.done()
    await sending_links[0].send(b"last")
    async with asyncio.timeout(1):
        assert await waiting == b"last"


async def test_a_queued_frame_comes_before_the_idle_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webrtc, "IDLE_TIMEOUT_SECONDS", 0.2)
    sender, receiver, _ = striped_links(1)
    await sender.send(b"waiting for you")
    await asyncio.sleep(0.3)
    assert await receiver.receive() == b"waiting for you"
    with pytest.raises(PeerGoneError, match="nothing from the other side"):
        await receiver.receive()
