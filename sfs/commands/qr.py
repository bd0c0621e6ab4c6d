"""A QR code as lines of terminal text (``sfs receive --qr``).

Two modules per character cell, as half blocks: ``█`` both dark, ``▀`` the upper
one, ``▄`` the lower one, a space neither.  Each line sets both colours explicitly
first (black on bright white, as ANSI SGR codes), so the code reads the same on a
light terminal and on a dark one: a phone camera never sees it inverted.  Without
colours (a terminal that ignores them) the blocks still draw the code, as segno's
compact output does.  The quiet zone (four light modules on every side, as the QR
standard asks) is part of the drawing.

Pure: no I/O; :func:`sfs.commands.ui.show_qr` prints the lines.
"""

from __future__ import annotations

import segno

#: Light modules around the symbol, as ISO/IEC 18004 asks.
QUIET_ZONE_MODULES = 4
#: (upper dark, lower dark) -> the character drawn in the dark colour.
BLOCKS = {
    (True, True): "\u2588",
    (True, False): "\u2580",
    (False, True): "\u2584",
    (False, False): " ",
}
#: Black (dark modules) on bright white (light modules), then back to the terminal's.
COLOURS = "\x1b[30;107m"
RESET = "\x1b[0m"


def qr_matrix(text: str) -> list[list[bool]]:
    """The modules of ``text``'s QR code (``True``: dark), quiet zone included."""
    code = segno.make(text, micro=False, error="m")
    return [
        [bool(module) for module in row]
        for row in code.matrix_iter(scale=1, border=QUIET_ZONE_MODULES)
    ]


def qr_lines(text: str) -> list[str]:
    """``text`` as a QR code: one string per two rows of modules, each in explicit
    colours that it resets at its end."""
    matrix = qr_matrix(text)
    if len(matrix) % 2:
        matrix.append([False] * len(matrix[0]))  # the quiet zone, one row deeper
    return [
        COLOURS + "".join(BLOCKS[pair] for pair in zip(top, bottom, strict=True)) + RESET
        for top, bottom in zip(matrix[::2], matrix[1::2], strict=True)
    ]
