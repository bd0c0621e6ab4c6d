"""Moving files over an abstract message channel: reading, hashing, safe writing.

This layer drives :class:`~sfs.peer.proto.framing.TransferProtocol` and does the file I/O.
It knows nothing of WebRTC: any :class:`~sfs.peer.transport.channel.Channel` will do, which
is how the unit tests run it over a pair of in-memory queues.

Writing is careful: bytes go to a hidden partial copy of sfs's own, ``.NAME.sfs-part``
in the output folder (with ``.NAME.sfs-info`` beside it saying which offered file it
holds), the SHA-256 is checked, the data is fsynced, and only then does the file appear
at its final name, without ever replacing an existing file unless the user asked for
that.  A file at either hidden name that sfs did not write is never opened, truncated
or removed: the transfer is refused instead.  Each name is claimed by one transfer at a
time (:mod:`sfs.peer.files.claims`).  One rule for every name that is taken (a file already
there, another transfer's claim, two offered files that become one name, a file that
appears before the last step): the file goes to the next free name, ``NAME (1).EXT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from sfs.errors import (
    CryptoError,
    DeclinedError,
    IntegrityError,
    PeerGoneError,
    ProtocolError,
    RejectedError,
    RemoteProtocolError,
    SfsError,
    SourceError,
)
from sfs.peer.files.destinations import NameClaims, Plan, find_held, make_folders, plan_destinations
from sfs.peer.files.partial import (
    READ_BLOCK_BYTES,
    HashState,
    MemoryFile,
    PartFile,
    hash_partial,
    identity_of,
    part_path,
)
from sfs.peer.files.placer import BATCH_BYTES, Placer, Verified
from sfs.peer.files.sources import SourceFile, hash_prefix, open_source
from sfs.peer.proto.conversation import (
    Acknowledged,
    Action,
    AskUser,
    ConfirmPrefixes,
    Conversation,
    HashPrefixes,
    Receiver,
    Sender,
    SendFiles,
)
from sfs.peer.proto.crypto import digests_equal
from sfs.peer.proto.framing import TransferProtocol
from sfs.peer.proto.names import safe_name
from sfs.peer.proto.packing import Packer
from sfs.peer.proto.progress import Departures, NullProgress, Progress
from sfs.peer.proto.reasons import STDOUT_ONLY, reject
from sfs.peer.proto.wire import Chunk, FileDone, FileInfo, Offer, Resume
from sfs.peer.transport.channel import Channel
from sfs.text import format_size

logger = logging.getLogger(__name__)

T = TypeVar("T")
A = TypeVar("A", bound=Action)

#: Of an offered name, at most this much is repeated back in a status line.
MAX_SHOWN_NAME_CHARS = 80
#: How long a side that sends the last frame (reject, cancel) waits for the peer to
#: read it and close, before closing itself.
LAST_WORD_GRACE_SECONDS = 3.0


@dataclass(frozen=True)
class FileRecord:
    """One file that moved (or was already there whole).

    :param name: its path in the offer (``folder/name``), as the sender named it.
    :param path: the receiver's final path; the sender's source file; ``None`` for a
        text message, a pipe on the sender, and ``--stdout`` on the receiver.
    :param sha256: the file's SHA-256 (hex), checked by the receiver.
    :param seconds: how long its bytes took (sender: to hand them to the channel).
    :param resumed_bytes: bytes not sent again (a resumed or already-whole file).
    """

    name: str
    path: Path | None
    size: int
    sha256: str
    seconds: float
    resumed_bytes: int


@dataclass
class TransferResult:
    """What moved: a record per file, in the offer's order; bytes, seconds."""

    records: list[FileRecord] = field(default_factory=list)
    total_bytes: int = 0
    resumed_bytes: int = 0
    #: Files that were already here whole (their SHA-256 confirmed), not sent again.
    skipped_files: int = 0
    #: Files continued from a partial copy.
    resumed_files: int = 0
    #: Bytes of file data that arrived so far (the receiver).
    received: int = 0
    #: A text message received (``sfs send --text``).
    text: str | None = None
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0
    #: How the data flowed ("direct through NAT", …), when the connection says.
    route: str = ""

    def finish(self) -> TransferResult:
        self.elapsed = max(time.monotonic() - self.started, 1e-6)
        return self


