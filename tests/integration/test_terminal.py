"""Terminal manners, with real `sfs` processes on a real pseudo-terminal or a pipe:
colour only on a terminal and never with NO_COLOR or TERM=dumb, --quiet leaves stderr
empty on success, bars only on a terminal and never in piped stdout, lines that fit a
narrow terminal, and Ctrl-C that leaves exactly one line and no bar behind."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
from pathlib import Path

import pytest

from sfs.peer.files.partial import part_path
from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    ServerProcess,
    peer_env,
    read_line_matching,
    sfs_command,
    sha256_file,
    stop_process,
)
from tests.integration.peers import CODE_RE, make_file, run_sfs, start_receiver

ESC = "\x1b"
_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def render(output: str, columns: int | None = None) -> list[str]:
    """The lines a terminal shows for ``output``: a carriage return goes back to the
    start of the line and what follows overwrites it; styles are dropped. With
    ``columns``, a character written past the last column wraps to a new line, as a
    terminal does (a carriage return cannot go back up to the line left behind);
    without, lines are as long as they come, for the tests to check their width."""
    lines: list[list[str]] = [[]]
    column = 0
    for char in _CSI.sub("", output):
        if char == "\r":
            column = 0
        elif char == "\n":
            lines.append([])
            column = 0
        else:
            if columns is not None and column == columns:
                lines.append([])
                column = 0
            line = lines[-1]
            if column < len(line):
                line[column] = char
            else:
                line.append(char)
            column += 1
    return ["".join(line).rstrip() for line in lines if "".join(line).strip()]


class Terminal:
    """A pseudo-terminal of ``columns`` columns whose output is read as it comes (a
    process writing to a full one would block)."""

    def __init__(self, columns: int = 80) -> None:
        self.controller, self.terminal = pty.openpty()
        fcntl.ioctl(self.terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.controller, 65536)
            except OSError:  # EIO: every process holding the terminal ended
                return
            if not data:
                return
            self._chunks.append(data)

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")

    def close_ours(self) -> None:
        """Once the processes have it: the reader then ends when they do."""
        os.close(self.terminal)

    def finish(self) -> str:
        self._reader.join(PROCESS_TIMEOUT_SECONDS)
        os.close(self.controller)
        return self.text()


def terminal_env(server: ServerProcess, **extra: str) -> dict[str, str]:
    env = peer_env(server.url)
    for name in ("NO_COLOR", "COLUMNS", "LINES"):
        env.pop(name, None)
    env["TERM"] = "xterm-256color"
    env.update(extra)
    return env


def _take_the_terminal() -> None:
    """In the child, a session leader: stdin, the terminal, becomes its controlling
    terminal, so Ctrl-C typed there is SIGINT to it (and is echoed as ``^C``)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def send_on_terminal(
    server: ServerProcess,
    tty: Terminal,
    *args: str,
    env: dict[str, str] | None = None,
    controlling: bool = False,
) -> subprocess.Popen[bytes]:
    """`sfs send ARGS` with stderr on the terminal and stdout on a pipe; with
    ``controlling``, stdin too, as the process's controlling terminal."""
    process = subprocess.Popen(
        sfs_command("send", "--name", "tester", *args),
        stdin=tty.terminal if controlling else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=tty.terminal,
        env=env or terminal_env(server),
        start_new_session=controlling,
        preexec_fn=_take_the_terminal if controlling else None,
    )
    tty.close_ours()
    return process


# -- colour --------------------------------------------------------------------------------


def _error_on_terminal(server: ServerProcess, tmp_path: Path, **env: str) -> str:
    src = make_file(tmp_path / "f.bin", 10)
    tty = Terminal()
    process = send_on_terminal(
        server, tty, "ZZZ-000-tiger-lamp", str(src), env=terminal_env(server, **env)
    )
    assert process.wait(PROCESS_TIMEOUT_SECONDS) == 4
    return tty.finish()


