"""`sfs send`: the code (first argument, prompt or stdin) and the files to send."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sfs.commands import pair as pair_command
from sfs.commands.codes import (
    _code_argument,
    _did_you_mean,
    _looks_like_code,
    _prompt_code,
    _read_code,
)
from sfs.commands.listing import _final_line
from sfs.commands.options import (
    LIMIT_RATE_OPTION,
    QR_OPTION,
    RESUME_OPTION,
    TRANSFER_JSON_HELP,
    VERIFY_OPTION,
    WholeNumber,
    _default_sender,
    _epilog,
    _peer_options,
    _require_terminal_for_verify,
    json_option,
    peer_options,
)
from sfs.commands.output import say, say_error
from sfs.commands.running import EXIT_INTERRUPTED, _run, _setup_logging
from sfs.commands.ui import RECEIVE_HINT, ConsoleUi, _ask, _json_lines
from sfs.defaults import (
    DEFAULT_CHUNK_BYTES,
    MAX_CHUNK_BYTES,
    MAX_MANY,
    MAX_SENDER_NAME_CHARS,
    MAX_STREAMS,
    MAX_TEXT_BYTES,
)
from sfs.text import printable

if TYPE_CHECKING:
    from sfs.code import Code
    from sfs.commands.jsonui import JsonLines
    from sfs.many import ManyResult
    from sfs.pairs import Pair
    from sfs.peer.files.exclusion import LeaveOut
    from sfs.socks import Socks


SEND_EXAMPLES = [
    ("sfs send KQZ-042-tiger-lamp report.pdf", "send to the receiver showing that code"),
    ("sfs send report.pdf photos/", "type the code at the prompt; folders go whole"),
    ("sfs send --print-code notes.txt", "print a code here instead"),
    ("sfs send --many 5 --qr slides.pdf", "one code (and QR code) for up to 5 receivers"),
    ("sfs send CODE --text 'hello'", "a text message"),
    ("tar c dir | sfs send CODE -", "a pipe"),
    ("sfs send @laptop report.pdf", "to a paired device (`sfs pair`), no code"),
    ("sfs send --exclude '*.log' --gitignore CODE project/", "a folder, minus what is ignored"),
    ("sfs send --limit-rate 2M CODE backup.tar", "at most 2 MiB/s"),
    ("sfs send --proxy socks5h://127.0.0.1:9050 CODE f", "through Tor: TCP only, no UDP"),
]


def _streams(value: str) -> int | None:
    """``--streams``: ``auto`` (None) or 1 to MAX_STREAMS."""
    if value == "auto":
        return None
    if not value.isdigit() or not 1 <= int(value) <= MAX_STREAMS:
        raise click.BadParameter(
            f"{value!r}: give auto or a number from 1 to {MAX_STREAMS}", param_hint="--streams"
        )
    return int(value)


def _complete_files(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    """Files and folders for `sfs send`'s arguments: the shell's own file completion
    (click tells bash `compopt -o default`, zsh `_path_files`, fish its path
    completion).  A code typed first is left alone: there is nothing to offer; `@`
    first is a paired device's name."""
    import click.shell_completion

    if incomplete.startswith("@") and not ctx.params.get("args"):
        # The first argument: a paired device (`sfs send @NAME FILE...`).
        names = pair_command.complete_names(ctx, param, incomplete[1:])
        return [click.shell_completion.CompletionItem(f"@{n.value}") for n in names]
    return [click.shell_completion.CompletionItem(incomplete, type="file")]


