"""A QR code as lines of terminal text (``sfs receive --qr``).

Two modules per character cell: the upper half block ``▀`` drawn in the top module's
colour on the bottom module's colour.  Both colours are explicit (black and bright
white, as ANSI SGR codes), so the code reads the same on a light terminal and on a
dark one: a phone camera never sees it inverted.  The quiet zone (four light modules
on every side, as the QR standard asks) is part of the drawing.

Pure: no I/O; :mod:`sfs.cli` prints the lines.
"""

from __future__ import annotations

import segno

#: Light modules around the symbol, as ISO/IEC 18004 asks.
QUIET_ZONE_MODULES = 4
#: Each cell is this character: its upper half in the foreground colour.
UPPER_HALF = "\u2580"
#: SGR parameters: foreground and background, per module colour.
_FOREGROUND = {True: "30", False: "97"}  # dark: black; light: bright white
_BACKGROUND = {True: "40", False: "107"}
RESET = "\x1b[0m"


def qr_matrix(text: str) -> list[list[bool]]:
    """The modules of ``text``'s QR code (``True``: dark), quiet zone included."""
    code = segno.make(text, micro=False, error="m")
    return [
        [bool(module) for module in row]
        for row in code.matrix_iter(scale=1, border=QUIET_ZONE_MODULES)
    ]


def qr_lines(text: str) -> list[str]:
    """``text`` as a QR code: one string per two rows of modules, each ending in a
    reset of the colours."""
    matrix = qr_matrix(text)
    if len(matrix) % 2:
        matrix.append([False] * len(matrix[0]))  # the quiet zone, one row deeper
    lines = []
    for top, bottom in zip(matrix[::2], matrix[1::2], strict=True):
        cells = []
        colours = None
        for upper, lower in zip(top, bottom, strict=True):
            if (upper, lower) != colours:
                colours = (upper, lower)
                cells.append(f"\x1b[{_FOREGROUND[upper]};{_BACKGROUND[lower]}m")
            cells.append(UPPER_HALF)
        lines.append("".join(cells) + RESET)
    return lines
