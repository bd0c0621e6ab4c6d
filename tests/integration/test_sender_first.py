"""The sender-first flow: `sfs send --print-code FILE...` prints the code, and
`sfs receive CODE` joins it (as with magic-wormhole and croc). Same SPAKE2 roles,
same checks, one guess: real processes, every file checked by SHA-256."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from sfs.code import wordlist
from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    ServerProcess,
    peer_env,
    read_line_matching,
    sfs_command,
    sha256_file,
)
from tests.integration.peers import CODE_RE, Finished, Receiver, make_file, run_sender


def start_printing_sender(server: ServerProcess, tmp: Path, *args: str) -> Receiver:
    """`sfs send --print-code` running, with the code it printed (it waits, as a
    receiver does in the other flow)."""
    stderr_path = tmp / f"sender-{time.monotonic_ns()}.err"
    with open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            sfs_command("send", "--print-code", "--name", "tester", *args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=peer_env(server.url),
        )
    code = read_line_matching(process, CODE_RE).group(1)
    return Receiver(process, code, stderr_path, command="send --print-code")


def receive(server: ServerProcess, out: Path, *args: str, stdin: str = "") -> Finished:
    out.mkdir(exist_ok=True)
    try:
        done = subprocess.run(
            sfs_command("receive", "--yes", "-o", str(out), *args),
            input=stdin.encode(),
            capture_output=True,
            env=peer_env(server.url),
            timeout=PROCESS_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"sfs receive did not finish; stderr:\n{exc.stderr!r}") from None
    return Finished(done.returncode, done.stdout.decode(), done.stderr.decode())


def test_sender_prints_the_code_and_the_receiver_joins(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    sources = [make_file(tmp_path / "a.bin", 200_000), make_file(tmp_path / "b.bin", 70_000)]
    sender = start_printing_sender(sfs_server, tmp_path, *map(str, sources))
    received = receive(sfs_server, tmp_path / "out", sender.code)
    sent = sender.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert "sfs receive CODE" in sent.stderr  # the hint names the other command
    for src in sources:
        assert sha256_file(tmp_path / "out" / src.name) == sha256_file(src)


def test_the_code_can_be_piped_to_the_receiver(sfs_server: ServerProcess, tmp_path: Path) -> None:
    src = make_file(tmp_path / "a.bin", 10_000)
    sender = start_printing_sender(sfs_server, tmp_path, str(src))
    received = receive(sfs_server, tmp_path / "out", "-", stdin=sender.code + "\n")
    sent = sender.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert sha256_file(tmp_path / "out" / "a.bin") == sha256_file(src)


def test_wrong_words_burn_the_senders_code(sfs_server: ServerProcess, tmp_path: Path) -> None:
    src = make_file(tmp_path / "a.bin", 10_000)
    sender = start_printing_sender(sfs_server, tmp_path, str(src))
    peer_id, words = sender.code[:7], sender.code[8:].split("-")
    wrong = next(w for w in wordlist() if w not in words)
    received = receive(sfs_server, tmp_path / "out", f"{peer_id}-{wrong}-{words[1]}")
    sent = sender.finish()
    assert received.returncode == 5, received.stderr
    assert sent.returncode == 5, sent.stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_a_senders_code_does_not_work_for_another_sender(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """The key exchange binds which side printed the code: a second sender that takes
    it for a receiver's code gets "wrong code", and so does the printing sender."""
    src = make_file(tmp_path / "a.bin", 10_000)
    sender = start_printing_sender(sfs_server, tmp_path, str(src))
    other = run_sender(sfs_server, sender.code, str(src))
    sent = sender.finish()
    assert other.returncode == 5, other.stderr
    assert sent.returncode == 5, sent.stderr


def test_print_code_takes_only_files(tmp_path: Path) -> None:
    src = make_file(tmp_path / "a.bin", 10)
    done = subprocess.run(
        sfs_command("send", "--print-code", "ABC-123-tiger-lamp", str(src)),
        capture_output=True,
        env=peer_env("http://127.0.0.1:9"),
        timeout=30,
    )
    assert done.returncode == 2
    assert b"give only the files" in done.stderr
