"""Round-robin striping keeps frame order across links that deliver at different paces."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from sfs.errors import PeerGoneError
from sfs.peer.transport.striping import StripedChannel
from sfs.peer.transport.webrtc import DataChannelLink
from tests.helpers import QueueChannel


def channel_pair() -> tuple[QueueChannel, QueueChannel]:
    a, b = QueueChannel(), QueueChannel()
    a.peer, b.peer = b, a
    return a, b


def striped_pair(n: int) -> tuple[StripedChannel, StripedChannel, list[QueueChannel]]:
    """(sending side, receiving side, the sending ends of each link)."""
    pairs = [channel_pair() for _ in range(n)]
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
        a.send(frame)
        await a.drain()
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
    a.send(b"x")
    await a.drain()
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


async def test_a_striped_channel_hears_what_any_link_heard() -> None:
    """With N links and round-robin pings, each link hears something only every N
    pings; the peer is alive as long as any link hears from it (issue 8, item 7): the
    striped channel's ``seconds_since_receive`` counts what any link heard, read or
    not, and the conversation judges idleness by it."""
    _sender, receiver, sending_links = striped_links(8)
    await asyncio.sleep(0.3)
    quiet = receiver.seconds_since_receive()
    assert quiet >= 0.25
    # Nothing on link 0, where the reader waits: a frame on link 5 is news all the same.
    sending_links[5].send(b"ping")
    async with asyncio.timeout(1):
        while receiver.seconds_since_receive() >= quiet:  # noqa: ASYNC110 (a clock, no event)
            await asyncio.sleep(0.01)
    assert receiver.poll() is None  # not read: link 0 comes first
    assert receiver.seconds_since_receive() < 0.25
