"""Known-answer vectors for the browser page's crypto (``sfs/web/src/*.js``).

The page must agree with :mod:`sfs.peer.crypto` byte for byte, so the vectors come
from the real Python code with deterministic randomness, and the JavaScript tests
(``node --test sfs/web/test/``) check the port against them.
``tests/unit/test_web_vectors.py`` fails if the committed file drifts from what this
module builds.  Regenerate with ``python -m tests.web_vectors``.  All bytes are hex.
"""

from __future__ import annotations

import base64
import hashlib
import json
import types
from pathlib import Path
from typing import Any
from unittest import mock

from spake2 import SPAKE2_A, SPAKE2_B
from spake2.parameters.ed25519 import ParamsEd25519

from sfs.peer import crypto
from sfs.peer.crypto import FrameSealer, KeyExchange, SessionKeys, derive_keys
from sfs.peer.protocol import FrameType
from tests.helpers import counter_entropy

VECTORS_PATH = Path(__file__).resolve().parent.parent / "sfs" / "web" / "test" / "vectors.json"

_UTF8_PW = "café-été".encode()
# (name, printed_by, code_id, sender password, receiver password, sender seed, receiver seed)
_EXCHANGES = [
    ("receiver printed", "receiver", "ABC-123", b"tiger-lamp", b"tiger-lamp", 1, 2),
    ("sender printed", "sender", "ABC-123", b"tiger-lamp", b"tiger-lamp", 3, 4),
    ("receiver printed, other code", "receiver", "XYZ-789", b"orbit-velvet", b"orbit-velvet", 5, 6),
    ("sender printed, UTF-8 password", "sender", "Q7P-004", _UTF8_PW, _UTF8_PW, 7, 8),
    ("wrong password", "receiver", "ABC-123", b"tiger-lamb", b"tiger-lamp", 9, 10),
]
_PASSWORDS = [b"", b"tiger-lamp", _UTF8_PW]
# A signaling plaintext is the JSON session description, as sfs/peer/handshake.py builds it.
_SIGNALS = [
    ("offer", b'{"type":"offer","sdp":"v=0\\r\\no=- 1 1 IN IP4 0.0.0.0\\r\\n"}'),
    ("answer", b'{"type":"answer","sdp":"v=0\\r\\no=- 2 2 IN IP4 0.0.0.0\\r\\n"}'),
    ("ice_candidate", b'{"candidate":"candidate:1 1 udp 2130706431 192.0.2.1 9 typ host"}'),
]
# Frames in each direction (from the first exchange's keys); the last sender frame
# starts above 2**32 so that both halves of the 64-bit counter are exercised.
_SENDER_FRAMES = [
    (FrameType.OFFER, b'{"v":1,"sender":"alice","chunk_size":65508,"files":[]}'),
    (FrameType.CHUNK, bytes(range(256)) * 3),
    (FrameType.FILE_DONE, hashlib.sha256(bytes(range(256)) * 3).digest()),
    (FrameType.PING, b""),
]
_RECEIVER_FRAMES = [
    (FrameType.ACCEPT, b'{"held":[]}'),
    (FrameType.FILE_ACK, b""),
    (FrameType.CANCEL, b'{"reason":"cancelled"}'),
]
_HIGH_COUNTER = 2**32 + 5


class _RecordedEntropy:
    """:func:`counter_entropy`, remembering every byte it hands out (for the JS side)."""

    def __init__(self, seed: int) -> None:
        self._source = counter_entropy(seed)
        self.drawn = b""

    def __call__(self, n: int) -> bytes:
        out = self._source(n)
        self.drawn += out
        return out


def spake2_identities(printed_by: str, code_id: str) -> tuple[bytes, bytes]:
    """(idA, idB) as docs/PROTOCOL.md states them, written out independently of crypto.py."""
    if printed_by == "receiver":
        return b"sfs/1 sender", b"sfs/1 receiver " + code_id.encode()
    return b"sfs/1 code sender " + code_id.encode(), b"sfs/1 receiver"


def _keys(keys: SessionKeys) -> dict[str, str]:
    return {
        "signal_send": keys.signal_send.hex(),
        "signal_receive": keys.signal_receive.hex(),
        "frame_send": keys.frame_send.hex(),
        "frame_receive": keys.frame_receive.hex(),
        "verifier": keys.verifier,
    }


def _pake_key(cls: Any, password: bytes, ids: tuple[bytes, bytes], seed: int, peer: bytes) -> bytes:
    """The raw SPAKE2 key, from python-spake2 directly (KeyExchange keeps it to itself)."""
    spake = cls(password, idA=ids[0], idB=ids[1], entropy_f=counter_entropy(seed))
    spake.start()
    key: bytes = spake.finish(peer)
    return key


