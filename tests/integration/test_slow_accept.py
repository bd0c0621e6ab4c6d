"""A user who takes their time at the prompt does not break `--streams N` (issue 8, item 7).

Keepalives are dealt round-robin over the N links like every other frame, so each
link hears one only every N pings; with N = 8 that is every 16 s, longer than the
10 s idle timeout, and a receiver that read its links one by one thought the
sender gone.
"""

from __future__ import annotations

import os
import pty
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    ServerProcess,
    peer_env,
    sfs_command,
    sha256_file,
)
from tests.integration.peers import Finished, make_file, start_receiver

THINKING_SECONDS = 16.0


def wait_for_text(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {text!r} in {path.read_text(errors='replace')!r}"
        time.sleep(0.1)


@pytest.mark.parametrize("quic", ["0", "1"], ids=["datachannels", "quic"])
def test_streams_8_survive_16_s_at_the_prompt(
    sfs_server: ServerProcess, tmp_path: Path, quic: str
) -> None:
    """With SFS_QUIC=0 at the receiver, eight DataChannel streams; with QUIC, the one
    QUIC connection the receiver answers for, idle at the prompt just as long."""
    src = make_file(tmp_path / "f.bin", 3 * 1024 * 1024)
    receiver_pty, receiver_tty = pty.openpty()
    try:
        receiver = start_receiver(
            sfs_server, tmp_path / "out", stdin=receiver_tty, env={"SFS_QUIC": quic}
        )
        sender = subprocess.Popen(
            sfs_command(
                "send", "--transport", "datachannel", "--streams", "8", receiver.code, str(src)
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=peer_env(sfs_server.url),
        )
        try:
            wait_for_text(receiver.stderr_path, "Receive f.bin", timeout=60)
            time.sleep(THINKING_SECONDS)  # the user, reading the prompt
            os.write(receiver_pty, b"y\n")
            out, err = sender.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
        sent = Finished(sender.returncode, out.decode(), err.decode("utf-8", "replace"))
        received = receiver.finish()
    finally:
        os.close(receiver_pty)
        os.close(receiver_tty)
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert sha256_file(tmp_path / "out" / "f.bin") == sha256_file(src)
    assert sent.stdout.rstrip().endswith(", over QUIC") == (quic == "1"), sent.stdout
