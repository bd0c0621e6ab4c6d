"""Partial copies: sfs's own hidden ``.NAME.sfs-part`` beside ``.NAME.sfs-info`` (a record of
which offered file it holds), written, hashed, made durable and renamed into place.

A file at either hidden name that sfs did not write is never opened, truncated or
removed: the transfer is refused instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import stat
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sfs import platform
from sfs.errors import (
    DestinationExistsError,
    DiskError,
    IntegrityError,
)
from sfs.peer.files.claims import Claim, try_claim
from sfs.peer.proto.crypto import digests_equal
from sfs.peer.proto.names import (
    candidate_names,
    names_written,
)
from sfs.peer.proto.wire import (
    FileInfo,
)

logger = logging.getLogger(__name__)


#: What a record says it is, so that no other JSON file passes for one.
RECORD_KIND = "sfs partial copy"
_MAX_RECORD_BYTES = 16 * 1024
#: File reads happen in a worker thread, this much at a time, to keep the event loop free.
READ_BLOCK_BYTES = 1024 * 1024
#: A large file's bytes go to the disk in steps of this much while it arrives.
WRITE_BEHIND_BYTES = 32 * 1024 * 1024


# -- writing ------------------------------------------------------------------------------


class PartFile:
    """sfs's own partial copy of a file while it is written, with its record beside it
    saying which offered file it holds, so an interrupted transfer can resume.

    :param identity: what the record says: offered name, size, mtime.
    :param offset: bytes already held (a resumed transfer): the partial copy that
        find_partial found is reopened and cut to this. Otherwise any partial copy of
        sfs's own at these names is replaced, and new files are made with O_EXCL.
    :param prefix: SHA-256 state of those bytes (required when ``offset`` > 0).
    :param claim: this transfer's claim on ``final`` (:mod:`sfs.peer.files.claims`); without
        one, it is taken here. Released once the file is placed, kept or discarded.
    :raises DestinationExistsError: a file sfs did not write is at one of the names, or
        (taking the claim here) another transfer holds the name.
    """

    def __init__(
        self,
        final: Path,
        *,
        identity: dict[str, object],
        offset: int = 0,
        prefix: HashState | None = None,
        claim: Claim | None = None,
    ) -> None:
        self.final = final
        self.part = part_path(final)
        self.meta = meta_path(final)
        self.claim = claim if claim is not None else claim_or_refuse(final)
        try:
            fd = self._reopen(offset) if offset else self._create(identity)
        except OSError as exc:
            self.claim.release()
            raise disk_error(exc, self.part) from exc
        except BaseException:
            self.claim.release()
            raise
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._hash = prefix.copy() if offset and prefix is not None else hashlib.sha256()
        self.offset = offset
        self.written = 0
        self._flushed = 0  # bytes of written handed to the disk by _write_behind

    def _reopen(self, offset: int) -> int:
        fd = os.open(self.part, platform.open_flags(os.O_WRONLY))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise DiskError(f"{str(self.part)!r} is not a regular file")
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _create(self, identity: dict[str, object]) -> int:
        if own_partial(self.final) is not None:  # raises if the names are not ours
            # Part first: a record without a part is still recognisably ours.
            _unlink(self.part)
            _unlink(self.meta)
        record = json.dumps({"v": 1, "kind": RECORD_KIND, **identity}).encode("utf-8")
        try:
            # Record first, then the part: a crash in between leaves only a record,
            # which is ours; a part without a record would not be.
            _write_new(self.meta, record)
            return os.open(self.part, new_file_flags(), 0o644)
        except FileExistsError:
            raise DestinationExistsError(
                f"{str(self.part)!r} appeared while sfs was about to write it; not touching it"
            ) from None

    def write(self, data: bytes | memoryview) -> None:
        try:
            self._file.write(data)
            if self.written - self._flushed >= WRITE_BEHIND_BYTES:
                self._write_behind()
        except OSError as exc:
            raise disk_error(exc, self.part) from exc
        self._hash.update(data)
        self.written += len(data)

    def _write_behind(self) -> None:
        """Start writing what arrived to the disk now, not all at the final fsync: the
        file is durable sooner after its last byte (and leaves the page cache)."""
        if not hasattr(os, "posix_fadvise"):
            return
        self._file.flush()
        start = self.offset + self._flushed
        os.posix_fadvise(
            self._file.fileno(), start, self.written - self._flushed, os.POSIX_FADV_DONTNEED
        )
        self._flushed = self.written

    async def commit(self, expected_sha256: bytes, *, overwrite: bool) -> Path:
        """Check the hash, make the bytes durable, and move the file to its final name
        (returned)."""
        self.verify(expected_sha256)
        await asyncio.to_thread(make_durable, [self.part])
        return self.place(overwrite=overwrite)

    def verify(self, expected_sha256: bytes) -> None:
        """Check the hash and close the partial copy (not yet durable, not yet placed).

        :raises IntegrityError: the bytes are not what the sender sent.
        """
        if not digests_equal(self._hash.digest(), expected_sha256):
            raise IntegrityError(
                f"{self.final.name}: SHA-256 mismatch; the received data was discarded"
            )
        try:
            self._file.close()
        except OSError as exc:
            raise disk_error(exc, self.part) from exc

    def place(self, *, overwrite: bool) -> Path:
        """Give the verified, durable partial copy its final name (the next free one
        if a file appeared there meanwhile); return it."""
        try:
            placed = place_part(self.part, self.final, overwrite=overwrite)
        except OSError as exc:
            raise disk_error(exc, self.final) from exc
        _unlink(self.meta)
        self.claim.release()
        return placed

    def keep(self) -> None:
        """Stop, keeping what arrived (every byte authenticated) for a later resume."""
        self._close()
        self.claim.release()

    def discard(self) -> None:
        self._close()
        _unlink(self.part)  # still under the claim: nobody else's files
        _unlink(self.meta)
        self.claim.release()

    def _close(self) -> None:
        try:
            self._file.close()
        except OSError:
            logger.debug("closing %s failed", self.part, exc_info=True)


HashState = Any  # hashlib's sha256 object (no public type name)


def new_file_flags() -> int:
    """A new file of sfs's own: never one that exists, never through a link."""
    return platform.open_flags(os.O_WRONLY | os.O_CREAT | os.O_EXCL)


