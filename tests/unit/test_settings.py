"""Settings from the command line, the environment and the config file, and `sfs config`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from sfs import settings as sfs_settings
from sfs.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env or {})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(autouse=True)
def no_settings_from_this_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the user's config file nor SFS_ variables of the shell that runs the tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in list(os.environ):
        if name.startswith("SFS_"):
            monkeypatch.delenv(name)


def config_lines(output: str, command: str) -> dict[str, tuple[str, str]]:
    """`sfs config`'s section for ``command``: key -> (value, source)."""
    section = output.split(f"[{command}]\n", 1)[1].split("\n\n", 1)[0]
    found = {}
    for line in section.splitlines():
        setting, _, source = line.partition(" # ")
        setting = setting.strip()
        if setting.startswith("# "):
            found[setting[2:].split(" ", 1)[0]] = ("", source.strip())
        else:
            key, _, value = setting.partition(" = ")
            found[key] = (value, source.strip())
    return found


def test_every_option_of_every_command_has_its_sfs_variable_shown_in_help() -> None:
    for name, command in main.commands.items():
        for param in sfs_settings.settings_of(command):
            key = sfs_settings.option_key(param)
            variable = "SFS_" + key.upper().replace("-", "_")
            envvars = [param.envvar] if isinstance(param.envvar, str) else param.envvar
            assert envvars, (name, key, envvars)
            assert envvars[0] == variable, (name, key, envvars)
        code, out, _ = run(name, "--help", env={"COLUMNS": "200"})
        assert code == 0
        for param in sfs_settings.settings_of(command):
            assert f"SFS_{sfs_settings.option_key(param).upper().replace('-', '_')}" in out


def test_older_variable_names_still_work(tmp_path: Path) -> None:
    code, out, _ = run("config", "receive", env={"SFS_CA_BUNDLE": __file__})
    assert code == 0, out
    assert config_lines(out, "receive")["cacert"][1] == "SFS_CA_BUNDLE"


def test_precedence_command_line_then_environment_then_file_then_default(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        'server = "http://file.example:5000"\n'
        "chunk-size = 1000\n"
        "[send]\n"
        "chunk-size = 2000\n"
        'transport = "tcp"\n'
        "no-compress = true\n"
    )
    code, out, err = run("--config", str(path), "config", env={"SFS_TRANSPORT": "datachannel"})
    assert code == 0, err
    send = config_lines(out, "send")
    assert send["chunk-size"] == ("2000", f"{path}, line 4")  # the [send] table over the top
    assert send["transport"] == ('"datachannel"', "SFS_TRANSPORT")  # environment over file
    assert send["no-compress"] == ("true", f"{path}, line 6")
    assert send["server"] == ('"http://file.example:5000"', f"{path}, line 1")
    assert send["verify"] == ("false", "default")
    assert send["streams"] == ('"auto"', "default")
    receive = config_lines(out, "receive")
    assert receive["server"][1] == f"{path}, line 1"  # top-level keys: every command with it
    assert "chunk-size" not in receive


def test_the_values_reach_the_command(tmp_path: Path) -> None:
    """What the command gets: the command line over the environment over the file."""
    path = tmp_path / "config.toml"
    path.write_text("[serve]\nport = 1111\nmax-connections = 7\nhost = '127.0.0.9'\n")
    seen: dict[str, object] = {}

    @click.command()
    @click.option("--port", type=int, default=5000)
    @click.option("--max-connections", type=int, default=10)
    @click.option("--host", default="0.0.0.0")
    def serve(port: int, max_connections: int, host: str) -> None:
        seen.update(port=port, max_connections=max_connections, host=host)

    group = click.Group("sfs", commands={"serve": serve}, callback=main.callback)
    group.params = list(main.params)
    sfs_settings.name_env_vars(group)
    result = CliRunner().invoke(
        group, ["--config", str(path), "serve", "--host", "127.0.0.1"], env={"SFS_PORT": "2222"}
    )
    assert result.exit_code == 0, result.output
    assert seen == {"port": 2222, "max_connections": 7, "host": "127.0.0.1"}


def test_the_default_file_is_under_xdg_config_home(tmp_path: Path) -> None:
    folder = tmp_path / "xdg" / "sfs"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text("[receive]\nyes = true\n")
    code, out, _ = run("config", "receive")
    assert code == 0
    assert out.startswith(f"# config file: {folder / 'config.toml'}\n")
    assert config_lines(out, "receive")["yes"] == ("true", f"{folder / 'config.toml'}, line 2")
    code, out, _ = run("config", "--path")
    assert out.strip() == str(folder / "config.toml")


