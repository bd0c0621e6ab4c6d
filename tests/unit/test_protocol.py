"""The sans-I/O transfer protocol: round trips, state rules, malformed frames."""

from __future__ import annotations

import hashlib
import json

import pytest

from sfs.defaults import MAX_CHUNK_BYTES, MAX_MESSAGE_BYTES, MAX_SENDER_NAME_CHARS
from sfs.errors import CryptoError, LocalProtocolError, RemoteProtocolError
from sfs.peer.proto.crypto import FrameOpener, FrameSealer, SessionKeys
from sfs.peer.proto.framing import Role, State, TransferProtocol
from sfs.peer.proto.wire import (
    MAX_CONTROL_BYTES,
    MAX_ENTRIES,
    MAX_FILE_BYTES,
    MAX_FILES,
    Accept,
    Cancel,
    Chunk,
    FileAck,
    FileDone,
    FileInfo,
    FrameType,
    Offer,
    Partial,
    Ping,
    Reject,
    Resume,
    Start,
    decode_offer,
    encode_offer,
)
from tests.helpers import key_pair

OFFER = Offer(
    files=(FileInfo("a.txt", 5, 1), FileInfo("empty", 0, 2)), sender="alice", chunk_size=4
)
SHA_A = hashlib.sha256(b"hello").digest()
SHA_EMPTY = hashlib.sha256(b"").digest()


def pair() -> tuple[TransferProtocol, TransferProtocol, SessionKeys, SessionKeys]:
    ks, kr = key_pair()
    return TransferProtocol(Role.SENDER, ks), TransferProtocol(Role.RECEIVER, kr), ks, kr


def test_whole_conversation_round_trips_every_frame() -> None:
    sender, receiver, _, _ = pair()
    assert receiver.receive(sender.send(OFFER)) == OFFER
    assert receiver.state is State.DECIDING
    assert sender.receive(receiver.send(Accept())) == Accept()
    assert receiver.receive(sender.send(Resume((0, 0)))) == Resume((0, 0))
    assert receiver.receive(sender.send(Ping())) == Ping()
    assert receiver.receive(sender.send(Chunk(b"hell"))) == Chunk(b"hell")
    assert receiver.receive(sender.send(Chunk(b"o"))) == Chunk(b"o")
    assert receiver.receive(sender.send(FileDone(SHA_A))) == FileDone(SHA_A)
    assert sender.receive(receiver.send(FileAck())) == FileAck()
    assert receiver.receive(sender.send(FileDone(SHA_EMPTY))) == FileDone(SHA_EMPTY)
    assert sender.state is State.AWAITING_ACKS
    assert sender.receive(receiver.send(FileAck())) == FileAck()
    assert sender.state.value == receiver.state.value == State.DONE.value


def test_reject_and_cancel_round_trip() -> None:
    sender, receiver, _, _ = pair()
    receiver.receive(sender.send(OFFER))
    assert sender.receive(receiver.send(Reject("no thanks"))) == Reject("no thanks")
    assert sender.state is receiver.state is State.CLOSED

    sender, receiver, _, _ = pair()
    assert receiver.receive(sender.send(Cancel("bye"))) == Cancel("bye")
    assert receiver.state is State.CLOSED


def test_offer_codec_round_trip_keeps_unicode() -> None:
    offer = Offer(files=(FileInfo("résumé 📄.pdf", 10**12, -5),), sender="zoë", chunk_size=1)
    assert decode_offer(encode_offer(offer)) == offer


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b"\xff\xfe",
        json.dumps({"v": 2, "files": [], "chunk_size": 1}).encode(),
        json.dumps({"v": 1, "files": [], "chunk_size": 1}).encode(),
        json.dumps({"v": 1, "files": ["x"], "chunk_size": 1}).encode(),
        json.dumps(
            {"v": 1, "files": [{"name": 1, "size": 1, "mtime_ns": 0}], "chunk_size": 1}
        ).encode(),
        json.dumps(
            {"v": 1, "files": [{"name": "a", "size": -1, "mtime_ns": 0}], "chunk_size": 1}
        ).encode(),
        json.dumps(
            {"v": 1, "files": [{"name": "a", "size": True, "mtime_ns": 0}], "chunk_size": 1}
        ).encode(),
        json.dumps(
            {"v": 1, "files": [{"name": "a", "size": 1, "mtime_ns": 0}], "chunk_size": 0}
        ).encode(),
        json.dumps(
            {
                "v": 1,
                "files": [{"name": "a", "size": 1, "mtime_ns": 0}],
                "chunk_size": MAX_CHUNK_BYTES + 1,
            }
        ).encode(),
        json.dumps(
            {"v": 1, "files": [{"name": "a" * 5000, "size": 1, "mtime_ns": 0}], "chunk_size": 1}
        ).encode(),
        json.dumps(
            {"v": 1, "files": [{"name": "a", "size": 1, "mtime_ns": 0}] * 1001, "chunk_size": 1}
        ).encode(),
        b"[" * 100_000,
    ],
    ids=lambda p: p[:40].decode("utf-8", "replace"),
)
def test_malformed_offers_raise_remote_protocol_error(payload: bytes) -> None:
    _, receiver, ks, _ = pair()
    frame = FrameSealer(ks.frame_send).seal(FrameType.OFFER, payload)
    with pytest.raises(RemoteProtocolError):
        receiver.receive(frame)