def part_path(final: Path) -> Path:
    return final.with_name(names_written(final.name)[1])


def meta_path(final: Path) -> Path:
    return final.with_name(names_written(final.name)[2])


def lock_path(final: Path) -> Path:
    return final.with_name(names_written(final.name)[3])


def in_use_error(final: Path) -> DestinationExistsError:
    return DestinationExistsError(
        f"{str(final)!r} is in use by another transfer; let it finish, or receive into "
        "another --output folder"
    )


def claim_or_refuse(final: Path) -> Claim:
    """This transfer's claim on ``final``.

    :raises DestinationExistsError: another transfer holds it (or something sfs did
        not write is at its lock's name).
    """
    claim = try_claim(lock_path(final))
    if claim is None:
        raise in_use_error(final)
    return claim


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, new_file_flags(), 0o644)
    try:
        os.write(fd, data)  # one small write: a record is whole or absent
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass(frozen=True)
class OwnPartial:
    """sfs's own partial copy at a destination: what its record says, and its size."""

    identity: dict[str, object]
    size: int  # 0 when only the record is there


def own_partial(final: Path) -> OwnPartial | None:
    """sfs's own partial copy for ``final``, or None if neither of its names exists.

    Ours means: a record that sfs wrote (a regular file of the exact form sfs writes)
    and, if the part exists, a regular file rather than a symlink or anything else.

    :raises DestinationExistsError: something sfs did not write is at one of the names.
    """
    part, meta = part_path(final), meta_path(final)
    part_st, meta_st = lstat_or_none(part), lstat_or_none(meta)
    if part_st is None and meta_st is None:
        return None
    identity = _read_record(meta) if meta_st is not None and stat.S_ISREG(meta_st.st_mode) else None
    in_the_way = meta if identity is None else part
    if identity is None or (part_st is not None and not stat.S_ISREG(part_st.st_mode)):
        raise DestinationExistsError(
            f"{str(in_the_way)!r} is in the way of {final.name!r}, and sfs did not write it; "
            "move it away to receive this file here"
        )
    return OwnPartial(identity, part_st.st_size if part_st is not None else 0)


def lstat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise disk_error(exc, path) from exc


def _read_record(path: Path) -> dict[str, object] | None:
    """The identity in a record sfs wrote, or None if the file is not one."""
    try:
        fd = os.open(path, platform.open_flags(os.O_RDONLY))
        with os.fdopen(fd, "rb") as f:
            obj = json.loads(f.read(_MAX_RECORD_BYTES + 1))
    except (OSError, ValueError):
        return None
    if not isinstance(obj, dict) or set(obj) != {"v", "kind", "name", "size", "mtime_ns"}:
        return None
    identity = {key: obj[key] for key in ("name", "size", "mtime_ns")}
    if (
        obj["v"] != 1
        or obj["kind"] != RECORD_KIND
        or not isinstance(obj["name"], str)
        or type(obj["size"]) is not int
        or type(obj["mtime_ns"]) is not int
    ):
        return None
    return identity


