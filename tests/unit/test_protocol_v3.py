"""Protocol version 3: header and LISTING, MORE pieces, sparse offsets, ZCHUNK,
text messages and pipes; examples first, then Hypothesis properties."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from sfs.defaults import MAX_MESSAGE_BYTES, MAX_TEXT_BYTES
from sfs.errors import LocalProtocolError, RemoteProtocolError, UpgradeError
from sfs.peer.proto.crypto import FrameSealer, SessionKeys
from sfs.peer.proto.framing import Role, State, TransferProtocol
from sfs.peer.proto.wire import (
    MAX_CONTROL_BYTES,
    MAX_FILES,
    MAX_JOINED_CONTROL_BYTES,
    Accept,
    Chunk,
    FileAck,
    FileDone,
    FileInfo,
    FrameType,
    Offer,
    Partial,
    Ping,
    Resume,
    Start,
    decode_offer,
    decompress_chunk,
    encode_listing,
    encode_offer,
    offer_version,
)
from tests.helpers import key_pair

SENDER_KEYS, RECEIVER_KEYS = key_pair()
MANY = Offer(tuple(FileInfo(f"f{i}", 3, i) for i in range(MAX_FILES + 1)), chunk_size=16)
TEXT = Offer((FileInfo("", 5),), sender="alice", text=True)
PIPE = Offer((FileInfo("backup.tar", 0, stream=True),), chunk_size=4)


def fresh() -> tuple[TransferProtocol, TransferProtocol]:
    return TransferProtocol(Role.SENDER, SENDER_KEYS), TransferProtocol(
        Role.RECEIVER, RECEIVER_KEYS
    )


def deliver(frames: Sequence[bytes], to: TransferProtocol) -> list[object]:
    return [to.receive(frame) for frame in frames]


def offered(offer: Offer) -> tuple[TransferProtocol, TransferProtocol]:
    sender, receiver = fresh()
    events = deliver(sender.send_frames(offer), receiver)
    assert events[-1] == offer
    assert receiver.state is State.DECIDING
    return sender, receiver


def forged(keys: SessionKeys, frames_before: int) -> FrameSealer:
    """A sealer with the right key and counter, to make frames sfs would never send."""
    sealer = FrameSealer(keys.frame_send)
    for _ in range(frames_before):
        sealer.seal(FrameType.PING, b"")
    return sealer


# -- the offer ----------------------------------------------------------------------------


@pytest.mark.parametrize("offer", [MANY, TEXT, PIPE], ids=["many", "text", "pipe"])
def test_version_3_offers_are_a_header_then_a_listing(offer: Offer) -> None:
    assert offer.version == 3
    sender, receiver = fresh()
    frames = sender.send_frames(offer)
    first = receiver.receive(frames[0])
    assert first == Partial()
    assert receiver.state is State.LISTING
    # The header alone says the version, so an older receiver can tell the user.
    assert offer_version(encode_offer(offer)) == 3
    assert json.loads(encode_offer(offer))["v"] == 3
    assert deliver(frames[1:], receiver)[-1] == offer


def test_plain_offers_stay_in_the_oldest_version() -> None:
    assert Offer((FileInfo("a", 1),)).version == 1
    assert Offer((FileInfo("a", 1, folder=("d",)),)).version == 2
    assert Offer(tuple(FileInfo(f"f{i}", 1) for i in range(MAX_FILES))).version == 1


def test_a_newer_offer_says_upgrade() -> None:
    _, receiver = fresh()
    sealer = FrameSealer(SENDER_KEYS.frame_send)
    with pytest.raises(UpgradeError, match="upgrade sfs here"):
        receiver.receive(sealer.seal(FrameType.OFFER, b'{"v":4}'))


@pytest.mark.parametrize(
    ("text", "listing"),
    [
        (False, {"files": [{"name": "a", "size": None, "mtime_ns": 0}] * 2, "folders": []}),
        (True, {"files": [{"name": "", "size": MAX_TEXT_BYTES + 1, "mtime_ns": 0}]}),
        (True, {"files": [{"name": "", "size": 1, "mtime_ns": 0}] * 2}),
        (False, {"files": [{"name": "a", "size": None, "mtime_ns": 0}], "folders": [["d"]]}),
        (False, {"files": [], "folders": []}),
        (False, {"files": [{"name": "a", "size": 1, "mtime_ns": 0, "x": 1}], "folders": []}),
    ],
    ids=["two-pipes", "text-too-large", "two-texts", "pipe-with-folder", "nothing", "x-not-bool"],
)
def test_malformed_listings_are_refused(text: bool, listing: dict[str, object]) -> None:
    header = json.dumps({"v": 3, "sender": "", "chunk_size": 4, "text": text}).encode()
    with pytest.raises(RemoteProtocolError):
        decode_offer(header, json.dumps(listing).encode())


def test_a_listing_without_its_header_is_refused() -> None:
    _, receiver = fresh()
    sealer = FrameSealer(SENDER_KEYS.frame_send)
    with pytest.raises(RemoteProtocolError, match="unexpected LISTING"):
        receiver.receive(sealer.seal(FrameType.LISTING, b'{"files":[]}'))


def test_the_sender_refuses_a_pipe_or_text_that_is_not_alone() -> None:
    with pytest.raises(LocalProtocolError, match="alone"):
        fresh()[0].send_frames(Offer((FileInfo("a", 0, stream=True), FileInfo("b", 1))))
    with pytest.raises(LocalProtocolError, match="at most"):
        fresh()[0].send_frames(Offer((FileInfo("", MAX_TEXT_BYTES + 1),), text=True))


# -- MORE pieces and sparse offsets -------------------------------------------------------


def test_a_large_resume_travels_in_pieces_and_a_ping_may_come_between() -> None:
    sender, receiver = offered(MANY)
    held = tuple(1 + i % 3 for i in range(len(MANY.files)))
    assert sender.receive(receiver.send(Accept(held))) == Accept(held)
    resume = Resume(held, tuple(bytes([i % 256]) * 32 for i in range(len(held))))
    sender_many = sender.send_frames(resume)
    assert len(sender_many) == 1  # sparse rows of 1001 files fit in one frame
    assert receiver.receive(sender_many[0]) == resume
    start = Start(held)
    assert sender.receive(receiver.send(start)) == start


def test_more_pieces_join_and_a_ping_may_come_between_them() -> None:
    big = Offer(tuple(FileInfo(f"{i:05}" + "n" * 900, 1) for i in range(MAX_FILES)))
    frames = fresh()[0].send_frames(big)
    assert len(frames) > 3
    assert all(len(f) <= MAX_MESSAGE_BYTES for f in frames)
    assert deliver(frames, fresh()[1])[-1] == big
    # The keepalive runs apart from the offer: its ping may fall between two pieces.
    listing = encode_listing(big)
    sealer = FrameSealer(SENDER_KEYS.frame_send)
    pieces = [listing[i : i + MAX_CONTROL_BYTES] for i in range(0, len(listing), MAX_CONTROL_BYTES)]
    pinged = [
        sealer.seal(FrameType.OFFER, encode_offer(big)),
        sealer.seal(FrameType.MORE, pieces[0]),
        sealer.seal(FrameType.PING, b""),
        *(sealer.seal(FrameType.MORE, piece) for piece in pieces[1:-1]),
        sealer.seal(FrameType.LISTING, pieces[-1]),
    ]
    events = deliver(pinged, fresh()[1])
    assert events[:3] == [Partial(), Partial(), Ping()]
    assert events[-1] == big


def test_more_is_refused_outside_version_3_and_beyond_the_joined_limit() -> None:
    _, receiver = fresh()
    with pytest.raises(RemoteProtocolError, match="MORE"):
        receiver.receive(FrameSealer(SENDER_KEYS.frame_send).seal(FrameType.MORE, b"{"))
    sender, receiver = fresh()
    deliver(sender.send_frames(PIPE)[:1], receiver)  # a version 3 header: MORE allowed
    sealer = forged(SENDER_KEYS, 1)
    piece = b" " * MAX_CONTROL_BYTES
    for _ in range(MAX_JOINED_CONTROL_BYTES // MAX_CONTROL_BYTES):
        receiver.receive(sealer.seal(FrameType.MORE, piece))
    with pytest.raises(RemoteProtocolError, match="too large"):
        receiver.receive(sealer.seal(FrameType.MORE, piece))


def test_a_chunk_in_the_middle_of_pieces_is_refused() -> None:
    sender, receiver = offered(PIPE)
    sender.receive(receiver.send(Accept()))
    receiver.receive(sender.send(Resume((0,))))
    sealer = forged(SENDER_KEYS, 3)
    receiver.receive(sealer.seal(FrameType.MORE, b'{"reason":'))
    with pytest.raises(RemoteProtocolError, match="middle"):
        receiver.receive(sealer.seal(FrameType.CHUNK, b"data"))


@pytest.mark.parametrize(
    "rows",
    [
        [[1, 2], [0, 2]],  # out of order
        [[0, 2], [0, 2]],  # twice
        [[5, 2]],  # no such file
        [[0, 0]],  # an offset of 0 is left out, never listed
        [[0, True]],
        [[0, 2, 3]],
        [0],
    ],
)
def test_malformed_sparse_offsets_are_refused(rows: list[object]) -> None:
    offer = Offer((FileInfo("a", 0, stream=True),))
    sender, _receiver = offered(offer)
    sealer = FrameSealer(RECEIVER_KEYS.frame_send)
    with pytest.raises(RemoteProtocolError):
        sender.receive(sealer.seal(FrameType.ACCEPT, json.dumps({"held": rows}).encode()))


# -- ZCHUNK -------------------------------------------------------------------------------


def test_compressed_chunks_flow_only_once_the_receiver_said_so() -> None:
    data = b"abcd" * 4
    packed = zstandard.ZstdCompressor().compress(data)
    sender, receiver = offered(MANY)
    assert sender.receive(receiver.send(Accept(zstd=True))) == Accept((), True)
    receiver.receive(sender.send(Resume((0,) * len(MANY.files))))
    assert receiver.receive(sender.send(Chunk(b"xyz"))) == Chunk(b"xyz")
    receiver.receive(sender.send(FileDone(hashlib.sha256(b"xyz").digest())))
    with pytest.raises(LocalProtocolError, match="does not fit"):
        sender.send(Chunk(packed, len(data)))  # 16 bytes into a file of 3
    # Without the receiver's word, the sender may not compress at all.
    sender, receiver = offered(PIPE)
    sender.receive(receiver.send(Accept()))
    receiver.receive(sender.send(Resume((0,))))
    with pytest.raises(LocalProtocolError, match="compressed"):
        sender.send(Chunk(zstandard.ZstdCompressor().compress(b"abcd"), 4))
    with pytest.raises(RemoteProtocolError, match="none was agreed"):
        receiver.receive(forged(SENDER_KEYS, 3).seal(FrameType.ZCHUNK, packed))


def test_a_pipe_takes_any_length_and_a_compressed_chunk() -> None:
    sender, receiver = offered(PIPE)
    sender.receive(receiver.send(Accept(zstd=True)))
    receiver.receive(sender.send(Resume((0,))))
    for _ in range(5):
        assert receiver.receive(sender.send(Chunk(b"data"))) == Chunk(b"data")
    packed = zstandard.ZstdCompressor().compress(b"aaaa")
    assert receiver.receive(sender.send(Chunk(packed, 4))) == Chunk(b"aaaa")
    digest = hashlib.sha256(b"data" * 5 + b"aaaa").digest()
    assert receiver.receive(sender.send(FileDone(digest))) == FileDone(digest)
    assert sender.receive(receiver.send(FileAck())) == FileAck()
    assert sender.state is State.DONE


@pytest.mark.parametrize(
    "payload",
    [
        zstandard.ZstdCompressor().compress(b"a" * 65),  # more than the chunk size
        zstandard.ZstdCompressor(write_content_size=False).compress(b"a" * 10),
        b"not zstd at all",
        zstandard.ZstdCompressor().compress(b""),
    ],
    ids=["bomb", "size-unstated", "garbage", "empty"],
)
def test_decompress_chunk_is_bounded(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decompress_chunk(payload, 64)


# -- properties ---------------------------------------------------------------------------

NAMES = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)
FILES = st.lists(
    st.builds(FileInfo, NAMES, st.integers(0, 2**40), st.integers(-(2**40), 2**40)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    files=FILES,
    extra=st.integers(0, 1200),
    pad=st.integers(0, 300),
    kind=st.sampled_from(["files", "text", "pipe"]),
)
def test_any_v3_offer_round_trips(files: list[FileInfo], extra: int, pad: int, kind: str) -> None:
    if kind == "text":
        offer = Offer((FileInfo("", min(files[0].size, MAX_TEXT_BYTES)),), text=True)
    elif kind == "pipe":
        offer = Offer((FileInfo(files[0].name, 0, stream=True),))
    else:
        more = tuple(FileInfo(f"{i}" + "p" * pad, i) for i in range(extra))
        offer = Offer(tuple(files) + more)
    sender, receiver = fresh()
    frames = sender.send_frames(offer)
    assert all(len(frame) <= MAX_MESSAGE_BYTES for frame in frames)
    events = deliver(frames, receiver)
    assert events[-1] == offer
    assert all(isinstance(e, Partial) for e in events[:-1])


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 2**40), min_size=1, max_size=MAX_FILES + 50),
    seed=st.integers(0, 2**32),
)
def test_any_held_offsets_round_trip_sparsely(sizes: list[int], seed: int) -> None:
    offer = Offer(tuple(FileInfo(f"f{i}", size) for i, size in enumerate(sizes)))
    sender, receiver = fresh()
    deliver(sender.send_frames(offer), receiver)
    held = tuple(
        (seed * (i + 7)) % (size + 1) if (seed >> (i % 30)) & 1 else 0
        for i, size in enumerate(sizes)
    )
    held = held if any(held) else ()
    assert deliver(receiver.send_frames(Accept(held)), sender)[-1] == Accept(held)
    offsets = held or (0,) * len(sizes)
    digests = tuple(bytes([i % 256]) * 32 if o else b"" for i, o in enumerate(offsets))
    resume = Resume(offsets, digests if any(offsets) else ())
    assert deliver(sender.send_frames(resume), receiver)[-1] == resume
    if any(offsets):
        start = Start(tuple(o if i % 2 else 0 for i, o in enumerate(offsets)))
        assert deliver(receiver.send_frames(start), sender)[-1] == start


def test_one_ack_may_cover_a_batch_but_never_files_not_yet_done() -> None:
    sender, receiver = offered(MANY)
    sender.receive(receiver.send(Accept()))
    receiver.receive(sender.send(Resume((0,) * len(MANY.files))))
    for _ in range(5):
        receiver.receive(sender.send(Chunk(b"abc")))
        receiver.receive(sender.send(FileDone(hashlib.sha256(b"abc").digest())))
    with pytest.raises(LocalProtocolError):
        receiver.send(FileAck(6))  # only 5 are done
    assert sender.receive(receiver.send(FileAck(5))) == FileAck(5)
    forged_ack = forged(RECEIVER_KEYS, 2).seal(FrameType.FILE_ACK, (1).to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError, match="not sent"):
        sender.receive(forged_ack)


def test_a_counted_ack_is_refused_before_version_3() -> None:
    offer = Offer((FileInfo("a", 0), FileInfo("b", 0)))
    sender, receiver = offered(offer)
    sender.receive(receiver.send(Accept()))
    receiver.receive(sender.send(Resume((0, 0))))
    for _ in range(2):
        receiver.receive(sender.send(FileDone(hashlib.sha256(b"").digest())))
    # Version 1 writes a batch as one empty FILE_ACK per file.
    frames = receiver.send_frames(FileAck(2))
    assert len(frames) == 2
    counted = forged(RECEIVER_KEYS, 1).seal(FrameType.FILE_ACK, (2).to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError, match="carries nothing"):
        sender.receive(counted)
