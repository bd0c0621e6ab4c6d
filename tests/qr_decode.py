"""Reading back a QR code that sfs drew on a terminal, as a phone camera would.

The printed lines become a module matrix again (from the half block of each cell,
inside the colours sfs sets), the matrix a black-and-white PNG, and ``zbarimg``
(Debian's zbar-tools) decodes the PNG.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from sfs.commands.qr import BLOCKS, COLOURS, RESET

PIXELS_PER_MODULE = 8
_PAIRS = {char: pair for pair, char in BLOCKS.items()}


def parse_drawing(lines: list[str]) -> list[list[bool]]:
    """The modules (``True``: dark) drawn by :func:`sfs.commands.qr.qr_lines`; fails on any
    line that is not such a drawing (its colours, half blocks, the reset)."""
    matrix: list[list[bool]] = []
    for line in lines:
        assert line.startswith(COLOURS), repr(line)
        assert line.endswith(RESET), repr(line)
        cells = line[len(COLOURS) : -len(RESET)]
        assert cells, repr(line)
        assert all(c in _PAIRS for c in cells), repr(line)
        matrix += [[_PAIRS[c][0] for c in cells], [_PAIRS[c][1] for c in cells]]
    assert matrix
    assert all(len(row) == len(matrix[0]) for row in matrix)
    return matrix


def write_png(matrix: list[list[bool]], path: Path) -> None:
    """A grey-scale PNG of ``matrix``: dark modules black, PIXELS_PER_MODULE wide."""
    rows = []
    for row in matrix:
        pixels = b"".join((b"\x00" if dark else b"\xff") * PIXELS_PER_MODULE for dark in row)
        rows += [b"\x00" + pixels] * PIXELS_PER_MODULE  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    width, height = len(matrix[0]) * PIXELS_PER_MODULE, len(matrix) * PIXELS_PER_MODULE
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def decode_drawing(lines: list[str], folder: Path) -> str:
    """What a QR reader finds in the drawing: exactly one code, its text."""
    if shutil.which("zbarimg") is None:
        pytest.skip("zbarimg is not installed (Debian: zbar-tools; scripts/test installs it)")
    png = folder / "qr.png"
    write_png(parse_drawing(lines), png)
    done = subprocess.run(
        ["zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(png)],
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    found = done.stdout.decode("utf-8").splitlines()
    assert len(found) == 1, found
    return found[0]
