"""What a newcomer hits on the command line (issue 9): mistyped codes, prompt manners,
URLs and addresses checked up front, a server that never answers, `--verify` order.

Every test drives the real CLI; prompts are answered on a real pty.
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sfs.code import wordlist
from sfs.peer.proto.wire import MAX_ENTRIES
from sfs.signal import messages as m
from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    ServerProcess,
    peer_env,
    sfs_command,
    sha256_file,
    start_server,
    tmpfs,
)
from tests.evil_server import Drop, serve_evil
from tests.integration.peers import Finished, make_file, run_sender, start_receiver

NOWHERE = "http://127.0.0.1:9"
#: Secret words for the codes typed here (not the "tiger-lamp" of sfs's own examples).
W1, W2 = wordlist()[10:12]
CODE = f"ABC-123-{W1}-{W2}"
WAIT_SECONDS = 30


def run(*args: str, env_url: str = NOWHERE, stdin: int | None = None) -> Finished:
    done = subprocess.run(
        sfs_command(*args),
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        capture_output=True,
        env=peer_env(env_url),
        timeout=WAIT_SECONDS,
    )
    return Finished(done.returncode, done.stdout.decode(), done.stderr.decode())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ABC-123", "f.bin"), "ABC-123 is missing its secret words"),
        (("f.bin", CODE), "ABC-123-… looks like a code: put it first"),
        ((CODE,), "no file to send"),
        ((f"ABC-123-{W1}", "f.bin"), "missing its second secret word"),
        ((f"ABC-123-{W1}-xyzzy", "f.bin"), "second secret word of ABC-123-… is not an sfs"),
        ((CODE, "f.bin", f"XYZ-999-{W2}-{W1}"), "looks like a second code"),
    ],
)
def test_code_mistakes_are_named(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    make_file(tmp_path / "f.bin", 10)
    files = [str(tmp_path / a) if a == "f.bin" else a for a in args]
    result = run("send", *files)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "no such file" not in result.stderr
    for word in (W1, W2, "xyzzy"):
        assert word not in result.stderr  # secret words are never repeated back


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    """A pty: (the side we type into, the side the process reads)."""
    master, slave = pty.openpty()
    try:
        yield master, slave
    finally:
        os.close(master)
        os.close(slave)


def test_a_typo_at_the_code_prompt_asks_again(tmp_path: Path, terminal: tuple[int, int]) -> None:
    master, slave = terminal
    src = make_file(tmp_path / "f.bin", 10)
    os.write(master, f"ABC-123\nABC-123-{W1}\nnonsense\n".encode())
    result = run("send", str(src), stdin=slave)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("Code:") == 3
    assert "missing its secret words" in result.stderr
    assert "missing its second secret word" in result.stderr
    assert "no valid code after 3 tries" in result.stderr


def test_ctrl_d_at_the_code_prompt_exits_130(tmp_path: Path, terminal: tuple[int, int]) -> None:
    master, slave = terminal
    src = make_file(tmp_path / "f.bin", 10)
    os.write(master, b"\x04")
    result = run("send", str(src), stdin=slave)
    assert result.returncode == 130, result.stderr
    assert "Aborted" not in result.stderr


def test_ctrl_c_at_the_code_prompt_exits_130(tmp_path: Path, terminal: tuple[int, int]) -> None:
    _, slave = terminal
    src = make_file(tmp_path / "f.bin", 10)
    process = subprocess.Popen(
        sfs_command("send", str(src)),
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=peer_env(NOWHERE),
    )
    try:
        assert process.stderr is not None
        seen = b""
        deadline = time.monotonic() + WAIT_SECONDS
        while b"Code:" not in seen and time.monotonic() < deadline:
            seen += os.read(process.stderr.fileno(), 100)
        assert b"Code:" in seen
        # As a person would, press Ctrl-C once the prompt waits: a signal in the
        # instant between printing the prompt and reading the line is lost in
        # CPython's readline (it is handled before the select() that then blocks).
        time.sleep(1)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=WAIT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert b"Aborted" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--server", "not a url"), "is not an http:// or https:// URL"),
        (("--server", "ftp://example.test"), "is not an http:// or https:// URL"),
        (("--server", "ws://127.0.0.1:5000"), "is not an http:// or https:// URL"),
        (("--server", "http://:5000"), "is not an http:// or https:// URL"),
        (("--ice-address", "10.255.255.254"), "is not an address of this machine"),
        (("--ice-address", "nonsense"), "is not an IP address"),
    ],
)
@pytest.mark.parametrize("command", ["send", "receive"])
def test_bad_urls_and_addresses_are_usage_errors(
    tmp_path: Path, command: str, args: tuple[str, ...], message: str
) -> None:
    src = make_file(tmp_path / "f.bin", 10)
    rest = (CODE, str(src)) if command == "send" else ("--yes",)
    result = run(command, *args, *rest)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


@pytest.mark.parametrize("command", ["send", "receive"])
def test_a_server_that_never_answers_times_out(
    tmp_path: Path, silent_server: str, command: str
) -> None:
    src = make_file(tmp_path / "f.bin", 10)
    rest = (CODE, str(src)) if command == "send" else ("--yes",)
    started = time.monotonic()
    result = run(command, "--connect-timeout", "2", *rest, env_url=silent_server)
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < WAIT_SECONDS - 5
    assert result.stderr.startswith(f"Connecting via {silent_server}…")
    assert "did not answer within 2 s" in result.error_line()


def read_until(path: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared; stderr:\n{path.read_text(errors='replace')}")


@pytest.mark.parametrize("pause_seconds", [0, 12])
def test_both_sides_show_the_string_before_either_is_answered(
    sfs_server: ServerProcess, tmp_path: Path, pause_seconds: float
) -> None:
    """Neither side waits for the other's answer to show its string; and a user who
    takes longer than the 10 s idle limit to compare does not lose the connection."""
    src = make_file(tmp_path / "f.bin", 50_000)
    receiver_pty, receiver_tty = pty.openpty()
    sender_pty, sender_tty = pty.openpty()
    sender_err = tmp_path / "sender.err"
    try:
        receiver = start_receiver(
            sfs_server, tmp_path / "out", "--yes", "--verify", stdin=receiver_tty
        )
        with open(sender_err, "wb") as err:
            sender = subprocess.Popen(
                sfs_command("send", "--verify", receiver.code, str(src)),
                stdin=sender_tty,
                stdout=subprocess.PIPE,
                stderr=err,
                env=peer_env(sfs_server.url),
            )
        try:
            read_until(sender_err, "Verification string:", sender)
            read_until(receiver.stderr_path, "Verification string:", receiver.process)
            time.sleep(pause_seconds)
            os.write(sender_pty, b"y\n")
            os.write(receiver_pty, b"y\n")
            assert sender.wait(PROCESS_TIMEOUT_SECONDS) == 0, sender_err.read_text()
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
        received = receiver.finish()
    finally:
        for fd in (receiver_pty, receiver_tty, sender_pty, sender_tty):
            os.close(fd)
    assert received.returncode == 0, received.stderr
    assert sha256_file(tmp_path / "out" / "f.bin") == sha256_file(src)


def test_a_multi_file_offer_shows_every_name_and_no_bar_in_a_log(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """With --yes and stderr going to a log: the names are listed, and progress comes
    as plain lines, never tqdm's carriage returns."""
    sources = [make_file(tmp_path / f"photo-{i}.jpg", 300_000) for i in range(3)]
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes")
    sent = run_sender(sfs_server, receiver.code, *map(str, sources))
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    for src in sources:
        assert f"  {src.name}  300.0 kB" in received.stderr
    assert "Receive 3 files (900.0 kB) from tester? yes (--yes)" in received.stderr
    assert "\r" not in received.stderr
    assert "\r" not in sent.stderr


