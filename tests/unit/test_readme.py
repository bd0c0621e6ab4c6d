"""README.md's option tables against the commands themselves, so they cannot drift:
every option a command has is in its table with its environment variable, and the
table lists no option the command does not have."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from sfs import settings
from sfs.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
#: A row that refers to another command's table for these options.
AS_FOR = re.compile(r"as for `(\w+)`")


def option_tables() -> dict[str, list[tuple[list[str], list[str], str]]]:
    """command -> rows of its option table: (options, environment variables, meaning)."""
    tables: dict[str, list[tuple[list[str], list[str], str]]] = {}
    command = None
    fenced = False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced:
            continue
        heading = re.match(r"#{2,4} `sfs (\w+)", line)
        if heading:
            command = heading.group(1)
            continue
        if line.startswith("#"):
            command = None
            continue
        if command is None or not line.startswith("| `-"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        options = re.findall(r"`(--?[a-zA-Z0-9][a-zA-Z0-9-]*)", cells[0])
        options += re.findall(r"`(?:--?[a-zA-Z0-9-]+ [^`]*?), (--?[a-zA-Z0-9-]+)", cells[0])
        envs = re.findall(r"SFS_[A-Z0-9_]+", cells[1]) if len(cells) > 2 else []
        tables.setdefault(command, []).append((options, envs, cells[-1]))
    return tables


def documented(command: str) -> dict[str, list[str]]:
    """option -> the environment variables its row names (following "as for")."""
    found: dict[str, list[str]] = {}
    for options, envs, meaning in option_tables().get(command, []):
        other = AS_FOR.search(meaning)
        for option in options:
            if other and not envs:
                found[option] = documented(other.group(1)).get(option, [])
            else:
                found[option] = envs
    return found


def names_of(param: click.Parameter) -> list[str]:
    return [*param.opts, *param.secondary_opts]


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_option_is_in_readme_with_its_variable(name: str) -> None:
    command = main.commands[name]
    table = documented(name)
    assert table, f"README.md has no option table for `sfs {name}`"
    for param in settings.settings_of(command):
        opts = names_of(param)
        rows = [o for o in opts if o in table]
        assert rows, f"README.md: `sfs {name}` table lacks {'/'.join(opts)}"
        variable = settings.env_name(param)
        assert variable in table[rows[0]], (
            f"README.md: `sfs {name}` {rows[0]} row does not name {variable}"
        )


@pytest.mark.parametrize("name", sorted(main.commands))
def test_readme_lists_no_option_the_command_lacks(name: str) -> None:
    command = main.commands[name]
    real = {opt for param in command.params for opt in names_of(param)}
    for option in documented(name):
        assert option in real, f"README.md: `sfs {name}` has no {option}"


def test_the_parser_reads_the_tables() -> None:
    """The check above is only as good as the parse: it finds the known rows."""
    receive = documented("receive")
    assert receive["--output"] == ["SFS_OUTPUT"]
    assert receive["-o"] == ["SFS_OUTPUT"]
    assert "SFS_TRANSPORT" in receive["--transport"]
    assert documented("send")["--server"] == receive["--server"]  # "as for `receive`"


@pytest.mark.parametrize("name", sorted(main.commands))
def test_each_help_has_examples_and_points_to_readme(name: str) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(main, [name, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    examples = result.output.split("Examples:\n", 1)[1]
    assert f"sfs {name}" in examples.splitlines()[0]
    assert "README.md" in examples
