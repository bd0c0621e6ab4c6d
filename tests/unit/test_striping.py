"""Round-robin striping keeps frame order across links that deliver at different paces."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from sfs.errors import PeerGoneError
from sfs.peer.connection import StripedChannel
from tests.helpers import QueueChannel, channel_pair


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
    with pytest.raises(ValueError):
        StripedChannel([])