@click.command(epilog=_epilog(SEND_EXAMPLES))
@click.argument("args", nargs=-1, metavar="[CODE|@NAME] FILE...", shell_complete=_complete_files)
@click.option(
    "--chunk-size",
    type=WholeNumber(1, MAX_CHUNK_BYTES),
    default=None,
    help=f"Plaintext bytes per message (lowered to the peer's limit) [default: "
    f"{DEFAULT_CHUNK_BYTES} over WebRTC, {MAX_CHUNK_BYTES} over TCP, each measured fastest].",
)
@click.option(
    "--name",
    "sender_name",
    default=None,
    help="Name shown to the receiver, and by `sfs peers` with --print-code "
    "(default: your login name).",
)
@click.option(
    "--streams",
    default="auto",
    show_default=True,
    metavar="auto|N",
    callback=lambda ctx, param, value: _streams(value),
    help=f"Stripe a WebRTC transfer over N peer connections (1-{MAX_STREAMS}): faster "
    "on long (high-latency) links, slower on a LAN; auto picks from the round trip "
    "measured while connecting (1 on a LAN). The direct TCP path is never striped.",
)
@click.option(
    "--print-code",
    is_flag=True,
    help="Print a code here and wait for the receiver to run `sfs receive CODE` "
    "(the sender-first flow, as in magic-wormhole and croc).",
)
@click.option(
    "--many",
    type=WholeNumber(1, MAX_MANY),
    default=None,
    metavar="N",
    help=f"Print one code that up to N receivers use (1-{MAX_MANY}), at once or in turn; "
    "each gets its own keys, progress and resume. Each try of the code is a guess at "
    "it, so the code gives at most N.",
)
@click.option(
    "--text",
    default=None,
    metavar="TEXT",
    help="Send this text message instead of files (`-`: read it from stdin); the "
    f"receiver prints it. At most {MAX_TEXT_BYTES // 1024 // 1024} MiB.",
)
@click.option(
    "--as",
    "stream_name",
    default="stdin",
    show_default=True,
    metavar="NAME",
    help="The name the receiver saves a pipe (FILE `-`, stdin) under.",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="PATTERN",
    help="Leave out what matches PATTERN inside the folders sent (gitignore-style: "
    "`*.log`, `build/`, `**/node_modules`); repeatable.",
)
@click.option(
    "--gitignore",
    is_flag=True,
    help="Leave out what the .gitignore files inside the folders sent ignore, and .git.",
)
@click.option(
    "--no-compress",
    is_flag=True,
    help="Never compress (by default, chunks that shrink with zstd are sent compressed).",
)
@LIMIT_RATE_OPTION
@QR_OPTION
@json_option(TRANSFER_JSON_HELP)
@VERIFY_OPTION
@RESUME_OPTION
@peer_options
def send(
    args: tuple[str, ...],
    chunk_size: int | None,
    print_code: bool,
    many: int | None,
    text: str | None,
    stream_name: str,
    exclude: tuple[str, ...],
    gitignore: bool,
    limit_rate: float | None,
    no_compress: bool,
    sender_name: str | None,
    streams: int | None,
    qr: bool,
    as_json: bool,
    verify: bool,
    no_resume: bool,
    server: str | None,
    lan: bool,
    cacert: Path | None,
    proxy: Socks | None,
    ice_server: tuple[str, ...],
    ice_address: tuple[str, ...],
    connect_timeout: float,
    reconnect_window: float,
    transport: str,
    relay: str,
    quiet: bool,
    verbose: int,
) -> None:
    """Send FILE... to the receiver that shows CODE.

    Leave CODE out to type it at a prompt (or pipe it on stdin), so it does not
    appear in the process list. With --print-code, this side prints the code instead.
    With @NAME, send to that paired device (`sfs pair`) while it runs `sfs receive`:
    no code.
    """
    from sfs import app

    _setup_logging(verbose, quiet=quiet)
    if many is not None:
        _check_many(args, verify)
        print_code = True  # one code, printed here, for every receiver
    _require_terminal_for_verify(verify)
    if qr and not print_code:
        raise click.UsageError("--qr draws the code this side prints: use it with --print-code")
    if as_json and qr:
        raise click.UsageError("--json gives the code (and link) in its code event: drop --qr")
    code: Code | None
    # stdin carries the data (a pipe, or --text -): the code cannot come from there.
    stdin_taken = "-" in args or text == "-"
    to_pair = None
    if args and args[0].startswith("@"):
        if print_code:
            raise click.UsageError(
                f"{printable(args[0], 40)} is a paired device: it needs no code (drop --print-code)"
            )
        to_pair = _paired_device(args[0][1:])
        code, files = None, _only_files(args[1:])
    elif print_code:
        code, files = None, _only_files(args)
    else:
        code, files = _split_code(
            args, stdin_taken=stdin_taken, want_files=text is None, text_from_stdin=text == "-"
        )
    if text is not None and files:
        raise click.UsageError("--text sends a text message: give no files with it")
    if text is None and not files:
        raise click.UsageError("no file to send: `sfs send CODE FILE...` (or --text)")
    if "-" in files and len(files) > 1:
        raise click.UsageError("`-` (stdin) is sent alone: give no other files with it")
    if text == "-":
        text = _read_text()
    name = (_default_sender() if sender_name is None else sender_name)[:MAX_SENDER_NAME_CHARS]
    config = app.SendConfig(
        code=code,
        paths=tuple(Path(f) for f in files if f != "-"),
        text=text,
        stream=sys.stdin.buffer if "-" in files else None,
        stream_name=stream_name,
        compress=not no_compress,
        peer=_peer_options(
            server,
            ice_server,
            ice_address,
            connect_timeout,
            reconnect_window=reconnect_window,
            lan=lan,
            name=name,
            cacert=cacert,
            transport=transport,
            relay=relay,
            proxy=proxy,
        ),
        chunk_size=chunk_size,
        sender_name=name,
        verify=verify,
        streams=streams,
        resume=not no_resume,
        link=print_code and (qr or as_json),
        to_pair=to_pair,
        pair_store=None if to_pair is None else pair_command.store(),
        leave_out=_leave_out(exclude, gitignore),
        limit_rate=limit_rate,
        many=many or 0,
    )
    if as_json:
        from sfs.commands.jsonui import JsonUi

        json_ui = JsonUi(_json_lines(), ask=_ask, limit_rate=limit_rate)
        if many is not None:
            done = _run(app.send_many(config, json_ui), verbose, json_lines=json_ui.lines)
            _end_many(done, json_lines=json_ui.lines)
            return
        json_ui.done("send", _run(app.send(config, json_ui), verbose, json_lines=json_ui.lines))
        return
    hint = RECEIVE_HINT if many is None else many_hint(many)
    ui = ConsoleUi(quiet=quiet, code_hint=hint, qr=qr, limit_rate=limit_rate)
    if many is not None:
        _end_many(_run(app.send_many(config, ui), verbose, ui=ui), ui=ui)
        return
    result = _run(app.send(config, ui), verbose, ui=ui)
    say(_final_line("Sent", result), err=False)


