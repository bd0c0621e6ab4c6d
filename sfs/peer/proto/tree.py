"""Folders: where the receiver puts what a sender offered, sans I/O.

:func:`plan_tree` turns offered paths into local relative paths that can only land
inside the output folder (the sender's side, walking a real tree, is
:mod:`sfs.peer.files.tree`).

Offered paths are the peer's words.  Each component goes through
:func:`sfs.peer.proto.names.safe_name` on its own; a component that is empty, ``.``,
``..``, or holds a separator or NUL is refused, never repaired (a sender that writes
``a/../../x`` is not honest); so is a path deeper than MAX_DEPTH, and a file that
would sit where a folder goes (or the reverse).  Two files that become one name here
(after sanitising, case-insensitively: the output folder may be on a file system that
ignores case) are both kept: the second under the next free name, ``x (1).txt``.  Inside
a folder a name keeps its leading dot (``.gitignore``); at the top it does not.
"""

from __future__ import annotations

from collections.abc import Sequence

from sfs.errors import RemoteProtocolError
from sfs.peer.proto.names import free_name, names_taken, safe_name
from sfs.peer.proto.wire import MAX_ENTRIES, MAX_PATH_DEPTH

#: The deepest path one entry may have (components, the file's name included), and
#: the most entries (files and folders) one transfer may carry: the protocol's limits.
MAX_DEPTH = MAX_PATH_DEPTH
_FORBIDDEN_IN_COMPONENT = ("/", "\\", "\0")


def local_parts(parts: Sequence[str]) -> tuple[str, ...]:
    """The local relative path of one offered path (components).

    The top component is a name at the top of the output folder, never hidden; those
    below keep a leading dot (:func:`sfs.peer.proto.names.safe_name`, ``in_folder``).

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
