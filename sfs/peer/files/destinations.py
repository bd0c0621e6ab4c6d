"""Destinations: where each offered file goes (:class:`Plan`), the folders it needs,
what is here already to resume from, and each transfer's claims on its names.

One rule for every name that is taken (a file already there, another transfer's
claim, two offered files that become one name, a file that appears before the last
step): the file goes to the next free name, ``NAME (1).EXT``.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sfs import platform
from sfs.errors import (
    DestinationExistsError,
    DiskError,
)
from sfs.peer.files.claims import Claim, try_claim
from sfs.peer.files.partial import (
    disk_error,
    identity_of,
    lock_path,
    lstat_or_none,
    meta_path,
    own_partial,
    part_path,
)
from sfs.peer.proto.names import (
    candidate_names,
    clashes,
    free_name,
    names_taken,
    safe_name,
)
from sfs.peer.proto.tree import plan_tree
from sfs.peer.proto.wire import (
    FileInfo,
    Offer,
)
from sfs.text import format_size

logger = logging.getLogger(__name__)


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
            st = lstat_or_none(folder / name)
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
            why = "exists" if lstat_or_none(wanted) is not None else "is offered more than once"
            self.notes.append(f"{self._shown(wanted)} {why}: will save as {self._shown(path)}")
            return
        there = lstat_or_none(path)
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
        partial = own_partial(path)
        if partial is not None:
            reclaimable += min(partial.size, info.size)
        elif (st := lstat_or_none(path)) is not None and _maybe_complete(st, info):
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
            st = lstat_or_none(output_dir / name)
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
    """As lstat_or_none, but a path that cannot be looked at (a file in the way of a folder
    on it, no permission) counts as nothing there: the plan checks it properly."""
    try:
        return os.lstat(path)
    except OSError:
        return None


def _check_folder(path: Path) -> None:
    """A folder to write into: absent (it will be made), or a real folder, never a
    link (which could lead out of the output folder)."""
    info = lstat_or_none(path)
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
            raise disk_error(exc, path) from exc
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


class NameClaims:
    """A receiving transfer's claims on the names it writes (:mod:`sfs.peer.files.claims`),
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
            claim = (
                None if numbered and lstat_or_none(dest) is not None else try_claim(lock_path(dest))
            )
            # A file at the planned name that the plan did not see: another transfer
            # placed it since (it had the claim until then), or someone else did.
            appeared = not numbered and not self.overwrite and lstat_or_none(dest) is not None
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
        while lstat_or_none(dest) is not None:
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
        st = lstat_or_none(destinations[i])
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
    return (
        lstat_or_none(part_path(final)) is not None or lstat_or_none(meta_path(final)) is not None
    )


def find_partial(info: FileInfo, final: Path, status: Callable[[str], None]) -> int:
    """How many bytes of ``info`` sfs's own interrupted copy for ``final`` holds (0: none).

    :raises DestinationExistsError: a file sfs did not write is at the partial's names.
    """
    partial = own_partial(final)
    if partial is None or not partial.size:
        return 0
    if partial.identity != identity_of(info):
        status(f"{final.name}: the partial copy is of another version of the file; starting over")
        return 0
    return min(partial.size, info.size)