def test_unknown_frame_type_is_rejected() -> None:
    _, receiver, ks, _ = pair()
    with pytest.raises(RemoteProtocolError, match="unknown frame type"):
        receiver.receive(FrameSealer(ks.frame_send).seal(99, b""))


@pytest.mark.parametrize("kind", [FrameType.CHUNK, FrameType.FILE_DONE, FrameType.ACCEPT])
def test_frames_out_of_state_are_rejected(kind: FrameType) -> None:
    _, receiver, ks, _ = pair()
    with pytest.raises(RemoteProtocolError, match="unexpected"):
        receiver.receive(FrameSealer(ks.frame_send).seal(kind, b"x"))


def accepted_pair() -> tuple[TransferProtocol, TransferProtocol, SessionKeys]:
    sender, receiver, ks, _ = pair()
    receiver.receive(sender.send(OFFER))
    sender.receive(receiver.send(Accept()))
    receiver.receive(sender.send(Resume((0, 0))))
    return sender, receiver, ks


def forged_sender(ks: SessionKeys, frames_before: int) -> FrameSealer:
    """A sealer in the sender's key, as a malicious sender holding the key would have,
    past the sender's first ``frames_before`` frames (OFFER and RESUME: 2)."""
    sealer = FrameSealer(ks.frame_send)
    for _ in range(frames_before):
        sealer.seal(FrameType.CHUNK, b"-")
    return sealer


def test_more_bytes_than_declared_are_rejected() -> None:
    _, receiver, ks = accepted_pair()
    sealer = forged_sender(ks, 2)
    receiver.receive(sealer.seal(FrameType.CHUNK, b"hell"))
    with pytest.raises(RemoteProtocolError, match="more bytes than it declared"):
        receiver.receive(sealer.seal(FrameType.CHUNK, b"o!"))


def test_chunk_larger_than_announced_is_rejected() -> None:
    _, receiver, ks = accepted_pair()
    with pytest.raises(RemoteProtocolError, match="announced chunk size"):
        receiver.receive(forged_sender(ks, 2).seal(FrameType.CHUNK, b"hello"))


def test_empty_chunk_is_rejected() -> None:
    _, receiver, ks = accepted_pair()
    with pytest.raises(RemoteProtocolError, match="empty"):
        receiver.receive(forged_sender(ks, 2).seal(FrameType.CHUNK, b""))


def test_early_file_done_is_rejected() -> None:
    _, receiver, ks = accepted_pair()
    sealer = forged_sender(ks, 2)
    receiver.receive(sealer.seal(FrameType.CHUNK, b"hell"))
    with pytest.raises(RemoteProtocolError, match="1 bytes short"):
        receiver.receive(sealer.seal(FrameType.FILE_DONE, SHA_A))


def test_file_done_with_bad_digest_length_is_rejected() -> None:
    _sender, receiver, ks = accepted_pair()
    sealer = forged_sender(ks, 2)
    receiver.receive(sealer.seal(FrameType.CHUNK, b"hell"))
    receiver.receive(sealer.seal(FrameType.CHUNK, b"o"))
    with pytest.raises(RemoteProtocolError, match="32-byte"):
        receiver.receive(sealer.seal(FrameType.FILE_DONE, b"short"))


def test_oversized_frame_is_rejected_before_decryption() -> None:
    _ks, kr = key_pair()
    receiver = TransferProtocol(Role.RECEIVER, kr, max_frame_bytes=100)
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        receiver.receive(b"\x01" * 101)


def test_frame_after_close_is_rejected() -> None:
    sender, receiver, _, _ = pair()
    frame = sender.send(OFFER)
    receiver.send(Cancel())
    with pytest.raises(RemoteProtocolError, match="closed"):
        receiver.receive(frame)


