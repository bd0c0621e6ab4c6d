"""What people send besides a few files, with real `sfs send` / `sfs receive` processes
and a real `sfs serve`: a text message, a pipe to a pipe (`sfs send -` into
`sfs receive --stdout`), a tree of 10 000 files, and an interrupted tree that resumes."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sfs.peer.files.partial import part_path
from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    ServerProcess,
    peer_env,
    sfs_command,
    stop_process,
)
from tests.integration.peers import CODE_RE, run_sender, start_receiver
from tests.integration.test_folders import manifest

pytestmark = pytest.mark.slow


def test_a_text_message_is_printed_inert_and_nothing_is_written(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    receiver = start_receiver(sfs_server, out, "--yes")
    text = "the wifi password is\tcorrect horse\n\x1b[2Jcleared? \u202eexe.pdf"
    size = len(text.encode())
    sent = run_sender(sfs_server, receiver.code, "--text", text)
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    # Lines and tabs kept; the escape and the bidi override shown, not obeyed. (The
    # code line before it was read by start_receiver.)
    assert received.stdout == (
        "the wifi password is\tcorrect horse\n\\x1b[2Jcleared? \\u202eexe.pdf\n"
    ), received.stdout
    assert f"Receive a text message ({size} B) from tester? yes" in received.stderr
    assert re.search(rf"^Received a text message \({size} B\)", received.stderr, re.M)
    assert os.listdir(out) == []
    assert sent.stdout.startswith(f"Sent a text message ({size} B)")


def test_text_from_stdin_needs_the_code_on_the_command_line(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes")
    sent = run_sender(sfs_server, receiver.code, "--text", "-", stdin="piped words\n")
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.stdout == "piped words\n"
    refused = run_sender(sfs_server, "--text", "-", stdin="no code anywhere\n")
    assert refused.returncode == 2
    assert "give the code first" in refused.error_line()


def start_stdout_receiver(
    server: ServerProcess, out_dir: Path, *args: str
) -> tuple[subprocess.Popen[bytes], Path, str]:
    """`sfs receive --stdout`: its code comes on stderr, since stdout is the data."""
    out_dir.mkdir(exist_ok=True)
    err = out_dir.parent / "receiver.err"
    data = out_dir.parent / "received.bin"
    with open(err, "wb") as err_file, open(data, "wb") as data_file:
        process = subprocess.Popen(
            sfs_command("receive", "--stdout", "--yes", "-o", str(out_dir), *args),
            stdin=subprocess.DEVNULL,
            stdout=data_file,
            stderr=err_file,
            env=peer_env(server.url),
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(CODE_RE, err.read_text(errors="replace"))
        if match:
            return process, err, match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    stop_process(process)
    raise AssertionError(f"sfs receive --stdout showed no code:\n{err.read_text()}")


def wait(process: subprocess.Popen[bytes], err: Path) -> int:
    try:
        return process.wait(PROCESS_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        stop_process(process)
        raise AssertionError(f"sfs receive did not end; its stderr:\n{err.read_text()}") from None


def test_a_20_mib_pipe_into_stdout_keeps_every_byte(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    data = os.urandom(10 * 1024 * 1024) + b"compressible " * (10 * 1024 * 1024 // 13)
    receiver, err, code = start_stdout_receiver(sfs_server, tmp_path / "out")
    sender = subprocess.run(
        sfs_command("send", "--name", "tester", code, "-", "--as", "backup.tar"),
        input=data,
        capture_output=True,
        env=peer_env(sfs_server.url),
        timeout=PROCESS_TIMEOUT_SECONDS,
    )
    returncode = wait(receiver, err)
    stderr = err.read_text()
    assert sender.returncode == 0, sender.stderr.decode()
    assert returncode == 0, stderr
    received = (tmp_path / "received.bin").read_bytes()
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data).hexdigest()
    # Everything but the data went to stderr, and nothing was written to the folder.
    assert "Receive backup.tar (a pipe, size unknown) from tester? yes" in stderr
    assert re.search(r"^Received backup\.tar \(\d+\.\d MB\)", stderr, re.M), stderr
    assert os.listdir(tmp_path / "out") == []
    assert b"Sent backup.tar" in sender.stdout


def test_stdout_refuses_an_offer_of_several_files(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(name)
    receiver, err, code = start_stdout_receiver(sfs_server, tmp_path / "out")
    sent = run_sender(sfs_server, code, str(tmp_path / "a.txt"), str(tmp_path / "b.txt"))
    returncode = wait(receiver, err)
    assert returncode == 6, err.read_text()
    assert "--stdout takes one file or pipe" in err.read_text()
    assert sent.returncode == 6, sent.stderr
    assert (tmp_path / "received.bin").read_bytes() == b""


def make_tree(root: Path, files: int, size: int) -> Path:
    for i in range(files):
        folder = root / f"d{i // 100:03}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05}.bin").write_bytes(os.urandom(size))
    return root


def test_a_tree_of_10000_files_arrives_whole(sfs_server: ServerProcess, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src" / "many", 10_000, 4096)
    out = tmp_path / "out"
    receiver = start_receiver(sfs_server, out, "--yes")
    sent = run_sender(sfs_server, "-q", receiver.code, str(tree))
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert manifest(out / "many") == manifest(tree)
    assert re.search(r"^Received 10000 files \(41\.0 MB\)", received.stdout, re.M)
    assert "Receive 1 folder (10000 files, 41.0 MB) from tester? yes" in received.stderr
    # One summary line for so many files, not ten thousand.
    assert f"Saved 10000 files in 101 folders in {out}" in received.stderr
    assert "Saved " + str(out) not in received.stderr


def test_an_interrupted_tree_resumes_skipping_what_arrived(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    tree = tmp_path / "src" / "album"
    make_tree(tree / "a", 30, 20_000)
    (tree / "b").mkdir()
    (tree / "b" / "big.bin").write_bytes(os.urandom(24 * 1024 * 1024))
    make_tree(tree / "c", 20, 20_000)
    out = tmp_path / "out"
    receiver = start_receiver(sfs_server, out, "--yes", "-q")
    sender = subprocess.Popen(
        # The WebRTC path in small chunks: slow enough to be interrupted mid-file (over
        # TCP the 24 MiB arrive before the signal does).
        sfs_command(
            "send",
            "-q",
            "--transport",
            "datachannel",
            "--chunk-size",
            "4096",
            receiver.code,
            str(tree),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=peer_env(sfs_server.url),
    )
    big = out / "album" / "b" / "big.bin"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if part_path(big).exists() and part_path(big).stat().st_size > 2 * 1024 * 1024:
            break
        time.sleep(0.05)
    else:
        stop_process(sender)
        raise AssertionError(f"the big file never got going:\n{receiver.stop().stderr}")
    sender.send_signal(signal.SIGINT)
    sender.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
    first = receiver.finish()
    assert first.returncode == 7, first.stderr
    assert len(list((out / "album" / "a").rglob("*.bin"))) == 30  # verified and placed
    assert not big.exists()
    # Again, with a new code: the first folder is skipped, the big file continues.
    receiver = start_receiver(sfs_server, out, "--yes", "-q")
    sent = run_sender(sfs_server, "-q", receiver.code, str(tree))
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert manifest(out / "album") == manifest(tree)
    for line in (sent.stdout, received.stdout):
        assert "30 files already there (same SHA-256), 1 file resumed" in line, line
    assert not [p for p in out.rglob(".*") if p.is_file()], "no partial copy is left"
