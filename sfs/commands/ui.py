"""The terminal side of :class:`sfs.app.Ui` (:class:`ConsoleUi`), the prompts that ask
without blocking the event loop, the QR code, and --json's line writer."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from sfs.commands import terminal
from sfs.commands.listing import (
    _final_line,
    describe_tree,
    from_whom,
    offer_listing,
    plan_lines,
    tree_listing,
)
from sfs.commands.output import Styled, say
from sfs.commands.progress import LineProgress, TqdmProgress
from sfs.commands.prompts import confirm
from sfs.text import format_duration, format_size, printable

if TYPE_CHECKING:
    import asyncio

    from sfs.commands.jsonui import JsonLines
    from sfs.errors import SfsError
    from sfs.peer.files.destinations import Plan
    from sfs.peer.proto.progress import Progress
    from sfs.peer.proto.wire import Offer
    from sfs.peer.transfer import TransferResult


#: What to do with a code: on the receiver's side, and on the sender's (--print-code).
#: Wrapped at spaces to the terminal's width (terminal.wrap), never mid-word.
SEND_HINT = (
    "On the other computer, run `sfs send CODE FILE...` (or `sfs send FILE...` "
    "and type the code). Waiting…"
)
RECEIVE_HINT = (
    "On the other computer, run `sfs receive CODE` (or `sfs receive -` and type the code). Waiting…"
)


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
        yes_from: tuple[str, ...] = (),
        limit_rate: float | None = None,
        label: str = "",
    ) -> None:
        """:param stdout_free: stdout may carry the code (False with --stdout, where
        it carries the data and everything else goes to stderr).
        :param qr: draw the code (or the web page's link with it) as a QR code too.
        :param yes_from: paired devices whose offers are taken without asking.
        :param label: one receiver's session of `sfs send --many` (``Receiver 2``):
        its lines and bars say so, and it shows no code (the command's Ui did)."""
        self.label = label
        self.qr = qr
        self.yes_from = yes_from
        self.limit_rate = limit_rate
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
        self._lines(f"{self.label}: {message}" if self.label else message)

    def _lines(self, message: str, *, err: bool = True) -> None:
        # On a terminal a long line is broken between words, never inside one (the
        # terminal's own wrap would cut a word); elsewhere it stays one line.  (stdout
        # carries result lines, which stay whole for whatever reads them.)
        lines = terminal.wrap(message, terminal.columns(sys.stderr)) if err else [message]
        if any(bar.active for bar in self._bars):
            from tqdm import tqdm

            with tqdm.external_write_mode(file=sys.stderr):  # the bar is redrawn below
                for line in lines:
                    say(line, err=err)
        else:
            for line in lines:
                say(line, err=err)

    # -- `sfs send --many`: one Ui per receiver, and how each ended ------------------------

    def receiver(self, number: int) -> ConsoleUi:
        """Receiver ``number``'s Ui: its lines and bars labelled, its bars cleared with
        this Ui's (before a last line)."""
        child = ConsoleUi(quiet=self.quiet, limit_rate=self.limit_rate, label=f"Receiver {number}")
        child._bars = self._bars
        return child

    def received(self, number: int, result: TransferResult) -> None:
        self._lines(f"Receiver {number}: {_final_line('Sent', result)}", err=False)

    def failed(self, number: int, error: SfsError) -> None:
        self._lines(f"Receiver {number}: {error}")

    def show_code(self, code: str, link: str | None = None) -> None:
        if self.label:
            return  # a receiver's session of --many: the code was shown once, before
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
            return LineProgress(limit=self.limit_rate, label=self.label)
        bar = TqdmProgress(quiet=self.quiet, limit=self.limit_rate, label=self.label)
        self._bars.append(bar)
        return bar

    def kept_partial(self, name: str, held_bytes: int) -> None:
        # Said with the error (report_kept); after Ctrl-C, the one last line says it.
        self.kept.append(name)
        self._kept_lines.append(
            f"Kept {format_size(held_bytes)} of {name} to resume (hidden, as .{name}.sfs-part)"
        )

    def reconnecting(self, window: float) -> None:
        self.status(f"Connection lost; reconnecting (for up to {format_duration(window)})…")

    def reconnected(self, route: str) -> None:
        # What was kept is being continued: said again only if this session fails too.
        self.kept.clear()
        self._kept_lines.clear()
        self.status(f"Reconnected ({route}); resuming" if route else "Reconnected; resuming")

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
        return await self._ask(lambda: confirm("Does the other side show the same?"))

    async def decide(
        self, offer: Offer, plan: Plan | None = None, *, paired: str | None = None
    ) -> bool:
        import shutil

        from sfs.peer.files.destinations import is_tree
        from sfs.peer.proto.names import safe_name

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
            offered = f"{from_whom(offer, paired)} offers" if offer.sender or paired else "Offered:"
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
        sender = f" from {from_whom(offer, paired)}" if offer.sender or paired else ""
        plain = not (is_tree(offer) or offer.text or offer.stream)
        size = f" ({format_size(offer.total_size)})" if plain else ""
        question = f"Receive {what}{size}{sender}?"
        if self.assume_yes:
            self.status(f"{question} yes (--yes)")
            return True
        if paired is not None and paired in self.yes_from:
            self.status(f"{question} yes (--yes-from {paired})")
            return True
        return await self._ask(lambda: confirm(question))


def show_qr(text: str, *, err: bool) -> None:
    """``text`` as a QR code, printed as it is: the drawing is ours, and its colour
    codes are what lets a camera read it on any terminal (say() would strip them)."""
    from sfs.commands.qr import qr_lines

    for line in qr_lines(text):
        click.echo(line, err=err, color=True)  # click would strip them off a terminal


def _json_lines() -> JsonLines:
    """--json's events: one line each on stdout, flushed (click.echo flushes)."""
    from sfs.commands.jsonui import JsonLines

    return JsonLines(click.echo)


async def _ask(question: str) -> bool:
    return await _ask_in_thread(lambda: confirm(question))


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
        result = ask()

        def deliver() -> None:
            if not answer.done():
                answer.set_result(result)

        loop.call_soon_threadsafe(deliver)

    threading.Thread(target=run, name="sfs-prompt", daemon=True).start()
    return await answer
