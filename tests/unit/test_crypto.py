"""Known-answer vectors and tamper checks for sfs.peer.proto.crypto."""

from __future__ import annotations

import gc
import hashlib
import hmac
import struct

import pytest
from spake2 import SPAKE2_A, SPAKE2_B

from sfs.errors import CryptoError, WrongCodeError
from sfs.peer.proto.crypto import (
    INFO_CONTROL_RECEIVER,
    INFO_DATA_SENDER,
    INFO_RELAY_TOKEN,
    INFO_SIGNAL_RECEIVER,
    INFO_SIGNAL_SENDER,
    FrameOpener,
    FrameSealer,
    KeyExchange,
    SessionKeys,
    derive_keys,
    open_message,
    relay_token,
    seal_message,
)
from tests.helpers import counter_entropy, key_pair

# Fixed inputs -> fixed outputs.  A change to any of these breaks compatibility
# between sfs versions, so it must be deliberate (and bump the protocol version).
SPAKE2_SENDER_MSG = "41607054dcf92ba0ece222e5ce470ee362eb7de871489e64117de383acad3c7c26"
SPAKE2_RECEIVER_MSG = "42988a859b4a758db0d6fbc2f3c247c7c2d387a679223a81efe4cfc101c3e9ed6d"
SPAKE2_SIGNAL_SENDER_KEY = "8b0a2893e6ff819242ec902f92790a0c5f370f15e490c5004b4e0baf98f32341"
SPAKE2_VERIFIER = "ea32-0051-538a"
HKDF_SIGNAL_SENDER = "55954fa962279a54f1e750cd38cba776ece74e8db0a9bcc8ed5b596142627e28"
HKDF_DATA_SENDER = "7cd423f3bc398a0ae665019557e5629dd84ac202001ea2ffe5869d0850f79941"
HKDF_RELAY_TOKEN = "25c954998bc0646a929783e2651e03039ff7f68d7f453e7454789671ad5d3a2c"
FRAME_0 = "0104000000000000000000000b0446c7d79a82d61af98545c5b59d9db457a52f88"
FRAME_1 = "0105000000000000000000015e19271670dc71a2cba366aad71a5ab2"


def rfc5869_hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """An independent HKDF-SHA256 (RFC 5869), 32 bytes of output."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_spake2_known_answer() -> None:
    sender = KeyExchange(
        role="sender", password=b"tiger-lamp", code_id="ABC-123", entropy=counter_entropy(1)
    )
    receiver = KeyExchange(
        role="receiver", password=b"tiger-lamp", code_id="ABC-123", entropy=counter_entropy(2)
    )
    assert sender.message.hex() == SPAKE2_SENDER_MSG
    assert receiver.message.hex() == SPAKE2_RECEIVER_MSG
    keys_s = sender.finish(receiver.message)
    keys_r = receiver.finish(sender.message)
    assert keys_s.signal_send.hex() == SPAKE2_SIGNAL_SENDER_KEY
    assert keys_s.verifier == keys_r.verifier == SPAKE2_VERIFIER


def test_hkdf_known_answer_and_independent_hkdf() -> None:
    pake_key = bytes(range(32))
    keys = derive_keys(pake_key=pake_key, transcript=b"ABC-123", role="sender")
    assert keys.signal_send.hex() == HKDF_SIGNAL_SENDER
    assert keys.frame_send.hex() == HKDF_DATA_SENDER
    for info, value in [
        (INFO_SIGNAL_SENDER, keys.signal_send),
        (INFO_SIGNAL_RECEIVER, keys.signal_receive),
        (INFO_DATA_SENDER, keys.frame_send),
        (INFO_CONTROL_RECEIVER, keys.frame_receive),
    ]:
        assert rfc5869_hkdf(pake_key, b"ABC-123", info) == value


def test_relay_token_known_answer_and_independent_hkdf() -> None:
    pake_key = bytes(range(32))
    for role in ("sender", "receiver"):
        keys = derive_keys(pake_key=pake_key, transcript=b"ABC-123", role=role)
        assert keys.relay_token.hex() == HKDF_RELAY_TOKEN
    assert relay_token(pake_key=pake_key, transcript=b"ABC-123").hex() == HKDF_RELAY_TOKEN
    assert rfc5869_hkdf(pake_key, b"ABC-123", INFO_RELAY_TOKEN).hex() == HKDF_RELAY_TOKEN


def test_both_sides_present_the_same_relay_token_and_sessions_differ() -> None:
    sender, receiver = key_pair()
    assert len(sender.relay_token) == 32
    assert sender.relay_token == receiver.relay_token
    other_sender, other_receiver = key_pair()  # the same code again: a fresh SPAKE2 run
    assert other_sender.relay_token == other_receiver.relay_token
    assert other_sender.relay_token != sender.relay_token
    assert sender.relay_token.hex() not in repr(sender)


def test_the_relay_token_is_no_other_key() -> None:
    """The relay learns the token: it must be none of the keys, nor any key's prefix."""
    keys = derive_keys(pake_key=b"k" * 32, transcript=b"ABC-123", role="receiver")
    others = [
        keys.signal_send,
        keys.signal_receive,
        keys.frame_send,
        keys.frame_receive,
        keys.tcp_send,
        keys.tcp_receive,
        keys.proof_send,
        keys.proof_receive,
    ]
    assert keys.relay_token not in others
    assert all(keys.relay_token[:8] not in key for key in others)
    assert keys.verifier.replace("-", "") not in keys.relay_token.hex()