def identity_of(info: FileInfo) -> dict[str, object]:
    return {"name": info.name, "size": info.size, "mtime_ns": info.mtime_ns}


def make_durable(paths: list[Path]) -> None:
    """Make the bytes of ``paths`` durable: one sync(2) for many files where it waits
    for the data (Linux; one fsync each costs about 0.4 ms here, which caps a tree of
    small files at about 2 500 files/s), else an fsync per file."""
    if not paths:
        return
    try:
        if len(paths) > 1 and platform.sync_all():
            return
        for path in paths:
            fd = os.open(path, platform.sync_open_flags())
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        raise disk_error(exc, paths[0]) from exc


def hash_partial(part: Path, length: int) -> HashState | None:
    """The SHA-256 state of the first ``length`` bytes of our partial copy; None if it
    holds fewer (or is not a regular file any more)."""
    try:
        fd = os.open(part, platform.open_flags(os.O_RDONLY))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return hash_stream(f, length)


def hash_stream(f: IO[bytes], length: int) -> HashState | None:
    digest = hashlib.sha256()
    remaining = length
    while remaining:
        block = f.read(min(READ_BLOCK_BYTES, remaining))
        if not block:
            return None
        digest.update(block)
        remaining -= len(block)
    return digest


def place_part(part: Path, final: Path, *, overwrite: bool) -> Path:
    """Give ``part`` the name ``final`` (or, when a file appeared there meanwhile and
    ``overwrite`` is off, the next free name); return the name it has."""
    if overwrite:
        os.replace(part, final)
        return final
    # Never rename() alone, which would silently replace a file that appeared while
    # the transfer ran: see platform.place_no_replace (a link, or a rename onto a name
    # sfs reserved with O_EXCL where there are no hard links, or Windows's rename).
    # The link is the claim on a numbered name: it fails if anything is there.
    for name in candidate_names(final.name):
        path = final.with_name(name)
        if path != final and lstat_or_none(lock_path(path)) is not None:
            continue  # another transfer is about to place a file there
        try:
            platform.place_no_replace(part, path)
        except FileExistsError:
            continue
        if path != final:
            logger.info("%s appeared during the transfer; placed as %s", final, path)
        return path
    raise AssertionError("unreachable: candidate_names raises when every name is taken")


def disk_error(exc: OSError, path: Path) -> DiskError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskError(f"disk full while writing {str(path)!r}")
    return DiskError(f"cannot write {str(path)!r}: {exc.strerror or exc}")


class MemoryFile:
    """Where bytes go that are not written to a partial copy: a text message or a
    small file of a large offer (kept in memory: at most MAX_TEXT_BYTES or
    SMALL_FILE_BYTES, which the protocol enforces), a pipe to ``sink`` (stdout), or
    nothing at all (a file already here whole: no bytes come)."""

    def __init__(self, sink: IO[bytes] | None, prefix: HashState | None) -> None:
        self.sink = sink
        self.data = bytearray()
        self.size = 0
        self._hash = prefix.copy() if prefix is not None else hashlib.sha256()

    def write(self, data: bytes | memoryview) -> Awaitable[None] | None:
        self._hash.update(data)
        self.size += len(data)
        if self.sink is None:
            self.data += data
            return None
        return asyncio.to_thread(self._write, bytes(data))

    def _write(self, data: bytes) -> None:
        assert self.sink is not None
        try:
            self.sink.write(data)
        except OSError as exc:
            raise DiskError(f"cannot write to the output: {exc.strerror or exc}") from exc

    async def verify(self, expected_sha256: bytes) -> int:
        """Check the hash (after the data went out, for a pipe: it cannot be taken
        back); return how many bytes came."""
        if self.sink is not None:
            await asyncio.to_thread(self._flush)
        if not digests_equal(self._hash.digest(), expected_sha256):
            raise IntegrityError(
                "SHA-256 mismatch: the data received does not match what was sent"
                + (" (it was already written to the output)" if self.sink is not None else "")
            )
        return self.size

    def _flush(self) -> None:
        assert self.sink is not None
        try:
            self.sink.flush()
        except OSError as exc:
            raise DiskError(f"cannot write to the output: {exc.strerror or exc}") from exc
