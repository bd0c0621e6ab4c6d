"""LAN mode with no server anywhere: real zeroconf, the embedded signaling server, real
processes in namespaces on one bridge (tests/integration/lan.py), files checked by
SHA-256."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import NO_SERVER, read_line_matching, sha256_file, stop_process
from tests.integration.lan import Host, Lines, lan_env, lan_hosts, run, start, start_waiting
from tests.integration.peers import make_file
from tests.integration.test_faults import part_size, wait_for_progress

pytestmark = pytest.mark.slow
MIB = 1024 * 1024


def deliver(sender_host: Host, receiver_host: Host, tmp: Path, *send_args: str) -> None:
    """`sfs receive` on one host, `sfs send CODE FILE` on the other: a 10 MiB file
    arrives whole."""
    src = make_file(tmp / "report.bin", 10 * MIB)
    out = tmp / "out"
    out.mkdir()
    receiver = start_waiting(receiver_host, tmp, "receive", "--yes", "-o", str(out))
    sent = run(sender_host, "send", *send_args, receiver.code, str(src))
    received = receiver.finish()
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert sha256_file(out / "report.bin") == sha256_file(src)
    assert sorted(os.listdir(out)) == ["report.bin"]
    assert "On the local network" in received.stderr
    peer_id = receiver.code[:7]
    assert f"Looking for {peer_id} on the local network" in sent.stderr
    assert f"Found {peer_id} at {receiver_host.ipv4 or receiver_host.ipv6}" in sent.stderr


def test_two_hosts_deliver_a_verified_file_with_no_server(tmp_path: Path) -> None:
    with lan_hosts(2) as (a, b):
        deliver(b, a, tmp_path)


def test_ipv6_only_lan(tmp_path: Path) -> None:
    with lan_hosts(2, ipv4=False, ipv6=True) as (a, b):
        deliver(b, a, tmp_path)


def test_one_machine_and_lan_overrides_sfs_server(tmp_path: Path) -> None:
    """Both peers on one host (the README demo); --lan wins over an SFS_SERVER that
    points nowhere."""
    with lan_hosts(1) as (a,):
        src = make_file(tmp_path / "f.bin", MIB)
        out = tmp_path / "out"
        out.mkdir()
        env = {**lan_env(), "SFS_SERVER": NO_SERVER}
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", a.netns, sys.executable, "-m", "sfs", "receive", "--lan",
             "--yes", "-o", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            code = read_line_matching(receiver, r"Code: (\S+)").group(1)
            sent = subprocess.run(
                ["ip", "netns", "exec", a.netns, sys.executable, "-m", "sfs", "send", "--lan",
                 code, str(src)],
                capture_output=True, env=env, timeout=60,
            )  # fmt: skip
            receiver.wait(30)
        finally:
            stop_process(receiver)
        assert sent.returncode == 0, sent.stderr.decode()
        assert receiver.returncode == 0, receiver.stderr.read().decode()  # type: ignore[union-attr]
        assert sha256_file(out / "f.bin") == sha256_file(src)


def test_sender_first_on_the_lan(tmp_path: Path) -> None:
    """`sfs send --print-code` waits and is listed as waiting to send; `sfs receive CODE`
    on another host finds it."""
    with lan_hosts(2) as (a, b):
        src = make_file(tmp_path / "f.bin", 2 * MIB)
        out = tmp_path / "out"
        out.mkdir()
        sender = start_waiting(a, tmp_path, "send", "--print-code", "--name", "ana", str(src))
        listed = run(b, "peers", "--once", "2")
        assert re.search(rf"ana\s+{sender.code[:7]}\s+send\s+{a.ipv4}", listed.stdout), listed
        received = run(b, "receive", "--yes", "-o", str(out), sender.code)
        sent = sender.finish()
        assert received.returncode == 0, received.stderr
        assert sent.returncode == 0, sent.stderr
        assert sha256_file(out / "f.bin") == sha256_file(src)


def test_peers_sees_a_receiver_come_and_go_at_once(tmp_path: Path) -> None:
    with lan_hosts(2) as (a, b):
        assert run(b, "peers", "--once", "1").stdout.strip() == "Nobody is waiting on this network."
        watch = start(b, "peers", stderr_path=tmp_path / "peers.err")  # live, not a terminal
        lines = Lines(watch)
        try:
            receiver = start_waiting(a, tmp_path, "receive", "--yes", "--name", "bob")
            peer_id = receiver.code[:7]
            lines.wait_for(rf"bob\s+{peer_id}\s+receive\s+{a.ipv4}\s+\d+ s", 10)
            once = run(b, "peers", "--once", "2")
            assert re.search(rf"bob\s+{peer_id}\s+receive", once.stdout), once
            assert receiver.code.split("-", 2)[2] not in once.stdout  # never the words
            # Ctrl-C: the receiver says goodbye, so it leaves the live list at once
            # (without that, only when its record's time to live runs out: minutes).
            receiver.process.send_signal(signal.SIGINT)
            pressed = time.monotonic()
            assert receiver.finish(10).returncode == 130
            assert lines.wait_for("Nobody is waiting on this network", 5) - pressed < 5
            assert peer_id not in run(b, "peers", "--once", "1").stdout
        finally:
            watch.send_signal(signal.SIGINT)
            assert watch.wait(10) == 0, (tmp_path / "peers.err").read_text()


def test_nobody_with_that_id_exits_4_within_the_bound(tmp_path: Path) -> None:
    with lan_hosts(2) as (_, b):
        src = make_file(tmp_path / "f.bin", 10)
        started = time.monotonic()
        sent = run(b, "send", "ABC-123-able-acid", str(src))
        took = time.monotonic() - started
        assert sent.returncode == 4, sent.stderr
        assert sent.error_line() == (
            "Error: no receiver with ID ABC-123 on this network (is it on the same LAN? "
            "for other networks use --server)"
        )
        assert 5 <= took < 12, took  # the 5 s search, plus start-up


def test_no_multicast_interface_names_server(tmp_path: Path) -> None:
    """A host with only loopback: LAN mode cannot work; one line that says what to do."""
    with lan_hosts(1) as (a,):
        a.run("ip", "link", "set", "eth0", "down")
        src = make_file(tmp_path / "f.bin", 10)
        for args in (("receive", "--yes"), ("send", "ABC-123-able-acid", str(src)), ("peers",)):
            done = run(a, *args, timeout=20)
            assert done.returncode == 3, done.stderr
            line = done.error_line()
            assert "multicast" in line and "--server" in line, line


def test_receiver_killed_mid_transfer_then_resumed_on_the_lan(tmp_path: Path) -> None:
    with lan_hosts(2) as (a, b):
        size = 48 * MIB
        src = make_file(tmp_path / "big.bin", size)
        out = tmp_path / "out"
        out.mkdir()
        # The peers meet over TCP, which would move 48 MiB before the kill lands: the
        # sender's link is slowed to 200 Mbit/s.
        b.run("tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "200mbit",
              "burst", "1mb", "latency", "100ms")  # fmt: skip
        receiver = start_waiting(a, tmp_path, "receive", "--yes", "-q", "-o", str(out))
        sender = start(
            b, "send", "-q", "--chunk-size", "4096", receiver.code, str(src),
            stderr_path=tmp_path / "sender.err",
        )  # fmt: skip
        try:
            wait_for_progress(out, "big.bin", size // 4)
            receiver.process.send_signal(signal.SIGKILL)
            assert sender.wait(30) == 7, (tmp_path / "sender.err").read_text()
        finally:
            stop_process(sender)
            receiver.stop()
        assert not (out / "big.bin").exists()
        assert part_size(out, "big.bin") >= size // 4
        again = start_waiting(a, tmp_path, "receive", "--yes", "-o", str(out))
        sent = run(b, "send", again.code, str(src))
        received = again.finish()
        assert sent.returncode == 0, sent.stderr
        assert received.returncode == 0, received.stderr
        assert "resumed" in sent.stdout and "resumed" in received.stdout, sent.stdout
        assert sha256_file(out / "big.bin") == sha256_file(src)
        assert sorted(os.listdir(out)) == ["big.bin"]


def test_a_rogue_advertising_the_same_id_gets_nothing(tmp_path: Path) -> None:
    """Host C advertises host A's peer ID twice: an impostor receiver (which gets one
    wrong guess of the code) and a dead end.  A's own answers are held back until the
    sender has tried C, so the rogue is tried first; then the real transfer goes
    through, and the rogue's folder stays empty."""
    if subprocess.run(["which", "iptables"], capture_output=True).returncode:
        pytest.skip("iptables is not installed (scripts/test installs it as root)")
    with lan_hosts(3) as (a, b, c):
        src = make_file(tmp_path / "secret.bin", 4 * MIB)
        out, rogue_out = tmp_path / "out", tmp_path / "rogue"
        out.mkdir()
        rogue_out.mkdir()
        receiver = start_waiting(a, tmp_path, "receive", "--yes", "-o", str(out))
        peer_id = receiver.code[:7]
        hold = ("OUTPUT", "-p", "udp", "--sport", "5353", "-j", "DROP")
        a.run("iptables", "-I", *hold)  # A is silent on mDNS for now
        rogue_err = tmp_path / "rogue.err"
        with open(rogue_err, "wb") as err:
            rogue = subprocess.Popen(
                ["ip", "netns", "exec", c.netns, sys.executable, "-m", "tests.lan_rogue", peer_id,
                 str(rogue_out)],
                stdout=subprocess.PIPE, stderr=err, env=lan_env(), cwd=Path(__file__).parents[2],
            )  # fmt: skip
        said = Lines(rogue)
        sender_err = tmp_path / "sender.err"
        try:
            said.wait_for("advertising", 20)
            sender = start(
                b, "send", "-v", "--connect-timeout", "20", receiver.code, str(src),
                stderr_path=sender_err,
            )  # fmt: skip
            try:
                said.wait_for("impostor: ", 30)
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}\nsender:\n{sender_err.read_text()}\nrogue:\n{rogue_err.read_text()}"
                ) from None
            outcome = said.seen[-1].split(": ", 1)[1].strip()
            a.run("iptables", "-D", *hold)  # now A answers the sender's next query
            assert sender.wait(60) == 0, sender_err.read_text()
        finally:
            stop_process(rogue)
            stop_process(sender)
        assert outcome == "WrongCodeError"
        sender_log = sender_err.read_text()
        assert sender_log.index(f"Found {peer_id} at {c.ipv4}") < sender_log.index(
            f"Found {peer_id} at {a.ipv4}"
        )
        received = receiver.finish()
        assert received.returncode == 0, received.stderr
        assert sha256_file(out / "secret.bin") == sha256_file(src)
        assert os.listdir(rogue_out) == []


def test_lan_and_server_exclude_each_other(tmp_path: Path, netns: str) -> None:
    """A usage error, before any network: run where only loopback exists, so a
    regression would fail with exit 3 here instead of multicasting anywhere."""
    src = make_file(tmp_path / "f.bin", 10)
    for args in (("receive", "--yes"), ("send", "ABC-123-able-acid", str(src))):
        done = subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "sfs", *args, "--lan",
             "--server", "http://127.0.0.1:5000"],
            capture_output=True, env=lan_env(), timeout=30, text=True,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "--lan and --server exclude each other" in done.stderr
