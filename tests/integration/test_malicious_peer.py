"""A malicious sender against a real `sfs receive` process.

The attacker holds the right code, so it completes the key exchange and opens the
transport with sfs's own code (`sender_session`): the direct TCP connection or the
DataChannel, each attack on both; then it sends whatever frames it likes, sealed
with the real session key.  Every attack must end with a clear error
(or a file under a safe name inside the output folder), nothing outside the output
folder, and nothing unverified at a final name.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from sfs.app import PeerOptions, Session, sender_session
from sfs.code import parse_code
from sfs.defaults import MAX_CHUNK_BYTES, Transport
from sfs.errors import SfsError
from sfs.peer.proto.crypto import FrameOpener, FrameSealer
from sfs.peer.proto.wire import FileInfo, FrameType, Offer, encode_offer
from sfs.peer.transport.tcp import TcpLink, format_address, parse_addresses
from sfs.peer.transport.webrtc import DataChannelLink
from tests.conftest import (
    LOOPBACK,
    ServerProcess,
    in_netns,
    peer_env,
    start_server,
    stop_process,
)
from tests.helpers import QuietUi
from tests.integration.peers import Finished, start_receiver

DATA = os.urandom(3000)


@pytest.fixture(scope="module")
def sfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """This module's own server: some sixty sessions a minute on one address, more than
    the default lookup budget allows (rate limits are tested in test_signal.py)."""
    server = start_server(tmp_path_factory.mktemp("server"), "--max-lookups-per-address", "1000")
    try:
        yield server
    finally:
        stop_process(server.process)


SHA = hashlib.sha256(DATA).digest()
CHUNK = 1000


class Attacker:
    """The evil sender's view of an open session."""

    def __init__(self, session: Session) -> None:
        # One stream (the default), on either transport.
        assert isinstance(session.channel, DataChannelLink | TcpLink)
        self.channel = session.channel
        self.seal = FrameSealer(session.keys.frame_send).seal
        self.opener = FrameOpener(session.keys.frame_receive)

    def send(self, frame: bytes) -> None:
        self.channel.send(frame)

    async def drain(self) -> None:
        await self.channel.drain()

    def raw(self, data: bytes) -> None:
        """Bytes on the TCP connection as they are, outside sfs's framing."""
        assert isinstance(self.channel, TcpLink)
        assert self.channel._transport is not None
        self.channel._transport.write(data)

    async def offer(self, *files: FileInfo, chunk_size: int = CHUNK) -> FrameType:
        """Offer ``files``; return the receiver's answer (ACCEPT, or CANCEL if refused).

        After an ACCEPT, RESUME says every file starts at 0, as a fresh transfer does."""
        self.send(self.seal(FrameType.OFFER, encode_offer(Offer(files, "mallory", chunk_size))))
        await self.drain()
        answer = await self.reply()
        if answer is FrameType.ACCEPT:
            offsets = json.dumps({"offsets": [0] * len(files)}).encode()
            self.send(self.seal(FrameType.RESUME, offsets))
            await self.drain()
        return answer

    async def reply(self) -> FrameType:
        kind, _ = self.opener.open(await self.channel.receive())
        return FrameType(kind)

    async def chunks(self, data: bytes) -> None:
        for start in range(0, len(data), CHUNK):
            self.send(self.seal(FrameType.CHUNK, data[start : start + CHUNK]))
            await self.drain()


#: A script returns True when the transfer ended normally (nothing left to wait for).
Script = Callable[[Attacker], Awaitable[bool | None]]