def test_no_file_is_fine_unless_named(tmp_path: Path) -> None:
    code, out, _ = run("config")
    assert code == 0
    assert "not there" in out.splitlines()[0]
    code, _, err = run("--config", str(tmp_path / "missing.toml"), "config")
    assert code == 2
    assert err.strip().splitlines() == [
        f"Error: the config file {tmp_path / 'missing.toml'} does not exist"
    ]


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("server = \n", 1, "invalid value"),
        ("[send]\nstreams = 2\nstreams = 3\n", 3, "cannot overwrite a value"),
        ("[sned]\nstreams = 2\n", 1, "[sned] is not an sfs command"),
        ("[send]\nverify = true\nstream = 2\n", 3, "`sfs send` has no --stream"),
        ("colour = true\n", 1, "no command has --colour"),
        ("[send]\n\nchunk-size = 'big'\n", 3, "--chunk-size: 'big' is not a valid integer"),
        ("[send]\nstreams = 99\n", 2, "--streams: '99': give auto or a number from 1 to 8"),
        ("[receive]\nserver = 'ftp://x'\n", 2, "--server: 'ftp://x' is not an http:// or"),
        ("[receive]\ntransport = 'carrier-pigeon'\n", 2, "--transport: 'carrier-pigeon' is not"),
        ("[send]\nserver = { url = 'x' }\n", 2, "--server takes a value, not a table"),
    ],
)
def test_a_bad_file_is_one_line_naming_file_and_line(
    tmp_path: Path, text: str, line: int, says: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    code, out, err = run("--config", str(path), "send", "ABC-123-able-acid", "f")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"Error: {path}, line {line}: "), lines[0]
    assert says in lines[0], lines[0]


def test_a_file_that_is_not_utf8_or_not_readable(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"server = '\xff'\n")
    code, _, err = run("--config", str(path), "config")
    assert code == 2
    assert err.startswith(f"Error: cannot read the config file {path}")
    code, _, err = run("--config", str(tmp_path), "config")
    assert code == 2


def test_paths_in_the_file_expand_the_home_folder(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[receive]\noutput = '~/Downloads'\n")
    _code, out, _ = run("--config", str(path), "config", "receive")
    assert config_lines(out, "receive")["output"][0] == f'"{Path.home() / "Downloads"}"'


def test_repeatable_options_take_a_list_or_one_value(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[serve]\nstun = ['stun:a.example:3478', 'stun:b.example']\n"
                    "[send]\nice-server = 'stun:c.example'\n")  # fmt: skip
    code, out, err = run("--config", str(path), "config")
    assert code == 0, err
    assert config_lines(out, "serve")["stun"][0] == '["stun:a.example:3478", "stun:b.example"]'
    assert config_lines(out, "send")["ice-server"][0] == '["stun:c.example"]'


def test_passwords_in_urls_are_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[send]\nice-server = 'turn:alice:s3cret@turn.example:3478'\n")
    code, out, _ = run(
        "--config", str(path), "config", env={"SFS_REDIS": "redis://:hunter2@redis.example:6379/0"}
    )
    assert code == 0
    assert "s3cret" not in out
    assert "hunter2" not in out
    assert '"turn:alice:***@turn.example:3478"' in out
    assert '"redis://:***@redis.example:6379/0"' in out


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://user:pw@host", "rediss://user:***@host"),
        ("turn:user:pw@host:3478?transport=udp", "turn:user:***@host:3478?transport=udp"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("stun:host:3478", "stun:host:3478"),
        ("just text", "just text"),
    ],
)
def test_hide_password(text: str, shown: str) -> None:
    assert sfs_settings.hide_password(text) == shown


