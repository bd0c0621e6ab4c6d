"""What the CLI shows of an offer."""

from __future__ import annotations

import errno
import io
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfs import errors
from sfs.cli import main
from sfs.commands.listing import _final_line, _seconds, describe_tree, offer_listing, tree_listing
from sfs.commands.progress import WIDE_BAR, _size_bar
from sfs.commands.terminal import display_width, wrap
from sfs.commands.ui import RECEIVE_HINT, SEND_HINT
from sfs.errors import connection_end
from sfs.peer.proto.wire import FileInfo, Offer
from sfs.peer.transfer import FileRecord, TransferResult


def offer(count: int) -> Offer:
    return Offer(tuple(FileInfo(f"f{i}.txt", 1000 * i) for i in range(count)), "alice")


def test_every_name_fits() -> None:
    assert offer_listing(offer(3), max_lines=10) == [
        "  f0.txt  0 B",
        "  f1.txt  1.0 kB",
        "  f2.txt  2.0 kB",
    ]


def test_more_than_a_screenful_ends_with_a_count() -> None:
    lines = offer_listing(offer(20), max_lines=10)
    assert len(lines) == 10
    assert lines[-1] == "  … and 11 more"
    assert lines[8] == "  f8.txt  8.0 kB"


def test_a_tiny_terminal_still_shows_a_few() -> None:
    assert len(offer_listing(offer(20), max_lines=-3)) == 5


def test_names_are_shown_safe() -> None:
    hostile = Offer((FileInfo("../\x1b[2Jevil\u202e.txt", 1), FileInfo("b", 2)), "")
    assert offer_listing(hostile, max_lines=10)[0] == "  [2Jevil.txt  1 B"


# -- issue 23: folder offers, wrapping, figures, units, words --------------------------------


def tree() -> Offer:
    photos = tuple(FileInfo(f"p{i:02d}.jpg", 1000, folder=("photos",)) for i in range(40))
    deep = FileInfo("deep.jpg", 500, folder=("photos", "2024"))
    return Offer(
        (*photos, deep, FileInfo("notes.txt", 200)), "alice", folders=(("photos",), ("empty",))
    )


def test_a_folder_offer_lists_its_top_level_with_counts() -> None:
    assert describe_tree(tree()) == "1 file and 2 folders (42 files, 40.7 kB)"
    assert tree_listing(tree(), max_lines=20) == [
        "  photos/  41 files, 40.5 kB",
        "  notes.txt  200 B",
        "  empty/  empty",
    ]


def test_a_wide_top_level_is_cut_to_a_screenful() -> None:
    wide = Offer(tuple(FileInfo(f"f{i}", 1, folder=(f"d{i}",)) for i in range(30)), "")
    lines = tree_listing(wide, max_lines=10, width=40)
    assert len(lines) == 10
    assert lines[-1] == "  … and 21 more"
    assert lines[0] == "  d0/  1 file, 1 B"


def test_a_folder_name_is_shown_safe_and_cut() -> None:
    hostile = Offer((FileInfo("x", 5, folder=("\x1b[2J" + "n" * 80,)),), "")
    [line] = tree_listing(hostile, max_lines=5, width=40)
    assert "\x1b" not in line
    assert len(line) <= 40
    assert line.endswith("…  1 file, 5 B")


@pytest.mark.parametrize("width", [40, 80, 120])
@pytest.mark.parametrize("hint", [SEND_HINT, RECEIVE_HINT])
def test_the_hints_wrap_between_words(hint: str, width: int) -> None:
    lines = wrap(hint, width)
    assert " ".join(lines) == hint
    assert all(len(line) <= width for line in lines)
    assert len(hint) <= 120 or len(lines) > 1


@given(st.text(st.characters(codec="utf-8"), max_size=200), st.integers(1, 150))
def test_wrap_breaks_only_at_spaces(text: str, width: int) -> None:
    lines = wrap(text, width)
    if len(lines) > 1:
        assert " ".join(lines) == " ".join(text.split())
        assert all(display_width(line) <= width or " " not in line for line in lines)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.0, "0.001 s"), (0.0042, "0.0042 s"), (0.35, "0.35 s"), (2.44, "2.4 s"), (61.0, "61.0 s")],
)
def test_seconds_are_never_zero(seconds: float, shown: str) -> None:
    assert _seconds(seconds) == shown


def _result(total: int, resumed: int, elapsed: float) -> TransferResult:
    record = FileRecord("a.bin", None, total, "0" * 64, elapsed, resumed)
    return TransferResult([record], total_bytes=total, resumed_bytes=resumed, elapsed=elapsed)


