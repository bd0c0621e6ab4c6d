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

Version 3 (text, pipes, trees of up to 100 000 entries, compression) keeps that
conversation and changes three things: OFFER carries only a header and the files
follow in one LISTING; a control payload too large for one frame travels as MORE
frames (its leading pieces) and then its own frame (the last piece); and ACCEPT,
RESUME and START list only the files whose offset is above 0.  ZCHUNK, a CHUNK
compressed with zstd, may be sent in any version once the receiver's ACCEPT said
``"zstd": true`` (older senders ignore the key).

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
import functools
import json
import logging
import struct
from dataclasses import dataclass
from typing import Any

import zstandard

# Defined in sfs.defaults, where the command line reads them without importing this.
from sfs.defaults import DEFAULT_CHUNK_BYTES as DEFAULT_CHUNK_BYTES
from sfs.defaults import MAX_CHUNK_BYTES as MAX_CHUNK_BYTES
from sfs.defaults import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from sfs.defaults import MAX_SENDER_NAME_CHARS as MAX_SENDER_NAME_CHARS
from sfs.defaults import MAX_TEXT_BYTES as MAX_TEXT_BYTES
from sfs.defaults import TRANSFER_PROTOCOL_VERSION
from sfs.errors import ProtocolError, RemoteProtocolError, UpgradeError
from sfs.peer.crypto import FrameOpener, FrameSealer, SessionKeys

logger = logging.getLogger(__name__)

#: The newest version this side speaks.  An offer is written in the oldest version
#: that can carry it (1 for plain files, 2 for folders and executables, 3 for text,
#: a pipe, or more than fits in one frame), so an older receiver still gets what it
#: can take; an offer from a newer version is refused with a message that says to
#: upgrade.
PROTOCOL_VERSION = TRANSFER_PROTOCOL_VERSION
#: The largest control JSON either side accepts. The largest one sfs itself makes is a
#: RESUME with an offset and a SHA-256 for each of MAX_FILES files (about 88 kB; an
#: ACCEPT or START with MAX_FILES offsets is about 20 kB); the rest is room for offers
#: of many files with long names (the sender refuses an offer that does not fit).
MAX_CONTROL_BYTES = 192 * 1024
#: Version 3: the most a control payload joined from MORE pieces may hold (a listing
#: of MAX_ENTRIES entries with long names, or a RESUME with a SHA-256 for each file).
MAX_JOINED_CONTROL_BYTES = 32 * 1024 * 1024
#: Files in one offer of version 1 or 2.
MAX_FILES = 1000
#: Files and folders in one offer of version 3 (sfs.peer.tree walks no more).
MAX_ENTRIES = 100_000
#: Offered names longer than this are refused outright; shorter ones are later cut
#: down to a safe local name (see names.safe_name).
MAX_OFFERED_NAME_CHARS = 4096
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
    MORE = 11
    LISTING = 12
    ZCHUNK = 13


#: A version 3 FILE_ACK for more than one file: how many, 4 bytes big endian.
_ACK_COUNT = struct.Struct(">I")
#: Frames that are not control payloads: they never end a run of MORE pieces.
_DATA_FRAMES = frozenset({FrameType.CHUNK, FrameType.ZCHUNK, FrameType.PING, FrameType.MORE})


class Role(enum.Enum):
    SENDER = "sender"
    RECEIVER = "receiver"


