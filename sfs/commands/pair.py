"""`sfs pair` and `sfs pairs`: trusted devices (pair once with a code, then send to
them with `sfs send @NAME` and no code; `sfs receive` waits for them too)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from sfs.commands.codes import _code_argument, _prompt_code, _read_code
from sfs.commands.options import _epilog, _peer_options, json_option, peer_options
from sfs.commands.output import say
from sfs.commands.running import _run, _setup_logging
from sfs.commands.ui import ConsoleUi, _ask, _json_lines
from sfs.text import printable

if TYPE_CHECKING:
    from sfs.errors import SfsError
    from sfs.pairs import Pair, PairStore
    from sfs.socks import Socks

PAIR_HINT = "On the other device, run `sfs pair CODE` (or `sfs pair -` and type it). Waiting…"

PAIR_EXAMPLES = [
    ("sfs pair --name laptop", "show a code; the other device pairs with it"),
    ("sfs pair --name phone KQZ-042-tiger-lamp", "pair with the device showing that code"),
    ("sfs send @laptop report.pdf", "later: send to it with no code"),
    ("sfs pairs", "list paired devices"),
]

PAIRS_EXAMPLES = [
    ("sfs pairs", "names, fingerprints, when each was last seen"),
    ("sfs pairs --remove phone", "forget a device: it can no longer send here"),
]


def store() -> PairStore:
    from sfs.pairs import PairStore

    return PairStore()


def complete_names(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    """The paired devices' names, for --remove and --yes-from (nothing if the pairs
    file cannot be read: a completion never prints an error)."""
    import click.shell_completion

    from sfs.errors import SfsError

    try:
        names = [p.name for p in store().load()]
    except SfsError:
        return []
    return [click.shell_completion.CompletionItem(n) for n in names if n.startswith(incomplete)]


def check_name(name: str) -> str:
    from sfs.pairs import NAME_RE

    if NAME_RE.fullmatch(name) is None:
        raise click.BadParameter(
            f"{printable(name, 40)!r}: a name is 1 to 32 letters, digits, `.`, `_` or `-`, "
            "starting with a letter or digit",
            param_hint="--name",
        )
    return name


@click.command(epilog=_epilog(PAIR_EXAMPLES))
@click.argument("code", required=False, metavar="[CODE]")
@click.option(
    "--name",
    default=None,
    help="The name this device gives itself; the other device keeps it, for "
    "`sfs send @NAME` (default: this computer's host name).",
)
@click.option("--qr", is_flag=True, help="Also draw the code as a QR code.")
@json_option(
    "Write events to stdout as JSON, one object per line (code, paired, error); only "
    "errors on stderr."
)
@peer_options
def pair(
    code: str | None,
    name: str | None,
    qr: bool,
    as_json: bool,
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
    """Pair this device with another: show a code here, or join the device that
    shows CODE.

    The code runs the same key exchange as a transfer's (one guess); then both
    devices keep the other's name and a fresh 256-bit secret, and show the same
    fingerprint. From then on `sfs send @NAME FILE` reaches the other device while
    it runs `sfs receive`, on the local network or through the same server, with no
    code. `sfs pairs` lists and removes them.
    """
    from sfs import app
    from sfs.pairs import default_name

    _setup_logging(verbose, quiet=quiet)
    if as_json and qr:
        raise click.UsageError("--json gives the code in its code event: drop --qr")
    own_name = check_name(default_name() if name is None else name)
    if code is None:
        joined = None
    elif code == "-":
        joined = _prompt_code() if sys.stdin.isatty() else _read_code()
    else:
        joined = _code_argument(code)
    pairs = store()
    loaded(pairs, as_json=as_json)  # a damaged or readable file: said before a code is spent
    config = app.PairConfig(
        code=joined,
        name=own_name,
        store=pairs,
        peer=_peer_options(
            server,
            ice_server,
            ice_address,
            connect_timeout,
            reconnect_window=0.0,
            lan=lan,
            name=own_name,
            cacert=cacert,
            transport=transport,
            relay=relay,
            proxy=proxy,
        ),
    )
    if as_json:
        from sfs.commands.jsonui import JsonUi

        json_ui = JsonUi(_json_lines(), ask=_ask)
        paired = _run(app.pair(config, json_ui), verbose, ui=json_ui, json_lines=json_ui.lines)
        json_ui.lines.emit(
            {
                "type": "paired",
                "name": paired.name,
                "fingerprint": paired.fingerprint,
                "replaced": paired.replaced,
            }
        )
        return
    ui = ConsoleUi(quiet=quiet, code_hint=PAIR_HINT, qr=qr)
    paired = _run(app.pair(config, ui), verbose, ui=ui)
    replaced = " (it replaces the earlier device of that name)" if paired.replaced else ""
    say(
        f"Paired with {paired.name} (fingerprint {paired.fingerprint}; the other device "
        f"shows the same){replaced}. Send to it with `sfs send @{paired.name} FILE`.",
        err=False,
    )


@click.command(epilog=_epilog(PAIRS_EXAMPLES))
@click.option(
    "--remove",
    "remove",
    default=None,
    metavar="NAME",
    help="Forget this device.",
    shell_complete=complete_names,
)
@json_option("Write the list (or what was removed) to stdout as one JSON object.")
def pairs(remove: str | None, as_json: bool) -> None:
    """List the paired devices (`sfs pair`): name, fingerprint, when paired and when
    last seen. With --remove NAME, forget one: it can no longer send here nor be sent
    to, and learns nothing but that its attempts fail."""
    import json

    from sfs.errors import SfsError

    kept = store()
    listed = loaded(kept, as_json=as_json)
    if remove is not None:
        if remove not in {p.name for p in listed}:
            raise click.UsageError(
                f"no paired device named {printable(remove, 40)!r} (`sfs pairs` lists them)"
            )
        try:
            kept.remove(remove)
        except SfsError as exc:
            _exit(exc, as_json=as_json)
        if as_json:
            click.echo(json.dumps({"type": "removed", "name": remove}))
        else:
            say(f"Removed {remove}: it is no longer paired with this device.", err=False)
        return
    if as_json:
        click.echo(
            json.dumps(
                {"type": "pairs", "pairs": [_pair_fields(p) for p in listed]},
                separators=(",", ":"),
            )
        )
        return
    if not listed:
        say("No paired devices. `sfs pair` pairs one.", err=False)
        return
    width = max(len(p.name) for p in listed)
    for p in listed:
        say(
            f"{p.name.ljust(width)}  {p.fingerprint}  paired {_when(p.paired_at)}, "
            f"last seen {_when(p.last_seen) if p.last_seen else 'never'}",
            err=False,
        )


def loaded(kept: PairStore, *, as_json: bool = False) -> list[Pair]:
    """The pairs file's pairs, or its trouble as one line and its exit code."""
    from sfs.errors import SfsError

    try:
        return kept.load()
    except SfsError as exc:
        _exit(exc, as_json=as_json)


def _exit(exc: SfsError, *, as_json: bool) -> NoReturn:
    from sfs.commands.output import say_error

    if as_json:
        _json_lines().error(exc.exit_code, str(exc))
    say_error(str(exc))
    sys.exit(exc.exit_code)


def _pair_fields(p: Pair) -> dict[str, object]:
    return {
        "name": p.name,
        "fingerprint": p.fingerprint,
        "paired_at": p.paired_at,
        "last_seen": p.last_seen,
    }


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))