def test_error_is_red_on_a_terminal(sfs_server: ServerProcess, tmp_path: Path) -> None:
    shown = _error_on_terminal(sfs_server, tmp_path)
    assert re.search(r"\x1b\[31m(\x1b\[1m)?Error:\x1b\[0m No receiver is waiting", shown)
    assert render(shown)[-1].startswith("Error: No receiver is waiting")


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {"TERM": "dumb"}], ids=["NO_COLOR", "dumb"])
def test_no_colour_with_no_color_or_a_dumb_terminal(
    sfs_server: ServerProcess, tmp_path: Path, env: dict[str, str]
) -> None:
    shown = _error_on_terminal(sfs_server, tmp_path, **env)
    assert "Error: No receiver is waiting" in shown
    assert ESC not in shown


def test_an_empty_no_color_leaves_colour_on(sfs_server: ServerProcess, tmp_path: Path) -> None:
    # no-color.org: "when present and not an empty string".
    assert f"{ESC}[31m" in _error_on_terminal(sfs_server, tmp_path, NO_COLOR="")


def test_no_colour_and_no_bar_in_pipes(sfs_server: ServerProcess, tmp_path: Path) -> None:
    src = make_file(tmp_path / "a.bin", 3 * 1024 * 1024)
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes")
    sent = run_sfs("send", receiver.code, str(src), env=terminal_env(sfs_server))
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr + received.stderr
    assert received.returncode == 0, sent.stderr + received.stderr
    for text in (sent.stdout, sent.stderr, received.stdout, received.stderr):
        assert ESC not in text, text
        assert "\r" not in text, text


# -- --quiet ---------------------------------------------------------------------------------


def test_quiet_leaves_stderr_empty_and_the_output_on_stdout(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "a.bin", 200_000)
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes", "--quiet")
    sent = run_sfs("send", "--quiet", receiver.code, str(src), env=terminal_env(sfs_server))
    received = receiver.finish()
    assert (sent.returncode, received.returncode) == (0, 0), sent.stderr + received.stderr
    assert sent.stderr == ""
    assert received.stderr == ""
    assert re.fullmatch(r"Sent a\.bin \(200\.0 kB\) in .*\n", sent.stdout)
    # After the `Code:` line (which start_receiver read): the final line alone.
    assert re.fullmatch(r"Received a\.bin \(200\.0 kB\) in .*\n", received.stdout)
    assert sha256_file(tmp_path / "out" / "a.bin") == sha256_file(src)


def test_quiet_text_message_is_the_whole_output(sfs_server: ServerProcess, tmp_path: Path) -> None:
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes", "--quiet")
    sent = run_sfs(
        "send", "--quiet", receiver.code, "--text", "hello\n", env=terminal_env(sfs_server)
    )
    received = receiver.finish()
    assert (sent.returncode, received.returncode) == (0, 0), sent.stderr + received.stderr
    assert received.stdout == "hello\n"  # after the `Code:` line
    assert received.stderr == ""
    assert sent.stderr == ""


# -- bars and widths -------------------------------------------------------------------------


LONG_NAME = "a-rather-long-file-name-that-will-not-fit-in-forty-columns-at-all.bin"


