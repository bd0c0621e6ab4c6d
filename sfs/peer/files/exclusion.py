"""What a sent folder leaves out: `--exclude PATTERN` and `--gitignore` (issue 30).

Patterns are gitignore's (``*.log``, ``build/``, ``**/node_modules``, ``!keep.log``),
matched by pathspec's :class:`GitIgnoreSpec`, the library made for it. `--exclude`
patterns are matched against each path inside a named folder, relative to that
folder; with `--gitignore` every ``.gitignore`` inside a sent folder applies to its own
folder and below, a deeper one before a shallower one (as git reads them), and the
``.git`` folder is left out too. An `--exclude` match is left out whatever a
``.gitignore`` says. A folder left out is not walked at all.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

import pathspec

from sfs import platform
from sfs.errors import SourceError

#: A .gitignore larger than this is refused (a real one is a few kilobytes).
MAX_GITIGNORE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class LeaveOut:
    """What to leave out of sent folders.

    :param patterns: `--exclude` patterns, gitignore-style
    :param gitignore: honour the ``.gitignore`` files inside sent folders
    """

    patterns: tuple[str, ...] = ()
    gitignore: bool = False
    _spec: pathspec.GitIgnoreSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            spec = pathspec.GitIgnoreSpec.from_lines(self.patterns)
        except (ValueError, TypeError) as exc:
            raise SourceError(f"--exclude: {exc}") from None
        object.__setattr__(self, "_spec", spec)

    def __bool__(self) -> bool:
        return bool(self.patterns) or self.gitignore

    def excluded(self, inside: tuple[str, ...], is_dir: bool) -> bool:
        """``inside``: the path's parts below the named folder."""
        return bool(self._spec.match_file(_path(inside, is_dir)))


@dataclass
class Ignores:
    """The ``.gitignore`` files in force in one folder being walked: (where, spec)
    pairs, shallowest first."""

    found: tuple[tuple[tuple[str, ...], pathspec.GitIgnoreSpec], ...] = ()

    def entering(self, folder: str | os.PathLike[str], inside: tuple[str, ...]) -> Ignores:
        """The ignores for a folder's entries: these, and its own ``.gitignore``."""
        spec = _read_gitignore(os.path.join(folder, ".gitignore"))
        return self if spec is None else Ignores((*self.found, (inside, spec)))

    def ignored(self, inside: tuple[str, ...], is_dir: bool) -> bool:
        for base, spec in reversed(self.found):  # the deepest that has a say decides
            result = spec.check_file(_path(inside[len(base) :], is_dir))
            if result.include is not None:
                return bool(result.include)
        return False


def _path(parts: tuple[str, ...], is_dir: bool) -> str:
    return "/".join(parts) + ("/" if is_dir else "")


def _read_gitignore(path: str) -> pathspec.GitIgnoreSpec | None:
    try:
        fd = os.open(path, platform.open_flags(os.O_RDONLY))
    except OSError:
        return None  # none here (or a link: not followed, as git does not)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        data = f.read(MAX_GITIGNORE_BYTES + 1)
    if len(data) > MAX_GITIGNORE_BYTES:
        raise SourceError(f"{path!r} is over 1 MiB: not a .gitignore sfs reads")
    lines = data.decode("utf-8", errors="replace").splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines)
