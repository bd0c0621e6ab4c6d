"""The ``sfs`` command line: the click group, ``--config`` and ``--version``, and the
commands of :mod:`sfs.commands` (one module each) registered on it.

Only the CLI prints: every line goes through :func:`sfs.commands.output.say`, and
:func:`sfs.commands.running._run` turns every :class:`~sfs.errors.SfsError` into one
line on stderr and its exit code (tracebacks only with ``-v``).
"""

from __future__ import annotations

# Only what --help and --version need is imported here and in sfs.commands' modules:
# they must answer in well under 0.2 s, and aiortc, aiohttp, socketio and cryptography
# take half a second. Everything heavy is imported in the function that uses it.
from pathlib import Path

import click

from sfs import __version__, settings
from sfs.commands import check, config, pair, peers, receive, send, serve
from sfs.defaults import (
    SETUP_PROTOCOL_VERSION,
    SIGNALING_PROTOCOL_VERSION,
    TRANSFER_PROTOCOL_VERSION,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__,
    prog_name="sfs",
    message=f"%(prog)s %(version)s (protocols: transfer {TRANSFER_PROTOCOL_VERSION}, "
    f"set-up {SETUP_PROTOCOL_VERSION}, signaling {SIGNALING_PROTOCOL_VERSION})",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=settings.CONFIG_ENV,
    show_envvar=True,
    metavar="FILE",
    help="Read settings from this TOML file instead of "
    f"{settings.default_config_path()} (see `sfs config`).",
)
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """End-to-end-encrypted peer-to-peer file transfer with a one-time code.

    With no --server and no SFS_SERVER, `sfs receive` and `sfs send` work on the
    local network by themselves (mDNS); with a server (`sfs serve`), across networks.

    `sfs receive` saves into the folder it runs in, unless -o FOLDER says where
    (`sfs receive -o ~/Downloads`); it never replaces a file without --overwrite.

    Every option can also be set in the environment (SFS_ and its name, as each
    command's --help shows) or in the config file; the command line wins over the
    environment, which wins over the file. `sfs config` shows what is in force.

    \b
    Exit codes:
      0  done                        8  no connection to the other side
      1  other error                 9  a file to send is missing or unreadable
      2  bad command line           10  the destination exists (--overwrite)
      3  server unreachable         11  cannot write (disk full, not writable)
      4  no receiver with that code 12  integrity failure (damaged or tampered)
      5  wrong code                 13  protocol error, or an sfs too old
      6  declined                   14  --verify not confirmed
      7  the other side left        130 interrupted (Ctrl-C)

    Each command's --help lists its options, with examples. README.md, in sfs's
    source (pip does not install it), has the details and troubleshooting.
    """
    assert isinstance(ctx.command, click.Group)
    config = settings.load(config_file, ctx.command, ctx)
    ctx.default_map = config.default_map()
    ctx.obj = config


main.add_command(serve.serve)
main.add_command(receive.receive)
main.add_command(send.send)
main.add_command(peers.peers)
main.add_command(pair.pair)
main.add_command(pair.pairs)
main.add_command(check.check_command)
main.add_command(config.config_command)
# Every option of every command from SFS_<NAME> too (after all commands are registered).
settings.name_env_vars(main)
