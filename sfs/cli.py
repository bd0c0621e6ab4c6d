"""The ``sfs`` command line: parse, set up logging, run one coroutine, map errors.

This is the only module that prints.  Every :class:`~sfs.errors.SfsError` becomes
one line on stderr and its exit code; tracebacks only with ``-v``.
"""

from __future__ import annotations

# Only what --help and --version need is imported here: they must answer in well
# under 0.2 s, and aiortc, aiohttp, socketio and cryptography take half a second.
# Everything heavy is imported in the function that uses it.
import functools
import gc
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import click
from click.core import ParameterSource

from sfs import __version__, platform, settings
from sfs.commands import terminal
from sfs.defaults import (
    CONNECT_TIMEOUT_SECONDS,
    DEFAULT_CHUNK_BYTES,
    DEFAULT_FD_RESERVE,
    DEFAULT_HEADER_TIMEOUT_SECONDS,
    DEFAULT_JOIN_TIMEOUT_SECONDS,
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_MAX_QUEUED_BYTES_PER_CONNECTION,
    DEFAULT_PAIRING_TIMEOUT_SECONDS,
    DEFAULT_REDIS_TTL_SECONDS,
    DEFAULT_REGISTER_TIMEOUT_SECONDS,
    DEFAULT_TURN_TTL_SECONDS,
    LAN_FIND_SECONDS,
    MAX_CHUNK_BYTES,
    MAX_SENDER_NAME_CHARS,
    MAX_STREAMS,
    MAX_TEXT_BYTES,
    MIN_FD_RESERVE,
    MIN_REDIS_TTL_SECONDS,
    SETUP_PROTOCOL_VERSION,
    SIGNALING_PROTOCOL_VERSION,
    TRANSFER_PROTOCOL_VERSION,
    Transport,
)
from sfs.errors import DeclinedError, PeerConnectionError, SfsError
from sfs.text import format_size, printable, printable_text

if TYPE_CHECKING:
    import asyncio

    from tqdm import tqdm

    from sfs import app
    from sfs.code import Code
    from sfs.commands.jsonui import JsonLines, JsonUi
    from sfs.lan.record import Advert
    from sfs.peer.protocol import FileInfo, Offer
    from sfs.peer.transfer import Plan, Progress, TransferResult
    from sfs.signal.messages import IceServer
    from sfs.signal.turn import TurnSecret

T = TypeVar("T")
EXIT_INTERRUPTED = 130
#: Without a terminal, a progress line per file at most this often.
PROGRESS_LINE_SECONDS = 5.0
#: What to do with a code: on the receiver's side, and on the sender's (--print-code).
#: Wrapped at spaces to the terminal's width (terminal.wrap), never mid-word.
SEND_HINT = (
    "On the other computer, run `sfs send CODE FILE...` (or `sfs send FILE...` "
    "and type the code). Waiting…"
)
RECEIVE_HINT = (
    "On the other computer, run `sfs receive CODE` (or `sfs receive -` and type the code). Waiting…"
)
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
#: An offer lists at least this many names, however small the terminal.
MIN_LISTED_FILES = 5
#: Allocations between two first-generation collections (CPython's default: 700).
GC_GEN0_THRESHOLD = 50_000
#: Allocations below this come from the heap, not from mmap (see _tune_malloc).
MALLOC_MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
#: Freed heap memory kept for reuse before any is returned to the system.
MALLOC_TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024
logger = logging.getLogger("sfs.cli")


class Number(settings.FiniteFloatRange):
    """A number option: "'abc' is not a valid number", not click's "float range"; and
    never nan or inf (from any source: settings.FiniteFloatRange)."""

    name = "number"


class WholeNumber(click.IntRange):
    """A whole-number option: "'abc' is not a valid integer", not "integer range"."""

    name = "integer"


# -- output helpers -----------------------------------------------------------------------


class Styled(NamedTuple):
    """Part of a line to show in a style (click.style's), where colour is allowed."""

    text: str
    fg: str | None = None
    bold: bool = False


def say(*parts: str | Styled, err: bool = True) -> None:
    """Print one line: the only way text reaches the terminal.

    Every part passes through :func:`sfs.text.printable`, whatever its source:
    many carry a peer's or a server's words (names, reasons, error messages), and
    one forgotten path would let them write escape sequences to the terminal. Styles
    are added after that, and shown only on a terminal without NO_COLOR or TERM=dumb.
    """
    line = "".join(
        click.style(printable(part.text), fg=part.fg, bold=part.bold)
        if isinstance(part, Styled) and (part.fg or part.bold)
        else printable(part if isinstance(part, str) else part.text)
        for part in parts
    )
    click.echo(line, err=err, color=False if terminal.colour_off() else None)


def say_error(message: str) -> None:
    say(Styled("Error:", fg="red", bold=True), f" {message}")


def _confirm(question: str) -> bool:
    return click.confirm(printable(question), default=False, err=True)


class PrintableFormatter(logging.Formatter):
    """Log records as inert text: a logged peer string cannot control the terminal.

    The message becomes one line; a traceback keeps its line breaks, each of its
    lines made printable.
    """

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.msg, record.args = printable(record.getMessage()), None
        return "\n".join(printable(line) for line in super().format(record).split("\n"))


class LineProgress:
    """Progress for a log rather than a terminal: one plain line at most every
    PROGRESS_LINE_SECONDS (tqdm's bars would fill a log with carriage returns), per
    file, or for the whole transfer when it has many files."""

    def __init__(self) -> None:
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
            if self._size is None:
                say(f"{self._name}: {format_size(self._done)}, {format_size(rate)}/s")
                return
            percent = 100 * self._done / self._size if self._size else 100.0
            say(
                f"{self._name}: {format_size(self._done)} of {format_size(self._size)} "
                f"({percent:.0f} %), {format_size(rate)}/s"
            )

    def finish(self) -> None:
        pass


