"""Sources: what the sender reads (files, a folder's walk, a text, a pipe)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sfs.defaults import MAX_TEXT_BYTES
from sfs.errors import (
    SourceError,
)
from sfs.peer.files.exclusion import LeaveOut
from sfs.peer.files.partial import HashState, hash_stream
from sfs.peer.files.tree import open_regular, reads_more_than_its_size, size_unknown, walk
from sfs.text import format_size


@dataclass(frozen=True)
class SourceFile:
    """What to send: a file at ``path``; or ``data`` held in memory (a text message);
    or a pipe, ``reader``, of unknown size (``size`` 0)."""

    path: Path
    name: str
    size: int
    mtime_ns: int
    folder: tuple[str, ...] = ()
    executable: bool = False
    data: bytes | None = None
    reader: IO[bytes] | None = field(default=None, compare=False)

    @property
    def stream(self) -> bool:
        return self.reader is not None


def text_source(text: str) -> SourceFile:
    """A text message to send (``sfs send --text``).

    :raises SourceError: it is larger than a text message may be.
    """
    data = text.encode("utf-8", errors="replace")
    if len(data) > MAX_TEXT_BYTES:
        raise SourceError(
            f"the text is {format_size(len(data))}; a text message is at most "
            f"{format_size(MAX_TEXT_BYTES)} (send it as a file)"
        )
    return SourceFile(Path("-"), "", len(data), 0, data=data)


def stream_source(reader: IO[bytes], name: str) -> SourceFile:
    """A pipe to send (``sfs send -``): read to its end, size unknown until then."""
    return SourceFile(Path("-"), name, 0, 0, reader=reader)


@dataclass(frozen=True)
class Sources:
    """What one `sfs send` sends: files (in folders, for a tree), every folder, and
    what was found but is not sent (links inside folders, FIFOs, sockets, devices)."""

    files: list[SourceFile]
    folders: tuple[tuple[str, ...], ...] = ()
    skipped: tuple[str, ...] = ()
    #: (files, folders) left out by --exclude or --gitignore.
    left_out: tuple[int, int] = (0, 0)


def _text(name: str) -> str:
    # A name that is not valid UTF-8 (possible on Linux) is offered with replacement
    # characters rather than refused.
    return os.fsencode(name).decode("utf-8", errors="replace")


def inspect_tree(paths: list[Path], leave_out: LeaveOut | None = None) -> Sources:
    """Check every file and folder to send before contacting anyone.

    A single file that says it is empty but reads more (``/proc/version``) is sent
    as a pipe is: what a read gives, size unknown until its end.

    :raises SourceError: as :func:`inspect_sources`, or a folder that cannot be walked,
        or a file in it that says it is empty but reads more.
    """
    if len(paths) == 1 and not paths[0].is_dir():
        f, info = open_regular(paths[0])
        if reads_more_than_its_size(f, info):
            name = _text(paths[0].name or paths[0].resolve().name)
            return Sources([SourceFile(paths[0], name, 0, info.st_mtime_ns, reader=f)])
        f.close()
    files: list[SourceFile] = []
    folders: list[tuple[str, ...]] = []
    skipped: list[str] = []
    names: set[str] = set()
    files_out = folders_out = 0
    for path in paths:
        name = path.name or path.resolve().name
        if name in names:
            raise SourceError(f"two of the named paths are called {name!r}; rename one")
        names.add(name)
        if not path.is_dir():
            files += inspect_sources([path])
            continue
        walked = walk([path], leave_out=leave_out)
        skipped += walked.skipped
        files_out += walked.left_out[0]
        folders_out += walked.left_out[1]
        for entry in walked.entries:
            parts = tuple(_text(part) for part in entry.parts)
            if entry.is_dir:
                folders.append(parts)
            else:
                if entry.size == 0:
                    refuse_size_unknown(entry.source)
                files.append(
                    SourceFile(
                        entry.source,
                        parts[-1],
                        entry.size,
                        entry.mtime_ns,
                        folder=parts[:-1],
                        executable=entry.executable,
                    )
                )
    if not files:
        left = " but what --exclude or --gitignore leaves out" if files_out else ""
        raise SourceError(f"no file to send (the folders named hold no files{left})")
    return Sources(files, tuple(folders), tuple(skipped), (files_out, folders_out))


def inspect_sources(paths: list[Path]) -> list[SourceFile]:
    """Check every file to send before contacting anyone.

    :raises SourceError: a file is missing, not a regular file (a FIFO or a device:
        those are refused at once, never opened in a way that could block), unreadable,
        or says it is empty but reads more.
    """
    sources = []
    for path in paths:
        f, st = open_regular(path)
        with f:
            if reads_more_than_its_size(f, st):
                raise SourceError(size_unknown(path))
        executable = bool(st.st_mode & stat.S_IXUSR)
        sources.append(
            SourceFile(path, _text(path.name), st.st_size, st.st_mtime_ns, executable=executable)
        )
    if not sources:
        raise SourceError("no file to send")
    return sources


def refuse_size_unknown(path: Path) -> None:
    f, info = open_regular(path)
    with f:
        if reads_more_than_its_size(f, info):
            raise SourceError(size_unknown(path))


def open_source(source: SourceFile) -> IO[bytes]:
    # Opened again now: what is there must still be a regular file (a FIFO put in its
    # place since the check would otherwise block the open).
    return open_regular(source.path)[0]


def hash_prefix(source: SourceFile, length: int) -> HashState | None:
    with open_source(source) as f:
        return hash_stream(f, length)
