"""`sfs serve`: the signaling server."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sfs import platform
from sfs.commands.options import Number, WholeNumber, _epilog, _ice_servers
from sfs.commands.output import say_error
from sfs.commands.running import _run, _setup_logging
from sfs.defaults import (
    DEFAULT_FD_RESERVE,
    DEFAULT_HEADER_TIMEOUT_SECONDS,
    DEFAULT_JOIN_TIMEOUT_SECONDS,
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_MAX_QUEUED_BYTES_PER_CONNECTION,
    DEFAULT_PAIRING_TIMEOUT_SECONDS,
    DEFAULT_REDIS_TTL_SECONDS,
    DEFAULT_REGISTER_TIMEOUT_SECONDS,
    DEFAULT_RELAY_IDLE_SECONDS,
    DEFAULT_RELAY_MAX_PAIRS,
    DEFAULT_RELAY_PAIRS_PER_ADDRESS,
    DEFAULT_RELAY_WAIT_SECONDS,
    DEFAULT_TURN_TTL_SECONDS,
    MIN_FD_RESERVE,
    MIN_REDIS_TTL_SECONDS,
)

if TYPE_CHECKING:
    from sfs.signal.turn import TurnSecret


SERVE_EXAMPLES = [
    ("sfs serve", "signaling on port 5000, every interface"),
    ("sfs serve --port 0 --host 127.0.0.1", "a free port, this machine only"),
    ("sfs serve --turn turn:turn.example.org:3478", "hand out TURN credentials"),
]


@click.command(epilog=_epilog(SERVE_EXAMPLES))
@click.option("--host", default="0.0.0.0", envvar="SFS_HOST", show_envvar=True, show_default=True)
@click.option(
    "--port",
    default=5000,
    type=WholeNumber(0, 65535),
    envvar="SFS_PORT",
    show_envvar=True,
    show_default=True,
    help="0 picks a free port (printed at start).",
)
@click.option(
    "--ice-server",
    multiple=True,
    metavar="URL",
    help="STUN/TURN server handed to clients when they register, as it is (a TURN "
    "server with a fixed turn:USER:PASS@host); repeatable.",
)
@click.option(
    "--stun",
    multiple=True,
    metavar="URL",
    help="STUN server handed to clients, e.g. stun:turn.example.org:3478; repeatable.",
)
@click.option(
    "--turn",
    multiple=True,
    metavar="URL",
    help="TURN server (coturn with use-auth-secret) handed to clients, each with its "
    "own short-lived credential, e.g. turn:turn.example.org:3478?transport=udp; "
    "repeatable (add ?transport=tcp for networks that block UDP).",
)
@click.option(
    "--turn-secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="File holding coturn's static-auth-secret (or set SFS_TURN_SECRET). Never "
    "sent to clients or logged.",
)
@click.option(
    "--turn-ttl",
    type=WholeNumber(60, 7 * 24 * 3600),
    default=DEFAULT_TURN_TTL_SECONDS,
    show_default=True,
    metavar="SECONDS",
    help="How long each issued TURN credential is valid.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Serve HTTPS with this certificate chain (PEM); needs --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="The private key of --tls-cert (PEM).",
)
@click.option(
    "--max-connections",
    default=10_000,
    type=WholeNumber(1),
    show_default=True,
    help="Refuse clients beyond this many at once.",
)
@click.option(
    "--max-lookups-per-connection",
    default=10,
    type=WholeNumber(1),
    show_default=True,
    help="Code lookups one client may try before it is refused.",
)
@click.option(
    "--max-lookups-per-address",
    default=60,
    type=WholeNumber(1),
    show_default=True,
    help="Code lookups per client address (IPv6: per /64) per minute.",
)
@click.option(
    "--max-connections-per-address",
    default=DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    type=WholeNumber(1),
    show_default=True,
    help="Connections one client address (IPv6: one /64) may hold at once; each peer "
    "holds one while it connects, so this is how many may share a NAT.",
)
@click.option(
    "--header-timeout",
    default=DEFAULT_HEADER_TIMEOUT_SECONDS,
    type=Number(min=0, min_open=True),
    show_default=True,
    metavar="SECONDS",
    help="Close a connection that has not sent its HTTP request (or websocket upgrade).",
)
@click.option(
    "--join-timeout",
    default=DEFAULT_JOIN_TIMEOUT_SECONDS,
    type=Number(min=0, min_open=True),
    show_default=True,
    metavar="SECONDS",
    help="Close a websocket that has not joined the Socket.IO namespace.",
)
@click.option(
    "--register-timeout",
    default=DEFAULT_REGISTER_TIMEOUT_SECONDS,
    type=Number(min=0, min_open=True),
    show_default=True,
    metavar="SECONDS",
    help="Disconnect a client that has not registered by then.",
)
@click.option(
    "--pairing-timeout",
    default=DEFAULT_PAIRING_TIMEOUT_SECONDS,
    type=Number(min=0, min_open=True),
    show_default=True,
    metavar="SECONDS",
    help="Disconnect both peers of a connection request that has not ended by then "
    "(peers leave once connected); keep it above the clients' --connect-timeout.",
)
@click.option(
    "--max-queued-bytes-per-connection",
    default=DEFAULT_MAX_QUEUED_BYTES_PER_CONNECTION,
    type=WholeNumber(1),
    show_default=True,
    help="Disconnect a client that leaves more than this unread.",
)
@click.option(
    "--max-queued-bytes",
    default=DEFAULT_MAX_QUEUED_BYTES,
    type=WholeNumber(1),
    show_default=True,
    help="Unread data for all clients together; beyond it the clients with the most "
    "unread are disconnected.",
)
@click.option(
    "--fd-reserve",
    default=DEFAULT_FD_RESERVE,
    type=WholeNumber(MIN_FD_RESERVE),
    show_default=True,
    help="File descriptors kept free for /healthz: Socket.IO clients get 503 when only "
    "this many are left.  The soft `ulimit -n` is raised to the hard one at start.",
)
@click.option(
    "--redis",
    "redis_url",
    envvar="SFS_REDIS_URL",
    show_envvar=True,
    metavar="URL",
    callback=lambda ctx, param, value: _redis_url(value),
    help="Keep the peers in this Redis, shared with every `sfs serve` node that uses it "
    "(several nodes behind a load balancer): redis://[:PASSWORD@]HOST[:PORT][/DB], "
    "rediss:// for TLS, or unix://PATH.  Put a password in SFS_REDIS_URL, not on the "
    "command line.  Without it, the peers live in this process.",
)
@click.option(
    "--redis-ttl",
    default=DEFAULT_REDIS_TTL_SECONDS,
    type=Number(min=MIN_REDIS_TTL_SECONDS),
    show_default=True,
    metavar="SECONDS",
    help="With --redis: how long a node's peers stay registered after its last "
    "heartbeat (it sends one every third of that), so how soon the partners of a node "
    "that died are told.",
)
@click.option(
    "--no-relay",
    is_flag=True,
    help="Do not relay (no /relay; the peers are told there is none unless --relay-url).",
)
@click.option(
    "--relay-url",
    metavar="URL",
    help="The relay the peers are sent to instead of this server's own /relay, e.g. one "
    "node of a cluster behind a proxy: https://sfs.example.org/node/2/relay.",
)
@click.option(
    "--relay-wait",
    default=DEFAULT_RELAY_WAIT_SECONDS,
    type=Number(min=0, min_open=True),
    show_default=True,
    metavar="SECONDS",
    help="How long a relay connection waits for its partner (then 408).",
)
@click.option(
    "--relay-pairs-per-address",
    default=DEFAULT_RELAY_PAIRS_PER_ADDRESS,
    type=WholeNumber(1),
    show_default=True,
    help="Relay pairs one client address (IPv6: one /64) may take part in, and relay "
    "connections it may have waiting (then 429).",
)
@click.option(
    "--relay-max-pairs",
    default=DEFAULT_RELAY_MAX_PAIRS,
    type=WholeNumber(1),
    show_default=True,
    help="Relay pairs at once, from everyone (then 503).",
)
@click.option(
    "--relay-rate",
    default="0",
    show_default=True,
    metavar="BYTES_PER_S",
    callback=lambda ctx, param, value: _byte_count(value, "--relay-rate"),
    help="Bytes per second one relay pair may move, both ways together (500k, 2M; "
    "k = 1024); 0 = no limit.",
)
@click.option(
    "--relay-max-bytes",
    default="0",
    show_default=True,
    metavar="BYTES",
    callback=lambda ctx, param, value: _byte_count(value, "--relay-max-bytes"),
    help="Bytes one relay pair may move in all (then it is closed; 10G); 0 = no limit.",
)
@click.option(
    "--relay-idle",
    default=DEFAULT_RELAY_IDLE_SECONDS,
    type=Number(min=0, min_open=True),
    show_default=True,
    metavar="SECONDS",
    help="Close a relay pair that moves nothing for this long.",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv: debug).")
def serve(
    host: str,
    port: int,
    ice_server: tuple[str, ...],
    stun: tuple[str, ...],
    turn: tuple[str, ...],
    turn_secret_file: Path | None,
    turn_ttl: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    max_connections: int,
    max_lookups_per_connection: int,
    max_lookups_per_address: int,
    max_connections_per_address: int,
    header_timeout: float,
    join_timeout: float,
    register_timeout: float,
    pairing_timeout: float,
    max_queued_bytes_per_connection: int,
    max_queued_bytes: int,
    fd_reserve: int,
    redis_url: str | None,
    redis_ttl: float,
    no_relay: bool,
    relay_url: str | None,
    relay_wait: float,
    relay_pairs_per_address: int,
    relay_max_pairs: int,
    relay_rate: int,
    relay_max_bytes: int,
    relay_idle: float,
    verbose: int,
) -> None:
    """Run the signaling server (it never sees file data or keys)."""
    from sfs import app
    from sfs.signal import server as signal_server
    from sfs.signal.config import ServerConfig

    _setup_logging(verbose)
    logging.getLogger("sfs.signal").setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        config = ServerConfig(
            host=host,
            port=port,
            ice_servers=_ice_servers(ice_server) or (),
            stun_urls=_bare_ice_urls(stun, "--stun"),
            turn_urls=_bare_ice_urls(turn, "--turn"),
            turn_secret=_turn_secret(turn_secret_file),
            turn_ttl_seconds=turn_ttl,
            tls=(str(tls_cert), str(tls_key)) if tls_cert and tls_key else None,
            max_connections=max_connections,
            max_lookups_per_connection=max_lookups_per_connection,
            max_lookups_per_address=max_lookups_per_address,
            max_connections_per_address=max_connections_per_address,
            header_timeout_seconds=header_timeout,
            join_timeout_seconds=join_timeout,
            register_timeout_seconds=register_timeout,
            pairing_timeout_seconds=pairing_timeout,
            max_queued_bytes_per_connection=max_queued_bytes_per_connection,
            max_queued_bytes=max_queued_bytes,
            fd_reserve=fd_reserve,
            redis_url=redis_url,
            redis_ttl_seconds=redis_ttl,
            relay=not no_relay,
            relay_url=relay_url,
            relay_wait_seconds=relay_wait,
            relay_pairs_per_address=relay_pairs_per_address,
            relay_max_pairs=relay_max_pairs,
            relay_rate=relay_rate,
            relay_max_bytes=relay_max_bytes,
            relay_idle_seconds=relay_idle,
        )
    except ValueError as exc:  # limits that contradict each other
        raise click.UsageError(str(exc)) from None

    if config.tls is not None:
        try:
            signal_server.tls_context(*config.tls)  # a bad file is a usage error, now
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        _run(_until_terminated(app.serve(config)), verbose, transfer=False)
    except OSError as exc:
        say_error(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        sys.exit(3)


async def _until_terminated(serving: Coroutine[Any, Any, None]) -> None:
    """Run *serving* until SIGTERM (what a service manager sends), which then stops it
    as Ctrl-C does: every client is disconnected and told, and with --redis its peer
    leaves the registry at once, so partners on other nodes need not wait for the TTL."""
    import asyncio

    task = asyncio.ensure_future(serving)
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    # Windows has no SIGTERM handler: there SIGTERM ends the process as before.
    undo = platform.on_terminate(asyncio.get_running_loop(), terminate)
    try:
        await task
    except asyncio.CancelledError:
        if not terminated:
            raise
    finally:
        undo()


def _redis_url(value: str | None) -> str | None:
    """--redis / SFS_REDIS_URL, checked; an empty SFS_REDIS_URL means none.  The error
    never shows the URL, which may hold a password."""
    if value is None or not value.strip():
        return None
    from sfs.signal.config import redis_url_display

    try:
        redis_url_display(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--redis / SFS_REDIS_URL") from None
    return value.strip()


def _byte_count(value: str, option: str) -> int:
    """--relay-rate / --relay-max-bytes: bytes, with an optional unit."""
    from sfs.signal.config import parse_byte_count

    try:
        return parse_byte_count(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _bare_ice_urls(values: Sequence[str], option: str) -> tuple[str, ...]:
    """--stun/--turn URLs, checked and normalised; credentials do not belong in them
    (sfs serve issues its own)."""
    from sfs.signal.messages import canonical_ice_url

    urls: list[str] = []
    for value in values:
        if "@" in value:
            raise click.BadParameter(
                "put no credentials in the URL: sfs serve issues them "
                "(for a fixed one, use --ice-server)",
                param_hint=option,
            )
        try:
            urls.append(canonical_ice_url(value))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=option) from None
    return tuple(urls)


def _turn_secret(path: Path | None) -> TurnSecret | None:
    """From --turn-secret-file, else from SFS_TURN_SECRET; the error never shows it."""
    from sfs.signal.turn import read_secret

    if path is not None:
        try:
            return read_secret(path.read_bytes())
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {str(path)!r}: {exc.strerror or exc}", param_hint="--turn-secret-file"
            ) from None
        except ValueError:
            raise click.BadParameter(
                f"{str(path)!r} is empty", param_hint="--turn-secret-file"
            ) from None
    value = os.environ.get("SFS_TURN_SECRET", "")
    return read_secret(value.encode()) if value.strip() else None
