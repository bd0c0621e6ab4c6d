"""The browser page's known-answer vectors: current, and right about Python."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from spake2.parameters.ed25519 import ParamsEd25519

from sfs.errors import CryptoError, WrongCodeError
from sfs.peer.proto.crypto import FrameOpener, KeyExchange, open_message
from tests.web_vectors import VECTORS_PATH, build_vectors, render


def _replay(hex_bytes: str) -> Callable[[int], bytes]:
    """Hand out the recorded entropy again (SPAKE2 draws it in one call)."""
    return lambda n: bytes.fromhex(hex_bytes)[:n]


@pytest.fixture(scope="module")
def vectors() -> Any:
    return json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def test_committed_vectors_are_current(vectors: Any) -> None:
    # If this fails, the Python crypto changed (which breaks the page and older
    # peers), or the generator did: run `python -m tests.web_vectors` if deliberate.
    assert vectors == json.loads(render(build_vectors()))


def test_spake2_parameters_are_the_library_s(vectors: Any) -> None:
    assert vectors["spake2"]["M"] == ParamsEd25519.M.to_bytes().hex()
    assert vectors["spake2"]["N"] == ParamsEd25519.N.to_bytes().hex()


def test_exchanges_replay_through_key_exchange(vectors: Any) -> None:
    for case in vectors["exchanges"]:
        drawn = {"sender": case["sender_entropy"], "receiver": case["receiver_entropy"]}
        sides = {
            role: KeyExchange(
                role=role,
                password=bytes.fromhex(case[f"{role}_password"]),
                code_id=case["code_id"],
                printed_by=case["printed_by"],
                entropy=_replay(drawn[role]),
            )
            for role in ("sender", "receiver")
        }
        assert sides["sender"].message.hex() == case["sender_message"]
        assert sides["receiver"].message.hex() == case["receiver_message"]
        keys_s = sides["sender"].finish(sides["receiver"].message)
        keys_r = sides["receiver"].finish(sides["sender"].message)
        assert keys_s.verifier == case["sender_keys"]["verifier"]
        assert keys_r.frame_receive.hex() == case["receiver_keys"]["frame_receive"]
        agreed = case["sender_password"] == case["receiver_password"]
        assert (keys_s.signal_send == keys_r.signal_receive) is agreed
        assert (case["sender_pake_key"] == case["receiver_pake_key"]) is agreed


def test_sealed_signals_open_in_python(vectors: Any) -> None:
    for signal in vectors["signals"]:
        key, sealed = bytes.fromhex(signal["key"]), bytes.fromhex(signal["sealed"])
        plaintext = open_message(key=key, kind=signal["kind"], sealed=sealed)
        assert plaintext.hex() == signal["plaintext"]
        with pytest.raises(WrongCodeError):
            open_message(key=key, kind="other", sealed=sealed)


def test_frames_open_in_python(vectors: Any) -> None:
    for direction in vectors["frames"].values():
        opener = FrameOpener(bytes.fromhex(direction["key"]))
        for frame in direction["frames"]:
            opener._counter = frame["counter"]  # the high-counter frame skips ahead
            data = bytes.fromhex(frame["frame"])
            assert opener.open(data) == (frame["type"], bytes.fromhex(frame["payload"]))
            with pytest.raises(CryptoError):
                opener.open(data)  # replayed