def test_the_code_reaches_a_terminal_when_stdout_is_redirected(
    sfs_server: ServerProcess, tmp_path: Path, terminal: tuple[int, int]
) -> None:
    master, slave = terminal
    process = subprocess.Popen(
        sfs_command("receive", "--yes", "-o", str(tmp_path)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=peer_env(sfs_server.url),
    )
    try:
        seen = b""
        deadline = time.monotonic() + WAIT_SECONDS
        while b"Code: " not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 1000)
        assert b"Code: " in seen, seen
    finally:
        process.terminate()
        process.wait(WAIT_SECONDS)
    assert process.stdout is not None
    assert process.stdout.read().startswith(b"Code: ")


def test_a_read_only_output_folder_is_refused_before_a_code_is_shown(tmp_path: Path) -> None:
    with tmpfs(tmp_path, "1m", read_only=True) as folder:
        result = run("receive", "--yes", "-o", str(folder))
    assert result.returncode == 11, result.stderr
    assert "is not writable" in result.error_line()
    assert "Code:" not in result.stdout


def test_too_many_files_are_refused_before_connecting(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(MAX_ENTRIES):  # with the folder itself, one entry too many
        (tree / f"{i}").touch()
    result = run("send", CODE, str(tree))
    assert result.returncode == 9, result.stderr
    assert f"at most {MAX_ENTRIES} files and folders" in result.error_line()
    assert "Connecting" not in result.stderr


def test_ctrl_c_on_an_idle_receiver_or_the_server_mentions_no_partial_copy(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes")
    receiver.process.send_signal(signal.SIGINT)
    result = receiver.finish()
    assert result.returncode == 130, result.stderr
    assert "Interrupted." in result.stderr
    assert "partial" not in result.stderr
    server = start_server(tmp_path)
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(WAIT_SECONDS) == 130
    log = server.log_text()
    assert "Interrupted." in log
    assert "partial" not in log


def test_ctrl_c_on_the_sender_ends_the_receivers_prompt_at_once(
    sfs_server: ServerProcess, tmp_path: Path, terminal: tuple[int, int]
) -> None:
    _, slave = terminal
    src = make_file(tmp_path / "f.bin", 10_000)
    receiver = start_receiver(sfs_server, tmp_path / "out", stdin=slave)
    sender_err = tmp_path / "sender.err"
    with open(sender_err, "wb") as err:
        sender = subprocess.Popen(
            sfs_command("send", receiver.code, str(src)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=peer_env(sfs_server.url),
        )
    try:
        read_until(receiver.stderr_path, "Receive f.bin", receiver.process)
        read_until(sender_err, "Waiting for the receiver to accept", sender)
        sender.send_signal(signal.SIGINT)
        assert sender.wait(WAIT_SECONDS) == 130, sender_err.read_text()
        started = time.monotonic()
        received = receiver.finish(timeout=WAIT_SECONDS)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    assert received.returncode == 7, received.stderr
    assert time.monotonic() - started < 10  # not after the 10 s idle timeout
    assert "cancelled by the user" in received.error_line()
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("list_all", [False, True])
def test_a_long_offer_shows_a_screenful_or_with_list_everything(
    sfs_server: ServerProcess, tmp_path: Path, list_all: bool
) -> None:
    sources = [make_file(tmp_path / f"n{i:02d}.txt", 10) for i in range(40)]
    args = ("--yes", "--list") if list_all else ("--yes",)
    receiver = start_receiver(sfs_server, tmp_path / "out", *args)
    sent = run_sender(sfs_server, receiver.code, *map(str, sources))
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    listed = [src.name for src in sources if f"  {src.name}  10 B" in received.stderr]
    if list_all:
        assert len(listed) == 40
    else:  # no terminal: a 24-line screen
        assert 5 <= len(listed) < 40
        assert f"  … and {40 - len(listed)} more" in received.stderr
    for src in sources:
        assert f"Saved {tmp_path / 'out' / src.name}" in received.stderr


async def test_ctrl_c_during_set_up_reaches_the_other_side_at_once(tmp_path: Path) -> None:
    """No channel yet (the server drops the answer, so the sender waits for it): the
    sender's Ctrl-C still ends the receiver at once, through the server's
    `peer_aborted`, not after a timeout."""
    src = make_file(tmp_path / "f.bin", 10)
    (tmp_path / "out").mkdir()
    slow = ("--connect-timeout", "60")  # nothing but a timeout could end it otherwise
    sender: asyncio.subprocess.Process | None = None
    async with serve_evil(Drop(m.ANSWER)) as (url, _):
        env = peer_env(url)
        receiver = await asyncio.create_subprocess_exec(
            *sfs_command("receive", "--yes", "-o", str(tmp_path / "out"), *slow),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            assert receiver.stdout is not None
            assert receiver.stderr is not None
            async with asyncio.timeout(WAIT_SECONDS):
                line = (await receiver.stdout.readline()).decode()
            code = line.removeprefix("Code: ").strip()
            sender = await asyncio.create_subprocess_exec(
                *sfs_command("send", *slow, code, str(src)),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            assert sender.stderr is not None
            async with asyncio.timeout(WAIT_SECONDS):
                while b"Connecting to " + code[:7].encode() not in await sender.stderr.readline():
                    pass
            await asyncio.sleep(1.5)  # past the key exchange: waiting for the answer
            sender.send_signal(signal.SIGINT)
            started = time.monotonic()
            async with asyncio.timeout(WAIT_SECONDS):
                _, err = await receiver.communicate()
                await sender.wait()
        finally:
            for process in (receiver, sender):
                if process is not None and process.returncode is None:
                    process.kill()
                    await process.wait()
    text = err.decode()
    assert sender is not None
    assert sender.returncode == 130
    assert receiver.returncode == 7, text
    # Not the 60 s connect timeout; and the message shows it came as a cancel, not as
    # a partner that merely left the server (which also ends it, after a 5 s grace).
    assert time.monotonic() - started < 10, text
    assert "cancelled by its user" in text
