"""Known-answer vectors for the browser page's crypto and transfer protocol
(``sfs/web/src/*.js``).

The page must agree with :mod:`sfs.peer.proto.crypto` and :mod:`sfs.peer.proto.framing` byte for
byte, so the vectors come
from the real Python code with deterministic randomness, and the JavaScript tests
(``node --test sfs/web/test/``) check the port against them.
``tests/unit/test_web_vectors.py`` fails if the committed file drifts from what this
module builds.  Regenerate with ``python -m tests.web_vectors``.  All bytes are hex.

The ``constants`` block holds every constant the page copies (versions, limits,
timeouts, CANCEL/REJECT codes and texts, HKDF labels), read from the module that owns
it, for ``sfs/web/test/constants.test.mjs``.
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

from sfs import app, code, defaults, setup, text
from sfs.errors import RemoteProtocolError
from sfs.peer import sending, transfer
from sfs.peer.files import partial
from sfs.peer.proto import conversation, crypto, handshake, names, reasons, wire
from sfs.peer.proto.crypto import FrameSealer, KeyExchange, SessionKeys, derive_keys
from sfs.peer.proto.framing import Role, TransferProtocol
from sfs.peer.proto.names import free_name, safe_name
from sfs.peer.proto.tree import plan_tree
from sfs.peer.proto.wire import (
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
)
from sfs.peer.transport import gathering, tcp, webrtc
from sfs.signal import client, messages
from sfs.text import format_size, printable
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
# A signaling plaintext is the JSON session description, as sfs/peer/proto/handshake.py builds it.
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
    # seal_message draws its nonce from secrets.token_bytes; give this module's
    # ``secrets`` a deterministic token_bytes (only within crypto.py, and only here).
    nonces = counter_entropy(100)
    fake_secrets = types.SimpleNamespace(token_bytes=nonces)
    out = []
    with mock.patch.object(crypto, "secrets", fake_secrets):
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


# -- transfer protocol sessions (sfs/web/src/protocol.js) --------------------------------------

#: The rule both this module and the JS test use for a version 3 offer of many files,
#: so the JS side can rebuild it without 300 kB of frames in this file.
_MANY_FILES = 1100
_MANY_NAME_PAD = 180
_MANY_MTIME_NS = 1_700_000_000_000_000_000


def many_files() -> tuple[FileInfo, ...]:
    """More than 1000 files (so version 3), with a listing larger than one frame (MORE)."""
    return tuple(
        FileInfo(f"file-{i:05d}-" + "x" * _MANY_NAME_PAD, i % 5 + 1, _MANY_MTIME_NS + i)
        for i in range(_MANY_FILES)
    )


_TEXT = "Hello from sfs: café ☕\nSecond line\n".encode()
_REPORT = b"hello world"
_FOLDER_OFFER = Offer(
    files=(
        FileInfo("readme.txt", 3, 1_600_000_000_000_000_000, ("docs",), False),
        FileInfo("run.sh", 5, 1_600_000_000_000_000_001, (), True),
    ),
    sender="carol",
    folders=(("docs",), ("empty", "inner")),
)
# (name, [(side, event), ...]): each event is sent by that side and read by the other.
_SESSIONS: list[tuple[str, list[tuple[Role, Any]]]] = [
    (
        "v1 one file",
        [
            (
                Role.SENDER,
                Offer(
                    files=(FileInfo("report.pdf", len(_REPORT), 1_700_000_000_123_456_789),),
                    sender="alice",
                    chunk_size=8,
                ),
            ),
            (Role.RECEIVER, Accept()),
            (Role.SENDER, Resume((0,))),
            (Role.SENDER, Chunk(_REPORT[:8])),
            (Role.SENDER, Ping()),
            (Role.SENDER, Chunk(_REPORT[8:])),
            (Role.SENDER, FileDone(hashlib.sha256(_REPORT).digest())),
            (Role.RECEIVER, Ping()),
            (Role.RECEIVER, FileAck()),
        ],
    ),
    (
        "v1 three files, one empty, a name to reduce",
        [
            (
                Role.SENDER,
                Offer(
                    files=(
                        FileInfo("a.txt", 2, 1),
                        FileInfo("empty", 0, 2),
                        FileInfo("../Ünïcødé \u202e.txt", 1, 3),
                    ),
                    sender="",
                ),
            ),
            (Role.RECEIVER, Accept()),
            (Role.SENDER, Resume((0, 0, 0))),
            (Role.SENDER, Chunk(b"ab")),
            (Role.SENDER, FileDone(hashlib.sha256(b"ab").digest())),
            (Role.SENDER, FileDone(hashlib.sha256(b"").digest())),
            (Role.RECEIVER, FileAck()),
            (Role.SENDER, Chunk(b"z")),
            (Role.SENDER, FileDone(hashlib.sha256(b"z").digest())),
            (Role.RECEIVER, FileAck()),
            (Role.RECEIVER, FileAck()),
        ],
    ),
    (
        "v1 declined",
        [
            (Role.SENDER, Offer(files=(FileInfo("x.bin", 10, 0),), sender="dave")),
            (Role.SENDER, Ping()),
            (Role.RECEIVER, reasons.reject(reasons.DECLINED)),
        ],
    ),
    (
        "v2 folders",
        [
            (Role.SENDER, _FOLDER_OFFER),
            (Role.RECEIVER, Accept()),
            (Role.SENDER, Resume((0, 0))),
            (Role.SENDER, Chunk(b"abc")),
            (Role.SENDER, FileDone(hashlib.sha256(b"abc").digest())),
            (Role.RECEIVER, FileAck()),
            (Role.SENDER, Chunk(b"#!/sh")),
            (Role.SENDER, FileDone(hashlib.sha256(b"#!/sh").digest())),
            (Role.RECEIVER, FileAck()),
        ],
    ),
    (
        "v3 text message",
        [
            (
                Role.SENDER,
                Offer(files=(FileInfo("text", len(_TEXT), 0),), sender="bob", text=True),
            ),
            (Role.RECEIVER, Accept()),
            (Role.SENDER, Resume((0,))),
            (Role.SENDER, Chunk(_TEXT)),
            (Role.SENDER, FileDone(hashlib.sha256(_TEXT).digest())),
            (Role.RECEIVER, FileAck()),
        ],
    ),
    (
        "v3 pipe",
        [
            (Role.SENDER, Offer(files=(FileInfo("stdin", 0, 0, stream=True),), sender="eve")),
            (Role.RECEIVER, Accept()),
            (Role.SENDER, Resume((0,))),
            (Role.SENDER, Chunk(b"piped ")),
            (Role.SENDER, Chunk(b"bytes")),
            (Role.SENDER, FileDone(hashlib.sha256(b"piped bytes").digest())),
            (Role.RECEIVER, FileAck()),
        ],
    ),
    (
        "v3 many files: MORE pieces, sparse offsets, a counted FILE_ACK, cancel",
        [
            (Role.SENDER, Offer(files=many_files(), sender="frank")),
            (Role.RECEIVER, Ping()),
            (Role.RECEIVER, Accept((0, 2, 0, 0, 0, 1) + (0,) * (_MANY_FILES - 6))),
            (
                Role.SENDER,
                Resume(
                    (0, 2) + (0,) * (_MANY_FILES - 2),
                    (b"", hashlib.sha256(b"ab").digest()) + (b"",) * (_MANY_FILES - 2),
                ),
            ),
            (Role.RECEIVER, Start((0, 2) + (0,) * (_MANY_FILES - 2))),
            (Role.SENDER, Chunk(b"0")),
            (Role.SENDER, FileDone(hashlib.sha256(b"0").digest())),
            (Role.SENDER, FileDone(hashlib.sha256(b"ab").digest())),
            (Role.RECEIVER, FileAck(2)),
            (Role.SENDER, reasons.cancel(reasons.CANCELLED)),
        ],
    ),
]
#: Frames longer than this are given by their SHA-256 (the JS test rebuilds them).
_FRAME_HEX_LIMIT = 4096


def _describe(event: Any) -> dict[str, Any]:
    """An event as plain JSON (mtime_ns as a string: JSON numbers lose its digits in JS)."""
    if isinstance(event, Offer):
        if event.files == many_files():
            files: Any = {"generated": "many_files"}
        else:
            files = [
                {
                    "name": f.name,
                    "size": f.size,
                    "mtime_ns": str(f.mtime_ns),
                    "folder": list(f.folder),
                    "x": f.executable,
                    "stream": f.stream,
                }
                for f in event.files
            ]
        return {
            "type": "Offer",
            "sender": event.sender,
            "chunk_size": event.chunk_size,
            "text": event.text,
            "folders": [list(folder) for folder in event.folders],
            "files": files,
            "version": event.version,
        }
    # Per-file lists as [index, value] for the values that are not 0 (or empty), and
    # their length: a list per file of an offer of 1100 files is mostly zeros.
    if isinstance(event, Accept):
        return {"type": "Accept", "held": _rows(event.held), "zstd": event.zstd}
    if isinstance(event, Resume):
        return {
            "type": "Resume",
            "offsets": _rows(event.offsets),
            "sha256": _rows(tuple(d.hex() for d in event.sha256)),
        }
    if isinstance(event, Start):
        return {"type": "Start", "offsets": _rows(event.offsets)}
    if isinstance(event, Reject | Cancel):
        coded = {"code": event.code} if event.code else {}
        return {"type": type(event).__name__, "reason": event.reason, **coded}
    if isinstance(event, Chunk):
        return {"type": "Chunk", "data": bytes(event.data).hex()}
    if isinstance(event, FileDone):
        return {"type": "FileDone", "sha256": event.sha256.hex()}
    if isinstance(event, FileAck):
        return {"type": "FileAck", "count": event.count}
    if isinstance(event, Ping | Partial):
        return {"type": type(event).__name__}
    raise TypeError(f"cannot describe {event!r}")


def _rows(values: tuple[Any, ...]) -> dict[str, object]:
    return {"length": len(values), "rows": [[i, v] for i, v in enumerate(values) if v]}


def _session(
    name: str, steps: list[tuple[Role, Any]], keys_s: SessionKeys, keys_r: SessionKeys
) -> dict[str, object]:
    sides = {
        Role.SENDER: TransferProtocol(Role.SENDER, keys_s),
        Role.RECEIVER: TransferProtocol(Role.RECEIVER, keys_r),
    }
    out = []
    for side, event in steps:
        peer = sides[Role.RECEIVER if side is Role.SENDER else Role.SENDER]
        frames = sides[side].send_frames(event)
        received = [peer.receive(frame) for frame in frames]
        # The reader ends with the event that was sent (after Partial for any pieces).
        assert _describe(received[-1]) == _describe(event) or isinstance(event, Chunk)
        step: dict[str, object] = {"from": side.value, "event": _describe(event)}
        if all(len(f) <= _FRAME_HEX_LIMIT for f in frames):
            step["frames"] = [f.hex() for f in frames]
        else:
            step["frames_sha256"] = [hashlib.sha256(f).hexdigest() for f in frames]
            step["frames_length"] = [len(f) for f in frames]
        step["received"] = [_describe(e) for e in received]
        step["states"] = {
            "sender": sides[Role.SENDER].state.value,
            "receiver": sides[Role.RECEIVER].state.value,
        }
        out.append(step)
    return {"name": name, "steps": out}


def _protocol(keys_s: SessionKeys, keys_r: SessionKeys) -> dict[str, object]:
    return {
        "sender_keys": _keys(keys_s),
        "receiver_keys": _keys(keys_r),
        "many_files": {
            "count": _MANY_FILES,
            "name": "file-{i:05d}-" + "x" * _MANY_NAME_PAD,
            "size": "i % 5 + 1",
            "mtime_ns": f"{_MANY_MTIME_NS} + i",
        },
        "sessions": [_session(name, steps, keys_s, keys_r) for name, steps in _SESSIONS],
    }


# -- conversation scripts (sfs/web/src/conversation.js, sfs/peer/proto/conversation.py) --------

#: What a step's ``input`` may be: a frame from the peer (``frame``: the event the peer
#: seals), the timer (``timer``), the transport hearing the peer (``heard``), or a call
#: of the machine's (``call``: its Python name; the JS test camel-cases it) with args.
_A, _B, _C = b"a", b"bb", b"ccc"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _offer_of(*files: FileInfo, sender: str = "alice") -> dict[str, Any]:
    return _describe(Offer(files=files, sender=sender, chunk_size=1024))


def _frame(event: Any) -> dict[str, Any]:
    return {"frame": _describe(event)}


def _call(name: str, **args: Any) -> dict[str, Any]:
    return {"call": name, "args": args}


def _step(at: float, given: dict[str, Any], **expected: Any) -> dict[str, Any]:
    """One input at time ``at`` and what must come out: ``sent`` (the events of the
    frames queued, opened by the peer; [] if none), ``action`` (its ``kind`` and
    fields, or None), ``error`` (``kind``: the class name; ``code``: the CANCEL code
    this side answers it with), ``returned`` (a call's result), ``deadline``
    (next_deadline() after the step)."""
    return {"at": at, "input": given, **expected}


_TWO = (FileInfo("a.txt", 1, 1), FileInfo("b.txt", 2, 2))
_THREE = (FileInfo("a", 1, 1), FileInfo("b", 2, 2), FileInfo("c", 3, 3))
_ACK = _describe(FileAck())
_NONE: list[Any] = []
_CONVERSATIONS: list[dict[str, Any]] = [
    {
        "name": "sender: two files, each acknowledged",
        "side": "sender",
        "steps": [
            _step(
                0,
                _call("offer", offer=_offer_of(*_TWO)),
                sent=[_offer_of(*_TWO)],
                action=None,
                deadline=2,
            ),
            _step(
                1,
                _frame(Accept()),
                sent=_NONE,
                action={"kind": "HashPrefixes", "held": []},
                deadline=2,
            ),
            _step(
                1,
                _call("prefixes_hashed", offsets=[0, 0], digests=["", ""]),
                sent=[_describe(Resume((0, 0)))],
                action={"kind": "SendFiles", "offsets": [0, 0], "restarted": []},
                deadline=3,
            ),
            _step(
                1.5,
                _call("send_chunk", data=_A.hex()),
                returned=_describe(Chunk(_A)),
                sent=_NONE,
                deadline=3.5,
            ),
            _step(
                1.5,
                _call("file_done", sha256=_sha(_A)),
                sent=[_describe(FileDone(bytes.fromhex(_sha(_A))))],
                deadline=3.5,
            ),
            _step(
                2,
                _call("send_chunk", data=_B.hex()),
                returned=_describe(Chunk(_B)),
                sent=_NONE,
                deadline=4,
            ),
            _step(
                2,
                _call("file_done", sha256=_sha(_B)),
                sent=[_describe(FileDone(bytes.fromhex(_sha(_B))))],
                deadline=4,
            ),
            _step(
                2.5,
                _frame(FileAck()),
                sent=_NONE,
                action={"kind": "Acknowledged", "count": 1, "done": False},
                deadline=4,
            ),
            _step(
                3,
                _frame(FileAck()),
                sent=_NONE,
                action={"kind": "Acknowledged", "count": 1, "done": True},
                deadline=None,
            ),
            _step(9, {"timer": True}, sent=_NONE, deadline=None),
        ],
    },
    {
        "name": "receiver: the user declines",
        "side": "receiver",
        "steps": [
            _step(
                0,
                _frame(Offer(files=_TWO, sender="alice", chunk_size=1024)),
                sent=_NONE,
                action={"kind": "AskUser", "offer": _offer_of(*_TWO)},
                deadline=2,
            ),
            _step(
                1,
                _call("refuse", code=reasons.DECLINED),
                sent=[_describe(reasons.reject(reasons.DECLINED))],
                deadline=None,
            ),
            _step(
                1,
                _call("abort", error="RemoteProtocolError"),
                returned=False,
                sent=_NONE,
                deadline=None,
            ),
        ],
    },
    {
        "name": "receiver: confirms a resume (START), then takes the rest",
        "side": "receiver",
        "steps": [
            _step(
                0,
                _frame(Offer(files=(FileInfo("r.bin", 4, 7),), chunk_size=1024)),
                sent=_NONE,
                deadline=2,
                action={
                    "kind": "AskUser",
                    "offer": _describe(Offer(files=(FileInfo("r.bin", 4, 7),), chunk_size=1024)),
                },
            ),
            _step(
                1, _call("accept", held=[2], zstd=False), sent=[_describe(Accept((2,)))], deadline=3
            ),
            _step(
                1.5,
                _frame(Resume((2,), (hashlib.sha256(b"ab").digest(),))),
                sent=_NONE,
                action={
                    "kind": "ConfirmPrefixes",
                    "resume": _describe(Resume((2,), (hashlib.sha256(b"ab").digest(),))),
                },
                deadline=3,
            ),
            _step(
                1.5,
                _call("prefixes_confirmed", offsets=[2]),
                sent=[_describe(Start((2,)))],
                deadline=3.5,
            ),
            _step(
                2,
                _frame(Chunk(b"cd")),
                sent=_NONE,
                action={"kind": "Chunk", "data": b"cd".hex()},
                deadline=3.5,
            ),
            _step(
                2,
                _frame(FileDone(hashlib.sha256(b"abcd").digest())),
                sent=_NONE,
                action={"kind": "FileDone", "sha256": _sha(b"abcd")},
                deadline=3.5,
            ),
            _step(2.5, _call("files_placed", count=1), sent=[_ACK], deadline=None),
        ],
    },
    {
        "name": "keepalive: a PING after PING_INTERVAL of silence, none while not due",
        "side": "receiver",
        "steps": [
            _step(
                0,
                _frame(Offer(files=_TWO, chunk_size=1024)),
                sent=_NONE,
                action={"kind": "AskUser", "offer": _describe(Offer(files=_TWO, chunk_size=1024))},
                deadline=2,
            ),
            _step(1.9, {"timer": True}, sent=_NONE, deadline=2),
            _step(2, {"timer": True}, sent=[_describe(Ping())], deadline=4),
            _step(3, _frame(Ping()), sent=_NONE, action=None, deadline=4),
            _step(4.5, {"timer": True}, sent=[_describe(Ping())], deadline=6.5),
            _step(
                5, _call("accept", held=[0, 0], zstd=False), sent=[_describe(Accept())], deadline=7
            ),
        ],
    },
    {
        "name": "idle: nothing heard for IDLE_TIMEOUT fails; what the transport heard counts",
        "side": "sender",
        "steps": [
            _step(0, _call("offer", offer=_offer_of(*_TWO)), sent=[_offer_of(*_TWO)], deadline=2),
            _step(2, {"timer": True}, sent=[_describe(Ping())], deadline=4),
            _step(4, {"heard": True}, sent=_NONE, deadline=4),
            _step(4, {"timer": True}, sent=[_describe(Ping())], deadline=6),
            _step(13.9, {"timer": True}, sent=[_describe(Ping())], deadline=14),
            _step(
                14,
                {"timer": True},
                sent=_NONE,
                error={"kind": "PeerGoneError", "code": reasons.ERROR},
            ),
        ],
    },
    {
        "name": "a CANCEL while the receiver decides ends the question",
        "side": "receiver",
        "steps": [
            _step(
                0,
                _frame(Offer(files=_TWO, chunk_size=1024)),
                sent=_NONE,
                action={"kind": "AskUser", "offer": _describe(Offer(files=_TWO, chunk_size=1024))},
                deadline=2,
            ),
            _step(1, _frame(Ping()), sent=_NONE, action=None, deadline=2),
            _step(
                2,
                _frame(reasons.cancel(reasons.CANCELLED)),
                sent=_NONE,
                error={"kind": "CancelledByPeerError", "code": reasons.ERROR},
            ),
            _step(
                2,
                _call("abort", error="CancelledByPeerError"),
                returned=False,
                sent=_NONE,
                deadline=None,
            ),
        ],
    },
    {
        "name": "receiver: an ack batch of 3 (version 1: three FILE_ACK frames)",
        "side": "receiver",
        "steps": [
            _step(
                0,
                _frame(Offer(files=_THREE, chunk_size=1024)),
                sent=_NONE,
                action={
                    "kind": "AskUser",
                    "offer": _describe(Offer(files=_THREE, chunk_size=1024)),
                },
                deadline=2,
            ),
            _step(
                0,
                _call("accept", held=[0, 0, 0], zstd=False),
                sent=[_describe(Accept())],
                deadline=2,
            ),
            _step(
                0,
                _frame(Resume((0, 0, 0))),
                sent=_NONE,
                action={"kind": "ConfirmPrefixes", "resume": _describe(Resume((0, 0, 0)))},
                deadline=2,
            ),
            _step(0, _call("prefixes_confirmed", offsets=[0, 0, 0]), sent=_NONE, deadline=2),
            *[
                step
                for data in (_A, _B, _C)
                for step in (
                    _step(
                        0,
                        _frame(Chunk(data)),
                        sent=_NONE,
                        action={"kind": "Chunk", "data": data.hex()},
                        deadline=2,
                    ),
                    _step(
                        0,
                        _frame(FileDone(hashlib.sha256(data).digest())),
                        sent=_NONE,
                        action={"kind": "FileDone", "sha256": _sha(data)},
                        deadline=2,
                    ),
                )
            ],
            _step(1, _call("files_placed", count=0), sent=_NONE, deadline=2),
            _step(1, _call("files_placed", count=3), sent=[_ACK, _ACK, _ACK], deadline=None),
        ],
    },
    {
        "name": "receiver: a file that fails its check is cancelled with the integrity code",
        "side": "receiver",
        "steps": [
            _step(
                0,
                _frame(Offer(files=(FileInfo("x", 1, 0),), chunk_size=1024)),
                sent=_NONE,
                action={
                    "kind": "AskUser",
                    "offer": _describe(Offer(files=(FileInfo("x", 1, 0),), chunk_size=1024)),
                },
                deadline=2,
            ),
            _step(0, _call("accept", held=[], zstd=False), sent=[_describe(Accept())], deadline=2),
            _step(
                0,
                _frame(Resume((0,))),
                sent=_NONE,
                action={"kind": "ConfirmPrefixes", "resume": _describe(Resume((0,)))},
                deadline=2,
            ),
            _step(
                0,
                _frame(Chunk(b"y")),
                sent=_NONE,
                action={"kind": "Chunk", "data": "79"},
                deadline=2,
            ),
            _step(
                0,
                _frame(FileDone(hashlib.sha256(b"z").digest())),
                sent=_NONE,
                action={"kind": "FileDone", "sha256": _sha(b"z")},
                deadline=2,
            ),
            _step(
                0.5,
                _call("abort", error="IntegrityError"),
                returned=True,
                sent=[_describe(reasons.cancel(reasons.INTEGRITY))],
                deadline=None,
            ),
        ],
    },
    {
        "name": "sender: a REJECT of the offer fails with RejectedError",
        "side": "sender",
        "steps": [
            _step(0, _call("offer", offer=_offer_of(*_TWO)), sent=[_offer_of(*_TWO)], deadline=2),
            _step(
                1,
                _frame(reasons.reject(reasons.FOLDERS)),
                sent=_NONE,
                error={"kind": "RejectedError", "code": reasons.ERROR},
            ),
        ],
    },
]


def _conversations(keys_s: SessionKeys, keys_r: SessionKeys) -> dict[str, object]:
    return {
        "comment": (
            "Each script drives one side's machine (created at time 0) step by step; a "
            "frame input is the event the peer seals; sent: the events of the frames it "
            "queued, as the peer opens them (after the input, framesToSend(at))"
        ),
        "sender_keys": _keys(keys_s),
        "receiver_keys": _keys(keys_r),
        "ping_interval_seconds": conversation.PING_INTERVAL_SECONDS,
        "idle_timeout_seconds": conversation.IDLE_TIMEOUT_SECONDS,
        "scripts": _CONVERSATIONS,
    }


# -- set-up scripts (sfs/web/src/handshake.js) ---------------------------------------------

# Written by hand at the event level; tests/unit/test_handshake_vectors.py and
# sfs/web/test/handshake_vectors.test.mjs run them against each machine.  The other
# side is played by the runner with the crypto primitives (not a Handshake): a
# KeyExchange of the other role on ``peer.words`` and ``peer.code_id``, finished with
# the machine's own send_public_key, seals every ``seal``/``seal_text`` input and
# opens every offer/answer the machine sends.  So SPAKE2 and the nonces stay random,
# and what is compared is the events and the plaintexts, as the scripts write them.
_RCV, _SND, _EVE = "RCV-001", "SND-002", "EVE-666"
_ICE = [{"urls": ["stun:192.0.2.1:3478"]}]
_TIMEOUT = 30
_KEY = "spake2-message"  # a send_public_key's key: base64 of a 33-byte SPAKE2 message
_MATCH = "the peer's"  # Done's keys: the peer's, mirrored (send/receive swapped)
_OFFER_SDP, _ANSWER_SDP = "v=0 offer", "v=0 answer"


def _ev(name: str, **fields: Any) -> dict[str, Any]:
    return {"event": name, **fields}


def _peer_key(peer_id: str = _SND) -> dict[str, Any]:
    """The runner's peer's SPAKE2 message, as the server relays it."""
    return _ev("PublicKeyReceived", peer_id=peer_id, key_from_peer=True)


def _sealed(kind: str, peer_id: str, *sdps: str, text: str | None = None) -> dict[str, Any]:
    """A sealed offer or answer, sealed by the runner's peer (``seal``: a JSON value)."""
    if text is not None:
        return _ev("SealedReceived", peer_id=peer_id, kind=kind, seal_text=text)
    message: dict[str, Any] = {"type": kind, "sdp": sdps[0]}
    if len(sdps) > 1:
        message["extra_sdps"] = list(sdps[1:])
    return _ev("SealedReceived", peer_id=peer_id, kind=kind, seal=message)


def _hs(
    at: float, given: dict[str, Any], state: str, deadline: float | None, *actions: Any
) -> dict[str, Any]:
    """One input at time ``at``; what handle()/handle_timer() returns (``actions``,
    each its ``kind`` and the fields that matter), then state and next_deadline()."""
    return {
        "at": at,
        "input": given,
        "actions": list(actions),
        "state": state,
        "deadline": deadline,
    }


def _glue_bug(at: float, given: dict[str, Any]) -> dict[str, Any]:
    """A local event the state does not expect: the glue's bug, which raises."""
    return {"at": at, "input": given, "glue_error": True}


def _c(event: str, best_effort: bool = False, **payload: Any) -> dict[str, Any]:
    return {"kind": "Call", "event": event, "payload": payload, "best_effort": best_effort}


def _fail(error: str, says: str | None = None) -> dict[str, Any]:
    """Fail: the error's class name, and a part of its message when that matters."""
    return {"kind": "Fail", "error": error, **({"says": says} if says else {})}


def _a(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, **fields}


def _seal_shown(kind: str, *sdps: str) -> dict[str, Any]:
    message: dict[str, Any] = {"type": kind, "sdp": sdps[0]}
    if len(sdps) > 1:
        message["extra_sdps"] = list(sdps[1:])
    return message


_T = _TIMEOUT
_TIMER = {"timer": True}
_DONE = (_a("Leave"), _a("Done", keys=_MATCH))
_HANDSHAKES: list[dict[str, Any]] = [
    {
        "name": "receiver waits: code shown, request, keys, sealed offer and answer, channel open",
        "side": "receiver",
        "words": ["tiger-lamp"],
        "peer": {"words": "tiger-lamp", "code_id": _RCV},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_RCV, ice_servers=_ICE),
                "awaiting_request",
                None,
                _a("ShowCode", code=f"{_RCV}-tiger-lamp"),
            ),
            # Before the pairing, a stranger's leaving means nothing.
            _hs(0.5, _ev("PartnerLeft", peer_id=_SND), "awaiting_request", None),
            _hs(
                1,
                _ev("ConnectionRequested", peer_id=_SND),
                "awaiting_key",
                1 + _T,
                _c("accept_connection", peer_id=_SND),
                _c("send_public_key", peer_id=_SND, key=_KEY),
            ),
            _hs(2, _peer_key(), "awaiting_offer", 2 + _T),
            # After it, other peers' messages are dropped.
            _hs(2.5, _sealed("offer", _EVE, "v=0 eve"), "awaiting_offer", 2 + _T),
            _hs(
                3,
                _sealed("offer", _SND, _OFFER_SDP),
                "answering",
                None,
                _a("AnswerOffers", sdps=[_OFFER_SDP], ice_servers=_ICE),
            ),
            _hs(
                4,
                _ev("LocalDescription", sdps=[_ANSWER_SDP]),
                "opening",
                None,
                _c("answer", peer_id=_SND, sealed=_seal_shown("answer", _ANSWER_SDP)),
                _a("OpenChannel"),
            ),
            _hs(5, _ev("ServerLost"), "opening", None),
            _hs(6, _ev("ChannelOpen"), "done", None, *_DONE),
            _hs(7, _ev("PartnerLeft", peer_id=_SND), "done", None),
            _glue_bug(8, _ev("ChannelOpen")),
        ],
    },
    {
        "name": "sender joins a receiver's code: the whole way; the partner leaves first",
        "side": "sender",
        "code": f"{_RCV}-tiger-lamp",
        "peer": {"words": "tiger-lamp", "code_id": _RCV},
        "steps": [
            _glue_bug(0, _ev("ChannelOpen")),
            _hs(
                0,
                _ev("Registered", peer_id=_SND, ice_servers=_ICE),
                "awaiting_accept",
                _T,
                _c("find_peer", peer_id=_RCV),
                _c("send_connection_request", peer_id=_RCV),
                _a("Status", message=f"Connecting to {_RCV}…"),
            ),
            _hs(
                1,
                _ev("ConnectionAccepted", peer_id=_RCV),
                "awaiting_key",
                1 + _T,
                _c("send_public_key", peer_id=_RCV, key=_KEY),
            ),
            _hs(
                2,
                _peer_key(_RCV),
                "creating_offers",
                None,
                _a("CreateOffers", count=1, ice_servers=_ICE),
            ),
            _hs(
                3,
                _ev("LocalDescription", sdps=[_OFFER_SDP]),
                "awaiting_answer",
                3 + _T,
                _c("offer", peer_id=_RCV, sealed=_seal_shown("offer", _OFFER_SDP)),
            ),
            _hs(
                4,
                _sealed("answer", _RCV, _ANSWER_SDP),
                "opening",
                None,
                _a("AcceptAnswers", sdps=[_ANSWER_SDP]),
                _a("OpenChannel"),
            ),
            # The receiver left the server once its side opened: ours has a grace.
            _hs(5, _ev("PartnerLeft", peer_id=_RCV), "partner_left", 5 + 5),
            _hs(6, _ev("PartnerAborted", peer_id=_RCV, reason="cancelled"), "partner_left", 10),
            _hs(7, _ev("ChannelOpen"), "done", None, *_DONE),
        ],
    },
    {
        "name": "sender waits (prints the code), two streams: extra_sdps both ways",
        "side": "sender",
        "streams": 2,
        "words": ["orbit-velvet"],
        "peer": {"words": "orbit-velvet", "code_id": _SND},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_SND),
                "awaiting_request",
                None,
                _a("ShowCode", code=f"{_SND}-orbit-velvet"),
            ),
            _hs(
                1,
                _ev("ConnectionRequested", peer_id=_RCV),
                "awaiting_key",
                1 + _T,
                _c("accept_connection", peer_id=_RCV),
                _c("send_public_key", peer_id=_RCV, key=_KEY),
            ),
            # A second request (someone else typing the code) pairs nothing.
            _hs(1.5, _ev("ConnectionRequested", peer_id=_EVE), "awaiting_key", 1 + _T),
            _hs(
                2,
                _peer_key(_RCV),
                "creating_offers",
                None,
                _a("CreateOffers", count=2, ice_servers=[]),
            ),
            _hs(
                3,
                _ev("LocalDescription", sdps=["v=0 a", "v=0 b"]),
                "awaiting_answer",
                3 + _T,
                _c("offer", peer_id=_RCV, sealed=_seal_shown("offer", "v=0 a", "v=0 b")),
            ),
            _hs(
                4,
                _sealed("answer", _RCV, "v=0 A", "v=0 B"),
                "opening",
                None,
                _a("AcceptAnswers", sdps=["v=0 A", "v=0 B"]),
                _a("OpenChannel"),
            ),
            _hs(5, _ev("ChannelOpen"), "done", None, *_DONE),
        ],
    },
    {
        "name": "receiver joins a sender's code; the key and offer come early and are kept",
        "side": "receiver",
        "code": f"{_SND}-orbit-velvet",
        "peer": {"words": "orbit-velvet", "code_id": _SND},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_RCV),
                "awaiting_accept",
                _T,
                _c("find_peer", peer_id=_SND),
                _c("send_connection_request", peer_id=_SND),
                _a("Status", message=f"Connecting to {_SND}…"),
            ),
            _hs(0.5, _peer_key(_SND), "awaiting_accept", _T),
            _hs(0.6, _peer_key(_EVE), "awaiting_accept", _T),
            # The accept starts the keys, which take the kept key: an offer is awaited.
            _hs(
                1,
                _ev("ConnectionAccepted", peer_id=_SND),
                "awaiting_offer",
                1 + _T,
                _c("send_public_key", peer_id=_SND, key=_KEY),
            ),
            _hs(
                2,
                _sealed("offer", _SND, _OFFER_SDP),
                "answering",
                None,
                _a("AnswerOffers", sdps=[_OFFER_SDP], ice_servers=[]),
            ),
            _hs(
                3,
                _ev("LocalDescription", sdps=[_ANSWER_SDP]),
                "opening",
                None,
                _c("answer", peer_id=_SND, sealed=_seal_shown("answer", _ANSWER_SDP)),
                _a("OpenChannel"),
            ),
            _hs(4, _ev("ChannelOpen"), "done", None, *_DONE),
        ],
    },
    {
        "name": "receiver waits; the sender typed a wrong word: the offer does not open, one guess",
        "side": "receiver",
        "words": ["tiger-lamp"],
        "peer": {"words": "tiger-lamb", "code_id": _RCV},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_RCV),
                "awaiting_request",
                None,
                _a("ShowCode", code=f"{_RCV}-tiger-lamp"),
            ),
            _hs(
                1,
                _ev("ConnectionRequested", peer_id=_SND),
                "awaiting_key",
                1 + _T,
                _c("accept_connection", peer_id=_SND),
                _c("send_public_key", peer_id=_SND, key=_KEY),
            ),
            _hs(2, _peer_key(), "awaiting_offer", 2 + _T),
            _hs(
                3,
                _sealed("offer", _SND, _OFFER_SDP),
                "failed",
                None,
                _c("abort", True, peer_id=_SND, reason="wrong_code"),
                _fail("WrongCodeError"),
            ),
            # The code is spent: nobody gets a second try at it.
            _hs(4, _ev("ConnectionRequested", peer_id=_EVE), "failed", None),
            _hs(5, _sealed("offer", _SND, _OFFER_SDP), "failed", None),
        ],
    },
    {
        "name": "sender joins with a wrong word: its offer does not open, the receiver aborts",
        "side": "sender",
        "code": f"{_RCV}-tiger-lamb",
        "peer": {"words": "tiger-lamp", "code_id": _RCV},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_SND),
                "awaiting_accept",
                _T,
                _c("find_peer", peer_id=_RCV),
                _c("send_connection_request", peer_id=_RCV),
                _a("Status", message=f"Connecting to {_RCV}…"),
            ),
            _hs(
                1,
                _ev("ConnectionAccepted", peer_id=_RCV),
                "awaiting_key",
                1 + _T,
                _c("send_public_key", peer_id=_RCV, key=_KEY),
            ),
            _hs(
                2,
                _peer_key(_RCV),
                "creating_offers",
                None,
                _a("CreateOffers", count=1, ice_servers=[]),
            ),
            _hs(
                3,
                _ev("LocalDescription", sdps=[_OFFER_SDP]),
                "awaiting_answer",
                3 + _T,
                _c("offer", peer_id=_RCV, sealed="does not open"),
            ),
            _hs(
                4,
                _ev("PartnerAborted", peer_id=_RCV, reason="wrong_code"),
                "failed",
                None,
                _fail("WrongCodeError"),
            ),
        ],
    },
    {
        "name": "sender joins; an answer sealed under other keys is a wrong code too",
        "side": "sender",
        "code": f"{_RCV}-tiger-lamp",
        "peer": {"words": "tiger-lamb", "code_id": _RCV},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_SND),
                "awaiting_accept",
                _T,
                _c("find_peer", peer_id=_RCV),
                _c("send_connection_request", peer_id=_RCV),
                _a("Status", message=f"Connecting to {_RCV}…"),
            ),
            _hs(
                1,
                _ev("ConnectionAccepted", peer_id=_RCV),
                "awaiting_key",
                1 + _T,
                _c("send_public_key", peer_id=_RCV, key=_KEY),
            ),
            _hs(
                2,
                _peer_key(_RCV),
                "creating_offers",
                None,
                _a("CreateOffers", count=1, ice_servers=[]),
            ),
            # Kept: an answer before our offer is early.
            _hs(2.5, _sealed("answer", _RCV, _ANSWER_SDP), "creating_offers", None),
            _hs(
                3,
                _ev("LocalDescription", sdps=[_OFFER_SDP]),
                "failed",
                None,
                _c("offer", peer_id=_RCV, sealed="does not open"),
                _c("abort", True, peer_id=_RCV, reason="wrong_code"),
                _fail("WrongCodeError"),
            ),
        ],
    },
    {
        "name": "receiver waits; the sender leaves after its request",
        "side": "receiver",
        "words": ["tiger-lamp"],
        "peer": {"words": "tiger-lamp", "code_id": _RCV},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_RCV),
                "awaiting_request",
                None,
                _a("ShowCode", code=f"{_RCV}-tiger-lamp"),
            ),
            _hs(
                1,
                _ev("ConnectionRequested", peer_id=_SND),
                "awaiting_key",
                1 + _T,
                _c("accept_connection", peer_id=_SND),
                _c("send_public_key", peer_id=_SND, key=_KEY),
            ),
            _hs(1.5, _ev("PartnerLeft", peer_id=_EVE), "awaiting_key", 1 + _T),
            _hs(2, _ev("PartnerLeft", peer_id=_SND), "failed", None, _fail("PeerGoneError")),
        ],
    },
    {
        "name": "sender joins; nobody accepts: the timer at the deadline",
        "side": "sender",
        "code": f"{_RCV}-tiger-lamp",
        "peer": {"words": "tiger-lamp", "code_id": _RCV},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_SND),
                "awaiting_accept",
                _T,
                _c("find_peer", peer_id=_RCV),
                _c("send_connection_request", peer_id=_RCV),
                _a("Status", message=f"Connecting to {_RCV}…"),
            ),
            _hs(_T - 0.5, _TIMER, "awaiting_accept", _T),
            _hs(
                _T,
                _TIMER,
                "failed",
                None,
                _fail("SignalingError", says=f"did not answer within {_T} s"),
            ),
        ],
    },
    {
        "name": "sender joins; no answer to its sealed offer: the timeout says the code is spent",
        "side": "sender",
        "code": f"{_RCV}-tiger-lamp",
        "peer": {"words": "tiger-lamp", "code_id": _RCV},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_SND),
                "awaiting_accept",
                _T,
                _c("find_peer", peer_id=_RCV),
                _c("send_connection_request", peer_id=_RCV),
                _a("Status", message=f"Connecting to {_RCV}…"),
            ),
            _hs(
                1,
                _ev("ConnectionAccepted", peer_id=_RCV),
                "awaiting_key",
                1 + _T,
                _c("send_public_key", peer_id=_RCV, key=_KEY),
            ),
            _hs(
                2,
                _peer_key(_RCV),
                "creating_offers",
                None,
                _a("CreateOffers", count=1, ice_servers=[]),
            ),
            _hs(
                3,
                _ev("LocalDescription", sdps=[_OFFER_SDP]),
                "awaiting_answer",
                3 + _T,
                _c("offer", peer_id=_RCV, sealed=_seal_shown("offer", _OFFER_SDP)),
            ),
            _hs(
                3 + _T,
                _TIMER,
                "failed",
                None,
                _fail("SignalingError", says="this code has had its one try"),
            ),
        ],
    },
    {
        "name": "receiver waits; the partner leaves and the channel stays shut: the grace ends",
        "side": "receiver",
        "words": ["tiger-lamp"],
        "peer": {"words": "tiger-lamp", "code_id": _RCV},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_RCV),
                "awaiting_request",
                None,
                _a("ShowCode", code=f"{_RCV}-tiger-lamp"),
            ),
            _hs(
                1,
                _ev("ConnectionRequested", peer_id=_SND),
                "awaiting_key",
                1 + _T,
                _c("accept_connection", peer_id=_SND),
                _c("send_public_key", peer_id=_SND, key=_KEY),
            ),
            # The offer before the key is kept, and taken once the keys are made.
            _hs(1.5, _sealed("offer", _SND, _OFFER_SDP), "awaiting_key", 1 + _T),
            _hs(
                2,
                _peer_key(),
                "answering",
                None,
                _a("AnswerOffers", sdps=[_OFFER_SDP], ice_servers=[]),
            ),
            _hs(
                3,
                _ev("LocalDescription", sdps=[_ANSWER_SDP]),
                "opening",
                None,
                _c("answer", peer_id=_SND, sealed=_seal_shown("answer", _ANSWER_SDP)),
                _a("OpenChannel"),
            ),
            _hs(4, _ev("PartnerLeft", peer_id=_SND), "partner_left", 9),
            _hs(8.9, _TIMER, "partner_left", 9),
            _hs(9, _TIMER, "failed", None, _fail("PeerGoneError")),
            _hs(10, _ev("Cancelled"), "failed", None),
        ],
    },
    {
        "name": "cancelled while waiting for a request: nobody to tell",
        "side": "receiver",
        "words": ["tiger-lamp"],
        "peer": {"words": "tiger-lamp", "code_id": _RCV},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_RCV),
                "awaiting_request",
                None,
                _a("ShowCode", code=f"{_RCV}-tiger-lamp"),
            ),
            _hs(1, _ev("Cancelled"), "failed", None),
            _hs(2, _ev("ConnectionRequested", peer_id=_SND), "failed", None),
        ],
    },
    {
        "name": "cancelled after the pairing: the partner is told (abort cancelled)",
        "side": "sender",
        "code": f"{_RCV}-tiger-lamp",
        "peer": {"words": "tiger-lamp", "code_id": _RCV},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_SND),
                "awaiting_accept",
                _T,
                _c("find_peer", peer_id=_RCV),
                _c("send_connection_request", peer_id=_RCV),
                _a("Status", message=f"Connecting to {_RCV}…"),
            ),
            _hs(
                1,
                _ev("ConnectionAccepted", peer_id=_RCV),
                "awaiting_key",
                1 + _T,
                _c("send_public_key", peer_id=_RCV, key=_KEY),
            ),
            _hs(
                2,
                _ev("Cancelled"),
                "failed",
                None,
                _c("abort", True, peer_id=_RCV, reason="cancelled"),
            ),
            _hs(3, _TIMER, "failed", None),
        ],
    },
    {
        "name": "the partner cancels, or gives up for a reason we do not know",
        "side": "receiver",
        "code": f"{_SND}-orbit-velvet",
        "peer": {"words": "orbit-velvet", "code_id": _SND},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_RCV),
                "awaiting_accept",
                _T,
                _c("find_peer", peer_id=_SND),
                _c("send_connection_request", peer_id=_SND),
                _a("Status", message=f"Connecting to {_SND}…"),
            ),
            _hs(1, _ev("PartnerAborted", peer_id=_EVE, reason="cancelled"), "awaiting_accept", _T),
            _hs(
                2,
                _ev("PartnerAborted", peer_id=_SND, reason="cancelled"),
                "failed",
                None,
                _fail("CancelledByPeerError"),
            ),
        ],
    },
    {
        "name": "the partner gives up for another reason",
        "side": "sender",
        "code": f"{_RCV}-tiger-lamp",
        "peer": {"words": "tiger-lamp", "code_id": _RCV},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_SND),
                "awaiting_accept",
                _T,
                _c("find_peer", peer_id=_RCV),
                _c("send_connection_request", peer_id=_RCV),
                _a("Status", message=f"Connecting to {_RCV}…"),
            ),
            _hs(
                1,
                _ev("PartnerAborted", peer_id=_RCV, reason=None),
                "failed",
                None,
                _fail("PeerGoneError"),
            ),
        ],
    },
    {
        "name": "receiver waits; the server goes away: a new code; lost again after the pairing",
        "side": "receiver",
        "words": ["tiger-lamp", "orbit-velvet"],
        "peer": {"words": "orbit-velvet", "code_id": "RCV-009"},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_RCV),
                "awaiting_request",
                None,
                _a("ShowCode", code=f"{_RCV}-tiger-lamp"),
            ),
            _hs(
                1,
                _ev("ServerLost"),
                "reconnecting",
                None,
                _a("Status", message="Lost the signaling server; reconnecting…"),
                _a("Reconnect"),
            ),
            _glue_bug(1.5, _ev("LocalDescription", sdps=[_ANSWER_SDP])),
            _hs(
                2,
                _ev("Registered", peer_id="RCV-009", ice_servers=_ICE),
                "awaiting_request",
                None,
                _a("Status", message="Reconnected. The old code no longer works; use this one:"),
                _a("ShowCode", code="RCV-009-orbit-velvet"),
            ),
            _hs(
                3,
                _ev("ConnectionRequested", peer_id=_SND),
                "awaiting_key",
                3 + _T,
                _c("accept_connection", peer_id=_SND),
                _c("send_public_key", peer_id=_SND, key=_KEY),
            ),
            _hs(4, _ev("ServerLost"), "failed", None, _fail("ServerLostError")),
        ],
    },
    {
        "name": "a request without a peer ID",
        "side": "receiver",
        "words": ["tiger-lamp"],
        "peer": {"words": "tiger-lamp", "code_id": _RCV},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_RCV),
                "awaiting_request",
                None,
                _a("ShowCode", code=f"{_RCV}-tiger-lamp"),
            ),
            _hs(
                1,
                _ev("ConnectionRequested", peer_id=None),
                "failed",
                None,
                _fail("SignalingError", says="without peer_id"),
            ),
        ],
    },
    {
        "name": "a key that is not base64",
        "side": "receiver",
        "words": ["tiger-lamp"],
        "peer": {"words": "tiger-lamp", "code_id": _RCV},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_RCV),
                "awaiting_request",
                None,
                _a("ShowCode", code=f"{_RCV}-tiger-lamp"),
            ),
            _hs(
                1,
                _ev("ConnectionRequested", peer_id=_SND),
                "awaiting_key",
                1 + _T,
                _c("accept_connection", peer_id=_SND),
                _c("send_public_key", peer_id=_SND, key=_KEY),
            ),
            _hs(
                2,
                _ev("PublicKeyReceived", peer_id=_SND, key="not base64!"),
                "failed",
                None,
                _fail("SignalingError", says="malformed key"),
            ),
        ],
    },
    {
        "name": "an offer that opens but is not a session description",
        "side": "receiver",
        "words": ["tiger-lamp"],
        "peer": {"words": "tiger-lamp", "code_id": _RCV},
        "steps": [
            _hs(
                0,
                _ev("Registered", peer_id=_RCV),
                "awaiting_request",
                None,
                _a("ShowCode", code=f"{_RCV}-tiger-lamp"),
            ),
            _hs(
                1,
                _ev("ConnectionRequested", peer_id=_SND),
                "awaiting_key",
                1 + _T,
                _c("accept_connection", peer_id=_SND),
                _c("send_public_key", peer_id=_SND, key=_KEY),
            ),
            _hs(2, _peer_key(), "awaiting_offer", 2 + _T),
            _hs(
                3,
                _sealed("offer", _SND, text='{"type":"answer","sdp":"v=0"}'),
                "failed",
                None,
                _fail("SignalingError", says="malformed offer"),
            ),
        ],
    },
]


