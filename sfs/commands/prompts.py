"""Questions on the terminal, answered on stdin, read with ``os.read``, never ``sys.stdin``.

Why not ``sys.stdin`` (what ``input()`` and click's prompts read): its buffered reader
holds a lock while it waits for a line. A receiver's "Receive …?" prompt waits in a
daemon thread (the event loop keeps ICE running meanwhile); when the process ended with
that thread still waiting (the sender gone, Ctrl-C), the interpreter's shutdown could
need the same lock and aborted ("Fatal Python error: _enter_buffered_busy: could not
acquire lock for <stdin>", exit -6): it happened in CI as soon as aiortc was imported
later in the process than before. ``os.read`` takes no lock. And a buffered read takes
more than its line from a pipe (``printf 'CODE\\ny\\n' | sfs receive -``), which the
next question, read another way, would then never see: every line here is read one
byte at a time, so nothing is read ahead.
"""

from __future__ import annotations

import os
import select

import click

from sfs.text import printable

#: A longer line is read to its end and cut: an answer is a word, a code a few.
MAX_LINE_BYTES = 4096


def read_line(fd: int = 0) -> str | None:
    """The next line on ``fd`` without its newline; None at the end of input."""
    data = bytearray()
    while True:
        try:
            byte = os.read(fd, 1)
        except BlockingIOError:  # a non-blocking stdin (shared with another program)
            select.select([fd], [], [])
            continue
        if not byte:
            return data.decode(errors="replace") if data else None
        if byte == b"\n":
            return data.decode(errors="replace").removesuffix("\r")
        if len(data) < MAX_LINE_BYTES:
            data += byte


def ask_line(question: str) -> str | None:
    """Show ``question`` on stderr and read the answer's line; None at the end of input."""
    click.echo(question, nl=False, err=True)
    return read_line()


def confirm(question: str) -> bool:
    """``question [y/N]: `` as click.confirm asks it: y or yes is yes; n, no, an empty
    line or the end of input is no; anything else asks again."""
    while True:
        line = ask_line(f"{printable(question)} [y/N]: ")
        if line is None:
            click.echo("", err=True)
            return False
        answer = line.strip().lower()
        if answer in ("y", "yes"):
            return True
        if answer in ("", "n", "no"):
            return False
        click.echo("Error: invalid input", err=True)
