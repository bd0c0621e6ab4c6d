"""Reading back a QR code that sfs drew on a terminal, as a phone camera would.

The printed lines become a module matrix again (from the SGR colours of each
``▀`` cell), the matrix a black-and-white PNG, and ``zbarimg`` (Debian's zbar-tools)
decodes the PNG.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from sfs.qr import UPPER_HALF

_CELL = re.compile(r"\x1b\[(\d+);(\d+)m|(" + UPPER_HALF + ")|(\x1b\\[0m)")
PIXELS_PER_MODULE = 8


def parse_drawing(lines: list[str]) -> list[list[bool]]:
    """The modules (``True``: dark) drawn by :func:`sfs.qr.qr_lines`; fails on any
    character that is not part of such a drawing."""
    matrix: list[list[bool]] = []
    for line in lines:
        top: list[bool] = []
        bottom: list[bool] = []
        colours: tuple[bool, bool] | None = None
        pos = 0
        while pos < len(line):
            match = _CELL.match(line, pos)
            assert match is not None, f"unexpected {line[pos : pos + 10]!r} in {line!r}"
            if match.group(1):
                colours = (match.group(1) == "30", match.group(2) == "40")
            elif match.group(3):
                assert colours is not None, line
                top.append(colours[0])
                bottom.append(colours[1])
            pos = match.end()
        assert line.endswith("\x1b[0m"), line
        matrix += [top, bottom]
    assert matrix and all(len(row) == len(matrix[0]) for row in matrix)
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
