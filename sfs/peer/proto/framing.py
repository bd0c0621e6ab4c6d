"""The transfer protocol's rules, sans I/O: :class:`TransferProtocol` says what may be
sent and received now, sealing events into frames and opening frames into events.
The frames, events and payload codecs are in :mod:`sfs.peer.proto.wire`.

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
import logging
import struct
from typing import Any

import zstandard

from sfs.defaults import MAX_CHUNK_BYTES, MAX_MESSAGE_BYTES
from sfs.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from sfs.peer.proto.crypto import FrameOpener, FrameSealer, SessionKeys
from sfs.peer.proto.wire import (
    MAX_CONTROL_BYTES,
    MAX_ENTRIES,
    MAX_FILES,
    MAX_JOINED_CONTROL_BYTES,
    MAX_REASON_CHARS,
    SHA256_BYTES,
    Accept,
    Cancel,
    Chunk,
    Event,
    FileAck,
    FileDone,
    FrameType,
    Offer,
    Partial,
    Ping,
    Reject,
    Resume,
    Start,
    _bool_field,
    _check_kind,
    _code_field,
    _decode_json,
    _dense,
    _digest_list,
    _encode_json,
    _int_list,
    _reason_payload,
    _sparse,
    _str_field,
    decode_offer,
    decompress_chunk,
    encode_listing,
    encode_offer,
    offer_version,
)

logger = logging.getLogger(__name__)


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
        """Return the sealed frame for ``event``; :class:`LocalProtocolError` if not allowed
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

        :raises LocalProtocolError: not allowed now.
        """
        if isinstance(event, Chunk):
            return [self._send_chunk(event)]
        if isinstance(event, Ping):
            self._require(self.state is not State.CLOSED, event)
            return [self._seal(FrameType.PING, b"")]
        if isinstance(event, Cancel):
            self._require(self.state is not State.CLOSED, event)
            payload = _reason_payload(event.reason, event.code)
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
            obj = self._json(payload)
            reason = _str_field(obj, "reason", MAX_REASON_CHARS, "cancelled")
            self._set_state(State.CLOSED)
            return Cancel(reason, _code_field(obj))
        if self.role is Role.SENDER:
            return self._sender_receive(kind, payload)
        return self._receiver_receive(kind, payload)

    # -- sender side --

    def _sender_send(self, event: Event) -> list[bytes]:
        if isinstance(event, Offer):
            self._require(self.state is State.IDLE, event)
            _check_kind(event, LocalProtocolError)
            version = event.version
            if not 1 <= len(event.files) <= (MAX_ENTRIES if version >= 3 else MAX_FILES):
                raise LocalProtocolError(f"an offer lists 1 to {MAX_ENTRIES} files")
            if not 1 <= event.chunk_size <= MAX_CHUNK_BYTES:
                raise LocalProtocolError(f"chunk size must be 1 to {MAX_CHUNK_BYTES} bytes")
            payload = encode_offer(event)
            listing = encode_listing(event) if version >= 3 else None
            try:  # the receiver's own check: fail here, not after the peer refuses
                decode_offer(payload, listing)
            except RemoteProtocolError as exc:
                raise LocalProtocolError(f"the receiver would refuse this offer: {exc}") from exc
            self.offer = event
            self.version = version
            frames = [self._seal(FrameType.OFFER, payload)]
            if listing is not None:
                frames += self._control(FrameType.LISTING, listing)
            self._set_state(State.OFFERED)
            return frames
        if isinstance(event, Resume):
            self._require(self.state is State.ACCEPTED, event)
            self._check_resume(event, LocalProtocolError)
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
                raise LocalProtocolError("FILE_DONE carries a 32-byte SHA-256")
            frame = self._seal(FrameType.FILE_DONE, event.sha256)
            self._next_file()
            return [frame]
        raise LocalProtocolError(f"a sender cannot send {type(event).__name__}")

    def _send_chunk(self, chunk: Chunk) -> bytes:
        if self.role is not Role.SENDER or self.state is not State.SENDING:
            raise LocalProtocolError(f"cannot send a chunk in state {self.state.value}")
        assert self.offer is not None
        size = len(chunk.data) if chunk.plain_size is None else chunk.plain_size
        remaining = self.offer.chunk_size if self._file_remaining is None else self._file_remaining
        if not 0 < size <= min(remaining, self.offer.chunk_size):
            raise LocalProtocolError(
                f"chunk of {size} bytes does not fit ({remaining} bytes left, "
                f"chunk size {self.offer.chunk_size})"
            )
        if self._file_remaining is not None:
            self._file_remaining -= size
        if chunk.plain_size is None:
            return self._sealer.seal(FrameType.CHUNK, chunk.data)
        if not self.zstd:
            raise LocalProtocolError("the receiver did not say it takes compressed chunks")
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
            obj = self._json(payload)
            reason = _str_field(obj, "reason", MAX_REASON_CHARS, "declined")
            self._set_state(State.CLOSED)
            return Reject(reason, _code_field(obj))
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
            self._check_held(event.held, LocalProtocolError)
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
            self._check_start(event.offsets, LocalProtocolError)
            offsets = _sparse(event.offsets) if self.version >= 3 else list(event.offsets)
            frames = self._control(FrameType.START, _encode_json({"offsets": offsets}))
            self._start(event.offsets)
            return frames
        if isinstance(event, Reject):
            self._require(self.state is State.DECIDING, event)
            payload = _reason_payload(event.reason, event.code)
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
        raise LocalProtocolError(f"a receiver cannot send {type(event).__name__}")

    def _receiver_receive(self, kind: FrameType, payload: bytes) -> Event:
        if kind in (FrameType.CHUNK, FrameType.ZCHUNK) and self.state is State.RECEIVING:
            return self._receive_chunk(kind, payload)
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
            return self._receive_offer(payload)
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

    def _receive_chunk(self, kind: FrameType, payload: bytes) -> Chunk:
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

    def _receive_offer(self, payload: bytes) -> Event:
        """The offer of version 1 or 2, or the header of a version 3 offer (its listing
        follows)."""
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
            raise LocalProtocolError(f"a control frame of {len(payload)} bytes does not fit")
        if len(payload) > MAX_JOINED_CONTROL_BYTES:
            raise LocalProtocolError(f"a control payload of {len(payload)} bytes is too large")
        cuts = range(0, len(payload), MAX_CONTROL_BYTES)
        frames = [self._seal(FrameType.MORE, payload[i : i + MAX_CONTROL_BYTES]) for i in cuts[:-1]]
        frames.append(self._seal(kind, payload[cuts[-1] :]))
        return frames

    def _require(self, allowed: bool, event: Event) -> None:
        if not allowed:
            raise LocalProtocolError(
                f"cannot send {type(event).__name__} in state {self.state.value}"
            )

    def _set_state(self, new: State) -> None:
        if new is not self.state:
            logger.debug("%s: %s -> %s", self.role.value, self.state.value, new.value)
            self.state = new