def test_bar_on_a_narrow_terminal_and_never_in_piped_stdout(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    src = make_file(tmp_path / LONG_NAME, 8 * 1024 * 1024)
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes", "--quiet")
    tty = Terminal(columns=40)
    sender = send_on_terminal(
        sfs_server, tty, "--transport", "datachannel", "--chunk-size", "4096", receiver.code,
        str(src),
    )  # fmt: skip
    stdout, _ = sender.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
    shown = tty.finish()
    assert sender.returncode == 0, shown
    assert receiver.finish().returncode == 0
    assert "%|" in shown, shown  # a bar was drawn on the terminal...
    assert all(len(line) <= 40 for line in render(shown)), render(shown)
    assert re.search(r"a-rather-\S*…:\s+\d+%\|", shown)  # ...its name cut with an ellipsis
    # ...and stdout, a pipe, got the final line alone.
    assert re.fullmatch(rb"Sent a-rather-long-file-name-\S+ \(8\.4 MB\) in .*\n", stdout)


def test_offer_listing_fits_columns(sfs_server: ServerProcess, tmp_path: Path) -> None:
    names = [f"{i}-{LONG_NAME}" for i in range(3)]
    sources = [str(make_file(tmp_path / name, 10)) for name in names]
    env = terminal_env(sfs_server, COLUMNS="40")
    out = tmp_path / "out"
    out.mkdir()
    stderr_path = tmp_path / "receiver.err"
    with open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            sfs_command("receive", "--output", str(out), "--yes"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
    try:
        assert process.stdout is not None
        code = re.search(rb"Code: (\S+)", process.stdout.readline())
        assert code is not None
        sent = run_sfs("send", code.group(1).decode(), *sources, env=env)
        assert sent.returncode == 0, sent.stderr
        assert process.wait(PROCESS_TIMEOUT_SECONDS) == 0
    finally:
        stop_process(process)
    listing = [line for line in stderr_path.read_text().splitlines() if line.startswith("  ")]
    assert len(listing) == 3, stderr_path.read_text()
    assert all(len(line) <= 40 and line.endswith("10 B") and "…" in line for line in listing)


def test_status_lines_print_above_a_live_bar(sfs_server: ServerProcess, tmp_path: Path) -> None:
    """A receiver of several files says `Saved PATH` for each while the overall bar is
    on the terminal: each line goes above the bar, which is drawn again below it."""
    sources = [str(make_file(tmp_path / f"f{i}.bin", 2 * 1024 * 1024)) for i in range(3)]
    tty = Terminal()
    receiver, code = receive_on_terminal(sfs_server, tty, tmp_path / "out", "--yes")
    sent = run_sfs("send", code, *sources, env=peer_env(sfs_server.url))
    receiver.wait(PROCESS_TIMEOUT_SECONDS)
    shown = tty.finish()
    assert sent.returncode == 0, sent.stderr
    assert receiver.returncode == 0, shown
    for i in range(3):
        assert f"Saved {tmp_path / 'out' / f'f{i}.bin'}" in shown, shown


# -- Ctrl-C ----------------------------------------------------------------------------------


def receive_on_terminal(
    server: ServerProcess, tty: Terminal, out: Path, *args: str
) -> tuple[subprocess.Popen[bytes], str]:
    """`sfs receive ARGS` with stderr on the terminal and stdout on a pipe; its code."""
    out.mkdir(exist_ok=True)
    process = subprocess.Popen(
        sfs_command("receive", "--output", str(out), *args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=tty.terminal,
        env=terminal_env(server),
    )
    tty.close_ours()
    return process, read_line_matching(process, CODE_RE).group(1)


def _wait_for_a_bar(tty: Terminal, process: subprocess.Popen[bytes]) -> None:
    waited = threading.Event()
    for _ in range(int(PROCESS_TIMEOUT_SECONDS / 0.05)):
        if "%|" in tty.text():
            return
        assert process.poll() is None, tty.text()
        waited.wait(0.05)
    raise AssertionError(f"no progress bar: {tty.text()!r}")


def _wait_for_bytes_on_disk(out: Path, name: str, process: subprocess.Popen[bytes]) -> None:
    """Until the partial copy of ``name`` holds file data: its record (written first,
    with something in it) does not count (a CI run once interrupted the receiver
    between the two, and rightly no partial copy was kept)."""
    waited = threading.Event()
    part = part_path(out / name)
    for _ in range(int(PROCESS_TIMEOUT_SECONDS / 0.05)):
        if part.is_file() and part.stat().st_size:
            return
        assert process.poll() is None, "the receiver ended before writing anything"
        waited.wait(0.05)
    raise AssertionError(f"nothing written into {out}")


@pytest.mark.parametrize("interrupted", ["sender", "receiver", "sender-keypress"])
def test_ctrl_c_clears_the_bar_and_prints_one_line(
    sfs_server: ServerProcess, tmp_path: Path, interrupted: str
) -> None:
    """SIGINT, or Ctrl-C typed on the terminal (which echoes ``^C`` over the bar)."""
    src = make_file(tmp_path / "big.bin", 96 * 1024 * 1024)
    tty = Terminal()
    other: subprocess.Popen[bytes] | None = None
    if interrupted.startswith("sender"):
        receiver = start_receiver(sfs_server, tmp_path / "out", "--yes", "--quiet")
        other = receiver.process
        victim = send_on_terminal(
            sfs_server, tty, "--transport", "datachannel", "--chunk-size", "1024",
            receiver.code, str(src), controlling=interrupted == "sender-keypress",
        )  # fmt: skip
    else:
        victim, code = receive_on_terminal(sfs_server, tty, tmp_path / "out", "--yes")
        other = subprocess.Popen(
            sfs_command("send", "--quiet", "--transport", "datachannel", "--chunk-size",
                        "1024", code, str(src)),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=terminal_env(sfs_server),
        )  # fmt: skip
    try:
        _wait_for_a_bar(tty, victim)
        if interrupted == "receiver":
            # The bar shows bytes received; the line under test names a partial copy
            # only once some are on disk (under load, a CI run was quicker than that).
            _wait_for_bytes_on_disk(tmp_path / "out", src.name, victim)
        if interrupted == "sender-keypress":
            os.write(tty.controller, b"\x03")
        else:
            victim.send_signal(signal.SIGINT)
        victim.wait(PROCESS_TIMEOUT_SECONDS)
        shown = tty.finish()
        other.wait(PROCESS_TIMEOUT_SECONDS)
    finally:
        stop_process(victim)
        stop_process(other)
    assert victim.returncode == 130, shown
    assert "Traceback" not in shown
    lines = render(shown, columns=80)
    assert not any("%|" in line or "B/s" in line or "^C" in line for line in lines), lines
    # One line: "Interrupted." and, with a partial copy kept, what to do about it.
    # The last row, or rows: a line longer than the terminal wraps (and only it).
    last = [i for i, line in enumerate(lines) if line.startswith("Interrupted.")]
    assert len(last) == 1, lines
    said = "".join(lines[last[0] :]).replace(" ", "")  # render() strips a row's end
    assert sum("Interrupted" in line for line in lines) == 1
    assert not any(line.startswith("Kept ") for line in lines), lines
    if interrupted == "receiver":  # the line says so: no "Kept ..." line before it
        message = "Interrupted. Nothing is under the final name; the partial copy is kept"
        assert said.startswith(message.replace(" ", "")), lines
        assert said.endswith("resumesit."), lines
    else:
        assert said == "Interrupted.", lines


def test_ctrl_c_at_the_prompt_ends_its_line_first(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "a.txt", 5)
    tty = Terminal()
    out = tmp_path / "out"
    out.mkdir()
    receiver = subprocess.Popen(
        sfs_command("receive", "--output", str(out)),
        stdin=tty.terminal,
        stdout=subprocess.PIPE,
        stderr=tty.terminal,
        env=terminal_env(sfs_server),
    )
    tty.close_ours()
    code = read_line_matching(receiver, CODE_RE).group(1)
    sender = subprocess.Popen(
        sfs_command("send", "--quiet", code, str(src)),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=terminal_env(sfs_server),
    )  # fmt: skip
    try:
        waited = threading.Event()
        for _ in range(int(PROCESS_TIMEOUT_SECONDS / 0.05)):
            if "[y/N]" in tty.text():
                break
            waited.wait(0.05)
        receiver.send_signal(signal.SIGINT)
        receiver.wait(PROCESS_TIMEOUT_SECONDS)
        sender.wait(PROCESS_TIMEOUT_SECONDS)
        shown = tty.finish()
    finally:
        stop_process(receiver)
        stop_process(sender)
    assert receiver.returncode == 130, shown
    lines = render(shown)
    assert lines[-2].startswith("Receive a.txt (5 B) from "), lines
    assert lines[-1] == "Interrupted.", lines
    assert os.listdir(out) == []
