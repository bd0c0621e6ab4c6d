"""What differs between Linux, macOS and Windows, decided in this one place.

Every call that exists on some operating systems only, or behaves differently on
them, goes through a function here, so the rest of sfs reads the same everywhere and
the Windows and macOS paths can be unit-tested on Linux: the decisions look at
``os.name``, ``sys.platform`` and the ``os`` module *when called*, which a test can
monkeypatch.

- ``os.open`` opens in text mode on Windows unless ``O_BINARY`` is given (every
  ``\\n`` written would become ``\\r\\n``): :func:`open_flags`.
- ``fsync`` on Windows (FlushFileBuffers) needs a handle open for writing:
  :func:`sync_open_flags`.
- ``sync(2)`` waits for the data only on Linux; macOS and the BSDs schedule the
  writes and return, and Windows has none: :func:`sync_all`.
- Hard links fail on FAT, exFAT and some network shares; Windows renames without
  replacing by itself: :func:`place_no_replace` never replaces a file, either way.
- ``resource`` and ``/proc/self/fd`` are POSIX and Linux only: :func:`raise_fd_limit`,
  :func:`open_fd_count`.
- ``loop.add_signal_handler`` raises NotImplementedError on Windows:
  :func:`on_terminate`.
- Permission bits other than read-only mean nothing on Windows: :func:`has_exec_bit`.
- ``getpass.getuser()`` fails without a login name (no variable, no passwd entry;
  ImportError on Windows before Python 3.13): :func:`login_name`.
- File locks: ``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows, none on a
  file system without locks; and a file open elsewhere cannot be removed on Windows:
  :func:`try_lock`, :func:`release_lock_file`.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a type only: the CLI imports this module before any event loop
    import asyncio

logger = logging.getLogger(__name__)

#: Errors of link(2) that mean "no hard links here" (FAT on Linux says EPERM, a
#: network share may say anything of these); the fallback in place_no_replace still
#: never replaces a file.
NO_HARD_LINK_ERRNOS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EINVAL}
    | {errno.EMLINK, errno.EACCES}
)


def is_windows() -> bool:
    return os.name == "nt"


def is_linux() -> bool:
    return sys.platform.startswith("linux")


def open_flags(flags: int) -> int:
    """``flags`` for ``os.open`` of file data: binary mode (Windows) and no following
    of a symbolic link at the last component (where the OS can refuse one)."""
    return flags | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)


def nonblocking_read_flags() -> int:
    """Flags to open a file the user named for reading: links followed (unlike
    :func:`open_flags`), and O_NONBLOCK so that a FIFO or a device never blocks the
    ``open`` itself (the caller checks the type with ``fstat`` then)."""
    extra = getattr(os, "O_BINARY", 0) | getattr(os, "O_NOCTTY", 0)
    return os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | extra


def sync_open_flags() -> int:
    """How to open a file sfs wrote in order to fsync it: FlushFileBuffers on Windows
    needs write access; elsewhere read-only is enough."""
    return open_flags(os.O_RDWR if is_windows() else os.O_RDONLY)


def sync_all() -> bool:
    """Flush everything written to the disks with one ``sync()``, if that waits for
    the data here (Linux); return False where it does not, and each file needs its
    own fsync."""
    if not is_linux() or not hasattr(os, "sync"):
        return False
    os.sync()
    return True


def _link(src: Path, dst: Path) -> None:
    if os.link in os.supports_follow_symlinks:
        os.link(src, dst, follow_symlinks=False)
    else:
        os.link(src, dst)


def place_no_replace(src: Path, dst: Path) -> None:
    """Give the file at ``src`` (sfs's own) the name ``dst``, never replacing a file
    that is there, even one that appeared a moment ago.

    Windows: a rename, which never replaces. Elsewhere a hard link, which fails if the
    name exists, then the old name goes; where hard links do not work (FAT, some
    network shares), the name is first reserved with an empty file created
    exclusively (O_EXCL), and only that file of sfs's own is replaced by the rename.

    :raises FileExistsError: something is at ``dst``; ``src`` is left as it was.
    """
    if is_windows():
        os.rename(src, dst)  # MoveFileEx without REPLACE_EXISTING
        return
    try:
        _link(src, dst)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in NO_HARD_LINK_ERRNOS:
            raise
        logger.debug("no hard link for %s (%s): reserving the name instead", dst, exc)
        _rename_onto_reserved(src, dst)
        return
    os.unlink(src)


def _rename_onto_reserved(src: Path, dst: Path) -> None:
    fd = os.open(dst, open_flags(os.O_WRONLY | os.O_CREAT | os.O_EXCL), 0o600)
    os.close(fd)
    try:
        os.replace(src, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(dst)  # the empty file just made: nobody else's
        raise


#: Errors of flock(2) that mean "no locks on this file system" (some FUSE and network
#: file systems): a transfer there goes on without an exclusive claim, as before.
NO_LOCK_ERRNOS = frozenset({errno.ENOLCK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
#: What msvcrt.locking raises for a byte another handle has locked.
_WINDOWS_LOCKED_ERRNOS = frozenset({errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)})


def try_lock(fd: int) -> bool:
    """Take an exclusive advisory lock on the open file ``fd`` without waiting.

    True if it is ours now (or the file system has no locks at all), False if another
    open of the file holds it: another process, or another open in this one.  The
    operating system drops the lock when the file is closed or its process ends, however
    it ends (kill -9 included), so nothing stale is ever held.
    """
    if is_windows():
        msvcrt: Any = importlib.import_module("msvcrt")
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # byte 0, even of an empty file
        except OSError as exc:
            if exc.errno in _WINDOWS_LOCKED_ERRNOS:
                return False
            raise
        return True
    try:
        fcntl: Any = importlib.import_module("fcntl")
    except ImportError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno not in NO_LOCK_ERRNOS:
            raise
        logger.info("no file locks here (%s): going on without an exclusive claim", exc)
    return True


def release_lock_file(fd: int, path: Path) -> None:
    """Remove the lock file ``path`` that ``fd`` holds locked, then close it.

    POSIX: removed while still locked, so whoever opens the name next makes a new file
    (and whoever opened the old one meanwhile sees, after locking it, that it is no
    longer at that name).  Windows cannot remove a file another handle has open: closed
    first, then removed if nobody else has it open (if somebody has, it stays for them).
    """
    if is_windows():
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    finally:
        os.close(fd)


def has_exec_bit() -> bool:
    """Whether files have an executable bit worth keeping (not on Windows)."""
    return not is_windows()


def raise_fd_limit(unlimited_target: int) -> int | None:
    """Raise the soft limit on open files to the hard one (or to ``unlimited_target``
    when the hard limit is unlimited); return the soft limit now, or None where there
    is no such limit (Windows) or it is unlimited."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    target = unlimited_target if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # macOS caps it below "unlimited"
            logger.warning("could not raise the open-files limit from %d: %s", soft, exc)
        else:
            soft = target
    return soft


#: Where a process lists its open file descriptors: Linux, then macOS and the BSDs.
FD_FOLDERS = ("/proc/self/fd", "/dev/fd")


def open_fd_count() -> int | None:
    """How many file descriptors this process has open, or None if the OS does not
    tell (Windows)."""
    for folder in FD_FOLDERS:
        with contextlib.suppress(OSError):
            return len(os.listdir(folder))
    return None


def on_terminate(
    loop: asyncio.AbstractEventLoop, callback: Callable[[], None]
) -> Callable[[], None]:
    """Call ``callback`` on SIGTERM (what a service manager sends); return what undoes
    it.  Windows has no such handler: there SIGTERM ends the process as before."""
    try:
        loop.add_signal_handler(signal.SIGTERM, callback)
    except (NotImplementedError, AttributeError):
        return lambda: None

    def undo() -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)

    return undo


def login_name() -> str:
    """The user's login name, or "" when the system cannot tell."""
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return ""
