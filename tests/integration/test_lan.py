"""LAN mode with no server anywhere: real zeroconf, the embedded signaling server, real
processes in namespaces on one bridge (tests/integration/lan.py), files checked by
SHA-256."""

from __future__ import annotations

import contextlib
import os
import queue
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
        assert re.search(rf"ana\s+send\s+{a.ipv4}", listed.stdout), listed
        assert sender.code[:7] not in listed.stdout  # records carry no ID
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
            lines.wait_for(rf"bob\s+receive\s+{a.ipv4}\s+\d+ s", 10)
            once = run(b, "peers", "--once", "2")
            assert re.search(r"bob\s+receive", once.stdout), once
            assert peer_id not in once.stdout  # never the ID, nor the words
            # Ctrl-C: the receiver says goodbye, so it leaves the live list at once
            # (without that, only when its record's time to live runs out: minutes).
            receiver.process.send_signal(signal.SIGINT)
            pressed = time.monotonic()
            assert receiver.finish(10).returncode == 130
            assert lines.wait_for("Nobody is waiting on this network", 5) - pressed < 5
            assert "bob" not in run(b, "peers", "--once", "1").stdout
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
            assert "multicast" in line, line
            assert "--server" in line, line


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
        # --reconnect-window 0: a killed receiver ends the session at once (a resume by
        # hand follows); test_reconnect.py has the sides waiting for each other.
        sender = start(
            b, "send", "-q", "--chunk-size", "4096", "--reconnect-window", "0", receiver.code,
            str(src), stderr_path=tmp_path / "sender.err",
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
        assert "resumed" in sent.stdout, sent.stdout
        assert "resumed" in received.stdout, sent.stdout
        assert sha256_file(out / "big.bin") == sha256_file(src)
        assert sorted(os.listdir(out)) == ["big.bin"]


class Rogue:
    """tests/lan_rogue.py on ``host``: stdout lines read by a thread, stderr kept."""

    def __init__(self, host: Host, tmp: Path, *args: str) -> None:
        self.err = tmp / f"rogue-{time.monotonic_ns()}.err"
        with open(self.err, "wb") as err:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, sys.executable, "-m", "tests.lan_rogue",
                 *args],
                stdout=subprocess.PIPE, stderr=err, env=lan_env(), cwd=Path(__file__).parents[2],
            )  # fmt: skip
        self.lines = Lines(self.process)

    def wait_ready(self, seconds: float = 30) -> None:
        try:
            self.lines.wait_for("^ready", seconds)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nrogue:\n{self.err.read_text()}") from None

    def said(self, text: str) -> int:
        """How many lines so far were exactly ``text``."""
        with contextlib.suppress(queue.Empty):
            while True:
                self.lines.seen.append(self.lines.lines.get_nowait())
        return sum(1 for line in self.lines.seen if line.strip() == text)

    def stop(self) -> None:
        stop_process(self.process)


def test_eight_cloned_records_get_no_key_exchange(tmp_path: Path) -> None:
    """Host C clones A's record 8 times (endpoints of real embedded sfs servers that do
    not know the code) and 8 more times (ports that accept and never answer).  The
    sender still finds A, quickly, and nobody at C ever gets as far as registering,
    the step before any key exchange.  (Before: records named the ID, the sender
    tried up to 8 of them one after another, each a full SPAKE2 run, so 8 guesses of
    the code for C; a stalling record cost it 30 s.)"""
    with lan_hosts(3) as (a, b, c):
        src = make_file(tmp_path / "secret.bin", 4 * MIB)
        out = tmp_path / "out"
        out.mkdir()
        receiver = start_waiting(a, tmp_path, "receive", "--yes", "--name", "alice", "-o", str(out))
        rogue = Rogue(c, tmp_path, "clone", "alice", "8", "8")
        try:
            rogue.wait_ready()
            started = time.monotonic()
            sent = run(b, "send", "-v", receiver.code, str(src))
            took = time.monotonic() - started
        finally:
            rogue.stop()
        assert sent.returncode == 0, f"{sent.stderr}\nrogue:\n{rogue.err.read_text()}"
        assert rogue.said("registered") == 0, rogue.lines.seen
        assert "claim ID" not in sent.stderr
        assert took < 10, (took, sent.stderr)  # the stalls cost one probe bound at most
        received = receiver.finish()
        assert received.returncode == 0, received.stderr
        assert sha256_file(out / "secret.bin") == sha256_file(src)


