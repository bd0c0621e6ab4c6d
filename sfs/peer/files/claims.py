"""Claims: one transfer at a time on each name sfs writes in a folder.

Two ``sfs receive`` in one folder may be offered files of the same name.  Before a
transfer looks at, creates, continues, truncates, removes or places the partial copy
of ``NAME`` (``.NAME.sfs-part``, its record ``.NAME.sfs-info``, then ``NAME``), it
holds the claim on ``NAME``: an exclusive lock on ``.NAME.sfs-lock``, an empty file
of sfs's own.  The operating system drops the lock when its process ends, however it
ends, so a transfer killed half-way leaves nothing held: the next run takes the claim
and resumes the partial copy.  The lock file is removed when the claim is released
(a stale one, left by a killed process, is taken over by the next claim and removed).

The steps avoid the classic race of a lock file that is removed: whoever locks a file
checks that it is still the one at that name, and tries again if its holder removed
it meanwhile.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from sfs import platform
from sfs.errors import DestinationExistsError, DiskError

logger = logging.getLogger(__name__)

#: How many times a claim is tried when the lock file keeps being replaced under it
#: (each time, its holder released it and another transfer took it at once).
MAX_CLAIM_TRIES = 8


class Claim:
    """A held claim on one name: its lock file, open and locked, until released."""

    def __init__(self, lock: Path, fd: int) -> None:
        self.lock = lock
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the name back (idempotent): the lock file goes, then the lock."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            platform.release_lock_file(fd, self.lock)
        except OSError:
            logger.info("could not remove the lock file %s", self.lock, exc_info=True)


def try_claim(lock: Path) -> Claim | None:
    """Claim the name whose lock file is ``lock``; None if another transfer holds it.

    :raises DestinationExistsError: something sfs did not write is at ``lock`` (a link,
        a folder, a file with something in it): never opened for writing, never removed.
    :raises DiskError: the folder cannot be written.
    """
    for _ in range(MAX_CLAIM_TRIES):
        try:
            fd = os.open(lock, platform.open_flags(os.O_RDWR | os.O_CREAT), 0o600)
        except OSError as exc:
            raise _refusal(exc, lock) from exc
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode) or opened.st_size:
                raise _in_the_way(lock)
            if not platform.try_lock(fd):
                os.close(fd)
                return None
            if _same_file(opened, lock):
                return Claim(lock, fd)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # its holder removed it before we locked it: try the new one
        logger.debug("the lock file %s was replaced while claiming it; again", lock)
    return None


def _same_file(opened: os.stat_result, path: Path) -> bool:
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def _in_the_way(lock: Path) -> DestinationExistsError:
    return DestinationExistsError(
        f"{str(lock)!r} is in the way, and sfs did not write it; "
        "move it away to receive this file here"
    )


def _refusal(exc: OSError, lock: Path) -> DestinationExistsError | DiskError:
    # O_NOFOLLOW refuses a link at the last component with ELOOP (EMLINK on FreeBSD);
    # a folder there cannot be opened for writing.
    if exc.errno in (errno.ELOOP, errno.EMLINK, errno.EISDIR):
        return _in_the_way(lock)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskError(f"disk full while writing {str(lock)!r}")
    return DiskError(f"cannot write {str(lock)!r}: {exc.strerror or exc}")