def _handshakes() -> dict[str, object]:
    return {
        "comment": (
            "Each script drives one side's set-up machine (sfs/peer/proto/handshake.py, "
            "src/handshake.js), connect_timeout as given, step by step; the other side is "
            "the runner's own KeyExchange (peer.words, peer.code_id): it seals each seal "
            "or seal_text input and opens each offer or answer the machine sends"
        ),
        "connect_timeout": _TIMEOUT,
        "partner_gone_grace_seconds": handshake.PARTNER_GONE_GRACE_SECONDS,
        "scripts": _HANDSHAKES,
    }


# -- names and text shown (sfs/web/src/transfer.js safeName, formatSize; text.js) ----------

_OFFERED_NAMES = [
    "report.pdf",
    "../../etc/passwd",
    "C:\\Windows\\system32\\evil.exe",
    "..",
    ".bashrc",
    " . hidden . ",
    "",
    "/",
    "\x00\x1b[2Jclear",
    "exe\u202efdp.txt",
    "zero\u200bwidth",
    "line\u2028sep",
    'a<b>c:d"e|f?g*h.txt',
    "CON",
    "nul.txt",
    "com1.tar.gz",
    "COM\u00b9",
    "conin$",
    "console.txt",
    "e\u0301te\u0301.txt",  # NFD: becomes NFC
    "résumé ✓ 日本.txt",
    "😀" * 80 + ".jpeg",
    "a" * 300,
    "a" * 300 + ".verylongextension1234",
    "b" * 250 + ".txt",
    "é" * 200 + ".txt",
    "trailing dots...",
    "\u3000wide space\u3000",
]
#: Names inside an offered folder: a leading dot is kept, unless it is sfs's own form.
_IN_FOLDER_NAMES = [
    ".gitignore",
    ".config.json",
    "...",
    ". .",
    ".x.sfs-part",
    ".X.SFS-INFO",
    ".sfs-staging-abc",
    ".hidden.",
    "." + "h" * 300,
    "." + "h" * 300 + ".txt",
    "Straße.txt",
]
#: (wanted, names taken (casefolded), a folder?) for free_name.
_FREE_NAMES = [
    ("a.txt", [], False),
    ("a.txt", ["a.txt"], False),
    ("a.txt", ["a.txt", "a (1).txt"], False),
    ("A.TXT", ["a.txt"], False),
    ("a.txt", [".a.txt.sfs-part"], False),
    (".gitignore", [".gitignore"], False),
    ("archive.tar.gz", ["archive.tar.gz"], False),
    ("photos.2024", ["photos.2024"], True),
    ("x." + "e" * 20, ["x." + "e" * 20], False),
    ("b" * 250 + ".txt", ["b" * 250 + ".txt"], False),
    ("strasse", ["strasse"], False),
]
#: Offered trees: [[parts, is a folder], ...] in offer order (folders first, as the
#: offer lists them), for plan_tree.
_TREES: list[list[tuple[list[str], bool]]] = [
    [(["holiday"], True), (["holiday", "day 2"], True), (["holiday", "a.jpg"], False),
     (["holiday", "day 2", "b.jpg"], False)],
    [(["t"], True), (["t", "x.txt"], False), (["t", "X.TXT"], False), (["t", "x.txt"], False)],
    [(["t"], True), (["t", ".gitignore"], False), (["t", ".x.sfs-part"], False)],
    [(["..", "x"], False)],
    [(["t", ".."], True)],
    [(["t", ""], False)],
    [(["t", "a/b"], False)],
    [(["t", "a\\b"], False)],
    [(["t", "a\x00"], False)],
    [([], False)],
    [(["d"] * 65, False)],
    [(["t", "f"], False), (["t", "f", "g"], False)],
    [(["t", "f"], True), (["t", "f"], False)],
    [(["t", "f"], False), (["t", "F"], True)],
    [(["a:b", "c<d>"], True), (["a:b", "c<d>", "CON"], False)],
    [([" .top", "in"], False)],
    [(["t", "Straße.txt"], False), (["t", "STRASSE.TXT"], False)],
]  # fmt: skip

