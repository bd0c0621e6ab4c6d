"""The sfs transfer protocol, sans I/O.

Wire format (docs/PROTOCOL.md has the full text).  Every DataChannel message is one
frame, sealed by :mod:`sfs.peer.crypto`::

    [12-byte nonce = version(1) | type(1) | 0(2) | counter(8)] [AES-256-GCM ciphertext + tag]

The type lives in the authenticated nonce, so chunk frames carry the raw file bytes
and nothing else.  Control payloads are UTF-8 JSON objects.  Each direction has its
own key and its own counter, starting at 0.

    sender -> receiver              receiver -> sender
    OFFER {v, sender, files, chunk_size}
                                    ACCEPT {held: [offset]}  |  REJECT {reason}
    RESUME {offsets, sha256}  (per file: 0, or the held offset and the SHA-256 of the
                               sender's own first `offset` bytes)
                                    START {offsets}  (only after a RESUME with an offset
                                    above 0: per file, that offset if the receiver's own
                                    partial hashes the same, else 0)
    per file, in order:
      CHUNK <bytes> ...  (exactly `size` bytes in all)
      FILE_DONE <32-byte SHA-256 of the file>
                                    FILE_ACK <empty>  (after the file is verified and in place)
    either side, at any time:  CANCEL {reason}, PING <empty>

States::

    sender:   IDLE -OFFER-> OFFERED -ACCEPT-> ACCEPTED -RESUME-> SENDING
              (or ACCEPTED -RESUME with an offset above 0-> CONFIRMING -START-> SENDING)
              -last FILE_DONE-> AWAITING_ACKS -last FILE_ACK-> DONE
    receiver: IDLE -OFFER-> DECIDING -ACCEPT-> ACCEPTED -RESUME-> RECEIVING
              (or ACCEPTED -RESUME with an offset above 0-> CONFIRMING -START-> RECEIVING)
              -last FILE_DONE-> AWAITING_ACKS -last FILE_ACK-> DONE
    both:     REJECT or CANCEL (sent or received) -> CLOSED

Resume never shows a hash of the receiver's bytes: any sender with the code can make
an offer that matches a kept partial, so the receiver says only how much it holds,
and the sender proves what its own prefix is.  START costs a round trip only when a
file resumes.

The sender reports success only after the last FILE_ACK, so the receiver has checked
the file's SHA-256 and renamed it into place.  DataChannel messages keep their
boundaries, so :meth:`TransferProtocol.receive` takes one whole frame and returns one
event (there is no byte stream to reassemble as in h11).
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass
from typing import Any

from sfs.errors import ProtocolError, RemoteProtocolError
from sfs.peer.crypto import FRAME_OVERHEAD_BYTES, FrameOpener, FrameSealer, SessionKeys

logger = logging.getLogger(__name__)

#: The newest version this side speaks.  An offer is written in the oldest version
#: that can carry it (1 for plain files, 2 for folders and executables), so an older
#: receiver still gets what it can take; an offer from a newer version is refused
#: with a message that says to upgrade.
PROTOCOL_VERSION = 2
#: The largest DataChannel message aiortc and browsers accept (a=max-message-size).
MAX_MESSAGE_BYTES = 262_144
MAX_CHUNK_BYTES = MAX_MESSAGE_BYTES - FRAME_OVERHEAD_BYTES
#: Frames of exactly 64 KiB: measured fastest with aiortc on this project's bench
#: (docs/PERFORMANCE.md); larger messages make aiortc's reassembly slower.
DEFAULT_CHUNK_BYTES = 64 * 1024 - FRAME_OVERHEAD_BYTES
#: The largest control JSON either side accepts. The largest one sfs itself makes is a
#: RESUME with an offset and a SHA-256 for each of MAX_FILES files (about 88 kB; an
#: ACCEPT or START with MAX_FILES offsets is about 20 kB); the rest is room for offers
#: of many files with long names (the sender refuses an offer that does not fit).
MAX_CONTROL_BYTES = 192 * 1024
MAX_FILES = 1000
#: Offered names longer than this are refused outright; shorter ones are later cut
#: down to a safe local name (see transfer.safe_name).
MAX_OFFERED_NAME_CHARS = 4096
MAX_SENDER_NAME_CHARS = 64
MAX_REASON_CHARS = 200
MAX_FILE_BYTES = 2**63 - 1
SHA256_BYTES = 32


class FrameType(enum.IntEnum):
    OFFER = 1
    ACCEPT = 2
    REJECT = 3
    CHUNK = 4
    FILE_DONE = 5
    FILE_ACK = 6
    CANCEL = 7
    RESUME = 8
    PING = 9
    START = 10


class Role(enum.Enum):
    SENDER = "sender"
    RECEIVER = "receiver"


class State(enum.Enum):
    IDLE = "idle"
    OFFERED = "offered"
    DECIDING = "deciding"
    ACCEPTED = "accepted"
    CONFIRMING = "confirming"
    SENDING = "sending"
    RECEIVING = "receiving"
    AWAITING_ACKS = "awaiting_acks"
    DONE = "done"
    CLOSED = "closed"


# -- events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    """:param folder: the folders it is in, inside the transfer (v2), e.g. ``("a", "b")``
    :param executable: the sender's copy is executable (v2)"""

    name: str
    size: int
    mtime_ns: int = 0
    folder: tuple[str, ...] = ()
    executable: bool = False