class Pump:
    """Carries a conversation's frames between it and a :class:`Channel`, and keeps
    its clock: the one place that sends, so frames go out in the order the machine
    sealed them, and every wait is bounded by the machine's next deadline (a PING
    when this side has been quiet, :class:`PeerGoneError` when the peer has).

    It is aioquic's ``QuicConnectionProtocol`` for :mod:`sfs.peer.proto.conversation`.
    """

    def __init__(self, channel: Channel, machine: Conversation) -> None:
        self.channel = channel
        self.machine = machine

    def flush(self) -> None:
        """Send what the machine has queued (a send never waits: see :meth:`drain`)."""
        for frame in self.machine.frames_to_send(time.monotonic()):
            self.channel.send(frame)

    def tick(self, now: float) -> None:
        """The machine's deadline passed: let it judge the peer's silence (by what the
        transport heard, read or not) and queue a PING if this side was quiet."""
        self.machine.heard(now - self.channel.seconds_since_receive())
        self.machine.handle_timer(now)
        self.flush()

    def _time_left(self) -> float | None:
        deadline = self.machine.next_deadline()
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    async def bounded(self, wait: Callable[[], Awaitable[T]]) -> T:
        """``await wait()`` with the timers running; ``wait`` must be safe to cancel
        and call again (a receive, a drain)."""
        while True:
            try:
                # asyncio.timeout, not wait_for: on Python 3.11, wait_for can swallow
                # a cancellation (Ctrl-C) that arrives as the awaited result does.
                async with asyncio.timeout(self._time_left()):
                    return await wait()
            except TimeoutError:
                self.tick(time.monotonic())

    async def drain(self) -> None:
        """Wait while the channel holds too much (after a send)."""
        if self.channel.congested:
            await self.bounded(self.channel.drain)

    async def serve(self, work: Awaitable[T], *, listen: bool = False) -> T:
        """Await ``work`` (a thread's disk work, a user's answer) while the timers run.

        With ``listen``, frames from the peer are read meanwhile and given to the
        machine, which allows only what may come then (while the receiver's user
        decides: a PING, or a CANCEL that ends the prompt at once).
        """
        task = asyncio.ensure_future(work)
        reading: asyncio.Future[bytes] | None = None
        try:
            while True:
                if listen and reading is None:
                    reading = asyncio.ensure_future(self.channel.receive())
                waiting: set[asyncio.Future[Any]] = {task} if reading is None else {task, reading}
                await asyncio.wait(
                    waiting, timeout=self._time_left(), return_when=asyncio.FIRST_COMPLETED
                )
                if task.done():
                    return task.result()
                if reading is not None and reading.done():
                    frame, reading = reading.result(), None
                    if self.machine.frame_received(frame, time.monotonic()) is not None:
                        raise RemoteProtocolError("the other side did not wait for an answer")
                    continue
                self.tick(time.monotonic())
        finally:
            for future in (task, reading):
                if future is not None and not future.done():
                    future.cancel()
            await asyncio.gather(
                *(f for f in (task, reading) if f is not None), return_exceptions=True
            )

    def poll(self) -> Action | None:
        """What a frame already here means, if one is (never waits)."""
        frame = self.channel.poll()
        if frame is None:
            return None
        now = time.monotonic()
        action = self.machine.frame_received(frame, now)
        deadline = self.machine.next_deadline()
        if deadline is not None and now >= deadline:
            self.tick(now)
        return action

    async def next_action(self) -> Action:
        """Read frames until one asks something of this side."""
        while True:
            frame = self.channel.poll()
            if frame is None:
                frame = await self.bounded(self.channel.receive)
            now = time.monotonic()
            action = self.machine.frame_received(frame, now)
            # Frames may flow faster than any wait: the keepalive is due all the same.
            deadline = self.machine.next_deadline()
            if deadline is not None and now >= deadline:
                self.tick(now)
            if action is not None:
                return action

    async def expect(self, kind: type[A]) -> A:
        """The next action, which must be a ``kind`` (the framing allows no other)."""
        action = await self.next_action()
        if not isinstance(action, kind):
            raise RemoteProtocolError(f"unexpected {type(action).__name__} from the other side")
        return action

    async def last_word(self) -> None:
        """Send what is queued (a REJECT) and give the peer time to read it."""
        self.flush()
        await linger(self.channel, LAST_WORD_GRACE_SECONDS)

    async def abort(self, exc: BaseException) -> None:
        """Tell the peer why we stop, if the protocol still allows a word and the peer
        is still there to read it."""
        if isinstance(exc, PeerGoneError) or not self.machine.abort(exc):
            return
        try:
            self.flush()
        except (SfsError, ConnectionError):
            logger.debug("could not deliver the cancel frame", exc_info=True)
            return
        await linger(self.channel, LAST_WORD_GRACE_SECONDS)


