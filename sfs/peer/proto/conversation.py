"""The transfer conversation, sans I/O: what a sender and a receiver say, in which
order, and when they give up on each other.

:class:`Sender` and :class:`Receiver` sit on :class:`~sfs.peer.proto.framing.TransferProtocol`
as aioquic's ``H3Connection`` sits on ``QuicConnection``: the framing says which
frame is allowed now and seals it; the conversation says what to do next.  They do
no I/O and never read a clock: time comes in as ``now`` (seconds, any monotonic
origin), and the driver (:mod:`sfs.peer.transfer`) carries out what they return.

Inputs are method calls: :meth:`Conversation.frame_received` for each frame from the
peer, the user's and the disk's answers (:meth:`Receiver.accept`,
:meth:`Sender.prefixes_hashed`, :meth:`Receiver.files_placed`, …) and
:meth:`Conversation.handle_timer` once :meth:`Conversation.next_deadline` has passed.
Outputs are the frames to send, taken with :meth:`Conversation.frames_to_send`, and
the action each input returns: what the driver must do next (:class:`AskUser`,
:class:`HashPrefixes`, :class:`ConfirmPrefixes`, :class:`SendFiles`, a received
:class:`~sfs.peer.proto.wire.Chunk` to write, a :class:`~sfs.peer.proto.wire.FileDone`
to verify, :class:`Acknowledged`) or ``None``.  A failure is raised, as h11 does: the
peer's CANCEL or REJECT as the error it means for this side
(:func:`~sfs.peer.proto.reasons.stopped_by`), a silent peer as
:class:`~sfs.errors.PeerGoneError`, a frame out of place as
:class:`~sfs.errors.RemoteProtocolError`; the driver then calls :meth:`Conversation.abort`,
which says why to the peer when the protocol still allows a word.

The per-chunk path stays direct: :meth:`Sender.send_chunk` returns the sealed frame,
and a received chunk is returned as the :class:`~sfs.peer.proto.wire.Chunk` the
framing made (no object of ours per frame).

Keepalive and idleness: a side sends a PING when it has sent nothing for
:data:`PING_INTERVAL_SECONDS`, so the other can tell a quiet connection (a user
deciding, a disk busy) from a lost one; nothing heard for
:data:`IDLE_TIMEOUT_SECONDS` means the connection is lost.  What counts as heard is
what the driver reports with :meth:`Conversation.heard` (the transport saw bytes
from the peer, read or not) and every frame received.
"""

from __future__ import annotations

from dataclasses import dataclass

from sfs.errors import LocalProtocolError, PeerGoneError
from sfs.peer.proto.framing import Role, State, TransferProtocol
from sfs.peer.proto.reasons import cancel_for, reject, stopped_by
from sfs.peer.proto.wire import (
    Accept,
    Chunk,
    Event,
    FileAck,
    FileDone,
    Offer,
    Partial,
    Ping,
    Reject,
    Resume,
    Start,
)

#: A side sends a PING after this long without sending anything else.
PING_INTERVAL_SECONDS = 2.0
#: Nothing at all from the peer for this long means the connection is lost (aiortc
#: itself may take 30 s or more to notice a dead path).
IDLE_TIMEOUT_SECONDS = 10.0


# -- actions: what the driver does next ---------------------------------------------------


@dataclass(frozen=True)
class AskUser:
    """(Receiver) The offer is in: plan where it goes, ask the user, then call
    :meth:`Receiver.accept` or :meth:`Receiver.refuse`.  Meanwhile the sender may
    only PING or CANCEL."""

    offer: Offer


@dataclass(frozen=True)
class HashPrefixes:
    """(Sender) The receiver accepted.  Hash the first ``held[i]`` bytes of each file
    (none when ``held`` is empty), then call :meth:`Sender.prefixes_hashed`."""

    held: tuple[int, ...]


