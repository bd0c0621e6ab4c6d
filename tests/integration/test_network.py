"""Failures that need a network of the test's own: a namespace with UDP blocked,
and a nearly full disk (a small tmpfs)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, in_netns, sha256_file, start_server, stop_process, tmpfs
from tests.integration.peers import make_file, run_sender, start_receiver


def test_ice_failure_is_reported_with_a_hint(tmp_path: Path, netns: str) -> None:
    if shutil.which("iptables") is None:
        pytest.skip("iptables is not installed (scripts/test installs it as root)")
    # Signaling (TCP) still works; every UDP packet, so every ICE check, is dropped.
    in_netns(netns, "iptables", "-A", "INPUT", "-p", "udp", "-j", "DROP")
    server = start_server(tmp_path, netns=netns)
    only_webrtc = ("--connect-timeout", "3", "--transport", "datachannel")
    try:
        src = make_file(tmp_path / "f.bin", 1000)
        receiver = start_receiver(server, tmp_path / "out", "--yes", *only_webrtc, netns=netns)
        sent = run_sender(server, *only_webrtc, receiver.code, str(src), netns=netns)
        received = receiver.finish()
    finally:
        stop_process(server.process)
    assert sent.returncode == 8, sent.stderr
    assert "ICE failed" in sent.error_line()
    assert "--ice-server" in sent.error_line()
    assert received.returncode == 8, received.stderr
    assert os.listdir(tmp_path / "out") == []


def test_with_udp_blocked_auto_goes_over_tcp(tmp_path: Path, netns: str) -> None:
    """The same blocked network, as users run sfs (--transport auto): no ICE path, but
    the direct TCP connection carries the file."""
    if shutil.which("iptables") is None:
        pytest.skip("iptables is not installed (scripts/test installs it as root)")
    in_netns(netns, "iptables", "-A", "INPUT", "-p", "udp", "-j", "DROP")
    server = start_server(tmp_path, netns=netns)
    try:
        src = make_file(tmp_path / "f.bin", 100_000)
        receiver = start_receiver(server, tmp_path / "out", "--yes", netns=netns)
        sent = run_sender(server, receiver.code, str(src), netns=netns)
        received = receiver.finish()
    finally:
        stop_process(server.process)
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert sha256_file(tmp_path / "out" / "f.bin") == sha256_file(src)
    assert sent.stdout.rstrip().endswith("direct over TCP"), sent.stdout


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
