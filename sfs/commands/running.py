"""What every command shares once its options are parsed: logging, the event loop,
the runtime tuning, and :func:`_run`, which maps every
:class:`~sfs.errors.SfsError` to one line on stderr and its exit code (tracebacks only
with ``-v``) and Ctrl-C to exactly one line.

(Here, not in :mod:`sfs.cli`: the commands use it, and sfs.cli imports the commands.)
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from sfs import platform
from sfs.commands.output import say, say_error
from sfs.commands.ui import ConsoleUi
from sfs.errors import DeclinedError, SfsError
from sfs.text import printable

if TYPE_CHECKING:
    import asyncio

    from sfs.commands.jsonui import JsonLines, JsonUi


T = TypeVar("T")
EXIT_INTERRUPTED = 130


#: Allocations between two first-generation collections (CPython's default: 700).
GC_GEN0_THRESHOLD = 50_000
#: Allocations below this come from the heap, not from mmap (see _tune_malloc).
MALLOC_MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
#: Freed heap memory kept for reuse before any is returned to the system.
MALLOC_TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024
logger = logging.getLogger("sfs.cli")  # the name its log lines have always carried


class PrintableFormatter(logging.Formatter):
    """Log records as inert text: a logged peer string cannot control the terminal.

    The message becomes one line; a traceback keeps its line breaks, each of its
    lines made printable.
    """

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.msg, record.args = printable(record.getMessage()), None
        return "\n".join(printable(line) for line in super().format(record).split("\n"))


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
    # No gc.collect() first: at start-up it found nothing to collect and took 20-27 ms
    # of the time to the first byte.
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
