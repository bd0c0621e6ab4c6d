"""`sfs receive`: print a code (or join one) and receive."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sfs.commands import pair as pair_command
from sfs.commands import terminal
from sfs.commands.codes import _code_argument, _prompt_code, _read_code
from sfs.commands.listing import _final_line
from sfs.commands.options import (
    LIMIT_RATE_OPTION,
    QR_OPTION,
    RESUME_OPTION,
    TRANSFER_JSON_HELP,
    VERIFY_OPTION,
    _default_sender,
    _epilog,
    _peer_options,
    _require_terminal_for_verify,
    json_option,
    peer_options,
)
from sfs.commands.output import say
from sfs.commands.running import _run, _setup_logging
from sfs.commands.ui import ConsoleUi, _ask, _json_lines
from sfs.text import printable, printable_text

if TYPE_CHECKING:
    from sfs.pairs import Pair
    from sfs.socks import Socks

RECEIVE_EXAMPLES = [
    ("sfs receive", "print a code, wait for files, ask before saving"),
    ("sfs receive -o ~/Downloads --yes", "save whatever comes into ~/Downloads"),
    ("sfs receive -", "type a code from `sfs send --print-code`"),
    ("sfs receive --stdout --yes | tar x", "unpack a tar sent as a pipe"),
    ("sfs receive --yes-from phone", "take what the paired phone sends without asking"),
    ("sfs receive --limit-rate 500k", "leave bandwidth for others: at most 500 KiB/s"),
]


@click.command(epilog=_epilog(RECEIVE_EXAMPLES))
@click.argument("code", required=False, metavar="[CODE]")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder to save into.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing files of the same name.")
@click.option("-y", "--yes", is_flag=True, help="Accept the offer without asking.")
@click.option(
    "--yes-from",
    multiple=True,
    metavar="NAME",
    shell_complete=pair_command.complete_names,
    help="Accept an offer from this paired device (`sfs pairs`) without asking; repeat for more.",
)
@click.option(
    "--no-pairs",
    is_flag=True,
    help="Wait only for the code: not for paired devices too.",
)
@click.option(
    "--list",
    "list_all",
    is_flag=True,
    help="List every offered file, not just a screenful.",
)
@click.option(
    "--name",
    default=None,
    help="Name `sfs peers` shows for this receiver on the local network "
    "(default: your login name).",
)
@click.option(
    "--stdout",
    "to_stdout",
    is_flag=True,
    help="Write the one incoming file or pipe to stdout (everything else goes to "
    "stderr); an offer of more is refused. Data already written cannot be taken "
    "back: an integrity failure still exits 12. Refused when stdout is a terminal, "
    "unless --force-tty is given too.",
)
@click.option(
    "--force-tty",
    is_flag=True,
    help="With --stdout: write to stdout even when it is a terminal (the bytes go "
    "to the screen as they are).",
)
@LIMIT_RATE_OPTION
@QR_OPTION
@json_option(TRANSFER_JSON_HELP)
@VERIFY_OPTION
@RESUME_OPTION
@peer_options
def receive(
    code: str | None,
    output: Path,
    overwrite: bool,
    yes: bool,
    yes_from: tuple[str, ...],
    no_pairs: bool,
    limit_rate: float | None,
    list_all: bool,
    name: str | None,
    to_stdout: bool,
    force_tty: bool,
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
    """Print a one-time code and receive the files sent with it.

    With CODE (printed by `sfs send --print-code`), join that sender instead; `-`
    types it at a prompt (or reads it from stdin), out of the process list.
    Without CODE it also waits for the paired devices (`sfs pair`): `sfs send @NAME`
    on one of them needs no code, and the prompt names it.
    """
    from sfs import app

    _setup_logging(verbose, quiet=quiet)
    if as_json and to_stdout:
        raise click.UsageError("--json and --stdout both write to stdout: pick one")
    if to_stdout and not force_tty and terminal.is_tty(sys.stdout):
        # Before a code is shown or used: refusing later would spend it (curl refuses so).
        raise click.UsageError(
            "stdout is a terminal: --stdout would put the file's bytes on the screen; "
            "redirect it (`--stdout > FILE`, `--stdout | tar x`) or add --force-tty"
        )
    if as_json and qr:
        raise click.UsageError("--json gives the code (and link) in its code event: drop --qr")
    if not yes and not sys.stdin.isatty() and not yes_from:
        raise click.UsageError(
            "no terminal to ask whether to accept the offer; pass --yes to accept without asking"
        )
    paired: tuple[Pair, ...] = ()
    kept = None
    if code is None and not no_pairs:
        kept = pair_command.store()
        paired = tuple(pair_command.loaded(kept, as_json=as_json))
    for device in yes_from:
        if device not in {p.name for p in paired}:
            raise click.UsageError(
                f"--yes-from {printable(device, 40)}: no paired device of that name "
                "waited for (`sfs pairs` lists them)"
            )
    _require_terminal_for_verify(verify)
    if code is None:
        joined = None
    elif code == "-":
        joined = _prompt_code() if sys.stdin.isatty() else _read_code()
    else:
        joined = _code_argument(code)
    config = app.ReceiveConfig(
        code=joined,
        output_dir=output,
        overwrite=overwrite,
        peer=_peer_options(
            server,
            ice_server,
            ice_address,
            connect_timeout,
            reconnect_window=reconnect_window,
            lan=lan,
            name=_default_sender() if name is None else name,
            cacert=cacert,
            transport=transport,
            relay=relay,
            proxy=proxy,
        ),
        verify=verify,
        resume=not no_resume,
        sink=sys.stdout.buffer if to_stdout else None,
        link=qr or as_json,
        pairs=paired,
        pair_store=kept,
        limit_rate=limit_rate,
    )
    if as_json:
        from sfs.commands.jsonui import JsonUi

        json_ui = JsonUi(
            _json_lines(), assume_yes=yes, ask=_ask, yes_from=yes_from, limit_rate=limit_rate
        )
        received = _run(app.receive(config, json_ui), verbose, ui=json_ui, json_lines=json_ui.lines)
        json_ui.done("receive", received)
        return
    ui = ConsoleUi(
        quiet=quiet,
        assume_yes=yes,
        list_all=list_all,
        stdout_free=not to_stdout,
        qr=qr,
        yes_from=yes_from,
        limit_rate=limit_rate,
    )
    result = _run(app.receive(config, ui), verbose, ui=ui)
    if result.text is not None:
        click.echo(printable_text(result.text), nl=not result.text.endswith("\n"))
    if to_stdout or result.text is not None:
        ui.status(_final_line("Received", result))  # stdout carries the output itself
    else:
        say(_final_line("Received", result), err=False)
