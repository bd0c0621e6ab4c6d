"""Settings: every option of every command from the command line, the environment or
a config file, in that order of precedence, and where each value in force came from.

The mechanism is click's own: an environment variable per option (``SFS_`` and the
option's long name, shown in ``--help``) and the context's ``default_map``, filled
from ``$XDG_CONFIG_HOME/sfs/config.toml`` (``click.get_app_dir``; ``--config FILE``
or ``SFS_CONFIG`` for another). click then reports each value's source
(``ParameterSource``), which ``sfs config`` prints.

The file is TOML, read with ``tomllib``: keys are the long option names; keys at the
top apply to every command that has that option, a table per command (``[send]``,
``[receive]``, ...) to that command and over the top ones::

    server = "https://sfs.example.org"
    [receive]
    output = "~/Downloads"
    [send]
    chunk-size = 16384

Anything wrong in the file (its syntax, a key no command has, a value the option
refuses) is one line naming the file and the line, before anything else happens.

A value is checked the same way wherever it comes from: a value in the file goes
through the option as the text it would be on the command line (``30``, ``nan``), so
what the command line or an ``SFS_`` variable refuses, the file refuses too. The file
itself is read only if it is a regular file, of at most MAX_CONFIG_BYTES.
"""

from __future__ import annotations

import datetime
import math
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

ENV_PREFIX = "SFS_"
CONFIG_ENV = "SFS_CONFIG"
CONFIG_NAME = "config.toml"
#: Options never set from the environment or a file.
_NOT_SETTINGS = frozenset({"help", "version", "config_file"})
#: The largest config file read: far more than any real one, and a bound on what a
#: wrong --config (a device, a huge log) can make sfs read into memory.
MAX_CONFIG_BYTES = 1024 * 1024


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/sfs/config.toml`` on Linux and BSDs (``~/.config`` without
    it), ``~/Library/Application Support/sfs`` on macOS, ``%APPDATA%\\sfs`` on
    Windows: click's rule for each platform."""
    return Path(click.get_app_dir("sfs")) / CONFIG_NAME


def option_key(param: click.Parameter) -> str:
    """The name an option has in the file and after ``SFS_``: its long name
    (``chunk-size`` for ``--chunk-size``), or its parameter name without one."""
    longs = [o for o in param.opts if o.startswith("--")]
    return longs[0][2:] if longs else (param.name or "").replace("_", "-")


def env_name(param: click.Parameter) -> str:
    return ENV_PREFIX + option_key(param).upper().replace("-", "_")


def settings_of(command: click.Command) -> Iterator[click.Option]:
    """The options of ``command`` that settings may give."""
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in _NOT_SETTINGS:
            yield param


def name_env_vars(group: click.Group) -> None:
    """Give every option of every command its ``SFS_`` variable, shown in --help.

    An option that already has variables keeps them after its own (``--cacert``
    reads ``SFS_CACERT``, then ``SFS_CA_BUNDLE`` as before).
    """
    for command in group.commands.values():
        for param in settings_of(command):
            own = env_name(param)
            old = param.envvar
            others = [old] if isinstance(old, str) else list(old or [])
            param.envvar = [own, *[name for name in others if name != own]]
            param.show_envvar = True


class SettingsError(click.ClickException):
    """A config file that cannot be used: one line naming the file and the line
    (exit 2, as for any other bad option, without a usage text that would not help)."""

    exit_code = 2


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange without ``nan`` and ``inf``: a comparison with ``nan`` is
    always false, so FloatRange takes it for any range, and ``inf`` passes one with no
    upper end. Every float option of sfs (timeouts, TTLs) uses this, and so the
    command line, the environment and the config file all refuse them."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


@dataclass
class ConfigFile:
    """What a config file sets, per command, checked against the commands' options."""

    path: Path
    found: bool = False
    #: command name -> parameter name -> (value as the file has it, line)
    values: dict[str, dict[str, tuple[Any, int]]] = field(default_factory=dict)
    #: command name -> parameter name -> the value as the option is given it (text)
    given: dict[str, dict[str, Any]] = field(default_factory=dict)

    def default_map(self) -> dict[str, dict[str, Any]]:
        return {command: dict(params) for command, params in self.given.items()}

    def line_of(self, command: str, name: str) -> int | None:
        entry = self.values.get(command, {}).get(name)
        return None if entry is None else entry[1]


