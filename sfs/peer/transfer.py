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
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sfs.errors import (
    CryptoError,
    DeclinedError,
    IntegrityError,
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
from sfs.peer.proto.crypto import digests_equal
from sfs.peer.proto.framing import State, TransferProtocol
from sfs.peer.proto.names import (
    safe_name,
)
from sfs.peer.proto.packing import Packer
from sfs.peer.proto.progress import Departures, NullProgress, Progress
from sfs.peer.proto.reasons import DECLINED, STDOUT_ONLY, cancel_for, reject, stopped_by
from sfs.peer.proto.wire import (
    Accept,
    Chunk,
    Event,
    FileAck,
    FileDone,
    FileInfo,
    Offer,
    Partial,
    Ping,
    Resume,
    Start,
)
from sfs.peer.transport.channel import Channel
from sfs.text import format_size

logger = logging.getLogger(__name__)

#: Of an offered name, at most this much is repeated back in a status line.
MAX_SHOWN_NAME_CHARS = 80
#: A side sends a PING after this long without sending anything else.
PING_INTERVAL_SECONDS = 2.0
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


async def abort_transfer(channel: Channel, proto: TransferProtocol, exc: BaseException) -> None:
    """Tell the peer why we stop, if the protocol still allows a word."""
    if proto.state in (State.CLOSED, State.DONE):
        return
    try:
        async with asyncio.timeout(2):
            await channel.send(proto.send(cancel_for(exc)))
    except (SfsError, TimeoutError, ConnectionError):
        logger.debug("could not deliver the cancel frame", exc_info=True)
        return
    await linger(channel, LAST_WORD_GRACE_SECONDS)


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


async def next_event(channel: Channel, proto: TransferProtocol) -> Event:
    """The next event from the peer, keepalives and pieces of larger frames skipped."""
    while isinstance(event := proto.receive(await channel.receive()), Ping | Partial):
        pass
    return event


#: One lock per transfer for what is sealed ahead of sending: a large control payload
#: is sealed as several frames at once, and a keepalive PING sealed meanwhile must not
#: reach the channel before them (the peer accepts only the next counter).
_SEND_LOCKS: weakref.WeakKeyDictionary[TransferProtocol, asyncio.Lock] = weakref.WeakKeyDictionary()


def _send_lock(proto: TransferProtocol) -> asyncio.Lock:
    return _SEND_LOCKS.setdefault(proto, asyncio.Lock())


async def send_all(channel: Channel, proto: TransferProtocol, event: Event) -> None:
    """Send ``event`` in as many frames as it takes, none of ours between them."""
    async with _send_lock(proto):
        for frame in proto.send_frames(event):
            await channel.send(frame)


@asynccontextmanager
async def keepalive(channel: Channel, proto: TransferProtocol) -> AsyncIterator[None]:
    """Send a PING whenever this side has sent nothing for PING_INTERVAL_SECONDS, so
    the peer can tell a quiet connection (a user deciding, a disk busy) from a lost one."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_SECONDS)
            async with _send_lock(proto):
                if channel.seconds_since_send() >= PING_INTERVAL_SECONDS and proto.state not in (
                    State.CLOSED,
                    State.DONE,
                ):
                    await channel.send(proto.send(Ping()))

    task = asyncio.ensure_future(beat())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


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
    try:
        async with keepalive(channel, proto):
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
            await send_all(channel, proto, offer)
            if on_waiting is not None:
                on_waiting()
            reply = await next_event(channel, proto)
            if not isinstance(reply, Accept):
                raise stopped_by(reply, offer.version)
            status("The receiver accepted.")
            result.started = time.monotonic()
            starts = await _prefixes(sources, reply.held if resume else ())
            offsets = tuple(offset for offset, _ in starts)
            digests = tuple(p.digest() if p is not None else b"" for _, p in starts)
            await send_all(channel, proto, Resume(offsets, digests if any(offsets) else ()))
            if proto.state is State.CONFIRMING:
                verdict = await next_event(channel, proto)
                if not isinstance(verdict, Start):
                    raise stopped_by(verdict)
                for i, (source, offset) in enumerate(zip(sources, verdict.offsets, strict=True)):
                    if offsets[i] and not offset:
                        if offsets[i] < source.size:
                            status(
                                f"{source.name}: the receiver's partial copy differs; sending all"
                            )
                        starts[i] = (0, None)
            packer = Packer(chunk_size, compress=compress and proto.zstd)
            progress.begin(len(sources), None if offer.stream else offer.total_size)
            departures = Departures(progress)
            try:
                for source, (offset, prefix) in zip(sources, starts, strict=True):
                    record = await _send_one(
                        channel, proto, source, packer, departures, offset, prefix
                    )
                    size = record.size
                    result.records.append(record)
                    result.total_bytes += size
                    result.resumed_bytes += offset
                    whole = bool(source.size) and offset == source.size
                    result.skipped_files += whole
                    result.resumed_files += bool(offset) and not whole
                await _await_acks(channel, proto, departures)
            finally:
                departures.close()
        return result.finish()
    except BaseException as exc:
        await abort_transfer(channel, proto, exc)
        raise


async def _await_acks(channel: Channel, proto: TransferProtocol, departures: Departures) -> None:
    """The last acknowledgements, with the progress following the channel's buffer
    as it drains meanwhile (the last file is shown done only when it is)."""

    async def follow() -> None:
        while True:
            await asyncio.sleep(PROGRESS_TICK_SECONDS)  # a display refresh, not a wait
            departures.left(channel.unsent_bytes())

    follower = asyncio.create_task(follow())
    try:
        while proto.state is not State.DONE:
            event = await next_event(channel, proto)
            if not isinstance(event, FileAck):
                raise stopped_by(event)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    departures.all_acknowledged()


async def _prefixes(
    sources: list[SourceFile], held: tuple[int, ...]
) -> list[tuple[int, HashState | None]]:
    """Where to propose starting each file, with the hash state of our own bytes before
    that point: what the receiver holds, or 0 if our file is shorter than that now."""

    def hash_all() -> list[tuple[int, HashState | None]]:
        starts: list[tuple[int, HashState | None]] = []
        for i, source in enumerate(sources):
            # Only a file on disk resumes: a pipe never, and a text message is short
            # (a receiver that claims to hold part of either gets offset 0).
            on_disk = source.data is None and not source.stream
            offset = held[i] if held and on_disk else 0
            prefix = hash_prefix(source, offset) if offset else None
            starts.append((offset, prefix) if prefix is not None else (0, None))
        return starts

    return await asyncio.to_thread(hash_all)


#: A file up to this size is read at once on the event loop (a thread hop per small
#: file costs more than the read), and received into memory, checked, and written
#: once to sfs's staging folder (a tree of thousands of small files).
SMALL_FILE_BYTES = 256 * 1024
#: How often the sender's progress looks again at what has left, once every byte is
#: handed to the channel and only the acknowledgements are awaited.
PROGRESS_TICK_SECONDS = 0.25


async def _send_one(
    channel: Channel,
    proto: TransferProtocol,
    source: SourceFile,
    packer: Packer,
    departures: Departures,
    offset: int,
    prefix: HashState | None,
) -> FileRecord:
    """Send one file (or text, or pipe) from ``offset``; return its record."""
    digest = prefix if prefix is not None else hashlib.sha256()
    started = time.monotonic()
    departures.file(source.name, None if source.stream else source.size, offset)
    plain = offset  # bytes given to the channel
    async for block, chunks in _blocks(source, offset, packer):
        digest.update(block)
        for chunk in chunks:
            await channel.send(proto.send(chunk))
            size = len(chunk.data) if chunk.plain_size is None else chunk.plain_size
            plain += size
            departures.handed(size, len(chunk.data))
            departures.left(channel.unsent_bytes())
        _drain_acks(channel, proto)
    sha256 = digest.digest()
    await channel.send(proto.send(FileDone(sha256)))
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
    source: SourceFile, offset: int, packer: Packer
) -> AsyncIterator[tuple[bytes, list[Chunk]]]:
    """A source's bytes from ``offset``, block by block, each cut into chunks."""
    block_size = max(packer.chunk_size, READ_BLOCK_BYTES // packer.chunk_size * packer.chunk_size)
    if source.data is not None:
        if source.data[offset:]:
            yield source.data[offset:], packer.pack(source.data[offset:])
        return
    if source.reader is not None:
        reader = source.reader

        def read_pipe() -> tuple[bytes, list[Chunk]]:
            try:
                block = reader.read(block_size)
            except OSError as exc:
                raise SourceError(f"cannot read the input: {exc.strerror or exc}") from exc
            return block, packer.pack(block)

        while True:
            block, chunks = await asyncio.to_thread(read_pipe)
            if not block:
                return
            yield block, chunks
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
                block, chunks = await asyncio.to_thread(read_file, min(block_size, remaining))
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


def _drain_acks(channel: Channel, proto: TransferProtocol) -> None:
    """Handle what the receiver sent meanwhile, so a cancel stops us at once."""
    while (frame := channel.poll()) is not None:
        event = proto.receive(frame)
        if not isinstance(event, FileAck | Ping | Partial):
            raise stopped_by(event)


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
    progress = progress or NullProgress()
    result = TransferResult()
    part: PartFile | None = None
    few = True  # name each saved file (not for a huge tree)
    in_memory = False  # a text message, or --stdout: no file of ours
    resumable = True  # the sender says it can resume (Offer.resumes)

    async def acknowledge(items: list[Verified]) -> None:
        for item in items:
            if few and (item.part is not None or item.data is not None):
                status(_saved(item.dest, item.info.name))
            result.records.append(
                FileRecord(
                    name="/".join((*item.info.folder, item.info.name)),
                    path=None if in_memory else item.dest,
                    size=item.info.size,
                    sha256=item.sha256.hex(),
                    seconds=item.seconds,
                    resumed_bytes=item.offset,
                )
            )
            result.total_bytes += item.info.size
            result.resumed_bytes += item.offset
            result.resumed_files += bool(item.offset) and item.part is not None
        if items:
            await send_all(channel, proto, FileAck(len(items)))

    placer = Placer(output_dir, overwrite=overwrite, acknowledge=acknowledge)
    claims: NameClaims | None = None
    try:
        async with keepalive(channel, proto):
            offer = await next_event(channel, proto)
            if not isinstance(offer, Offer):
                raise stopped_by(offer)
            if sink is not None and (offer.text or len(offer.files) != 1 or offer.folders):
                refusal = RejectedError(
                    f"the sender offers {describe_offer(offer)}; --stdout takes one file or pipe"
                )
                await _refuse(channel, proto, STDOUT_ONLY)
                raise refusal
            in_memory = offer.text or sink is not None
            resumable = offer.resumes
            plan = (
                Plan([Path(_shown_name(info.name)) for info in offer.files], written=False)
                if in_memory
                else plan_destinations(offer, output_dir, overwrite=overwrite, resume=resume)
            )
            destinations = plan.paths
            if not await _decide_while_listening(channel, proto, decide, offer, plan):
                await _refuse(channel, proto, DECLINED)
                raise DeclinedError()
            held, complete = [0] * len(offer.files), set[int]()
            if not in_memory:
                claims = NameClaims(destinations, overwrite=overwrite)
                await asyncio.to_thread(make_folders, plan)
                if resume:
                    held, complete = await asyncio.to_thread(
                        find_held, offer, destinations, status, claims
                    )
            # Only how much: a hash of our bytes would tell anyone who can make a
            # matching offer what they are (docs/PROTOCOL.md, "Resume").
            await send_all(channel, proto, Accept(tuple(held) if any(held) else (), zstd))
            result.started = time.monotonic()
            proposal = await next_event(channel, proto)
            if not isinstance(proposal, Resume):
                raise stopped_by(proposal)
            starts = await _confirm_prefixes(proposal, destinations, held, complete, status)
            for i in sorted(complete):
                if starts[i][0] != held[i] and not overwrite:
                    assert claims is not None
                    claims.move(i, status)  # both are kept: this one under a free name
            if proto.state is State.CONFIRMING:
                await send_all(channel, proto, Start(tuple(offset for offset, _ in starts)))
            progress.begin(len(offer.files), None if offer.stream else offer.total_size)
            few = len(offer.files) <= MAX_SAVED_LINES
            many = len(offer.files) >= MANY_FILES
            for i, (info, (offset, prefix)) in enumerate(zip(offer.files, starts, strict=True)):
                whole = i in complete and offset == info.size
                # Of many files, a small one is held in memory until it checks out,
                # then written once (no partial copy and record: two file creations
                # fewer); it has nothing worth resuming.
                small = (
                    many and not (whole or in_memory or offset) and info.size <= SMALL_FILE_BYTES
                )
                # A large file takes a while: the small ones before it need not wait.
                await placer.poll(now=info.size - offset >= BATCH_BYTES // 8)
                if not (whole or in_memory or small):
                    assert claims is not None
                    # The claim first: it may move the file to a free name (offset 0:
                    # a file with a partial copy to continue was claimed by find_held).
                    claim = claims.claim(i, status)
                    part = PartFile(
                        destinations[i],
                        offset=offset,
                        prefix=prefix,
                        identity=identity_of(info),
                        claim=claim,
                    )
                    writer: Callable[[bytes | memoryview], Awaitable[None] | None] = part.write
                else:
                    memory = MemoryFile(sink, prefix)
                    writer = memory.write
                dest = destinations[i]
                progress.start(dest.name if not in_memory else "stdout", info.size)
                progress.advance(offset)
                started = time.monotonic()
                try:
                    while True:
                        event = await next_event(channel, proto)
                        if isinstance(event, Chunk):
                            if not result.received:
                                # Wall time, so scripts/bench can compare it across processes.
                                logger.info("first data byte at %.6f", time.time())
                            pending = writer(event.data)
                            if pending is not None:
                                await pending
                            result.received += len(event.data)
                            progress.advance(len(event.data))
                        elif isinstance(event, FileDone):
                            done = event
                            seconds = time.monotonic() - started
                            break
                        else:
                            raise stopped_by(event)
                finally:
                    progress.finish()
                if part is not None:
                    part.verify(done.sha256)
                    if info.stream:  # its size is what came
                        info = dataclasses.replace(info, size=part.written)
                    placer.add(Verified(part, info, dest, offset, None, done.sha256, seconds))
                    part = None
                else:
                    size = await memory.verify(done.sha256)
                    if offer.text:
                        result.text = _text_message(bytes(memory.data))
                    if info.stream:
                        info = dataclasses.replace(info, size=size)
                    data = bytes(memory.data) if small else None
                    placer.add(Verified(None, info, dest, offset, data, done.sha256, seconds))
                    result.skipped_files += whole and info.size > 0
                await placer.poll()
            await placer.drain()
            if not few and not in_memory:
                status(f"Saved {describe_offer(offer)} in {output_dir}")
        return result.finish()
    except BaseException as exc:
        if part is not None:
            held_bytes = part.offset + part.written
            if isinstance(exc, _UNTRUSTED) or not held_bytes:
                part.discard()
            elif not resumable:
                # Kept, it would only be replaced by the next offer of the file.
                part.discard()
                status(
                    f"Removed the {format_size(held_bytes)} of {part.final.name} received: "
                    "the sender cannot resume a transfer (a web page), so sending it "
                    "again starts over"
                )
            else:
                part.keep()
                kept(part.final.name, held_bytes)
        await placer.abandon()
        await abort_transfer(channel, proto, exc)
        raise
    finally:
        await placer.close()
        if claims is not None:  # after the last file is placed (or kept)
            claims.release_all()


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


async def _refuse(channel: Channel, proto: TransferProtocol, code: str) -> None:
    await channel.send(proto.send(reject(code)))
    await linger(channel, LAST_WORD_GRACE_SECONDS)


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


async def _decide_while_listening(
    channel: Channel,
    proto: TransferProtocol,
    decide: Callable[[Offer, Plan], Awaitable[bool]],
    offer: Offer,
    plan: Plan,
) -> bool:
    """Ask ``decide`` while reading the channel.

    Until the answer the sender may only PING or CANCEL: anything else is a protocol
    error at once, rather than frames piling up in memory while a prompt is open, and
    a CANCEL ends the prompt instead of waiting for the user.
    """

    async def refuse_until_answered() -> None:
        while True:
            event = proto.receive(await channel.receive())
            if not isinstance(event, Ping):
                raise stopped_by(event)

    deciding = asyncio.ensure_future(decide(offer, plan))
    listening = asyncio.ensure_future(refuse_until_answered())
    try:
        await asyncio.wait({deciding, listening}, return_when=asyncio.FIRST_COMPLETED)
        if listening.done():
            listening.result()  # raises: it only ever ends with an error
        return deciding.result()
    finally:
        for task in (deciding, listening):
            task.cancel()
        await asyncio.gather(deciding, listening, return_exceptions=True)


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
