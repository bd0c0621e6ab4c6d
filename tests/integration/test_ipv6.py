"""IPv6: a pair with only IPv6 addresses, through a real `sfs serve` on an IPv6
address (LAN mode's IPv6-only case is in test_lan.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import sfs_command, sha256_file, start_server, stop_process
from tests.integration.lan import lan_env, lan_hosts, start_waiting
from tests.integration.peers import make_file

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("transport", "path"),
    [("auto", "direct over TCP"), ("datachannel", "direct on the local network, over QUIC")],
)
def test_an_ipv6_only_pair_through_a_server(tmp_path: Path, transport: str, path: str) -> None:
    with lan_hosts(2, ipv4=False, ipv6=True) as (a, b):
        assert a.ipv6 is not None
        assert b.ipv6 is not None
        server = start_server(tmp_path, netns=a.netns, host=a.ipv6)
        try:
            assert server.url.startswith("http://[fd77:")
            src = make_file(tmp_path / "f.bin", 2 * 1024 * 1024)
            out = tmp_path / "out"
            out.mkdir()
            receiver = start_waiting(
                a, tmp_path, "receive", "--server", server.url, "--yes", "-o", str(out)
            )
            sent = subprocess.run(
                sfs_command("send", "--server", server.url, "--transport", transport,
                            receiver.code, str(src), netns=b.netns),
                capture_output=True, text=True, timeout=60, env=lan_env(),
            )  # fmt: skip
            received = receiver.finish()
        finally:
            stop_process(server.process)
        assert sent.returncode == 0, sent.stderr
        assert received.returncode == 0, received.stderr
        assert sha256_file(out / "f.bin") == sha256_file(src)
        assert f"Connecting via {server.url}" in sent.stderr
        assert sent.stdout.rstrip().endswith(path), sent.stdout
        assert received.stdout.rstrip().endswith(path), received.stdout
