"""Options more than one command has (as pip's ``cli/cmdoptions.py``): the peer
options of `sfs send` and `sfs receive`, --json, --qr, --verify, --no-resume, the
number types, and the examples that end each command's --help."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from sfs import platform, settings
from sfs.commands.ui import _json_lines
from sfs.defaults import (
    LAN_FIND_SECONDS,
    PEER_CONNECT_TIMEOUT_SECONDS,
    RECONNECT_WINDOW_SECONDS,
    RelayMode,
    Transport,
)
from sfs.errors import PeerConnectionError

if TYPE_CHECKING:
    from sfs import app
    from sfs.signal.messages import IceServer
    from sfs.socks import Socks


class Number(settings.FiniteFloatRange):
    """A number option: "'abc' is not a valid number", not click's "float range"; and
    never nan or inf (from any source: settings.FiniteFloatRange)."""

    name = "number"


class WholeNumber(click.IntRange):
    """A whole-number option: "'abc' is not a valid integer", not "integer range"."""

    name = "integer"


def json_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--json``; a usage error the command finds itself is then an ``error`` event
    on stdout as well as its line on stderr (errors while running: :func:`_run`)."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return f(*args, **kwargs)
            except click.ClickException as exc:
                if kwargs.get("as_json"):
                    _json_lines().error(exc.exit_code, exc.format_message())
                raise

        return click.option("--json", "as_json", is_flag=True, help=help_text)(run)

    return decorate


TRANSFER_JSON_HELP = (
    "Write events to stdout as JSON, one object per line (code, offer, progress, done, "
    "error; see README.md); no progress bars or status lines, only errors on stderr."
)
RATE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class Rate(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.3 only
    """``--limit-rate``: bytes a second, as curl takes them: ``500k``, ``2M``, ``1.5G``
    (k, M, G: 1024, 1024², 1024³) or a plain number."""

    name = "rate"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:[bB](?:/s)?)?\s*", str(value))
        rate = float(match.group(1)) * RATE_UNITS[match.group(2).lower()] if match else 0.0
        if not 1 <= rate < 2**53:
            hint = "give bytes a second, such as 500k or 2M (at least 1)"
            self.fail(f"{value!r}: {hint}", param, ctx)
        return rate


LIMIT_RATE_OPTION = click.option(
    "--limit-rate",
    type=Rate(),
    default=None,
    metavar="RATE",
    help="Move file data at no more than RATE bytes a second: 500k, 2M, 1G (k, M, G: "
    "1024, 1024², 1024³).",
)
QR_OPTION = click.option(
    "--qr",
    is_flag=True,
    help="Also draw the code as a QR code of a link to the web page with the code in it "
    "(http://SERVER/#CODE; on a LAN with no server, this computer's own page: "
    "http://ADDRESS:PORT/#CODE), for a phone's camera: it opens the page, which sends "
    "to `sfs receive` or receives from `sfs send --print-code`.",
)


def _ice_servers(values: Sequence[str]) -> tuple[IceServer, ...] | None:
    if not values:
        return None
    from sfs.signal.messages import parse_ice_server

    try:
        return tuple(parse_ice_server(v) for v in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ice-server") from None


def _ice_addresses(values: Sequence[str]) -> tuple[str, ...]:
    # The environment variable carries one string: accept commas and spaces in it.
    return tuple(part for v in values for part in re.split(r"[,\s]+", v) if part)


def _peer_options(
    server: str | None,
    ice_server: Sequence[str],
    ice_address: Sequence[str],
    connect_timeout: float,
    *,
    reconnect_window: float = RECONNECT_WINDOW_SECONDS,
    lan: bool = False,
    name: str = "",
    cacert: Path | None = None,
    transport: str = Transport.AUTO.value,
    relay: str = RelayMode.AUTO.value,
    proxy: Socks | None = None,
) -> app.PeerOptions:
    """The options both peers share; the mode rule is here: ``--lan``, or no
    ``--server`` and no ``SFS_SERVER``, is LAN mode."""
    from sfs import app
    from sfs.peer.transport.addresses import check_local_addresses

    ctx = click.get_current_context()
    if lan and ctx.get_parameter_source("server") is ParameterSource.COMMANDLINE:
        raise click.UsageError("--lan and --server exclude each other: pick one")
    if relay == RelayMode.ONLY.value and (lan or server is None):
        raise click.UsageError(
            "--relay only needs a server with a relay (--server URL): LAN mode has none"
        )
    if relay == RelayMode.ONLY.value and transport == Transport.DATACHANNEL.value:
        raise click.UsageError("--relay only and --transport datachannel exclude each other")
    if proxy is not None and (lan or server is None):
        raise click.UsageError(
            "--proxy needs a server (--server URL): LAN mode finds peers with mDNS, over "
            "UDP, which no SOCKS proxy carries"
        )
    # An explicit --connect-timeout also bounds the search on the LAN, whose own
    # default is short: a waiting peer there answers within a second.
    explicit = ctx.get_parameter_source("connect_timeout") is not ParameterSource.DEFAULT
    try:
        addresses = check_local_addresses(_ice_addresses(ice_address))
    except PeerConnectionError as exc:
        raise click.BadParameter(
            str(exc).removeprefix("--ice-address "), param_hint="--ice-address"
        ) from None
    return app.PeerOptions(
        server_url=None if lan else server,
        ice_servers=_ice_servers(ice_server),
        ice_addresses=addresses,
        connect_timeout=connect_timeout,
        name=name,
        find_timeout=connect_timeout if explicit else LAN_FIND_SECONDS,
        ca_file=None if cacert is None else str(cacert),
        transport=Transport(transport),
        relay=RelayMode(relay),
        reconnect_window=reconnect_window,
        proxy=proxy,
    )


def _server_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An http:// or https:// URL with a host: anything else is a usage error, not a
    server that cannot be reached."""
    if value is None or not value.strip():
        return None  # LAN mode
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(
            f"{value!r} is not an http:// or https:// URL with a host, e.g. http://localhost:5000"
        )
    return value.strip()


