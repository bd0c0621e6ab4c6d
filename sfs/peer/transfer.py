"""Moving files over an abstract message channel: reading, hashing, safe writing.

This layer drives :class:`~sfs.peer.protocol.TransferProtocol` and does the file I/O.
It knows nothing of WebRTC: anything with the :class:`Channel` methods will do, which
is how the unit tests run it over a pair of in-memory queues.

Writing is careful: bytes go to a hidden partial copy of sfs's own, ``.NAME.sfs-part``
in the output folder (with ``.NAME.sfs-info`` beside it saying which offered file it
holds), the SHA-256 is checked, the data is fsynced, and only then does the file appear
at its final name, without ever replacing an existing file unless the user asked for
that.  A file at either hidden name that sfs did not write is never opened, truncated
or removed: the transfer is refused instead.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from sfs.errors import (
    CancelledByPeerError,
    CryptoError,
    DestinationExistsError,
    DiskError,
    IntegrityError,
    ProtocolError,
    RejectedError,
    RemoteProtocolError,
    SfsError,
    SourceError,
    VerificationError,
)
from sfs.peer.crypto import digests_equal
from sfs.peer.protocol import (
    Accept,
    Cancel,
    Chunk,
    Event,
    FileAck,
    FileDone,
    FileInfo,
    Offer,
    Ping,
    Reject,
    Resume,
    Start,
    State,
    TransferProtocol,
)
from sfs.peer.tree import plan_tree, walk
from sfs.text import is_unsafe

logger = logging.getLogger(__name__)

#: The partial copy of NAME is ``.NAME.sfs-part``, its record ``.NAME.sfs-info``: hidden,
#: and names no user file has by accident. A final name never starts with a dot
#: (safe_name), so it can never be one of these.
PART_SUFFIX = ".sfs-part"
META_SUFFIX = ".sfs-info"
#: Most file systems limit a name to 255 bytes; keep room for the dot and suffix.
MAX_NAME_BYTES = 255 - 1 - max(len(PART_SUFFIX), len(META_SUFFIX))
#: What a record says it is, so that no other JSON file passes for one.
RECORD_KIND = "sfs partial copy"
_MAX_RECORD_BYTES = 16 * 1024
#: Names Windows takes for devices, whatever the extension ("nul.txt" is NUL too);
#: it counts the superscript digits ¹²³ as digits here.
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{p}{c}" for p in ("COM", "LPT") for c in "0123456789\u00b9\u00b2\u00b3"
}
#: Characters Windows cannot have in a name (":" would open an NTFS alternate data
#: stream, "report.pdf:Zone.Identifier"). Replaced on every OS: the file may be copied on.
_WINDOWS_UNSAFE_CHARS = str.maketrans(dict.fromkeys('<>:"|?*', "_"))
#: File reads happen in a worker thread, this much at a time, to keep the event loop free.
READ_BLOCK_BYTES = 1024 * 1024
#: Of an offered name, at most this much is repeated back in a status line.
MAX_SHOWN_NAME_CHARS = 80
#: A side sends a PING after this long without sending anything else.
PING_INTERVAL_SECONDS = 2.0
#: How long a side that sends the last frame (reject, cancel) waits for the peer to
#: read it and close, before closing itself.
LAST_WORD_GRACE_SECONDS = 3.0


class Channel(Protocol):
    """A reliable, ordered, message-oriented channel to the peer."""

    async def send(self, frame: bytes) -> None:
        """Send one message, waiting while too much is buffered."""

    async def receive(self) -> bytes:
        """Wait for the next message; raise PeerGoneError if the channel closed."""

    def poll(self) -> bytes | None:
        """Return the next message if one is already here, else None."""

    async def wait_closed(self) -> None:
        """Wait until the peer closes the channel."""

    def seconds_since_send(self) -> float:
        """How long ago this side last sent a message."""

    def unsent_bytes(self) -> int:
        """Bytes given to :meth:`send` that have not yet left for the peer: progress
        shown to a user must not count them."""


class Progress(Protocol):
    def start(self, name: str, size: int) -> None: ...
    def advance(self, n: int) -> None: ...
    def finish(self) -> None: ...


class NullProgress:
    def start(self, name: str, size: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass


# -- names --------------------------------------------------------------------------------


def safe_name(offered: str) -> str:
    """Reduce a name offered by the peer to a plain, harmless file name.

    Only the last path component survives (``/`` and ``\\`` both count), control
    and invisible formatting characters go (NUL, escapes, bidi overrides), leading
    dots go (no hidden files such as ``.bashrc``), characters and device names that
    Windows cannot store are defused (``:<>|?*"`` become ``_``; ``CON``, ``COM¹``,
    ``CONIN$`` get a ``_`` in front), and the result fits in MAX_NAME_BYTES with the
    extension kept.

    :raises RemoteProtocolError: nothing usable is left.
    """
    name = offered.replace("\\", "/").rsplit("/", 1)[-1]
    # The characters never shown raw on a terminal are never kept in a name either.
    name = "".join(c for c in name if not is_unsafe(c))
    name = _trim(unicodedata.normalize("NFC", name).translate(_WINDOWS_UNSAFE_CHARS))
    if not name:
        raise RemoteProtocolError(f"the offered file name {offered[:40]!r} is empty or unusable")
    name = _fit(name)
    # After the cut: a stem cut short could be a device name ("COM1" of "COM1xyz...").
    if name.partition(".")[0].rstrip(" ").upper() in _WINDOWS_RESERVED:
        name = _fit("_" + name)
    return name


def _fit(name: str) -> str:
    """Cut ``name`` to MAX_NAME_BYTES, keeping a short extension."""
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    keep_ext = dot and 0 < len(ext.encode("utf-8")) <= 16
    suffix = ("." + ext).encode("utf-8") if keep_ext else b""
    base = (stem if keep_ext else name).encode("utf-8")[: MAX_NAME_BYTES - len(suffix)]
    return _trim(base.decode("utf-8", errors="ignore")) + suffix.decode("utf-8")


def _names_written(name: str) -> tuple[str, str, str]:
    """The final, partial-copy and record names of a file that arrives as ``name``."""
    return name, f".{name}{PART_SUFFIX}", f".{name}{META_SUFFIX}"


def _numbered(name: str, n: int) -> str:
    """``name (n).ext``, still within MAX_NAME_BYTES."""
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext.encode("utf-8")) > 16:
        stem, dot, ext = name, "", ""
    tail = f" ({n}){dot}{ext}"
    budget = MAX_NAME_BYTES - len(tail.encode("utf-8"))
    return _trim(stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore")) + tail


def _trim(name: str) -> str:
    """Strip space and dots at both ends (no hidden files; Windows drops trailing ones)."""
    while True:
        trimmed = name.strip().lstrip(".").rstrip(". ")
        if trimmed == name:
            return name
        name = trimmed


def is_tree(offer: Offer) -> bool:
    return bool(offer.folders) or any(info.folder for info in offer.files)


def plan_destinations(offer: Offer, output_dir: Path, *, overwrite: bool) -> list[Path]:
    """Choose the final path of every offered file, or refuse before anything is written.

    :raises DestinationExistsError: a destination exists and ``overwrite`` is off.
    :raises DiskError: the output folder is unusable or has too little free space.
    :raises RemoteProtocolError: an offered path that cannot be placed safely.
    """
    if not output_dir.is_dir():
        raise DiskError(f"the output folder {str(output_dir)!r} does not exist")
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise DiskError(f"the output folder {str(output_dir)!r} is not writable")
    if is_tree(offer):
        planned = _plan_tree(offer, output_dir, overwrite=overwrite)
        _check_free_space(offer, output_dir, planned)
        return planned
    paths: list[Path] = []
    # Every name sfs will write, for two offered files that reduce to one name.
    taken: set[str] = set()
    for info in offer.files:
        name = first = safe_name(info.name)
        n = 1
        while any(used.casefold() in taken for used in _names_written(name)):
            n += 1
            name = _numbered(first, n)
        taken.update(used.casefold() for used in _names_written(name))
        path = output_dir / name
        # A resolved parent other than the output folder would mean an escape; safe_name
        # makes that impossible, and this states it where the path is built.
        if path.parent != output_dir:
            raise RemoteProtocolError(f"refusing the path {info.name[:80]!r}")
        _check_existing(path, overwrite=overwrite)
        paths.append(path)
    _check_free_space(offer, output_dir, paths)
    return paths


def _check_existing(path: Path, *, overwrite: bool) -> None:
    if os.path.lexists(path):
        if not overwrite:
            raise DestinationExistsError(
                f"{str(path)!r} already exists; pass --overwrite to replace it"
            )
        if path.is_dir() and not path.is_symlink():
            raise DestinationExistsError(f"{str(path)!r} is a folder; not replacing it")


def _check_free_space(offer: Offer, output_dir: Path, paths: list[Path]) -> None:
    # sfs's own partial copy is either continued or replaced, so its bytes count as
    # available either way; anything else at those names stops us here.
    reclaimable = 0
    for info, path in zip(offer.files, paths, strict=True):
        partial = _own_partial(path)
        if partial is not None:
            reclaimable += min(partial.size, info.size)
    free = shutil.disk_usage(output_dir).free + reclaimable
    if offer.total_size > free:
        raise DiskError(
            f"not enough free space in {str(output_dir)!r}: "
            f"{format_size(offer.total_size)} offered, {format_size(free)} free"
        )


def _plan_tree(offer: Offer, output_dir: Path, *, overwrite: bool) -> list[Path]:
    """The final paths of a folder offer (sfs.peer.tree decides the names); a folder
    that exists here is used as it is, unless it is not a folder or is a link."""
    entries: list[tuple[tuple[str, ...], bool]] = [(folder, True) for folder in offer.folders]
    entries += [((*info.folder, info.name), False) for info in offer.files]
    local = plan_tree(entries)
    for parts in local[: len(offer.folders)] + [p[:-1] for p in local[len(offer.folders) :]]:
        for depth in range(1, len(parts) + 1):
            _check_folder(output_dir.joinpath(*parts[:depth]))
    paths = [output_dir.joinpath(*parts) for parts in local[len(offer.folders) :]]
    for path in paths:
        _check_existing(path, overwrite=overwrite)
    return paths


def _check_folder(path: Path) -> None:
    """A folder to write into: absent (it will be made), or a real folder, never a
    link (which could lead out of the output folder)."""
    info = _lstat(path)
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise DestinationExistsError(
            f"{str(path)!r} is in the way of an offered folder (not a folder, or a link)"
        )


def make_folders(offer: Offer, output_dir: Path) -> None:
    """Create every folder of a folder offer, parents first, refusing links."""
    if not is_tree(offer):
        return
    entries: list[tuple[tuple[str, ...], bool]] = [(folder, True) for folder in offer.folders]
    entries += [((*info.folder, info.name), False) for info in offer.files]
    local = plan_tree(entries)
    wanted = {p for p in local[: len(offer.folders)]}
    wanted |= {p[:-1] for p in local[len(offer.folders) :] if len(p) > 1}
    for parts in sorted(wanted, key=len):
        for depth in range(1, len(parts) + 1):
            path = output_dir.joinpath(*parts[:depth])
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
        if info.executable:
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
    :raises DestinationExistsError: a file sfs did not write is at one of the names.
    """

    def __init__(
        self,
        final: Path,
        *,
        identity: dict[str, object],
        offset: int = 0,
        prefix: HashState | None = None,
    ) -> None:
        self.final = final
        self.part = part_path(final)
        self.meta = meta_path(final)
        try:
            fd = self._reopen(offset) if offset else self._create(identity)
        except OSError as exc:
            raise _disk_error(exc, self.part) from exc
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._hash = prefix.copy() if offset and prefix is not None else hashlib.sha256()
        self.offset = offset
        self.written = 0

    def _reopen(self, offset: int) -> int:
        fd = os.open(self.part, os.O_WRONLY | _NOFOLLOW)
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
            return os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        except FileExistsError:
            raise DestinationExistsError(
                f"{str(self.part)!r} appeared while sfs was about to write it; not touching it"
            ) from None

    def write(self, data: bytes | memoryview) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise _disk_error(exc, self.part) from exc
        self._hash.update(data)
        self.written += len(data)

    async def commit(self, expected_sha256: bytes, *, overwrite: bool) -> None:
        """Check the hash, make the bytes durable, and move the file to its final name."""
        if not digests_equal(self._hash.digest(), expected_sha256):
            raise IntegrityError(
                f"{self.final.name}: SHA-256 mismatch; the received data was discarded"
            )
        try:
            await asyncio.to_thread(self._flush_and_sync)
            self._file.close()
            _place(self.part, self.final, overwrite=overwrite)
        except OSError as exc:
            raise _disk_error(exc, self.final) from exc
        _unlink(self.meta)

    def _flush_and_sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def keep(self) -> None:
        """Stop, keeping what arrived (every byte authenticated) for a later resume."""
        try:
            self._file.close()
        except OSError:
            logger.debug("closing %s failed", self.part, exc_info=True)

    def discard(self) -> None:
        self.keep()
        _unlink(self.part)
        _unlink(self.meta)


