"""What one DataChannel will hold for a peer: real aiortc peer connections on 127.0.0.1.

A receiver that does not read (a prompt is open, the disk is slow) must hold the
sender back instead of buffering without bound; a message larger than the
max-message-size sfs advertises must fail the link instead of being reassembled.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import pytest
from aiortc.rtcsctptransport import SackChunk

from sfs.errors import PeerGoneError, RemoteProtocolError
from sfs.peer.transport.sctp_window import SACK_DELAY_SECONDS
from sfs.peer.transport.webrtc import RECEIVE_WINDOW_BYTES, DataChannelLink, PeerLink
from tests.conftest import LOOPBACK

MIB = 1024 * 1024
#: A bit under aiortc's max-message-size (262144), like sfs's own chunk frames.
MESSAGE_BYTES = 262_000
#: The senders here buffer little, so the process's memory shows the receiver's.
SENDER_HIGH_WATER_BYTES = 1 * MIB
OPEN_SECONDS = 10.0


@dataclass
class Pair:
    sender: DataChannelLink
    receiver: DataChannelLink
    sender_peer: PeerLink
    receiver_peer: PeerLink


@asynccontextmanager
async def link_pair() -> AsyncIterator[Pair]:
    """Two real RTCPeerConnections on 127.0.0.1, each with sfs's DataChannel open."""
    offerer = PeerLink(
        ice_servers=(), host_addresses=(LOOPBACK,), high_water=SENDER_HIGH_WATER_BYTES
    )
    answerer = PeerLink(ice_servers=(), host_addresses=(LOOPBACK,))
    try:
        answer = await answerer.answer_offer(await offerer.create_offer())
        await offerer.accept_answer(answer)
        sender, receiver = await asyncio.gather(
            offerer.open(OPEN_SECONDS), answerer.open(OPEN_SECONDS)
        )
        yield Pair(sender, receiver, offerer, answerer)
    finally:
        await asyncio.gather(offerer.close(), answerer.close())


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def messages(count: int) -> list[bytes]:
    return [os.urandom(MESSAGE_BYTES) for _ in range(count)]


async def send_all(link: DataChannelLink, items: list[bytes]) -> None:
    for item in items:
        link.send(item)
        await link.drain()


@asynccontextmanager
async def pinging(link: DataChannelLink) -> AsyncIterator[None]:
    """Keep ``link``'s peer hearing from this side, as sfs's keepalive does."""

    async def ping() -> None:
        while True:
            link.send(b"ping")
            await link.drain()
            await asyncio.sleep(1)

    task = asyncio.create_task(ping())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError, PeerGoneError):
            await task