def many_hint(many: int) -> str:
    return (
        f"On each other computer (up to {many}), run `sfs receive CODE` (or `sfs receive -` "
        "and type the code). Waiting…"
    )


def _check_many(args: tuple[str, ...], verify: bool) -> None:
    """What --many cannot go with, said before anything is read or sent."""
    if args and (args[0].startswith("@") or _looks_like_code(args[0])):
        raise click.UsageError(
            "--many prints one code here for every receiver: give only the files"
        )
    if "-" in args:
        raise click.UsageError("--many sends to several receivers: a pipe (`-`) is read once")
    if verify:
        raise click.UsageError("--verify compares one string with one receiver: not with --many")


def _end_many(
    done: ManyResult, *, ui: ConsoleUi | None = None, json_lines: JsonLines | None = None
) -> None:
    """After `sfs send --many`: the last line (each receiver had its own), and the exit
    status: 0 when every receiver that came received it, else the first failure's."""
    received, failures = len(done.received), done.failures
    if json_lines is not None:
        json_lines.emit(
            {
                "type": "summary",
                "many": done.many,
                "received": received,
                "failed": len(failures),
                "stopped": done.stopped,
            }
        )
    if not done.served and done.stopped == "interrupted":
        if json_lines is not None:
            json_lines.error(EXIT_INTERRUPTED, "interrupted")
        say("Interrupted.")
        sys.exit(EXIT_INTERRUPTED)
    if failures:
        first = failures[0]
        assert first.error is not None
        message = (
            f"{len(failures)} of {len(done.served)} receivers did not receive it "
            f"(receiver {first.number}: {first.error})"
        )
        if json_lines is not None:
            json_lines.error(first.error.exit_code, message)
        say_error(message)
        sys.exit(first.error.exit_code)
    if ui is not None:
        line = f"Sent to {received} receiver{'' if received == 1 else 's'}"
        if done.stopped == "interrupted":
            line += f" (stopped waiting; --many {done.many})"
        elif done.stopped == "server_lost":
            line += f" (the server went away; --many {done.many})"
        say(line, err=False)