def test_ack_for_unsent_file_is_rejected() -> None:
    sender, receiver, _ks, kr = pair()
    receiver.receive(sender.send(OFFER))
    sender.receive(receiver.send(Accept()))
    sender.send(Resume((0, 0)))
    forged = FrameSealer(kr.frame_send)
    forged.seal(FrameType.ACCEPT, b"{}")
    with pytest.raises(RemoteProtocolError, match="not sent"):
        sender.receive(forged.seal(FrameType.FILE_ACK, b""))


def test_tampered_frame_raises_crypto_error() -> None:
    sender, receiver, _, _ = pair()
    frame = bytearray(sender.send(OFFER))
    frame[20] ^= 0xFF
    with pytest.raises(CryptoError):
        receiver.receive(bytes(frame))


@pytest.mark.parametrize(
    ("role", "event"),
    [
        (Role.SENDER, Chunk(b"x")),
        (Role.SENDER, FileDone(SHA_A)),
        (Role.SENDER, Accept()),
        (Role.RECEIVER, Offer(files=(FileInfo("a", 1),))),
        (Role.RECEIVER, FileAck()),
        (Role.RECEIVER, Accept()),
    ],
)
def test_local_misuse_raises_local_protocol_error(role: Role, event: object) -> None:
    ks, kr = key_pair()
    proto = TransferProtocol(role, ks if role is Role.SENDER else kr)
    with pytest.raises(LocalProtocolError):
        proto.send(event)  # type: ignore[arg-type]


def test_sender_cannot_overrun_or_undershoot_a_file() -> None:
    sender, _, _ = accepted_pair()
    with pytest.raises(LocalProtocolError):
        sender.send(Chunk(b"hello"))  # larger than the chunk size of 4
    sender.send(Chunk(b"hell"))
    with pytest.raises(LocalProtocolError):
        sender.send(FileDone(SHA_A))  # one byte still missing
    with pytest.raises(LocalProtocolError):
        sender.send(Chunk(b"o!"))  # more than is left


def test_sender_refuses_bad_offers() -> None:
    ks, _ = key_pair()
    with pytest.raises(LocalProtocolError):
        TransferProtocol(Role.SENDER, ks).send(Offer(files=()))
    with pytest.raises(LocalProtocolError):
        TransferProtocol(Role.SENDER, ks).send(Offer(files=(FileInfo("a", 1),), chunk_size=0))


def test_accept_says_how_much_is_held_and_nothing_else() -> None:
    # A hash of the receiver's bytes would let any sender with the code that offers a
    # matching name, size and mtime learn (guess offline) what someone else sent.
    sender, receiver, ks, _ = pair()
    receiver.receive(sender.send(OFFER))
    frame = receiver.send(Accept((3, 0)))
    assert FrameOpener(ks.frame_receive).open(frame) == (FrameType.ACCEPT, b'{"held":[3,0]}')
    assert sender.receive(frame) == Accept((3, 0))


def test_resume_sends_the_senders_prefix_hash_and_the_receiver_answers_start() -> None:
    sender, receiver, _, _ = pair()
    receiver.receive(sender.send(OFFER))
    sender.receive(receiver.send(Accept((3, 0))))
    with pytest.raises(LocalProtocolError, match="not what the receiver holds"):
        sender.send(Resume((2, 0), (SHA_A, b"")))  # only 0 or the held offset
    with pytest.raises(LocalProtocolError, match="SHA-256"):
        sender.send(Resume((3, 0)))  # an offset above 0 needs the sender's prefix hash
    resume = Resume((3, 0), (SHA_A, b""))
    assert receiver.receive(sender.send(resume)) == resume
    assert (sender.state, receiver.state) == (State.CONFIRMING, State.CONFIRMING)
    with pytest.raises(LocalProtocolError):
        sender.send(Chunk(b"lo"))  # not before the receiver's START
    with pytest.raises(LocalProtocolError, match="not proposed"):
        receiver.send(Start((2, 0)))
    assert sender.receive(receiver.send(Start((3, 0)))) == Start((3, 0))
    assert (sender.state, receiver.state) == (State.SENDING, State.RECEIVING)
    # Two bytes are left of the first file.
    with pytest.raises(LocalProtocolError):
        sender.send(Chunk(b"abc"))
    assert receiver.receive(sender.send(Chunk(b"lo"))) == Chunk(b"lo")


def test_start_may_send_a_file_from_zero_after_all() -> None:
    sender, receiver, _, _ = pair()
    receiver.receive(sender.send(OFFER))
    sender.receive(receiver.send(Accept((3, 0))))
    receiver.receive(sender.send(Resume((3, 0), (SHA_A, b""))))
    assert sender.receive(receiver.send(Start((0, 0)))) == Start((0, 0))
    assert receiver.receive(sender.send(Chunk(b"hell"))) == Chunk(b"hell")


