"""The direct TCP path: the proof (sans I/O), TcpLink's framing over real loopback
sockets, DirectPath's choice with strangers about, and no nonce twice under one key
across the two transports."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfs.errors import CryptoError, PeerGoneError, RemoteProtocolError
from sfs.peer.files.destinations import Plan
from sfs.peer.files.sources import inspect_sources
from sfs.peer.proto import conversation
from sfs.peer.proto.crypto import TCP_MAGIC, FrameOpener, SessionKeys, tcp_proof
from sfs.peer.proto.framing import Role, TransferProtocol
from sfs.peer.proto.wire import Offer
from sfs.peer.receiving import receive_files
from sfs.peer.sending import send_files
from sfs.peer.transport import tcp
from sfs.peer.transport.tcp import CHOSEN, DirectPath, Prover, TcpLink, parse_addresses
from tests.helpers import channel_pair, key_pair
from tests.strangers import Strangers, many_sources

pytestmark = pytest.mark.timeout(30)

#: The hosts of a side on loopback (it may then dial the other side's loopback ports).
LOOPBACK = ("127.0.0.1",)


def provers(
    sender: SessionKeys, receiver: SessionKeys, *, sender_dials: bool = True
) -> tuple[Prover, Prover]:
    """(dialer, listener) for one connection between the two sides."""
    s = Prover(dialer=sender_dials, own_key=sender.proof_send, peer_key=sender.proof_receive)
    r = Prover(
        dialer=not sender_dials, own_key=receiver.proof_send, peer_key=receiver.proof_receive
    )
    return (s, r) if sender_dials else (r, s)


def run_proof(dialer: Prover, listener: Prover) -> list[bytes]:
    """Drive both ends to the end; return the three messages."""
    hello = dialer.hello()
    answer = listener.receive(hello)
    final = dialer.receive(answer)
    assert listener.receive(final) == b""
    return [hello, answer, final]


# -- the proof --------------------------------------------------------------------------------


@pytest.mark.parametrize("sender_dials", [True, False])
def test_both_ends_prove_the_key_in_three_messages(sender_dials: bool) -> None:
    ks, kr = key_pair()
    dialer, listener = provers(ks, kr, sender_dials=sender_dials)
    messages = run_proof(dialer, listener)
    assert [len(m) for m in messages] == [24, 48, 32]
    assert messages[0].startswith(TCP_MAGIC)
    assert dialer.proven
    assert listener.proven


def test_the_proof_is_an_hmac_of_the_transcript_under_the_roles_key() -> None:
    """Known answer: the HMAC of "L" | MAGIC | nonce_d | nonce_l, as PROTOCOL.md says."""
    ks, kr = key_pair()
    nd, nl = bytes(range(16)), bytes(range(16, 32))
    dialer = Prover(dialer=True, own_key=ks.proof_send, peer_key=ks.proof_receive, nonce=nd)
    listener = Prover(dialer=False, own_key=kr.proof_send, peer_key=kr.proof_receive, nonce=nl)
    hello, answer, final = run_proof(dialer, listener)
    assert hello == b"sfs/tcp1" + nd
    expected = hmac.new(kr.proof_send, b"L" + b"sfs/tcp1" + nd + nl, "sha256").digest()
    assert answer == nl + expected
    assert final == tcp_proof(key=ks.proof_send, side=b"D", dialer_nonce=nd, listener_nonce=nl)


def test_on_quic_the_listener_proves_first_over_the_initials_connection_id() -> None:
    """Known answer: on a QUIC stream the dialer's nonce is its Initial's destination
    connection ID, the listener speaks first, and the magic is "sfs/quic"."""
    ks, kr = key_pair()
    dcid, nl = bytes(range(8)), bytes(range(16, 32))
    dialer = Prover(dialer=True, own_key=ks.proof_send, peer_key=ks.proof_receive, quic_nonce=dcid)
    listener = Prover(
        dialer=False, own_key=kr.proof_send, peer_key=kr.proof_receive, nonce=nl, quic_nonce=dcid
    )
    assert dialer.hello() == b""
    first = listener.hello()
    assert first == nl + hmac.new(kr.proof_send, b"L" + b"sfs/quic" + dcid + nl, "sha256").digest()
    final = dialer.receive(first)
    assert dialer.proven
    assert final == hmac.new(ks.proof_send, b"D" + b"sfs/quic" + dcid + nl, "sha256").digest()
    assert listener.receive(final) == b""
    assert listener.proven


def test_a_quic_listeners_proof_is_worthless_on_another_connection_or_on_tcp() -> None:
    """What a stranger gets by sending the receiver an Initial of its own: a proof
    over its own connection ID, which the sender (another ID) refuses, and which a TCP
    dialer with that very nonce refuses too (the magic differs)."""
    ks, kr = key_pair()
    theirs, senders = bytes(16), bytes(range(16))
    listener = Prover(
        dialer=False, own_key=kr.proof_send, peer_key=kr.proof_receive, quic_nonce=theirs
    )
    flight = listener.hello()
    sender = Prover(
        dialer=True, own_key=ks.proof_send, peer_key=ks.proof_receive, quic_nonce=senders
    )
    with pytest.raises(CryptoError):
        sender.receive(flight)
    over_tcp = Prover(dialer=True, own_key=ks.proof_send, peer_key=ks.proof_receive, nonce=theirs)
    with pytest.raises(CryptoError):
        over_tcp.receive(flight)


def test_a_peer_with_other_keys_proves_nothing() -> None:
    ks, _ = key_pair()
    _, other = key_pair(password=b"tiger-lump")
    dialer, listener = provers(ks, other)
    with pytest.raises(CryptoError, match="did not prove the session key"):
        dialer.receive(listener.receive(dialer.hello()))


def test_a_stranger_that_does_not_speak_sfs_gets_no_answer() -> None:
    _, kr = key_pair()
    listener = Prover(dialer=False, own_key=kr.proof_send, peer_key=kr.proof_receive)
    with pytest.raises(CryptoError, match="not sfs's"):
        listener.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[:24])


def test_a_recorded_handshake_replayed_to_a_new_listener_fails() -> None:
    ks, kr = key_pair()
    dialer, listener = provers(ks, kr)
    hello, _, final = run_proof(dialer, listener)
    # The same key, a fresh listener (a new nonce): the old final proof is worthless.
    again = Prover(dialer=False, own_key=kr.proof_send, peer_key=kr.proof_receive)
    again.receive(hello)
    with pytest.raises(CryptoError):
        again.receive(final)


def test_a_listeners_proof_reflected_back_is_refused() -> None:
    """A man in the middle who bounces the receiver's own listener proof back to it
    (as if from the sender's listener) fails: the roles' keys differ."""
    _ks, kr = key_pair()
    receiver_dialing = Prover(dialer=True, own_key=kr.proof_send, peer_key=kr.proof_receive)
    receiver_listening = Prover(dialer=False, own_key=kr.proof_send, peer_key=kr.proof_receive)
    answer = receiver_listening.receive(receiver_dialing.hello())
    with pytest.raises(CryptoError):
        receiver_dialing.receive(answer)


@given(which=st.integers(0, 2), position=st.integers(0, 47), bit=st.integers(0, 7))
def test_any_flipped_bit_in_the_handshake_fails_it(which: int, position: int, bit: int) -> None:
    ks, kr = KEYS
    dialer, listener = provers(ks, kr)
    hello = dialer.hello()
    if which == 0:
        hello = flip(hello, position % len(hello), bit)
    try:
        answer = listener.receive(hello)
        if which == 1:
            answer = flip(answer, position % len(answer), bit)
        final = dialer.receive(answer)
        if which == 2:
            final = flip(final, position % len(final), bit)
        listener.receive(final)
    except CryptoError:
        return
    pytest.fail("a flipped bit went unnoticed")


KEYS = key_pair()


def flip(data: bytes, position: int, bit: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 1 << bit
    return bytes(changed)


def test_addresses_from_the_other_side_are_ip_literals_only() -> None:
    offered = [
        "127.0.0.1:4000",
        "[::1]:4001",
        "example.org:80",
        "127.0.0.1:0",
        "127.0.0.1:70000",
        "127.0.0.1",
        "[::1:4001",
        7,
    ]
    assert parse_addresses(offered) == [("127.0.0.1", 4000), ("::1", 4001)]
    assert parse_addresses("127.0.0.1:4000") == []
    assert len(parse_addresses([f"127.0.0.1:{p}" for p in range(1, 20)])) == tcp.MAX_ADDRESSES


# -- real connections on loopback -------------------------------------------------------------


async def direct_pair(
    ks: SessionKeys | None = None, kr: SessionKeys | None = None
) -> tuple[TcpLink, TcpLink]:
    """(sender's, receiver's) chosen connection, over 127.0.0.1."""
    if ks is None or kr is None:
        ks, kr = key_pair()
    sender = DirectPath(sender=True, keys=ks, hosts=LOOPBACK)
    receiver = DirectPath(sender=False, keys=kr, hosts=LOOPBACK)
    receiver.dial(await sender.listen())
    await receiver.listen()
    async with asyncio.timeout(5):
        chosen, taken = await asyncio.gather(sender.choose(), receiver.chosen())
    return chosen, taken


async def test_frames_of_every_size_arrive_whole_and_in_order() -> None:
    a, b = await direct_pair()
    frames = [os.urandom(n) for n in (1, 2, 3, 4, 5, 1000, 65_536, tcp.MAX_FRAME_BYTES)] * 3
    for f in frames:
        a.send(f)
    received = [bytes(await b.receive()) for _ in frames]
    assert received == frames
    a.close()
    with pytest.raises(PeerGoneError):
        await b.receive()


async def test_reading_pauses_when_frames_are_not_taken() -> None:
    """Memory stays flat: a receiver that takes nothing holds about READ_LIMIT_BYTES,
    and the sender waits (TCP's window and the write limit hold it back)."""
    a, b = await direct_pair()
    frame = os.urandom(1024 * 1024)

    async def flood() -> None:
        for _ in range(64):
            a.send(frame)
            await a.drain()

    sending = asyncio.ensure_future(flood())
    await asyncio.sleep(1.0)
    assert not sending.done()
    assert b._held <= tcp.READ_LIMIT_BYTES + len(frame) + 8
    for _ in range(64):
        assert await b.receive() == frame
    await sending


async def test_an_oversized_frame_is_refused() -> None:
    a, b = await direct_pair()
    assert a._transport is not None
    a._transport.write(struct.pack(">I", tcp.MAX_FRAME_BYTES + 1))
    with pytest.raises(RemoteProtocolError, match="frame of"):
        await b.receive()


async def test_a_connection_cut_mid_frame_is_an_error_not_a_short_frame() -> None:
    a, b = await direct_pair()
    assert a._transport is not None
    a._transport.write(struct.pack(">I", 100) + b"x" * 50)
    a.close()
    with pytest.raises(PeerGoneError, match="mid-frame"):
        await b.receive()


async def test_a_peer_that_closes_after_frames_is_gone_not_unset_up() -> None:
    """A FIN after frames (the peer killed with nothing unread) ends the link: it went
    away; it was set up. Before: eof_received and then connection_lost both ended it,
    and the second call said "closed before it was set up" (a CI run's sender said so
    of a transfer that had moved megabytes)."""
    a, b = await direct_pair()
    a.send(b"frame")
    assert await b.receive() == b"frame"
    a.close()
    async with asyncio.timeout(5):
        await b._closed.wait()  # the FIN came
    await asyncio.sleep(0.05)  # and connection_lost runs soon after it
    with pytest.raises(PeerGoneError) as gone:
        await b.receive()
    assert "set up" not in str(gone.value)
    assert "went away" in str(gone.value)


async def test_frames_before_the_peers_fin_are_read_before_a_send_fails() -> None:
    """The peer's last word (a CANCEL) behind data, then its FIN: while frames wait
    unread, a send (a PING, an ack) does not end the link with "went away"; every
    frame is read, and only then is the peer gone. Before: a receiver held back by
    --limit-rate sent a PING after the FIN and never read the CANCEL waiting for it."""
    a, b = await direct_pair()
    for i in range(3):
        a.send(b"frame %d" % i)
    a.close()
    async with asyncio.timeout(5):
        await b._closed.wait()  # the FIN came, three frames unread
    b.send(b"a ping")  # nothing raised: frames wait
    assert [await b.receive() for _ in range(3)] == [b"frame 0", b"frame 1", b"frame 2"]
    with pytest.raises(PeerGoneError, match="went away"):
        b.send(b"another ping")
    with pytest.raises(PeerGoneError, match="went away"):
        await b.receive()


async def test_a_reset_after_the_peers_fin_says_the_connection_broke() -> None:
    """The peer's FIN, then its kernel's reset for what arrived after it closed: the
    reset is told in words."""
    a, b = await direct_pair()
    b.eof_received()
    b.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
    with pytest.raises(PeerGoneError, match="the direct connection broke") as broke:
        await b.receive()
    assert "Errno" not in str(broke.value)
    a.close()


async def closed_unanswered(reader: asyncio.StreamReader, *, answered: bytes = b"") -> None:
    """The other end closed (or reset) the connection, having sent only ``answered``."""
    async with asyncio.timeout(5):
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read() == answered


async def raw_connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = parse_addresses([address])[0]
    return await asyncio.open_connection(host, port)


async def test_strangers_on_the_port_first_change_nothing() -> None:
    """A third party that connects first (silent, talking nonsense, or replaying the
    handshake of an earlier session) gets nothing and the real peer gets through."""
    ks, kr = key_pair()
    old_ks, _old_kr = key_pair(password=b"other-words")
    sender = DirectPath(sender=True, keys=ks, hosts=LOOPBACK)
    addresses = await sender.listen()
    silent = await raw_connect(addresses[0])
    nonsense = await raw_connect(addresses[0])
    nonsense[1].write(b"\x16\x03\x01" + os.urandom(200))
    # A well-formed hello from someone without the key gets the listener's answer,
    # and then nothing: its final proof cannot be right.
    impostor = await raw_connect(addresses[0])
    stranger = Prover(dialer=True, own_key=old_ks.proof_send, peer_key=old_ks.proof_receive)
    impostor[1].write(stranger.hello())
    answer = await impostor[0].readexactly(48)
    with pytest.raises(CryptoError):
        stranger.receive(answer)
    impostor[1].write(os.urandom(32))
    # Then the receiver.
    receiver = DirectPath(sender=False, keys=kr, hosts=LOOPBACK)
    receiver.dial(addresses)
    async with asyncio.timeout(5):
        chosen, taken = await asyncio.gather(sender.choose(), receiver.chosen())
    chosen.send(b"hello")
    await chosen.drain()
    assert await taken.receive() == b"hello"
    # Every stranger was closed, none heard a frame.
    for reader, _ in (silent, nonsense, impostor):
        await closed_unanswered(reader)


async def dial_and_prove(
    address: str, prover: Prover, *, then: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, list[bytes]]:
    """Dial ``address`` as ``prover`` and run the dialer's side of the proof by hand
    (then send ``then``); return the connection and every byte string sent."""
    reader, writer = await raw_connect(address)
    sent = [prover.hello()]
    writer.write(sent[0])
    sent.append(prover.receive(await reader.readexactly(48)))
    writer.write(sent[1] + then)
    return reader, writer, sent


async def test_a_replayed_dialer_handshake_is_not_proven() -> None:
    """Everything a genuine dialer sent on one connection, sent again on a new one: the
    new listener's nonce makes the recorded proof fail, and the connection is closed."""
    ks, kr = key_pair()
    sender = DirectPath(sender=True, keys=ks, hosts=LOOPBACK)
    addresses = await sender.listen()
    genuine = Prover(dialer=True, own_key=kr.proof_send, peer_key=kr.proof_receive)
    _, _writer, recorded = await dial_and_prove(addresses[0], genuine)
    chosen = await asyncio.wait_for(sender.choose(), 5)  # that one was proven
    chosen.close()
    # The replay, to a listener of the same session.
    sender2 = DirectPath(sender=True, keys=ks, hosts=LOOPBACK)
    addresses2 = await sender2.listen()
    reader2, writer2 = await raw_connect(addresses2[0])
    writer2.write(recorded[0])
    await reader2.readexactly(48)
    writer2.write(recorded[1])
    await closed_unanswered(reader2)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sender2.choose(), 0.5)
    await sender2.close()


async def test_a_receiver_takes_only_the_connection_the_sender_chose() -> None:
    """Two proven connections (each side dialed the other): the one with CHOSEN wins,
    the other is closed by both."""
    ks, kr = key_pair()
    sender = DirectPath(sender=True, keys=ks, hosts=LOOPBACK)
    receiver = DirectPath(sender=False, keys=kr, hosts=LOOPBACK)
    receiver_addresses = await receiver.listen()
    receiver.dial(await sender.listen())
    sender.dial(receiver_addresses)
    await asyncio.sleep(0.3)  # both proven by now
    assert receiver.proven_count == 2
    async with asyncio.timeout(5):
        chosen, taken = await asyncio.gather(sender.choose(), receiver.chosen())
    # The same connection at both ends: the sender's end is the receiver's peer.
    assert chosen._transport is not None
    assert chosen._transport.get_extra_info("sockname")[1] == int(taken.peer.rpartition(":")[2])
    chosen.send(b"x")
    await chosen.drain()
    assert await taken.receive() == b"x"
    assert sum(link.usable for link in receiver._links) == 1


async def test_a_choice_byte_that_is_not_chosen_is_a_protocol_error() -> None:
    ks, kr = key_pair()
    receiver = DirectPath(sender=False, keys=kr, hosts=LOOPBACK)
    addresses = await receiver.listen()
    dialer = Prover(dialer=True, own_key=ks.proof_send, peer_key=ks.proof_receive)
    reader, _writer, _ = await dial_and_prove(addresses[0], dialer, then=b"\x02")
    await closed_unanswered(reader)
    assert not receiver._chosen.done()
    await receiver.close()


# -- no nonce twice ---------------------------------------------------------------------------


class Recorder:
    """Wraps a channel's send to keep every frame (the nonce is its first 12 bytes)."""

    def __init__(self, channel: object) -> None:
        self.frames: list[bytes] = []
        original: Callable[[bytes], object] = channel.send  # type: ignore[attr-defined]

        def send(frame: bytes) -> None:
            self.frames.append(bytes(frame))
            original(frame)

        channel.send = send  # type: ignore[attr-defined]


async def test_no_nonce_is_used_twice_under_one_key_on_either_transport(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One session's keys, a whole transfer (keepalives included) on each transport:
    every (key, nonce) pair is new, and each transport's frames open only under its
    own keys."""
    monkeypatch.setattr(conversation, "PING_INTERVAL_SECONDS", 0.02)
    ks, kr = key_pair()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(300_000))
    (src / "b").write_bytes(b"")
    (src / "c").write_bytes(os.urandom(5))

    async def slow_yes(offer: Offer, plan: Plan) -> bool:
        await asyncio.sleep(0.3)  # keepalives flow both ways meanwhile
        return True

    keys_used: dict[bytes, list[bytes]] = {}
    for over_tcp in (False, True):
        out = tmp_path / f"out-{over_tcp}"
        out.mkdir()
        if over_tcp:
            s_keys, r_keys = ks.over_tcp(), kr.over_tcp()
            a, b = await direct_pair(ks, kr)
        else:
            s_keys, r_keys = ks, kr
            a, b = channel_pair()  # type: ignore[assignment]
        sent, answered = Recorder(a), Recorder(b)
        await asyncio.gather(
            send_files(
                a,
                TransferProtocol(Role.SENDER, s_keys),
                inspect_sources(sorted(src.iterdir())),
                sender="t",
                chunk_size=50_000,
            ),
            receive_files(
                b,
                TransferProtocol(Role.RECEIVER, r_keys),
                output_dir=out,
                overwrite=False,
                decide=slow_yes,
            ),
        )
        for name in "abc":
            assert (out / name).read_bytes() == (src / name).read_bytes()
        pings = [f for f in sent.frames + answered.frames if f[1] == 6]  # PING
        assert pings, "the test must see keepalives"
        keys_used.setdefault(s_keys.frame_send, []).extend(f[:12] for f in sent.frames)
        keys_used.setdefault(r_keys.frame_send, []).extend(f[:12] for f in answered.frames)
        # A frame of this transport does not open under the other one's key.
        other = kr.frame_receive if over_tcp else kr.over_tcp().frame_receive
        with pytest.raises(CryptoError):
            FrameOpener(other).open(sent.frames[0])
    assert len(keys_used) == 4, "four keys: two directions on two transports"
    for nonces in keys_used.values():
        assert len(nonces) == len(set(nonces)) >= 3


def test_the_transports_keys_are_distinct_and_mirror_each_other() -> None:
    ks, kr = key_pair()
    assert ks.tcp_send == kr.tcp_receive
    assert ks.tcp_receive == kr.tcp_send
    assert ks.proof_send == kr.proof_receive
    assert ks.proof_receive == kr.proof_send
    keys = [ks.frame_send, ks.frame_receive, ks.tcp_send, ks.tcp_receive]
    keys += [ks.proof_send, ks.proof_receive, ks.signal_send, ks.signal_receive]
    assert len(set(keys)) == len(keys)
    assert ks.over_tcp().frame_send == ks.tcp_send
    assert ks.over_tcp().frame_receive == ks.tcp_receive


def test_tune_sets_large_buffers_and_no_delay() -> None:
    with socket.socket() as sock:
        tcp.tune(sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 64 * 1024


def test_the_choice_byte_is_as_docs_protocol_says() -> None:
    assert CHOSEN == b"\x01"


# -- which of the other side's addresses are dialled (issue 22, item 6) ------------------------

ELSEWHERE = ("192.168.1.20",)  # a side on a LAN, not on loopback


def test_loopback_and_unreachable_addresses_from_a_peer_elsewhere_are_not_dialled() -> None:
    """Before: every IP literal with a port from 1 up was dialled as given (loopback,
    0.0.0.0, multicast, broadcast, a link-local address with no interface)."""
    offered = [
        ("127.0.0.1", 5000),
        ("127.3.2.1", 5000),
        ("::1", 5000),
        ("::ffff:127.0.0.1", 5000),  # loopback written IPv4-mapped
        ("0.0.0.0", 5000),  # Linux connects this to the machine itself
        ("0.1.2.3", 5000),
        ("::", 5000),
        ("224.0.0.1", 5000),
        ("239.255.255.250", 5000),
        ("ff02::1", 5000),
        ("255.255.255.255", 5000),
        ("240.0.0.1", 5000),
        ("fe80::1", 5000),  # link-local without an interface
        ("fe80::1%eth0", 5000),  # on an interface this side has no address on
        ("169.254.1.1", 5000),
        ("192.168.1.30", 22),  # a privileged port: sfs never listens there
        ("192.168.1.30", 0),
    ]
    kept, refused = tcp.dialable(offered, own_hosts=ELSEWHERE)
    assert kept == []
    assert [(h, p) for h, p, _ in refused] == offered


def test_the_addresses_an_honest_peer_lists_are_all_dialled() -> None:
    offered = [
        ("192.168.1.30", 40000),
        ("10.0.0.7", 1024),
        ("203.0.113.9", 65535),
        ("fd77:1::2", 50000),
        ("2001:db8::5", 50001),
        ("::ffff:192.168.1.31", 40001),
    ]
    kept, refused = tcp.dialable(offered, own_hosts=ELSEWHERE)
    assert refused == []
    assert kept == [*offered[:5], ("192.168.1.31", 40001)]


def test_loopback_is_dialled_by_a_side_on_loopback_itself() -> None:
    """Both on this machine (``--ice-address 127.0.0.1``, as the tests run): loopback
    is where the peer is.  Still no unspecified address."""
    offered = [("127.0.0.1", 5000), ("::1", 5001), ("0.0.0.0", 5002)]
    for own in (("127.0.0.1",), ("::1",), ("192.168.1.20", "127.0.0.1")):
        kept, _ = tcp.dialable(offered, own_hosts=own)
        assert kept == offered[:2]


def test_link_local_is_dialled_only_on_a_link_of_this_side() -> None:
    offered = [("fe80::2%eth0", 5000), ("fe80::2%eth1", 5000), ("fe80::3", 5000)]
    kept, _ = tcp.dialable(offered, own_hosts=("fe80::1%eth0",))
    assert kept == [("fe80::2%eth0", 5000)]
    kept, _ = tcp.dialable([("169.254.7.7", 5000)], own_hosts=("169.254.1.1",))
    assert kept == [("169.254.7.7", 5000)]


def test_duplicates_go_and_at_most_max_addresses_are_dialled() -> None:
    offered = [("10.0.0.1", 5000)] * 3 + [("10.0.0.2", p) for p in range(5000, 5020)]
    kept, _ = tcp.dialable(offered, own_hosts=ELSEWHERE)
    assert kept[:2] == [("10.0.0.1", 5000), ("10.0.0.2", 5000)]
    assert len(kept) == tcp.MAX_ADDRESSES


OWN_HOSTS = st.sampled_from(
    [(), ("127.0.0.1",), ("::1",), ("192.168.1.20",), ("fd00::1",), ("169.254.1.1",),
     ("fe80::1%eth0",), ("10.0.0.1", "127.0.0.1")]
)  # fmt: skip
ANY_ADDRESS = st.one_of(
    st.ip_addresses(),
    st.sampled_from(["127.0.0.1", "::1", "0.0.0.0", "::", "224.0.0.1", "ff02::1",
                     "255.255.255.255", "fe80::1", "fe80::1%eth0", "169.254.1.1",
                     "::ffff:127.0.0.1", "::ffff:0.0.0.0", "::127.0.0.1"]),
)  # fmt: skip


@given(
    offered=st.lists(st.tuples(ANY_ADDRESS.map(str), st.integers(0, 65535)), max_size=20),
    own_hosts=OWN_HOSTS,
)
def test_nothing_dialled_is_an_address_the_peer_could_not_have(
    offered: list[tuple[str, int]], own_hosts: tuple[str, ...]
) -> None:
    kept, refused = tcp.dialable(offered, own_hosts=own_hosts)
    own = [ipaddress.ip_address(h) for h in own_hosts]
    assert len(kept) == len(set(kept)) <= tcp.MAX_ADDRESSES
    for host, port in kept:
        address = ipaddress.ip_address(host)
        assert port >= tcp.MIN_PORT
        assert not isinstance(address, ipaddress.IPv6Address) or address.ipv4_mapped is None
        assert not (address.is_unspecified)
        assert not (address.is_multicast)
        assert not address.is_reserved or address.is_loopback  # ::1 is in ::/8
        assert not (isinstance(address, ipaddress.IPv4Address) and address.packed[0] == 0)
        if address.is_loopback:
            assert any(o.is_loopback for o in own)
        if address.is_link_local:
            assert any(o.is_link_local and o.version == address.version for o in own)
            if isinstance(address, ipaddress.IPv6Address):
                assert address.scope_id is not None
    # Everything refused was offered, and says why.
    assert all(reason for _, _, reason in refused)
    assert {(h, p) for h, p, _ in refused} <= set(offered)


@given(
    hosts=st.lists(
        st.ip_addresses().filter(
            lambda a: (
                (a.is_private or a.is_global)
                and not (a.is_loopback or a.is_link_local or a.is_multicast or a.is_reserved)
                and not a.is_unspecified
                and not (isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None)
                and not (isinstance(a, ipaddress.IPv4Address) and a.packed[0] == 0)
            )
        ),
        unique=True,
        max_size=tcp.MAX_ADDRESSES,
    ),
    port=st.integers(tcp.MIN_PORT, 65535),
    own_hosts=OWN_HOSTS,
)
def test_every_unicast_address_an_honest_peer_lists_is_dialled(
    hosts: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
    port: int,
    own_hosts: tuple[str, ...],
) -> None:
    offered = [(str(h), port) for h in hosts]
    kept, refused = tcp.dialable(offered, own_hosts=own_hosts)
    assert (kept, refused) == (offered, [])


# -- whom a listener closes to make room (issue 22, item 5) -------------------------------------


def test_a_newcomer_past_the_cap_of_its_source_closes_that_sources_oldest_silent_one() -> None:
    held = [tcp.Knock("10.0.0.9", greeted=True, since=0.0)] + [
        tcp.Knock("10.0.0.9", greeted=False, since=float(t))
        for t in range(1, tcp.MAX_UNPROVEN_PER_SOURCE)
    ]
    assert tcp.to_evict(held[:-1], "10.0.0.9") is None
    assert tcp.to_evict(held, "10.0.0.9") == 1  # not the greeted one, though older
    assert tcp.to_evict(held, "10.0.0.8") is None  # another source: room left


def test_past_the_total_the_weakest_of_all_goes() -> None:
    held = [
        tcp.Knock(f"10.0.{i}.1", greeted=i % 2 == 0, since=float(i))
        for i in range(tcp.MAX_UNPROVEN)
    ]
    assert tcp.to_evict(held, "10.1.0.1") == 1  # the oldest not greeted
    greeted = [tcp.Knock(k.source, True, k.since) for k in held]
    assert tcp.to_evict(greeted, "10.1.0.1") == 0


def test_one_ipv6_host_counts_as_one_source_however_many_addresses_it_takes() -> None:
    assert tcp.source_of("2001:db8:1:2::1") == tcp.source_of("2001:db8:1:2:ffff::7")
    assert tcp.source_of("2001:db8:1:2::1") != tcp.source_of("2001:db8:1:3::1")
    assert tcp.source_of("::ffff:10.0.0.1") == tcp.source_of("10.0.0.1") == "10.0.0.1"


@given(
    arrivals=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "peer"]), st.booleans()), max_size=200
    ),
    real_at=st.integers(0, 200),
)
def test_strangers_that_never_greet_can_never_close_the_real_peers_connection(
    arrivals: list[tuple[str, bool]], real_at: int
) -> None:
    """A listener fed any sequence of strangers (from the real peer's own source too),
    with the real peer's connection (greeted on arrival) among them: the caps always
    hold, and the real one is closed only when every other candidate greeted too."""
    order = [*arrivals[:real_at], ("peer", True), *arrivals[real_at:]]
    real = min(real_at, len(arrivals))
    held: list[tcp.Knock] = []
    for t, (source, greets) in enumerate(order):
        victim = tcp.to_evict(held, source)
        if victim is not None:
            same = [k for k in held if k.source == source]
            candidates = same if len(same) >= tcp.MAX_UNPROVEN_PER_SOURCE else held
            if held[victim].since == real:
                assert all(k.greeted for k in candidates)
            assert held[victim] in candidates
            assert held[victim].since == min(
                k.since for k in candidates if k.greeted == held[victim].greeted
            )
            held.pop(victim)
        held.append(tcp.Knock(source, greets, float(t)))
        assert len(held) <= tcp.MAX_UNPROVEN
        assert all(sum(k.source == s for k in held) <= tcp.MAX_UNPROVEN_PER_SOURCE for s in "abc")


# -- strangers holding a listener (issue 22, item 5) --------------------------------------------


@pytest.mark.parametrize("sources", ["one-source", "many-sources"])
@pytest.mark.parametrize("listener", ["sender", "receiver"])
async def test_silent_and_slow_strangers_cannot_keep_the_real_peer_off_a_listener(
    listener: str, sources: str
) -> None:
    """Before: a listener closed every connection past 16 unproven ones, so the first
    16 strangers kept the real peer out (its dial was closed, choose() timed out).
    Now 64 silent and 64 slow strangers per listener are opened first, from the real
    peer's own address or from 128 others, and more keep coming as it dials: the real
    connection is proven and chosen, and the strangers were closed to make room."""
    ks, kr = key_pair()
    sender = DirectPath(sender=True, keys=ks, hosts=LOOPBACK)
    receiver = DirectPath(sender=False, keys=kr, hosts=LOOPBACK)
    listening, dialing = (sender, receiver) if listener == "sender" else (receiver, sender)
    (address,) = await listening.listen()
    host, port = parse_addresses([address])[0]
    strangers = Strangers(
        host, port, ["127.0.0.1"] if sources == "one-source" else many_sources(128)
    )
    try:
        await strangers.open(silent=64, slow=64)
        strangers.keep_knocking()
        dialing.dial([address])
        async with asyncio.timeout(10):
            chosen, taken = await asyncio.gather(sender.choose(), receiver.chosen())
        chosen.send(b"through")
        await chosen.drain()
        assert await taken.receive() == b"through"
        assert strangers.closed_by_listener() >= 128 - tcp.MAX_UNPROVEN
    finally:
        await strangers.close()
        await sender.close()
        await receiver.close()