_SIZES = [0, 1, 999, 1000, 1001, 1250, 1350, 1750, 2250, 1_234_567, 999_999_999, 10**12, 5 * 10**15]
_SHOWN = ["plain", "esc\x1b[31mred", "bidi\u202eexe.pdf", "tab\tnew\nline", "😀 ok", "x" * 50]


def _names() -> dict[str, object]:
    def reduced(name: str) -> str | None:
        try:
            return safe_name(name)
        except RemoteProtocolError:
            return None

    def reduced_in_folder(name: str) -> str | None:
        try:
            return safe_name(name, in_folder=True)
        except RemoteProtocolError:
            return None

    def planned(entries: list[tuple[list[str], bool]]) -> list[list[str]] | None:
        try:
            return [list(parts) for parts in plan_tree(entries)]
        except RemoteProtocolError:
            return None

    return {
        "safe_names": [[name, reduced(name)] for name in _OFFERED_NAMES],
        "in_folder_names": [
            [name, reduced_in_folder(name)] for name in _OFFERED_NAMES + _IN_FOLDER_NAMES
        ],
        "free_names": [
            [wanted, sorted(taken), folder, free_name(wanted, set(taken), folder=folder)]
            for wanted, taken, folder in _FREE_NAMES
        ],
        "trees": [[entries, planned(entries)] for entries in _TREES],
        "sizes": [[n, format_size(n)] for n in _SIZES],
        "printable": [[text, printable(text), printable(text, 20)] for text in _SHOWN],
    }


