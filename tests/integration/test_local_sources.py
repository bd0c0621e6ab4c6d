"""What `sfs send` is given that is not a plain file (issue 22 item 8), with real
`sfs send` / `sfs receive` processes and a real `sfs serve`: a FIFO or a device is
refused at once (never an open() that blocks), and a file that says it is empty but
reads more (/proc) is sent as what a read gives, or refused: never a success for
bytes that did not move."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, peer_env
from tests.integration.peers import run_sender, run_sfs, start_receiver

#: A file of the kind: /proc/version says its size is 0 but reads the kernel's version
#: line, the same for every reader and every read while the machine is up (unlike
#: /proc/self/status, whose content is the reading process's own).
PROC_FILE = Path("/proc/version")
#: Nothing listens here: a sender that tried to connect would say so.
NOWHERE = "http://127.0.0.1:9"
CODE = "ABC-123-able-acid"


def _proc_file_content() -> bytes:
    if not PROC_FILE.exists() or PROC_FILE.stat().st_size != 0:
        pytest.skip(f"{PROC_FILE} is not a file that says it is empty here")
    content = PROC_FILE.read_bytes()
    assert content  # what makes it such a file
    return content


def test_a_proc_file_is_sent_as_what_a_read_gives(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """It used to be offered as 0 bytes, sent as 0 bytes, and exit 0."""
    content = _proc_file_content()
    out = tmp_path / "out"
    receiver = start_receiver(sfs_server, out, "--yes")
    sent = run_sender(sfs_server, receiver.code, str(PROC_FILE))
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert os.listdir(out) == ["version"]
    got = (out / "version").read_bytes()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(content).hexdigest()
    assert f"({len(content)} B)" in sent.stdout, sent.stdout


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_a_device_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    """A FIFO nobody writes to used to block `sfs send` in open(), silently, before
    its "not a regular file" check; /dev/zero would be read without end."""
    if kind == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
        what = "a FIFO"
    else:
        path, what = Path("/dev/zero"), "a device"
    done = run_sfs("send", CODE, str(path), env=peer_env(NOWHERE), timeout=30)
    assert done.returncode == 9, done.stderr
    assert done.error_line() == (
        f"Error: {str(path)!r} is {what}, not a file: send a pipe's output with `-` "
        "(e.g. `sfs send CODE - < FILE`)"
    )
    assert "Connecting" not in done.stderr  # refused before contacting anyone


def test_a_proc_file_among_others_is_refused_before_connecting(tmp_path: Path) -> None:
    """Its size cannot be offered, and a file of unknown size (a pipe) goes alone."""
    _proc_file_content()
    other = tmp_path / "notes.txt"
    other.write_text("notes\n")
    done = run_sfs("send", CODE, str(other), str(PROC_FILE), env=peer_env(NOWHERE), timeout=30)
    assert done.returncode == 9, done.stderr
    assert done.error_line().startswith(
        f"Error: {str(PROC_FILE)!r} says it is empty but reading it gives bytes"
    )
