"""QUIC on the WebRTC path (sfs.peer.transport.quic), over real UDP sockets on 127.0.0.1.

An aioice Connection is stood in for by what QuicPath touches of one: the nominated
pair's protocol (a real UDP socket) and ``data_received``, which the socket's
datagrams reach as aioice's StunProtocol hands them on.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import pytest

from sfs.errors import PeerConnectionError, SfsError
from sfs.peer.transport.channel import Route
from sfs.peer.transport.quic import QuicPath, is_quic
from tests.helpers import key_pair

pytestmark = pytest.mark.timeout(30)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, ice: _Ice) -> None:
        self.ice = ice
        self.transport: Any = None
        #: The link is down: what arrives is lost.
        self.dropping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.dropping:
            self.ice.data_received(data, 1)


@dataclass
class _Pair:
    protocol: _Udp
    remote_addr: tuple[str, int]


@dataclass
class _Ice:
    """What QuicPath uses of aioice's Connection."""

    _nominated: dict[int, _Pair] = field(default_factory=dict)
    others: list[bytes] = field(default_factory=list)

    def data_received(self, data: bytes, component: int) -> None:
        self.others.append(data)


async def _ice_pair() -> tuple[_Ice, _Ice]:
    loop = asyncio.get_running_loop()
    a, b = _Ice(), _Ice()
    ta, pa = await loop.create_datagram_endpoint(lambda: _Udp(a), local_addr=("127.0.0.1", 0))
    tb, pb = await loop.create_datagram_endpoint(lambda: _Udp(b), local_addr=("127.0.0.1", 0))
    a._nominated[1] = _Pair(pa, tb.get_extra_info("sockname"))
    b._nominated[1] = _Pair(pb, ta.get_extra_info("sockname"))
    return a, b


def test_rfc_9443_demultiplexing() -> None:
    assert not any(is_quic(b) for b in (0, 1, 3, 20, 23, 63, 128, 191))
    assert all(is_quic(b) for b in (64, 0x40 | 0x3F, 192, 0xC3, 255))


async def test_a_stream_carries_frames_both_ways_and_dtls_goes_on() -> None:
    sender_keys, receiver_keys = key_pair()
    client_ice, server_ice = await _ice_pair()
    server = QuicPath(server_ice, client=False, keys=receiver_keys, route=lambda: Route("local"))
    client = QuicPath(client_ice, client=True, keys=sender_keys, route=lambda: Route("local"))
    try:
        link = await client.link(5)
        assert link.route == Route("local", quic=True)
        link.choose()
        chosen = await server.chosen(5)
        data = os.urandom(3 * 1024 * 1024)
        for i in range(0, len(data), 200_000):
            link.send(data[i : i + 200_000])
            await link.drain()
        got = bytearray()
        while len(got) < len(data):
            got += await asyncio.wait_for(chosen.receive(), 5)
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        chosen.send(b"done")
        assert bytes(await asyncio.wait_for(link.receive(), 5)) == b"done"
        # A DTLS record (first byte 23) still reaches aiortc's queue.
        server_ice._nominated[1].protocol.transport.sendto(
            b"\x17dtls", client_ice._nominated[1].protocol.transport.get_extra_info("sockname")
        )
        for _ in range(100):
            if client_ice.others:
                break
            await asyncio.sleep(0.01)
        assert client_ice.others == [b"\x17dtls"]
    finally:
        client.close()
        server.close()


async def test_a_quic_peer_without_the_session_key_gets_no_link() -> None:
    """QUIC's own TLS checks nothing: the proof on the stream is what keeps a stranger
    (an attacker on the path who answers the QUIC handshake) out."""
    sender_keys, _ = key_pair()
    _, stranger_keys = key_pair(b"other-words")
    client_ice, server_ice = await _ice_pair()
    server = QuicPath(server_ice, client=False, keys=stranger_keys, route=lambda: Route("nat"))
    client = QuicPath(client_ice, client=True, keys=sender_keys, route=lambda: Route("nat"))
    try:
        with pytest.raises(SfsError):
            await client.link(5)
        with pytest.raises(SfsError):
            await server.chosen(5)
    finally:
        client.close()
        server.close()


async def test_a_sender_that_never_comes_gives_a_bounded_error() -> None:
    _, receiver_keys = key_pair()
    _, server_ice = await _ice_pair()
    server = QuicPath(server_ice, client=False, keys=receiver_keys, route=lambda: None)
    try:
        with pytest.raises(PeerConnectionError, match="no QUIC connection within 1 s"):
            await server.chosen(1)
    finally:
        server.close()


async def test_what_is_unsent_counts_until_the_peer_acknowledged_it() -> None:
    """The sender's progress (TcpLink.unsent_bytes) counts only what the peer's QUIC
    acknowledged: nothing of what went out while the link was down."""
    sender_keys, receiver_keys = key_pair()
    client_ice, server_ice = await _ice_pair()
    server = QuicPath(server_ice, client=False, keys=receiver_keys, route=lambda: None)
    client = QuicPath(client_ice, client=True, keys=sender_keys, route=lambda: None)
    try:
        link = await client.link(5)
        link.choose()
        chosen = await server.chosen(5)

        async def settled(expected: int) -> int:
            for _ in range(200):
                if link.unsent_bytes() == expected:
                    break
                await asyncio.sleep(0.01)
            return link.unsent_bytes()

        link.send(os.urandom(500_000))
        assert await settled(0) == 0  # all of it acknowledged
        server_ice._nominated[1].protocol.dropping = True
        link.send(os.urandom(300_000))
        await asyncio.sleep(0.3)  # sent (into the void), never acknowledged
        assert link.unsent_bytes() >= 300_000
        server_ice._nominated[1].protocol.dropping = False
        assert await settled(0) == 0  # resent and acknowledged once the link is back
        got = 0
        while got < 800_000:
            got += len(await asyncio.wait_for(chosen.receive(), 5))
    finally:
        client.close()
        server.close()


async def test_replies_wait_for_ice_to_nominate_the_pair() -> None:
    """The receiver's ICE may hand on the sender's first QUIC datagram before it has
    nominated a pair: its replies wait for the pair instead of being lost."""
    sender_keys, receiver_keys = key_pair()
    client_ice, server_ice = await _ice_pair()
    pair = server_ice._nominated.pop(1)
    server = QuicPath(server_ice, client=False, keys=receiver_keys, route=lambda: None)
    client = QuicPath(client_ice, client=True, keys=sender_keys, route=lambda: None)
    try:
        for _ in range(500):
            if server._unpaired:
                break
            await asyncio.sleep(0.01)
        assert server._unpaired, "the server made no reply to the client's Initial"
        server_ice._nominated[1] = pair
        link = await client.link(5)
        assert not server._unpaired
        link.choose()
        await server.chosen(5)
    finally:
        client.close()
        server.close()