# -- the relay: the direct TCP path's stream protocol (sfs/web/test/tcp.test.mjs) --------------

_DIALER_NONCE = bytes(range(0x10, 0x20))
_LISTENER_NONCE = bytes(range(0x20, 0x30))
_STREAM_FRAMES = [
    (FrameType.OFFER, b'{"v":1,"sender":"alice","chunk_size":65508,"files":[]}'),
    (FrameType.CHUNK, bytes(range(256)) * 5),
    (FrameType.PING, b""),
]


def _reconnect_code(keys: SessionKeys) -> dict[str, str]:
    rendezvous, password = crypto.reconnect_code(keys.reconnect)
    return {"rendezvous": rendezvous, "password": password.decode("ascii")}


def _tcp_keys(keys: SessionKeys) -> dict[str, str]:
    over = keys.over_tcp()
    return {
        "tcp_send": keys.tcp_send.hex(),
        "tcp_receive": keys.tcp_receive.hex(),
        "proof_send": keys.proof_send.hex(),
        "proof_receive": keys.proof_receive.hex(),
        "relay_token": keys.relay_token.hex(),
        "reconnect": keys.reconnect.hex(),
        "over_tcp_frame_send": over.frame_send.hex(),
        "over_tcp_frame_receive": over.frame_receive.hex(),
    }


