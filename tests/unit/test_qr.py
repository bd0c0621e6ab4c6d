"""The QR code `sfs receive --qr` draws: compact, quiet zone, readable back."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfs.commands.qr import COLOURS, QUIET_ZONE_MODULES, RESET, qr_lines, qr_matrix
from tests.qr_decode import decode_drawing, parse_drawing


@pytest.mark.parametrize(
    "text",
    [
        "ABC-123-tiger-lamp",
        "http://127.0.0.1:41234/#ABC-123-tiger-lamp",
        "https://sfs.example.org/#XYZ-999-correct-horse",
    ],
)
def test_the_drawing_decodes_to_the_text(text: str, tmp_path: Path) -> None:
    assert decode_drawing(qr_lines(text), tmp_path) == text


def test_two_rows_of_modules_per_line_with_a_quiet_zone() -> None:
    matrix = qr_matrix("ABC-123-tiger-lamp")
    lines = qr_lines("ABC-123-tiger-lamp")
    assert len(lines) == (len(matrix) + 1) // 2
    drawn = parse_drawing(lines)
    assert drawn[: len(matrix)] == matrix
    if len(drawn) > len(matrix):  # an odd number of rows: one more of the quiet zone
        assert not any(drawn[-1])
    for row in matrix[:QUIET_ZONE_MODULES] + matrix[-QUIET_ZONE_MODULES:]:
        assert not any(row)
    for row in matrix:
        assert not any(row[:QUIET_ZONE_MODULES] + row[-QUIET_ZONE_MODULES:])


def test_both_colours_are_explicit_on_every_line() -> None:
    """No line relies on the terminal's own colours (light or dark theme)."""
    for line in qr_lines("ABC-123-tiger-lamp"):
        assert line.startswith(COLOURS)
        assert line.endswith(RESET)
        assert line.count("\x1b") == 2
        assert "\n" not in line