def test_every_purpose_and_direction_has_its_own_key() -> None:
    keys = derive_keys(pake_key=b"k" * 32, transcript=b"ABC-123", role="sender")
    all_keys = {keys.signal_send, keys.signal_receive, keys.frame_send, keys.frame_receive}
    assert len(all_keys) == 4


def test_roles_mirror_each_other() -> None:
    sender, receiver = key_pair()
    assert sender.signal_send == receiver.signal_receive
    assert sender.signal_receive == receiver.signal_send
    assert sender.frame_send == receiver.frame_receive
    assert sender.frame_receive == receiver.frame_send


def test_keys_do_not_show_in_repr() -> None:
    sender, _ = key_pair()
    assert sender.signal_send.hex() not in repr(sender)
    assert "redacted" in repr(sender)


def test_frame_known_answer() -> None:
    sealer = FrameSealer(bytes(32))
    assert sealer.seal(4, b"hello").hex() == FRAME_0
    assert sealer.seal(5, b"").hex() == FRAME_1
    opener = FrameOpener(bytes(32))
    assert opener.open(bytes.fromhex(FRAME_0)) == (4, b"hello")
    assert opener.open(bytes.fromhex(FRAME_1)) == (5, b"")


@pytest.mark.parametrize(
    ("password", "receiver_id"),
    [(b"tiger-lamp", "ABC-124"), (b"tiger-lump", "ABC-123")],
    ids=["other-receiver", "wrong-words"],
)
def test_mismatch_gives_unusable_keys(password: bytes, receiver_id: str) -> None:
    sender, receiver = key_pair(sender_password=password, sender_receiver_id=receiver_id)
    sealed = seal_message(key=sender.signal_send, kind="offer", plaintext=b"{}")
    with pytest.raises(WrongCodeError):
        open_message(key=receiver.signal_receive, kind="offer", sealed=sealed)


def test_signal_message_round_trip_and_kind_binding() -> None:
    sender, receiver = key_pair()
    sealed = seal_message(key=sender.signal_send, kind="offer", plaintext=b"sdp")
    assert open_message(key=receiver.signal_receive, kind="offer", sealed=sealed) == b"sdp"
    with pytest.raises(WrongCodeError):
        open_message(key=receiver.signal_receive, kind="answer", sealed=sealed)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(WrongCodeError):
        open_message(key=receiver.signal_receive, kind="offer", sealed=bytes(flipped))
    with pytest.raises(WrongCodeError):
        open_message(key=receiver.signal_receive, kind="offer", sealed=b"short")


def test_invalid_spake2_message_is_rejected() -> None:
    exchange = KeyExchange(role="sender", password=b"a-b", code_id="ABC-123")
    with pytest.raises(WrongCodeError):
        exchange.finish(b"\x00" * 33)