@dataclass(frozen=True)
class ConfirmPrefixes:
    """(Receiver) The sender proposes where each file starts.  Check our own bytes
    against its prefixes' SHA-256, then call :meth:`Receiver.prefixes_confirmed`."""

    resume: Resume


@dataclass(frozen=True)
class SendFiles:
    """(Sender) Stream each file from ``offsets[i]``: :meth:`Sender.send_chunk` for
    its bytes, :meth:`Sender.file_done` at its end.  ``restarted`` lists the files
    proposed above 0 that the receiver's bytes did not match: they go from 0."""

    offsets: tuple[int, ...]
    restarted: tuple[int, ...] = ()


@dataclass(frozen=True)
class Acknowledged:
    """(Sender) The receiver verified and placed ``count`` more files; ``done``: all."""

    count: int
    done: bool


Action = AskUser | HashPrefixes | ConfirmPrefixes | SendFiles | Chunk | FileDone | Acknowledged


class Conversation:
    """What both sides share: the outbox, the keepalive, the idle deadline, the last
    word.  On its own (no offer yet) it keeps a connection alive while the users
    compare verification strings."""

    def __init__(self, proto: TransferProtocol, now: float) -> None:
        self.proto = proto
        self._outbox: list[bytes] = []
        self._last_sent = now
        self._last_heard = now

    # -- time --

    @property
    def over(self) -> bool:
        """Nothing more to say: done, or closed by a CANCEL or REJECT."""
        return self.proto.state in (State.DONE, State.CLOSED)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` is due; None once the conversation is over."""
        if self.over:
            return None
        return min(self._last_sent + PING_INTERVAL_SECONDS, self._last_heard + IDLE_TIMEOUT_SECONDS)

    def heard(self, at: float) -> None:
        """The transport saw something from the peer at ``at`` (read yet or not)."""
        self._last_heard = max(self._last_heard, at)

    def handle_timer(self, now: float) -> None:
        """Queue a PING when this side has been quiet long enough.

        :raises PeerGoneError: nothing heard from the peer for IDLE_TIMEOUT_SECONDS.
        """
        if self.over:
            return
        if now >= self._last_heard + IDLE_TIMEOUT_SECONDS:  # as next_deadline() computes it
            raise PeerGoneError(
                f"lost the connection: nothing from the other side for {IDLE_TIMEOUT_SECONDS:.0f} s"
            )
        if now >= self._last_sent + PING_INTERVAL_SECONDS and not self._outbox:
            self._outbox.append(self.proto.send(Ping()))

    # -- frames --

    def frames_to_send(self, now: float) -> list[bytes]:
        """Take the frames to send, in order (the driver sends them all, now)."""
        frames, self._outbox = self._outbox, []
        if frames:
            self._last_sent = now
        return frames

    def frame_received(self, frame: bytes, now: float) -> Action | None:
        """One frame from the peer: what to do about it, if anything.

        :raises CryptoError: forged, damaged, reordered or replayed.
        :raises RemoteProtocolError: not allowed here.
        :raises SfsError: the peer stopped (CANCEL, REJECT): what it means here.
        """
        self._last_heard = max(self._last_heard, now)
        event = self.proto.receive(frame)
        if isinstance(event, Ping | Partial):
            return None
        return self._handle(event)

    def _handle(self, event: Event) -> Action | None:
        raise stopped_by(event)

    def abort(self, exc: BaseException) -> bool:
        """Queue the CANCEL that tells the peer why this side stops (never a local
        path or detail); False when the protocol allows no word any more."""
        if self.over:
            return False
        self._outbox.extend(self.proto.send_frames(cancel_for(exc)))
        return True

    def _queue(self, event: Offer | Accept | Reject | Resume | Start | FileDone | FileAck) -> None:
        self._outbox.extend(self.proto.send_frames(event))


class Sender(Conversation):
    """The sending side: offer, resume, stream, and wait for every acknowledgement.

    :param resume: continue files the receiver partly holds once their prefixes
        match, and skip those it holds whole; else send all from the start.
    """

    def __init__(self, proto: TransferProtocol, now: float, *, resume: bool = True) -> None:
        if proto.role is not Role.SENDER:
            raise LocalProtocolError("a Sender needs the sender's framing")
        super().__init__(proto, now)
        self.resume = resume
        self._proposed: tuple[int, ...] = ()
        self._accepted = False

    def offer(self, offer: Offer) -> None:
        """Queue the offer; the receiver's answer comes as :class:`HashPrefixes`."""
        self._queue(offer)

    def prefixes_hashed(
        self, offsets: tuple[int, ...], digests: tuple[bytes, ...]
    ) -> SendFiles | None:
        """Where each file can start (0 where our file no longer has the bytes the
        receiver holds) and the SHA-256 of our bytes before it.  Returns
        :class:`SendFiles` at once when nothing resumes; else the receiver confirms
        first (its START comes as :class:`SendFiles`)."""
        self._proposed = offsets
        self._queue(Resume(offsets, digests if any(offsets) else ()))
        if self.proto.state is State.CONFIRMING:
            return None
        return SendFiles(offsets)

    def send_chunk(self, chunk: Chunk, now: float) -> bytes:
        """The sealed frame of one chunk (the hot path: nothing queued, no object)."""
        self._last_sent = now
        return self.proto.send(chunk)

    def file_done(self, sha256: bytes) -> None:
        """The current file's bytes are all sent: queue its FILE_DONE."""
        self._queue(FileDone(sha256))

    def _handle(self, event: Event) -> Action | None:
        if isinstance(event, FileAck):
            return Acknowledged(event.count, self.proto.state is State.DONE)
        if isinstance(event, Accept):
            self._accepted = True
            return HashPrefixes(event.held if self.resume else ())
        if isinstance(event, Start):
            restarted = tuple(
                i
                for i, (proposed, start) in enumerate(
                    zip(self._proposed, event.offsets, strict=True)
                )
                if proposed and not start
            )
            return SendFiles(event.offsets, restarted)
        # The answer to our offer: an old receiver refuses a newer one its own way.
        raise stopped_by(event, 0 if self._accepted else self.proto.version)


class Receiver(Conversation):
    """The receiving side: hear the offer, answer it, confirm where files resume,
    take their bytes and acknowledge them once they are safe."""

    def __init__(self, proto: TransferProtocol, now: float) -> None:
        if proto.role is not Role.RECEIVER:
            raise LocalProtocolError("a Receiver needs the receiver's framing")
        super().__init__(proto, now)

    def accept(self, held: tuple[int, ...], zstd: bool) -> None:
        """The user said yes: queue the ACCEPT, with how much of each file is already
        here (only how much: a hash of our bytes would tell anyone who can make a
        matching offer what they are; docs/PROTOCOL.md, "Resume")."""
        self._queue(Accept(held if any(held) else (), zstd))

    def refuse(self, refusal: Reject | None = None) -> None:
        """Queue the REJECT: the user said no, or this side cannot take
        the offer (``refusal``).  The driver lingers for the sender to read it, then stops."""
        self._queue(refusal or reject())

    def prefixes_confirmed(self, offsets: tuple[int, ...]) -> None:
        """Where each file really starts; queues the START the sender waits for when
        a file was proposed to resume."""
        if self.proto.state is State.CONFIRMING:
            self._queue(Start(offsets))

    def files_placed(self, count: int) -> None:
        """``count`` more files are verified and in place: acknowledge them (one
        frame, in version 3)."""
        if count:
            self._queue(FileAck(count))

    @property
    def done(self) -> bool:
        return self.proto.state is State.DONE

    def _handle(self, event: Event) -> Action | None:
        if isinstance(event, Chunk | FileDone):
            return event
        if isinstance(event, Offer):
            return AskUser(event)
        if isinstance(event, Resume):
            return ConfirmPrefixes(event)
        return super()._handle(event)