def _relay(exchange: dict[str, Any], keys_s: SessionKeys, keys_r: SessionKeys) -> dict[str, object]:
    """Keys from a fixed SPAKE2 key, one proof exchange with fixed nonces (the sender
    dials, the receiver listens, as through a relay), and the bytes a listener then
    receives: the proof, CHOSEN, length-prefixed frames under the over_tcp keys."""
    dialer = tcp.Prover(
        dialer=True, own_key=keys_s.proof_send, peer_key=keys_s.proof_receive, nonce=_DIALER_NONCE
    )
    listener = tcp.Prover(
        dialer=False,
        own_key=keys_r.proof_send,
        peer_key=keys_r.proof_receive,
        nonce=_LISTENER_NONCE,
    )
    hello = dialer.hello()
    listener_reply = listener.receive(hello)
    dialer_proof = dialer.receive(listener_reply)
    assert listener.receive(dialer_proof) == b""
    assert dialer.proven
    assert listener.proven
    sealer = FrameSealer(keys_s.over_tcp().frame_send)
    frames = [sealer.seal(frame_type, payload) for frame_type, payload in _STREAM_FRAMES]
    stream = hello + dialer_proof + tcp.CHOSEN
    stream += b"".join(len(frame).to_bytes(4, "big") + frame for frame in frames)
    return {
        "comment": "The page's relay speaks the direct TCP path's bytes; keys from exchanges[0]",
        "pake_key": exchange["sender_pake_key"],
        "transcript": exchange["code_id"].encode().hex(),
        "sender_keys": _tcp_keys(keys_s),
        "receiver_keys": _tcp_keys(keys_r),
        # Where and how this session would meet again after an outage (issue 28).
        "reconnect_code": _reconnect_code(keys_s),
        "proof": {
            "dialer_nonce": _DIALER_NONCE.hex(),
            "listener_nonce": _LISTENER_NONCE.hex(),
            "hello": hello.hex(),
            "listener_reply": listener_reply.hex(),
            "dialer_proof": dialer_proof.hex(),
        },
        "stream": {
            "to_listener": stream.hex(),
            "frames": [
                {"type": int(frame_type), "payload": payload.hex(), "sealed": frame.hex()}
                for (frame_type, payload), frame in zip(_STREAM_FRAMES, frames, strict=True)
            ],
        },
        "chosen": tcp.CHOSEN.hex(),
        "max_frame_bytes": tcp.MAX_FRAME_BYTES,
        "urls": [{"url": url, "ok": handshake.is_relay_url(url)} for url in _RELAY_URLS],
    }


