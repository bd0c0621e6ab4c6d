"""Text on the terminal: :func:`say` is the only way a line reaches it (every part
made printable first), :func:`say_error` the one line an error gets."""

from __future__ import annotations

from typing import NamedTuple

import click

from sfs.commands import terminal
from sfs.text import printable


class Styled(NamedTuple):
    """Part of a line to show in a style (click.style's), where colour is allowed."""

    text: str
    fg: str | None = None
    bold: bool = False


def say(*parts: str | Styled, err: bool = True) -> None:
    """Print one line: the only way text reaches the terminal.

    Every part passes through :func:`sfs.text.printable`, whatever its source:
    many carry a peer's or a server's words (names, reasons, error messages), and
    one forgotten path would let them write escape sequences to the terminal. Styles
    are added after that, and shown only on a terminal without NO_COLOR or TERM=dumb.
    """
    line = "".join(
        click.style(printable(part.text), fg=part.fg, bold=part.bold)
        if isinstance(part, Styled) and (part.fg or part.bold)
        else printable(part if isinstance(part, str) else part.text)
        for part in parts
    )
    click.echo(line, err=err, color=False if terminal.colour_off() else None)


def say_error(message: str) -> None:
    say(Styled("Error:", fg="red", bold=True), f" {message}")