def test_resume_from_zero_needs_no_start() -> None:
    sender, receiver, _, _ = pair()
    receiver.receive(sender.send(OFFER))
    sender.receive(receiver.send(Accept((3, 0))))
    assert receiver.receive(sender.send(Resume((0, 0)))) == Resume((0, 0))
    assert sender.state is State.SENDING
    assert receiver.state is State.RECEIVING
    with pytest.raises(LocalProtocolError, match="cannot send Start"):
        receiver.send(Start((0, 0)))


@pytest.mark.parametrize(
    "payload",
    [
        b'{"offsets":[3,0]}',
        b'{"offsets":[3,0],"sha256":["' + SHA_A.hex().encode() + b'"]}',
        b'{"offsets":[3,0],"sha256":["' + SHA_A.hex().upper().encode() + b'",""]}',
        b'{"offsets":[3,0],"sha256":["'
        + SHA_A.hex().encode()
        + b'","'
        + SHA_A.hex().encode()
        + b'"]}',
        b'{"offsets":[3,0],"sha256":["abc",""]}',
        b'{"offsets":[3,0],"sha256":"x"}',
        b'{"offsets":[true,0]}',
    ],
)
def test_malformed_resume_is_rejected(payload: bytes) -> None:
    sender, receiver, ks, _ = pair()
    receiver.receive(sender.send(OFFER))
    sender.receive(receiver.send(Accept((3, 0))))
    with pytest.raises(RemoteProtocolError):
        receiver.receive(forged_sender(ks, 1).seal(FrameType.RESUME, payload))
    assert receiver.state is State.ACCEPTED


def test_largest_control_frames_sfs_makes_fit() -> None:
    # ACCEPT, RESUME and START for MAX_FILES files at the largest offsets go through,
    # and so does an offer of MAX_FILES files with names of 100 characters.
    files = tuple(
        FileInfo(f"{i:03}" + "n" * 97, MAX_FILE_BYTES, -(2**63)) for i in range(MAX_FILES)
    )
    offer = Offer(files, "s" * MAX_SENDER_NAME_CHARS, MAX_CHUNK_BYTES)
    assert len(encode_offer(offer)) <= MAX_CONTROL_BYTES
    sender, receiver, _ks, _kr = pair()
    receiver.receive(sender.send(offer))
    held = (MAX_FILE_BYTES,) * MAX_FILES
    resume = Resume(held, (b"\xff" * 32,) * MAX_FILES)
    frames = [receiver.send(Accept(held))]
    assert sender.receive(frames[0]) == Accept(held)
    frames.append(sender.send(resume))
    assert receiver.receive(frames[1]) == resume
    frames.append(receiver.send(Start(held)))
    assert sender.receive(frames[2]) == Start(held)
    for frame in frames:
        assert len(frame) - 28 <= MAX_CONTROL_BYTES
    # A longer offer is version 3: its listing travels in MORE pieces.
    long_names = Offer(tuple(FileInfo(f"{i:04}" + "n" * 4000, 1) for i in range(MAX_FILES)))
    assert long_names.version == 3
    sender, receiver, _, _ = pair()
    frames = sender.send_frames(long_names)
    assert len(frames) > 3
    assert all(len(f) <= MAX_MESSAGE_BYTES for f in frames)
    events = [receiver.receive(frame) for frame in frames]
    assert events[-1] == long_names
    assert all(isinstance(e, Partial) for e in events[:-1])
    # The offer's limit is the receiver's: a longer one is refused before it goes out.
    too_many = tuple(FileInfo(f"{i:06}", 1) for i in range(MAX_ENTRIES + 1))
    with pytest.raises(LocalProtocolError, match="1 to"):
        pair()[0].send_frames(Offer(too_many))


def test_resume_offset_beyond_the_claim_is_rejected() -> None:
    sender, receiver, ks, _ = pair()
    receiver.receive(sender.send(OFFER))
    sender.receive(receiver.send(Accept()))
    forged = forged_sender(ks, 1)
    with pytest.raises(RemoteProtocolError, match="not what the receiver holds"):
        receiver.receive(forged.seal(FrameType.RESUME, b'{"offsets":[5,0]}'))


def test_held_offsets_larger_than_the_file_are_rejected() -> None:
    sender, receiver, _, kr = pair()
    receiver.receive(sender.send(OFFER))
    with pytest.raises(LocalProtocolError):
        receiver.send(Accept((99, 0)))
    forged = FrameSealer(kr.frame_send)
    with pytest.raises(RemoteProtocolError):
        sender.receive(forged.seal(FrameType.ACCEPT, b'{"held":[99,0]}'))