@dataclass(frozen=True)
class Offer:
    """:param folders: every folder of the transfer, empty ones included (v2)"""

    files: tuple[FileInfo, ...]
    sender: str = ""
    chunk_size: int = DEFAULT_CHUNK_BYTES
    folders: tuple[tuple[str, ...], ...] = ()

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def version(self) -> int:
        """The oldest protocol version that carries this offer."""
        if self.folders or any(f.folder or f.executable for f in self.files):
            return 2
        return 1


@dataclass(frozen=True)
class Accept:
    #: Per offered file (or none at all): how many of its first bytes the receiver
    #: already holds. Never a hash of them.
    held: tuple[int, ...] = ()


@dataclass(frozen=True)
class Resume:
    """Where the sender proposes to start each file: 0, or what the receiver holds.

    ``sha256`` has, per file, the SHA-256 of the sender's own first ``offset`` bytes
    (``b""`` where the offset is 0); it may be empty when every offset is 0.
    """

    offsets: tuple[int, ...]
    sha256: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Start:
    """Where each file really starts: the RESUME offset if the receiver's own partial
    hashes the same, else 0. Sent only after a RESUME with an offset above 0."""

    offsets: tuple[int, ...]


@dataclass(frozen=True)
class Ping:
    """Keepalive: proves the peer is still there while nothing else moves."""


@dataclass(frozen=True)
class Reject:
    reason: str = "declined"


@dataclass(frozen=True)
class Chunk:
    data: bytes | memoryview


@dataclass(frozen=True)
class FileDone:
    sha256: bytes


@dataclass(frozen=True)
class FileAck:
    pass


@dataclass(frozen=True)
class Cancel:
    reason: str = "cancelled"


Event = Offer | Accept | Reject | Resume | Start | Chunk | FileDone | FileAck | Cancel | Ping


# -- payload codecs -----------------------------------------------------------------------


def _encode_json(obj: dict[str, Any]) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a non-UTF-8 file name
        raise ProtocolError("a name or reason to send is not valid Unicode") from exc