def _proxy(ctx: click.Context, param: click.Parameter, value: str | None) -> Socks | None:
    if value is None or not value.strip():
        return None
    from sfs.socks import parse_proxy

    try:
        return parse_proxy(value.strip())
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


RESUME_OPTION = click.option(
    "--no-resume",
    is_flag=True,
    help="Start over instead of continuing an interrupted transfer of the same file.",
)
VERIFY_OPTION = click.option(
    "--verify",
    is_flag=True,
    help="Show a verification string derived from the session key and ask whether the "
    "other side shows the same, before any file data moves.",
)


def peer_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options `send` and `receive` share."""
    options = [
        click.option(
            "--server",
            default=None,
            callback=_server_url,
            envvar="SFS_SERVER",
            show_envvar=True,
            metavar="URL",
            help="Signaling server (`sfs serve`) for peers on other networks. Without "
            "it (and without SFS_SERVER), sfs works on the local network by itself.",
        ),
        click.option(
            "--lan",
            is_flag=True,
            help="Work on the local network (no server) even if SFS_SERVER is set.",
        ),
        click.option(
            "--cacert",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            envvar="SFS_CA_BUNDLE",
            show_envvar=True,
            metavar="FILE",
            help="Trust these certificates (PEM) for an https:// --server instead of "
            "the system's (a private CA).",
        ),
        click.option(
            "--ice-server",
            multiple=True,
            metavar="URL",
            help="STUN/TURN server, e.g. stun:host:3478 or turn:USER:PASS@host:3478"
            "?transport=udp; repeatable. Replaces the servers `sfs serve` recommends.",
        ),
        click.option(
            "--ice-address",
            multiple=True,
            metavar="ADDR",
            envvar="SFS_ICE_ADDRESSES",
            show_envvar=True,
            help="Offer only this local address as ICE host candidate (repeatable; "
            "e.g. a VPN address, or 127.0.0.1 for two peers on one machine).",
        ),
        click.option(
            "--proxy",
            default=None,
            callback=_proxy,
            metavar="URL",
            help="Connect through this SOCKS5 proxy (socks5h://HOST:PORT: the proxy "
            "resolves names, as for Tor; socks5://: this machine does): signaling, the "
            "relay and direct TCP. Then nothing goes over UDP (no WebRTC), unless "
            "--transport datachannel asks for it.",
        ),
        click.option(
            "--connect-timeout",
            type=Number(1, 3600),
            default=PEER_CONNECT_TIMEOUT_SECONDS,
            show_default=True,
            metavar="SECONDS",
            help="Give up when the signaling server, the other side or the direct "
            "connection does not answer within this long (on the local network, "
            f"looking for the peer takes at most {LAN_FIND_SECONDS:.0f} s unless "
            "this is given).",
        ),
        click.option(
            "--reconnect-window",
            type=Number(0, 86400),
            default=RECONNECT_WINDOW_SECONDS,
            show_default=True,
            metavar="SECONDS",
            help="When the connection breaks mid-transfer (a Wi-Fi change, a phone "
            "locking, a router restarting), look for the other side again through the "
            "same server for this long, then resume where the transfer stopped; "
            "0 gives up at once, as before.",
        ),
        click.option(
            "--transport",
            type=click.Choice([t.value for t in Transport]),
            default=Transport.AUTO.value,
            envvar="SFS_TRANSPORT",
            show_envvar=True,
            show_default=True,
            help="auto: a direct TCP connection when the two sides reach each other "
            "(fastest), else WebRTC (through NATs and TURN); tcp or datachannel: only "
            "that one.",
        ),
        click.option(
            "--relay",
            type=click.Choice([m.value for m in RelayMode]),
            default=RelayMode.AUTO.value,
            envvar="SFS_RELAY",
            show_envvar=True,
            show_default=True,
            help="auto: when no direct connection is made within a moment, the "
            "--server's relay carries the sealed bytes (over TCP, at its speed); "
            "never: not the relay; only: nothing but the relay.",
        ),
        click.option(
            "-q",
            "--quiet",
            is_flag=True,
            help="Only errors on stderr: no progress, status lines or warnings (the code, "
            "the final line and a text message stay on stdout).",
        ),
        click.option("-v", "--verbose", count=True, help="More log output (-vv: debug)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _epilog(examples: Sequence[tuple[str, str]]) -> str:
    """Each command's --help ends with examples and where the whole story is. (``\\b``
    keeps click from rewrapping the block.)"""
    width = max(len(command) for command, _ in examples)
    lines = [f"  {command.ljust(width)}  {what}" for command, what in examples]
    return (
        "\b\nExamples:\n"
        + "\n".join(lines)
        + "\n\n`sfs --help`: where received files go, and the exit codes. README.md (in sfs's"
        + "\nsource, not installed) has the details and troubleshooting."
    )


def _require_terminal_for_verify(verify: bool) -> None:
    if verify and not sys.stdin.isatty():
        raise click.UsageError("--verify asks you to compare a string, and needs a terminal")


def _default_sender() -> str:
    return platform.login_name()