def load(path: Path | None, group: click.Group, ctx: click.Context) -> ConfigFile:
    """Read the config file (``path``, else the default one if it exists) and check
    every value against the option it sets.

    :raises SettingsError: the file named explicitly is missing, or anything in it is
        wrong.
    """
    import tomllib

    explicit = path is not None
    path = path if path is not None else default_config_path()
    config = ConfigFile(path=path)
    text = read_config_text(path)
    if text is None:
        if explicit:
            raise SettingsError(f"the config file {path} does not exist") from None
        return config
    config.found = True
    try:
        document = tomllib.loads(text)
    except RecursionError:
        # tomllib parses nested arrays and inline tables by recursion: a file nested
        # thousands deep ends there, not in a TOMLDecodeError.
        raise SettingsError(f"{path}: values are nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column \d+\)$", message)
        line = int(found.group(1)) if found else text.count("\n") + 1
        reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)$", "", message)
        raise SettingsError(f"{path}, line {line}: {reason.lower()}") from None
    lines = _Lines(text)
    shared = {k: v for k, v in document.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in document.items() if isinstance(v, dict)}
    for name in tables:
        if name not in group.commands:
            raise SettingsError(
                f"{path}, line {lines.table(name)}: [{name}] is not an sfs command "
                f"(one of {', '.join(sorted(group.commands))})"
            )
    for key in shared:
        if not any(_option(group.commands[c], key) for c in group.commands):
            raise SettingsError(f"{path}, line {lines.key(None, key)}: no command has --{key}")
    for command_name, command in group.commands.items():
        table = tables.get(command_name, {})
        for key in table:
            if _option(command, key) is None:
                raise SettingsError(
                    f"{path}, line {lines.key(command_name, key)}: "
                    f"`sfs {command_name}` has no --{key}"
                )
        given = {
            **{key: (value, lines.key(None, key)) for key, value in shared.items()},
            **{key: (value, lines.key(command_name, key)) for key, value in table.items()},
        }
        checked: dict[str, tuple[Any, int]] = {}
        as_text: dict[str, Any] = {}
        for key, (value, line) in given.items():
            param = _option(command, key)
            if param is None or param.name is None:
                continue  # a shared key for the commands that have it
            where = f"{path}, line {line}"
            value = _from_toml(param, value, where=where)
            text_value = _as_text(value)
            _check(param, text_value, command, ctx, where=where)
            checked[param.name] = (value, line)
            as_text[param.name] = text_value
        if checked:
            config.values[command_name] = checked
            config.given[command_name] = as_text
    return config


