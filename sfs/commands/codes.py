"""CODE from the command line, a prompt or stdin: a mistyped code is named as one,
with the code it was likely meant to be."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from sfs.commands import terminal
from sfs.commands.output import say, say_error
from sfs.commands.prompts import ask_line, read_line
from sfs.commands.running import EXIT_INTERRUPTED

if TYPE_CHECKING:
    from sfs.code import Code


#: Tries at the `Code:` prompt before giving up.
CODE_PROMPT_TRIES = 3


def _looks_like_code(arg: str) -> bool:
    """A code, or an attempt at one, that is not the name of a file here."""
    from sfs.code import looks_like_code

    return looks_like_code(arg) and not os.path.lexists(arg)


def _code_argument(arg: str) -> Code:
    """CODE given as an argument; an error names a mistyped code as one, with the
    code it was likely meant to be."""
    from sfs.code import CODE_SHAPE, parse_code, shown_part

    try:
        return parse_code(arg)
    except ValueError as exc:
        problem = str(exc)
        if CODE_SHAPE.match(arg) is None:  # ALX232-…: it could have been a file name
            problem = (
                f"{shown_part(arg)} looks like a mistyped code (no file has that name): {problem}"
            )
        raise click.BadParameter(problem + _did_you_mean(arg), param_hint="CODE") from None


def _did_you_mean(typed: str) -> str:
    """`` (did you mean ALX-232-beam-haddock?)`` when one code is close to ``typed``.

    Its secret words only on a terminal, where the person typed them: stderr may be
    a log, which must never hold them (there, only a corrected ID is suggested)."""
    from sfs.code import shown_part, suggest_code

    suggestion = suggest_code(typed)
    if suggestion is None:
        return ""
    if terminal.is_tty(sys.stderr):
        return f" (did you mean {suggestion}?)"
    if shown_part(typed) != f"{suggestion.peer_id}-…":
        return f" (did you mean {suggestion.peer_id}-…?)"
    return ""


def _prompt_code() -> Code:
    """Ask on the terminal: a typo asks again; Ctrl-C or Ctrl-D ends like Ctrl-C."""
    from sfs.code import parse_code

    tries = 0
    while tries < CODE_PROMPT_TRIES:
        try:
            text = ask_line("Code: ")
        except KeyboardInterrupt:
            text = None
        if text is None:  # Ctrl-D, or Ctrl-C
            say("")
            say("Interrupted.")
            sys.exit(EXIT_INTERRUPTED)
        if not text.strip():  # as click.prompt: an empty line asks again
            continue
        tries += 1
        try:
            return parse_code(text)
        except ValueError as exc:
            say_error(str(exc) + _did_you_mean(text))
    raise click.UsageError(f"no valid code after {CODE_PROMPT_TRIES} tries")


def _read_code() -> Code:
    text = read_line() or ""
    if not text.strip():
        raise click.UsageError("no code given: pass it first, or type or pipe it on stdin")
    from sfs.code import parse_code

    try:
        return parse_code(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc) + _did_you_mean(text), param_hint="CODE") from None
