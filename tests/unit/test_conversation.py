"""The conversation machines pumped against each other with a fake clock, as aioquic's
tests/test_connection.py pumps two QuicConnections: keepalive and idleness are
tested without sleeping, and every frame crosses as sealed bytes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfs.errors import (
    CancelledByPeerError,
    DiskError,
    LocalProtocolError,
    PeerGoneError,
    RejectedError,
    RemoteProtocolError,
    UpgradeError,
)
from sfs.peer.proto import conversation
from sfs.peer.proto.conversation import (
    Acknowledged,
    AskUser,
    ConfirmPrefixes,
    Conversation,
    HashPrefixes,
    Receiver,
    Sender,
    SendFiles,
)
from sfs.peer.proto.framing import Role, State, TransferProtocol
from sfs.peer.proto.reasons import PROTOCOL_REASON
from sfs.peer.proto.wire import Accept, Cancel, Chunk, FileDone, FileInfo, Offer
from tests.helpers import key_pair

PING = conversation.PING_INTERVAL_SECONDS
IDLE = conversation.IDLE_TIMEOUT_SECONDS


def machines(now: float = 0.0, *, resume: bool = True) -> tuple[Sender, Receiver]:
    ks, kr = key_pair()
    return (
        Sender(TransferProtocol(Role.SENDER, ks), now, resume=resume),
        Receiver(TransferProtocol(Role.RECEIVER, kr), now),
    )


def cross(source: Conversation, target: Conversation, now: float) -> list[object]:
    """Deliver what ``source`` queued; the actions ``target`` returned (Nones dropped)."""
    actions: list[object] = []
    for frame in source.frames_to_send(now):
        action = target.frame_received(frame, now)
        if action is not None:
            actions.append(action)
    return actions


def offer_of(*sizes: int) -> Offer:
    return Offer(tuple(FileInfo(f"f{i}", size) for i, size in enumerate(sizes)), "t", 4)


def test_two_files_from_offer_to_the_last_ack() -> None:
    sender, receiver = machines()
    data = [b"abcdefgh", b"xyz"]
    sender.offer(offer_of(*map(len, data)))
    [ask] = cross(sender, receiver, 0.1)
    assert isinstance(ask, AskUser)
    assert [f.size for f in ask.offer.files] == [8, 3]
    receiver.accept((0, 0), zstd=False)
    assert cross(receiver, sender, 0.2) == [HashPrefixes(())]
    go = sender.prefixes_hashed((0, 0), (b"", b""))
    assert go == SendFiles((0, 0))  # nothing to confirm: no round trip
    [confirm] = cross(sender, receiver, 0.3)
    assert isinstance(confirm, ConfirmPrefixes)
    assert confirm.resume.offsets == (0, 0)
    receiver.prefixes_confirmed((0, 0))
    assert receiver.frames_to_send(0.3) == []  # START only after a proposed resume
    got: list[object] = []
    for blob in data:
        for i in range(0, len(blob), 4):
            frame = sender.send_chunk(Chunk(blob[i : i + 4]), 0.4)
            got.append(receiver.frame_received(frame, 0.4))
        sender.file_done(hashlib.sha256(blob).digest())
        got += cross(sender, receiver, 0.5)
    assert [type(a) for a in got] == [Chunk, Chunk, FileDone, Chunk, FileDone]
    assert b"".join(bytes(a.data) for a in got if isinstance(a, Chunk)) == b"".join(data)
    receiver.files_placed(1)
    assert cross(receiver, sender, 0.6) == [Acknowledged(1, done=False)]
    receiver.files_placed(1)
    assert cross(receiver, sender, 0.7) == [Acknowledged(1, done=True)]
    assert sender.over
    assert receiver.over
    assert receiver.done
    assert sender.next_deadline() is None
    assert receiver.next_deadline() is None


def test_acks_in_version_1_are_one_frame_each() -> None:
    sender, receiver = machines()
    sender.offer(offer_of(1, 1, 1))
    cross(sender, receiver, 0)
    receiver.accept((0, 0, 0), zstd=False)
    cross(receiver, sender, 0)
    sender.prefixes_hashed((0, 0, 0), (b"", b"", b""))
    cross(sender, receiver, 0)
    for _ in range(3):
        receiver.frame_received(sender.send_chunk(Chunk(b"z"), 0), 0)
        sender.file_done(hashlib.sha256(b"z").digest())
        cross(sender, receiver, 0)
    receiver.files_placed(3)
    # One frame in version 3; an offer that older receivers read (version 1) gets
    # one FILE_ACK per file, as they expect.
    assert sender.proto.version == 1
    acks = cross(receiver, sender, 0)
    assert acks == [Acknowledged(1, False), Acknowledged(1, False), Acknowledged(1, True)]


def test_an_ack_batch_is_one_frame_in_version_3() -> None:
    sender, receiver = machines()
    sender.offer(Offer(tuple(FileInfo(f"f{i}", 1) for i in range(1001)), "t", 4))
    cross(sender, receiver, 0)
    receiver.accept((), zstd=False)
    cross(receiver, sender, 0)
    sender.prefixes_hashed((0,) * 1001, ())
    cross(sender, receiver, 0)
    for _ in range(3):
        receiver.frame_received(sender.send_chunk(Chunk(b"z"), 0), 0)
        sender.file_done(hashlib.sha256(b"z").digest())
        cross(sender, receiver, 0)
    receiver.files_placed(3)
    assert cross(receiver, sender, 0) == [Acknowledged(3, done=False)]


def test_a_resume_the_receiver_cannot_confirm_restarts_that_file() -> None:
    sender, receiver = machines()
    sender.offer(offer_of(100, 100))
    cross(sender, receiver, 0)
    receiver.accept((50, 0), zstd=False)
    assert cross(receiver, sender, 0) == [HashPrefixes((50, 0))]
    assert sender.prefixes_hashed((50, 0), (hashlib.sha256(b"x").digest(), b"")) is None
    [confirm] = cross(sender, receiver, 0)
    assert isinstance(confirm, ConfirmPrefixes)
    assert confirm.resume.offsets == (50, 0)
    receiver.prefixes_confirmed((0, 0))  # our bytes hash otherwise
    assert cross(receiver, sender, 0) == [SendFiles((0, 0), restarted=(0,))]
    assert sender.proto.state is State.SENDING


def test_without_resume_the_sender_hashes_nothing() -> None:
    sender, receiver = machines(resume=False)
    sender.offer(offer_of(100))
    cross(sender, receiver, 0)
    receiver.accept((50,), zstd=False)
    assert cross(receiver, sender, 0) == [HashPrefixes(())]


def test_a_declined_offer_ends_both_and_leaves_no_word_to_say() -> None:
    sender, receiver = machines()
    sender.offer(offer_of(5))
    cross(sender, receiver, 0)
    receiver.refuse()
    frames = receiver.frames_to_send(0)
    with pytest.raises(RejectedError, match=r"^the receiver declined the transfer$"):
        sender.frame_received(frames[0], 0)
    assert sender.over
    assert receiver.over
    assert not sender.abort(RejectedError())
    assert not receiver.abort(RejectedError())


def test_a_cancel_while_the_receiver_decides_ends_its_prompt() -> None:
    sender, receiver = machines()
    sender.offer(offer_of(5))
    cross(sender, receiver, 0)
    sender.handle_timer(PING)
    assert cross(sender, receiver, PING) == []  # a PING is allowed meanwhile
    assert sender.abort(KeyboardInterrupt())
    with pytest.raises(CancelledByPeerError, match="cancelled by the user"):
        cross(sender, receiver, PING + 1)


def test_anything_else_while_the_receiver_decides_is_a_protocol_error() -> None:
    sender, receiver = machines()
    sender.offer(offer_of(5))
    cross(sender, receiver, 0)
    sender.proto.state = State.SENDING  # a sender that does not wait for the answer
    sender.proto._offsets, sender.proto._file_index, sender.proto._file_remaining = (0,), 0, 5
    with pytest.raises(RemoteProtocolError):
        receiver.frame_received(sender.send_chunk(Chunk(b"earl"), 0), 0)


def test_an_old_receivers_plain_protocol_violation_means_upgrade_only_as_the_answer() -> None:
    many = Offer(tuple(FileInfo(f"f{i}", 1) for i in range(1001)), "t", 4)
    ks, kr = key_pair()
    sender = Sender(TransferProtocol(Role.SENDER, ks), 0)
    peer = TransferProtocol(Role.RECEIVER, kr)
    sender.offer(many)
    for frame in sender.frames_to_send(0):
        peer.receive(frame)
    assert sender.proto.version == 3
    plain = Cancel(PROTOCOL_REASON)  # no code: a receiver from before protocol 3
    with pytest.raises(UpgradeError):
        sender.frame_received(peer.send(plain), 0)


def test_a_plain_protocol_violation_after_the_accept_is_just_that() -> None:
    ks, kr = key_pair()
    sender = Sender(TransferProtocol(Role.SENDER, ks), 0)
    peer = TransferProtocol(Role.RECEIVER, kr)
    sender.offer(Offer(tuple(FileInfo(f"f{i}", 1) for i in range(1001)), "t", 4))
    for frame in sender.frames_to_send(0):
        peer.receive(frame)
    assert isinstance(sender.frame_received(peer.send_frames(Accept())[0], 0), HashPrefixes)
    with pytest.raises(CancelledByPeerError, match="protocol violation"):
        sender.frame_received(peer.send(Cancel(PROTOCOL_REASON)), 0)


def test_a_coded_cancel_is_told_by_its_code() -> None:
    sender, receiver = machines()
    sender.offer(offer_of(5))
    cross(sender, receiver, 0)
    receiver.accept((), zstd=False)
    cross(receiver, sender, 0)
    assert receiver.abort(RemoteProtocolError("x"))
    with pytest.raises(CancelledByPeerError, match="protocol violation"):
        cross(receiver, sender, 0)


# -- time ---------------------------------------------------------------------------------


def test_a_quiet_side_pings_once_per_interval() -> None:
    sender, receiver = machines(now=100.0)
    assert sender.next_deadline() == 100.0 + PING
    sender.handle_timer(100.0 + PING - 0.01)
    assert sender.frames_to_send(100.0 + PING - 0.01) == []
    sender.handle_timer(100.0 + PING)
    sender.handle_timer(100.0 + PING)  # a second wake-up queues no second PING
    frames = sender.frames_to_send(100.0 + PING)
    assert len(frames) == 1
    assert receiver.frame_received(frames[0], 100.0 + PING) is None
    assert sender.next_deadline() == 100.0 + 2 * PING


def test_sending_data_puts_the_ping_off() -> None:
    sender, receiver = machines()
    sender.offer(offer_of(100))
    cross(sender, receiver, 0)
    receiver.accept((), zstd=False)
    cross(receiver, sender, 0)
    sender.prefixes_hashed((0,), (b"",))
    cross(sender, receiver, 0)
    sender.send_chunk(Chunk(b"abcd"), 1.5)
    sender.handle_timer(PING)
    assert sender.frames_to_send(PING) == []
    assert sender.next_deadline() == 1.5 + PING


def test_nothing_heard_for_the_idle_timeout_is_a_lost_connection() -> None:
    _sender, receiver = machines()
    receiver.heard(4.0)  # the transport got bytes it has not read yet
    receiver.handle_timer(4.0 + IDLE - 0.01)
    assert receiver.next_deadline() == pytest.approx(min(4.0 + IDLE, receiver._last_sent + PING))
    with pytest.raises(PeerGoneError, match="nothing from the other side for 10 s"):
        receiver.handle_timer(4.0 + IDLE)


def test_a_frame_heard_is_life() -> None:
    sender, receiver = machines()
    sender.handle_timer(PING)
    cross(sender, receiver, IDLE - 1)
    receiver.handle_timer(IDLE + 1)  # 2 s after the PING: alive
    with pytest.raises(PeerGoneError):
        receiver.handle_timer(2 * IDLE)


@settings(deadline=None)  # sealing 60 steps of frames: slow on a busy machine
@given(st.lists(st.floats(min_value=0.01, max_value=PING), min_size=1, max_size=60))
def test_two_sides_that_wake_on_their_deadlines_never_lose_each_other(
    gaps: list[float],
) -> None:
    """Whatever the timing of the wake-ups, a side that handles its timer by its
    deadline keeps the other alive: PINGs both ways, no PeerGoneError."""
    sender, receiver = machines()
    now = 0.0
    for gap in gaps:
        now += gap
        for side, other in ((sender, receiver), (receiver, sender)):
            deadline = side.next_deadline()
            assert deadline is not None
            if now >= deadline:
                side.handle_timer(now)
            cross(side, other, now)
        assert now - sender._last_heard < IDLE
        assert now - receiver._last_heard < IDLE


def test_a_machine_for_the_wrong_side_is_a_local_error() -> None:
    ks, kr = key_pair()
    with pytest.raises(LocalProtocolError):
        Sender(TransferProtocol(Role.RECEIVER, kr), 0)
    with pytest.raises(LocalProtocolError):
        Receiver(TransferProtocol(Role.SENDER, ks), 0)


def test_the_cancel_says_the_kind_of_failure_by_code_and_never_a_detail() -> None:
    ks, kr = key_pair()
    receiver = Receiver(TransferProtocol(Role.RECEIVER, kr), 0)
    peer = TransferProtocol(Role.SENDER, ks)
    assert receiver.abort(DiskError("cannot write '/home/me/secret/plan.txt'"))
    [frame] = receiver.frames_to_send(0)
    event = peer.receive(frame)
    assert isinstance(event, Cancel)
    assert event.code == "disk"
    assert "secret" not in event.reason
    assert "disk" in event.reason
