"""CANCEL and REJECT carry a code beside the reason; each side decides by the code, and
by the reason text for older peers that send none."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfs.errors import (
    CancelledByPeerError,
    DestinationExistsError,
    DiskError,
    IntegrityError,
    LocalProtocolError,
    RejectedError,
    RemoteProtocolError,
    SfsError,
    SourceError,
    UpgradeError,
    VerificationError,
)
from sfs.peer.proto import reasons
from sfs.peer.proto.crypto import FrameSealer, derive_keys
from sfs.peer.proto.framing import Role, TransferProtocol
from sfs.peer.proto.wire import Cancel, FileInfo, FrameType, Offer, Reject

KEYS = derive_keys(pake_key=b"k" * 32, transcript=b"t", role="sender")
PEER_KEYS = derive_keys(pake_key=b"k" * 32, transcript=b"t", role="receiver")

FAILURES: list[tuple[BaseException, str]] = [
    (DiskError(), reasons.DISK),
    (DestinationExistsError(), reasons.EXISTS),
    (IntegrityError(), reasons.INTEGRITY),
    (VerificationError(), reasons.VERIFICATION),
    (UpgradeError(), reasons.UPGRADE),
    (RemoteProtocolError(), reasons.PROTOCOL),
    (SourceError(), reasons.SOURCE),
    (KeyboardInterrupt(), reasons.CANCELLED),
    (asyncio.CancelledError(), reasons.CANCELLED),
    (SfsError(), reasons.ERROR),
    (OSError("/home/someone/secret.txt"), reasons.ERROR),
]


@pytest.mark.parametrize(("exc", "code"), FAILURES, ids=[code for _, code in FAILURES])
def test_each_failure_is_told_by_its_code_and_reason(exc: BaseException, code: str) -> None:
    event = reasons.cancel_for(exc)
    assert event == Cancel(reasons.CANCEL_REASONS[code], code)
    assert "secret" not in event.reason  # never a local detail


STOPS = {
    reasons.UPGRADE: UpgradeError,
    reasons.EXISTS: DestinationExistsError,
}


@given(st.sampled_from(sorted(reasons.CANCEL_REASONS)), st.booleans(), st.sampled_from([1, 3]))
def test_a_cancel_maps_back_by_code_or_by_its_reason(code: str, with_code: bool, v: int) -> None:
    sent = reasons.cancel(code)
    # An older peer's CANCEL carries only the reason; it must read the same.
    event = sent if with_code else Cancel(sent.reason)
    assert reasons.code_of(event) == code
    error = reasons.stopped_by(event, offer_version=v)
    old_receiver = not with_code and v >= 3 and code == reasons.PROTOCOL
    assert type(error) is (UpgradeError if old_receiver else STOPS.get(code, CancelledByPeerError))


def test_a_protocol_code_from_a_new_receiver_is_not_an_old_receiver() -> None:
    # Only a codeless "protocol violation" answering a version 3 offer means "too old".
    assert type(reasons.stopped_by(reasons.cancel(reasons.PROTOCOL), 3)) is CancelledByPeerError
    assert type(reasons.stopped_by(Cancel("protocol violation"), 3)) is UpgradeError


def test_the_code_decides_over_the_reason_text() -> None:
    error = reasons.stopped_by(Cancel("anything at all", reasons.EXISTS))
    assert isinstance(error, DestinationExistsError)
    assert type(reasons.stopped_by(Cancel(reasons.EXISTS_REASON, "future-code"))) is (
        DestinationExistsError  # an unknown code: the reason still tells
    )


@pytest.mark.parametrize(
    ("event", "plain"),
    [
        (reasons.reject(), True),
        (Reject(), True),  # older receivers: "declined", "" or DECLINED_REASON
        (Reject(""), True),
        (Reject(reasons.DECLINED_REASON), True),
        (reasons.reject(reasons.STDOUT_ONLY), False),
        (reasons.reject(reasons.FOLDERS), False),
    ],
)
def test_a_reject_says_its_reason_unless_it_is_a_plain_no(event: Reject, plain: bool) -> None:
    error = reasons.stopped_by(event)
    assert type(error) is RejectedError
    assert (str(error) == "the receiver declined the transfer") is plain


def _closed_pair() -> tuple[TransferProtocol, TransferProtocol]:
    sender = TransferProtocol(Role.SENDER, KEYS)
    receiver = TransferProtocol(Role.RECEIVER, PEER_KEYS)
    receiver.receive(sender.send(Offer(files=(FileInfo("a", 1),))))
    return sender, receiver


@pytest.mark.parametrize("code", ["", *reasons.CANCEL_REASONS])
def test_a_cancel_code_crosses_the_wire(code: str) -> None:
    sender, receiver = _closed_pair()
    event = Cancel("why", code)
    assert receiver.receive(sender.send(event)) == event


@pytest.mark.parametrize("code", ["", *reasons.REJECT_REASONS])
def test_a_reject_code_crosses_the_wire(code: str) -> None:
    sender, receiver = _closed_pair()
    assert sender.receive(receiver.send(Reject("no", code))) == Reject("no", code)


@pytest.mark.parametrize("code", ["Upper", "1st", "a" * 33, "sp ace", "é", "-x"])
def test_a_malformed_code_is_refused_when_sent_and_ignored_when_received(code: str) -> None:
    sender, receiver = _closed_pair()
    with pytest.raises(LocalProtocolError):
        sender.send(Cancel("why", code))
    forged = FrameSealer(KEYS.frame_send)
    payload = b'{"reason":"why","code":' + f'"{code}"'.encode() + b"}"
    forged.seal(FrameType.OFFER, b"")  # counter 0, already used by the offer
    assert receiver.receive(forged.seal(FrameType.CANCEL, payload)) == Cancel("why")


def test_a_code_that_is_not_a_string_is_ignored() -> None:
    _, receiver = _closed_pair()
    forged = FrameSealer(KEYS.frame_send)
    forged.seal(FrameType.OFFER, b"")
    payload = b'{"reason":"why","code":7}'
    assert receiver.receive(forged.seal(FrameType.CANCEL, payload)) == Cancel("why")