async def linger(channel: Channel, seconds: float) -> None:
    """Give the peer time to read our last frame and close first.

    Closing right after sending can lose that frame (aiortc does not flush on close),
    and the peer closes as soon as it has read it.
    """
    try:
        async with asyncio.timeout(seconds):
            await channel.wait_closed()
    except TimeoutError:
        logger.debug("the peer did not close within %.0f s", seconds)


async def send_files(
    channel: Channel,
    proto: TransferProtocol,
    sources: list[SourceFile],
    *,
    sender: str,
    chunk_size: int,
    folders: tuple[tuple[str, ...], ...] = (),
    progress: Progress | None = None,
    on_waiting: Callable[[], None] | None = None,
    resume: bool = True,
    status: Callable[[str], None] = lambda message: None,
    compress: bool = True,
) -> TransferResult:
    """Offer ``sources``, stream them if accepted, and return after the last ack.

    :param resume: continue files the receiver already partly holds, once their
        prefix is checked against ours, and skip those it holds whole; otherwise
        send everything from the start.
    :param compress: compress chunks that shrink with zstd, if the receiver takes them.
    """
    progress = progress or NullProgress()
    result = TransferResult()
    machine = Sender(proto, time.monotonic(), resume=resume)
    pump = Pump(channel, machine)
    try:
        offer = Offer(
            files=tuple(
                FileInfo(s.name, s.size, s.mtime_ns, s.folder, s.executable, s.stream)
                for s in sources
            ),
            sender=sender,
            chunk_size=chunk_size,
            folders=folders,
            text=any(s.data is not None for s in sources),
        )
        machine.offer(offer)
        pump.flush()
        if on_waiting is not None:
            on_waiting()
        accepted = await pump.expect(HashPrefixes)
        status("The receiver accepted.")
        result.started = time.monotonic()
        starts = await pump.serve(asyncio.to_thread(_prefixes, sources, accepted.held))
        offsets = tuple(offset for offset, _ in starts)
        digests = tuple(p.digest() if p is not None else b"" for _, p in starts)
        go = machine.prefixes_hashed(offsets, digests)
        pump.flush()
        if go is None:  # the receiver checks our prefixes first
            go = await pump.expect(SendFiles)
        for i in go.restarted:
            if offsets[i] < sources[i].size:
                status(f"{sources[i].name}: the receiver's partial copy differs; sending all")
            starts[i] = (0, None)
        packer = Packer(chunk_size, compress=compress and proto.zstd)
        progress.begin(len(sources), None if offer.stream else offer.total_size)
        departures = Departures(progress)
        try:
            for source, (offset, prefix) in zip(sources, starts, strict=True):
                record = await _send_one(pump, machine, source, packer, departures, offset, prefix)
                result.records.append(record)
                result.total_bytes += record.size
                result.resumed_bytes += offset
                whole = bool(source.size) and offset == source.size
                result.skipped_files += whole
                result.resumed_files += bool(offset) and not whole
            await _await_acks(pump, departures)
        finally:
            departures.close()
        return result.finish()
    except BaseException as exc:
        await pump.abort(exc)
        raise


