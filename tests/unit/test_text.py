"""printable(): peer and server text as one line of inert text."""

from __future__ import annotations

import logging
import sys
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from sfs.commands.running import PrintableFormatter
from sfs.text import UNSAFE_CATEGORIES, printable


def test_known_answers() -> None:
    assert printable("report.pdf") == "report.pdf"
    assert printable("\x1b[2Jhi") == "\\x1b[2Jhi"
    assert printable("a\r\nb\tc\x00") == "a\\x0d\\x0ab\\x09c\\x00"
    assert printable("\x9b31m") == "\\x9b31m"  # C1 CSI
    assert printable("\x1b]52;c;ZXZpbA==\x07") == "\\x1b]52;c;ZXZpbA==\\x07"
    assert printable("right\u202eexe.txt") == "right\\u202eexe.txt"
    assert printable("\u2066x\u2069\u200b\ufeff") == "\\u2066x\\u2069\\u200b\\ufeff"
    assert printable("line\u2028sep\u2029") == "line\\u2028sep\\u2029"
    assert printable("\U000e0041tag") == "\\U000e0041tag"  # invisible tag character
    assert printable("c:\\path") == "c:\\path"  # a backslash controls nothing
    assert printable("naïve 日本 😀") == "naïve 日本 😀"


def test_limit_counts_the_escapes() -> None:
    assert printable("abcdef", 4) == "abc…"
    assert printable("\x1b\x1b", 5) == "\\x1b…"
    assert printable("abc", 3) == "abc"


@given(st.text())
def test_output_is_one_line_of_safe_characters(text: str) -> None:
    out = printable(text)
    assert not any(unicodedata.category(c) in UNSAFE_CATEGORIES for c in out)
    assert out.splitlines() in ([], [out])
    assert printable(out) == out  # idempotent: escapes are plain text


@given(st.text(), st.integers(1, 100))
def test_limit(text: str, limit: int) -> None:
    assert len(printable(text, limit)) <= limit


def test_log_records_are_inert() -> None:
    formatter = PrintableFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord(
        "sfs", logging.INFO, __file__, 1, "peer said %s", ("\x1b[2J\n",), None
    )
    assert formatter.format(record) == "INFO peer said \\x1b[2J\\x0a"
    try:
        raise ValueError("bad\x1b]0;title\x07")
    except ValueError:
        record.exc_info = sys.exc_info()
    text = formatter.format(record)
    assert "\x1b" not in text
    assert "\\x1b]0;title\\x07" in text
    assert text.count("\n") >= 2  # the traceback keeps its own lines


def test_a_text_message_keeps_its_lines_and_tabs_and_nothing_else() -> None:
    from sfs.text import printable_text

    shown = printable_text("a\tb\r\nc\n\x1b[2J\rd\u202e")
    assert shown == "a\tb\nc\n\\x1b[2J\\x0dd\\u202e"