async def attack(
    server: ServerProcess, tmp_path: Path, script: Script, transport: str = "tcp"
) -> Finished:
    """Run ``script`` as the sender against a real receiver (``--transport auto``, as a
    user runs it) over ``transport``: "tcp", "datachannel" (a receiver that takes no
    QUIC) or "quic" (the WebRTC path carrying QUIC); return the receiver's end."""
    receiver = start_receiver(
        server, tmp_path / "out", "--yes", "--connect-timeout", "10",
        env={"SFS_QUIC": "0" if transport == "datachannel" else "1"},
    )  # fmt: skip
    options = PeerOptions(
        reconnect_window=0.0,  # an attacker that vanishes is not waited for
        server_url=server.url,
        ice_servers=(),
        ice_addresses=(LOOPBACK,),
        connect_timeout=10,
        transport=Transport.TCP if transport == "tcp" else Transport.DATACHANNEL,
    )
    async with sender_session(parse_code(receiver.code), options, QuietUi()) as session:
        attacker = Attacker(session)
        assert isinstance(attacker.channel, TcpLink) is (transport != "datachannel")
        assert attacker.channel.route is not None
        assert attacker.channel.route.quic is (transport == "quic")
        try:
            if not await script(attacker):
                # The receiver must now give up: wait for its CANCEL (or its closing).
                async with asyncio.timeout(20):
                    while await attacker.reply() is not FrameType.CANCEL:
                        pass
        except SfsError:
            pass
    return receiver.finish()


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "out" not in p.parts}


def assert_clean(result: Finished, tmp_path: Path, before: set[str], exit_code: int) -> None:
    assert result.returncode == exit_code, result.stderr
    result.error_line()
    left = sorted(os.listdir(tmp_path / "out"))
    if exit_code in (12, 13):
        assert left == []  # data that failed a check is never kept
    else:  # the peer merely vanished: authenticated bytes are kept for a resume only
        assert all(name.endswith((".sfs-part", ".sfs-info")) for name in left), left
    after = {p for p in snapshot(tmp_path) if not p.startswith("receiver-")}
    assert after == before


async def tampered_chunk(a: Attacker) -> None:
    assert await a.offer(FileInfo("f.bin", len(DATA))) is FrameType.ACCEPT
    frame = bytearray(a.seal(FrameType.CHUNK, DATA[:CHUNK]))
    frame[-1] ^= 1
    a.send(bytes(frame))
    await a.drain()


async def reordered_chunks(a: Attacker) -> None:
    assert await a.offer(FileInfo("f.bin", len(DATA))) is FrameType.ACCEPT
    first = a.seal(FrameType.CHUNK, DATA[:CHUNK])
    second = a.seal(FrameType.CHUNK, DATA[CHUNK : 2 * CHUNK])
    a.send(second)
    await a.drain()
    a.send(first)
    await a.drain()


async def replayed_chunk(a: Attacker) -> None:
    assert await a.offer(FileInfo("f.bin", len(DATA))) is FrameType.ACCEPT
    frame = a.seal(FrameType.CHUNK, DATA[:CHUNK])
    a.send(frame)
    await a.drain()
    a.send(frame)
    await a.drain()


async def duplicated_chunk(a: Attacker) -> None:
    assert await a.offer(FileInfo("f.bin", len(DATA))) is FrameType.ACCEPT
    await a.chunks(DATA[:CHUNK] + DATA[:CHUNK] + DATA[CHUNK : 2 * CHUNK])  # freshly sealed
    a.send(a.seal(FrameType.FILE_DONE, SHA))
    await a.drain()


async def truncated_stream(a: Attacker) -> None:
    assert await a.offer(FileInfo("f.bin", len(DATA))) is FrameType.ACCEPT
    await a.chunks(DATA[:CHUNK])
    raise SfsError("closing early")  # leaves the session: the connection closes


async def wrong_hash(a: Attacker) -> None:
    assert await a.offer(FileInfo("f.bin", len(DATA))) is FrameType.ACCEPT
    await a.chunks(DATA)
    a.send(a.seal(FrameType.FILE_DONE, hashlib.sha256(b"other").digest()))
    await a.drain()


async def more_than_declared(a: Attacker) -> None:
    assert await a.offer(FileInfo("f.bin", len(DATA) - 1)) is FrameType.ACCEPT
    await a.chunks(DATA)


async def larger_than_free_disk(a: Attacker) -> None:
    assert await a.offer(FileInfo("huge.bin", 2**60)) is FrameType.CANCEL