def _exchange(
    name: str, printed_by: str, code_id: str, pw_s: bytes, pw_r: bytes, seed_s: int, seed_r: int
) -> tuple[dict[str, object], SessionKeys, SessionKeys]:
    entropy_s, entropy_r = _RecordedEntropy(seed_s), _RecordedEntropy(seed_r)
    sender = KeyExchange(
        role="sender", password=pw_s, code_id=code_id, printed_by=printed_by, entropy=entropy_s
    )
    receiver = KeyExchange(
        role="receiver", password=pw_r, code_id=code_id, printed_by=printed_by, entropy=entropy_r
    )
    keys_s, keys_r = sender.finish(receiver.message), receiver.finish(sender.message)
    ids = spake2_identities(printed_by, code_id)
    pake_s = _pake_key(SPAKE2_A, pw_s, ids, seed_s, receiver.message)
    pake_r = _pake_key(SPAKE2_B, pw_r, ids, seed_r, sender.message)
    # The raw key and the identities above are what KeyExchange really used.
    transcript = code_id.encode()
    assert derive_keys(pake_key=pake_s, transcript=transcript, role="sender") == keys_s
    assert derive_keys(pake_key=pake_r, transcript=transcript, role="receiver") == keys_r
    vector: dict[str, object] = {
        "name": name,
        "printed_by": printed_by,
        "code_id": code_id,
        "sender_password": pw_s.hex(),
        "receiver_password": pw_r.hex(),
        "id_a": ids[0].hex(),
        "id_b": ids[1].hex(),
        "sender_entropy": entropy_s.drawn.hex(),
        "receiver_entropy": entropy_r.drawn.hex(),
        "sender_message": sender.message.hex(),
        "receiver_message": receiver.message.hex(),
        "sender_pake_key": pake_s.hex(),
        "receiver_pake_key": pake_r.hex(),
        "sender_keys": _keys(keys_s),
        "receiver_keys": _keys(keys_r),
    }
    return vector, keys_s, keys_r


def _signals(keys_s: SessionKeys, keys_r: SessionKeys) -> list[dict[str, str]]:
    # seal_message draws its nonce from os.urandom; give this module's ``os`` a
    # deterministic urandom (only within crypto.py, and only here).
    nonces = counter_entropy(100)
    fake_os = types.SimpleNamespace(urandom=nonces)
    out = []
    with mock.patch.object(crypto, "os", fake_os):
        for kind, plaintext in _SIGNALS:
            key = keys_r.signal_send if kind == "answer" else keys_s.signal_send
            sealed = crypto.seal_message(key=key, kind=kind, plaintext=plaintext)
            out.append(
                {
                    "kind": kind,
                    "key": key.hex(),
                    "plaintext": plaintext.hex(),
                    "nonce": sealed[: crypto.NONCE_BYTES].hex(),
                    "sealed": sealed.hex(),
                    "sealed_base64": base64.b64encode(sealed).decode("ascii"),
                }
            )
    return out


def _frames(key: bytes, frames: list[tuple[FrameType, bytes]], high: bool) -> dict[str, object]:
    sealer = FrameSealer(key)
    out = []
    for index, (frame_type, payload) in enumerate(frames):
        if high and index == len(frames) - 1:
            sealer._counter = _HIGH_COUNTER  # no public way to get there in a test
        counter = sealer._counter
        out.append(
            {
                "type": int(frame_type),
                "counter": counter,
                "payload": payload.hex(),
                "frame": sealer.seal(frame_type, payload).hex(),
            }
        )
    return {"key": key.hex(), "frames": out}


def build_vectors() -> dict[str, object]:
    """Every vector, as plain JSON data."""
    group = ParamsEd25519.group
    exchanges = [_exchange(*case) for case in _EXCHANGES]
    _, keys_s, keys_r = exchanges[0]  # signals and frames use the first exchange's keys
    return {
        "comment": "Written by `python -m tests.web_vectors` from sfs/peer/crypto.py; do not edit",
        "spake2": {
            "M": ParamsEd25519.M.to_bytes().hex(),
            "N": ParamsEd25519.N.to_bytes().hex(),
            # python-spake2's scalar_to_bytes: 32 bytes little-endian
            "password_scalars": [
                {
                    "password": pw.hex(),
                    "scalar": group.scalar_to_bytes(group.password_to_scalar(pw)).hex(),
                }
                for pw in _PASSWORDS
            ],
        },
        "exchanges": [vector for vector, _, _ in exchanges],
        "signals": _signals(keys_s, keys_r),
        "frames": {
            "sender_to_receiver": _frames(keys_s.frame_send, _SENDER_FRAMES, high=True),
            "receiver_to_sender": _frames(keys_r.frame_send, _RECEIVER_FRAMES, high=False),
        },
    }


def render(vectors: dict[str, object]) -> str:
    return json.dumps(vectors, indent=2, ensure_ascii=True) + "\n"


def main() -> None:
    VECTORS_PATH.write_text(render(build_vectors()), encoding="utf-8")
    print(f"wrote {VECTORS_PATH}")


if __name__ == "__main__":
    main()
