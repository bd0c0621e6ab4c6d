"""sfs.commands.terminal's decisions, and what the CLI prints with them: colour, widths, bars."""

from __future__ import annotations

import io
import sys

import pytest

from sfs.commands import output, terminal
from sfs.commands.listing import offer_listing
from sfs.commands.output import Styled, say
from sfs.commands.peers import peer_table
from sfs.commands.progress import LineProgress, TqdmProgress
from sfs.commands.ui import ConsoleUi
from sfs.lan.record import Advert
from sfs.peer.proto.wire import FileInfo, Offer


class FakeTty(io.StringIO):
    def __init__(self, columns: int = 0) -> None:
        super().__init__()
        self.columns = columns

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("env", "off"),
    [
        ({}, False),
        ({"NO_COLOR": "1"}, True),
        ({"NO_COLOR": "0"}, True),  # any non-empty value
        ({"NO_COLOR": ""}, False),  # present but empty: no-color.org says ignore it
        ({"TERM": "dumb"}, True),
        ({"TERM": "xterm-256color"}, False),
    ],
)
def test_colour_off(env: dict[str, str], off: bool) -> None:
    assert terminal.colour_off(env) is off


def test_bars_only_on_a_terminal_that_is_not_dumb() -> None:
    assert terminal.bars_allowed(FakeTty(), {"TERM": "xterm"})
    assert terminal.bars_allowed(FakeTty(), {"NO_COLOR": "1"})  # colourless bars are fine
    assert not terminal.bars_allowed(FakeTty(), {"TERM": "dumb"})
    assert not terminal.bars_allowed(io.StringIO(), {})
    assert not terminal.bars_allowed(None, {})


def test_columns_for_a_pipe_only_when_columns_is_set() -> None:
    assert terminal.columns(io.StringIO(), {}) is None
    assert terminal.columns(io.StringIO(), {"COLUMNS": "40"}) == 40
    assert terminal.columns(io.StringIO(), {"COLUMNS": "junk"}) is None
    assert terminal.columns(None, {"COLUMNS": "3"}) == terminal.MIN_COLUMNS


def test_columns_of_a_real_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((37, 10)))
    tty = FakeTty()
    monkeypatch.setattr(tty, "fileno", lambda: 2)
    assert terminal.columns(tty, {}) == 37
    assert terminal.columns(tty, {"COLUMNS": "50"}) == 50  # as shutil: COLUMNS first


def test_cut() -> None:
    assert terminal.cut("abcdef", None) == "abcdef"
    assert terminal.cut("abcdef", 6) == "abcdef"
    assert terminal.cut("abcdef", 4) == "abc…"


