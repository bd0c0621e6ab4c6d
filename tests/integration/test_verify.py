"""`--verify`: both sides show the same string and must confirm before data moves."""

from __future__ import annotations

import os
import pty
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PROCESS_TIMEOUT_SECONDS, ServerProcess, peer_env, sfs_command
from tests.integration.peers import Finished, make_file, start_receiver

VERIFIER_RE = re.compile(r"Verification string: ([0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4})")


def verify_transfer(
    server: ServerProcess, tmp_path: Path, sender_answer: bytes, receiver_answer: bytes
) -> tuple[Finished, Finished]:
    src = make_file(tmp_path / "f.bin", 50_000)
    receiver_pty, receiver_tty = pty.openpty()
    sender_pty, sender_tty = pty.openpty()
    try:
        receiver = start_receiver(server, tmp_path / "out", "--yes", "--verify", stdin=receiver_tty)
        os.write(receiver_pty, receiver_answer)
        os.write(sender_pty, sender_answer)
        done = subprocess.run(
            sfs_command("send", "--verify", receiver.code, str(src)),
            stdin=sender_tty,
            capture_output=True,
            env=peer_env(server.url),
            timeout=PROCESS_TIMEOUT_SECONDS,
        )
        received = receiver.finish()
    finally:
        for fd in (receiver_pty, receiver_tty, sender_pty, sender_tty):
            os.close(fd)
    sent = Finished(done.returncode, done.stdout.decode(), done.stderr.decode())
    return sent, received


def test_both_confirm_the_same_string(sfs_server: ServerProcess, tmp_path: Path) -> None:
    sent, received = verify_transfer(sfs_server, tmp_path, b"y\n", b"y\n")
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    shown_by_sender = VERIFIER_RE.search(sent.stderr)
    shown_by_receiver = VERIFIER_RE.search(received.stderr)
    assert shown_by_sender
    assert shown_by_receiver
    assert shown_by_sender.group(1) == shown_by_receiver.group(1)
    assert (tmp_path / "out" / "f.bin").read_bytes() == (tmp_path / "f.bin").read_bytes()


@pytest.mark.parametrize("refusing", ["sender", "receiver"])
def test_refused_verification_moves_no_data(
    sfs_server: ServerProcess, tmp_path: Path, refusing: str
) -> None:
    sender_answer = b"n\n" if refusing == "sender" else b"y\n"
    receiver_answer = b"n\n" if refusing == "receiver" else b"y\n"
    sent, received = verify_transfer(sfs_server, tmp_path, sender_answer, receiver_answer)
    refuser, other = (sent, received) if refusing == "sender" else (received, sent)
    assert refuser.returncode == 14, refuser.stderr
    assert "verification" in refuser.error_line()
    assert other.returncode == 7, other.stderr
    assert "verification strings were not confirmed" in other.error_line()
    assert os.listdir(tmp_path / "out") == []


def test_verify_needs_a_terminal(tmp_path: Path) -> None:
    done = subprocess.run(
        sfs_command("receive", "--yes", "--verify"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=peer_env("http://127.0.0.1:9"),
        timeout=30,
    )
    assert done.returncode == 2
    assert b"--verify" in done.stderr
