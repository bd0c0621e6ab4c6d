"""Failures that need a network of the test's own: a namespace with UDP blocked,
and a nearly full disk (a small tmpfs)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, in_netns, start_server, stop_process, tmpfs
from tests.integration.peers import make_file, run_sender, start_receiver


def test_ice_failure_is_reported_with_a_hint(tmp_path: Path, netns: str) -> None:
    if shutil.which("iptables") is None:
        pytest.skip("iptables is not installed (scripts/test installs it as root)")
    # Signaling (TCP) still works; every UDP packet, so every ICE check, is dropped.
    in_netns(netns, "iptables", "-A", "INPUT", "-p", "udp", "-j", "DROP")
    server = start_server(tmp_path, netns=netns)
    try:
        src = make_file(tmp_path / "f.bin", 1000)
        receiver = start_receiver(
            server, tmp_path / "out", "--yes", "--connect-timeout", "3", netns=netns
        )
        sent = run_sender(server, "--connect-timeout", "3", receiver.code, str(src), netns=netns)
        received = receiver.finish()
    finally:
        stop_process(server.process)
    assert sent.returncode == 8, sent.stderr
    assert "ICE failed" in sent.error_line()
    assert "--ice-server" in sent.error_line()
    assert received.returncode == 8, received.stderr
    assert os.listdir(tmp_path / "out") == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path, "1m") as mount_point:
        yield mount_point


def test_offer_larger_than_free_space_is_refused_before_writing(
    sfs_server: ServerProcess, tmp_path: Path, small_disk: Path
) -> None:
    src = make_file(tmp_path / "big.bin", 2 * 1024 * 1024)
    receiver = start_receiver(sfs_server, small_disk, "--yes")
    sent = run_sender(sfs_server, receiver.code, str(src))
    received = receiver.finish()
    assert received.returncode == 11, received.stderr
    assert "not enough free space" in received.error_line()
    assert sent.returncode == 7, sent.stderr
    assert "cannot write" in sent.error_line()
    assert os.listdir(small_disk) == []
