"""What the terminal allows: colour, progress bars, and how wide a line may be.

Pure decisions for the CLI (:mod:`sfs.commands`, the only modules that print), from the environment
and the stream's own answers, so they are tested without a terminal:

- colour only on a terminal, and never with ``NO_COLOR`` set and non-empty
  (https://no-color.org) or ``TERM=dumb``;
- progress bars only when stderr is a terminal that is not ``dumb`` (a dumb terminal,
  like a log, gets a plain line now and then);
- a width only for a terminal (``COLUMNS`` first, as :func:`shutil.get_terminal_size`
  does, then the terminal's own size), or when ``COLUMNS`` is set: a pipe with neither
  is not cut, a script reading it gets every character.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping, Sequence
from typing import IO, Any

from sfs.text import ELLIPSIS

#: No line is cut narrower than this, however narrow the terminal says it is.
MIN_COLUMNS = 20


def is_tty(stream: IO[Any] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # closed, or not a real file
        return False


def dumb(environ: Mapping[str, str] | None = None) -> bool:
    """``TERM=dumb``: no colour, no cursor movement (an Emacs shell buffer, a CI log)."""
    return (os.environ if environ is None else environ).get("TERM") == "dumb"


def colour_off(environ: Mapping[str, str] | None = None) -> bool:
    """Whether colour is forbidden whatever the stream: ``NO_COLOR`` set and not
    empty, or ``TERM=dumb``.  (A stream that is not a terminal gets none either; click
    strips styles there by itself.)"""
    env = os.environ if environ is None else environ
    return bool(env.get("NO_COLOR")) or dumb(env)


def bars_allowed(stream: IO[Any] | None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether a progress bar (redrawn in place with carriage returns) may go to
    ``stream``: a terminal, and not a dumb one."""
    return is_tty(stream) and not dumb(environ)


def columns(stream: IO[Any] | None, environ: Mapping[str, str] | None = None) -> int | None:
    """How wide a line on ``stream`` may be: ``COLUMNS`` if set to a number, else the
    terminal's width; None (no limit) for anything else, such as a pipe."""
    env = os.environ if environ is None else environ
    try:
        width = int(env.get("COLUMNS", ""))
    except ValueError:
        width = 0
    if width <= 0 and is_tty(stream):
        assert stream is not None
        try:
            width = os.get_terminal_size(stream.fileno()).columns
        except (OSError, ValueError):
            width = 0
    return max(width, MIN_COLUMNS) if width > 0 else None


def _char_columns(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """The columns ``text`` takes on a terminal: two for each wide (CJK) character,
    none for a combining mark."""
    return sum(_char_columns(char) for char in text)


def cut(text: str, width: int | None) -> str:
    """``text`` in at most ``width`` columns, ending with ``…`` when cut."""
    if width is None or display_width(text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        used += _char_columns(char)
        if used > width - 1:
            break
        kept.append(char)
    return "".join(kept).rstrip() + ELLIPSIS


def pad(text: str, width: int) -> str:
    """``text`` and spaces up to ``width`` columns."""
    return text + " " * max(width - display_width(text), 0)


def fit_columns(
    rows: Sequence[Sequence[str]],
    width: int | None,
    *,
    shrink: Mapping[int, int],
    drop: Sequence[int] = (),
) -> list[str]:
    """Rows of cells as aligned lines (two spaces between columns) in ``width``.

    To fit, the columns in ``shrink`` (index: narrowest) give up characters first, in
    that order, their cells cut with ``…``; then the columns in ``drop`` go, in that
    order; a line still too wide is cut at the end.
    """
    kept = list(range(len(rows[0])))
    full = [max(display_width(row[i]) for row in rows) for i in kept]
    widths = dict(enumerate(full))

    def over() -> int:
        return sum(widths[i] for i in kept) + 2 * (len(kept) - 1) - (width or 0)

    if width is not None:
        for index, narrowest in shrink.items():
            widths[index] -= min(max(over(), 0), max(widths[index] - narrowest, 0))
        for index in drop:
            if over() <= 0:
                break
            kept.remove(index)
            # A column dropped may leave room to give back to those cut.
            for cut_index in reversed(list(shrink)):
                if cut_index in kept:
                    widths[cut_index] += min(max(-over(), 0), full[cut_index] - widths[cut_index])
    lines = [
        "  ".join(pad(cut(row[i], widths[i]), widths[i]) for i in kept).rstrip() for row in rows
    ]
    return [cut(line, width) for line in lines]


def wrap(text: str, width: int | None) -> list[str]:
    """``text`` as lines of at most ``width`` columns, broken at spaces, never inside a
    word (a word wider than a line has one of its own, which the terminal wraps);
    one line when there is no width (a pipe, a log)."""
    if width is None or display_width(text) <= width:
        return [text]
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and display_width(line) + 1 + display_width(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line]
