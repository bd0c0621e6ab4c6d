"""Progress: what a transfer reports to its user (:class:`Progress`), and the sender's
account of what has left for the receiver (:class:`Departures`), sans I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Progress(Protocol):
    def begin(self, files: int, total: int | None) -> None:
        """Once, before the first file: how many files and bytes (None: unknown)."""

    def start(self, name: str, size: int | None) -> None:
        """A file begins; ``size`` None for a pipe of unknown size."""

    def advance(self, n: int) -> None: ...
    def finish(self) -> None: ...


class NullProgress:
    def begin(self, files: int, total: int | None) -> None:
        pass

    def start(self, name: str, size: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass


# -- the two sides --------------------------------------------------------------------------


@dataclass
class Departing:
    name: str
    size: int | None
    offset: int
    plain: int = 0  # bytes handed to the channel (past the offset)
    handed_all: bool = False
    started: bool = False
    shown: int = 0  # of plain, shown as gone


class Departures:
    """A sender's progress as what has left for the receiver, not what was queued.

    The channel buffers megabytes (``Channel.unsent_bytes``), and the sender hands
    the next file's bytes while the last one's are still buffered; so a file is
    shown started, advanced and finished as its bytes leave, in order, not as they
    are handed over.  The receiver acknowledges only whole files, so what is in flight
    beyond the buffer (a congestion window, the peer's socket) is the error left, and
    at the last acknowledgement everything counts.  Pure: the driver feeds it.
    """

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._files: list[Departing] = []
        self._head = 0  # the first file not yet shown finished
        self._before_head = 0  # plain bytes of the files before it (kept, not summed:
        # a tree of 10 000 files would make every step cost the whole list)
        self._handed_plain = 0
        self._handed_wire = 0
        self._gone = 0  # of _handed_plain

    def file(self, name: str, size: int | None, offset: int) -> None:
        """The next file; ``offset`` bytes of it are already there (resumed)."""
        self._files.append(Departing(name, size, offset))
        self._walk()

    def handed(self, plain: int, wire: int) -> None:
        """``plain`` bytes of the current file went into the channel as ``wire`` bytes."""
        self._files[-1].plain += plain
        self._handed_plain += plain
        self._handed_wire += wire

    def handed_all(self) -> None:
        """The current file's last byte went into the channel."""
        self._files[-1].handed_all = True
        self._walk()

    def left(self, unsent_wire: int) -> None:
        """The channel still holds ``unsent_wire`` bytes: the rest has left."""
        ratio = self._handed_plain / max(self._handed_wire, 1)  # compression
        gone = self._handed_plain - int(unsent_wire * ratio)
        self._gone = min(self._handed_plain, max(self._gone, gone))
        self._walk()

    def all_acknowledged(self) -> None:
        """The receiver acknowledged every file: every byte arrived."""
        self._gone = self._handed_plain
        self._walk()

    def close(self) -> None:
        """The transfer ended (or failed): take down what is still shown."""
        if self._head < len(self._files) and self._files[self._head].started:
            self._progress.finish()
        self._head = len(self._files)

    def _walk(self) -> None:
        before = self._before_head
        while self._head < len(self._files):
            f = self._files[self._head]
            if not f.started:
                f.started = True
                self._progress.start(f.name, f.size)
                self._progress.advance(f.offset)
            now = min(f.plain, max(0, self._gone - before))
            if now > f.shown:
                self._progress.advance(now - f.shown)
                f.shown = now
            if not (f.handed_all and f.shown == f.plain):
                return
            self._progress.finish()
            before += f.plain
            self._before_head = before
            self._head += 1
