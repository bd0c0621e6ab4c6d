"""The sans-I/O transfer protocol: round trips, state rules, malformed frames."""

from __future__ import annotations

import hashlib
import json

import pytest

from sfs.errors import CryptoError, ProtocolError, RemoteProtocolError
from sfs.peer.crypto import FrameSealer, SessionKeys
from sfs.peer.protocol import (
    MAX_CHUNK_BYTES,
    Accept,
    Cancel,
    Chunk,
    FileAck,
    FileDone,
    FileInfo,
    FrameType,
    Offer,
    Ping,
    Reject,
    Resume,
    ResumeClaim,
    Role,
    State,
    TransferProtocol,
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
    sender, receiver, ks = accepted_pair()
    sealer = forged_sender(ks, 2)
    receiver.receive(sealer.seal(FrameType.CHUNK, b"hell"))
    receiver.receive(sealer.seal(FrameType.CHUNK, b"o"))
    with pytest.raises(RemoteProtocolError, match="32-byte"):
        receiver.receive(sealer.seal(FrameType.FILE_DONE, b"short"))


def test_oversized_frame_is_rejected_before_decryption() -> None:
    ks, kr = key_pair()
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
    sender, receiver, ks, kr = pair()
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
def test_local_misuse_raises_protocol_error(role: Role, event: object) -> None:
    ks, kr = key_pair()
    proto = TransferProtocol(role, ks if role is Role.SENDER else kr)
    with pytest.raises(ProtocolError):
        proto.send(event)  # type: ignore[arg-type]


def test_sender_cannot_overrun_or_undershoot_a_file() -> None:
    sender, _, _ = accepted_pair()
    with pytest.raises(ProtocolError):
        sender.send(Chunk(b"hello"))  # larger than the chunk size of 4
    sender.send(Chunk(b"hell"))
    with pytest.raises(ProtocolError):
        sender.send(FileDone(SHA_A))  # one byte still missing
    with pytest.raises(ProtocolError):
        sender.send(Chunk(b"o!"))  # more than is left


def test_sender_refuses_bad_offers() -> None:
    ks, _ = key_pair()
    with pytest.raises(ProtocolError):
        TransferProtocol(Role.SENDER, ks).send(Offer(files=()))
    with pytest.raises(ProtocolError):
        TransferProtocol(Role.SENDER, ks).send(Offer(files=(FileInfo("a", 1),), chunk_size=0))


def test_resume_claims_and_offsets() -> None:
    sender, receiver, ks, _ = pair()
    receiver.receive(sender.send(OFFER))
    claims = (ResumeClaim(3, SHA_A), ResumeClaim(0, SHA_EMPTY))
    assert sender.receive(receiver.send(Accept(claims))) == Accept(claims)
    with pytest.raises(ProtocolError, match="not claimed"):
        sender.send(Resume((2, 0)))  # only 0 or the claimed offset
    assert receiver.receive(sender.send(Resume((3, 0)))) == Resume((3, 0))
    # Two bytes are left of the first file.
    with pytest.raises(ProtocolError):
        sender.send(Chunk(b"abc"))
    assert receiver.receive(sender.send(Chunk(b"lo"))) == Chunk(b"lo")


def test_resume_offset_beyond_the_claim_is_rejected() -> None:
    sender, receiver, ks, _ = pair()
    receiver.receive(sender.send(OFFER))
    sender.receive(receiver.send(Accept()))
    forged = forged_sender(ks, 1)
    with pytest.raises(RemoteProtocolError, match="not claimed"):
        receiver.receive(forged.seal(FrameType.RESUME, b'{"offsets":[5,0]}'))


def test_claims_larger_than_the_file_are_rejected() -> None:
    sender, receiver, _, kr = pair()
    receiver.receive(sender.send(OFFER))
    with pytest.raises(ProtocolError):
        receiver.send(Accept((ResumeClaim(99, SHA_A), ResumeClaim(0, SHA_EMPTY))))
    forged = FrameSealer(kr.frame_send)
    payload = b'{"resume":[{"offset":99,"sha256":"' + SHA_A.hex().encode() + b'"}]}'
    with pytest.raises(RemoteProtocolError):
        sender.receive(forged.seal(FrameType.ACCEPT, payload))
