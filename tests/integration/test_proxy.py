"""`--proxy socks5h://HOST:PORT` (issue 30): real `sfs send` and `sfs receive` through a
real SOCKS5 server (Debian's microsocks, which scripts/test installs) to a real `sfs
serve`, all on the loopback of a network namespace the test makes, whose firewall
counts every UDP packet sent: through the proxy there must be none."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import in_netns, peer_env, sha256_file, start_server, stop_process
from tests.integration.peers import make_file, run_sfs, start_receiver

pytestmark = pytest.mark.slow


#: Wait (5 s at most) until something listens on 127.0.0.1:argv[1].
WAIT_FOR_PORT = """
import socket, sys, time
for _ in range(50):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("nothing listens")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def socks_server(netns: str, tmp: Path) -> Iterator[tuple[str, Path]]:
    """microsocks on 127.0.0.1 of ``netns``: (its URL, its log of connections)."""
    if shutil.which("microsocks") is None:
        pytest.skip("microsocks is not installed (scripts/test installs it as root)")
    port = free_port()
    log = tmp / "microsocks.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["ip", "netns", "exec", netns, "microsocks", "-i", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        in_netns(netns, sys.executable, "-c", WAIT_FOR_PORT, str(port))
        yield f"socks5h://127.0.0.1:{port}", log
    finally:
        stop_process(process)


def count_udp(netns: str) -> None:
    """Count every UDP packet sent in ``netns`` (read back by :func:`udp_sent`)."""
    in_netns(netns, "iptables", "-I", "OUTPUT", "-p", "udp", "-j", "ACCEPT")


def udp_sent(netns: str) -> int:
    listing = subprocess.run(
        ["ip", "netns", "exec", netns, "iptables", "-L", "OUTPUT", "-v", "-x", "-n"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    # The protocol column says udp, or its number, 17 (iptables-nft).
    rows = [row for row in map(str.split, listing.splitlines()) if row[3:4] in (["udp"], ["17"])]
    assert rows, listing
    return sum(int(row[0]) for row in rows)


def test_both_sides_through_the_proxy_send_no_udp(netns: str, tmp_path: Path) -> None:
    """Both behind the proxy: signaling and the transfer go through it (the server's
    relay: neither can listen), the file arrives whole, and no UDP packet left
    anyone; microsocks saw the connections."""
    server = start_server(tmp_path, netns=netns)
    try:
        with socks_server(netns, tmp_path) as (proxy, log):
            count_udp(netns)
            src = make_file(tmp_path / "through.bin", 5 * 1024 * 1024)
            env = {**peer_env(server.url), "SFS_PROXY": proxy}
            receiver = start_receiver(
                server, tmp_path / "out", "--yes", "--no-pairs", netns=netns, env=env
            )
            sent = run_sfs("send", receiver.code, str(src), env=env, netns=netns)
            received = receiver.finish()
            assert sent.returncode == 0, sent.stderr
            assert received.returncode == 0, received.stderr
            assert sha256_file(tmp_path / "out" / src.name) == sha256_file(src)
            assert "relayed by 127.0.0.1" in sent.stdout, sent.stdout
            for said in (sent.stderr, received.stderr):
                assert f"Through the proxy {proxy}: no UDP (no WebRTC)" in said, said
            assert udp_sent(netns) == 0
            port = server.url.rsplit(":", 1)[1]
            connections = re.findall(r"connected to 127\.0\.0\.1:(\d+)", log.read_text())
            assert connections.count(port) >= 4, log.read_text()  # signaling and relay, each
    finally:
        stop_process(server.process)


def test_a_sender_through_the_proxy_dials_the_receiver_through_it(
    netns: str, tmp_path: Path
) -> None:
    """Only the sender behind the proxy: it dials the receiver's direct TCP listener
    through the proxy (the receiver itself is not asked to change anything)."""
    server = start_server(tmp_path, netns=netns)
    try:
        with socks_server(netns, tmp_path) as (proxy, log):
            src = make_file(tmp_path / "direct.bin", 2 * 1024 * 1024)
            receiver = start_receiver(
                server, tmp_path / "out", "--yes", "--no-pairs", "--relay", "never", netns=netns
            )
            env = {**peer_env(server.url), "SFS_PROXY": proxy}
            sent = run_sfs("send", receiver.code, str(src), env=env, netns=netns)
            received = receiver.finish()
            assert sent.returncode == 0, f"{sent.stderr}\n{received.stderr}"
            assert sha256_file(tmp_path / "out" / src.name) == sha256_file(src)
            assert "direct over TCP" in sent.stdout, sent.stdout
            server_port = server.url.rsplit(":", 1)[1]
            others = [
                p for p in re.findall(r"connected to 127\.0\.0\.1:(\d+)", log.read_text())
                if p != server_port
            ]  # fmt: skip
            assert others, log.read_text()  # the receiver's listener, through the proxy
    finally:
        stop_process(server.process)


def test_a_proxy_that_is_not_there_is_one_line_and_exit_3(netns: str, tmp_path: Path) -> None:
    server = start_server(tmp_path, netns=netns)
    try:
        env = {**peer_env(server.url), "SFS_PROXY": f"socks5h://127.0.0.1:{free_port()}"}
        said = run_sfs("receive", "--yes", "--no-pairs", env=env, netns=netns, timeout=60)
        assert said.returncode == 3, said.stderr
        assert "Traceback" not in said.stderr
        assert said.error_line().startswith("Error: cannot reach the signaling server"), said.stderr
    finally:
        stop_process(server.process)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--proxy", "http://127.0.0.1:3128"), "sfs speaks SOCKS5 to a proxy"),
        (("--proxy", "socks5h://127.0.0.1"), "give the proxy as socks5h://HOST:PORT"),
        (("--lan", "--proxy", "socks5h://127.0.0.1:1080"), "--proxy needs a server"),
    ],
)
def test_a_proxy_sfs_cannot_use_is_a_usage_error(args: tuple[str, ...], message: str) -> None:
    said = run_sfs("receive", "--yes", *args, env=peer_env("http://127.0.0.1:9"))
    assert said.returncode == 2, said.stderr
    assert message in said.stderr, said.stderr