async def _await_acks(pump: Pump, departures: Departures) -> None:
    """The last acknowledgements, with the progress following the channel's buffer
    as it drains meanwhile (the last file is shown done only when it is)."""

    async def follow() -> None:
        while True:
            await asyncio.sleep(PROGRESS_TICK_SECONDS)  # a display refresh, not a wait
            departures.left(pump.channel.unsent_bytes())

    follower = asyncio.create_task(follow())
    try:
        while not pump.machine.over:
            await pump.expect(Acknowledged)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    departures.all_acknowledged()


def _prefixes(
    sources: list[SourceFile], held: tuple[int, ...]
) -> list[tuple[int, HashState | None]]:
    """Where to propose starting each file, with the hash state of our own bytes before
    that point: what the receiver holds, or 0 if our file is shorter than that now
    (blocking: run in a thread)."""
    starts: list[tuple[int, HashState | None]] = []
    for i, source in enumerate(sources):
        # Only a file on disk resumes: a pipe never, and a text message is short
        # (a receiver that claims to hold part of either gets offset 0).
        on_disk = source.data is None and not source.stream
        offset = held[i] if held and on_disk else 0
        prefix = hash_prefix(source, offset) if offset else None
        starts.append((offset, prefix) if prefix is not None else (0, None))
    return starts


#: A file up to this size is read at once on the event loop (a thread hop per small
#: file costs more than the read), and received into memory, checked, and written
#: once to sfs's staging folder (a tree of thousands of small files).
SMALL_FILE_BYTES = 256 * 1024
#: How often the sender's progress looks again at what has left, once every byte is
#: handed to the channel and only the acknowledgements are awaited.
PROGRESS_TICK_SECONDS = 0.25


async def _send_one(
    pump: Pump,
    machine: Sender,
    source: SourceFile,
    packer: Packer,
    departures: Departures,
    offset: int,
    prefix: HashState | None,
) -> FileRecord:
    """Send one file (or text, or pipe) from ``offset``; return its record."""
    channel = pump.channel
    digest = prefix if prefix is not None else hashlib.sha256()
    started = time.monotonic()
    departures.file(source.name, None if source.stream else source.size, offset)
    plain = offset  # bytes given to the channel
    async for block, chunks in _blocks(pump, source, offset, packer):
        digest.update(block)
        for chunk in chunks:
            channel.send(machine.send_chunk(chunk, time.monotonic()))
            size = len(chunk.data) if chunk.plain_size is None else chunk.plain_size
            plain += size
            departures.handed(size, len(chunk.data))
            departures.left(channel.unsent_bytes())
            if channel.congested:
                await pump.drain()
        # What the receiver sent meanwhile: a cancel stops us at once.
        while pump.poll() is not None:
            pass
    sha256 = digest.digest()
    machine.file_done(sha256)
    pump.flush()
    departures.handed_all()
    departures.left(channel.unsent_bytes())
    on_disk = source.data is None and not source.stream
    return FileRecord(
        name="/".join((*source.folder, source.name)),
        path=source.path if on_disk else None,
        size=plain,
        sha256=sha256.hex(),
        seconds=time.monotonic() - started,
        resumed_bytes=offset,
    )


