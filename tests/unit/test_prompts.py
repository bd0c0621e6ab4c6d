"""sfs.commands.prompts: lines read from a real pipe, nothing read ahead."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from sfs.commands import prompts


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A pipe standing in for fd 0 (read_line's default); yields its write end."""
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    os.close(read_end)
    try:
        yield write_end
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        with contextlib.suppress(OSError):  # closed by the test
            os.close(write_end)


def test_one_line_at_a_time_and_none_at_the_end(stdin: int) -> None:
    os.write(stdin, b"KQZ-042-tiger-lamp\r\ny\nno newline")
    os.close(stdin)
    assert prompts.read_line() == "KQZ-042-tiger-lamp"
    # What a buffered reader would have taken with the first line is still there.
    assert prompts.read_line() == "y"
    assert prompts.read_line() == "no newline"
    assert prompts.read_line() is None


def test_a_long_line_is_cut_and_read_to_its_end(stdin: int) -> None:
    os.write(stdin, b"x" * (prompts.MAX_LINE_BYTES + 100) + b"\nnext\n")
    assert prompts.read_line() == "x" * prompts.MAX_LINE_BYTES
    assert prompts.read_line() == "next"


def test_undecodable_bytes_are_replaced(stdin: int) -> None:
    os.write(stdin, b"\xff\xfe\n")
    assert prompts.read_line() == "\ufffd\ufffd"


@pytest.mark.parametrize(
    ("typed", "answer"),
    [(b"y\n", True), (b" YES \n", True), (b"n\n", False), (b"\n", False), (b"no\n", False)],
)
def test_confirm_answers(stdin: int, typed: bytes, answer: bool) -> None:
    os.write(stdin, typed)
    assert prompts.confirm("Receive a.txt?") is answer


def test_confirm_asks_again_after_anything_else(
    stdin: int, capsys: pytest.CaptureFixture[str]
) -> None:
    os.write(stdin, b"maybe\ny\n")
    assert prompts.confirm("Receive \x1b[2Ja.txt?") is True
    err = capsys.readouterr().err
    assert err.count("[y/N]: ") == 2
    assert "Error: invalid input" in err
    assert "\x1b" not in err  # the question is made printable


def test_confirm_at_the_end_of_input_is_no(stdin: int) -> None:
    os.close(stdin)
    assert prompts.confirm("Receive a.txt?") is False
