"""The sfs transfer protocol, sans I/O.

Wire format (docs/PROTOCOL.md has the full text).  Every DataChannel message is one
frame, sealed by :mod:`sfs.peer.proto.crypto`::

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
"""

from __future__ import annotations

import enum
import functools
import json
import re
from dataclasses import dataclass
from typing import Any

import zstandard

from sfs.defaults import (
    DEFAULT_CHUNK_BYTES,
    MAX_CHUNK_BYTES,
    MAX_SENDER_NAME_CHARS,
    MAX_TEXT_BYTES,
    TRANSFER_PROTOCOL_VERSION,
)
from sfs.errors import LocalProtocolError, ProtocolError, RemoteProtocolError, UpgradeError

# TRANSFER_PROTOCOL_VERSION is the newest version this side speaks.  An offer is
# written in the oldest version that can carry it (1 for plain files, 2 for folders
# and executables, 3 for text, a pipe, or more than fits in one frame), so an older
# receiver still gets what it can take; an offer from a newer version is refused with
# a message that says to upgrade.

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
#: Files and folders in one offer of version 3 (sfs.peer.files.tree walks no more).
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
    """The receiver's no, with words for a person and a code for a program."""

    reason: str = "declined"
    #: Machine-readable, one of sfs.peer.proto.reasons' codes; "" from older peers.
    code: str = ""


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
    """Either side stops, with words for a person and a code for a program."""

    reason: str = "cancelled"
    #: Machine-readable, one of sfs.peer.proto.reasons' codes; "" from older peers.
    code: str = ""


Event = (
    Offer | Accept | Reject | Resume | Start | Chunk | FileDone | FileAck | Cancel | Ping | Partial
)


# -- payload codecs -----------------------------------------------------------------------


def _encode_json(obj: dict[str, Any]) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a non-UTF-8 file name
        raise LocalProtocolError("a name or reason to send is not valid Unicode") from exc


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


#: What a CANCEL's or REJECT's "code" may be: a short ASCII token.
CODE_PATTERN = "^[a-z][a-z0-9-]{0,31}$"
_CODE = re.compile(r"[a-z][a-z0-9-]{0,31}")


def _reason_payload(reason: str, code: str = "") -> bytes:
    """The payload of a REJECT or CANCEL we send; refuse what the peer would refuse."""
    if len(reason) > MAX_REASON_CHARS:
        raise LocalProtocolError(f"a reason is at most {MAX_REASON_CHARS} characters")
    if code and not _CODE.fullmatch(code):
        raise LocalProtocolError(f"a code matches {CODE_PATTERN}, not {code[:40]!r}")
    return _encode_json({"reason": reason, "code": code} if code else {"reason": reason})


def _code_field(obj: dict[str, Any]) -> str:
    """The peer's code, or "" for none.  One that is not a well-formed code is ignored
    rather than refused: the code is a hint beside the reason, and a CANCEL or REJECT
    must still end the transfer with the peer's words (older peers send none)."""
    value = obj.get("code", "")
    return value if isinstance(value, str) and _CODE.fullmatch(value) else ""


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
    if (
        isinstance(version, int)
        and not isinstance(version, bool)
        and version > TRANSFER_PROTOCOL_VERSION
    ):
        raise UpgradeError(
            f"the other side runs a newer sfs (protocol {version}; this one speaks up to "
            f"{TRANSFER_PROTOCOL_VERSION}): upgrade sfs here to receive from it"
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