HashState = Any  # hashlib's sha256 object (no public type name)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def part_path(final: Path) -> Path:
    return final.with_name(_names_written(final.name)[1])


def meta_path(final: Path) -> Path:
    return final.with_name(_names_written(final.name)[2])


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
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
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
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
        fd = os.open(part, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
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


def _place(part: Path, final: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(part, final)
        return
    # link() fails if the final name exists, so no file can be replaced even if one
    # appears while the transfer runs; rename() alone would silently overwrite.
    try:
        os.link(part, final, follow_symlinks=False)
    except FileExistsError:
        raise DestinationExistsError(
            f"{str(final)!r} appeared during the transfer; pass --overwrite to replace it"
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # File systems without hard links (FAT, some network shares): best effort.
        if os.path.lexists(final):
            raise DestinationExistsError(f"{str(final)!r} already exists") from None
        os.rename(part, final)
        return
    os.unlink(part)


def _disk_error(exc: OSError, path: Path) -> DiskError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskError(f"disk full while writing {str(path)!r}")
    return DiskError(f"cannot write {str(path)!r}: {exc.strerror or exc}")


# -- the two sides --------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    path: Path
    name: str
    size: int
    mtime_ns: int
    folder: tuple[str, ...] = ()
    executable: bool = False


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

    :raises SourceError: as :func:`inspect_sources`, or a folder that cannot be walked.
    """
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

    :raises SourceError: a file is missing, not a regular file or unreadable.
    """
    sources = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
        except FileNotFoundError:
            raise SourceError(f"{str(path)!r}: no such file") from None
        except IsADirectoryError:
            raise SourceError(f"{str(path)!r} is a folder; sfs sends files") from None
        except OSError as exc:
            raise SourceError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{str(path)!r} is not a regular file")
        executable = bool(st.st_mode & stat.S_IXUSR)
        sources.append(
            SourceFile(path, _text(path.name), st.st_size, st.st_mtime_ns, executable=executable)
        )
    if not sources:
        raise SourceError("no file to send")
    return sources


@dataclass
class TransferResult:
    """What moved: file names (sender) or final paths (receiver), bytes, seconds."""

    files: list[Path | str] = field(default_factory=list)
    total_bytes: int = 0
    resumed_bytes: int = 0
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


def cancel_reason(exc: BaseException) -> str:
    """What to tell the peer: the kind of failure, never a local path or detail."""
    reasons: list[tuple[type[BaseException] | tuple[type[BaseException], ...], str]] = [
        (DiskError, "the receiver cannot write the file (disk full or not writable)"),
        (DestinationExistsError, EXISTS_REASON),
        (IntegrityError, "the received data failed its integrity check"),
        (VerificationError, "the verification strings were not confirmed"),
        (RemoteProtocolError, "protocol violation"),
        (SourceError, "the file changed or became unreadable on the sending side"),
        ((KeyboardInterrupt, asyncio.CancelledError), "cancelled by the user"),
    ]
    for kind, reason in reasons:
        if isinstance(exc, kind):
            return reason
    return "the other side hit an error"


def _peer_stopped(event: Event) -> SfsError:
    if isinstance(event, Reject):
        return RejectedError(f"the receiver declined the transfer ({event.reason})")
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
    """The next event from the peer, keepalives skipped."""
    while isinstance(event := proto.receive(await channel.receive()), Ping):
        pass
    return event


@asynccontextmanager
async def keepalive(channel: Channel, proto: TransferProtocol) -> AsyncIterator[None]:
    """Send a PING whenever this side has sent nothing for PING_INTERVAL_SECONDS, so
    the peer can tell a quiet connection (a user deciding, a disk busy) from a lost one."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_SECONDS)
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
) -> TransferResult:
    """Offer ``sources``, stream them if accepted, and return after the last ack.

    :param resume: continue files the receiver already partly holds, once their
        prefix is checked against ours; otherwise send everything from the start.
    """
    progress = progress or NullProgress()
    result = TransferResult()
    try:
        async with keepalive(channel, proto):
            offer = Offer(
                files=tuple(
                    FileInfo(s.name, s.size, s.mtime_ns, s.folder, s.executable) for s in sources
                ),
                sender=sender,
                chunk_size=chunk_size,
                folders=folders,
            )
            await channel.send(proto.send(offer))
            if on_waiting is not None:
                on_waiting()
            reply = await next_event(channel, proto)
            if not isinstance(reply, Accept):
                raise _peer_stopped(reply)
            status("The receiver accepted.")
            result.started = time.monotonic()
            starts = await _prefixes(sources, reply.held if resume else ())
            offsets = tuple(offset for offset, _ in starts)
            digests = tuple(p.digest() if p is not None else b"" for _, p in starts)
            await channel.send(proto.send(Resume(offsets, digests if any(offsets) else ())))
            if proto.state is State.CONFIRMING:
                verdict = await next_event(channel, proto)
                if not isinstance(verdict, Start):
                    raise _peer_stopped(verdict)
                for i, (source, offset) in enumerate(zip(sources, verdict.offsets, strict=True)):
                    if offsets[i] and not offset:
                        status(f"{source.name}: the receiver's partial copy differs; sending all")
                        starts[i] = (0, None)
            for source, (offset, prefix) in zip(sources, starts, strict=True):
                await _send_one(channel, proto, source, chunk_size, progress, offset, prefix)
                result.files.append(source.name)
                result.total_bytes += source.size
                result.resumed_bytes += offset
            while proto.state is not State.DONE:
                event = await next_event(channel, proto)
                if not isinstance(event, FileAck):
                    raise _peer_stopped(event)
        return result.finish()
    except BaseException as exc:
        await abort_transfer(channel, proto, exc)
        raise


async def _prefixes(
    sources: list[SourceFile], held: tuple[int, ...]
) -> list[tuple[int, HashState | None]]:
    """Where to propose starting each file, with the hash state of our own bytes before
    that point: what the receiver holds, or 0 if our file is shorter than that now."""
    starts: list[tuple[int, HashState | None]] = []
    for i, source in enumerate(sources):
        offset = held[i] if held else 0
        prefix = await asyncio.to_thread(_hash_prefix, source, offset) if offset else None
        starts.append((offset, prefix) if prefix is not None else (0, None))
    return starts


def _hash_prefix(source: SourceFile, length: int) -> HashState | None:
    with _open_source(source) as f:
        return _hash_stream(f, length)


async def _send_one(
    channel: Channel,
    proto: TransferProtocol,
    source: SourceFile,
    chunk_size: int,
    progress: Progress,
    offset: int,
    prefix: HashState | None,
) -> None:
    digest = prefix if prefix is not None else hashlib.sha256()
    progress.start(source.name, source.size)
    progress.advance(offset)
    queued = shown = offset  # bytes given to the channel / shown as sent
    try:
        f = _open_source(source)
        try:
            f.seek(offset)
            remaining = source.size - offset
            block_size = max(chunk_size, READ_BLOCK_BYTES // chunk_size * chunk_size)
            while remaining:
                block = await asyncio.to_thread(f.read, min(block_size, remaining))
                if not block:
                    raise SourceError(f"{source.name} shrank while it was being sent")
                digest.update(block)
                remaining -= len(block)
                view = memoryview(block)
                for start in range(0, len(block), chunk_size):
                    data = view[start : start + chunk_size]
                    await channel.send(proto.send(Chunk(data)))
                    queued += len(data)
                    # What left, not what was queued: the channel buffers megabytes.
                    if (left := queued - channel.unsent_bytes()) > shown:
                        progress.advance(left - shown)
                        shown = left
                _drain_acks(channel, proto)
            st = os.fstat(f.fileno())
            if st.st_size != source.size or st.st_mtime_ns != source.mtime_ns:
                raise SourceError(f"{source.name} changed while it was being sent")
        finally:
            f.close()
        await channel.send(proto.send(FileDone(digest.digest())))
        progress.advance(source.size - shown)  # the rest is on its way, in order
    finally:
        progress.finish()


def _open_source(source: SourceFile) -> IO[bytes]:
    try:
        return open(source.path, "rb")
    except OSError as exc:
        raise SourceError(f"cannot read {str(source.path)!r}: {exc.strerror or exc}") from exc


def _drain_acks(channel: Channel, proto: TransferProtocol) -> None:
    """Handle what the receiver sent meanwhile, so a cancel stops us at once."""
    while (frame := channel.poll()) is not None:
        event = proto.receive(frame)
        if not isinstance(event, FileAck | Ping):
            raise _peer_stopped(event)


#: Failures after which the bytes already written cannot be trusted for a resume.
_UNTRUSTED = (IntegrityError, ProtocolError, CryptoError)


async def receive_files(
    channel: Channel,
    proto: TransferProtocol,
    *,
    output_dir: Path,
    overwrite: bool,
    decide: Callable[[Offer], Awaitable[bool]],
    progress: Progress | None = None,
    resume: bool = True,
    status: Callable[[str], None] = lambda message: None,
    kept: Callable[[str, int], None] = lambda name, held: None,
) -> TransferResult:
    """Wait for an offer, ask ``decide``, then write every file safely.

    :param resume: offer to continue from partial copies (``.NAME.sfs-part``) left by an
        interrupted transfer of the same file; otherwise start every file over.
    :param kept: called with a file's name and the bytes held when a transfer that
        stops keeps its partial copy for a later resume.
    """
    progress = progress or NullProgress()
    result = TransferResult()
    part: PartFile | None = None
    try:
        async with keepalive(channel, proto):
            offer = await next_event(channel, proto)
            if not isinstance(offer, Offer):
                raise _peer_stopped(offer)
            destinations = plan_destinations(offer, output_dir, overwrite=overwrite)
            if not await _decide_while_listening(channel, proto, decide, offer):
                await channel.send(proto.send(Reject("declined by the receiver")))
                await linger(channel, LAST_WORD_GRACE_SECONDS)
                raise RejectedError("you declined the transfer")
            await asyncio.to_thread(make_folders, offer, output_dir)
            held = [0] * len(offer.files)
            if resume:
                for i, (info, dest) in enumerate(zip(offer.files, destinations, strict=True)):
                    held[i] = await asyncio.to_thread(find_partial, info, dest, status)
            # Only how much: a hash of our bytes would tell anyone who can make a
            # matching offer what they are (docs/PROTOCOL.md, "Resume").
            await channel.send(proto.send(Accept(tuple(held) if any(held) else ())))
            result.started = time.monotonic()
            proposal = await next_event(channel, proto)
            if not isinstance(proposal, Resume):
                raise _peer_stopped(proposal)
            starts = await _confirm_prefixes(proposal, destinations, held, status)
            if proto.state is State.CONFIRMING:
                await channel.send(proto.send(Start(tuple(offset for offset, _ in starts))))
            for info, dest, (offset, prefix) in zip(offer.files, destinations, starts, strict=True):
                part = PartFile(dest, offset=offset, prefix=prefix, identity=identity_of(info))
                progress.start(dest.name, info.size)
                progress.advance(offset)
                try:
                    while True:
                        event = await next_event(channel, proto)
                        if isinstance(event, Chunk):
                            if not result.total_bytes and not part.written:
                                # Wall time, so scripts/bench can compare it across processes.
                                logger.info("first data byte at %.6f", time.time())
                            part.write(event.data)
                            progress.advance(len(event.data))
                        elif isinstance(event, FileDone):
                            done = event
                            break
                        else:
                            raise _peer_stopped(event)
                finally:
                    progress.finish()
                await part.commit(done.sha256, overwrite=overwrite)
                part = None
                await asyncio.to_thread(keep_metadata, dest, info)
                status(_saved(dest, info.name))
                result.files.append(dest)
                result.total_bytes += info.size
                result.resumed_bytes += offset
                await channel.send(proto.send(FileAck()))
        return result.finish()
    except BaseException as exc:
        if part is not None:
            if isinstance(exc, _UNTRUSTED) or not (part.offset or part.written):
                part.discard()
            else:
                part.keep()
                kept(part.final.name, part.offset + part.written)
        await abort_transfer(channel, proto, exc)
        raise


async def _decide_while_listening(
    channel: Channel,
    proto: TransferProtocol,
    decide: Callable[[Offer], Awaitable[bool]],
    offer: Offer,
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

    deciding = asyncio.ensure_future(decide(offer))
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
    proposal: Resume, destinations: list[Path], held: list[int], status: Callable[[str], None]
) -> list[tuple[int, HashState | None]]:
    """Where each file really starts: the sender's offset where our own partial copy
    hashes as the sender's prefix does, else 0 (and that partial copy is replaced)."""
    starts: list[tuple[int, HashState | None]] = []
    for i, (dest, offset) in enumerate(zip(destinations, proposal.offsets, strict=True)):
        prefix = await asyncio.to_thread(_hash_partial, part_path(dest), offset) if offset else None
        if prefix is not None and digests_equal(prefix.digest(), proposal.sha256[i]):
            starts.append((offset, prefix))
            continue
        if offset:
            status(f"{dest.name}: the sender's file differs from the partial copy; starting over")
        elif held[i]:
            status(f"{dest.name}: the sender sends it from the start; starting over")
        starts.append((0, None))
    return starts


def _saved(dest: Path, offered: str) -> str:
    """The line for a file now in place, saying when its name is not the offered one."""
    line = f"Saved {dest}"
    if dest.name != offered:
        line += f" (offered as {offered[:MAX_SHOWN_NAME_CHARS]!r})"
    return line


def format_size(n: float) -> str:
    """``1.2 MB`` style, decimal units as file managers show them."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