def _decode_json(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_CONTROL_BYTES:
        raise RemoteProtocolError(f"control frame too large ({len(payload)} bytes)")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RemoteProtocolError("control frame is not valid JSON") from exc
    if not isinstance(obj, dict):
        raise RemoteProtocolError("control frame is not a JSON object")
    return obj


def _int_field(obj: dict[str, Any], key: str, low: int, high: int) -> int:
    value = obj.get(key)
    # bool is an int subclass: refuse it explicitly.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RemoteProtocolError(f"field {key!r} must be an integer from {low} to {high}")
    return value


def _str_field(obj: dict[str, Any], key: str, max_chars: int, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str) or len(value) > max_chars:
        raise RemoteProtocolError(f"field {key!r} must be a string of at most {max_chars} chars")
    try:
        value.encode("utf-8")  # JSON may carry lone surrogates ("\ud800"): not text
    except UnicodeEncodeError as exc:
        raise RemoteProtocolError(f"field {key!r} is not valid Unicode") from exc
    return value


def _int_list(obj: dict[str, Any], key: str, default: list[int] | None = None) -> tuple[int, ...]:
    value = obj.get(key, default)
    # bool is an int subclass: refuse it explicitly.
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise RemoteProtocolError(f"field {key!r} must be a list of integers")
    return tuple(value)


def _digest_list(obj: dict[str, Any], key: str) -> tuple[bytes, ...]:
    """A list of SHA-256 digests in lowercase hex, ``""`` for none."""
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise RemoteProtocolError(f"field {key!r} must be a list of hex SHA-256 digests")
    digests = []
    for text in value:
        if text == "":
            digests.append(b"")
        elif (
            isinstance(text, str)
            and len(text) == 2 * SHA256_BYTES
            and all(c in "0123456789abcdef" for c in text)
        ):
            digests.append(bytes.fromhex(text))
        else:
            raise RemoteProtocolError(f"field {key!r} must be a list of hex SHA-256 digests")
    return tuple(digests)


def _reason_payload(reason: str) -> bytes:
    """The payload of a REJECT or CANCEL we send; refuse what the peer would refuse."""
    if len(reason) > MAX_REASON_CHARS:
        raise ProtocolError(f"a reason is at most {MAX_REASON_CHARS} characters")
    return _encode_json({"reason": reason})


#: The most folders one offer lists, and the deepest path (components) in it.
MAX_FOLDERS = 10_000
MAX_PATH_DEPTH = 64


def encode_offer(offer: Offer) -> bytes:
    version = offer.version
    files: list[dict[str, Any]] = []
    for f in offer.files:
        entry: dict[str, Any] = {"name": f.name, "size": f.size, "mtime_ns": f.mtime_ns}
        if version >= 2:
            entry["folder"] = list(f.folder)
            entry["x"] = f.executable
        files.append(entry)
    obj: dict[str, Any] = {
        "v": version,
        "sender": offer.sender,
        "chunk_size": offer.chunk_size,
        "files": files,
    }
    if version >= 2:
        obj["folders"] = [list(folder) for folder in offer.folders]
    return _encode_json(obj)


def _path_field(obj: dict[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_PATH_DEPTH:
        raise RemoteProtocolError(f"field {key!r} must be a list of at most {MAX_PATH_DEPTH} names")
    return tuple(_str_field({"part": part}, "part", MAX_OFFERED_NAME_CHARS) for part in value)


def decode_offer(payload: bytes) -> Offer:
    obj = _decode_json(payload)
    version = obj.get("v")
    if isinstance(version, int) and not isinstance(version, bool) and version > PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"the other side runs a newer sfs (protocol {version}; this one speaks up to "
            f"{PROTOCOL_VERSION}): upgrade sfs here to receive from it"
        )
    if version not in (1, 2):
        raise RemoteProtocolError(f"the other side speaks sfs protocol {version!r}, not 1 or 2")
    files_obj = obj.get("files")
    if not isinstance(files_obj, list) or not 1 <= len(files_obj) <= MAX_FILES:
        raise RemoteProtocolError(f"an offer lists 1 to {MAX_FILES} files")
    files = []
    for entry in files_obj:
        if not isinstance(entry, dict):
            raise RemoteProtocolError("a file entry is not a JSON object")
        executable = entry.get("x", False) if version >= 2 else False
        if not isinstance(executable, bool):
            raise RemoteProtocolError("field 'x' must be true or false")
        files.append(
            FileInfo(
                name=_str_field(entry, "name", MAX_OFFERED_NAME_CHARS),
                size=_int_field(entry, "size", 0, MAX_FILE_BYTES),
                mtime_ns=_int_field(entry, "mtime_ns", -(2**63), 2**63 - 1),
                folder=_path_field(entry, "folder") if version >= 2 else (),
                executable=executable,
            )
        )
    folders: tuple[tuple[str, ...], ...] = ()
    if version >= 2:
        folders_obj = obj.get("folders", [])
        if not isinstance(folders_obj, list) or len(folders_obj) > MAX_FOLDERS:
            raise RemoteProtocolError(f"an offer lists at most {MAX_FOLDERS} folders")
        folders = tuple(_path_field({"folder": f}, "folder") for f in folders_obj)
        if any(not folder for folder in folders):
            raise RemoteProtocolError("an offered folder has no name")
    return Offer(
        files=tuple(files),
        sender=_str_field(obj, "sender", MAX_SENDER_NAME_CHARS, ""),
        chunk_size=_int_field(obj, "chunk_size", 1, MAX_CHUNK_BYTES),
        folders=folders,
    )


# -- the state machine ----------------------------------------------------------------------


class TransferProtocol:
    """One side of a transfer: turns events into sealed frames and frames into events.

    :param role: which side this is.
    :param keys: the session keys from the key exchange.
    :param max_frame_bytes: the largest frame this side accepts (its advertised
        max-message-size).
    """

    def __init__(
        self, role: Role, keys: SessionKeys, *, max_frame_bytes: int = MAX_MESSAGE_BYTES
    ) -> None:
        self.role = role
        self.state = State.IDLE
        self.offer: Offer | None = None
        self._sealer = FrameSealer(keys.frame_send)
        self._opener = FrameOpener(keys.frame_receive)
        self._max_frame_bytes = max_frame_bytes
        self._file_index = 0  # the file whose bytes are moving now
        self._file_remaining = 0
        self._acked = 0  # files the receiver has acknowledged
        self._held: tuple[int, ...] = ()  # what the receiver said it holds (ACCEPT)
        self._offsets: tuple[int, ...] = ()  # proposed by RESUME, then fixed by START

    # -- public API --

    @property
    def file_index(self) -> int:
        return self._file_index

    def send(self, event: Event) -> bytes:
        """Return the sealed frame for ``event``; :class:`ProtocolError` if not allowed now."""
        if isinstance(event, Chunk):  # the hot path first
            return self._send_chunk(event.data)
        if isinstance(event, Ping):
            self._require(self.state is not State.CLOSED, event)
            return self._seal(FrameType.PING, b"")
        if isinstance(event, Cancel):
            self._require(self.state is not State.CLOSED, event)
            payload = _reason_payload(event.reason)
            self._set_state(State.CLOSED)
            return self._seal(FrameType.CANCEL, payload)
        if self.role is Role.SENDER:
            return self._sender_send(event)
        return self._receiver_send(event)

    def receive(self, frame: bytes) -> Event:
        """Open one frame from the peer and return its event.

        :raises CryptoError: the frame is forged, damaged, reordered or replayed.
        :raises RemoteProtocolError: the frame is well sealed but not allowed here.
        """
        if self.state is State.CLOSED:
            raise RemoteProtocolError("frame received after the transfer was closed")
        if len(frame) > self._max_frame_bytes:
            raise RemoteProtocolError(
                f"frame of {len(frame)} bytes exceeds the limit of {self._max_frame_bytes}"
            )
        frame_type, payload = self._opener.open(frame)
        try:
            kind = FrameType(frame_type)
        except ValueError:
            raise RemoteProtocolError(f"unknown frame type {frame_type}") from None
        if kind is FrameType.CANCEL:
            reason = _str_field(_decode_json(payload), "reason", MAX_REASON_CHARS, "cancelled")
            self._set_state(State.CLOSED)
            return Cancel(reason)
        if kind is FrameType.PING:
            if payload:
                raise RemoteProtocolError("PING carries nothing")
            return Ping()
        if self.role is Role.SENDER:
            return self._sender_receive(kind, payload)
        return self._receiver_receive(kind, payload)

    # -- sender side --

    def _sender_send(self, event: Event) -> bytes:
        if isinstance(event, Offer):
            self._require(self.state is State.IDLE, event)
            if not 1 <= len(event.files) <= MAX_FILES:
                raise ProtocolError(f"an offer lists 1 to {MAX_FILES} files")
            if not 1 <= event.chunk_size <= MAX_CHUNK_BYTES:
                raise ProtocolError(f"chunk size must be 1 to {MAX_CHUNK_BYTES} bytes")
            payload = encode_offer(event)
            try:  # the receiver's own check: fail here, not after the peer refuses
                decode_offer(payload)
            except RemoteProtocolError as exc:
                raise ProtocolError(f"the receiver would refuse this offer: {exc}") from exc
            self.offer = event
            self._set_state(State.OFFERED)
            return self._seal(FrameType.OFFER, payload)
        if isinstance(event, Resume):
            self._require(self.state is State.ACCEPTED, event)
            self._check_resume(event, ProtocolError)
            obj: dict[str, Any] = {"offsets": list(event.offsets)}
            if event.sha256:
                obj["sha256"] = [digest.hex() for digest in event.sha256]
            frame = self._seal(FrameType.RESUME, _encode_json(obj))
            self._resumed(event.offsets)
            return frame
        if isinstance(event, FileDone):
            self._require(self.state is State.SENDING and self._file_remaining == 0, event)
            if len(event.sha256) != SHA256_BYTES:
                raise ProtocolError("FILE_DONE carries a 32-byte SHA-256")
            frame = self._seal(FrameType.FILE_DONE, event.sha256)
            self._next_file()
            return frame
        raise ProtocolError(f"a sender cannot send {type(event).__name__}")

    def _send_chunk(self, data: bytes | memoryview) -> bytes:
        if self.role is not Role.SENDER or self.state is not State.SENDING:
            raise ProtocolError(f"cannot send a chunk in state {self.state.value}")
        assert self.offer is not None
        if not 0 < len(data) <= min(self._file_remaining, self.offer.chunk_size):
            raise ProtocolError(
                f"chunk of {len(data)} bytes does not fit ({self._file_remaining} bytes left, "
                f"chunk size {self.offer.chunk_size})"
            )
        self._file_remaining -= len(data)
        return self._sealer.seal(FrameType.CHUNK, data)

    def _sender_receive(self, kind: FrameType, payload: bytes) -> Event:
        if kind is FrameType.ACCEPT and self.state is State.OFFERED:
            # No "held" at all: a receiver that resumes nothing.
            held = _int_list(_decode_json(payload), "held", [])
            self._check_held(held, RemoteProtocolError)
            self._held = held
            self._set_state(State.ACCEPTED)
            return Accept(held)
        if kind is FrameType.START and self.state is State.CONFIRMING:
            offsets = _int_list(_decode_json(payload), "offsets")
            self._check_start(offsets, RemoteProtocolError)
            self._start(offsets)
            return Start(offsets)
        if kind is FrameType.REJECT and self.state is State.OFFERED:
            reason = _str_field(_decode_json(payload), "reason", MAX_REASON_CHARS, "declined")
            self._set_state(State.CLOSED)
            return Reject(reason)
        if kind is FrameType.FILE_ACK and self.state in (State.SENDING, State.AWAITING_ACKS):
            if payload or self._acked >= self._file_index:
                raise RemoteProtocolError("acknowledgement for a file that was not sent")
            self._acked += 1
            assert self.offer is not None
            if self._acked == len(self.offer.files):
                self._set_state(State.DONE)
            return FileAck()
        raise RemoteProtocolError(f"unexpected {kind.name} frame in state {self.state.value}")

    # -- receiver side --

    def _receiver_send(self, event: Event) -> bytes:
        if isinstance(event, Accept):
            self._require(self.state is State.DECIDING, event)
            self._check_held(event.held, ProtocolError)
            frame = self._seal(FrameType.ACCEPT, _encode_json({"held": list(event.held)}))
            self._held = event.held
            self._set_state(State.ACCEPTED)
            return frame
        if isinstance(event, Start):
            self._require(self.state is State.CONFIRMING, event)
            self._check_start(event.offsets, ProtocolError)
            frame = self._seal(FrameType.START, _encode_json({"offsets": list(event.offsets)}))
            self._start(event.offsets)
            return frame
        if isinstance(event, Reject):
            self._require(self.state is State.DECIDING, event)
            payload = _reason_payload(event.reason)
            self._set_state(State.CLOSED)
            return self._seal(FrameType.REJECT, payload)
        if isinstance(event, FileAck):
            self._require(
                self.state in (State.RECEIVING, State.AWAITING_ACKS)
                and self._acked < self._file_index,
                event,
            )
            self._acked += 1
            assert self.offer is not None
            if self._acked == len(self.offer.files):
                self._set_state(State.DONE)
            return self._seal(FrameType.FILE_ACK, b"")
        raise ProtocolError(f"a receiver cannot send {type(event).__name__}")

    def _receiver_receive(self, kind: FrameType, payload: bytes) -> Event:
        if kind is FrameType.CHUNK and self.state is State.RECEIVING:
            assert self.offer is not None
            if not payload:
                raise RemoteProtocolError("empty chunk")
            if len(payload) > self._file_remaining:
                raise RemoteProtocolError("the sender sent more bytes than it declared")
            if len(payload) > self.offer.chunk_size:
                raise RemoteProtocolError("chunk larger than the announced chunk size")
            self._file_remaining -= len(payload)
            return Chunk(payload)
        if kind is FrameType.FILE_DONE and self.state is State.RECEIVING:
            if self._file_remaining:
                raise RemoteProtocolError(
                    f"file ended {self._file_remaining} bytes short of its declared size"
                )
            if len(payload) != SHA256_BYTES:
                raise RemoteProtocolError("FILE_DONE must carry a 32-byte SHA-256")
            self._next_file()
            return FileDone(payload)
        if kind is FrameType.OFFER and self.state is State.IDLE:
            self.offer = decode_offer(payload)
            self._set_state(State.DECIDING)
            return self.offer
        if kind is FrameType.RESUME and self.state is State.ACCEPTED:
            obj = _decode_json(payload)
            resume = Resume(_int_list(obj, "offsets"), _digest_list(obj, "sha256"))
            self._check_resume(resume, RemoteProtocolError)
            self._resumed(resume.offsets)
            return resume
        raise RemoteProtocolError(f"unexpected {kind.name} frame in state {self.state.value}")

    # -- helpers --

    def _check_held(self, held: tuple[int, ...], error: type[ProtocolError]) -> None:
        assert self.offer is not None
        if held and len(held) != len(self.offer.files):
            raise error("one held offset per offered file, or none")
        for offset, info in zip(held, self.offer.files, strict=False):
            # type() rather than isinstance(): a bool would go out as JSON true/false.
            if type(offset) is not int or not 0 <= offset <= info.size:
                raise error("a held offset must be from 0 to the file's size")

    def _check_resume(self, resume: Resume, error: type[ProtocolError]) -> None:
        """Each file starts at 0, or where the receiver holds data, with a SHA-256."""
        assert self.offer is not None
        offsets = resume.offsets
        if len(offsets) != len(self.offer.files):
            raise error("one resume offset per offered file")
        for i, offset in enumerate(offsets):
            held = self._held[i] if self._held else 0
            if type(offset) is not int or offset not in (0, held):
                raise error(f"resume offset {offset} for file {i} is not what the receiver holds")
        if not resume.sha256 and not any(offsets):
            return
        if len(resume.sha256) != len(offsets) or any(
            len(digest) != (SHA256_BYTES if offset else 0)
            for offset, digest in zip(offsets, resume.sha256, strict=True)
        ):
            raise error("RESUME carries a SHA-256 for each offset above 0, and none for 0")

    def _check_start(self, offsets: tuple[int, ...], error: type[ProtocolError]) -> None:
        if len(offsets) != len(self._offsets):
            raise error("one start offset per offered file")
        for i, (offset, proposed) in enumerate(zip(offsets, self._offsets, strict=True)):
            if type(offset) is not int or offset not in (0, proposed):
                raise error(f"start offset {offset} for file {i} was not proposed")

    def _resumed(self, offsets: tuple[int, ...]) -> None:
        """After RESUME: start now, or first hear (or say) whether the prefixes match."""
        if any(offsets):
            self._offsets = offsets
            self._set_state(State.CONFIRMING)
        else:
            self._start(offsets)

    def _start(self, offsets: tuple[int, ...]) -> None:
        self._offsets = offsets
        self._file_index = -1
        self._next_file()

    def _next_file(self) -> None:
        assert self.offer is not None
        self._file_index += 1
        if self._file_index < len(self.offer.files):
            size = self.offer.files[self._file_index].size
            self._file_remaining = size - self._offsets[self._file_index]
            self._set_state(State.SENDING if self.role is Role.SENDER else State.RECEIVING)
        else:
            self._file_remaining = 0
            self._set_state(State.AWAITING_ACKS)

    def _seal(self, kind: FrameType, payload: bytes) -> bytes:
        return self._sealer.seal(kind, payload)

    def _require(self, allowed: bool, event: Event) -> None:
        if not allowed:
            raise ProtocolError(f"cannot send {type(event).__name__} in state {self.state.value}")

    def _set_state(self, new: State) -> None:
        if new is not self.state:
            logger.debug("%s: %s -> %s", self.role.value, self.state.value, new.value)
            self.state = new