#: A sealed ``relay`` the page must judge as handshake.is_relay_url does.
_RELAY_URLS = [
    "https://sfs.example.org/relay",
    "http://127.0.0.1:5000/relay",
    "http://[fd00::2]:5000/node/2/relay",
    "https://sfs.example.org",
    "ftp://sfs.example.org/relay",
    "https:///relay",
    "https://user:pw@sfs.example.org/relay",
    "https://sfs.example.org/relay?x=1",
    "https://sfs.example.org/relay#x",
    "https://sfs.example.org:99999/relay",
    "https://sfs.example.org/re lay",
    "https://sfs.example.org/\x1b[2J",
    "https://sfs.example.org/\u200bx",
    "https://sfs.example.org/" + "r" * 488,
    "https://sfs.example.org/" + "r" * 489,
    "relay",
    "",
]


# -- constants (sfs/web/test/constants.test.mjs) -----------------------------------------------

#: Integers a JS number cannot hold exactly go out as decimal strings (the page has them as BigInt).
_SAFE_INTEGER = 2**53 - 1


def _number(value: int | float) -> int | float | str:
    return str(value) if isinstance(value, int) and abs(value) > _SAFE_INTEGER else value


def _named(module: types.ModuleType, *names: str) -> dict[str, Any]:
    """Each constant under its Python name, read from the module that owns it (never retyped)."""
    return {name: getattr(module, name) for name in names}