@settings(max_examples=int(os.environ.get("SETTINGS_FUZZ_EXAMPLES", "60")), deadline=None)
@given(
    key=st.sampled_from(["chunk-size", "streams", "port", "yes", "output", "connect-timeout"]),
    value=st.one_of(
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True),
        st.booleans(),
        st.text(max_size=20),
        st.lists(st.integers(), max_size=3),
    ),
)
def test_any_value_is_taken_or_refused_in_one_line(key: str, value: object) -> None:
    import json
    import tempfile

    literal = (
        json.dumps(value)
        if not isinstance(value, bool | float)
        else str(value).lower().replace("infinity", "inf")
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_text(f"{key} = {literal}\n")
        code, _, err = run("--config", str(path), "config")
    assert code in (0, 2), err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
        assert re.match(rf"Error: {re.escape(str(path))}, line 1: ", err), err


def test_connect_timeout_from_the_file_counts_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the LAN a --connect-timeout given also bounds the search; given in the file or
    the environment, it is given too."""
    from sfs.commands import receive

    seen = {}

    def fake_peer_options(*args: object, **kwargs: object) -> None:
        ctx = click.get_current_context()
        seen["source"] = ctx.get_parameter_source("connect_timeout")
        raise SystemExit(0)

    path = tmp_path / "config.toml"
    path.write_text("connect-timeout = 12\n")
    monkeypatch.setattr(receive, "_peer_options", fake_peer_options)
    result = CliRunner().invoke(main, ["--config", str(path), "receive", "--yes"])
    assert result.exit_code == 0, result.output
    assert seen["source"] is click.core.ParameterSource.DEFAULT_MAP


def test_sfs_config_runs_as_a_process(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[peers]\nonce = 2\n")
    done = subprocess.run(
        [sys.executable, "-m", "sfs", "config", "peers"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SFS_CONFIG": str(path), "SFS_VERBOSE": "2"},
    )
    assert done.returncode == 0, done.stderr
    lines = config_lines(done.stdout, "peers")
    assert lines["once"] == ("2", f"{path}, line 2")
    assert lines["verbose"] == ('"2"', "SFS_VERBOSE")


@pytest.mark.parametrize("value", ["0", "9", "two", "-1", "1.5", ""])
def test_a_bad_streams_value_is_a_usage_error(value: str) -> None:
    code, out, err = run("send", "--streams", value, "ABC-123-able-acid", __file__)
    assert code == 2
    assert out == ""
    assert "--streams" in err
    assert "give auto or a number from 1 to 8" in err


@pytest.mark.parametrize("value", ["auto", "1", "8"])
def test_good_streams_values_pass_the_check(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sfs.commands import send

    seen = {}

    def stop(*args: object, **kwargs: object) -> None:
        seen["streams"] = click.get_current_context().params["streams"]
        raise SystemExit(0)

    monkeypatch.setattr(send, "_peer_options", stop)
    code, _, err = run("send", "--streams", value, "ABC-123-able-acid", __file__)
    assert code == 0, err
    assert seen["streams"] == (None if value == "auto" else int(value))


# -- local input: what --config reads, and one check for every source (issue 22 item 8) ---------


def sfs_process(
    *args: str, env: dict[str, str] | None = None, memory_bytes: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`sfs ARGS` as a process, with no settings of this machine; ``memory_bytes``
    caps its address space (RLIMIT_AS), so a read without bound fails fast instead
    of growing."""
    import resource

    def limit() -> None:
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    base = {k: v for k, v in os.environ.items() if not k.startswith("SFS_")}
    return subprocess.run(
        [sys.executable, "-m", "sfs", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**base, "XDG_CONFIG_HOME": "/nonexistent", **(env or {})},
        preexec_fn=limit,
    )


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("/dev/zero", "is not a regular file"),
        ("fifo", "is not a regular file"),
        ("big.toml", "is larger than 1 MiB"),
    ],
)
def test_the_config_file_is_a_regular_file_of_at_most_1_mib_or_refused_at_once(
    tmp_path: Path, name: str, says: str
) -> None:
    """/dev/zero used to be read without end (over 1 GiB in 0.7 s), and a FIFO hung
    in open(): here the process has 1 GiB of address space and 30 s."""
    if name == "fifo":
        os.mkfifo(tmp_path / name)  # nobody ever writes to it
    elif name == "big.toml":
        # Valid TOML all along, so only the size can refuse it.
        (tmp_path / name).write_text("# " + "x" * 2 * 1024 * 1024 + "\n")
    path = name if name.startswith("/") else str(tmp_path / name)
    done = sfs_process("config", env={"SFS_CONFIG": path}, memory_bytes=1024**3)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"Error: the config file {path} {says}"]
    assert done.stdout == ""


def test_a_config_file_of_exactly_1_mib_is_read(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    line = "[send]\nchunk-size = 1000\n"
    path.write_text(line + "#" * (sfs_settings.MAX_CONFIG_BYTES - len(line) - 1) + "\n")
    assert path.stat().st_size == sfs_settings.MAX_CONFIG_BYTES
    code, out, err = run("--config", str(path), "config", "send")
    assert code == 0, err
    assert config_lines(out, "send")["chunk-size"] == ("1000", f"{path}, line 2")


@pytest.mark.parametrize("opening", ["[", "{a="])
def test_a_config_file_nested_100_000_deep_is_one_line_and_exit_2(
    tmp_path: Path, opening: str
) -> None:
    """It used to end in a RecursionError traceback from tomllib."""
    closing = "]" if opening == "[" else "}"
    path = tmp_path / "deep.toml"
    path.write_text("server = " + opening * 100_000 + "1" + closing * 100_000 + "\n")
    done = sfs_process("--config", str(path), "config")
    assert "Traceback" not in done.stderr
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"Error: {path}: values are nested too deeply"]


def test_a_list_of_lists_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[send]\nice-server = [['stun:a.example']]\n")
    code, _, err = run("--config", str(path), "config")
    assert code == 2
    assert err.splitlines() == [
        f"Error: {path}, line 2: --ice-server takes a list of values, not of lists"
    ]