class State(enum.Enum):
    IDLE = "idle"
    OFFERED = "offered"
    LISTING = "listing"  # receiver, version 3: the header is in, the files are due
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
    :param executable: the sender's copy is executable (v2)
    :param stream: a pipe of unknown size (v3): ``size`` is 0 and means nothing"""

    name: str
    size: int
    mtime_ns: int = 0
    folder: tuple[str, ...] = ()
    executable: bool = False
    stream: bool = False


@dataclass(frozen=True)
class Offer:
    """:param folders: every folder of the transfer, empty ones included (v2)
    :param text: one text message to show, not a file to save (v3)"""

    files: tuple[FileInfo, ...]
    sender: str = ""
    chunk_size: int = DEFAULT_CHUNK_BYTES
    folders: tuple[tuple[str, ...], ...] = ()
    text: bool = False
    #: The sender can continue an interrupted transfer of these files (``"resumes":
    #: false`` says it cannot: the web page; absent, it can).
    resumes: bool = True

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def stream(self) -> bool:
        return any(f.stream for f in self.files)

    @functools.cached_property
    def version(self) -> int:
        """The oldest protocol version that carries this offer (computed once: for a
        large offer it means encoding it as version 2 to measure it)."""
        if (
            self.text
            or self.stream
            or len(self.files) > MAX_FILES
            or len(self.folders) > MAX_FOLDERS
            or _json_size(_offer_object(self, 2)) > MAX_CONTROL_BYTES
        ):
            return 3
        if self.folders or any(f.folder or f.executable for f in self.files):
            return 2
        return 1


@dataclass(frozen=True)
class Accept:
    #: Per offered file (or none at all): how many of its first bytes the receiver
    #: already holds. Never a hash of them.
    held: tuple[int, ...] = ()
    #: The receiver takes ZCHUNK frames (zstd).
    zstd: bool = False


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
    """File bytes.  To send them compressed, ``data`` is one zstd frame and
    ``plain_size`` the bytes it holds (a ZCHUNK); a received ZCHUNK arrives as the
    plain bytes."""

    data: bytes | memoryview
    plain_size: int | None = None


@dataclass(frozen=True)
class Partial:
    """A piece of a control payload (MORE) came in: nothing for the caller yet."""


@dataclass(frozen=True)
class FileDone:
    sha256: bytes


@dataclass(frozen=True)
class FileAck:
    """The receiver verified and placed the next ``count`` files (more than one in a
    single frame only in version 3)."""

    count: int = 1


@dataclass(frozen=True)
class Cancel:
    reason: str = "cancelled"


Event = (
    Offer | Accept | Reject | Resume | Start | Chunk | FileDone | FileAck | Cancel | Ping | Partial
)


# -- payload codecs -----------------------------------------------------------------------


def _encode_json(obj: dict[str, Any]) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a non-UTF-8 file name
        raise ProtocolError("a name or reason to send is not valid Unicode") from exc


def _json_size(obj: dict[str, Any]) -> int:
    """The bytes ``obj`` takes as JSON (names that are not text are refused later)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8", errors="surrogatepass"))


def _decode_json(payload: bytes, limit: int = MAX_CONTROL_BYTES) -> dict[str, Any]:
    if len(payload) > limit:
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


def _bool_field(obj: dict[str, Any], key: str, *, default: bool = False) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise RemoteProtocolError(f"field {key!r} must be true or false")
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


def _hex_digest(text: object, key: str) -> bytes:
    """One SHA-256 digest in lowercase hex; ``""`` for none."""
    if text == "":
        return b""
    if (
        isinstance(text, str)
        and len(text) == 2 * SHA256_BYTES
        and all(c in "0123456789abcdef" for c in text)
    ):
        return bytes.fromhex(text)
    raise RemoteProtocolError(f"field {key!r} must be a list of hex SHA-256 digests")


def _digest_list(obj: dict[str, Any], key: str) -> tuple[bytes, ...]:
    """A list of SHA-256 digests in lowercase hex, ``""`` for none."""
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise RemoteProtocolError(f"field {key!r} must be a list of hex SHA-256 digests")
    return tuple(_hex_digest(text, key) for text in value)


def _sparse(offsets: tuple[int, ...], digests: tuple[bytes, ...] = ()) -> list[list[Any]]:
    """Version 3's form of per-file offsets: ``[index, offset(, hex)]`` for each file
    whose offset is above 0, in file order."""
    rows: list[list[Any]] = []
    for i, offset in enumerate(offsets):
        if offset:
            rows.append([i, offset, digests[i].hex()] if digests else [i, offset])
    return rows


def _dense(
    obj: dict[str, Any], key: str, count: int, *, digests: bool = False
) -> tuple[tuple[int, ...], tuple[bytes, ...]]:
    """Per-file offsets (and digests) from version 3's sparse rows; files not listed
    are at 0.  Rows name each file at most once, in increasing order."""
    rows = obj.get(key, [])
    if not isinstance(rows, list) or len(rows) > count:
        raise RemoteProtocolError(f"field {key!r} must be a list of [index, offset] rows")
    offsets = [0] * count
    hashes = [b""] * count
    last = -1
    width = 3 if digests else 2
    for row in rows:
        if (
            not isinstance(row, list)
            or len(row) != width
            or not all(type(v) is int for v in row[:2])
            or not last < row[0] < count
            or not 0 < row[1] <= MAX_FILE_BYTES
        ):
            raise RemoteProtocolError(
                f"field {key!r} must list files in order, each once, with an offset above 0"
            )
        last = row[0]
        offsets[row[0]] = row[1]
        if digests:
            hashes[row[0]] = _hex_digest(row[2], key)
            if not hashes[row[0]]:
                raise RemoteProtocolError(f"field {key!r} needs a SHA-256 for each offset")
    return tuple(offsets), (tuple(hashes) if digests and rows else ())