def _say(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], stream: io.StringIO) -> str:
    for name in ("NO_COLOR", "TERM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "stderr", stream)
    output.say_error("no such code \x1b[2J")
    return stream.getvalue()


def test_error_is_red_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = _say(monkeypatch, {}, FakeTty())
    assert shown.startswith("\x1b[31m\x1b[1mError:\x1b[0m no such code")
    assert shown.endswith("code \\x1b[2J\n")  # the message itself stays inert


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_no_colour_when_told(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    assert _say(monkeypatch, env, FakeTty()) == "Error: no such code \\x1b[2J\n"


def test_no_colour_in_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _say(monkeypatch, {}, io.StringIO()) == "Error: no such code \\x1b[2J\n"


def test_styled_text_is_made_printable_before_it_is_styled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    tty = FakeTty()
    monkeypatch.setattr(sys, "stdout", tty)
    say("Code: ", Styled("ABC\x1b]52;c;x\x07", bold=True), err=False)
    assert tty.getvalue() == "Code: \x1b[1mABC\\x1b]52;c;x\\x07\x1b[0m\n"


# -- widths ----------------------------------------------------------------------------------


def test_offer_listing_fits_a_narrow_terminal() -> None:
    long = "x" * 100 + ".bin"
    offer = Offer(tuple(FileInfo(f"{i}{long}", 12_345_678) for i in range(3)), "alice")
    lines = offer_listing(offer, max_lines=10, width=40)
    assert all(len(line) == 40 for line in lines), lines
    assert lines[0] == "  0" + "x" * 27 + "…  12.3 MB"
    # No width (a pipe without COLUMNS): as before, names up to 70 characters.
    assert len(offer_listing(offer, max_lines=10)[0]) == 2 + 70 + 2 + len("12.3 MB")


def test_wide_characters_count_twice() -> None:
    assert terminal.display_width("写真フォルダ") == 12
    assert terminal.display_width("e\u0301") == 1  # a combining accent takes no column
    assert terminal.cut("写真フォルダ.jpg", 8) == "写真フ…"
    assert terminal.display_width(terminal.cut("写真フォルダ.jpg", 8)) <= 8


def test_a_listing_of_wide_names_fits_too() -> None:
    offer = Offer(tuple(FileInfo(f"{i}写真" * 20 + ".jpg", 1000) for i in range(2)), "")
    for line in offer_listing(offer, max_lines=10, width=40):
        assert terminal.display_width(line) <= 40, line
        assert line.endswith("1.0 kB"), line


def test_a_peer_table_with_wide_names_stays_aligned() -> None:
    adverts = [
        Advert("receiver", "山田太郎のパソコン", 41234, ("10.0.0.2",), 0),
        Advert("sender", "bob", 41235, ("10.0.0.3",), 0),
    ]
    lines = peer_table(adverts, now=0, width=40)
    assert all(terminal.display_width(line) <= 40 for line in lines), lines
    # The second column starts at the same column on every line.
    starts = {terminal.display_width(line[: line.index(word)]) for line, word in
              zip(lines, ["WAITS", "receive", "send"], strict=True)}  # fmt: skip
    assert len(starts) == 1, lines


ADVERTS = [
    Advert("receiver", "alice with a very long name", 41234, ("fd00::1:2:3:4",), 0),
    Advert("sender", "bob", 41235, ("10.0.0.3",), 0),
]


def test_peer_table_is_as_before_when_it_fits() -> None:
    assert peer_table(ADVERTS, now=0) == [
        "NAME                      WAITS TO  ADDRESS        WAITING",
        "alice with a very long …  receive   fd00::1:2:3:4  0 s",
        "bob                       send      10.0.0.3       0 s",
    ]


@pytest.mark.parametrize("width", [70, 60, 50, 40, 30, 20])
def test_peer_table_fits_any_width(width: int) -> None:
    lines = peer_table(ADVERTS, now=0, width=width)
    assert all(len(line) <= width for line in lines), lines
    assert len(lines) == 3


def test_a_narrow_peer_table_cuts_names_then_drops_columns() -> None:
    assert peer_table(ADVERTS, now=0, width=40)[1:] == [
        "alice…  receive   fd00::1:2:3:4  0 s",
        "bob     send      10.0.0.3       0 s",
    ]
    assert peer_table(ADVERTS, now=0, width=30) == [  # no WAITING column
        "NAME    WAITS TO  ADDRESS",
        "alice…  receive   fd00::1:2:3…",
        "bob     send      10.0.0.3",
    ]
    assert peer_table(ADVERTS, now=0, width=20)[0] == "NAME    ADDRESS"


# -- bars --------------------------------------------------------------------------------------


def test_progress_is_a_line_without_a_terminal_or_on_a_dumb_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(ConsoleUi(quiet=False).progress(), LineProgress)
    monkeypatch.setattr(sys, "stderr", FakeTty())
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(ConsoleUi(quiet=False).progress(), LineProgress)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("NO_COLOR", "1")
    assert isinstance(ConsoleUi(quiet=False).progress(), TqdmProgress)


def test_clear_takes_the_bar_off_and_ends_a_prompt_line(monkeypatch: pytest.MonkeyPatch) -> None:
    tty = FakeTty()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.setenv("COLUMNS", "40")
    ui = ConsoleUi(quiet=False)
    progress = ui.progress()
    assert isinstance(progress, TqdmProgress)
    progress.begin(1, 100)
    progress.start("a.bin", 100)
    progress.advance(10)
    assert progress.active
    ui._asking = True  # a prompt was waiting when Ctrl-C came
    ui.clear()
    assert not progress.active
    assert tty.getvalue().endswith("\r\n")  # the bar's line blanked, then a new line


def test_kept_partials_are_said_with_the_error_not_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    ui = ConsoleUi(quiet=False)
    ui.kept_partial("big.bin", 1_000_000)
    assert err.getvalue() == ""
    assert ui.kept == ["big.bin"]
    ui.report_kept()
    assert err.getvalue().startswith("Kept 1.0 MB of big.bin to resume")


def test_peers_redraw_only_on_a_terminal_that_is_not_dumb(monkeypatch: pytest.MonkeyPatch) -> None:
    from sfs.commands.peers import LivePeers

    tty = FakeTty()
    monkeypatch.setattr(sys, "stdout", tty)
    monkeypatch.setenv("TERM", "dumb")
    live = LivePeers(terminal.bars_allowed(sys.stdout))
    live.show(ADVERTS)
    live.show(ADVERTS[:1])
    assert "\x1b[" not in tty.getvalue()