_SECONDS = [
    ("send", "connect-timeout"),
    ("receive", "connect-timeout"),
    ("check", "connect-timeout"),
    ("peers", "once"),
    ("serve", "header-timeout"),
    ("serve", "pairing-timeout"),
    ("serve", "redis-ttl"),
]


@pytest.mark.parametrize(("command", "key"), _SECONDS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-5"])
@pytest.mark.parametrize("source", ["command line", "environment", "file"])
def test_nan_inf_and_negative_seconds_are_refused_from_every_source(
    tmp_path: Path, command: str, key: str, value: str, source: str
) -> None:
    """`connect-timeout = nan` in the file was taken (click's FloatRange takes nan);
    `sfs config` took any SFS_ value. One check now, whatever the source."""
    variable = "SFS_" + key.upper().replace("-", "_")
    if source == "command line":
        args = [command, f"--{key}", value]
        if command in ("send", "receive"):
            args += ["--server", "http://127.0.0.1:9"]
        args += {"send": ["ABC-123-able-acid", __file__], "check": ["--server", "http://x"]}.get(
            command, []
        )
        code, out, err = run(*args)
    elif source == "environment":
        code, out, err = run("config", command, env={variable: value})
    else:
        path = tmp_path / "config.toml"
        path.write_text(f"[{command}]\n{key} = {value}\n")
        code, out, err = run("--config", str(path), "config", command)
    assert code == 2, (out, err)
    assert out == ""
    last = err.strip().splitlines()[-1]
    assert f"--{key}" in last, err
    if source == "file":
        assert len(err.strip().splitlines()) == 1
        assert last.startswith(f"Error: {path}, line 2:")
    if source == "environment":
        assert err.strip().splitlines() == [last]
        assert last.startswith(f"Error: {variable}: ")


def test_finite_seconds_from_every_source_are_taken(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[serve]\nheader-timeout = 2.5\nredis-ttl = 30\n")
    code, out, err = run("--config", str(path), "config", "serve", env={"SFS_JOIN_TIMEOUT": "1e2"})
    assert code == 0, err
    serve = config_lines(out, "serve")
    assert serve["header-timeout"] == ("2.5", f"{path}, line 2")
    assert serve["redis-ttl"] == ("30", f"{path}, line 3")
    assert serve["join-timeout"] == ('"1e2"', "SFS_JOIN_TIMEOUT")


def test_sfs_config_refuses_what_the_commands_refuse_from_the_environment() -> None:
    """`SFS_TRANSPORT=x sfs config` exited 0 while every command refused it."""
    done = sfs_process("config", env={"SFS_TRANSPORT": "x"})
    assert done.returncode == 2, done.stdout
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "Error: SFS_TRANSPORT: --transport: 'x' is not one of 'auto', 'tcp', 'datachannel'."
    ]
    # The command itself: the same refusal (click's wording), exit 2.
    code, _, err = run("send", "ABC-123-able-acid", __file__, env={"SFS_TRANSPORT": "x"})
    assert code == 2
    assert "'x' is not one of 'auto', 'tcp', 'datachannel'" in err
    # A command without that option is not concerned.
    code, _, err = run("config", "serve", env={"SFS_TRANSPORT": "x"})
    assert code == 0, err


def test_options_without_a_default_show_as_not_set() -> None:
    """click 8.3 and later give them a sentinel: `cacert = "Sentinel.UNSET"` was shown."""
    code, out, err = run("config")
    assert code == 0, err
    assert "Sentinel" not in out
    assert "UNSET" not in out
    send = config_lines(out, "send")
    assert send["cacert"] == ("", "default")
    assert send["ice-server"] == ("[]", "default")


def test_sfs_config_output_is_a_valid_config_file_that_round_trips(tmp_path: Path) -> None:
    """README: a section of `sfs config` can go into the config file as it is.  The whole
    output, read back, gives every command the same values, now from the file (run
    with the newest click allowed, and again by scripts/test with the oldest)."""
    code, shown, err = run("config")
    assert code == 0, err
    path = tmp_path / "config.toml"
    path.write_text(shown)
    code, again, err = run("--config", str(path), "config")
    assert code == 0, err
    for command in ("check", "peers", "receive", "send", "serve"):
        before, after = config_lines(shown, command), config_lines(again, command)
        assert before.keys() == after.keys(), command
        for key, (value, _) in before.items():
            assert after[key][0] == value, (command, key)
            if value:  # a value that is set comes from the file now
                assert after[key][1].startswith(str(path)), (command, key, after[key])
    # And every command takes the file as it is.
    for command in ("send", "receive", "serve", "peers", "check"):
        code, _, err = run("--config", str(path), command, "--help")
        assert code == 0, (command, err)
