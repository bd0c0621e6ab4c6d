"""Progress: tqdm bars on a terminal, a plain line now and then elsewhere (a log)."""

from __future__ import annotations

import functools
import sys
import time
from typing import TYPE_CHECKING, Any

from sfs.commands import terminal
from sfs.commands.output import say
from sfs.text import format_size, printable

if TYPE_CHECKING:
    from tqdm import tqdm


#: Without a terminal, a progress line per file at most this often.
PROGRESS_LINE_SECONDS = 5.0


#: Below this many columns a progress bar shows only the bar (or the count) and the rate.
NARROW_COLUMNS = 60
NARROW_BAR = "{desc}: {percentage:3.0f}%|{bar}| {size_rate}"
NARROW_COUNT = "{desc}: {size_n} {size_rate}"
#: tqdm's own layout, with sizes as everywhere else (format_size: ``1.1 GB``, not ``1.07G``).
WIDE_BAR = (
    "{desc}: {percentage:3.0f}%|{bar}| {size_n}/{size_total} [{elapsed}<{remaining}, {size_rate}]"
)
WIDE_COUNT = "{desc}: {size_n} [{elapsed}, {size_rate}]"
#: Columns a bar leaves free at the end of its line: room for the ``^C`` a terminal
#: echoes when Ctrl-C is typed, which would otherwise wrap and strand the bar.
BAR_SPARE_COLUMNS = 3
#: How often a bar looks again at the terminal's width.
BAR_WIDTH_CHECK_SECONDS = 0.5


class LineProgress:
    """Progress for a log rather than a terminal: one plain line at most every
    PROGRESS_LINE_SECONDS (tqdm's bars would fill a log with carriage returns), per
    file, or for the whole transfer when it has many files."""

    def __init__(self, *, limit: float | None = None, label: str = "") -> None:
        self._limit = limit
        self._label = f"{label}: " if label else ""
        self._name = ""
        self._size: int | None = 0
        self._done = 0
        self._started = self._last = 0.0
        self._overall = False

    def begin(self, files: int, total: int | None) -> None:
        self._overall = files > 1
        if self._overall:
            self._name, self._size, self._done = f"{files} files", total, 0
            self._started = self._last = time.monotonic()

    def start(self, name: str, size: int | None) -> None:
        if not self._overall:
            self._name, self._size, self._done = printable(name, 60), size, 0
            self._started = self._last = time.monotonic()

    def advance(self, n: int) -> None:
        self._done += n
        now = time.monotonic()
        if now - self._last >= PROGRESS_LINE_SECONDS:
            self._last = now
            rate = self._done / max(now - self._started, 1e-6)
            speed = f"{format_size(rate)}/s{limited(self._limit)}"
            if self._size is None:
                say(f"{self._label}{self._name}: {format_size(self._done)}, {speed}")
                return
            percent = 100 * self._done / self._size if self._size else 100.0
            say(
                f"{self._label}{self._name}: {format_size(self._done)} of "
                f"{format_size(self._size)} "
                f"({percent:.0f} %), {speed}"
            )

    def finish(self) -> None:
        pass


class TqdmProgress:
    """A tqdm bar on stderr: one per file, or one for the whole transfer when it has
    many files (a bar per file of a tree of thousands would cost more than the files)."""

    def __init__(self, *, quiet: bool, limit: float | None = None, label: str = "") -> None:
        self._quiet = quiet
        self._limit = limit
        # `sfs send --many`: whose bar this is (``Receiver 2``, shown as ``2:``).
        self._label = f"{label.rpartition(' ')[2]}: " if label else ""
        self._bar: tqdm[Any] | None = None
        self._files_left = 0  # of an overall bar
        self._width_checked = 0.0
        self.drawn = False  # a bar has been on the screen

    @staticmethod
    def _bar_columns() -> int | None:
        width = terminal.columns(sys.stderr)
        return None if width is None else width - BAR_SPARE_COLUMNS

    def _new_bar(self, name: str, total: int | None) -> tqdm[Any]:
        width = terminal.columns(sys.stderr)
        narrow = width is not None and width < NARROW_COLUMNS
        self._width_checked = time.monotonic()
        self.drawn = True
        # Narrow: the bar and the rate, rather than tqdm's line cut off mid-figure.
        layouts = (NARROW_BAR, NARROW_COUNT) if narrow else (WIDE_BAR, WIDE_COUNT)
        bar = _size_bar()(
            total=total,
            desc=self._label
            + printable(name, 30 if width is None else max(8, min(30, width // 3))),
            unit="B",
            file=sys.stderr,
            leave=False,
            ncols=None if width is None else width - BAR_SPARE_COLUMNS,
            bar_format=layouts[0] if total is not None else layouts[1],
        )
        bar.sfs_limit = self._limit  # type: ignore[attr-defined]  # read by SizeBar
        return bar

    @property
    def active(self) -> bool:
        return self._bar is not None

    def clear(self) -> None:
        """Take the bar off the screen (before a last line: an error, Ctrl-C)."""
        self._files_left = 0
        self.finish()

    def begin(self, files: int, total: int | None) -> None:
        if self._quiet or files <= 1:
            return  # not even a disabled bar: tqdm would still start its monitor thread
        self._files_left = files
        self._bar = self._new_bar(f"{files} files", total)

    def start(self, name: str, size: int | None) -> None:
        if not self._quiet and not self._files_left:
            self._bar = self._new_bar(name, size)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            now = time.monotonic()
            if now - self._width_checked >= BAR_WIDTH_CHECK_SECONDS:
                # The terminal may have been resized (tqdm's own dynamic_ncols would
                # fill the last column, which an echoed ^C then wraps).
                self._width_checked = now
                self._bar.ncols = self._bar_columns()
            self._bar.update(n)

    def finish(self) -> None:
        if self._files_left:
            self._files_left -= 1
            if self._files_left:
                return
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def limited(limit: float | None) -> str:
    """What a rate shown says of --limit-rate: `` (limit 2.1 MB/s)``, or nothing."""
    return "" if limit is None else f" (limit {format_size(limit)}/s)"


@functools.cache
def _size_bar() -> type[tqdm[Any]]:
    """tqdm with ``size_n``, ``size_total`` and ``size_rate`` for its layout, written
    by :func:`format_size`: the bar shows the sizes the prompt and the last line show.
    (Made on first use: tqdm is not imported for --help.)"""
    from tqdm import tqdm

    class SizeBar(tqdm):  # type: ignore[type-arg]  # tqdm is generic in its stubs only
        @property
        def format_dict(self) -> dict[str, Any]:
            shown = dict(super().format_dict)
            total, rate = shown.get("total"), shown.get("rate")
            shown["size_n"] = format_size(shown.get("n") or 0)
            shown["size_total"] = "?" if total is None else format_size(total)
            shown["size_rate"] = "…/s" if not rate else f"{format_size(rate)}/s"
            shown["size_rate"] += limited(getattr(self, "sfs_limit", None))
            return shown

    return SizeBar
