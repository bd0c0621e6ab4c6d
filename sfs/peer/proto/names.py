"""Names: what an offered name becomes here, and which names a file that arrives takes.

Pure rules, shared by the planning of a single file (:mod:`sfs.peer.receiving`) and of
a folder (:mod:`sfs.peer.proto.tree`): :func:`safe_name` reduces a name the peer offered to a
plain local one (Windows rules on every OS: the file may be copied on), and
:func:`free_name` finds the next free ``name (n).ext`` among names already taken.
Nothing here reads or writes the disk: finding what is taken is the caller's.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Container, Iterator

from sfs.errors import DestinationExistsError, RemoteProtocolError
from sfs.text import is_unsafe

#: The partial copy of NAME is ``.NAME.sfs-part``, its record ``.NAME.sfs-info``, and
#: the lock that claims NAME for one transfer ``.NAME.sfs-lock``: hidden, and names no
#: user file has by accident. A final name never has one of these forms (safe_name
#: takes the dot off an offered one), so it can never be taken for one.
PART_SUFFIX = ".sfs-part"
META_SUFFIX = ".sfs-info"
LOCK_SUFFIX = ".sfs-lock"
#: Most file systems limit a name to 255 bytes; keep room for the dot and suffix.
MAX_NAME_BYTES = 255 - 1 - max(len(PART_SUFFIX), len(META_SUFFIX), len(LOCK_SUFFIX))
#: The number the second file of one name gets: ``a.txt``, then ``a (1).txt`` (as
#: browsers and LocalSend number a download whose name is taken).
FIRST_COPY_NUMBER = 1
#: How many numbered names are tried for one file before giving up.
MAX_COPY_NUMBER = 10_000
#: The staging folder's name starts with this (mkdtemp's prefix).
STAGING_PREFIX = ".sfs-staging-"
#: Names Windows takes for devices, whatever the extension ("nul.txt" is NUL too);
#: it counts the superscript digits ¹²³ as digits here.
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{p}{c}" for p in ("COM", "LPT") for c in "0123456789\u00b9\u00b2\u00b3"
}
#: Characters Windows cannot have in a name (":" would open an NTFS alternate data
#: stream, "report.pdf:Zone.Identifier"). Replaced on every OS: the file may be copied on.
_WINDOWS_UNSAFE_CHARS = str.maketrans(dict.fromkeys('<>:"|?*', "_"))


def safe_name(offered: str, *, in_folder: bool = False) -> str:
    """Reduce a name offered by the peer to a plain, harmless file name.

    Only the last path component survives (``/`` and ``\\`` both count), control
    and invisible formatting characters go (NUL, escapes, bidi overrides), leading
    dots go (no hidden files such as ``.bashrc`` at the top of the output folder),
    characters and device names that Windows cannot store are defused (``:<>|?*"``
    become ``_``; ``CON``, ``COM¹``, ``CONIN$`` get a ``_`` in front), and the result
    fits in MAX_NAME_BYTES with the extension kept.

    :param in_folder: a name inside an offered folder keeps its leading dot
        (``.gitignore``): the user chose the folder, and nothing of theirs is hidden
        from them by it; but never a name of sfs's own form (``.x.sfs-part``, a
        staging folder), which loses its dot instead, so it is never taken for one.
    :raises RemoteProtocolError: nothing usable is left.
    """
    name = offered.replace("\\", "/").rsplit("/", 1)[-1]
    # The characters never shown raw on a terminal are never kept in a name either.
    name = "".join(c for c in name if not is_unsafe(c))
    name = unicodedata.normalize("NFC", name).translate(_WINDOWS_UNSAFE_CHARS)
    hidden_ok = in_folder and not is_own_name(name.strip())
    trim = _trim_keeping_dots if hidden_ok else _trim
    name = trim(name)
    if not name:
        raise RemoteProtocolError(f"the offered file name {offered[:40]!r} is empty or unusable")
    name = _fit(name, trim)
    # After the cut: a stem cut short could be a device name ("COM1" of "COM1xyz...").
    if name.partition(".")[0].rstrip(" ").upper() in _WINDOWS_RESERVED:
        name = _fit("_" + name, trim)
    return name


def is_own_name(name: str) -> bool:
    """A name of the form sfs gives its own files: a partial copy, its record, a
    lock, the staging folder."""
    folded = name.casefold()
    return folded.startswith(".") and (
        folded.endswith((PART_SUFFIX, META_SUFFIX, LOCK_SUFFIX))
        or folded.startswith(STAGING_PREFIX)
    )


def _fit(name: str, trim: Callable[[str], str]) -> str:
    """Cut ``name`` to MAX_NAME_BYTES, keeping a short extension."""
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = _split_ext(name)
    keep_ext = dot and 0 < len(ext.encode("utf-8")) <= 16
    suffix = ("." + ext).encode("utf-8") if keep_ext else b""
    base = (stem if keep_ext else name).encode("utf-8")[: MAX_NAME_BYTES - len(suffix)]
    return trim(base.decode("utf-8", errors="ignore")) + suffix.decode("utf-8")


def _split_ext(name: str) -> tuple[str, str, str]:
    """Stem, dot, extension; a hidden name's leading dot starts no extension
    (``.gitignore`` has none, ``.config.json`` has ``json``)."""
    stem, dot, ext = name.rpartition(".")
    if not stem.strip("."):
        return name, "", ""
    return stem, dot, ext


def names_written(name: str) -> tuple[str, str, str, str]:
    """The final, partial-copy, record and lock names of a file that arrives as ``name``."""
    return name, f".{name}{PART_SUFFIX}", f".{name}{META_SUFFIX}", f".{name}{LOCK_SUFFIX}"


def names_taken(name: str) -> set[str]:
    """Every name sfs writes for a file that arrives as ``name``, case-folded (as
    Windows and macOS compare names): what a second file must not share."""
    return {used.casefold() for used in names_written(name)}


def free_name(wanted: str, taken: Container[str], *, folder: bool = False) -> str:
    """The first of ``wanted``, ``wanted (1)``, ``wanted (2)``… (the extension kept,
    unless it is a ``folder``) none of whose names (:func:`names_taken`) is in ``taken``.

    Pure: finding what is taken (the other files of the offer, names another transfer
    holds, files already there) is the caller's.
    """
    return next(name for name in candidate_names(wanted, folder=folder) if not clashes(name, taken))


def clashes(name: str, taken: Container[str]) -> bool:
    return any(used in taken for used in names_taken(name))


def candidate_names(wanted: str, *, folder: bool = False) -> Iterator[str]:
    """``wanted``, then its numbered names, MAX_COPY_NUMBER of them.

    :raises DestinationExistsError: (once they are all used up) every one is taken.
    """
    yield wanted
    for n in range(FIRST_COPY_NUMBER, FIRST_COPY_NUMBER + MAX_COPY_NUMBER):
        yield _numbered(wanted, n, folder=folder)
    raise DestinationExistsError(f"{wanted!r} and {MAX_COPY_NUMBER} numbered names are all taken")


def _numbered(name: str, n: int, *, folder: bool = False) -> str:
    """``name (n).ext`` (a folder: ``name (n)``), still within MAX_NAME_BYTES."""
    stem, dot, ext = ("", "", "") if folder else _split_ext(name)
    if folder or not dot or len(ext.encode("utf-8")) > 16:
        stem, dot, ext = name, "", ""
    tail = f" ({n}){dot}{ext}"
    budget = MAX_NAME_BYTES - len(tail.encode("utf-8"))
    # Only the end is trimmed: a hidden name inside a folder keeps its dot.
    return stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore").rstrip(". ") + tail


def _trim(name: str) -> str:
    """Strip space and dots at both ends (no hidden files; Windows drops trailing ones)."""
    while True:
        trimmed = name.strip().lstrip(".").rstrip(". ")
        if trimmed == name:
            return name
        name = trimmed


def _trim_keeping_dots(name: str) -> str:
    """Strip space at both ends and dots at the end (Windows drops trailing ones); a
    name of dots only is nothing."""
    trimmed = name.strip().rstrip(". ")
    return trimmed if trimmed.strip(".") else ""