def _leave_out(exclude: tuple[str, ...], gitignore: bool) -> LeaveOut | None:
    if not exclude and not gitignore:
        return None
    from sfs.errors import SourceError
    from sfs.peer.files.exclusion import LeaveOut

    try:
        return LeaveOut(exclude, gitignore)
    except SourceError as exc:
        message = str(exc).removeprefix("--exclude: ")
        raise click.BadParameter(message, param_hint="--exclude") from None


def _paired_device(name: str) -> Pair:
    """The paired device `sfs send @NAME` names, or a usage error that says which
    there are."""
    listed = pair_command.loaded(pair_command.store())
    found = next((p for p in listed if p.name == name), None)
    if found is None:
        known = ", ".join(f"@{p.name}" for p in listed) or "none yet: `sfs pair` pairs one"
        raise click.UsageError(f"no paired device named {printable(name, 40)!r} (paired: {known})")
    return found


def _split_code(
    args: tuple[str, ...],
    *,
    stdin_taken: bool = False,
    want_files: bool = True,
    text_from_stdin: bool = False,
) -> tuple[Code, tuple[str, ...]]:
    """Take the code from the first argument, or from a prompt or stdin if it is not
    there; say exactly what is wrong when an argument looks like a code but is not one,
    or stands in the wrong place (a mistyped code must not become a file name). The
    files are checked before a prompt asks for a code.

    :param stdin_taken: stdin carries data, so the code must be an argument or typed.
    :param want_files: files must follow the code (not with --text).
    :param text_from_stdin: stdin carries a text message (--text -), not a pipe.
    """
    from sfs.code import shown_part

    code_like = [i for i, arg in enumerate(args) if _looks_like_code(arg)]
    if code_like and code_like[0] > 0:
        arg = args[code_like[0]]
        raise click.UsageError(
            f"{shown_part(arg)} looks like a code{_did_you_mean(arg)}: put it first, "
            "as in `sfs send CODE FILE...`"
        )
    if code_like:
        code = _code_argument(args[0])
        files = args[1:]
        if not files and want_files:
            raise click.UsageError("no file to send: `sfs send CODE FILE...`")
        if len(code_like) > 1:
            raise click.UsageError(
                f"{shown_part(args[code_like[1]])} looks like a second code; "
                "give one code, then the files"
            )
        return code, files
    for arg in args:
        if arg != "-" and not os.path.lexists(arg):
            raise MissingFile(f"{arg!r}: no such file")
    if stdin_taken and not sys.stdin.isatty():
        example = "sfs send CODE --text -" if text_from_stdin else "sfs send CODE -"
        raise click.UsageError(f"stdin carries the data here: give the code first, `{example}`")
    return _prompt_code() if sys.stdin.isatty() else _read_code(), args


class MissingFile(click.ClickException):
    """A file to send is not there, found before a code is asked for (exit 9, as
    :class:`sfs.errors.SourceError`)."""

    exit_code = 9

    def show(self, file: Any = None) -> None:
        say_error(self.format_message())


def _only_files(args: tuple[str, ...]) -> tuple[str, ...]:
    from sfs.code import shown_part

    for arg in args:
        if _looks_like_code(arg):
            raise click.UsageError(
                f"{shown_part(arg)} looks like a code; with --print-code, this side "
                "prints the code: give only the files"
            )
    return args


def _read_text() -> str:
    """--text -: the message from stdin, refused early when it is too large."""
    data = sys.stdin.buffer.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise click.UsageError(
            f"the text on stdin is over {MAX_TEXT_BYTES // 1024 // 1024} MiB: send it as a file"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise click.UsageError("the text on stdin is not UTF-8: send it as a file") from None