def read_config_text(path: Path) -> str | None:
    """The text of the config file at ``path``; None if there is none.

    Opened without blocking (a FIFO named as the file would otherwise hang the
    ``open``), then refused unless it is a regular file, and read to at most
    MAX_CONFIG_BYTES (``/dev/zero`` is endless; a device or a log could be huge).

    :raises SettingsError: it is not a regular file, is larger, is unreadable or is
        not UTF-8.
    """
    from sfs import platform

    try:
        fd = os.open(path, platform.nonblocking_read_flags())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SettingsError(f"cannot read the config file {path}: {_reason(exc)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise SettingsError(f"the config file {path} is a folder")
        if not stat.S_ISREG(mode):
            raise SettingsError(f"the config file {path} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise SettingsError(f"cannot read the config file {path}: {_reason(exc)}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise SettingsError(
            f"the config file {path} is larger than {MAX_CONFIG_BYTES // 1024 // 1024} MiB"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"cannot read the config file {path}: {exc}") from None


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _as_text(value: Any) -> Any:
    """A file's value as the command line would give it: numbers and dates as text, so
    the option converts and checks them as it does ``--x 30`` or ``SFS_X=nan`` (a TOML
    ``nan``, or ``5.5`` for a whole number, is refused as they are). True and false
    stay as they are, for flags."""
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    if isinstance(value, bool | str):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


def check_environment(
    command: click.Command, parent: click.Context, environ: Mapping[str, str]
) -> None:
    """Check each ``SFS_`` value that ``command`` would take, as the command does when
    it runs (`sfs config` shows them; it must not accept what the command refuses).

    :raises SettingsError: one line naming the variable.
    """
    for param in settings_of(command):
        names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
        name = next((n for n in names if environ.get(n)), None)
        if name is None:
            continue
        value: Any = environ[name]
        if param.multiple or (param.nargs != 1):
            value = param.type.split_envvar_value(value)
        _check(param, value, command, parent, where=name)


def _option(command: click.Command, key: str) -> click.Option | None:
    key = key.replace("_", "-")
    for param in settings_of(command):
        if option_key(param) == key:
            return param
    return None


def _from_toml(param: click.Option, value: Any, *, where: str) -> Any:
    """A TOML value as the option takes it: a list for a repeatable option, ``~``
    expanded in paths (a shell does that for the command line, not for a file)."""
    if isinstance(value, dict):
        raise SettingsError(f"{where}: --{option_key(param)} takes a value, not a table")
    if isinstance(value, list) and not param.multiple:
        raise SettingsError(f"{where}: --{option_key(param)} takes one value, not a list")
    values = value if isinstance(value, list) else [value]
    if any(isinstance(v, list | dict) for v in values):
        raise SettingsError(f"{where}: --{option_key(param)} takes a list of values, not of lists")
    flag = param.is_flag and not param.count
    for one in values:
        if flag != isinstance(one, bool):
            wanted = "true or false" if flag else "a value, not true or false"
            raise SettingsError(f"{where}: --{option_key(param)} takes {wanted}")
    if isinstance(param.type, click.Path):
        if not all(isinstance(v, str) for v in values):
            raise SettingsError(f"{where}: --{option_key(param)} takes a path, in quotes")
        values = [os.path.expanduser(v) for v in values]
    return values if param.multiple else values[0]


def _check(
    param: click.Option, value: Any, command: click.Command, parent: click.Context, *, where: str
) -> None:
    """Run the option's own conversion and check on ``value`` now, so a bad value is
    reported with the file and line it came from."""
    ctx = click.Context(command, parent=parent, info_name=command.name)
    try:
        param.process_value(ctx, value)
    except click.BadParameter as exc:
        raise SettingsError(f"{where}: --{option_key(param)}: {exc.message}") from None
    except click.UsageError as exc:
        raise SettingsError(f"{where}: --{option_key(param)}: {exc.format_message()}") from None
    except (TypeError, ValueError, AttributeError, ArithmeticError):  # types click never expected
        raise SettingsError(
            f"{where}: --{option_key(param)}: {value!r} is not a valid value"
        ) from None


class _Lines:
    """Where a table or key stands in the file's text, for messages (TOML has no
    positions once parsed)."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()

    def table(self, name: str) -> int:
        pattern = re.compile(rf"^\s*\[\s*\"?{re.escape(name)}\"?\s*\]")
        return self._find(pattern, 0, len(self._lines)) or 1

    def key(self, table: str | None, key: str) -> int:
        start, end = 0, len(self._lines)
        if table is None:
            end = next(
                (i for i, line in enumerate(self._lines) if line.lstrip().startswith("[")), end
            )
        else:
            start = self.table(table)
            end = next(
                (i for i in range(start, end) if self._lines[i].lstrip().startswith("[")), end
            )
        pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        return self._find(pattern, start, end) or start + 1

    def _find(self, pattern: re.Pattern[str], start: int, end: int) -> int | None:
        for i in range(start, end):
            if pattern.match(self._lines[i]):
                return i + 1
        return None


# -- `sfs config` -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    key: str
    value: Any
    #: "command line", "SFS_X", "FILE, line N" or "default"
    source: str


def settings_in_force(
    command: click.Command, ctx: click.Context, config: ConfigFile, environ: Mapping[str, str]
) -> list[Setting]:
    """Each option of ``command`` with the value it would have if run now without
    options (as given, before the option converts it), and where it comes from."""
    assert command.name is not None
    sub = command.make_context(command.name, [], parent=ctx, resilient_parsing=True)
    settings = []
    for param in settings_of(command):
        assert param.name is not None
        source = sub.get_parameter_source(param.name)
        value = sub.params.get(param.name)
        if source is ParameterSource.ENVIRONMENT:
            names = [param.envvar] if isinstance(param.envvar, str) else param.envvar or []
            where = next((n for n in names if environ.get(n)), names[0] if names else "")
            value = environ.get(where, value) if not param.multiple else value
        elif source is ParameterSource.DEFAULT_MAP:
            where = f"{config.path}, line {config.line_of(command.name, param.name)}"
            value = config.values[command.name][param.name][0]
        else:
            where = "default"
            # As given, before the option's callback (--streams: "auto", not None).
            value = param.get_default(sub)
        if value is _UNSET or value is None:  # click 8.3 and later: UNSET, not None
            # A repeatable option is an empty list ([] in TOML) on every click.
            value = () if param.multiple else None
        settings.append(Setting(option_key(param), value, where))
    return settings


#: click 8.3 and later give an option with no default this sentinel, not None.
_UNSET: Any = getattr(click.core, "UNSET", object())


def show_value(value: Any) -> str:
    """A value as TOML would write it, with any password in a URL hidden."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    if value is None:
        return "(not set)"
    import json

    return json.dumps(hide_password(str(value)))


def hide_password(text: str) -> str:
    """``redis://:secret@host`` -> ``redis://:***@host``; ``turn:user:pw@host`` ->
    ``turn:user:***@host``: what is between the last ``:`` and ``@`` of the part
    before the host."""
    return re.sub(r"^([a-z][a-z0-9+.-]*:(?://)?[^:@/]*:)[^@]*@", r"\1***@", text)