async def oversized_frame(a: Attacker) -> None:
    assert await a.offer(FileInfo("f.bin", 2 * MAX_CHUNK_BYTES), chunk_size=MAX_CHUNK_BYTES) is (
        FrameType.ACCEPT
    )
    if isinstance(a.channel, DataChannelLink):
        # Lift aiortc's own check of the receiver's advertised limit, as an attacker would.
        a.channel._channel.transport._remote_max_message_size = 2**22
    a.send(a.seal(FrameType.CHUNK, os.urandom(MAX_CHUNK_BYTES + 1000)))
    await a.drain()


async def chunk_before_accept(a: Attacker) -> None:
    a.send(a.seal(FrameType.CHUNK, DATA[:CHUNK]))
    await a.drain()


async def unknown_frame_type(a: Attacker) -> None:
    a.send(a.seal(200, b"{}"))
    await a.drain()


async def text_message(a: Attacker) -> None:
    """A message that is no sealed frame: a DataChannel text message; on TCP, five
    bytes framed as a message."""
    if isinstance(a.channel, DataChannelLink):
        a.channel._channel.send("hello")
    else:
        a.raw(b"\x00\x00\x00\x05hello")


async def cut_mid_frame(a: Attacker) -> None:
    """(TCP) half a sealed chunk, then the connection closes."""
    assert await a.offer(FileInfo("f.bin", len(DATA))) is FrameType.ACCEPT
    await a.chunks(DATA[:CHUNK])
    frame = a.seal(FrameType.CHUNK, DATA[CHUNK : 2 * CHUNK])
    a.raw(len(frame).to_bytes(4, "big") + frame[: len(frame) // 2])
    raise SfsError("closing early")


async def frame_length_over_the_limit(a: Attacker) -> None:
    """(TCP) a length prefix of 4 GiB: refused before a byte of it is buffered."""
    assert await a.offer(FileInfo("f.bin", len(DATA))) is FrameType.ACCEPT
    a.raw(b"\xff\xff\xff\xff" + os.urandom(1000))


async def offer_from_another_version(a: Attacker) -> None:
    payload = json.dumps({"v": 99, "files": [], "chunk_size": 1}).encode()
    a.send(a.seal(FrameType.OFFER, payload))
    await a.drain()


@pytest.mark.parametrize(
    ("script", "exit_code"),
    [
        (tampered_chunk, 12),
        (reordered_chunks, 12),
        (replayed_chunk, 12),
        (duplicated_chunk, 12),
        (truncated_stream, 7),
        (wrong_hash, 12),
        (more_than_declared, 13),
        (larger_than_free_disk, 11),
        (oversized_frame, 13),
        (chunk_before_accept, 13),
        (unknown_frame_type, 13),
        (text_message, 12),
        (offer_from_another_version, 13),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
@pytest.mark.parametrize("transport", ["tcp", "datachannel"])
async def test_malicious_frames(
    sfs_server: ServerProcess, tmp_path: Path, script: Script, exit_code: int, transport: str
) -> None:
    before = snapshot(tmp_path)
    result = await attack(sfs_server, tmp_path, script, transport)
    assert_clean(result, tmp_path, before, exit_code)


async def test_a_tampered_chunk_over_quic_fails_and_writes_nothing(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """QUIC carries the TCP path's frames (the cases above, over TCP): one of them over
    QUIC shows the receiver reads them there the same way."""
    before = snapshot(tmp_path)
    result = await attack(sfs_server, tmp_path, tampered_chunk, "quic")
    assert_clean(result, tmp_path, before, 12)


@pytest.mark.parametrize(
    ("script", "exit_code"),
    [(cut_mid_frame, 7), (frame_length_over_the_limit, 13)],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
async def test_malicious_bytes_on_the_tcp_connection(
    sfs_server: ServerProcess, tmp_path: Path, script: Script, exit_code: int
) -> None:
    before = snapshot(tmp_path)
    result = await attack(sfs_server, tmp_path, script, "tcp")
    assert_clean(result, tmp_path, before, exit_code)


def offer_one_file(name: str) -> Script:
    async def script(a: Attacker) -> bool:
        if await a.offer(FileInfo(name, len(DATA))) is not FrameType.ACCEPT:
            return False
        await a.chunks(DATA)
        a.send(a.seal(FrameType.FILE_DONE, SHA))
        await a.drain()
        return await a.reply() is FrameType.FILE_ACK

    return script


@pytest.mark.parametrize(
    ("offered", "saved"),
    [
        ("../escape.txt", "escape.txt"),
        ("../../../../../../tmp/escape.txt", "escape.txt"),
        ("/etc/passwd", "passwd"),
        ("..\\..\\windows\\evil.dll", "evil.dll"),
        ("nul\x00byte.txt", "nulbyte.txt"),
        ("\x1b]0;owned\x07title.txt", "]0;ownedtitle.txt"),
        ("right\u202eexe.txt", "rightexe.txt"),
        ("CON", "_CON"),
        ("aux.txt", "_aux.txt"),
        (".profile", "profile"),
    ],
)
async def test_hostile_names_land_safely_inside_the_folder(
    sfs_server: ServerProcess, tmp_path: Path, offered: str, saved: str
) -> None:
    before = snapshot(tmp_path)
    result = await attack(sfs_server, tmp_path, offer_one_file(offered))
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path / "out") == [saved]
    assert (tmp_path / "out" / saved).read_bytes() == DATA
    after = {p for p in snapshot(tmp_path) if not p.startswith("receiver-")}
    assert after == before


@pytest.mark.parametrize("offered", ["", ".", "..", "/", "\x00\x01\x02", "x" * 10_000], ids=repr)
async def test_unusable_names_are_refused(
    sfs_server: ServerProcess, tmp_path: Path, offered: str
) -> None:
    before = snapshot(tmp_path)
    result = await attack(sfs_server, tmp_path, offer_one_file(offered))
    assert_clean(result, tmp_path, before, 13)


#: The receiver's own address in its namespace: not loopback, so it is not "on this
#: machine only", and the peer it meets could be anywhere.
VICTIM_ADDRESS = "10.99.0.1"


def test_a_sealed_offer_aiming_at_local_services_gets_no_connection_to_them(
    tmp_path: Path, netns: str
) -> None:
    """Before: the receiver dialled the sealed list as given, before anyone accepted
    anything, and wrote its 24-byte hello to each: this test saw connections to the
    traps at 127.0.0.1, 127.0.0.2, ::1, 0.0.0.0, ::, ::ffff:127.0.0.1 and to port 22.
    Now a real `sfs receive` on a non-loopback address, given a sealed offer (the
    right code) that names traps on its own machine by loopback, unspecified,
    IPv4-mapped, broadcast and privileged-port addresses, dials none of them, and
    says so at -v; the session itself still opens (over the receiver's listener)."""
    in_netns(netns, "ip", "addr", "add", f"{VICTIM_ADDRESS}/32", "dev", "lo")
    server = start_server(tmp_path, netns=netns)
    try:
        receiver = start_receiver(
            server, tmp_path / "out", "--yes", "--connect-timeout", "20", netns=netns,
            env={"SFS_ICE_ADDRESSES": VICTIM_ADDRESS, "SFS_DEBUG": "1"},
        )  # fmt: skip
        attacker = subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.hostile_direct_offer",
             server.url, receiver.code, VICTIM_ADDRESS],
            capture_output=True, text=True, timeout=60, env=peer_env(server.url),
        )  # fmt: skip
        received = receiver.stop()
    finally:
        stop_process(server.process)
    assert attacker.returncode == 0, attacker.stderr[-3000:] + received.stderr[-3000:]
    report = json.loads(attacker.stdout.splitlines()[-1])
    assert report["knocked"] == [], received.stderr[-3000:]
    for host, port in parse_addresses(report["offered"]):
        refused = f"not dialing {format_address(host, port)}:"
        assert refused in received.stderr, received.stderr[-3000:]
    assert "dialing nothing" in received.stderr