def test_the_final_line_has_a_rate_only_when_bytes_moved() -> None:
    assert _final_line("Sent", _result(37, 0, 0.0)) == "Sent a.bin (37 B) in 0.001 s, 37.0 kB/s"
    nothing_moved = _final_line("Sent", _result(37, 37, 0.002))
    assert nothing_moved == "Sent a.bin (37 B) in 0.002 s, 37 B not sent again"


def test_the_final_line_counts_reconnections_last() -> None:
    result = _result(2000, 0, 2.0)
    result.route, result.reconnects = "direct over TCP", 2
    line = _final_line("Received", result)
    assert line == "Received a.bin (2.0 kB) in 2.0 s, 1.0 kB/s, direct over TCP, 2 reconnects"


def test_the_bar_writes_sizes_as_every_other_line() -> None:
    stream = io.StringIO()
    bar = _size_bar()(total=1_073_741_824, unit="B", file=stream, bar_format=WIDE_BAR, desc="f")
    bar.update(536_870_912)
    bar.refresh()
    bar.close()
    shown = stream.getvalue()
    assert "536.9 MB/1.1 GB [" in shown, shown
    assert "1.07G" not in shown


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (ConnectionResetError(errno.ECONNRESET, "Connection reset"), "the other side reset it"),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), "the other side closed it"),
        (OSError(errno.EIO, "Input/output error"), "input/output error"),
        (OSError("no errno"), "no errno"),
        (RuntimeError(), "RuntimeError"),
    ],
)  # fmt: skip
def test_a_connection_end_is_told_in_words(error: BaseException, words: str) -> None:
    assert connection_end(error) == words
    assert "Errno" not in connection_end(error)


def _exit_codes() -> set[int]:
    return {
        cls.exit_code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.SfsError)
    }


def test_help_lists_every_exit_code_that_readme_does() -> None:
    """`sfs --help` carries the exit codes (pip installs no README): the same codes as
    README.md's table and every code an error can end with."""
    from click.testing import CliRunner

    shown = CliRunner().invoke(main, ["--help"], env={"COLUMNS": "80"}).output
    block = shown.split("Exit codes:\n", 1)[1].split("\n\n", 1)[0]
    in_help = {int(n) for n in re.findall(r"(?:^|\s)(\d+) +(?=[a-z-])", block)}
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Exit codes", 1)[1].split("\n\n", 2)[1]
    in_readme = {int(n) for n in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert in_help == in_readme
    assert _exit_codes() | {0, 2, 130} <= in_help
    assert all(len(line) <= 80 for line in shown.splitlines())
    assert "-o ~/Downloads" in shown.replace("\n  ", " ")


@pytest.mark.parametrize("args", [(), *((name,) for name in sorted(main.commands))])
def test_no_help_sends_the_reader_to_a_file_pip_does_not_install(args: tuple[str, ...]) -> None:
    from click.testing import CliRunner

    shown = CliRunner().invoke(main, [*args, "--help"], env={"COLUMNS": "120"}).output
    assert "beside the code" not in shown
    assert "sfs --help" in shown or not args  # each command points to where the codes are


def _error_classes() -> list[type[errors.SfsError]]:
    return [
        c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.SfsError)
    ]


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_an_errors_default_message_is_its_whole_first_sentence(
    cls: type[errors.SfsError],
) -> None:
    """The CLI prints ``str(exc)``, which for a bare error is its docstring's first
    line (what follows is for readers of the code): a sentence wrapped over two lines
    would be cut in the middle."""
    assert str(cls()).endswith((".", "?", "!")), f"{cls.__name__}: {str(cls())!r}"


def test_the_pages_errors_say_what_pythons_say() -> None:
    """sfs/web/src/errors.js mirrors sfs/errors.py: each class of the same name has the
    same default message, so a failure reads the same in a browser."""
    source = (Path(__file__).parents[2] / "sfs/web/src/errors.js").read_text()
    pages = dict(re.findall(r'define\(\s*"(\w+)",\s*\w+,\s*"([^"]*)",?\s*\)', source))
    assert len(pages) > 20, pages
    # Advice about options the page has not: --ice-server (it names the server's
    # setting instead), --overwrite.
    own_words = {"IceFailedError", "DestinationExistsError"}
    for name, message in pages.items():
        cls = getattr(errors, name, None)
        if cls is not None and name not in own_words:
            assert str(cls()) == message, name