def _reason_payload(reason: str) -> bytes:
    """The payload of a REJECT or CANCEL we send; refuse what the peer would refuse."""
    if len(reason) > MAX_REASON_CHARS:
        raise ProtocolError(f"a reason is at most {MAX_REASON_CHARS} characters")
    return _encode_json({"reason": reason})


#: The most folders an offer of version 2 lists, and the deepest path (components).
MAX_FOLDERS = 10_000
MAX_PATH_DEPTH = 64


def _file_object(info: FileInfo, version: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": info.name,
        "size": None if info.stream else info.size,
        "mtime_ns": info.mtime_ns,
    }
    if version >= 2:
        entry["folder"] = list(info.folder)
        entry["x"] = info.executable
    return entry


def _offer_object(offer: Offer, version: int) -> dict[str, Any]:
    """A whole offer of version 1 or 2, as one JSON object."""
    obj: dict[str, Any] = {
        "v": version,
        "sender": offer.sender,
        "chunk_size": offer.chunk_size,
        "files": [_file_object(f, version) for f in offer.files],
    }
    if version >= 2:
        obj["folders"] = [list(folder) for folder in offer.folders]
    if not offer.resumes:
        obj["resumes"] = False
    return obj


def encode_offer(offer: Offer) -> bytes:
    """The OFFER payload: the whole offer (versions 1 and 2), or its header (3)."""
    version = offer.version
    if version < 3:
        return _encode_json(_offer_object(offer, version))
    header = {"v": 3, "sender": offer.sender, "chunk_size": offer.chunk_size, "text": offer.text}
    if not offer.resumes:
        header["resumes"] = False
    return _encode_json(header)


def encode_listing(offer: Offer) -> bytes:
    """The LISTING payload of a version 3 offer: its files and folders."""
    return _encode_json(
        {
            "files": [_file_object(f, 3) for f in offer.files],
            "folders": [list(folder) for folder in offer.folders],
        }
    )