def _constants() -> dict[str, object]:
    """Every constant the page has a copy of, from the Python module that owns it.

    Only what the page itself defines goes here: the JS test checks each entry against
    its constant and fails on an entry it has no constant for, so a constant added here
    is a constant the page must add (or the test must name as not the page's).
    """
    limits = {
        **_named(defaults, "FRAME_OVERHEAD_BYTES", "MAX_MESSAGE_BYTES", "MAX_CHUNK_BYTES"),
        **_named(defaults, "DEFAULT_CHUNK_BYTES", "MAX_TEXT_BYTES", "MAX_SENDER_NAME_CHARS"),
        **_named(defaults, "MAX_STREAMS"),
        **_named(code, "SECRET_WORDS"),
        **_named(wire, "MAX_CONTROL_BYTES", "MAX_JOINED_CONTROL_BYTES", "MAX_FILES", "MAX_ENTRIES"),
        **_named(wire, "MAX_OFFERED_NAME_CHARS", "MAX_REASON_CHARS", "MAX_FILE_BYTES"),
        **_named(wire, "SHA256_BYTES", "MAX_FOLDERS", "MAX_PATH_DEPTH"),
        **_named(crypto, "KEY_BYTES", "NONCE_BYTES", "TAG_BYTES", "MAX_COUNTER"),
        **_named(crypto, "TCP_NONCE_BYTES", "TCP_PROOF_BYTES", "RELAY_TOKEN_BYTES"),
        **_named(tcp, "MAX_FRAME_BYTES"),
        **_named(names, "MAX_NAME_BYTES", "FIRST_COPY_NUMBER"),
        **_named(handshake, "BACKLOG_LIMIT", "MAX_RELAY_URL_CHARS", "RECONNECT_VERSION"),
        **_named(messages, "MAX_ICE_SERVERS", "MAX_ICE_URLS"),
        **_named(webrtc, "DEFAULT_REMOTE_MAX_MESSAGE_BYTES"),
        **_named(partial, "READ_BLOCK_BYTES"),
        **_named(transfer, "MAX_SHOWN_NAME_CHARS"),
    }
    seconds = {
        **_named(conversation, "PING_INTERVAL_SECONDS", "IDLE_TIMEOUT_SECONDS"),
        **_named(defaults, "PEER_CONNECT_TIMEOUT_SECONDS"),
        **_named(client, "SIGNAL_CONNECT_TIMEOUT_SECONDS", "CALL_TIMEOUT_SECONDS"),
        **_named(handshake, "PARTNER_GONE_GRACE_SECONDS"),
        **_named(setup, "RECONNECT_SECONDS", "ABORT_NOTICE_SECONDS"),
        **_named(app, "CLOSE_GRACE_SECONDS"),
        **_named(transfer, "LAST_WORD_GRACE_SECONDS"),
        **_named(sending, "PROGRESS_TICK_SECONDS"),
        **_named(gathering, "GATHER_SECONDS", "RELAY_GRACE_SECONDS"),
        **_named(tcp, "RELAY_HEAD_START_SECONDS"),
    }
    labels = [name for name in dir(crypto) if name.startswith("INFO_")]
    texts = {
        name: value
        for name, value in sorted(vars(reasons).items())
        if name.isupper() and not name.startswith("_") and isinstance(value, str)
    }
    return {
        "comment": "Each constant under its Python name; integers above 2**53 as strings",
        "versions": _named(
            defaults,
            "TRANSFER_PROTOCOL_VERSION",
            "SETUP_PROTOCOL_VERSION",
            "SIGNALING_PROTOCOL_VERSION",
        ),
        "limits": {name: _number(value) for name, value in limits.items()},
        "seconds": seconds,
        # The LAN probe's label and trusted devices' (`sfs pair`) are the command
        # line's alone; the TCP path's and the relay token's are the page's too, which
        # speaks the TCP path through a relay.
        "hkdf_labels": {
            name: getattr(crypto, name).decode("ascii")
            for name in labels
            if name != "INFO_PROBE_PROOF" and not name.startswith("INFO_PAIR")
        },
        "words": {
            **_named(webrtc, "CHANNEL_LABEL"),
            **_named(wire, "CODE_PATTERN"),
            **_named(handshake, "CANCELLED_REASON", "WRONG_CODE_REASON"),
            **_named(client, "SERVER_LOST"),
            **_named(text, "ELLIPSIS"),
            "TCP_MAGIC": crypto.TCP_MAGIC.decode("ascii"),
            "PUSHED_EVENTS": list(client.PUSHED_EVENTS),
        },
        # The module's public strings: the codes (DECLINED = "declined") and the texts
        # named on their own (EXISTS_REASON).
        "codes": {name: text for name, text in texts.items() if not name.endswith("_REASON")},
        "reason_texts": {name: text for name, text in texts.items() if name.endswith("_REASON")},
        "reject_reasons": dict(reasons.REJECT_REASONS),
        "cancel_reasons": dict(reasons.CANCEL_REASONS),
    }


def build_vectors() -> dict[str, object]:
    """Every vector, as plain JSON data."""
    group = ParamsEd25519.group
    exchanges = [_exchange(*case) for case in _EXCHANGES]
    first, keys_s, keys_r = exchanges[0]  # signals and frames use the first exchange's keys
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
        "protocol": _protocol(keys_s, keys_r),
        "conversations": _conversations(keys_s, keys_r),
        "handshakes": _handshakes(),
        "relay": _relay(first, keys_s, keys_r),
        "names": _names(),
        "constants": _constants(),
    }


def render(vectors: dict[str, object]) -> str:
    return json.dumps(vectors, indent=2, ensure_ascii=True) + "\n"


def main() -> None:
    VECTORS_PATH.write_text(render(build_vectors()), encoding="utf-8")
    print(f"wrote {VECTORS_PATH}")


if __name__ == "__main__":
    main()