async def sample_while(
    seconds: float, done: Callable[[], bool], sample: Callable[[], None]
) -> None:
    """Call ``sample`` every 50 ms for ``seconds`` or until ``done()``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done():
        sample()
        await asyncio.sleep(0.05)
    sample()


async def test_a_receiver_that_does_not_read_holds_the_sender_back() -> None:
    items = messages(160)  # 40 MiB, ten times the receive window
    expected = hashlib.sha256(b"".join(items)).hexdigest()
    async with link_pair() as pair, pinging(pair.receiver):
        before = rss_bytes()
        peak_rss = peak_held = 0

        def sample() -> None:
            nonlocal peak_rss, peak_held
            peak_rss = max(peak_rss, rss_bytes() - before)
            peak_held = max(peak_held, pair.receiver.received_bytes_held)

        flood = asyncio.create_task(send_all(pair.sender, items))
        try:
            # The receiver reads nothing for 8 s: without backpressure all 40 MiB
            # arrive in a second or two and sit in its memory.
            await sample_while(8, flood.done, sample)
            print(
                f"not reading: receiver holds <= {peak_held / MIB:.2f} MiB, "
                f"process RSS +{peak_rss / MIB:.1f} MiB"
            )
            assert not flood.done(), "the receiver took everything without reading it"
            assert peak_held <= RECEIVE_WINDOW_BYTES + MESSAGE_BYTES
            assert peak_rss < 20 * MIB

            # Now read it all: in order, nothing lost, nothing doubled.
            digest = hashlib.sha256()
            async with asyncio.timeout(60):
                for _ in items:
                    digest.update(await pair.receiver.receive())
                    sample()
                await flood
            assert digest.hexdigest() == expected
            assert peak_held <= RECEIVE_WINDOW_BYTES + MESSAGE_BYTES
        finally:
            flood.cancel()
            with suppress(asyncio.CancelledError, PeerGoneError):
                await flood


async def test_a_slow_reader_gets_everything() -> None:
    """An honest transfer to a slow consumer (a slow disk) is slowed, not broken."""
    items = messages(64)  # 16 MiB at about 4 MiB/s
    expected = hashlib.sha256(b"".join(items)).hexdigest()
    async with link_pair() as pair, pinging(pair.receiver):
        flood = asyncio.create_task(send_all(pair.sender, items))
        digest = hashlib.sha256()
        peak_held = 0
        started = time.monotonic()
        try:
            async with asyncio.timeout(90):
                for _ in items:
                    digest.update(await pair.receiver.receive())
                    peak_held = max(peak_held, pair.receiver.received_bytes_held)
                    await asyncio.sleep(MESSAGE_BYTES / (4 * MIB))  # the slow disk
                await flood
        finally:
            flood.cancel()
            with suppress(asyncio.CancelledError, PeerGoneError):
                await flood
        seconds = time.monotonic() - started
        print(
            f"slow reader: {len(items) * MESSAGE_BYTES / MIB / seconds:.1f} MiB/s, "
            f"held <= {peak_held / MIB:.2f} MiB"
        )
        assert digest.hexdigest() == expected
        assert peak_held <= RECEIVE_WINDOW_BYTES + MESSAGE_BYTES


def allow_huge_messages(link: DataChannelLink) -> None:
    """Patch this process's aiortc sender to skip its max-message-size check, as a
    modified peer would."""
    transport: Any = link._channel.transport
    transport._remote_max_message_size = 0  # aiortc: 0 means no limit


def reassembly_bytes(link: DataChannelLink) -> int:
    transport: Any = link._channel.transport
    return sum(
        len(chunk.user_data)
        for stream in transport._inbound_streams.values()
        for chunk in stream.reassembly
    )


async def test_one_message_larger_than_advertised_fails_the_link() -> None:
    async with link_pair() as pair:
        allow_huge_messages(pair.sender)
        peak = 0

        def sample() -> None:
            nonlocal peak
            peak = max(peak, reassembly_bytes(pair.receiver))

        pair.sender.send(os.urandom(64 * MIB))
        await pair.sender.drain()
        failed = asyncio.create_task(pair.receiver.receive())
        await sample_while(30, failed.done, sample)
        print(f"64 MiB message: receiver reassembled at most {peak / MIB:.2f} MiB")
        assert failed.done()
        with pytest.raises(RemoteProtocolError, match="larger than 262144 bytes"):
            failed.result()
        assert peak <= 262_144
        # The association is gone on both sides.
        async with asyncio.timeout(10):
            await pair.sender.wait_closed()


async def test_a_message_at_the_advertised_size_goes_through() -> None:
    async with link_pair() as pair:
        item = os.urandom(262_144)
        pair.sender.send(item)
        await pair.sender.drain()
        async with asyncio.timeout(10):
            assert await pair.receiver.receive() == item


async def test_a_sack_goes_for_every_second_packet() -> None:
    """RFC 9260 section 6.2's delayed acknowledgement: half the SACKs aiortc would send
    (one per packet), and everything still arrives. A packet after a gap (both ends in
    one process here lose a few to the socket buffer) is acknowledged at once."""
    async with link_pair() as pair:
        transport = pair.receiver._channel.transport
        quiet = news = sacks = 0
        send_sack, send_chunk = transport._send_sack, transport._send_chunk

        def counting_send_sack() -> Any:
            nonlocal quiet, news
            # aiortc asks after every packet that carried DATA
            if transport._sack_misordered or transport._sack_duplicates:
                news += 1
            else:
                quiet += 1
            return send_sack()

        async def counting_send_chunk(chunk: Any) -> None:
            nonlocal sacks
            sacks += isinstance(chunk, SackChunk)
            await send_chunk(chunk)

        transport._send_sack, transport._send_chunk = counting_send_sack, counting_send_chunk
        items = messages(16)
        sender = asyncio.create_task(send_all(pair.sender, items))
        async with asyncio.timeout(60):
            got = [await pair.receiver.receive() for _ in items]
            await sender
        assert [hashlib.sha256(m).digest() for m in got] == [
            hashlib.sha256(m).digest() for m in items
        ]
        assert quiet > 1500, (quiet, news)
        assert 0.45 * quiet <= sacks - news <= 0.55 * quiet, (sacks, quiet, news)


async def test_a_lone_packet_is_acknowledged_within_the_delay() -> None:
    """No second packet comes: the timer sends the SACK, long before the sender's
    retransmission timer (1 s at least) would send the packet again; and not at once,
    or there would be one SACK per packet again."""
    async with link_pair() as pair:
        sctp = pair.sender._channel.transport
        acked = asyncio.Event()
        receive_sack = sctp._receive_sack_chunk

        async def watching(chunk: Any) -> None:
            await receive_sack(chunk)
            if not sctp._sent_queue:
                acked.set()

        sctp._receive_sack_chunk = watching
        pair.sender.send(b"x" * 100)
        await pair.sender.drain()
        await pair.receiver.receive()
        await asyncio.sleep(0.5)  # everything so far acknowledged
        assert not sctp._sent_queue
        for _ in range(5):
            acked.clear()
            started = time.monotonic()
            pair.sender.send(b"one packet")
            await pair.sender.drain()
            async with asyncio.timeout(5):
                await acked.wait()
            elapsed = time.monotonic() - started
            assert SACK_DELAY_SECONDS * 0.5 <= elapsed < 0.5, elapsed
            await pair.receiver.receive()
            await asyncio.sleep(0.05)
