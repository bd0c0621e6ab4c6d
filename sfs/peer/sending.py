"""The sending side: offer, prove our prefixes for a resume, stream each file, and
report success only after the receiver acknowledged the last one (it checked each
file's SHA-256 and put it in place)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable

from sfs.errors import (
    SourceError,
)
from sfs.peer.files.partial import (
    READ_BLOCK_BYTES,
    HashState,
)
from sfs.peer.files.sources import SourceFile, hash_prefix, open_source
from sfs.peer.proto.conversation import (
    Acknowledged,
    HashPrefixes,
    Sender,
    SendFiles,
)
from sfs.peer.proto.framing import TransferProtocol
from sfs.peer.proto.pacing import Pace
from sfs.peer.proto.packing import Packer
from sfs.peer.proto.progress import Departures, NullProgress, Progress
from sfs.peer.proto.wire import Chunk, FileInfo, Offer
from sfs.peer.transfer import SMALL_FILE_BYTES, FileRecord, Pump, TransferResult
from sfs.peer.transport.channel import Channel

logger = logging.getLogger(__name__)


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
    limit_rate: float | None = None,
) -> TransferResult:
    """Offer ``sources``, stream them if accepted, and return after the last ack.

    :param limit_rate: send file data at no more than this many bytes a second.

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
        pace = (
            None if limit_rate is None else Pace(limit_rate, time.monotonic(), largest=chunk_size)
        )
        try:
            for source, (offset, prefix) in zip(sources, starts, strict=True):
                record = await _send_one(
                    pump, machine, source, packer, departures, offset, prefix, pace
                )
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
        await pump.abort(exc, status)
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
    pace: Pace | None = None,
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
            if pace is not None:  # (the hot path: no call without --limit-rate)
                await pump.paced(pace, len(chunk.data))
        # What the receiver sent meanwhile: a cancel stops us at once.
        pump.take_ready()  # acknowledgements (the machine counts them), or a CANCEL
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
                block, chunks = await pump.in_thread(read_file, min(block_size, remaining))
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
        block, chunks = await pump.in_thread(read_pipe)
        if not block:
            return
        yield block, chunks
