"""`sfs check`: what this network allows, before a transfer needs it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sfs.commands.options import Number, _epilog, _server_url
from sfs.commands.output import Styled, say
from sfs.commands.running import _run, _setup_logging

CHECK_EXAMPLES = [
    ("sfs check --server https://sfs.example.org", "can this network reach anyone?"),
]


@click.command("check", epilog=_epilog(CHECK_EXAMPLES))
@click.option(
    "--server",
    required=True,
    callback=_server_url,
    envvar="SFS_SERVER",
    show_envvar=True,
    metavar="URL",
    help="The signaling server (`sfs serve`) to check with.",
)
@click.option(
    "--cacert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="SFS_CA_BUNDLE",
    show_envvar=True,
    metavar="FILE",
    help="Trust these certificates (PEM) for an https:// server (a private CA).",
)
@click.option(
    "--connect-timeout",
    type=Number(1, 3600),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv: debug).")
def check_command(
    server: str | None, cacert: Path | None, connect_timeout: float, verbose: int
) -> None:
    """Check what this network allows, before a transfer needs it: the server (and
    its TLS), STUN and the public address seen, the NAT's behaviour, and a TURN
    allocation with the issued credential on every TURN URL.

    One line per check (ok, warn: works with a limit, FAIL); exit 0 if any transfer
    is possible (the server answers: peers on one network need nothing more), else 1.
    """
    from sfs import app

    _setup_logging(verbose)
    if server is None:
        raise click.UsageError("give the server to check with: --server URL (or SFS_SERVER)")
    options = app.PeerOptions(
        server_url=server,
        connect_timeout=connect_timeout,
        ca_file=None if cacert is None else str(cacert),
    )
    report = _run(app.check_network(server, options), verbose, transfer=False)
    marks = {
        "ok": Styled("ok  ", fg="green"),
        "warn": Styled("warn", fg="yellow"),
        "fail": Styled("FAIL", fg="red", bold=True),
    }
    for finding in report.findings:
        say(marks[finding.level], f"  {finding.what}: {finding.detail}", err=False)
    say(f"Transfers possible: {report.summary}", err=False)
    sys.exit(0 if report.possible else 1)
