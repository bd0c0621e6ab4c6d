"""Several channels seen as one: a transfer striped over several peer connections.

Each link is its own flow with its own congestion window: an aiortc SCTP association
(the DataChannel), or a QUIC connection on the WebRTC path. On a long link one window
is the limit (it grows slowly, and every loss cuts it); N of them, each cut only by
its own losses, move about N times as much (docs/PERFORMANCE.md, "striping").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sfs.peer.transport.channel import Channel, Route


class StripedChannel:
    """Several channels, each on its own peer connection, seen as one channel.

    Frames are dealt round-robin: frame k of a direction goes on link k mod N, and the
    other side reads the links in the same order, so the frames come out in exactly
    the order they went in, with no change to the protocol above (its strict counters
    still hold). The peer is alive while any link hears from it (its keepalives are
    dealt round-robin too, so one link of N hears one only every N pings).
    """

    def __init__(self, links: Sequence[Channel]) -> None:
        if not links:
            raise ValueError("at least one link")
        self._links = list(links)
        self._next_send = 0
        self._next_receive = 0

    @property
    def links(self) -> int:
        return len(self._links)

    @property
    def max_message_size(self) -> int:
        return min(link.max_message_size for link in self._links)

    @property
    def preferred_chunk_size(self) -> int:
        return self._links[0].preferred_chunk_size

    @property
    def route(self) -> Route | None:
        return self._links[0].route

    def send(self, frame: bytes) -> None:
        link = self._links[self._next_send % len(self._links)]
        self._next_send += 1
        link.send(frame)

    @property
    def congested(self) -> bool:
        return any(link.congested for link in self._links)

    async def drain(self) -> None:
        for link in self._links:
            await link.drain()

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

    def seconds_since_receive(self) -> float:
        return min(link.seconds_since_receive() for link in self._links)

    def unsent_bytes(self) -> int:
        return sum(link.unsent_bytes() for link in self._links)