class TqdmProgress:
    """A tqdm bar on stderr: one per file, or one for the whole transfer when it has
    many files (a bar per file of a tree of thousands would cost more than the files)."""

    def __init__(self, *, quiet: bool) -> None:
        self._quiet = quiet
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
        return _size_bar()(
            total=total,
            desc=printable(name, 30 if width is None else max(8, min(30, width // 3))),
            unit="B",
            file=sys.stderr,
            leave=False,
            ncols=None if width is None else width - BAR_SPARE_COLUMNS,
            bar_format=layouts[0] if total is not None else layouts[1],
        )

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
            return shown

    return SizeBar


class ConsoleUi:
    """The terminal side of :class:`sfs.app.Ui`."""

    def __init__(
        self,
        *,
        quiet: bool,
        assume_yes: bool = False,
        code_hint: str = SEND_HINT,
        list_all: bool = False,
        stdout_free: bool = True,
        qr: bool = False,
    ) -> None:
        """:param stdout_free: stdout may carry the code (False with --stdout, where
        it carries the data and everything else goes to stderr).
        :param qr: draw the code (or the web page's link with it) as a QR code too."""
        self.qr = qr
        self.quiet = quiet
        self.assume_yes = assume_yes
        self.list_all = list_all
        self.code_hint = code_hint
        self.stdout_free = stdout_free
        self.kept: list[str] = []
        self._kept_lines: list[str] = []
        self._bars: list[TqdmProgress] = []
        self._asking = False

    def status(self, message: str) -> None:
        if self.quiet:
            return
        # On a terminal a long line is broken between words, never inside one (the
        # terminal's own wrap would cut a word); elsewhere it stays one line.
        lines = terminal.wrap(message, terminal.columns(sys.stderr))
        if any(bar.active for bar in self._bars):
            from tqdm import tqdm

            with tqdm.external_write_mode(file=sys.stderr):  # the bar is redrawn below
                for line in lines:
                    say(line)
        else:
            for line in lines:
                say(line)

    def show_code(self, code: str, link: str | None = None) -> None:
        # The code goes to stdout only, once: not into logs or stderr captures. When
        # stdout goes elsewhere (a file, a pipe) but stderr is the user's terminal, the
        # person must still see it there.  So does its QR code, which holds it too.
        self._code_lines(code, link, err=not self.stdout_free)
        if self.stdout_free and not sys.stdout.isatty() and sys.stderr.isatty():
            self._code_lines(code, link, err=True)
        self.status(self.code_hint)

    def _code_lines(self, code: str, link: str | None, *, err: bool) -> None:
        say("Code: ", Styled(code, bold=True), err=err)
        if self.qr:
            show_qr(link or code, err=err)
            if link:
                say(f"Link: {link}", err=err)

    def progress(self) -> Progress:
        if not self.quiet and not terminal.bars_allowed(sys.stderr):
            return LineProgress()
        bar = TqdmProgress(quiet=self.quiet)
        self._bars.append(bar)
        return bar

    def kept_partial(self, name: str, held_bytes: int) -> None:
        # Said with the error (report_kept); after Ctrl-C, the one last line says it.
        self.kept.append(name)
        self._kept_lines.append(
            f"Kept {format_size(held_bytes)} of {name} to resume (hidden, as .{name}.sfs-part)"
        )

    def clear(self) -> None:
        """Before the last line: no bar left on the screen, no line left unfinished
        by a prompt that was waiting."""
        for bar in self._bars:
            bar.clear()
        width = terminal.columns(sys.stderr)
        if any(bar.drawn for bar in self._bars) and width is not None:
            # A bar was on this line: blank the whole of it, with the ^C echoed after it.
            sys.stderr.write("\r" + " " * (width - 1) + "\r")
            sys.stderr.flush()
        if self._asking:
            self._asking = False
            say("")

    def report_kept(self) -> None:
        for line in self._kept_lines:
            self.status(line)

    async def _ask(self, ask: Callable[[], bool]) -> bool:
        # Still set if Ctrl-C cancels the wait: clear() then ends the prompt's line.
        self._asking = True
        answer = await _ask_in_thread(ask)
        self._asking = False
        return answer

    async def confirm_verifier(self, verifier: str) -> bool:
        say("Verification string: ", Styled(verifier, bold=True))
        return await self._ask(lambda: _confirm("Does the other side show the same?"))

    async def decide(self, offer: Offer, plan: Plan | None = None) -> bool:
        import shutil

        from sfs.peer.names import safe_name
        from sfs.peer.transfer import is_tree

        # A name is cut to leave the rest of the question on one line of the terminal.
        width = terminal.columns(sys.stderr)
        name_chars = 80 if width is None else min(80, max(12, width - 40))
        if offer.text:
            what = f"a text message ({format_size(offer.files[0].size)})"
        elif offer.stream:
            name = terminal.cut(printable(safe_name(offer.files[0].name)), name_chars)
            what = f"{name} (a pipe, size unknown)"
        elif is_tree(offer):
            # The summary first, then the top level with what each folder holds; every
            # file only with --list (a tree of thousands is no screenful).
            what = describe_tree(offer)
            offered = f"{printable(offer.sender, 40)} offers" if offer.sender else "Offered:"
            self.status(f"{offered} {what}")
            screen = shutil.get_terminal_size().lines - 5
            listing = (
                offer_listing(offer, max_lines=len(offer.files), width=width)
                if self.list_all
                else tree_listing(offer, max_lines=screen, width=width)
            )
            for line in listing:
                self.status(line)
        elif len(offer.files) == 1:
            what = terminal.cut(printable(safe_name(offer.files[0].name)), name_chars)
        else:
            what = f"{len(offer.files)} files"
            # Every name, up to a screenful: the user must see what is to be written.
            screen = len(offer.files) if self.list_all else shutil.get_terminal_size().lines - 4
            for line in offer_listing(offer, max_lines=screen, width=width):
                self.status(line)
        for line in plan_lines(plan):
            self.status(line)
        sender = f" from {printable(offer.sender, 40)}" if offer.sender else ""
        plain = not (is_tree(offer) or offer.text or offer.stream)
        size = f" ({format_size(offer.total_size)})" if plain else ""
        question = f"Receive {what}{size}{sender}?"
        if self.assume_yes:
            self.status(f"{question} yes (--yes)")
            return True
        return await self._ask(lambda: _confirm(question))


def plan_lines(plan: Plan | None) -> list[str]:
    """What happens to the names that are taken (``report.pdf exists: will save as
    report (1).pdf``), said before the question: a few, then how many more."""
    from sfs.peer.transfer import MAX_PLAN_NOTES

    if plan is None:
        return []
    lines = [printable(note) for note in plan.notes[:MAX_PLAN_NOTES]]
    if len(plan.notes) > MAX_PLAN_NOTES:
        lines.append(f"…and {len(plan.notes) - MAX_PLAN_NOTES} more names that are taken")
    return lines


def show_qr(text: str, *, err: bool) -> None:
    """``text`` as a QR code, printed as it is: the drawing is ours, and its colour
    codes are what lets a camera read it on any terminal (say() would strip them)."""
    from sfs.commands.qr import qr_lines

    for line in qr_lines(text):
        click.echo(line, err=err, color=True)  # click would strip them off a terminal


# -- --json and --qr ----------------------------------------------------------------------


def _json_lines() -> JsonLines:
    """--json's events: one line each on stdout, flushed (click.echo flushes)."""
    from sfs.commands.jsonui import JsonLines

    return JsonLines(click.echo)


async def _ask(question: str) -> bool:
    return await _ask_in_thread(lambda: _confirm(question))


def json_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--json``; a usage error the command finds itself is then an ``error`` event
    on stdout as well as its line on stderr (errors while running: :func:`_run`)."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return f(*args, **kwargs)
            except click.ClickException as exc:
                if kwargs.get("as_json"):
                    _json_lines().error(exc.exit_code, exc.format_message())
                raise

        return click.option("--json", "as_json", is_flag=True, help=help_text)(run)

    return decorate


TRANSFER_JSON_HELP = (
    "Write events to stdout as JSON, one object per line (code, offer, progress, done, "
    "error; see README.md); no progress bars or status lines, only errors on stderr."
)
QR_OPTION = click.option(
    "--qr",
    is_flag=True,
    help="Also draw the code as a QR code (with a server that serves the web page, "
    "its link: http://SERVER/#CODE), for a phone's camera.",
)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe_tree(offer: Offer) -> str:
    """``2 files and 1 folder (1532 files, 1.2 GB)``: what the top of a folder offer
    holds, then everything in it."""
    top_files = sum(not info.folder for info in offer.files)
    top_folders = {folder[0] for folder in offer.folders}
    top_folders |= {info.folder[0] for info in offer.files if info.folder}
    parts = []
    if top_files:
        parts.append(_plural(top_files, "file"))
    if top_folders:
        parts.append(_plural(len(top_folders), "folder"))
    total = f"{_plural(len(offer.files), 'file')}, {format_size(offer.total_size)}"
    return f"{' and '.join(parts)} ({total})"


def _offered_path(info: FileInfo) -> str:
    from sfs.peer.names import safe_name

    try:
        return "/".join(safe_name(part) for part in (*info.folder, info.name))
    except SfsError:
        return info.name


def offer_listing(offer: Offer, *, max_lines: int, width: int | None = None) -> list[str]:
    """One line per offered file (its safe name and size), then "… and N more" if they
    do not all fit in ``max_lines``; a name is cut with "…" to keep its line within
    ``width`` columns."""
    keep = max(max_lines, MIN_LISTED_FILES)
    shown = offer.files if len(offer.files) <= keep else offer.files[: keep - 1]

    def line(info: FileInfo) -> str:
        size = format_size(info.size)
        columns = 70 if width is None else min(70, max(8, width - 4 - len(size)))
        name = terminal.cut(printable(_offered_path(info)), columns)
        return terminal.cut(f"  {name}  {size}", width)

    lines = [line(f) for f in shown]
    if len(shown) < len(offer.files):
        lines.append(f"  … and {len(offer.files) - len(shown)} more")
    return lines


def tree_listing(offer: Offer, *, max_lines: int, width: int | None = None) -> list[str]:
    """A folder offer's top level, in the offer's order: each file with its size, each
    folder (``photos/``) with how many files it holds and their size; then "… and N
    more" if they do not all fit in ``max_lines``."""
    from sfs.peer.names import safe_name

    counts: dict[tuple[str, bool], list[int]] = {}  # (name, is a folder): [files, bytes]
    for info in offer.files:
        entry = counts.setdefault(
            (info.folder[0], True) if info.folder else (info.name, False), [0, 0]
        )
        entry[0] += 1
        entry[1] += info.size
    for folder in offer.folders:
        counts.setdefault((folder[0], True), [0, 0])

    def line(name: str, folder: bool, files: int, size: int) -> str:
        try:
            name = safe_name(name)
        except SfsError:
            pass
        what = (
            (f"{_plural(files, 'file')}, {format_size(size)}" if files else "empty")
            if folder
            else format_size(size)
        )
        columns = 70 if width is None else min(70, max(8, width - 4 - len(what)))
        shown = terminal.cut(printable(name) + ("/" if folder else ""), columns)
        return terminal.cut(f"  {shown}  {what}", width)

    keep = max(max_lines, MIN_LISTED_FILES)
    entries = list(counts.items())
    shown = entries if len(entries) <= keep else entries[: keep - 1]
    lines = [line(name, folder, files, size) for (name, folder), (files, size) in shown]
    if len(shown) < len(entries):
        lines.append(f"  … and {len(entries) - len(shown)} more")
    return lines


async def _ask_in_thread(ask: Callable[[], bool]) -> bool:
    """Ask on the terminal without blocking the event loop (ICE keeps running).

    A daemon thread, not ``to_thread``: a prompt still waiting when the user presses
    Ctrl-C must not keep the process alive at exit.
    """
    import asyncio
    import threading

    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bool] = loop.create_future()

    def run() -> None:
        try:
            result = ask()
        except (click.Abort, EOFError):
            result = False

        def deliver() -> None:
            if not answer.done():
                answer.set_result(result)

        loop.call_soon_threadsafe(deliver)

    threading.Thread(target=run, name="sfs-prompt", daemon=True).start()
    return await answer


#: The shortest time a final line shows: below it, a rate would say more than it knows.
MIN_SHOWN_SECONDS = 0.001


def _seconds(elapsed: float) -> str:
    """``2.4 s``, ``0.35 s``, ``0.004 s``: never ``0.0 s``."""
    elapsed = max(elapsed, MIN_SHOWN_SECONDS)
    return f"{elapsed:.1f} s" if elapsed >= 1 else f"{elapsed:.2g} s"


def _final_line(verb: str, result: TransferResult) -> str:
    if result.text is not None:
        what = "a text message"
    elif len(result.records) == 1:
        record = result.records[0]
        # The name it has here: the receiver's may differ from the offered one.
        what = (record.path.name if record.path else record.name.rpartition("/")[2]) or (
            "a text message"
        )
    else:
        what = f"{len(result.records)} files"
    moved = result.total_bytes - result.resumed_bytes
    line = f"{verb} {what} ({format_size(result.total_bytes)}) in {_seconds(result.elapsed)}"
    if moved:  # nothing moved (all there already): no rate to speak of
        line += f", {format_size(moved / max(result.elapsed, MIN_SHOWN_SECONDS))}/s"
    if result.skipped_files:
        line += f", {_plural(result.skipped_files, 'file')} already there (same SHA-256)"
    if result.resumed_files:
        line += f", {_plural(result.resumed_files, 'file')} resumed"
    if result.resumed_bytes:
        line += f", {format_size(result.resumed_bytes)} not sent again"
    if result.route:
        line += f", {result.route}"
    return line


# -- running --------------------------------------------------------------------------------


def _setup_logging(verbose: int, *, quiet: bool = False) -> None:
    """:param quiet: only errors reach stderr (unless -v asks for more)."""
    level = logging.ERROR if quiet else logging.WARNING
    if verbose == 1:
        level = logging.INFO
    if verbose >= 2 or os.environ.get("SFS_DEBUG") == "1":
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    others = logging.ERROR if quiet and level >= logging.ERROR else logging.WARNING
    logging.basicConfig(level=others, handlers=[handler])
    logging.getLogger("sfs").setLevel(level)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (aiortc runs much faster on it), else asyncio's.

    ``SFS_EVENT_LOOP=asyncio`` forces the standard loop (for comparison, or to rule
    uvloop out when debugging).
    """
    if os.environ.get("SFS_EVENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def tune_runtime() -> None:
    """Make the garbage collector cheaper for a long transfer.

    aiortc allocates several objects per packet, so the cyclic collector runs very
    often, and each full run walks every long-lived object (aiortc, aiohttp, ...).
    Freezing what exists after start-up takes those out of the walk, and a larger
    first-generation threshold makes the runs rarer. Nothing here creates cycles at
    a rate that needs prompt collection.
    """
    if os.environ.get("SFS_GC_TUNING", "1") == "0":
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 100)
    _tune_malloc()


#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _tune_malloc() -> None:
    """Keep the transfer's large buffers in the heap (glibc only; elsewhere nothing).

    Each frame allocates a few 64-256 KiB buffers (the frame, the plaintext) and frees
    them a moment later. glibc serves allocations from 128 KiB upwards with fresh mmap
    pages and trims the heap top above 128 KiB, so every frame cost page faults and
    munmap calls: the receiver spent more time in the kernel than in Python. Raising
    both thresholds makes the same memory serve frame after frame: a receiver over
    TCP used 60 % less system time and moved 1 GiB 40 % faster (docs/PERFORMANCE.md).
    Freed memory up to the trim threshold stays with the process, which RSS shows.
    """
    if not platform.is_linux():
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc has it; musl does not
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES)
    mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD_BYTES)


def _run(
    coro: Coroutine[Any, Any, T],
    verbose: int,
    *,
    transfer: bool = True,
    ui: ConsoleUi | JsonUi | None = None,
    interrupted: int = EXIT_INTERRUPTED,
    json_lines: JsonLines | None = None,
) -> T:
    import asyncio

    if transfer:
        # Not for `sfs serve`: a long-lived server with many short connections needs
        # prompt full collections (scripts/load: 306 MiB instead of 151 MiB).
        tune_runtime()
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(coro)
    except SfsError as exc:
        if isinstance(ui, ConsoleUi):
            ui.clear()
            ui.report_kept()
        if verbose:
            logger.exception("details")
        if isinstance(exc, DeclinedError):
            say(str(exc))  # the user's own answer: said plainly, not as an error
        else:
            say_error(str(exc))
        if json_lines is not None:
            json_lines.error(exc.exit_code, str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if interrupted == 0:  # Ctrl-C is how this command ends
            sys.exit(0)
        if json_lines is not None:
            json_lines.error(EXIT_INTERRUPTED, "interrupted")
        if isinstance(ui, ConsoleUi):
            ui.clear()  # exactly one line, on a line of its own
        if ui is not None and ui.kept:
            say(
                "Interrupted. Nothing is under the final name; the partial copy is kept, "
                "and running both commands again resumes it."
            )
        else:
            say("Interrupted.")
        sys.exit(EXIT_INTERRUPTED)


def _ice_servers(values: Sequence[str]) -> tuple[IceServer, ...] | None:
    if not values:
        return None
    from sfs.signal.messages import parse_ice_server

    try:
        return tuple(parse_ice_server(v) for v in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ice-server") from None


def _streams(value: str) -> int | None:
    """``--streams``: ``auto`` (None) or 1 to MAX_STREAMS."""
    if value == "auto":
        return None
    if not value.isdigit() or not 1 <= int(value) <= MAX_STREAMS:
        raise click.BadParameter(
            f"{value!r}: give auto or a number from 1 to {MAX_STREAMS}", param_hint="--streams"
        )
    return int(value)


def _ice_addresses(values: Sequence[str]) -> tuple[str, ...]:
    # The environment variable carries one string: accept commas and spaces in it.
    return tuple(part for v in values for part in re.split(r"[,\s]+", v) if part)


def _peer_options(
    server: str | None,
    ice_server: Sequence[str],
    ice_address: Sequence[str],
    connect_timeout: float,
    *,
    lan: bool = False,
    name: str = "",
    cacert: Path | None = None,
    transport: str = Transport.AUTO.value,
) -> app.PeerOptions:
    """The options both peers share; the mode rule is here: ``--lan``, or no
    ``--server`` and no ``SFS_SERVER``, is LAN mode."""
    from sfs import app
    from sfs.peer.connection import check_local_addresses

    ctx = click.get_current_context()
    if lan and ctx.get_parameter_source("server") is ParameterSource.COMMANDLINE:
        raise click.UsageError("--lan and --server exclude each other: pick one")
    # An explicit --connect-timeout also bounds the search on the LAN, whose own
    # default is short: a waiting peer there answers within a second.
    explicit = ctx.get_parameter_source("connect_timeout") is not ParameterSource.DEFAULT
    try:
        addresses = check_local_addresses(_ice_addresses(ice_address))
    except PeerConnectionError as exc:
        raise click.BadParameter(
            str(exc).removeprefix("--ice-address "), param_hint="--ice-address"
        ) from None
    return app.PeerOptions(
        server_url=None if lan else server,
        ice_servers=_ice_servers(ice_server),
        ice_addresses=addresses,
        connect_timeout=connect_timeout,
        name=name,
        find_timeout=connect_timeout if explicit else LAN_FIND_SECONDS,
        ca_file=None if cacert is None else str(cacert),
        transport=Transport(transport),
    )


def _server_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An http:// or https:// URL with a host: anything else is a usage error, not a
    server that cannot be reached."""
    if value is None or not value.strip():
        return None  # LAN mode
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(
            f"{value!r} is not an http:// or https:// URL with a host, e.g. http://localhost:5000"
        )
    return value.strip()


RESUME_OPTION = click.option(
    "--no-resume",
    is_flag=True,
    help="Start over instead of continuing an interrupted transfer of the same file.",
)
VERIFY_OPTION = click.option(
    "--verify",
    is_flag=True,
    help="Show a verification string derived from the session key and ask whether the "
    "other side shows the same, before any file data moves.",
)


def peer_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options `send` and `receive` share."""
    options = [
        click.option(
            "--server",
            default=None,
            callback=_server_url,
            envvar="SFS_SERVER",
            show_envvar=True,
            metavar="URL",
            help="Signaling server (`sfs serve`) for peers on other networks. Without "
            "it (and without SFS_SERVER), sfs works on the local network by itself.",
        ),
        click.option(
            "--lan",
            is_flag=True,
            help="Work on the local network (no server) even if SFS_SERVER is set.",
        ),
        click.option(
            "--cacert",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            envvar="SFS_CA_BUNDLE",
            show_envvar=True,
            metavar="FILE",
            help="Trust these certificates (PEM) for an https:// --server instead of "
            "the system's (a private CA).",
        ),
        click.option(
            "--ice-server",
            multiple=True,
            metavar="URL",
            help="STUN/TURN server, e.g. stun:host:3478 or turn:USER:PASS@host:3478"
            "?transport=udp; repeatable. Replaces the servers `sfs serve` recommends.",
        ),
        click.option(
            "--ice-address",
            multiple=True,
            metavar="ADDR",
            envvar="SFS_ICE_ADDRESSES",
            show_envvar=True,
            help="Offer only this local address as ICE host candidate (repeatable; "
            "e.g. a VPN address, or 127.0.0.1 for two peers on one machine).",
        ),
        click.option(
            "--connect-timeout",
            type=Number(1, 3600),
            default=CONNECT_TIMEOUT_SECONDS,
            show_default=True,
            metavar="SECONDS",
            help="Give up when the signaling server, the other side or the direct "
            "connection does not answer within this long (on the local network, "
            f"looking for the peer takes at most {LAN_FIND_SECONDS:.0f} s unless "
            "this is given).",
        ),
        click.option(
            "--transport",
            type=click.Choice([t.value for t in Transport]),
            default=Transport.AUTO.value,
            envvar="SFS_TRANSPORT",
            show_envvar=True,
            show_default=True,
            help="auto: a direct TCP connection when the two sides reach each other "
            "(fastest), else WebRTC (through NATs and TURN); tcp or datachannel: only "
            "that one.",
        ),
        click.option(
            "-q",
            "--quiet",
            is_flag=True,
            help="Only errors on stderr: no progress, status lines or warnings (the code, "
            "the final line and a text message stay on stdout).",
        ),
        click.option("-v", "--verbose", count=True, help="More log output (-vv: debug)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


# -- commands ---------------------------------------------------------------------------------


def _epilog(examples: Sequence[tuple[str, str]]) -> str:
    """Each command's --help ends with examples and where the whole story is. (``\\b``
    keeps click from rewrapping the block.)"""
    width = max(len(command) for command, _ in examples)
    lines = [f"  {command.ljust(width)}  {what}" for command, what in examples]
    return (
        "\b\nExamples:\n"
        + "\n".join(lines)
        + "\n\n`sfs --help`: where received files go, and the exit codes. README.md (in sfs's"
        + "\nsource, not installed) has the details and troubleshooting."
    )


SERVE_EXAMPLES = [
    ("sfs serve", "signaling on port 5000, every interface"),
    ("sfs serve --port 0 --host 127.0.0.1", "a free port, this machine only"),
    ("sfs serve --turn turn:turn.example.org:3478", "hand out TURN credentials"),
]
RECEIVE_EXAMPLES = [
    ("sfs receive", "print a code, wait for files, ask before saving"),
    ("sfs receive -o ~/Downloads --yes", "save whatever comes into ~/Downloads"),
    ("sfs receive -", "type a code from `sfs send --print-code`"),
    ("sfs receive --stdout --yes | tar x", "unpack a tar sent as a pipe"),
]
SEND_EXAMPLES = [
    ("sfs send KQZ-042-tiger-lamp report.pdf", "send to the receiver showing that code"),
    ("sfs send report.pdf photos/", "type the code at the prompt; folders go whole"),
    ("sfs send --print-code notes.txt", "print a code here instead"),
    ("sfs send CODE --text 'hello'", "a text message"),
    ("tar c dir | sfs send CODE -", "a pipe"),
]
PEERS_EXAMPLES = [
    ("sfs peers", "who waits on this network, live until Ctrl-C"),
    ("sfs peers --once 2", "look for 2 s, print, exit"),
]
CHECK_EXAMPLES = [
    ("sfs check --server https://sfs.example.org", "can this network reach anyone?"),
]
CONFIG_EXAMPLES = [
    ("sfs config", "every command's settings and where they come from"),
    ("sfs config send", "just `sfs send`'s"),
    ("sfs config --path", "where the config file is looked for"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__,
    prog_name="sfs",
    message=f"%(prog)s %(version)s (protocols: transfer {TRANSFER_PROTOCOL_VERSION}, "
    f"set-up {SETUP_PROTOCOL_VERSION}, signaling {SIGNALING_PROTOCOL_VERSION})",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=settings.CONFIG_ENV,
    show_envvar=True,
    metavar="FILE",
    help="Read settings from this TOML file instead of "
    f"{settings.default_config_path()} (see `sfs config`).",
)
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """End-to-end-encrypted peer-to-peer file transfer with a one-time code.

    With no --server and no SFS_SERVER, `sfs receive` and `sfs send` work on the
    local network by themselves (mDNS); with a server (`sfs serve`), across networks.

    `sfs receive` saves into the folder it runs in, unless -o FOLDER says where
    (`sfs receive -o ~/Downloads`); it never replaces a file without --overwrite.

    Every option can also be set in the environment (SFS_ and its name, as each
    command's --help shows) or in the config file; the command line wins over the
    environment, which wins over the file. `sfs config` shows what is in force.

    \b
    Exit codes:
      0  done                        8  no connection to the other side
      1  other error                 9  a file to send is missing or unreadable
      2  bad command line           10  the destination exists (--overwrite)
      3  server unreachable         11  cannot write (disk full, not writable)
      4  no receiver with that code 12  integrity failure (damaged or tampered)
      5  wrong code                 13  protocol error, or an sfs too old
      6  declined                   14  --verify not confirmed
      7  the other side left        130 interrupted (Ctrl-C)

    Each command's --help lists its options, with examples. README.md, in sfs's
    source (pip does not install it), has the details and troubleshooting.
    """
    assert isinstance(ctx.command, click.Group)
    config = settings.load(config_file, ctx.command, ctx)
    ctx.default_map = config.default_map()
    ctx.obj = config


@main.command(epilog=_epilog(SERVE_EXAMPLES))
@click.option("--host", default="0.0.0.0", envvar="SFS_HOST", show_envvar=True, show_default=True)
@click.option(
    "--port",
    default=5000,
    type=WholeNumber(0, 65535),
    envvar="SFS_PORT",
    show_envvar=True,
    show_default=True,
    help="0 picks a free port (printed at start).",
)
@click.option(
    "--ice-server",
    multiple=True,
    metavar="URL",
    help="STUN/TURN server handed to clients when they register, as it is (a TURN "
    "server with a fixed turn:USER:PASS@host); repeatable.",
)
@click.option(
    "--stun",
    multiple=True,
    metavar="URL",
    help="STUN server handed to clients, e.g. stun:turn.example.org:3478; repeatable.",
)
@click.option(
    "--turn",
    multiple=True,
    metavar="URL",
    help="TURN server (coturn with use-auth-secret) handed to clients, each with its "
    "own short-lived credential, e.g. turn:turn.example.org:3478?transport=udp; "
    "repeatable (add ?transport=tcp for networks that block UDP).",
)
@click.option(
    "--turn-secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="File holding coturn's static-auth-secret (or set SFS_TURN_SECRET). Never "
    "sent to clients or logged.",
)
@click.option(
    "--turn-ttl",
    type=WholeNumber(60, 7 * 24 * 3600),
    default=DEFAULT_TURN_TTL_SECONDS,
    show_default=True,
    metavar="SECONDS",
    help="How long each issued TURN credential is valid.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Serve HTTPS with this certificate chain (PEM); needs --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="The private key of --tls-cert (PEM).",
)
@click.option(
    "--max-connections",
    default=10_000,
    type=WholeNumber(1),
    show_default=True,
    help="Refuse clients beyond this many at once.",
)
@click.option(
    "--max-lookups-per-connection",
    default=10,
    type=WholeNumber(1),
    show_default=True,
    help="Code lookups one client may try before it is refused.",
)
@click.option(
    "--max-lookups-per-address",
    default=60,
    type=WholeNumber(1),
    show_default=True,
    help="Code lookups per client address (IPv6: per /64) per minute.",
)
@click.option(
    "--max-connections-per-address",
    default=DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    type=WholeNumber(1),
    show_default=True,
    help="Connections one client address (IPv6: one /64) may hold at once; each peer "
    "holds one while it connects, so this is how many may share a NAT.",
)
@click.option(
    "--header-timeout",
    default=DEFAULT_HEADER_TIMEOUT_SECONDS,
    type=Number(min=0, min_open=True),
    show_default=True,
    metavar="SECONDS",
    help="Close a connection that has not sent its HTTP request (or websocket upgrade).",
)
@click.option(
    "--join-timeout",
    default=DEFAULT_JOIN_TIMEOUT_SECONDS,
    type=Number(min=0, min_open=True),
    show_default=True,
    metavar="SECONDS",
    help="Close a websocket that has not joined the Socket.IO namespace.",
)
@click.option(
    "--register-timeout",
    default=DEFAULT_REGISTER_TIMEOUT_SECONDS,
    type=Number(min=0, min_open=True),
    show_default=True,
    metavar="SECONDS",
    help="Disconnect a client that has not registered by then.",
)
@click.option(
    "--pairing-timeout",
    default=DEFAULT_PAIRING_TIMEOUT_SECONDS,
    type=Number(min=0, min_open=True),
    show_default=True,
    metavar="SECONDS",
    help="Disconnect both peers of a connection request that has not ended by then "
    "(peers leave once connected); keep it above the clients' --connect-timeout.",
)
@click.option(
    "--max-queued-bytes-per-connection",
    default=DEFAULT_MAX_QUEUED_BYTES_PER_CONNECTION,
    type=WholeNumber(1),
    show_default=True,
    help="Disconnect a client that leaves more than this unread.",
)
@click.option(
    "--max-queued-bytes",
    default=DEFAULT_MAX_QUEUED_BYTES,
    type=WholeNumber(1),
    show_default=True,
    help="Unread data for all clients together; beyond it the clients with the most "
    "unread are disconnected.",
)
@click.option(
    "--fd-reserve",
    default=DEFAULT_FD_RESERVE,
    type=WholeNumber(MIN_FD_RESERVE),
    show_default=True,
    help="File descriptors kept free for /healthz: Socket.IO clients get 503 when only "
    "this many are left.  The soft `ulimit -n` is raised to the hard one at start.",
)
@click.option(
    "--redis",
    "redis_url",
    envvar="SFS_REDIS_URL",
    show_envvar=True,
    metavar="URL",
    callback=lambda ctx, param, value: _redis_url(value),
    help="Keep the peers in this Redis, shared with every `sfs serve` node that uses it "
    "(several nodes behind a load balancer): redis://[:PASSWORD@]HOST[:PORT][/DB], "
    "rediss:// for TLS, or unix://PATH.  Put a password in SFS_REDIS_URL, not on the "
    "command line.  Without it, the peers live in this process.",
)
@click.option(
    "--redis-ttl",
    default=DEFAULT_REDIS_TTL_SECONDS,
    type=Number(min=MIN_REDIS_TTL_SECONDS),
    show_default=True,
    metavar="SECONDS",
    help="With --redis: how long a node's peers stay registered after its last "
    "heartbeat (it sends one every third of that), so how soon the partners of a node "
    "that died are told.",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv: debug).")
def serve(
    host: str,
    port: int,
    ice_server: tuple[str, ...],
    stun: tuple[str, ...],
    turn: tuple[str, ...],
    turn_secret_file: Path | None,
    turn_ttl: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    max_connections: int,
    max_lookups_per_connection: int,
    max_lookups_per_address: int,
    max_connections_per_address: int,
    header_timeout: float,
    join_timeout: float,
    register_timeout: float,
    pairing_timeout: float,
    max_queued_bytes_per_connection: int,
    max_queued_bytes: int,
    fd_reserve: int,
    redis_url: str | None,
    redis_ttl: float,
    verbose: int,
) -> None:
    """Run the signaling server (it never sees file data or keys)."""
    from sfs import app
    from sfs.signal import server as signal_server
    from sfs.signal.config import ServerConfig

    _setup_logging(verbose)
    logging.getLogger("sfs.signal").setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        config = ServerConfig(
            host=host,
            port=port,
            ice_servers=_ice_servers(ice_server) or (),
            stun_urls=_bare_ice_urls(stun, "--stun"),
            turn_urls=_bare_ice_urls(turn, "--turn"),
            turn_secret=_turn_secret(turn_secret_file),
            turn_ttl_seconds=turn_ttl,
            tls=(str(tls_cert), str(tls_key)) if tls_cert and tls_key else None,
            max_connections=max_connections,
            max_lookups_per_connection=max_lookups_per_connection,
            max_lookups_per_address=max_lookups_per_address,
            max_connections_per_address=max_connections_per_address,
            header_timeout_seconds=header_timeout,
            join_timeout_seconds=join_timeout,
            register_timeout_seconds=register_timeout,
            pairing_timeout_seconds=pairing_timeout,
            max_queued_bytes_per_connection=max_queued_bytes_per_connection,
            max_queued_bytes=max_queued_bytes,
            fd_reserve=fd_reserve,
            redis_url=redis_url,
            redis_ttl_seconds=redis_ttl,
        )
    except ValueError as exc:  # limits that contradict each other
        raise click.UsageError(str(exc)) from None

    if config.tls is not None:
        try:
            signal_server.tls_context(*config.tls)  # a bad file is a usage error, now
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        _run(_until_terminated(app.serve(config)), verbose, transfer=False)
    except OSError as exc:
        say_error(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        sys.exit(3)


async def _until_terminated(serving: Coroutine[Any, Any, None]) -> None:
    """Run *serving* until SIGTERM (what a service manager sends), which then stops it
    as Ctrl-C does: every client is disconnected and told, and with --redis its peer
    leaves the registry at once, so partners on other nodes need not wait for the TTL."""
    import asyncio

    task = asyncio.ensure_future(serving)
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    # Windows has no SIGTERM handler: there SIGTERM ends the process as before.
    undo = platform.on_terminate(asyncio.get_running_loop(), terminate)
    try:
        await task
    except asyncio.CancelledError:
        if not terminated:
            raise
    finally:
        undo()


def _redis_url(value: str | None) -> str | None:
    """--redis / SFS_REDIS_URL, checked; an empty SFS_REDIS_URL means none.  The error
    never shows the URL, which may hold a password."""
    if value is None or not value.strip():
        return None
    from sfs.signal.config import redis_url_display

    try:
        redis_url_display(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--redis / SFS_REDIS_URL") from None
    return value.strip()


def _bare_ice_urls(values: Sequence[str], option: str) -> tuple[str, ...]:
    """--stun/--turn URLs, checked and normalised; credentials do not belong in them
    (sfs serve issues its own)."""
    from sfs.signal.messages import canonical_ice_url

    urls: list[str] = []
    for value in values:
        if "@" in value:
            raise click.BadParameter(
                "put no credentials in the URL: sfs serve issues them "
                "(for a fixed one, use --ice-server)",
                param_hint=option,
            )
        try:
            urls.append(canonical_ice_url(value))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=option) from None
    return tuple(urls)


def _turn_secret(path: Path | None) -> TurnSecret | None:
    """From --turn-secret-file, else from SFS_TURN_SECRET; the error never shows it."""
    from sfs.signal.turn import read_secret

    if path is not None:
        try:
            return read_secret(path.read_bytes())
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {str(path)!r}: {exc.strerror or exc}", param_hint="--turn-secret-file"
            ) from None
        except ValueError:
            raise click.BadParameter(
                f"{str(path)!r} is empty", param_hint="--turn-secret-file"
            ) from None
    value = os.environ.get("SFS_TURN_SECRET", "")
    return read_secret(value.encode()) if value.strip() else None


@main.command(epilog=_epilog(RECEIVE_EXAMPLES))
@click.argument("code", required=False, metavar="[CODE]")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder to save into.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing files of the same name.")
@click.option("-y", "--yes", is_flag=True, help="Accept the offer without asking.")
@click.option(
    "--list",
    "list_all",
    is_flag=True,
    help="List every offered file, not just a screenful.",
)
@click.option(
    "--name",
    default=None,
    help="Name `sfs peers` shows for this receiver on the local network "
    "(default: your login name).",
)
@click.option(
    "--stdout",
    "to_stdout",
    is_flag=True,
    help="Write the one incoming file or pipe to stdout (everything else goes to "
    "stderr); an offer of more is refused. Data already written cannot be taken "
    "back: an integrity failure still exits 12. Refused when stdout is a terminal, "
    "unless --force-tty is given too.",
)
@click.option(
    "--force-tty",
    is_flag=True,
    help="With --stdout: write to stdout even when it is a terminal (the bytes go "
    "to the screen as they are).",
)
@QR_OPTION
@json_option(TRANSFER_JSON_HELP)
@VERIFY_OPTION
@RESUME_OPTION
@peer_options
def receive(
    code: str | None,
    output: Path,
    overwrite: bool,
    yes: bool,
    list_all: bool,
    name: str | None,
    to_stdout: bool,
    force_tty: bool,
    qr: bool,
    as_json: bool,
    verify: bool,
    no_resume: bool,
    server: str | None,
    lan: bool,
    cacert: Path | None,
    ice_server: tuple[str, ...],
    ice_address: tuple[str, ...],
    connect_timeout: float,
    transport: str,
    quiet: bool,
    verbose: int,
) -> None:
    """Print a one-time code and receive the files sent with it.

    With CODE (printed by `sfs send --print-code`), join that sender instead; `-`
    types it at a prompt (or reads it from stdin), out of the process list.
    """
    from sfs import app

    _setup_logging(verbose, quiet=quiet)
    if as_json and to_stdout:
        raise click.UsageError("--json and --stdout both write to stdout: pick one")
    if to_stdout and not force_tty and terminal.is_tty(sys.stdout):
        # Before a code is shown or used: refusing later would spend it (curl refuses so).
        raise click.UsageError(
            "stdout is a terminal: --stdout would put the file's bytes on the screen; "
            "redirect it (`--stdout > FILE`, `--stdout | tar x`) or add --force-tty"
        )
    if as_json and qr:
        raise click.UsageError("--json gives the code (and link) in its code event: drop --qr")
    if not yes and not sys.stdin.isatty():
        raise click.UsageError(
            "no terminal to ask whether to accept the offer; pass --yes to accept without asking"
        )
    _require_terminal_for_verify(verify)
    if code is None:
        joined = None
    elif code == "-":
        joined = _prompt_code() if sys.stdin.isatty() else _read_code()
    else:
        joined = _code_argument(code)
    config = app.ReceiveConfig(
        code=joined,
        output_dir=output,
        overwrite=overwrite,
        peer=_peer_options(
            server,
            ice_server,
            ice_address,
            connect_timeout,
            lan=lan,
            name=_default_sender() if name is None else name,
            cacert=cacert,
            transport=transport,
        ),
        verify=verify,
        resume=not no_resume,
        sink=sys.stdout.buffer if to_stdout else None,
        link=qr or as_json,
    )
    if as_json:
        from sfs.commands.jsonui import JsonUi

        json_ui = JsonUi(_json_lines(), assume_yes=yes, ask=_ask)
        received = _run(app.receive(config, json_ui), verbose, ui=json_ui, json_lines=json_ui.lines)
        json_ui.done("receive", received)
        return
    ui = ConsoleUi(quiet=quiet, assume_yes=yes, list_all=list_all, stdout_free=not to_stdout, qr=qr)
    result = _run(app.receive(config, ui), verbose, ui=ui)
    if result.text is not None:
        click.echo(printable_text(result.text), nl=not result.text.endswith("\n"))
    if to_stdout or result.text is not None:
        ui.status(_final_line("Received", result))  # stdout carries the output itself
    else:
        say(_final_line("Received", result), err=False)


def _complete_files(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    """Files and folders for `sfs send`'s arguments: the shell's own file completion
    (click tells bash `compopt -o default`, zsh `_path_files`, fish its path
    completion).  A code typed first is left alone: there is nothing to offer."""
    import click.shell_completion

    return [click.shell_completion.CompletionItem(incomplete, type="file")]


@main.command(epilog=_epilog(SEND_EXAMPLES))
@click.argument("args", nargs=-1, metavar="[CODE] FILE...", shell_complete=_complete_files)
@click.option(
    "--chunk-size",
    type=WholeNumber(1, MAX_CHUNK_BYTES),
    default=None,
    help=f"Plaintext bytes per message (lowered to the peer's limit) [default: "
    f"{DEFAULT_CHUNK_BYTES} over WebRTC, {MAX_CHUNK_BYTES} over TCP, each measured fastest].",
)
@click.option(
    "--name",
    "sender_name",
    default=None,
    help="Name shown to the receiver, and by `sfs peers` with --print-code "
    "(default: your login name).",
)
@click.option(
    "--streams",
    default="auto",
    show_default=True,
    metavar="auto|N",
    callback=lambda ctx, param, value: _streams(value),
    help=f"Stripe a WebRTC transfer over N peer connections (1-{MAX_STREAMS}): faster "
    "on long (high-latency) links, slower on a LAN; auto picks from the round trip "
    "measured while connecting (1 on a LAN). The direct TCP path is never striped.",
)
@click.option(
    "--print-code",
    is_flag=True,
    help="Print a code here and wait for the receiver to run `sfs receive CODE` "
    "(the sender-first flow, as in magic-wormhole and croc).",
)
@click.option(
    "--text",
    default=None,
    metavar="TEXT",
    help="Send this text message instead of files (`-`: read it from stdin); the "
    f"receiver prints it. At most {MAX_TEXT_BYTES // 1024 // 1024} MiB.",
)
@click.option(
    "--as",
    "stream_name",
    default="stdin",
    show_default=True,
    metavar="NAME",
    help="The name the receiver saves a pipe (FILE `-`, stdin) under.",
)
@click.option(
    "--no-compress",
    is_flag=True,
    help="Never compress (by default, chunks that shrink with zstd are sent compressed).",
)
@QR_OPTION
@json_option(TRANSFER_JSON_HELP)
@VERIFY_OPTION
@RESUME_OPTION
@peer_options
def send(
    args: tuple[str, ...],
    chunk_size: int | None,
    print_code: bool,
    text: str | None,
    stream_name: str,
    no_compress: bool,
    sender_name: str | None,
    streams: int | None,
    qr: bool,
    as_json: bool,
    verify: bool,
    no_resume: bool,
    server: str | None,
    lan: bool,
    cacert: Path | None,
    ice_server: tuple[str, ...],
    ice_address: tuple[str, ...],
    connect_timeout: float,
    transport: str,
    quiet: bool,
    verbose: int,
) -> None:
    """Send FILE... to the receiver that shows CODE.

    Leave CODE out to type it at a prompt (or pipe it on stdin), so it does not
    appear in the process list. With --print-code, this side prints the code instead.
    """
    from sfs import app

    _setup_logging(verbose, quiet=quiet)
    _require_terminal_for_verify(verify)
    if qr and not print_code:
        raise click.UsageError("--qr draws the code this side prints: use it with --print-code")
    if as_json and qr:
        raise click.UsageError("--json gives the code in its code event: drop --qr")
    code: Code | None
    # stdin carries the data (a pipe, or --text -): the code cannot come from there.
    stdin_taken = "-" in args or text == "-"
    if print_code:
        code, files = None, _only_files(args)
    else:
        code, files = _split_code(
            args, stdin_taken=stdin_taken, want_files=text is None, text_from_stdin=text == "-"
        )
    if text is not None and files:
        raise click.UsageError("--text sends a text message: give no files with it")
    if text is None and not files:
        raise click.UsageError("no file to send: `sfs send CODE FILE...` (or --text)")
    if "-" in files and len(files) > 1:
        raise click.UsageError("`-` (stdin) is sent alone: give no other files with it")
    if text == "-":
        text = _read_text()
    name = (_default_sender() if sender_name is None else sender_name)[:MAX_SENDER_NAME_CHARS]
    config = app.SendConfig(
        code=code,
        paths=tuple(Path(f) for f in files if f != "-"),
        text=text,
        stream=sys.stdin.buffer if "-" in files else None,
        stream_name=stream_name,
        compress=not no_compress,
        peer=_peer_options(
            server,
            ice_server,
            ice_address,
            connect_timeout,
            lan=lan,
            name=name,
            cacert=cacert,
            transport=transport,
        ),
        chunk_size=chunk_size,
        sender_name=name,
        verify=verify,
        streams=streams,
        resume=not no_resume,
    )
    if as_json:
        from sfs.commands.jsonui import JsonUi

        json_ui = JsonUi(_json_lines(), ask=_ask)
        json_ui.done("send", _run(app.send(config, json_ui), verbose, json_lines=json_ui.lines))
        return
    ui = ConsoleUi(quiet=quiet, code_hint=RECEIVE_HINT, qr=qr)
    result = _run(app.send(config, ui), verbose, ui=ui)
    say(_final_line("Sent", result), err=False)


@main.command(epilog=_epilog(PEERS_EXAMPLES))
@click.option(
    "--once",
    type=Number(0, 3600),
    default=None,
    metavar="SECONDS",
    help="Look for this long, print who was found and exit (0 even if nobody).",
)
@json_option(
    "Write a JSON object per line to stdout: a peer event for each waiting peer "
    "(with --once, each found); live, also a gone event when one leaves. See README.md."
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv: debug).")
def peers(once: float | None, as_json: bool, verbose: int) -> None:
    """List who is waiting on this local network: receivers, and senders that ran
    `sfs send --print-code`. Updates live until Ctrl-C.

    Only LAN mode peers are listed: a signaling server never publishes who is on it.
    """
    from sfs import app

    _setup_logging(verbose)
    if as_json:
        from sfs.commands.jsonui import PeerEvents

        events = PeerEvents(_json_lines())
        looking = app.peers(events.show, once=once)
        found = _run(looking, verbose, transfer=False, interrupted=0, json_lines=events.lines)
        events.show(found)  # --once (live, only Ctrl-C ends it)
        return
    if once is not None:
        found = _run(app.peers(lambda _: None, once=once), verbose, transfer=False)
        for line in peer_table(found, now=time.time(), width=terminal.columns(sys.stdout)):
            say(line, err=False)
        return
    live = LivePeers(terminal.bars_allowed(sys.stdout))  # no cursor moves on TERM=dumb
    try:
        _run(app.peers(live.show), verbose, transfer=False, interrupted=0)
    finally:
        live.close()


@main.command("check", epilog=_epilog(CHECK_EXAMPLES))
@click.option(
    "--server",
    required=True,
    callback=_server_url,
    envvar="SFS_SERVER",
    show_envvar=True,
    metavar="URL",
    help="The signaling server (`sfs serve`) to check with.",
)
@click.option(
    "--cacert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="SFS_CA_BUNDLE",
    show_envvar=True,
    metavar="FILE",
    help="Trust these certificates (PEM) for an https:// server (a private CA).",
)
@click.option(
    "--connect-timeout",
    type=Number(1, 3600),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv: debug).")
def check_command(
    server: str | None, cacert: Path | None, connect_timeout: float, verbose: int
) -> None:
    """Check what this network allows, before a transfer needs it: the server (and
    its TLS), STUN and the public address seen, the NAT's behaviour, and a TURN
    allocation with the issued credential on every TURN URL.

    One line per check (ok, warn: works with a limit, FAIL); exit 0 if any transfer
    is possible (the server answers: peers on one network need nothing more), else 1.
    """
    from sfs import app

    _setup_logging(verbose)
    if server is None:
        raise click.UsageError("give the server to check with: --server URL (or SFS_SERVER)")
    options = app.PeerOptions(
        server_url=server,
        connect_timeout=connect_timeout,
        ca_file=None if cacert is None else str(cacert),
    )
    report = _run(app.check_network(server, options), verbose, transfer=False)
    marks = {
        "ok": Styled("ok  ", fg="green"),
        "warn": Styled("warn", fg="yellow"),
        "fail": Styled("FAIL", fg="red", bold=True),
    }
    for finding in report.findings:
        say(marks[finding.level], f"  {finding.what}: {finding.detail}", err=False)
    say(f"Transfers possible: {report.summary}", err=False)
    sys.exit(0 if report.possible else 1)


PEER_NAME_CHARS = 24


def peer_table(adverts: Sequence[Advert], *, now: float, width: int | None = None) -> list[str]:
    """The lines `sfs peers` prints: a header and one row per waiting peer, or one
    line saying there is nobody.  Names come from the network: printable() only.

    :param width: no line is wider: names, then addresses, are cut with "…"."""
    from sfs.lan.record import waited

    if not adverts:
        return ["Nobody is waiting on this network."]
    rows = [("NAME", "WAITS TO", "ADDRESS", "WAITING")]
    for advert in adverts:
        rows.append(
            (
                printable(advert.name, PEER_NAME_CHARS) or "-",
                "receive" if advert.role == "receiver" else "send",
                advert.addresses[0],
                waited(advert.since, now),
            )
        )
    return terminal.fit_columns(rows, width, shrink={0: 6, 2: 12}, drop=(3, 1))


class LivePeers:
    """`sfs peers` without --once: on a terminal, the table redrawn in place every
    second; elsewhere (a pipe, a log), the table again only when who is there changes."""

    def __init__(self, redraw: bool) -> None:
        self.redraw = redraw
        self.drawn = 0
        self.last: list[tuple[str, str, tuple[str, ...], int]] | None = None

    def show(self, adverts: list[Advert]) -> None:
        who = [(a.name, a.role, a.addresses, a.port) for a in adverts]
        if not self.redraw and who == self.last:
            return
        self.last = who
        # Not one line wider than the terminal: a wrapped line would throw off the
        # count of lines to go back up by.
        lines = peer_table(adverts, now=time.time(), width=terminal.columns(sys.stdout))
        if self.redraw and self.drawn:
            sys.stdout.write(f"\x1b[{self.drawn}F\x1b[J")  # up to the old table, clear it
        elif self.drawn:
            say("", err=False)
        for line in lines:
            say(line, err=False)
        sys.stdout.flush()
        self.drawn = len(lines)

    def close(self) -> None:
        sys.stdout.flush()


def _require_terminal_for_verify(verify: bool) -> None:
    if verify and not sys.stdin.isatty():
        raise click.UsageError("--verify asks you to compare a string, and needs a terminal")


#: Tries at the `Code:` prompt before giving up.
CODE_PROMPT_TRIES = 3


def _split_code(
    args: tuple[str, ...],
    *,
    stdin_taken: bool = False,
    want_files: bool = True,
    text_from_stdin: bool = False,
) -> tuple[Code, tuple[str, ...]]:
    """Take the code from the first argument, or from a prompt or stdin if it is not
    there; say exactly what is wrong when an argument looks like a code but is not one,
    or stands in the wrong place (a mistyped code must not become a file name). The
    files are checked before a prompt asks for a code.

    :param stdin_taken: stdin carries data, so the code must be an argument or typed.
    :param want_files: files must follow the code (not with --text).
    :param text_from_stdin: stdin carries a text message (--text -), not a pipe.
    """
    from sfs.code import shown_part

    code_like = [i for i, arg in enumerate(args) if _looks_like_code(arg)]
    if code_like and code_like[0] > 0:
        arg = args[code_like[0]]
        raise click.UsageError(
            f"{shown_part(arg)} looks like a code{_did_you_mean(arg)}: put it first, "
            "as in `sfs send CODE FILE...`"
        )
    if code_like:
        code = _code_argument(args[0])
        files = args[1:]
        if not files and want_files:
            raise click.UsageError("no file to send: `sfs send CODE FILE...`")
        if len(code_like) > 1:
            raise click.UsageError(
                f"{shown_part(args[code_like[1]])} looks like a second code; "
                "give one code, then the files"
            )
        return code, files
    for arg in args:
        if arg != "-" and not os.path.lexists(arg):
            raise MissingFile(f"{arg!r}: no such file")
    if stdin_taken and not sys.stdin.isatty():
        example = "sfs send CODE --text -" if text_from_stdin else "sfs send CODE -"
        raise click.UsageError(f"stdin carries the data here: give the code first, `{example}`")
    return _prompt_code() if sys.stdin.isatty() else _read_code(), args


class MissingFile(click.ClickException):
    """A file to send is not there, found before a code is asked for (exit 9, as
    :class:`sfs.errors.SourceError`)."""

    exit_code = 9

    def show(self, file: Any = None) -> None:
        say_error(self.format_message())


def _only_files(args: tuple[str, ...]) -> tuple[str, ...]:
    from sfs.code import shown_part

    for arg in args:
        if _looks_like_code(arg):
            raise click.UsageError(
                f"{shown_part(arg)} looks like a code; with --print-code, this side "
                "prints the code: give only the files"
            )
    return args


def _looks_like_code(arg: str) -> bool:
    """A code, or an attempt at one, that is not the name of a file here."""
    from sfs.code import looks_like_code

    return looks_like_code(arg) and not os.path.lexists(arg)


def _code_argument(arg: str) -> Code:
    """CODE given as an argument; an error names a mistyped code as one, with the
    code it was likely meant to be."""
    from sfs.code import CODE_SHAPE, parse_code, shown_part

    try:
        return parse_code(arg)
    except ValueError as exc:
        problem = str(exc)
        if CODE_SHAPE.match(arg) is None:  # ALX232-…: it could have been a file name
            problem = (
                f"{shown_part(arg)} looks like a mistyped code (no file has that name): {problem}"
            )
        raise click.BadParameter(problem + _did_you_mean(arg), param_hint="CODE") from None


def _did_you_mean(typed: str) -> str:
    """`` (did you mean ALX-232-beam-haddock?)`` when one code is close to ``typed``.

    Its secret words only on a terminal, where the person typed them: stderr may be
    a log, which must never hold them (there, only a corrected ID is suggested)."""
    from sfs.code import shown_part, suggest_code

    suggestion = suggest_code(typed)
    if suggestion is None:
        return ""
    if terminal.is_tty(sys.stderr):
        return f" (did you mean {suggestion}?)"
    if shown_part(typed) != f"{suggestion.peer_id}-…":
        return f" (did you mean {suggestion.peer_id}-…?)"
    return ""


def _prompt_code() -> Code:
    """Ask on the terminal: a typo asks again; Ctrl-C or Ctrl-D ends like Ctrl-C."""
    from sfs.code import parse_code

    for _ in range(CODE_PROMPT_TRIES):
        try:
            text = click.prompt("Code", err=True)
        except click.Abort:
            say("")
            say("Interrupted.")
            sys.exit(EXIT_INTERRUPTED)
        try:
            return parse_code(text)
        except ValueError as exc:
            say_error(str(exc) + _did_you_mean(text))
    raise click.UsageError(f"no valid code after {CODE_PROMPT_TRIES} tries")


def _read_text() -> str:
    """--text -: the message from stdin, refused early when it is too large."""
    data = sys.stdin.buffer.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise click.UsageError(
            f"the text on stdin is over {MAX_TEXT_BYTES // 1024 // 1024} MiB: send it as a file"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise click.UsageError("the text on stdin is not UTF-8: send it as a file") from None


def _read_code() -> Code:
    text = sys.stdin.readline()
    if not text.strip():
        raise click.UsageError("no code given: pass it first, or type or pipe it on stdin")
    from sfs.code import parse_code

    try:
        return parse_code(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc) + _did_you_mean(text), param_hint="CODE") from None


def _default_sender() -> str:
    return platform.login_name()


@main.command("config", epilog=_epilog(CONFIG_EXAMPLES))
@click.argument("command", required=False, metavar="[COMMAND]")
@click.option("--path", "path_only", is_flag=True, help="Print only the config file's path.")
@click.pass_context
def config_command(ctx: click.Context, command: str | None, path_only: bool) -> None:
    """Print the settings in force for each command (or COMMAND) and where each
    comes from: the environment (SFS_...), the config file (with its line), or the
    default. Passwords in URLs are shown as ***.

    The output is TOML: a section of it can go into the config file as it is.
    """
    config: settings.ConfigFile = ctx.obj
    if path_only:
        say(str(config.path), err=False)
        return
    group = ctx.parent.command if ctx.parent is not None else None
    assert isinstance(group, click.Group) and ctx.parent is not None
    names = [n for n in sorted(group.commands) if n != "config"]
    if command is not None and command not in names:
        raise click.BadParameter(
            f"{command!r} is not one of {', '.join(names)}", param_hint="COMMAND"
        )
    shown = [command] if command else names
    # What the commands refuse from the environment, `sfs config` refuses too (the
    # file was checked when it was read).
    for name in shown:
        settings.check_environment(group.commands[name], ctx.parent, os.environ)
    state = "" if config.found else "  (not there: defaults and environment only)"
    say(f"# config file: {config.path}{state}", err=False)
    for name in shown:
        say("", err=False)
        say(f"[{name}]", err=False)
        for setting in settings.settings_in_force(
            group.commands[name], ctx.parent, config, os.environ
        ):
            line = f"{setting.key} = {settings.show_value(setting.value)}"
            if setting.value is None:
                line = f"# {setting.key} (not set)"
            say(f"{line:<44} # {setting.source}", err=False)


# Every option of every command from SFS_<NAME> too (after all commands are defined).
settings.name_env_vars(main)
