"""Moving files over an abstract message channel: reading, hashing, safe writing.

This layer drives :class:`~sfs.peer.proto.framing.TransferProtocol` and does the file I/O.
It knows nothing of WebRTC: any :class:`~sfs.peer.channel.Channel` will do, which
is how the unit tests run it over a pair of in-memory queues.

Writing is careful: bytes go to a hidden partial copy of sfs's own, ``.NAME.sfs-part``
in the output folder (with ``.NAME.sfs-info`` beside it saying which offered file it
holds), the SHA-256 is checked, the data is fsynced, and only then does the file appear
at its final name, without ever replacing an existing file unless the user asked for
that.  A file at either hidden name that sfs did not write is never opened, truncated
or removed: the transfer is refused instead.  Each name is claimed by one transfer at a
time (:mod:`sfs.peer.claims`).  One rule for every name that is taken (a file already
there, another transfer's claim, two offered files that become one name, a file that
appears before the last step): the file goes to the next free name, ``NAME (1).EXT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import zstandard

from sfs import platform
from sfs.defaults import MAX_TEXT_BYTES
from sfs.errors import (
    CancelledByPeerError,
    CryptoError,
    DeclinedError,
    DestinationExistsError,
    DiskError,
    IntegrityError,
    ProtocolError,
    RejectedError,
    RemoteProtocolError,
    SfsError,
    SourceError,
    UpgradeError,
    VerificationError,
)
from sfs.peer.channel import Channel
from sfs.peer.claims import Claim, try_claim
from sfs.peer.files.tree import open_regular, reads_more_than_its_size, size_unknown, walk
from sfs.peer.proto.crypto import digests_equal
from sfs.peer.proto.framing import State, TransferProtocol
from sfs.peer.proto.names import (
    STAGING_PREFIX,
    candidate_names,
    clashes,
    free_name,
    names_taken,
    names_written,
    safe_name,
)
from sfs.peer.proto.tree import plan_tree
from sfs.peer.proto.wire import (
    Accept,
    Cancel,
    Chunk,
    Event,
    FileAck,
    FileDone,
    FileInfo,
    Offer,
    Partial,
    Ping,
    Reject,
    Resume,
    Start,
)
from sfs.text import format_size as format_size  # re-exported: it used to live here

logger = logging.getLogger(__name__)

#: What a record says it is, so that no other JSON file passes for one.
RECORD_KIND = "sfs partial copy"
_MAX_RECORD_BYTES = 16 * 1024
#: File reads happen in a worker thread, this much at a time, to keep the event loop free.
READ_BLOCK_BYTES = 1024 * 1024
#: A large file's bytes go to the disk in steps of this much while it arrives.
WRITE_BEHIND_BYTES = 32 * 1024 * 1024
#: Of an offered name, at most this much is repeated back in a status line.
MAX_SHOWN_NAME_CHARS = 80
#: A side sends a PING after this long without sending anything else.
PING_INTERVAL_SECONDS = 2.0
#: How long a side that sends the last frame (reject, cancel) waits for the peer to
#: read it and close, before closing itself.
LAST_WORD_GRACE_SECONDS = 3.0


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


def is_tree(offer: Offer) -> bool:
    return bool(offer.folders) or any(info.folder for info in offer.files)


@dataclass
class Plan:
    """What each offered file will become here, decided before the user is asked, and
    shown to them with the question.

    :param paths: each offered file's final path. A file that finds its name taken
        later (another transfer's claim, a file that appeared) moves on to the next
        free name, and the line that says it is saved names the path it has.
    :param folders: every folder a folder offer makes here, parents first.
    :param notes: one line for each name that is taken, saying what happens instead.
    :param written: False for a text message or ``--stdout``: the paths are only names.
    """

    paths: list[Path]
    folders: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    written: bool = True


def plan_destinations(
    offer: Offer, output_dir: Path, *, overwrite: bool, resume: bool = False
) -> Plan:
    """Choose the final path of every offered file, or refuse before anything is written.

    A name that is taken (by a file or folder already there, or by another offered
    file) goes to the next free name, ``NAME (1).EXT``; with ``overwrite`` a file
    there is replaced instead.  A folder offered at the top whose name is a folder
    here is continued (an interrupted transfer of it: it holds part of this offer and
    nothing in its way) or, unless ``overwrite``, the offered one goes to the next free
    name, ``photos (1)/``.

    :param resume: a regular file already at a destination, of the offered size, is
        no conflict: it may be the same file from an interrupted transfer, which
        the sender's SHA-256 will tell (see :func:`find_held`); if not, the offered
        file goes to the next free name then.
    :raises DestinationExistsError: a file sfs did not write is at the name of one of
        its own (a partial copy, its record).
    :raises DiskError: the output folder is unusable or has too little free space.
    :raises RemoteProtocolError: an offered path that cannot be placed safely.
    """
    if not output_dir.is_dir():
        raise DiskError(f"the output folder {str(output_dir)!r} does not exist")
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise DiskError(f"the output folder {str(output_dir)!r} is not writable")
    places = _Places(output_dir, overwrite=overwrite, resume=resume)
    if is_tree(offer):
        plan = _plan_tree(offer, output_dir, places)
    else:
        paths = [places.file(output_dir, safe_name(info.name), info) for info in offer.files]
        plan = Plan(paths, notes=places.notes)
    _check_free_space(offer, output_dir, plan.paths)
    return plan


class _Places:
    """The names a plan has given out so far, per folder, and the lines that say
    which were taken."""

    def __init__(self, output_dir: Path, *, overwrite: bool, resume: bool) -> None:
        self.output_dir = output_dir
        self.overwrite = overwrite
        self.resume = resume
        self.notes: list[str] = []
        self._taken: dict[Path, set[str]] = {}  # folder -> names sfs will write in it

    def taken(self, folder: Path) -> set[str]:
        return self._taken.setdefault(folder, set())

    def file(self, folder: Path, wanted: str, info: FileInfo) -> Path:
        """The first of ``wanted``'s names in ``folder`` that the offer has not given
        out and where a file can go: nothing there, a file to replace (overwrite), or
        a file of the offered size (resume: perhaps the offered file, already here)."""
        taken = self.taken(folder)
        for name in candidate_names(wanted):
            if clashes(name, taken):
                continue
            st = _lstat(folder / name)
            if st is None or (not stat.S_ISDIR(st.st_mode) and self.overwrite):
                break
            if self.resume and _maybe_complete(st, info):
                break
        path = folder / name
        taken |= names_taken(name)
        self._note(folder / wanted, path, info)
        return path

    def _note(self, wanted: Path, path: Path, info: FileInfo) -> None:
        if path != wanted:
            why = "exists" if _lstat(wanted) is not None else "is offered more than once"
            self.notes.append(f"{self._shown(wanted)} {why}: will save as {self._shown(path)}")
            return
        there = _lstat(path)
        if there is None or path.parent != self.output_dir:
            return  # inside a folder here: the folder's line says it
        if self.resume and _maybe_complete(there, info):
            instead = (
                "replaced (--overwrite)" if self.overwrite else "saved under the next free name"
            )
            self.notes.append(
                f"{self._shown(path)} exists with the same size: kept if it is the same "
                f"file, else {instead}"
            )
        elif self.overwrite:
            self.notes.append(f"{self._shown(path)} exists: will replace it (--overwrite)")

    def _shown(self, path: Path) -> str:
        return str(path.relative_to(self.output_dir))


#: Of the names that are taken, at most this many are said before the question.
MAX_PLAN_NOTES = 10


def _maybe_complete(st: os.stat_result, info: FileInfo) -> bool:
    """A regular file of the offered size may be the offered file, already here."""
    return stat.S_ISREG(st.st_mode) and not info.stream and st.st_size == info.size


def _check_free_space(offer: Offer, output_dir: Path, paths: list[Path]) -> None:
    # sfs's own partial copy is either continued or replaced, so its bytes count as
    # available either way; anything else at those names stops us here.
    reclaimable = 0
    for info, path in zip(offer.files, paths, strict=True):
        partial = _own_partial(path)
        if partial is not None:
            reclaimable += min(partial.size, info.size)
        elif (st := _lstat(path)) is not None and _maybe_complete(st, info):
            reclaimable += info.size  # perhaps already complete: nothing to write
    free = shutil.disk_usage(output_dir).free + reclaimable
    if offer.total_size > free:
        raise DiskError(
            f"not enough free space in {str(output_dir)!r}: "
            f"{format_size(offer.total_size)} offered, {format_size(free)} free"
        )


def _plan_tree(offer: Offer, output_dir: Path, places: _Places) -> Plan:
    """The final paths of a folder offer (sfs.peer.proto.tree decides the names inside it,
    this the names at the top); a folder that exists here is used as it is, unless it
    is not a folder or is a link."""
    entries: list[tuple[tuple[str, ...], bool]] = [(folder, True) for folder in offer.folders]
    entries += [((*info.folder, info.name), False) for info in offer.files]
    local = plan_tree(entries)
    files = local[len(offer.folders) :]
    wanted_tops = [parts[0] for parts in local[: len(offer.folders)]]
    wanted_tops += [parts[0] for parts in files if len(parts) > 1]
    tops = _plan_tops(output_dir, places, wanted_tops, zip(offer.files, files, strict=True))
    folders = {
        (tops[parts[0].casefold()], *parts[1:depth])
        for parts in local[: len(offer.folders)] + [p[:-1] for p in files]
        for depth in range(1, len(parts) + 1)
    }
    made = [output_dir.joinpath(*parts) for parts in sorted(folders, key=len)]
    for folder in made:
        _check_folder(folder)
    paths: list[Path] = []
    for info, parts in zip(offer.files, files, strict=True):
        if len(parts) == 1:
            paths.append(places.file(output_dir, parts[0], info))
        else:
            folder = output_dir.joinpath(tops[parts[0].casefold()], *parts[1:-1])
            paths.append(places.file(folder, parts[-1], info))
    return Plan(paths, made, places.notes)


def _plan_tops(
    output_dir: Path,
    places: _Places,
    wanted_tops: list[str],
    files: Iterable[tuple[FileInfo, tuple[str, ...]]],
) -> dict[str, str]:
    """The local name of each folder at the top of the offer (casefolded -> name): its
    own, or the next free one when a folder of that name here is not to be continued."""
    under: dict[str, list[tuple[FileInfo, tuple[str, ...]]]] = {}
    # The files at the top keep their names from the folders' (and take theirs later).
    taken = set(places.taken(output_dir))
    for info, parts in files:
        if len(parts) > 1:
            under.setdefault(parts[0].casefold(), []).append((info, parts))
        else:
            taken |= names_taken(parts[0])
    tops: dict[str, str] = {}
    for wanted in dict.fromkeys(wanted_tops):
        if wanted.casefold() in tops:
            continue
        contents = under.get(wanted.casefold(), [])
        for name in candidate_names(wanted, folder=True):
            if name.casefold() in taken:
                continue
            st = _lstat(output_dir / name)
            if st is None:
                break
            if stat.S_ISDIR(st.st_mode) and (
                places.overwrite or _continues(output_dir / name, contents, resume=places.resume)
            ):
                places.notes.append(
                    f"{name}/ exists: will add to it, replacing files of the same names "
                    "(--overwrite)"
                    if places.overwrite
                    else f"{name}/ exists and holds part of this transfer: will continue it "
                    "(what is there whole is kept)"
                )
                break
        taken.add(name.casefold())
        places.taken(output_dir).add(name.casefold())
        tops[wanted.casefold()] = name
        if name != wanted:
            places.notes.append(f"{wanted}/ exists: will save as {name}/")
    return tops


def _continues(
    folder: Path, contents: list[tuple[FileInfo, tuple[str, ...]]], *, resume: bool
) -> bool:
    """Whether the folder here is this offer's, interrupted: something of the offer is
    in it (a file of the offered size, or a partial copy), or nothing at all, and no
    offered file's place in it is taken by anything else."""
    if not resume:
        return False
    found = False
    for info, parts in contents:
        path = folder.joinpath(*parts[1:])
        st = _lstat_quiet(path)
        if st is not None and not _maybe_complete(st, info):
            return False
        found = found or st is not None or _lstat_quiet(part_path(path)) is not None
    if found:
        return True
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def _lstat_quiet(path: Path) -> os.stat_result | None:
    """As _lstat, but a path that cannot be looked at (a file in the way of a folder
    on it, no permission) counts as nothing there: the plan checks it properly."""
    try:
        return os.lstat(path)
    except OSError:
        return None


def _check_folder(path: Path) -> None:
    """A folder to write into: absent (it will be made), or a real folder, never a
    link (which could lead out of the output folder)."""
    info = _lstat(path)
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise DestinationExistsError(
            f"{str(path)!r} is in the way of an offered folder (not a folder, or a link)"
        )


def make_folders(plan: Plan) -> None:
    """Create every folder of a folder offer (the plan's, parents first), refusing links."""
    for path in plan.folders:
        try:
            path.mkdir()
        except FileExistsError:
            pass
        except OSError as exc:
            raise _disk_error(exc, path) from exc
        _check_folder(path)


def keep_metadata(path: Path, info: FileInfo) -> None:
    """The sender's modification time, and its executable bit (within our umask)."""
    try:
        if info.executable and platform.has_exec_bit():
            # Executable for whoever may read it, as `chmod +x` does with a umask.
            mode = path.stat().st_mode
            os.chmod(path, stat.S_IMODE(mode) | (stat.S_IMODE(mode) & 0o444) >> 2)
        if info.mtime_ns:
            os.utime(path, ns=(info.mtime_ns, info.mtime_ns))
    except OSError as exc:
        logger.info("could not keep the time or mode of %s: %s", path, exc)


# -- writing ------------------------------------------------------------------------------


class PartFile:
    """sfs's own partial copy of a file while it is written, with its record beside it
    saying which offered file it holds, so an interrupted transfer can resume.

    :param identity: what the record says: offered name, size, mtime.
    :param offset: bytes already held (a resumed transfer): the partial copy that
        find_partial found is reopened and cut to this. Otherwise any partial copy of
        sfs's own at these names is replaced, and new files are made with O_EXCL.
    :param prefix: SHA-256 state of those bytes (required when ``offset`` > 0).
    :param claim: this transfer's claim on ``final`` (:mod:`sfs.peer.claims`); without
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
            raise _disk_error(exc, self.part) from exc
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
        if _own_partial(self.final) is not None:  # raises if the names are not ours
            # Part first: a record without a part is still recognisably ours.
            _unlink(self.part)
            _unlink(self.meta)
        record = json.dumps({"v": 1, "kind": RECORD_KIND, **identity}).encode("utf-8")
        try:
            # Record first, then the part: a crash in between leaves only a record,
            # which is ours; a part without a record would not be.
            _write_new(self.meta, record)
            return os.open(self.part, _new_file_flags(), 0o644)
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
            raise _disk_error(exc, self.part) from exc
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
            raise _disk_error(exc, self.part) from exc

    def place(self, *, overwrite: bool) -> Path:
        """Give the verified, durable partial copy its final name (the next free one
        if a file appeared there meanwhile); return it."""
        try:
            placed = _place(self.part, self.final, overwrite=overwrite)
        except OSError as exc:
            raise _disk_error(exc, self.final) from exc
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


def _new_file_flags() -> int:
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
    fd = os.open(path, _new_file_flags(), 0o644)
    try:
        os.write(fd, data)  # one small write: a record is whole or absent
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@dataclass(frozen=True)
class _OwnPartial:
    """sfs's own partial copy at a destination: what its record says, and its size."""

    identity: dict[str, object]
    size: int  # 0 when only the record is there


def _own_partial(final: Path) -> _OwnPartial | None:
    """sfs's own partial copy for ``final``, or None if neither of its names exists.

    Ours means: a record that sfs wrote (a regular file of the exact form sfs writes)
    and, if the part exists, a regular file rather than a symlink or anything else.

    :raises DestinationExistsError: something sfs did not write is at one of the names.
    """
    part, meta = part_path(final), meta_path(final)
    part_st, meta_st = _lstat(part), _lstat(meta)
    if part_st is None and meta_st is None:
        return None
    identity = _read_record(meta) if meta_st is not None and stat.S_ISREG(meta_st.st_mode) else None
    in_the_way = meta if identity is None else part
    if identity is None or (part_st is not None and not stat.S_ISREG(part_st.st_mode)):
        raise DestinationExistsError(
            f"{str(in_the_way)!r} is in the way of {final.name!r}, and sfs did not write it; "
            "move it away to receive this file here"
        )
    return _OwnPartial(identity, part_st.st_size if part_st is not None else 0)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _disk_error(exc, path) from exc


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
        raise _disk_error(exc, paths[0]) from exc


#: Verified files wait for one durable point (and their final names, and their
#: acknowledgements) until this many are waiting, this many bytes, or this long.
#: Small files wait in memory: at most two batches' bytes (one being placed).
BATCH_FILES = 1000
BATCH_BYTES = 16 * 1024 * 1024
BATCH_SECONDS = 0.5


@dataclass
class _Verified:
    """A file whose bytes checked out: its partial copy, or (a small file) its bytes,
    or neither (the whole file was already here); the offered file, and where it goes."""

    part: PartFile | None
    info: FileInfo
    dest: Path
    offset: int
    data: bytes | None = None
    #: The file's SHA-256 (checked), and the seconds its bytes took to arrive.
    sha256: bytes = b""
    seconds: float = 0.0


class _Placer:
    """Verified files on their way to their final names, a batch at a time.

    Nothing unverified ever reaches a final name, and a tree of small files costs one
    sync per batch rather than one fsync per file.  A batch is made durable and placed
    in a worker thread while the next one arrives (one batch in flight at a time);
    once it is in place, ``acknowledge`` gets its files, in order.
    """

    def __init__(
        self,
        output_dir: Path,
        *,
        overwrite: bool,
        acknowledge: Callable[[list[_Verified]], Awaitable[None]],
    ) -> None:
        self.output_dir = output_dir
        self.overwrite = overwrite
        self.waiting: list[_Verified] = []
        self._staging: Path | None = None  # made when the first small file comes
        self._staged = 0
        self._acknowledge = acknowledge
        self._bytes = 0
        self._since = 0.0
        self._placing: asyncio.Future[list[_Verified]] | None = None

    def add(self, item: _Verified) -> None:
        if not self.waiting:
            self._since = time.monotonic()
        self.waiting.append(item)
        self._bytes += item.info.size

    async def poll(self, *, now: bool = False) -> None:
        """Acknowledge a batch that is in place; start the next when it is due (or,
        with ``now``, whatever waits: a large file comes next)."""
        if self._placing is not None and self._placing.done():
            await self._finish()
        due = (
            len(self.waiting) >= BATCH_FILES
            or self._bytes >= BATCH_BYTES
            or time.monotonic() - self._since >= BATCH_SECONDS
        )
        if self.waiting and self._placing is None and (due or now):
            self._start()

    async def drain(self) -> None:
        """Place and acknowledge everything (at the end)."""
        if self._placing is not None:
            await self._finish()
        if self.waiting:
            self._start()
            await self._finish()

    async def abandon(self) -> None:
        """On a failure: the batch in flight finishes, and the files still waiting,
        all verified, are placed too; no acknowledgement can go out any more."""
        try:
            if self._placing is not None:
                await asyncio.shield(self._placing)
            if self.waiting:
                items, self.waiting = self.waiting, []
                await asyncio.to_thread(self._place_all, items)
        except (SfsError, OSError):
            logger.info("verified files kept as partial copies", exc_info=True)

    def _start(self) -> None:
        items, self.waiting, self._bytes = self.waiting, [], 0
        self._placing = asyncio.ensure_future(asyncio.to_thread(self._place_all, items))

    async def _finish(self) -> None:
        assert self._placing is not None
        items = await self._placing
        self._placing = None
        await self._acknowledge(items)

    async def close(self) -> None:
        """Remove the staging folder: sfs made it (mkdtemp, private) and wrote all
        that is in it; anything left there is a copy of a file placed or abandoned."""
        if self._staging is not None:
            await asyncio.to_thread(shutil.rmtree, self._staging, True)

    def _place_all(self, items: list[_Verified]) -> list[_Verified]:
        started = time.monotonic()
        staged: list[tuple[Path, _Verified]] = []
        for item in items:
            if item.data is not None:
                staged.append((self._stage(item.data, item.info), item))
            elif item.part is not None:
                keep_metadata(item.part.part, item.info)  # before the link: one inode
        parts = [item.part for item in items if item.part is not None]
        make_durable([part.part for part in parts] + [path for path, _ in staged])
        for item in items:
            if item.part is not None:
                item.dest = item.part.place(overwrite=self.overwrite)
        for path, item in staged:
            try:
                item.dest = _place(path, item.dest, overwrite=self.overwrite)
            except OSError as exc:
                raise _disk_error(exc, item.dest) from exc
        logger.debug("placed %d files in %.3f s", len(items), time.monotonic() - started)
        return items

    def _stage(self, data: bytes, info: FileInfo) -> Path:
        """Write a small file's verified bytes into sfs's own staging folder: one new
        file each, no partial copy or record (nothing to resume in a small file)."""
        try:
            if self._staging is None:
                self._staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.output_dir))
            self._staged += 1
            path = self._staging / str(self._staged)
            fd = os.open(path, _new_file_flags(), 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise _disk_error(exc, self._staging or self.output_dir) from exc
        keep_metadata(path, info)
        return path


class NameClaims:
    """A receiving transfer's claims on the names it writes (:mod:`sfs.peer.claims`),
    taken file by file when first needed and given back once each file is in place.

    When another transfer holds a file's name, or a file has appeared there since the
    plan, the file goes to the next free name in its folder (:func:`free_name`).

    :param destinations: the list the transfer writes to; a moved file's entry changes.
    :param overwrite: the user asked to replace existing files: a file at the name is
        no reason to move.
    """

    def __init__(self, destinations: list[Path], *, overwrite: bool) -> None:
        self.destinations = destinations
        self.overwrite = overwrite
        # The names of this offer's own files are never another file's free name.
        self._taken: dict[Path, set[str]] = {}
        for dest in destinations:
            self._taken.setdefault(dest.parent, set()).update(names_taken(dest.name))
        self._held: dict[int, Claim] = {}

    def claim(self, i: int, status: Callable[[str], None]) -> Claim:
        """Hold the claim on file ``i``'s name, moving it first if need be (its path is
        then ``destinations[i]``).

        :raises DestinationExistsError: something sfs did not write is at a lock's name.
        """
        if (held := self._held.get(i)) is not None and held.held:
            return held
        wanted = dest = self.destinations[i]
        why = ""
        while True:
            numbered = dest != wanted
            claim = None if numbered and _lstat(dest) is not None else try_claim(lock_path(dest))
            # A file at the planned name that the plan did not see: another transfer
            # placed it since (it had the claim until then), or someone else did.
            appeared = not numbered and not self.overwrite and _lstat(dest) is not None
            if claim is not None and not appeared:
                break
            if claim is not None:
                claim.release()
            if not numbered:
                why = "appeared since you accepted" if appeared else "is in use by another transfer"
            dest = self._next(i, wanted, dest)
        if numbered:
            status(f"{wanted.name!r} {why}; this file is saved as {dest.name!r}")
        self._held[i] = claim
        return claim

    def move(self, i: int, status: Callable[[str], None]) -> None:
        """File ``i`` is not the one already at its name: it goes to the next free name."""
        wanted = dest = self.destinations[i]
        while _lstat(dest) is not None:
            dest = self._next(i, wanted, dest)
        status(f"{wanted.name!r} exists and differs from this file; it is saved as {dest.name!r}")

    def _next(self, i: int, wanted: Path, taken: Path) -> Path:
        """The next free name for ``wanted`` (file ``i``) once ``taken`` is: recorded
        as the file's path."""
        names = self._taken.setdefault(taken.parent, set())
        names |= names_taken(taken.name)
        dest = wanted.with_name(free_name(wanted.name, names))
        names |= names_taken(dest.name)
        self.destinations[i] = dest
        return dest

    def release_all(self) -> None:
        for claim in self._held.values():
            claim.release()
        self._held.clear()


def find_held(
    offer: Offer,
    destinations: list[Path],
    status: Callable[[str], None],
    claims: NameClaims | None = None,
) -> tuple[list[int], set[int]]:
    """Per offered file, how many of its bytes are here already: in sfs's own partial
    copy, or (the second value, by index) as a whole file at its final name, which
    the sender's SHA-256 must then confirm before it counts.

    :param claims: a partial copy is looked at only under this transfer's claim on its
        name (one that another transfer holds is that transfer's; the file moves).
    """
    held = [0] * len(offer.files)
    complete: set[int] = set()
    for i, info in enumerate(offer.files):
        if info.stream:
            continue
        st = _lstat(destinations[i])
        if st is not None and _maybe_complete(st, info):
            # The whole file may be here already (a partial copy beside it is stale).
            held[i] = info.size  # 0 for an empty file: nothing to confirm
            complete.add(i)
            continue
        if claims is not None and _has_partial(destinations[i]):
            claims.claim(i, status)  # may move it: destinations[i] is then the new name
        held[i] = find_partial(info, destinations[i], status)
    return held, complete


def _has_partial(final: Path) -> bool:
    return _lstat(part_path(final)) is not None or _lstat(meta_path(final)) is not None


def find_partial(info: FileInfo, final: Path, status: Callable[[str], None]) -> int:
    """How many bytes of ``info`` sfs's own interrupted copy for ``final`` holds (0: none).

    :raises DestinationExistsError: a file sfs did not write is at the partial's names.
    """
    partial = _own_partial(final)
    if partial is None or not partial.size:
        return 0
    if partial.identity != identity_of(info):
        status(f"{final.name}: the partial copy is of another version of the file; starting over")
        return 0
    return min(partial.size, info.size)


def _hash_partial(part: Path, length: int) -> HashState | None:
    """The SHA-256 state of the first ``length`` bytes of our partial copy; None if it
    holds fewer (or is not a regular file any more)."""
    try:
        fd = os.open(part, platform.open_flags(os.O_RDONLY))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return _hash_stream(f, length)


def _hash_stream(f: IO[bytes], length: int) -> HashState | None:
    digest = hashlib.sha256()
    remaining = length
    while remaining:
        block = f.read(min(READ_BLOCK_BYTES, remaining))
        if not block:
            return None
        digest.update(block)
        remaining -= len(block)
    return digest


def _place(part: Path, final: Path, *, overwrite: bool) -> Path:
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
        if path != final and _lstat(lock_path(path)) is not None:
            continue  # another transfer is about to place a file there
        try:
            platform.place_no_replace(part, path)
        except FileExistsError:
            continue
        if path != final:
            logger.info("%s appeared during the transfer; placed as %s", final, path)
        return path
    raise AssertionError("unreachable: candidate_names raises when every name is taken")


def _disk_error(exc: OSError, path: Path) -> DiskError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskError(f"disk full while writing {str(path)!r}")
    return DiskError(f"cannot write {str(path)!r}: {exc.strerror or exc}")


# -- the two sides --------------------------------------------------------------------------


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


def _text(name: str) -> str:
    # A name that is not valid UTF-8 (possible on Linux) is offered with replacement
    # characters rather than refused.
    return os.fsencode(name).decode("utf-8", errors="replace")


def inspect_tree(paths: list[Path]) -> Sources:
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
    for path in paths:
        name = path.name or path.resolve().name
        if name in names:
            raise SourceError(f"two of the named paths are called {name!r}; rename one")
        names.add(name)
        if not path.is_dir():
            files += inspect_sources([path])
            continue
        walked = walk([path])
        skipped += walked.skipped
        for entry in walked.entries:
            parts = tuple(_text(part) for part in entry.parts)
            if entry.is_dir:
                folders.append(parts)
            else:
                if entry.size == 0:
                    _refuse_size_unknown(entry.source)
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
        raise SourceError("no file to send (the folders named hold no files)")
    return Sources(files, tuple(folders), tuple(skipped))


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

    def finish(self) -> TransferResult:
        self.elapsed = max(time.monotonic() - self.started, 1e-6)
        return self


async def abort_transfer(channel: Channel, proto: TransferProtocol, exc: BaseException) -> None:
    """Tell the peer why we stop, if the protocol still allows a word."""
    if proto.state in (State.CLOSED, State.DONE):
        return
    try:
        async with asyncio.timeout(2):
            await channel.send(proto.send(Cancel(cancel_reason(exc))))
    except (SfsError, TimeoutError, ConnectionError):
        logger.debug("could not deliver the cancel frame", exc_info=True)
        return
    await linger(channel, LAST_WORD_GRACE_SECONDS)


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


#: The CANCEL reason that tells the sender the destination exists (its exit code 10).
EXISTS_REASON = "the file already exists on the receiving side"
#: The CANCEL reason of a receiver that cannot read the offer's protocol version.
UPGRADE_REASON = "the receiver runs an older sfs: upgrade sfs there"
#: What a receiver of protocol 2 or older answers to an offer of version 3.
_OLD_RECEIVER_REASON = "protocol violation"


def cancel_reason(exc: BaseException) -> str:
    """What to tell the peer: the kind of failure, never a local path or detail."""
    reasons: list[tuple[type[BaseException] | tuple[type[BaseException], ...], str]] = [
        (DiskError, "the receiver cannot write the file (disk full or not writable)"),
        (DestinationExistsError, EXISTS_REASON),
        (IntegrityError, "the received data failed its integrity check"),
        (VerificationError, "the verification strings were not confirmed"),
        (UpgradeError, UPGRADE_REASON),
        (RemoteProtocolError, "protocol violation"),
        (SourceError, "the file changed or became unreadable on the sending side"),
        ((KeyboardInterrupt, asyncio.CancelledError), "cancelled by the user"),
    ]
    for kind, reason in reasons:
        if isinstance(exc, kind):
            return reason
    return "the other side hit an error"


#: What a receiver's REJECT says when its user answered no.
DECLINED_REASON = "declined by the receiver"


def _peer_stopped(event: Event, offer_version: int = 0) -> SfsError:
    """Why the peer's ``event`` ends the transfer; ``offer_version``, when it is the
    answer to our offer, tells an old receiver's refusal of a newer offer."""
    if isinstance(event, Reject):
        # Its reason only when it says more than that it declined (every receiver,
        # the page's too, sends DECLINED_REASON when its user says no).
        plain = event.reason in ("", "declined", DECLINED_REASON)
        return RejectedError(
            "the receiver declined the transfer" + ("" if plain else f" ({event.reason})")
        )
    if isinstance(event, Cancel) and (
        event.reason == UPGRADE_REASON
        or (offer_version >= 3 and event.reason == _OLD_RECEIVER_REASON)
    ):
        return UpgradeError(
            "the receiver cannot read this offer: it runs an older sfs (text, pipes and "
            "trees of more than 1000 files need protocol 3); upgrade sfs there"
        )
    if isinstance(event, Cancel):
        if event.reason == EXISTS_REASON:
            # The same exit code on both sides: the cause and the remedy are the same.
            return DestinationExistsError(
                f"the other side stopped the transfer: {EXISTS_REASON} (the receiver "
                "can pass --overwrite or choose another --output folder)"
            )
        return CancelledByPeerError(f"the other side stopped the transfer: {event.reason}")
    return RemoteProtocolError(f"unexpected {type(event).__name__} from the other side")


async def next_event(channel: Channel, proto: TransferProtocol) -> Event:
    """The next event from the peer, keepalives and pieces of larger frames skipped."""
    while isinstance(event := proto.receive(await channel.receive()), Ping | Partial):
        pass
    return event


#: One lock per transfer for what is sealed ahead of sending: a large control payload
#: is sealed as several frames at once, and a keepalive PING sealed meanwhile must not
#: reach the channel before them (the peer accepts only the next counter).
_SEND_LOCKS: weakref.WeakKeyDictionary[TransferProtocol, asyncio.Lock] = weakref.WeakKeyDictionary()


def _send_lock(proto: TransferProtocol) -> asyncio.Lock:
    return _SEND_LOCKS.setdefault(proto, asyncio.Lock())


async def send_all(channel: Channel, proto: TransferProtocol, event: Event) -> None:
    """Send ``event`` in as many frames as it takes, none of ours between them."""
    async with _send_lock(proto):
        for frame in proto.send_frames(event):
            await channel.send(frame)


@asynccontextmanager
async def keepalive(channel: Channel, proto: TransferProtocol) -> AsyncIterator[None]:
    """Send a PING whenever this side has sent nothing for PING_INTERVAL_SECONDS, so
    the peer can tell a quiet connection (a user deciding, a disk busy) from a lost one."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_SECONDS)
            async with _send_lock(proto):
                if channel.seconds_since_send() >= PING_INTERVAL_SECONDS and proto.state not in (
                    State.CLOSED,
                    State.DONE,
                ):
                    await channel.send(proto.send(Ping()))

    task = asyncio.ensure_future(beat())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


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
) -> TransferResult:
    """Offer ``sources``, stream them if accepted, and return after the last ack.

    :param resume: continue files the receiver already partly holds, once their
        prefix is checked against ours, and skip those it holds whole; otherwise
        send everything from the start.
    :param compress: compress chunks that shrink with zstd, if the receiver takes them.
    """
    progress = progress or NullProgress()
    result = TransferResult()
    try:
        async with keepalive(channel, proto):
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
            await send_all(channel, proto, offer)
            if on_waiting is not None:
                on_waiting()
            reply = await next_event(channel, proto)
            if not isinstance(reply, Accept):
                raise _peer_stopped(reply, offer.version)
            status("The receiver accepted.")
            result.started = time.monotonic()
            starts = await _prefixes(sources, reply.held if resume else ())
            offsets = tuple(offset for offset, _ in starts)
            digests = tuple(p.digest() if p is not None else b"" for _, p in starts)
            await send_all(channel, proto, Resume(offsets, digests if any(offsets) else ()))
            if proto.state is State.CONFIRMING:
                verdict = await next_event(channel, proto)
                if not isinstance(verdict, Start):
                    raise _peer_stopped(verdict)
                for i, (source, offset) in enumerate(zip(sources, verdict.offsets, strict=True)):
                    if offsets[i] and not offset:
                        if offsets[i] < source.size:
                            status(
                                f"{source.name}: the receiver's partial copy differs; sending all"
                            )
                        starts[i] = (0, None)
            packer = _Packer(chunk_size, compress=compress and proto.zstd)
            progress.begin(len(sources), None if offer.stream else offer.total_size)
            departures = Departures(progress)
            try:
                for source, (offset, prefix) in zip(sources, starts, strict=True):
                    record = await _send_one(
                        channel, proto, source, packer, departures, offset, prefix
                    )
                    size = record.size
                    result.records.append(record)
                    result.total_bytes += size
                    result.resumed_bytes += offset
                    whole = bool(source.size) and offset == source.size
                    result.skipped_files += whole
                    result.resumed_files += bool(offset) and not whole
                await _await_acks(channel, proto, departures)
            finally:
                departures.close()
        return result.finish()
    except BaseException as exc:
        await abort_transfer(channel, proto, exc)
        raise


async def _await_acks(channel: Channel, proto: TransferProtocol, departures: Departures) -> None:
    """The last acknowledgements, with the progress following the channel's buffer
    as it drains meanwhile (the last file is shown done only when it is)."""

    async def follow() -> None:
        while True:
            await asyncio.sleep(PROGRESS_TICK_SECONDS)  # a display refresh, not a wait
            departures.left(channel.unsent_bytes())

    follower = asyncio.create_task(follow())
    try:
        while proto.state is not State.DONE:
            event = await next_event(channel, proto)
            if not isinstance(event, FileAck):
                raise _peer_stopped(event)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    departures.all_acknowledged()


async def _prefixes(
    sources: list[SourceFile], held: tuple[int, ...]
) -> list[tuple[int, HashState | None]]:
    """Where to propose starting each file, with the hash state of our own bytes before
    that point: what the receiver holds, or 0 if our file is shorter than that now."""

    def hash_all() -> list[tuple[int, HashState | None]]:
        starts: list[tuple[int, HashState | None]] = []
        for i, source in enumerate(sources):
            # Only a file on disk resumes: a pipe never, and a text message is short
            # (a receiver that claims to hold part of either gets offset 0).
            on_disk = source.data is None and not source.stream
            offset = held[i] if held and on_disk else 0
            prefix = _hash_prefix(source, offset) if offset else None
            starts.append((offset, prefix) if prefix is not None else (0, None))
        return starts

    return await asyncio.to_thread(hash_all)


def _hash_prefix(source: SourceFile, length: int) -> HashState | None:
    with _open_source(source) as f:
        return _hash_stream(f, length)


#: A file up to this size is read at once on the event loop (a thread hop per small
#: file costs more than the read), and received into memory, checked, and written
#: once to sfs's staging folder (a tree of thousands of small files).
SMALL_FILE_BYTES = 256 * 1024
#: Compression is kept for a chunk only if it saves at least this fraction.
MIN_COMPRESSION_SAVING = 0.1
#: After this many chunks in a row that do not shrink, compression backs off: it
#: skips 1, 2, 4 … chunks between tries, at most MAX_SKIPPED_CHUNKS.
MAX_INCOMPRESSIBLE_CHUNKS = 4
MAX_SKIPPED_CHUNKS = 32
#: zstd level 1: measured (docs/PERFORMANCE.md) within 1 % of level 3's effective
#: speed at this link rate, for less of the sender's CPU.
ZSTD_LEVEL = 1


class _Packer:
    """Cuts a file's bytes into chunks, compressing those that shrink.

    Data that does not compress (photos, video, archives) costs almost nothing:
    after MAX_INCOMPRESSIBLE_CHUNKS misses in a row, only a growing fraction of
    chunks is tried (at least one in MAX_SKIPPED_CHUNKS + 1, so a compressible part
    later in a pipe or a tree is found again).  The state carries from file to file.
    Runs in a worker thread for large files (zstd releases the GIL).
    """

    def __init__(self, chunk_size: int, *, compress: bool) -> None:
        self.chunk_size = chunk_size
        self._zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL) if compress else None
        self._misses = 0
        self._skip = 0

    def pack(self, block: bytes) -> list[Chunk]:
        view = memoryview(block)
        size = self.chunk_size
        chunks = [Chunk(view[i : i + size]) for i in range(0, len(block), size)]
        if self._zstd is None:
            return chunks
        for n, chunk in enumerate(chunks):
            if self._skip:
                self._skip -= 1
                continue
            packed = self._zstd.compress(chunk.data)
            if len(packed) <= len(chunk.data) * (1 - MIN_COMPRESSION_SAVING):
                chunks[n] = Chunk(packed, len(chunk.data))
                self._misses = 0
                continue
            self._misses += 1
            if self._misses >= MAX_INCOMPRESSIBLE_CHUNKS:
                backoff = 2 ** (self._misses - MAX_INCOMPRESSIBLE_CHUNKS)
                self._skip = min(backoff, MAX_SKIPPED_CHUNKS)
        return chunks


#: How often the sender's progress looks again at what has left, once every byte is
#: handed to the channel and only the acknowledgements are awaited.
PROGRESS_TICK_SECONDS = 0.25


@dataclass
class _Departing:
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
        self._files: list[_Departing] = []
        self._head = 0  # the first file not yet shown finished
        self._before_head = 0  # plain bytes of the files before it (kept, not summed:
        # a tree of 10 000 files would make every step cost the whole list)
        self._handed_plain = 0
        self._handed_wire = 0
        self._gone = 0  # of _handed_plain

    def file(self, name: str, size: int | None, offset: int) -> None:
        """The next file; ``offset`` bytes of it are already there (resumed)."""
        self._files.append(_Departing(name, size, offset))
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


async def _send_one(
    channel: Channel,
    proto: TransferProtocol,
    source: SourceFile,
    packer: _Packer,
    departures: Departures,
    offset: int,
    prefix: HashState | None,
) -> FileRecord:
    """Send one file (or text, or pipe) from ``offset``; return its record."""
    digest = prefix if prefix is not None else hashlib.sha256()
    started = time.monotonic()
    departures.file(source.name, None if source.stream else source.size, offset)
    plain = offset  # bytes given to the channel
    async for block, chunks in _blocks(source, offset, packer):
        digest.update(block)
        for chunk in chunks:
            await channel.send(proto.send(chunk))
            size = len(chunk.data) if chunk.plain_size is None else chunk.plain_size
            plain += size
            departures.handed(size, len(chunk.data))
            departures.left(channel.unsent_bytes())
        _drain_acks(channel, proto)
    sha256 = digest.digest()
    await channel.send(proto.send(FileDone(sha256)))
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
    source: SourceFile, offset: int, packer: _Packer
) -> AsyncIterator[tuple[bytes, list[Chunk]]]:
    """A source's bytes from ``offset``, block by block, each cut into chunks."""
    block_size = max(packer.chunk_size, READ_BLOCK_BYTES // packer.chunk_size * packer.chunk_size)
    if source.data is not None:
        if source.data[offset:]:
            yield source.data[offset:], packer.pack(source.data[offset:])
        return
    if source.reader is not None:
        reader = source.reader

        def read_pipe() -> tuple[bytes, list[Chunk]]:
            try:
                block = reader.read(block_size)
            except OSError as exc:
                raise SourceError(f"cannot read the input: {exc.strerror or exc}") from exc
            return block, packer.pack(block)

        while True:
            block, chunks = await asyncio.to_thread(read_pipe)
            if not block:
                return
            yield block, chunks
    f = _open_source(source)
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
                block, chunks = await asyncio.to_thread(read_file, min(block_size, remaining))
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


def _refuse_size_unknown(path: Path) -> None:
    f, info = open_regular(path)
    with f:
        if reads_more_than_its_size(f, info):
            raise SourceError(size_unknown(path))


def _open_source(source: SourceFile) -> IO[bytes]:
    # Opened again now: what is there must still be a regular file (a FIFO put in its
    # place since the check would otherwise block the open).
    return open_regular(source.path)[0]


def _drain_acks(channel: Channel, proto: TransferProtocol) -> None:
    """Handle what the receiver sent meanwhile, so a cancel stops us at once."""
    while (frame := channel.poll()) is not None:
        event = proto.receive(frame)
        if not isinstance(event, FileAck | Ping | Partial):
            raise _peer_stopped(event)


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
    """
    progress = progress or NullProgress()
    result = TransferResult()
    part: PartFile | None = None
    few = True  # name each saved file (not for a huge tree)
    in_memory = False  # a text message, or --stdout: no file of ours
    resumable = True  # the sender says it can resume (Offer.resumes)

    async def acknowledge(items: list[_Verified]) -> None:
        for item in items:
            if few and (item.part is not None or item.data is not None):
                status(_saved(item.dest, item.info.name))
            result.records.append(
                FileRecord(
                    name="/".join((*item.info.folder, item.info.name)),
                    path=None if in_memory else item.dest,
                    size=item.info.size,
                    sha256=item.sha256.hex(),
                    seconds=item.seconds,
                    resumed_bytes=item.offset,
                )
            )
            result.total_bytes += item.info.size
            result.resumed_bytes += item.offset
            result.resumed_files += bool(item.offset) and item.part is not None
        if items:
            await send_all(channel, proto, FileAck(len(items)))

    placer = _Placer(output_dir, overwrite=overwrite, acknowledge=acknowledge)
    claims: NameClaims | None = None
    try:
        async with keepalive(channel, proto):
            offer = await next_event(channel, proto)
            if not isinstance(offer, Offer):
                raise _peer_stopped(offer)
            if sink is not None and (offer.text or len(offer.files) != 1 or offer.folders):
                refusal = RejectedError(
                    f"the sender offers {describe_offer(offer)}; --stdout takes one file or pipe"
                )
                await _refuse(channel, proto, "the receiver takes one file or pipe (--stdout)")
                raise refusal
            in_memory = offer.text or sink is not None
            resumable = offer.resumes
            plan = (
                Plan([Path(_shown_name(info.name)) for info in offer.files], written=False)
                if in_memory
                else plan_destinations(offer, output_dir, overwrite=overwrite, resume=resume)
            )
            destinations = plan.paths
            if not await _decide_while_listening(channel, proto, decide, offer, plan):
                await _refuse(channel, proto, DECLINED_REASON)
                raise DeclinedError()
            held, complete = [0] * len(offer.files), set[int]()
            if not in_memory:
                claims = NameClaims(destinations, overwrite=overwrite)
                await asyncio.to_thread(make_folders, plan)
                if resume:
                    held, complete = await asyncio.to_thread(
                        find_held, offer, destinations, status, claims
                    )
            # Only how much: a hash of our bytes would tell anyone who can make a
            # matching offer what they are (docs/PROTOCOL.md, "Resume").
            await send_all(channel, proto, Accept(tuple(held) if any(held) else (), zstd))
            result.started = time.monotonic()
            proposal = await next_event(channel, proto)
            if not isinstance(proposal, Resume):
                raise _peer_stopped(proposal)
            starts = await _confirm_prefixes(proposal, destinations, held, complete, status)
            for i in sorted(complete):
                if starts[i][0] != held[i] and not overwrite:
                    assert claims is not None
                    claims.move(i, status)  # both are kept: this one under a free name
            if proto.state is State.CONFIRMING:
                await send_all(channel, proto, Start(tuple(offset for offset, _ in starts)))
            progress.begin(len(offer.files), None if offer.stream else offer.total_size)
            few = len(offer.files) <= MAX_SAVED_LINES
            many = len(offer.files) >= MANY_FILES
            for i, (info, (offset, prefix)) in enumerate(zip(offer.files, starts, strict=True)):
                whole = i in complete and offset == info.size
                # Of many files, a small one is held in memory until it checks out,
                # then written once (no partial copy and record: two file creations
                # fewer); it has nothing worth resuming.
                small = (
                    many and not (whole or in_memory or offset) and info.size <= SMALL_FILE_BYTES
                )
                # A large file takes a while: the small ones before it need not wait.
                await placer.poll(now=info.size - offset >= BATCH_BYTES // 8)
                if not (whole or in_memory or small):
                    assert claims is not None
                    # The claim first: it may move the file to a free name (offset 0:
                    # a file with a partial copy to continue was claimed by find_held).
                    claim = claims.claim(i, status)
                    part = PartFile(
                        destinations[i],
                        offset=offset,
                        prefix=prefix,
                        identity=identity_of(info),
                        claim=claim,
                    )
                    writer: Callable[[bytes | memoryview], Awaitable[None] | None] = part.write
                else:
                    memory = _MemoryFile(sink, prefix)
                    writer = memory.write
                dest = destinations[i]
                progress.start(dest.name if not in_memory else "stdout", info.size)
                progress.advance(offset)
                started = time.monotonic()
                try:
                    while True:
                        event = await next_event(channel, proto)
                        if isinstance(event, Chunk):
                            if not result.received:
                                # Wall time, so scripts/bench can compare it across processes.
                                logger.info("first data byte at %.6f", time.time())
                            pending = writer(event.data)
                            if pending is not None:
                                await pending
                            result.received += len(event.data)
                            progress.advance(len(event.data))
                        elif isinstance(event, FileDone):
                            done = event
                            seconds = time.monotonic() - started
                            break
                        else:
                            raise _peer_stopped(event)
                finally:
                    progress.finish()
                if part is not None:
                    part.verify(done.sha256)
                    if info.stream:  # its size is what came
                        info = dataclasses.replace(info, size=part.written)
                    placer.add(_Verified(part, info, dest, offset, None, done.sha256, seconds))
                    part = None
                else:
                    size = await memory.verify(done.sha256)
                    if offer.text:
                        result.text = _text_message(bytes(memory.data))
                    if info.stream:
                        info = dataclasses.replace(info, size=size)
                    data = bytes(memory.data) if small else None
                    placer.add(_Verified(None, info, dest, offset, data, done.sha256, seconds))
                    result.skipped_files += whole and info.size > 0
                await placer.poll()
            await placer.drain()
            if not few and not in_memory:
                status(f"Saved {describe_offer(offer)} in {output_dir}")
        return result.finish()
    except BaseException as exc:
        if part is not None:
            held_bytes = part.offset + part.written
            if isinstance(exc, _UNTRUSTED) or not held_bytes:
                part.discard()
            elif not resumable:
                # Kept, it would only be replaced by the next offer of the file.
                part.discard()
                status(
                    f"Removed the {format_size(held_bytes)} of {part.final.name} received: "
                    "the sender cannot resume a transfer (a web page), so sending it "
                    "again starts over"
                )
            else:
                part.keep()
                kept(part.final.name, held_bytes)
        await placer.abandon()
        await abort_transfer(channel, proto, exc)
        raise
    finally:
        await placer.close()
        if claims is not None:  # after the last file is placed (or kept)
            claims.release_all()


#: From this many files in one offer, small files skip the partial copy.
MANY_FILES = 100
#: Up to this many files (what an offer of protocol 2 could hold), the receiver
#: names each one it saved; beyond, one line for them all.
MAX_SAVED_LINES = 1000


def describe_offer(offer: Offer) -> str:
    """``3 files``, ``12 files in 2 folders``, ``a text message``: for messages."""
    if offer.text:
        return "a text message"
    what = f"{len(offer.files)} file" + ("s" if len(offer.files) != 1 else "")
    if offer.folders:
        what += f" in {len(offer.folders)} folder" + ("s" if len(offer.folders) != 1 else "")
    return what


async def _refuse(channel: Channel, proto: TransferProtocol, reason: str) -> None:
    await channel.send(proto.send(Reject(reason)))
    await linger(channel, LAST_WORD_GRACE_SECONDS)


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


class _MemoryFile:
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


async def _decide_while_listening(
    channel: Channel,
    proto: TransferProtocol,
    decide: Callable[[Offer, Plan], Awaitable[bool]],
    offer: Offer,
    plan: Plan,
) -> bool:
    """Ask ``decide`` while reading the channel.

    Until the answer the sender may only PING or CANCEL: anything else is a protocol
    error at once, rather than frames piling up in memory while a prompt is open, and
    a CANCEL ends the prompt instead of waiting for the user.
    """

    async def refuse_until_answered() -> None:
        while True:
            event = proto.receive(await channel.receive())
            if not isinstance(event, Ping):
                raise _peer_stopped(event)

    deciding = asyncio.ensure_future(decide(offer, plan))
    listening = asyncio.ensure_future(refuse_until_answered())
    try:
        await asyncio.wait({deciding, listening}, return_when=asyncio.FIRST_COMPLETED)
        if listening.done():
            listening.result()  # raises: it only ever ends with an error
        return deciding.result()
    finally:
        for task in (deciding, listening):
            task.cancel()
        await asyncio.gather(deciding, listening, return_exceptions=True)


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
            prefix = _hash_partial(ours, offset) if offset else None
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
