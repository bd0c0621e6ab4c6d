"""The receiving side: answer the offer, confirm where files resume, and write every
file safely.

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
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

from sfs.errors import (
    CryptoError,
    DeclinedError,
    IntegrityError,
    ProtocolError,
    RejectedError,
    RemoteProtocolError,
)
from sfs.peer.files.destinations import NameClaims, Plan, find_held, make_folders, plan_destinations
from sfs.peer.files.partial import (
    HashState,
    MemoryFile,
    PartFile,
    hash_partial,
    identity_of,
    part_path,
)
from sfs.peer.files.placer import BATCH_BYTES, Placer, Verified
from sfs.peer.proto.conversation import (
    AskUser,
    ConfirmPrefixes,
    Receiver,
)
from sfs.peer.proto.crypto import digests_equal
from sfs.peer.proto.framing import TransferProtocol
from sfs.peer.proto.names import safe_name
from sfs.peer.proto.pacing import Pace
from sfs.peer.proto.progress import NullProgress, Progress
from sfs.peer.proto.reasons import STDOUT_ONLY, reject
from sfs.peer.proto.wire import Chunk, FileDone, Offer, Resume
from sfs.peer.transfer import (
    MAX_SHOWN_NAME_CHARS,
    SMALL_FILE_BYTES,
    FileRecord,
    Pump,
    TransferResult,
    describe_offer,
)
from sfs.peer.transport.channel import Channel
from sfs.text import format_size

logger = logging.getLogger(__name__)


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
    limit_rate: float | None = None,
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
    :param limit_rate: take file data at no more than this many bytes a second (the
        transport's flow control then holds the sender back).
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
    if limit_rate is not None:
        receiving.pace = Pace(limit_rate, time.monotonic())
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
        #: --limit-rate: how fast file data is taken.
        self.pace: Pace | None = None

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
                if self.pace is not None:  # (the hot path: no call without --limit-rate)
                    await pump.paced(self.pace, len(event.data))
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
                    "the sender cannot resume a transfer (its offer says so), so sending it "
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
