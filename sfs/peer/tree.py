"""Folders: what the sender walks into a transfer, and where the receiver puts it.

Folders (issue 12): :func:`walk` turns
the paths a user named into entries (files and folders, each with its path inside
the transfer as components), and :func:`plan_tree` turns offered paths into local
relative paths that can only land inside the output folder.

Offered paths are the peer's words.  Each component goes through
:func:`sfs.peer.names.safe_name` on its own; a component that is empty, ``.``,
``..``, or holds a separator or NUL is refused, never repaired (a sender that writes
``a/../../x`` is not honest); so is a path deeper than MAX_DEPTH, and a file that
would sit where a folder goes (or the reverse).  Two files that become one name here
(after sanitising, case-insensitively: the output folder may be on a file system that
ignores case) are both kept: the second under the next free name, ``x (1).txt``.  Inside
a folder a name keeps its leading dot (``.gitignore``); at the top it does not.
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
from sfs.errors import RemoteProtocolError, SourceError
from sfs.peer.names import free_name, names_taken, safe_name
from sfs.peer.protocol import MAX_ENTRIES, MAX_PATH_DEPTH

#: The deepest path one entry may have (components, the file's name included), and
#: the most entries (files and folders) one transfer may carry: the protocol's limits.
MAX_DEPTH = MAX_PATH_DEPTH
_FORBIDDEN_IN_COMPONENT = ("/", "\\", "\0")


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


def walk(paths: Sequence[Path], *, max_entries: int = MAX_ENTRIES) -> Walked:
    """Everything under ``paths``, each folder's entries in name order.  A named
    symbolic link is followed; links inside folders are not.

    :raises SourceError: a named path is missing or unreadable, two named paths have
        the same name, the tree is deeper than MAX_DEPTH or has more than
        ``max_entries`` entries.
    """
    entries: list[Entry] = []
    skipped: list[str] = []
    top: set[str] = set()

    def add(path: Path, parts: tuple[str, ...]) -> None:
        if len(parts) > MAX_DEPTH:
            raise SourceError(f"{str(path)!r} is nested more than {MAX_DEPTH} folders deep")
        try:
            # A link the user named is what they mean to send; one found inside a
            # tree may point anywhere (out of it, or back up it), so it is skipped.
            info = path.stat() if len(parts) == 1 else path.lstat()
        except OSError as exc:
            raise SourceError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
        if stat.S_ISDIR(info.st_mode):
            entries.append(Entry(parts, path, True, mtime_ns=info.st_mtime_ns))
            _check_count()
            try:
                children = sorted(os.scandir(path), key=lambda d: d.name)
            except OSError as exc:
                raise SourceError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
            for child in children:
                add(Path(child.path), (*parts, child.name))
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
        add(path, (name,))
    return Walked(tuple(entries), tuple(skipped))


def local_parts(parts: Sequence[str]) -> tuple[str, ...]:
    """The local relative path of one offered path (components).

    The top component is a name at the top of the output folder, never hidden; those
    below keep a leading dot (:func:`sfs.peer.names.safe_name`, ``in_folder``).

    :raises RemoteProtocolError: the path is empty, too deep, or a component is
        ``.``, ``..``, empty, holds a separator or NUL, or is unusable as a name.
    """
    if not 1 <= len(parts) <= MAX_DEPTH:
        raise RemoteProtocolError(f"an offered path has 1 to {MAX_DEPTH} components")
    for part in parts:
        if part in ("", ".", "..") or any(c in part for c in _FORBIDDEN_IN_COMPONENT):
            raise RemoteProtocolError(f"refusing the offered path {'/'.join(parts)[:80]!r}")
    return tuple(safe_name(part, in_folder=depth > 0) for depth, part in enumerate(parts))


def plan_tree(offered: Sequence[tuple[Sequence[str], bool]]) -> list[tuple[str, ...]]:
    """Local relative paths for the offered ``(parts, is_dir)`` entries, in order.

    A folder may be named more than once (explicitly, and as a file's parent); a file
    whose name another file of its folder has here goes to the next free name; a file
    and a folder that meet in one name are refused, as is an entry under a file.

    :raises RemoteProtocolError: as :func:`local_parts`, or on such a clash.
    """
    if len(offered) > MAX_ENTRIES:
        raise RemoteProtocolError(f"an offer carries at most {MAX_ENTRIES} files and folders")
    kinds: dict[tuple[str, ...], bool] = {}  # casefolded local path -> is a folder
    used: dict[tuple[str, ...], set[str]] = {}  # casefolded folder -> every name used in it
    planned: list[tuple[str, ...]] = []
    for parts, is_dir in offered:
        local = local_parts(parts)
        key = tuple(part.casefold() for part in local)
        for depth in range(1, len(key)):
            if kinds.setdefault(key[:depth], True) is False:
                raise RemoteProtocolError(_clash(parts, "a file is in the way of its folder"))
            used.setdefault(key[: depth - 1], set()).add(key[depth - 1])
        known = kinds.get(key)
        if known is not None and known != is_dir:
            raise RemoteProtocolError(_clash(parts, "a file and a folder have one name here"))
        names = used.setdefault(key[:-1], set())
        if not is_dir:
            name = free_name(local[-1], names)
            local, key = (*local[:-1], name), (*key[:-1], name.casefold())
            names |= names_taken(name)
        names.add(key[-1])
        kinds[key] = is_dir
        planned.append(local)
    return planned


def _clash(parts: Sequence[str], why: str) -> str:
    return f"the offered path {'/'.join(parts)[:80]!r} cannot be placed: {why}"
