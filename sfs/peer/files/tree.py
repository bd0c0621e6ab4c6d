"""Folders: what the sender walks into a transfer (issue 12).

:func:`walk` turns the paths a user named into entries (files and folders, each with
its path inside the transfer as components); :mod:`sfs.peer.proto.tree` plans where
the receiver puts them.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from sfs import platform
from sfs.errors import SourceError
from sfs.peer.files.exclusion import Ignores, LeaveOut
from sfs.peer.proto.tree import MAX_DEPTH
from sfs.peer.proto.wire import MAX_ENTRIES


@dataclass(frozen=True)
class Entry:
    """A file or folder to send.

    :param parts: its path inside the transfer, e.g. ``("photos", "2026", "a.jpg")``
    :param source: where it is on this machine
    """

    parts: tuple[str, ...]
    source: Path
    is_dir: bool
    size: int = 0
    mtime_ns: int = 0
    executable: bool = False


@dataclass(frozen=True)
class Walked:
    """:param skipped: what was named or found but is not sent, one line each
    (symbolic links are not followed, devices, sockets and FIFOs are not files)."""

    entries: tuple[Entry, ...]
    skipped: tuple[str, ...]
    #: (files, folders) left out by --exclude or --gitignore (a folder counts once:
    #: what is in it is not walked).
    left_out: tuple[int, int] = (0, 0)

    @property
    def files(self) -> int:
        return sum(not e.is_dir for e in self.entries)

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.entries)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


#: How a pipe is sent (a FIFO or a device named as a file is refused with this).
PIPE_HINT = "send a pipe's output with `-` (e.g. `sfs send CODE - < FILE`)"


def open_regular(path: Path) -> tuple[IO[bytes], os.stat_result]:
    """``path`` opened for reading, if it is a regular file (a named symbolic link is
    followed), with its ``fstat``.

    Opened with O_NONBLOCK, so that a FIFO (or a device) never blocks the ``open``:
    checking with ``stat`` first would leave a moment in which one could be put in
    its place. The file type comes from the open file; for a regular file O_NONBLOCK
    is cleared again (it means nothing there on Linux, but not everywhere).

    :raises SourceError: missing, unreadable, a folder, or not a regular file.
    """
    nonblock = getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, platform.nonblocking_read_flags())
    except FileNotFoundError:
        raise SourceError(f"{str(path)!r}: no such file") from None
    except IsADirectoryError:
        raise SourceError(f"{str(path)!r} is a folder; sfs sends files") from None
    except OSError as exc:
        raise SourceError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise SourceError(f"{str(path)!r} is a folder; sfs sends files")
        if not stat.S_ISREG(info.st_mode):
            raise SourceError(f"{str(path)!r} is {_kind(info.st_mode)}, not a file: {PIPE_HINT}")
        if nonblock:
            import fcntl

            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~nonblock)
        return os.fdopen(fd, "rb"), info
    except BaseException:
        os.close(fd)
        raise


def reads_more_than_its_size(f: IO[bytes], info: os.stat_result) -> bool:
    """A regular file that says it is empty but gives bytes when read: most of /proc,
    some of /sys and of FUSE. Its size cannot be offered; it can be sent as a pipe is.
    (``peek`` leaves what it reads to be read again.)"""
    return info.st_size == 0 and bool(cast(io.BufferedReader, f).peek(1))


def size_unknown(path: Path) -> str:
    return (
        f"{str(path)!r} says it is empty but reading it gives bytes (a /proc or /sys file?): "
        f"sfs sends such a file only alone, as a pipe; {PIPE_HINT}"
    )


def walk(
    paths: Sequence[Path], *, max_entries: int = MAX_ENTRIES, leave_out: LeaveOut | None = None
) -> Walked:
    """Everything under ``paths``, each folder's entries in name order.  A named
    symbolic link is followed; links inside folders are not.

    :param leave_out: --exclude and --gitignore, for what is inside named folders.

    :raises SourceError: a named path is missing or unreadable, two named paths have
        the same name, the tree is deeper than MAX_DEPTH or has more than
        ``max_entries`` entries.
    """
    entries: list[Entry] = []
    skipped: list[str] = []
    top: set[str] = set()
    left_out = [0, 0]

    def add(path: Path, parts: tuple[str, ...], ignores: Ignores) -> None:
        if len(parts) > MAX_DEPTH:
            raise SourceError(f"{str(path)!r} is nested more than {MAX_DEPTH} folders deep")
        try:
            # A link the user named is what they mean to send; one found inside a
            # tree may point anywhere (out of it, or back up it), so it is skipped.
            info = path.stat() if len(parts) == 1 else path.lstat()
        except OSError as exc:
            raise SourceError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
        is_dir = stat.S_ISDIR(info.st_mode)
        if len(parts) > 1 and leave_out and _left_out(leave_out, ignores, parts[1:], is_dir):
            left_out[1 if is_dir else 0] += 1
            return
        if is_dir:
            entries.append(Entry(parts, path, True, mtime_ns=info.st_mtime_ns))
            _check_count()
            try:
                children = sorted(os.scandir(path), key=lambda d: d.name)
            except OSError as exc:
                raise SourceError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
            if leave_out is not None and leave_out.gitignore:
                ignores = ignores.entering(path, parts[1:])
            for child in children:
                add(Path(child.path), (*parts, child.name), ignores)
        elif stat.S_ISREG(info.st_mode):
            executable = bool(info.st_mode & stat.S_IXUSR)
            entries.append(Entry(parts, path, False, info.st_size, info.st_mtime_ns, executable))
            _check_count()
        else:
            skipped.append(f"{path} ({_kind(info.st_mode)})")

    def _check_count() -> None:
        if len(entries) > max_entries:
            raise SourceError(f"sfs sends at most {max_entries} files and folders at once")

    for path in paths:
        name = path.name or path.resolve().name
        if not name:
            raise SourceError(f"{str(path)!r} has no name to send it under")
        if name in top:
            raise SourceError(f"two of the named paths are called {name!r}; rename one")
        top.add(name)
        add(path, (name,), Ignores())
    return Walked(tuple(entries), tuple(skipped), (left_out[0], left_out[1]))


def _left_out(leave_out: LeaveOut, ignores: Ignores, inside: tuple[str, ...], is_dir: bool) -> bool:
    if leave_out.excluded(inside, is_dir):
        return True
    if not leave_out.gitignore:
        return False
    return (is_dir and inside[-1] == ".git") or ignores.ignored(inside, is_dir)
