"""`sfs config`: the settings in force and where each comes from."""

from __future__ import annotations

import os

import click

from sfs import settings
from sfs.commands.options import _epilog
from sfs.commands.output import say

CONFIG_EXAMPLES = [
    ("sfs config", "every command's settings and where they come from"),
    ("sfs config send", "just `sfs send`'s"),
    ("sfs config --path", "where the config file is looked for"),
]


@click.command("config", epilog=_epilog(CONFIG_EXAMPLES))
@click.argument("command", required=False, metavar="[COMMAND]")
@click.option("--path", "path_only", is_flag=True, help="Print only the config file's path.")
@click.pass_context
def config_command(ctx: click.Context, command: str | None, path_only: bool) -> None:
    """Print the settings in force for each command (or COMMAND) and where each
    comes from: the environment (SFS_...), the config file (with its line), or the
    default. Passwords in URLs are shown as ***.

    The output is TOML: a section of it can go into the config file as it is.
    """
    config: settings.ConfigFile = ctx.obj
    if path_only:
        say(str(config.path), err=False)
        return
    group = ctx.parent.command if ctx.parent is not None else None
    assert isinstance(group, click.Group)
    assert ctx.parent is not None
    names = [n for n in sorted(group.commands) if n != "config"]
    if command is not None and command not in names:
        raise click.BadParameter(
            f"{command!r} is not one of {', '.join(names)}", param_hint="COMMAND"
        )
    shown = [command] if command else names
    # What the commands refuse from the environment, `sfs config` refuses too (the
    # file was checked when it was read).
    for name in shown:
        settings.check_environment(group.commands[name], ctx.parent, os.environ)
    state = "" if config.found else "  (not there: defaults and environment only)"
    say(f"# config file: {config.path}{state}", err=False)
    for name in shown:
        say("", err=False)
        say(f"[{name}]", err=False)
        for setting in settings.settings_in_force(
            group.commands[name], ctx.parent, config, os.environ
        ):
            line = f"{setting.key} = {settings.show_value(setting.value)}"
            if setting.value is None:
                line = f"# {setting.key} (not set)"
            say(f"{line:<44} # {setting.source}", err=False)