def test_only_stalling_records_end_the_search_within_the_timeout(tmp_path: Path) -> None:
    """8 records whose ports accept and never answer, and no receiver: the sender gives
    up within --connect-timeout (before: 30 s per record, one after another)."""
    with lan_hosts(3) as (a, b, c):
        src = make_file(tmp_path / "f.bin", 10)
        bait = start_waiting(a, tmp_path, "receive", "--yes", "--name", "alice")
        rogue = Rogue(c, tmp_path, "clone", "alice", "0", "8")
        try:
            rogue.wait_ready()
            bait.stop()  # only the rogue's copies are left
            started = time.monotonic()
            sent = run(b, "send", "--connect-timeout", "6", "ABC-123-able-acid", str(src))
            took = time.monotonic() - started
        finally:
            rogue.stop()
        assert sent.returncode == 4, sent.stderr
        assert "no receiver with ID ABC-123 on this network" in sent.error_line()
        assert took < 6 + 4, took  # the bound, plus start-up


def test_a_rogue_that_knows_the_id_gets_no_guess_and_the_user_is_told(tmp_path: Path) -> None:
    """The code's ID leaked (someone read it over a shoulder): C runs a server that
    proves that ID too.  The sender sees two devices claim it, says so, and runs no
    key exchange with either: the rogue gets no guess of the secret words, and the
    real receiver's code is not spent."""
    with lan_hosts(3) as (a, b, c):
        src = make_file(tmp_path / "f.bin", 10)
        receiver = start_waiting(a, tmp_path, "receive", "--yes", "--name", "alice")
        rogue = Rogue(c, tmp_path, "clone", "alice", "1", "0", receiver.code[:7])
        try:
            rogue.wait_ready()
            sent = run(b, "send", receiver.code, str(src))
        finally:
            rogue.stop()
        assert sent.returncode == 4, sent.stderr
        assert sent.error_line().startswith(
            f"Error: 2 devices on this network claim ID {receiver.code[:7]}: "
            "someone may be interfering"
        ), sent.stderr
        assert rogue.said("registered") == 0
        assert receiver.process.poll() is None  # still waiting, its one attempt unspent
        receiver.stop()


def test_a_neighbour_without_the_code_can_neither_end_nor_occupy_a_receiver(
    tmp_path: Path,
) -> None:
    """C reads A's record and tries what it can: probes and connection requests for
    20 guessed IDs (before: the record named the ID, and one request made A exit 5 at
    once).  A keeps waiting, and the real sender then delivers."""
    with lan_hosts(3) as (a, b, c):
        src = make_file(tmp_path / "f.bin", MIB)
        out = tmp_path / "out"
        out.mkdir()
        receiver = start_waiting(a, tmp_path, "receive", "--yes", "--name", "alice", "-o", str(out))
        rogue = Rogue(c, tmp_path, "burn", "alice", "20")
        try:
            rogue.lines.wait_for("^burn: ", 60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nrogue:\n{rogue.err.read_text()}") from None
        finally:
            rogue.stop()
        assert "burn: 0 probes passed, 0 requests accepted" in rogue.lines.seen[-1]
        assert receiver.process.poll() is None, receiver.finish().stderr
        sent = run(b, "send", receiver.code, str(src))
        assert sent.returncode == 0, sent.stderr
        assert receiver.finish().returncode == 0
        assert sha256_file(out / "f.bin") == sha256_file(src)


def test_a_flood_from_one_neighbour_cannot_keep_the_sender_out(tmp_path: Path) -> None:
    """C opens 80 Socket.IO sessions and 80 silent connections to A's embedded server
    (before: 64 from one address filled it, and the sender was told "no receiver").
    Only a few get in; the sender from B delivers.  The same flood from the sender's
    own address (a shared NAT) is reported as busy, not as absent; and the flood's
    idle sessions are dropped in time."""
    with lan_hosts(3) as (a, b, c):
        src = make_file(tmp_path / "f.bin", MIB)
        out = tmp_path / "out"
        out.mkdir()
        receiver = start_waiting(a, tmp_path, "receive", "--yes", "--name", "alice", "-o", str(out))
        rogue = Rogue(c, tmp_path, "flood", "alice", "80", "80")
        try:
            rogue.wait_ready(60)
            sessions = int(rogue.lines.seen[-2].split()[1])
            assert sessions <= 4, rogue.lines.seen  # the cap per address
            sent = run(b, "send", receiver.code, str(src))
            assert sent.returncode == 0, sent.stderr
            assert receiver.finish().returncode == 0
            assert sha256_file(out / "f.bin") == sha256_file(src)
        finally:
            rogue.stop()
        again = start_waiting(a, tmp_path, "receive", "--yes", "--name", "alice", "-o", str(out))
        rogue = Rogue(b, tmp_path, "flood", "alice", "80", "80")
        try:
            rogue.wait_ready(60)
            sent = run(b, "send", again.code, str(src))
            # Slots must make progress: sessions that never ask are dropped (10 s).
            rogue.lines.wait_for("^all dropped", 20)
        finally:
            rogue.stop()
            again.stop()
        assert sent.returncode == 4, sent.stderr
        assert "too busy" in sent.error_line(), sent.stderr


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