def _path_field(obj: dict[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_PATH_DEPTH:
        raise RemoteProtocolError(f"field {key!r} must be a list of at most {MAX_PATH_DEPTH} names")
    return tuple(_str_field({"part": part}, "part", MAX_OFFERED_NAME_CHARS) for part in value)


def offer_version(payload: bytes) -> int:
    """The version an OFFER payload is written in; a newer one says to upgrade.

    :raises RemoteProtocolError: not an offer sfs can read.
    """
    obj = _decode_json(payload)
    version = obj.get("v")
    if isinstance(version, int) and not isinstance(version, bool) and version > PROTOCOL_VERSION:
        raise UpgradeError(
            f"the other side runs a newer sfs (protocol {version}; this one speaks up to "
            f"{PROTOCOL_VERSION}): upgrade sfs here to receive from it"
        )
    if version not in (1, 2, 3):
        raise RemoteProtocolError(f"the other side speaks sfs protocol {version!r}, not 1 to 3")
    return int(version)


def _decode_file(entry: object, version: int) -> FileInfo:
    if not isinstance(entry, dict):
        raise RemoteProtocolError("a file entry is not a JSON object")
    stream = version >= 3 and entry.get("size", 0) is None
    return FileInfo(
        name=_str_field(entry, "name", MAX_OFFERED_NAME_CHARS),
        size=0 if stream else _int_field(entry, "size", 0, MAX_FILE_BYTES),
        mtime_ns=_int_field(entry, "mtime_ns", -(2**63), 2**63 - 1),
        folder=_path_field(entry, "folder") if version >= 2 else (),
        executable=_bool_field(entry, "x") if version >= 2 else False,
        stream=stream,
    )


def decode_offer(payload: bytes, listing: bytes | None = None) -> Offer:
    """The offer in an OFFER payload (and, for version 3, its LISTING payload).

    :raises RemoteProtocolError: anything an offer may not be.
    """
    version = offer_version(payload)
    obj = _decode_json(payload)
    if version == 3:
        if listing is None:
            raise RemoteProtocolError("a version 3 offer lists its files in a LISTING")
        body = _decode_json(listing, MAX_JOINED_CONTROL_BYTES)
        max_files, max_folders = MAX_ENTRIES, MAX_ENTRIES
    else:
        body = obj
        max_files, max_folders = MAX_FILES, MAX_FOLDERS
    files_obj = body.get("files")
    if not isinstance(files_obj, list) or not 1 <= len(files_obj) <= max_files:
        raise RemoteProtocolError(f"an offer lists 1 to {max_files} files")
    folders_obj = body.get("folders", []) if version >= 2 else []
    if not isinstance(folders_obj, list) or len(folders_obj) > max_folders:
        raise RemoteProtocolError(f"an offer lists at most {max_folders} folders")
    if len(files_obj) + len(folders_obj) > MAX_ENTRIES:
        raise RemoteProtocolError(f"an offer lists at most {MAX_ENTRIES} files and folders")
    files = tuple(_decode_file(entry, version) for entry in files_obj)
    folders = tuple(_path_field({"folder": f}, "folder") for f in folders_obj)
    if any(not folder for folder in folders):
        raise RemoteProtocolError("an offered folder has no name")
    text = version >= 3 and _bool_field(obj, "text")
    offer = Offer(
        files=files,
        sender=_str_field(obj, "sender", MAX_SENDER_NAME_CHARS, ""),
        chunk_size=_int_field(obj, "chunk_size", 1, MAX_CHUNK_BYTES),
        folders=folders,
        text=text,
        resumes=_bool_field(obj, "resumes", default=True),
    )
    _check_kind(offer, RemoteProtocolError)
    return offer


def _check_kind(offer: Offer, error: type[ProtocolError]) -> None:
    """A text message or a pipe comes alone."""
    if (offer.text or offer.stream) and (len(offer.files) != 1 or offer.folders):
        raise error("a text message or a pipe is offered alone")
    if offer.text and (offer.stream or offer.files[0].size > MAX_TEXT_BYTES):
        raise error(f"a text message is at most {MAX_TEXT_BYTES} bytes (more is a file)")


def decompress_chunk(
    payload: bytes, limit: int, decompressor: zstandard.ZstdDecompressor | None = None
) -> bytes:
    """The bytes of one ZCHUNK: a single zstd frame that states its size, 1 to
    ``limit`` bytes (so a small frame cannot unpack into a huge one).

    :raises RemoteProtocolError: anything else.
    """
    try:
        size = zstandard.frame_content_size(payload)
        if not 0 < size <= limit:
            raise RemoteProtocolError(f"a compressed chunk must hold 1 to {limit} bytes")
        data = (decompressor or zstandard.ZstdDecompressor()).decompress(
            payload, max_output_size=limit
        )
    except zstandard.ZstdError as exc:
        raise RemoteProtocolError("a compressed chunk is not a valid zstd frame") from exc
    if len(data) != size:
        raise RemoteProtocolError("a compressed chunk holds other than it says")
    return data


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
        #: The version of this session: that of the offer, once it is sent or read.
        self.version = 0
        #: ZCHUNK frames are allowed: the receiver said so in its ACCEPT.
        self.zstd = False
        self._sealer = FrameSealer(keys.frame_send)
        self._opener = FrameOpener(keys.frame_receive)
        self._max_frame_bytes = max_frame_bytes
        self._file_index = 0  # the file whose bytes are moving now
        self._file_remaining: int | None = 0  # None: a pipe, whose end FILE_DONE says
        self._acked = 0  # files the receiver has acknowledged
        self._held: tuple[int, ...] = ()  # what the receiver said it holds (ACCEPT)
        self._offsets: tuple[int, ...] = ()  # proposed by RESUME, then fixed by START
        self._header = b""  # a version 3 OFFER payload, until its LISTING comes
        self._pieces = bytearray()  # MORE pieces of the next control payload
        self._unzstd: zstandard.ZstdDecompressor | None = None

    # -- public API --

    @property
    def file_index(self) -> int:
        return self._file_index

    def send(self, event: Event) -> bytes:
        """Return the sealed frame for ``event``; :class:`ProtocolError` if not allowed
        now, or if it takes more than one frame (use :meth:`send_frames`)."""
        if isinstance(event, Chunk):  # the hot path first
            return self._send_chunk(event)
        frames = self.send_frames(event)
        if len(frames) != 1:
            raise ValueError(f"{type(event).__name__} takes {len(frames)} frames: send_frames()")
        return frames[0]

    def send_frames(self, event: Event) -> list[bytes]:
        """Return the sealed frames for ``event``, in order: one, or (version 3) a
        large control payload as MORE pieces and its own frame; a version 3 offer
        is its OFFER and its LISTING.

        :raises ProtocolError: not allowed now.
        """
        if isinstance(event, Chunk):
            return [self._send_chunk(event)]
        if isinstance(event, Ping):
            self._require(self.state is not State.CLOSED, event)
            return [self._seal(FrameType.PING, b"")]
        if isinstance(event, Cancel):
            self._require(self.state is not State.CLOSED, event)
            payload = _reason_payload(event.reason)
            self._set_state(State.CLOSED)
            return self._control(FrameType.CANCEL, payload)
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
        if kind is FrameType.MORE:
            if self.version < 3:
                raise RemoteProtocolError("MORE frame outside a version 3 session")
            if len(self._pieces) + len(payload) > MAX_JOINED_CONTROL_BYTES:
                raise RemoteProtocolError("a control payload in MORE pieces is too large")
            self._pieces += payload
            return Partial()
        if kind is FrameType.PING:  # may come between pieces: the keepalive runs apart
            if payload:
                raise RemoteProtocolError("PING carries nothing")
            return Ping()
        if kind not in _DATA_FRAMES and self._pieces:
            payload = bytes(self._pieces) + payload
            self._pieces.clear()
        elif self._pieces:
            raise RemoteProtocolError(f"{kind.name} frame in the middle of a control payload")
        if kind is FrameType.CANCEL:
            reason = _str_field(self._json(payload), "reason", MAX_REASON_CHARS, "cancelled")
            self._set_state(State.CLOSED)
            return Cancel(reason)
        if self.role is Role.SENDER:
            return self._sender_receive(kind, payload)
        return self._receiver_receive(kind, payload)

    # -- sender side --

    def _sender_send(self, event: Event) -> list[bytes]:
        if isinstance(event, Offer):
            self._require(self.state is State.IDLE, event)
            _check_kind(event, ProtocolError)
            version = event.version
            if not 1 <= len(event.files) <= (MAX_ENTRIES if version >= 3 else MAX_FILES):
                raise ProtocolError(f"an offer lists 1 to {MAX_ENTRIES} files")
            if not 1 <= event.chunk_size <= MAX_CHUNK_BYTES:
                raise ProtocolError(f"chunk size must be 1 to {MAX_CHUNK_BYTES} bytes")
            payload = encode_offer(event)
            listing = encode_listing(event) if version >= 3 else None
            try:  # the receiver's own check: fail here, not after the peer refuses
                decode_offer(payload, listing)
            except RemoteProtocolError as exc:
                raise ProtocolError(f"the receiver would refuse this offer: {exc}") from exc
            self.offer = event
            self.version = version
            frames = [self._seal(FrameType.OFFER, payload)]
            if listing is not None:
                frames += self._control(FrameType.LISTING, listing)
            self._set_state(State.OFFERED)
            return frames
        if isinstance(event, Resume):
            self._require(self.state is State.ACCEPTED, event)
            self._check_resume(event, ProtocolError)
            obj: dict[str, Any]
            if self.version >= 3:
                obj = {"offsets": _sparse(event.offsets, event.sha256)}
            else:
                obj = {"offsets": list(event.offsets)}
                if event.sha256:
                    obj["sha256"] = [digest.hex() for digest in event.sha256]
            frames = self._control(FrameType.RESUME, _encode_json(obj))
            self._resumed(event.offsets)
            return frames
        if isinstance(event, FileDone):
            self._require(self.state is State.SENDING and not self._file_remaining, event)
            if len(event.sha256) != SHA256_BYTES:
                raise ProtocolError("FILE_DONE carries a 32-byte SHA-256")
            frame = self._seal(FrameType.FILE_DONE, event.sha256)
            self._next_file()
            return [frame]
        raise ProtocolError(f"a sender cannot send {type(event).__name__}")

    def _send_chunk(self, chunk: Chunk) -> bytes:
        if self.role is not Role.SENDER or self.state is not State.SENDING:
            raise ProtocolError(f"cannot send a chunk in state {self.state.value}")
        assert self.offer is not None
        size = len(chunk.data) if chunk.plain_size is None else chunk.plain_size
        remaining = self.offer.chunk_size if self._file_remaining is None else self._file_remaining
        if not 0 < size <= min(remaining, self.offer.chunk_size):
            raise ProtocolError(
                f"chunk of {size} bytes does not fit ({remaining} bytes left, "
                f"chunk size {self.offer.chunk_size})"
            )
        if self._file_remaining is not None:
            self._file_remaining -= size
        if chunk.plain_size is None:
            return self._sealer.seal(FrameType.CHUNK, chunk.data)
        if not self.zstd:
            raise ProtocolError("the receiver did not say it takes compressed chunks")
        return self._sealer.seal(FrameType.ZCHUNK, chunk.data)

    def _sender_receive(self, kind: FrameType, payload: bytes) -> Event:
        if kind is FrameType.ACCEPT and self.state is State.OFFERED:
            assert self.offer is not None
            obj = self._json(payload)
            if self.version >= 3:
                held, _ = _dense(obj, "held", len(self.offer.files))
                held = held if any(held) else ()
            else:  # No "held" at all: a receiver that resumes nothing.
                held = _int_list(obj, "held", [])
            self._check_held(held, RemoteProtocolError)
            self._held = held
            self.zstd = _bool_field(obj, "zstd")
            self._set_state(State.ACCEPTED)
            return Accept(held, self.zstd)
        if kind is FrameType.START and self.state is State.CONFIRMING:
            offsets = self._read_offsets(self._json(payload))
            self._check_start(offsets, RemoteProtocolError)
            self._start(offsets)
            return Start(offsets)
        if kind is FrameType.REJECT and self.state is State.OFFERED:
            reason = _str_field(self._json(payload), "reason", MAX_REASON_CHARS, "declined")
            self._set_state(State.CLOSED)
            return Reject(reason)
        if kind is FrameType.FILE_ACK and self.state in (State.SENDING, State.AWAITING_ACKS):
            count = 1
            if self.version >= 3 and len(payload) == _ACK_COUNT.size:
                (count,) = _ACK_COUNT.unpack(payload)
            elif payload:
                raise RemoteProtocolError("FILE_ACK carries nothing, or a count in version 3")
            if not 0 < count <= self._file_index - self._acked:
                raise RemoteProtocolError("acknowledgement for a file that was not sent")
            self._acked += count
            assert self.offer is not None
            if self._acked == len(self.offer.files):
                self._set_state(State.DONE)
            return FileAck(count)
        raise RemoteProtocolError(f"unexpected {kind.name} frame in state {self.state.value}")

    # -- receiver side --

    def _receiver_send(self, event: Event) -> list[bytes]:
        if isinstance(event, Accept):
            self._require(self.state is State.DECIDING, event)
            self._check_held(event.held, ProtocolError)
            obj: dict[str, Any] = {}
            if self.version >= 3:
                obj["held"] = _sparse(event.held)
            else:
                obj["held"] = list(event.held)
            if event.zstd:
                obj["zstd"] = True
            frames = self._control(FrameType.ACCEPT, _encode_json(obj))
            self._held = event.held
            self.zstd = event.zstd
            self._set_state(State.ACCEPTED)
            return frames
        if isinstance(event, Start):
            self._require(self.state is State.CONFIRMING, event)
            self._check_start(event.offsets, ProtocolError)
            offsets = _sparse(event.offsets) if self.version >= 3 else list(event.offsets)
            frames = self._control(FrameType.START, _encode_json({"offsets": offsets}))
            self._start(event.offsets)
            return frames
        if isinstance(event, Reject):
            self._require(self.state is State.DECIDING, event)
            payload = _reason_payload(event.reason)
            self._set_state(State.CLOSED)
            return self._control(FrameType.REJECT, payload)
        if isinstance(event, FileAck):
            self._require(
                self.state in (State.RECEIVING, State.AWAITING_ACKS)
                and 0 < event.count <= self._file_index - self._acked,
                event,
            )
            self._acked += event.count
            assert self.offer is not None
            if self._acked == len(self.offer.files):
                self._set_state(State.DONE)
            if self.version >= 3:  # one frame for a whole batch
                payload = _ACK_COUNT.pack(event.count) if event.count > 1 else b""
                return [self._seal(FrameType.FILE_ACK, payload)]
            return [self._seal(FrameType.FILE_ACK, b"") for _ in range(event.count)]
        raise ProtocolError(f"a receiver cannot send {type(event).__name__}")

    def _receiver_receive(self, kind: FrameType, payload: bytes) -> Event:
        if kind in (FrameType.CHUNK, FrameType.ZCHUNK) and self.state is State.RECEIVING:
            assert self.offer is not None
            if kind is FrameType.ZCHUNK:
                if not self.zstd:
                    raise RemoteProtocolError("a compressed chunk, though none was agreed")
                if self._unzstd is None:  # one context for the session: 7x cheaper
                    self._unzstd = zstandard.ZstdDecompressor()
                payload = decompress_chunk(payload, self.offer.chunk_size, self._unzstd)
            if not payload:
                raise RemoteProtocolError("empty chunk")
            if self._file_remaining is not None and len(payload) > self._file_remaining:
                raise RemoteProtocolError("the sender sent more bytes than it declared")
            if len(payload) > self.offer.chunk_size:
                raise RemoteProtocolError("chunk larger than the announced chunk size")
            if self._file_remaining is not None:
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
            version = offer_version(payload)
            if version >= 3:
                self.version = version
                self._header = payload
                self._set_state(State.LISTING)
                return Partial()
            self.offer = decode_offer(payload)
            self.version = version
            self._set_state(State.DECIDING)
            return self.offer
        if kind is FrameType.LISTING and self.state is State.LISTING:
            self.offer = decode_offer(self._header, payload)
            self._header = b""
            self._set_state(State.DECIDING)
            return self.offer
        if kind is FrameType.RESUME and self.state is State.ACCEPTED:
            assert self.offer is not None
            obj = self._json(payload)
            if self.version >= 3:
                resume = Resume(*_dense(obj, "offsets", len(self.offer.files), digests=True))
            else:
                resume = Resume(_int_list(obj, "offsets"), _digest_list(obj, "sha256"))
            self._check_resume(resume, RemoteProtocolError)
            self._resumed(resume.offsets)
            return resume
        raise RemoteProtocolError(f"unexpected {kind.name} frame in state {self.state.value}")

    # -- helpers --

    def _json(self, payload: bytes) -> dict[str, Any]:
        """A control payload: joined from MORE pieces in version 3, so larger."""
        limit = MAX_JOINED_CONTROL_BYTES if self.version >= 3 else MAX_CONTROL_BYTES
        return _decode_json(payload, limit)

    def _read_offsets(self, obj: dict[str, Any]) -> tuple[int, ...]:
        assert self.offer is not None
        if self.version >= 3:
            return _dense(obj, "offsets", len(self.offer.files))[0]
        return _int_list(obj, "offsets")

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
            info = self.offer.files[self._file_index]
            self._file_remaining = (
                None if info.stream else info.size - self._offsets[self._file_index]
            )
            self._set_state(State.SENDING if self.role is Role.SENDER else State.RECEIVING)
        else:
            self._file_remaining = 0
            self._set_state(State.AWAITING_ACKS)

    def _seal(self, kind: FrameType, payload: bytes) -> bytes:
        return self._sealer.seal(kind, payload)

    def _control(self, kind: FrameType, payload: bytes) -> list[bytes]:
        """One control payload as frames: in version 3, MORE pieces first when it is
        larger than one frame may carry."""
        if len(payload) <= MAX_CONTROL_BYTES:
            return [self._seal(kind, payload)]
        if self.version < 3:
            raise ProtocolError(f"a control frame of {len(payload)} bytes does not fit")
        if len(payload) > MAX_JOINED_CONTROL_BYTES:
            raise ProtocolError(f"a control payload of {len(payload)} bytes is too large")
        cuts = range(0, len(payload), MAX_CONTROL_BYTES)
        frames = [self._seal(FrameType.MORE, payload[i : i + MAX_CONTROL_BYTES]) for i in cuts[:-1]]
        frames.append(self._seal(kind, payload[cuts[-1] :]))
        return frames

    def _require(self, allowed: bool, event: Event) -> None:
        if not allowed:
            raise ProtocolError(f"cannot send {type(event).__name__} in state {self.state.value}")

    def _set_state(self, new: State) -> None:
        if new is not self.state:
            logger.debug("%s: %s -> %s", self.role.value, self.state.value, new.value)
            self.state = new