async def _blocks(
    pump: Pump, source: SourceFile, offset: int, packer: Packer
) -> AsyncIterator[tuple[bytes, list[Chunk]]]:
    """A source's bytes from ``offset``, block by block, each cut into chunks."""
    block_size = max(packer.chunk_size, READ_BLOCK_BYTES // packer.chunk_size * packer.chunk_size)
    if source.data is not None:
        if source.data[offset:]:
            yield source.data[offset:], packer.pack(source.data[offset:])
        return
    if source.reader is not None:
        async for item in _pipe_blocks(pump, source, block_size, packer):
            yield item
        return
    f = open_source(source)
    try:
        remaining = source.size - offset
        if remaining <= SMALL_FILE_BYTES:
            f.seek(offset)
            block = f.read(remaining) if remaining else b""
            chunks = packer.pack(block)
            if len(block) != remaining:
                raise SourceError(f"{source.name} shrank while it was being sent")
            if block:
                yield block, chunks
        else:

            def read_file(n: int) -> tuple[bytes, list[Chunk]]:
                block = f.read(n)
                return block, packer.pack(block)

            f.seek(offset)
            while remaining:
                block, chunks = await pump.serve(
                    asyncio.to_thread(read_file, min(block_size, remaining))
                )
                if not block:
                    raise SourceError(f"{source.name} shrank while it was being sent")
                remaining -= len(block)
                yield block, chunks
        st = os.fstat(f.fileno())
        if st.st_size != source.size or st.st_mtime_ns != source.mtime_ns:
            raise SourceError(f"{source.name} changed while it was being sent")
        # A file that reads more than its size says (as /sys files may) would otherwise
        # be sent cut short, with success.
        if f.read(1):
            raise SourceError(f"{source.name} gives more bytes than its size says")
    finally:
        f.close()


async def _pipe_blocks(
    pump: Pump, source: SourceFile, block_size: int, packer: Packer
) -> AsyncIterator[tuple[bytes, list[Chunk]]]:
    """A pipe's bytes, block by block, each cut into chunks, until its end."""
    assert source.reader is not None
    reader = source.reader

    def read_pipe() -> tuple[bytes, list[Chunk]]:
        try:
            block = reader.read(block_size)
        except OSError as exc:
            raise SourceError(f"cannot read the input: {exc.strerror or exc}") from exc
        return block, packer.pack(block)

    while True:
        block, chunks = await pump.serve(asyncio.to_thread(read_pipe))
        if not block:
            return
        yield block, chunks


#: Failures after which the bytes already written cannot be trusted for a resume.
_UNTRUSTED = (IntegrityError, ProtocolError, CryptoError)


async def receive_files(
    channel: Channel,
    proto: TransferProtocol,
    *,
    output_dir: Path,
    overwrite: bool,
    decide: Callable[[Offer, Plan], Awaitable[bool]],
    progress: Progress | None = None,
    resume: bool = True,
    status: Callable[[str], None] = lambda message: None,
    kept: Callable[[str, int], None] = lambda name, held: None,
    sink: IO[bytes] | None = None,
    zstd: bool = True,
) -> TransferResult:
    """Wait for an offer, plan where each file goes, ask ``decide`` (with the plan),
    then write every file safely.

    A text message is not written anywhere: it ends up in the result's ``text``.

    :param resume: offer to continue from partial copies (``.NAME.sfs-part``) left by an
        interrupted transfer of the same file, and skip files already here whole
        (confirmed by the sender's SHA-256); otherwise start every file over.
    :param kept: called with a file's name and the bytes held when a transfer that
        stops keeps its partial copy for a later resume (never for a sender that says
        it cannot resume: the partial copy is removed, and ``status`` says so).
    :param sink: write the one offered file or pipe here (``--stdout``) instead of
        into ``output_dir``; an offer of anything else is refused.
    :param zstd: take compressed chunks.
    """
    receiving = _Receiving(
        Pump(channel, Receiver(proto, time.monotonic())),
        output_dir=output_dir,
        overwrite=overwrite,
        progress=progress or NullProgress(),
        resume=resume,
        status=status,
        kept=kept,
        sink=sink,
    )
    try:
        await receiving.run(decide, zstd=zstd)
        return receiving.result.finish()
    except BaseException as exc:
        await receiving.fail(exc)
        raise
    finally:
        await receiving.close()


class _Receiving:
    """One receive: the files' side of the receiver's conversation."""

    def __init__(
        self,
        pump: Pump,
        *,
        output_dir: Path,
        overwrite: bool,
        progress: Progress,
        resume: bool,
        status: Callable[[str], None],
        kept: Callable[[str, int], None],
        sink: IO[bytes] | None,
    ) -> None:
        assert isinstance(pump.machine, Receiver)
        self.pump = pump
        self.machine: Receiver = pump.machine
        self.output_dir = output_dir
        self.overwrite = overwrite
        self.progress = progress
        self.resume = resume
        self.status = status
        self.kept = kept
        self.sink = sink
        self.result = TransferResult()
        self.part: PartFile | None = None  # the partial copy being written
        self.few = True  # name each saved file (not for a huge tree)
        self.in_memory = False  # a text message, or --stdout: no file of ours
        self.resumable = True  # the sender says it can resume (Offer.resumes)
        self.claims: NameClaims | None = None
        self.placer = Placer(output_dir, overwrite=overwrite, acknowledge=self._acknowledge)

    async def run(self, decide: Callable[[Offer, Plan], Awaitable[bool]], *, zstd: bool) -> None:
        pump = self.pump
        offer = (await pump.expect(AskUser)).offer
        plan = await self._plan(offer)
        if not await pump.serve(decide(offer, plan), listen=True):
            self.machine.refuse()
            await pump.last_word()
            raise DeclinedError()
        destinations = plan.paths
        held, complete = await self._held(offer, plan)
        self.machine.accept(tuple(held), zstd)
        pump.flush()
        self.result.started = time.monotonic()
        proposal = (await pump.expect(ConfirmPrefixes)).resume
        starts = await pump.serve(
            _confirm_prefixes(proposal, destinations, held, complete, self.status)
        )
        for i in sorted(complete):
            if starts[i][0] != held[i] and not self.overwrite:
                assert self.claims is not None
                self.claims.move(i, self.status)  # both are kept: this one under a free name
        self.machine.prefixes_confirmed(tuple(offset for offset, _ in starts))
        pump.flush()
        self.progress.begin(len(offer.files), None if offer.stream else offer.total_size)
        self.few = len(offer.files) <= MAX_SAVED_LINES
        many = len(offer.files) >= MANY_FILES
        for i, (info, (offset, prefix)) in enumerate(zip(offer.files, starts, strict=True)):
            whole = i in complete and offset == info.size
            # Of many files, a small one is held in memory until it checks out,
            # then written once (no partial copy and record: two file creations
            # fewer); it has nothing worth resuming.
            small = (
                many and not (whole or self.in_memory or offset) and info.size <= SMALL_FILE_BYTES
            )
            # A large file takes a while: the small ones before it need not wait.
            await self.placer.poll(now=info.size - offset >= BATCH_BYTES // 8)
            await self._receive_one(offer, i, destinations[i], offset, prefix, whole, small)
            await self.placer.poll()
        await pump.serve(self.placer.drain())
        if not self.few and not self.in_memory:
            self.status(f"Saved {describe_offer(offer)} in {self.output_dir}")

    async def _plan(self, offer: Offer) -> Plan:
        """Where each offered file goes (refusing what --stdout cannot take)."""
        if self.sink is not None and (offer.text or len(offer.files) != 1 or offer.folders):
            self.machine.refuse(reject(STDOUT_ONLY))
            await self.pump.last_word()
            raise RejectedError(
                f"the sender offers {describe_offer(offer)}; --stdout takes one file or pipe"
            )
        self.in_memory = offer.text or self.sink is not None
        self.resumable = offer.resumes
        if self.in_memory:
            return Plan([Path(_shown_name(info.name)) for info in offer.files], written=False)
        return await self.pump.serve(
            asyncio.to_thread(
                plan_destinations,
                offer,
                self.output_dir,
                overwrite=self.overwrite,
                resume=self.resume,
            )
        )

    async def _held(self, offer: Offer, plan: Plan) -> tuple[list[int], set[int]]:
        """How much of each file is here (a partial copy, or whole): folders made,
        names claimed."""
        if self.in_memory:
            return [0] * len(offer.files), set()
        self.claims = NameClaims(plan.paths, overwrite=self.overwrite)
        await self.pump.serve(asyncio.to_thread(make_folders, plan))
        if not self.resume:
            return [0] * len(offer.files), set()
        return await self.pump.serve(
            asyncio.to_thread(find_held, offer, plan.paths, self.status, self.claims)
        )

    async def _receive_one(
        self,
        offer: Offer,
        i: int,
        dest: Path,
        offset: int,
        prefix: HashState | None,
        whole: bool,
        small: bool,
    ) -> None:
        """Take one file's bytes into its partial copy (or memory) and verify them."""
        info = offer.files[i]
        memory: MemoryFile | None = None
        if not (whole or self.in_memory or small):
            assert self.claims is not None
            # The claim first: it may move the file to a free name (offset 0: a file
            # with a partial copy to continue was claimed by find_held).
            claim = self.claims.claim(i, self.status)
            self.part = PartFile(
                dest, offset=offset, prefix=prefix, identity=identity_of(info), claim=claim
            )
            writer: Callable[[bytes | memoryview], Awaitable[None] | None] = self.part.write
        else:
            memory = MemoryFile(self.sink, prefix)
            writer = memory.write
        self.progress.start(dest.name if not self.in_memory else "stdout", info.size)
        self.progress.advance(offset)
        started = time.monotonic()
        try:
            done = await self._chunks(writer)
        finally:
            self.progress.finish()
        seconds = time.monotonic() - started
        if self.part is not None:
            self.part.verify(done.sha256)
            if info.stream:  # its size is what came
                info = dataclasses.replace(info, size=self.part.written)
            self.placer.add(Verified(self.part, info, dest, offset, None, done.sha256, seconds))
            self.part = None
            return
        assert memory is not None
        checking = memory.verify(done.sha256)  # a pipe's flush may take a while
        size = await (self.pump.serve(checking) if self.sink is not None else checking)
        if offer.text:
            self.result.text = _text_message(bytes(memory.data))
        if info.stream:
            info = dataclasses.replace(info, size=size)
        data = bytes(memory.data) if small else None
        self.placer.add(Verified(None, info, dest, offset, data, done.sha256, seconds))
        self.result.skipped_files += whole and info.size > 0

    async def _chunks(
        self, writer: Callable[[bytes | memoryview], Awaitable[None] | None]
    ) -> FileDone:
        """Write chunks until the file's FILE_DONE (the hot path)."""
        pump, result, progress = self.pump, self.result, self.progress
        while True:
            event = await pump.next_action()
            if type(event) is Chunk:
                if not result.received:
                    # Wall time, so scripts/bench can compare it across processes.
                    logger.info("first data byte at %.6f", time.time())
                pending = writer(event.data)
                if pending is not None:
                    await pump.serve(pending)
                result.received += len(event.data)
                progress.advance(len(event.data))
            elif isinstance(event, FileDone):
                return event
            else:
                raise RemoteProtocolError(f"unexpected {type(event).__name__} from the other side")

    async def _acknowledge(self, items: list[Verified]) -> None:
        """A batch is in place: record it, say so, and acknowledge it."""
        result = self.result
        for item in items:
            if self.few and (item.part is not None or item.data is not None):
                self.status(_saved(item.dest, item.info.name))
            result.records.append(
                FileRecord(
                    name="/".join((*item.info.folder, item.info.name)),
                    path=None if self.in_memory else item.dest,
                    size=item.info.size,
                    sha256=item.sha256.hex(),
                    seconds=item.seconds,
                    resumed_bytes=item.offset,
                )
            )
            result.total_bytes += item.info.size
            result.resumed_bytes += item.offset
            result.resumed_files += bool(item.offset) and item.part is not None
        self.machine.files_placed(len(items))
        self.pump.flush()

    async def fail(self, exc: BaseException) -> None:
        """Keep (or remove) the partial copy being written, place what was verified,
        and tell the peer why we stop."""
        part = self.part
        if part is not None:
            held_bytes = part.offset + part.written
            if isinstance(exc, _UNTRUSTED) or not held_bytes:
                part.discard()
            elif not self.resumable:
                # Kept, it would only be replaced by the next offer of the file.
                part.discard()
                self.status(
                    f"Removed the {format_size(held_bytes)} of {part.final.name} received: "
                    "the sender cannot resume a transfer (a web page), so sending it "
                    "again starts over"
                )
            else:
                part.keep()
                self.kept(part.final.name, held_bytes)
        await self.placer.abandon()
        await self.pump.abort(exc)

    async def close(self) -> None:
        await self.placer.close()
        if self.claims is not None:  # after the last file is placed (or kept)
            self.claims.release_all()


#: From this many files in one offer, small files skip the partial copy.
MANY_FILES = 100
#: Up to this many files (what an offer of protocol 2 could hold), the receiver
#: names each one it saved; beyond, one line for them all.
MAX_SAVED_LINES = 1000


def describe_offer(offer: Offer) -> str:
    """``3 files``, ``12 files in 2 folders``, ``a text message``: for messages."""
    if offer.text:
        return "a text message"
    what = f"{len(offer.files)} file" + ("s" if len(offer.files) != 1 else "")
    if offer.folders:
        what += f" in {len(offer.folders)} folder" + ("s" if len(offer.folders) != 1 else "")
    return what


def _shown_name(offered: str) -> str:
    """The name of a pipe or text, only ever shown: its safe form, or ``-``."""
    try:
        return safe_name(offered)
    except RemoteProtocolError:
        return "-"


def _text_message(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError("the text message is not valid UTF-8") from exc


async def _confirm_prefixes(
    proposal: Resume,
    destinations: list[Path],
    held: list[int],
    complete: set[int],
    status: Callable[[str], None],
) -> list[tuple[int, HashState | None]]:
    """Where each file really starts: the sender's offset where our own bytes (a
    partial copy, or the whole file already here) hash as the sender's do, else 0
    (and a partial copy is replaced)."""

    said: list[str] = []  # told once back on the event loop, not from the worker

    def confirm() -> list[tuple[int, HashState | None]]:
        starts: list[tuple[int, HashState | None]] = []
        for i, (dest, offset) in enumerate(zip(destinations, proposal.offsets, strict=True)):
            if i in complete and not held[i]:
                starts.append((0, None))  # an empty file: nothing to compare
                continue
            ours = dest if i in complete else part_path(dest)
            prefix = hash_partial(ours, offset) if offset else None
            if prefix is not None and digests_equal(prefix.digest(), proposal.sha256[i]):
                starts.append((offset, prefix))
                continue
            if i in complete:
                pass  # refused, or replaced with --overwrite: the caller decides
            elif offset:
                said.append(f"{dest.name}: the sender's file differs from the partial copy")
            elif held[i]:
                said.append(f"{dest.name}: the sender sends it from the start")
            starts.append((0, None))
        return starts

    starts = await asyncio.to_thread(confirm)
    for line in said:
        status(f"{line}; starting over")
    return starts


def _saved(dest: Path, offered: str) -> str:
    """The line for a file now in place, saying when its name is not the offered one."""
    line = f"Saved {dest}"
    if dest.name != offered:
        line += f" (offered as {offered[:MAX_SHOWN_NAME_CHARS]!r})"
    return line
