"""`sfs peers`: who waits on this local network."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from sfs.commands import terminal
from sfs.commands.options import Number, _epilog, json_option
from sfs.commands.output import say
from sfs.commands.running import _run, _setup_logging
from sfs.commands.ui import _json_lines
from sfs.text import printable

if TYPE_CHECKING:
    from sfs.lan.record import Advert


PEERS_EXAMPLES = [
    ("sfs peers", "who waits on this network, live until Ctrl-C"),
    ("sfs peers --once 2", "look for 2 s, print, exit"),
]


@click.command(epilog=_epilog(PEERS_EXAMPLES))
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