def test_finish_drops_the_spake2_state() -> None:
    """The SPAKE2 object holds the password: nothing keeps it once the keys exist."""
    sender = KeyExchange(role="sender", password=b"a-b", code_id="ABC-123")
    receiver = KeyExchange(role="receiver", password=b"a-b", code_id="ABC-123")
    before = len(spake2_objects())
    sender.finish(receiver.message)
    with pytest.raises(WrongCodeError):
        receiver.finish(b"\x00" * 33)  # a failed finish drops it too
    assert len(spake2_objects()) == before - 2
    with pytest.raises(ValueError, match="already finished"):
        sender.finish(receiver.message)  # one attempt per exchange


def spake2_objects() -> list[object]:
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, SPAKE2_A | SPAKE2_B)]


def sealed_frames(n: int) -> tuple[bytes, list[bytes]]:
    key = bytes(range(32))
    sealer = FrameSealer(key)
    return key, [sealer.seal(4, f"chunk {i}".encode()) for i in range(n)]


def test_flipped_bit_anywhere_is_rejected() -> None:
    key, frames = sealed_frames(1)
    for position in range(len(frames[0])):
        damaged = bytearray(frames[0])
        damaged[position] ^= 0x01
        with pytest.raises(CryptoError):
            FrameOpener(key).open(bytes(damaged))


def test_reordered_frames_are_rejected() -> None:
    key, frames = sealed_frames(2)
    with pytest.raises(CryptoError, match="frame 1 arrived where frame 0"):
        FrameOpener(key).open(frames[1])


def test_replayed_frame_is_rejected() -> None:
    key, frames = sealed_frames(2)
    opener = FrameOpener(key)
    opener.open(frames[0])
    with pytest.raises(CryptoError):
        opener.open(frames[0])
    assert opener.open(frames[1])[1] == b"chunk 1"


def test_dropped_frame_is_detected() -> None:
    key, frames = sealed_frames(3)
    opener = FrameOpener(key)
    opener.open(frames[0])
    with pytest.raises(CryptoError):
        opener.open(frames[2])


def test_frame_type_swap_is_rejected() -> None:
    key, frames = sealed_frames(1)
    swapped = bytearray(frames[0])
    swapped[1] = 5  # claim FILE_DONE instead of CHUNK
    with pytest.raises(CryptoError):
        FrameOpener(key).open(bytes(swapped))


def test_truncated_and_foreign_version_frames_are_rejected() -> None:
    key, frames = sealed_frames(1)
    with pytest.raises(CryptoError):
        FrameOpener(key).open(frames[0][:27])
    header = struct.pack(">BBHQ", 2, 4, 0, 0)
    with pytest.raises(CryptoError, match="version"):
        FrameOpener(key).open(header + frames[0][12:])


def test_frame_from_the_other_direction_is_rejected() -> None:
    sender, receiver = key_pair()
    frame = FrameSealer(sender.frame_send).seal(4, b"x")
    with pytest.raises(CryptoError):
        FrameOpener(sender.frame_receive).open(frame)  # a reflected frame
    assert FrameOpener(receiver.frame_receive).open(frame) == (4, b"x")


def test_a_senders_code_agrees_and_never_matches_a_receivers() -> None:
    """sfs send --print-code: the same words and ID, another flow, other keys."""

    def pair(printed_by: str) -> tuple[SessionKeys, SessionKeys]:
        sender = KeyExchange(
            role="sender", password=b"a-b", code_id="ABC-123", printed_by=printed_by
        )
        receiver = KeyExchange(
            role="receiver", password=b"a-b", code_id="ABC-123", printed_by=printed_by
        )
        return sender.finish(receiver.message), receiver.finish(sender.message)

    sender_first = pair("sender")
    receiver_first = pair("receiver")
    assert sender_first[0].frame_send == sender_first[1].frame_receive
    assert sender_first[0].verifier == sender_first[1].verifier
    assert sender_first[0].frame_send != receiver_first[0].frame_send
    # Mixed flows: a sender-first sender and a receiver-first receiver disagree.
    sender = KeyExchange(role="sender", password=b"a-b", code_id="ABC-123", printed_by="sender")
    receiver = KeyExchange(role="receiver", password=b"a-b", code_id="ABC-123")
    assert (
        sender.finish(receiver.message).frame_send != receiver.finish(sender.message).frame_receive
    )
