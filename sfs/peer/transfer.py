"""Moving files over an abstract message channel: what both sides share.

:class:`Pump` drives a conversation machine (:mod:`sfs.peer.proto.conversation`)
over any :class:`~sfs.peer.transport.channel.Channel`, which is how the unit tests
run a transfer over a pair of in-memory queues; :mod:`sfs.peer.sending` and
:mod:`sfs.peer.receiving` do each side's file work around it.  It is aioquic's
``asyncio/protocol.py`` for sfs: the only place that sends, and the one clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sfs.errors import PeerGoneError, RemoteProtocolError, SfsError
from sfs.peer.proto.conversation import Action, Conversation
from sfs.peer.proto.pacing import Pace
from sfs.peer.proto.wire import Offer
from sfs.peer.transport.channel import Channel

logger = logging.getLogger(__name__)

T = TypeVar("T")
A = TypeVar("A", bound=Action)

#: Of an offered name, at most this much is repeated back in a status line.
MAX_SHOWN_NAME_CHARS = 80
#: How long a side that sends the last frame (reject, cancel) waits for the peer to
#: read it and close, before closing itself.
LAST_WORD_GRACE_SECONDS = 3.0
#: How long a CANCEL may take to leave this machine, behind the data queued before it
#: (a slow link, or a receiver held back by --limit-rate reads megabytes late): closed
#: sooner, it is lost with them, and the other side takes the end for an outage.
LAST_WORD_DRAIN_SECONDS = 20.0
#: Past this, a side waiting for its CANCEL to leave says so.
LAST_WORD_SAY_SECONDS = 1.0
#: How often the wait for a CANCEL to leave looks at what is still queued.
LAST_WORD_LOOK_SECONDS = 0.1
#: A file up to this size is read at once on the event loop (a thread hop per small
#: file costs more than the read), and received into memory, checked, and written
#: once to sfs's staging folder (a tree of thousands of small files).
SMALL_FILE_BYTES = 256 * 1024


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
    #: How often the connection broke and the two sides met again (--reconnect-window).
    reconnects: int = 0

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

    async def paced(self, pace: Pace, n: int) -> None:
        """``n`` bytes of file data moved: wait as long as ``pace`` (--limit-rate)
        says before the next, the timers running."""
        wait = pace.spend(n, time.monotonic())
        if wait:
            until = time.monotonic() + wait
            await self.bounded(lambda: asyncio.sleep(max(0.0, until - time.monotonic())))

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

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the blocking ``fn(*args)`` in a worker thread while the timers run.

        The sender's hot path (a block read per MiB): an executor future under a
        timeout, where :meth:`serve` would make a task per call, which measured a
        fifth slower end to end (the reads overlapped less with the receiver's work).
        """
        future = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        try:
            while True:
                try:
                    async with asyncio.timeout(self._time_left()):
                        # Shielded: a timer that fires leaves the thread's result to come.
                        return await asyncio.shield(future)
                except TimeoutError:
                    self.tick(time.monotonic())
        except BaseException:
            # Ctrl-C or a timer's error: the caller closes the file while the thread may
            # still read it. That read's error is expected; unretrieved, asyncio would
            # print it with a traceback ("Future exception was never retrieved").
            future.add_done_callback(_collect)
            raise

    def take_ready(self) -> list[Action]:
        """Give the machine every frame already here (never waits): what the
        receiver said meanwhile, so a CANCEL stops the sender at once."""
        actions: list[Action] = []
        now = time.monotonic()
        while (frame := self.channel.poll()) is not None:
            if (action := self.machine.frame_received(frame, now)) is not None:
                actions.append(action)
        deadline = self.machine.next_deadline()
        if deadline is not None and now >= deadline:
            self.tick(now)
        return actions

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

    async def abort(self, exc: BaseException, status: Callable[[str], None] | None = None) -> None:
        """Tell the peer why we stop, if the protocol still allows a word and the peer
        is still there to read it.

        :param status: says so when the word waits behind queued data (a second
            Ctrl-C ends the wait at once).
        """
        if isinstance(exc, PeerGoneError) or not self.machine.abort(exc):
            return
        try:
            self.flush()
        except (SfsError, ConnectionError):
            logger.debug("could not deliver the cancel frame", exc_info=True)
            return
        await _drain(self.channel, status)
        await linger(self.channel, LAST_WORD_GRACE_SECONDS)


async def _drain(channel: Channel, status: Callable[[str], None] | None) -> None:
    """Wait until what this side queued, the last word last, has left it (what the
    peer's TCP or SCTP acknowledged is the peer's to read, even after we close), or
    the peer closed; at most LAST_WORD_DRAIN_SECONDS."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    said = False
    closed = asyncio.ensure_future(channel.wait_closed())
    try:
        while channel.unsent_bytes() and loop.time() - started < LAST_WORD_DRAIN_SECONDS:
            if not said and status is not None and loop.time() - started >= LAST_WORD_SAY_SECONDS:
                said = True
                status("Telling the other side (after the data already on its way)…")
            done, _ = await asyncio.wait({closed}, timeout=LAST_WORD_LOOK_SECONDS)
            if done:
                return
    finally:
        closed.cancel()
        await asyncio.gather(closed, return_exceptions=True)


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


def _collect(future: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned thread job's outcome, so nothing prints it."""
    if not future.cancelled():
        future.exception()


def describe_offer(offer: Offer) -> str:
    """``3 files``, ``12 files in 2 folders``, ``a text message``: for messages."""
    if offer.text:
        return "a text message"
    what = f"{len(offer.files)} file" + ("s" if len(offer.files) != 1 else "")
    if offer.folders:
        what += f" in {len(offer.folders)} folder" + ("s" if len(offer.folders) != 1 else "")
    return what
