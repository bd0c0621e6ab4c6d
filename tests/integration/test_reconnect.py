"""Sessions that survive an outage (issue 28): real `sfs serve`, real peers, real
outages; each time the transfer finishes on its own, verified by SHA-256, with no new
code, and both sides say they reconnected.

The outages: the receiver stopped (SIGSTOP) long past the idle timeout, then let go;
the sender's link cut and brought back with a new address (namespaces on a bridge,
the link slowed by tbf so the cut falls mid-transfer), over the direct TCP path, over
WebRTC, and on a LAN with no server; `sfs serve` killed and restarted under a transfer
through its relay. What must NOT get in or reconnect: a server replaying the first
set-up into every meeting, a Ctrl-C (CANCEL) on either side, and
``--reconnect-window 0``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import (
    ServerProcess,
    in_netns,
    peer_env,
    sfs_command,
    sha256_file,
    start_server,
    stop_process,
)
from tests.evil_server import ReplayAtRendezvous, serve_evil
from tests.integration.lan import Host, lan_hosts, start, start_waiting
from tests.integration.peers import Finished, Receiver, make_file, start_receiver
from tests.integration.test_faults import finish, part_size, wait_for_progress

pytestmark = pytest.mark.slow

SIZE = 96 * 1024 * 1024
#: The peers' own idle timeout is 10 s: an outage longer than that breaks the session.
OUTAGE_SECONDS = 20
#: tbf on a link: 96 MiB take ~10 s at 80 Mbit/s, time to cut mid-transfer.
SLOW_LINK = ("tbf", "rate", "80mbit", "burst", "1mb", "latency", "100ms")


def start_sender(
    server: ServerProcess,
    code: str,
    src: Path,
    *args: str,
    netns: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`sfs send ARGS CODE SRC`; ``env`` adds to peer_env()."""
    return subprocess.Popen(
        sfs_command("send", *args, code, str(src), netns=netns),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**peer_env(server.url), **(env or {})},
    )


def check_reconnected(sent: Finished, received: Finished, src: Path, out: Path) -> None:
    assert sent.returncode == 0, sent.stderr
    assert received.returncode == 0, received.stderr
    assert sha256_file(out / src.name) == sha256_file(src)
    assert sorted(os.listdir(out)) == [src.name], "no partial copy or record left"
    for said in (sent, received):
        assert "Connection lost; reconnecting (for up to 5 min)…" in said.stderr, said.stderr
        assert "Reconnected (" in said.stderr, said.stderr
    assert "1 reconnect" in sent.stdout, sent.stdout
    assert "1 reconnect" in received.stdout, received.stdout
    # What each side said, for the record (pytest -s shows it).
    for side, said in (("sender", sent), ("receiver", received)):
        lines = [line for line in said.stderr.splitlines() if "onnect" in line]
        print(f"{side}: {' | '.join(lines)} | {said.stdout.strip()}")


@dataclass
class Moving:
    """A transfer a quarter done, in one namespace whose loopback is slowed."""

    src: Path
    out: Path
    receiver: Receiver
    sender: subprocess.Popen[bytes]


@contextmanager
def moving(tmp: Path, netns: str, *sender_args: str) -> Iterator[Moving]:
    """`sfs serve`, `sfs receive` and `sfs send --transport tcp SENDER_ARGS` in
    ``netns``, its loopback slowed by tbf; yields once a quarter of the file is over."""
    in_netns(netns, "tc", "qdisc", "add", "dev", "lo", "root", *SLOW_LINK)
    server = start_server(tmp, netns=netns)
    try:
        src = make_file(tmp / "big.bin", SIZE)
        out = tmp / "out"
        receiver = start_receiver(server, out, "--yes", netns=netns)
        sender = start_sender(
            server, receiver.code, src, "--transport", "tcp", *sender_args, netns=netns
        )
        wait_for_progress(out, "big.bin", SIZE // 4, sender=sender, receiver=receiver)
        yield Moving(src, out, receiver, sender)
    finally:
        stop_process(server.process)


def test_a_receiver_stopped_for_30_s_comes_back_and_the_transfer_finishes(
    tmp_path: Path, netns: str
) -> None:
    """SIGSTOP on the receiver for 30 s (a laptop's lid, a phone's sleep): the sender
    gives up on the connection after 10 s and looks for the receiver at their
    rendezvous; the receiver, let go, finds its connection dead and waits there; they
    meet, and only the rest is sent."""
    with moving(tmp_path, netns) as m:
        m.receiver.process.send_signal(signal.SIGSTOP)
        time.sleep(30)
        held = part_size(m.out, "big.bin")
        m.receiver.process.send_signal(signal.SIGCONT)
        sent, received = finish(m.sender, 120), m.receiver.finish(120)
    check_reconnected(sent, received, m.src, m.out)
    assert 0 < held < SIZE
    assert "resumed" not in sent.stdout.replace("1 reconnect", "")


@contextmanager
def server_and_peers(tmp: Path) -> Iterator[tuple[ServerProcess, Host, Host]]:
    """Three hosts on one bridge: `sfs serve`, the receiver, the sender (its link
    slowed by tbf)."""
    with lan_hosts(3) as (server_host, receiver_host, sender_host):
        sender_host.run("tc", "qdisc", "add", "dev", "eth0", "root", *SLOW_LINK)
        assert server_host.ipv4 is not None
        server = start_server(tmp, netns=server_host.netns, host=server_host.ipv4)
        try:
            yield server, receiver_host, sender_host
        finally:
            stop_process(server.process)


@pytest.mark.parametrize("transport", ["tcp", "datachannel"])
def test_the_sender_loses_its_link_for_20_s_and_comes_back_with_a_new_address(
    tmp_path: Path, transport: str
) -> None:
    """The sender's link goes down for 20 s (a laptop changing Wi-Fi) and comes back
    with another address: both sides notice, meet at their rendezvous through the
    same server, choose a transport afresh (the old address is gone), and the
    96 MiB finish, verified."""
    src = make_file(tmp_path / "big.bin", SIZE)
    out = tmp_path / "out"
    with server_and_peers(tmp_path) as (server, receiver_host, sender_host):
        # Host candidates on every address of each namespace (its eth0 only).
        receiver = start_receiver(
            server, out, "--yes", netns=receiver_host.netns, env={"SFS_ICE_ADDRESSES": ""}
        )
        sender = start_sender(
            server, receiver.code, src, "--transport", transport, netns=sender_host.netns,
            env={"SFS_ICE_ADDRESSES": ""},
        )  # fmt: skip
        wait_for_progress(out, "big.bin", SIZE // 4, sender=sender, receiver=receiver)
        cut_and_move(sender_host)
        sent, received = finish(sender, 180), receiver.finish(180)
    check_reconnected(sent, received, src, out)
    if transport == "tcp":
        assert "direct" in sent.stdout, sent.stdout


def test_on_the_lan_with_no_server_the_sender_comes_back_with_a_new_address(
    tmp_path: Path,
) -> None:
    """LAN mode, no server anywhere: the receiver advertises the rendezvous as it
    advertised its code (its embedded server, mDNS), the sender, back after 20 s with
    another address, probes for it and finds it; the transfer finishes, verified."""
    src = make_file(tmp_path / "big.bin", SIZE)
    out = tmp_path / "out"
    out.mkdir()
    with lan_hosts(2) as (receiver_host, sender_host):
        sender_host.run("tc", "qdisc", "add", "dev", "eth0", "root", *SLOW_LINK)
        receiver = start_waiting(receiver_host, tmp_path, "receive", "--yes", "-o", str(out))
        sender_err = tmp_path / "sender.err"
        sender = start(sender_host, "send", receiver.code, str(src), stderr_path=sender_err)
        try:
            wait_for_progress(out, "big.bin", SIZE // 4, sender=sender, receiver=receiver)
            cut_and_move(sender_host)
            stdout, _ = sender.communicate(timeout=180)
        finally:
            stop_process(sender)
        received = receiver.finish(180)
    sent = Finished(sender.returncode, stdout.decode(), sender_err.read_text(errors="replace"))
    check_reconnected(sent, received, src, out)
    assert "direct over TCP" in sent.stdout, sent.stdout


def cut_and_move(host: Host) -> None:
    """The host's link down for OUTAGE_SECONDS, then up with another address (a
    laptop that changed Wi-Fi)."""
    assert host.ipv4 is not None
    host.run("ip", "link", "set", "eth0", "down")
    time.sleep(OUTAGE_SECONDS)
    host.run("ip", "addr", "flush", "dev", "eth0")
    host.run("ip", "addr", "add", f"{host.ipv4.rsplit('.', 1)[0]}.99/24", "dev", "eth0")
    host.run("ip", "link", "set", "eth0", "up")


def test_the_server_killed_and_restarted_mid_transfer_is_survived(
    tmp_path: Path, netns: str
) -> None:
    """The transfer runs through the server's relay (`--relay only`), so killing
    `sfs serve` breaks it; the server comes back 5 s later on the same port, having
    forgotten everything: the receiver registers its rendezvous again, the sender
    finds it, and the transfer resumes through the new server's relay."""
    in_netns(netns, "tc", "qdisc", "add", "dev", "lo", "root", *SLOW_LINK)
    port = "38417"  # the namespace is the test's own: nothing else listens there
    server = start_server(tmp_path, "--port", port, netns=netns)
    src = make_file(tmp_path / "big.bin", SIZE)
    out = tmp_path / "out"
    try:
        receiver = start_receiver(server, out, "--yes", "--relay", "only", netns=netns)
        sender = start_sender(server, receiver.code, src, "--relay", "only", netns=netns)
        wait_for_progress(out, "big.bin", SIZE // 4, sender=sender, receiver=receiver)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        time.sleep(5)
        server = start_server(tmp_path, "--port", port, netns=netns)
        sent, received = finish(sender, 180), receiver.finish(180)
    finally:
        stop_process(server.process)
    check_reconnected(sent, received, src, out)
    assert "relayed by" in sent.stdout, sent.stdout


def test_ctrl_c_while_reconnecting_tells_the_other_side(tmp_path: Path, netns: str) -> None:
    """The sender is stopped; the receiver notices and waits at the rendezvous; its
    user presses Ctrl-C there. The sender, let go, comes to the rendezvous and is told
    at once (the receiver meets it once more only to say so): it stops in seconds,
    not after the 5-minute window."""
    with moving(tmp_path, netns) as m:
        m.sender.send_signal(signal.SIGSTOP)
        receiver_lines = Lines(m.receiver.stderr_path)
        receiver_lines.wait_for("Connection lost; reconnecting", 30)
        m.receiver.process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        m.sender.send_signal(signal.SIGCONT)
        started = time.monotonic()
        received = m.receiver.finish(30)
        sent = finish(m.sender, 60)
        took = time.monotonic() - started
    assert received.returncode == 130, received.stderr
    assert "Telling the other side…" in received.stderr
    assert sent.returncode == 7, sent.stderr
    assert "cancel" in sent.error_line(), sent.stderr
    assert took < 30
    assert not (m.out / "big.bin").exists()


class Lines:
    """The lines a process writes to its stderr file, as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} in {timeout} s:\n{self.path.read_text()[-3000:]}")


def test_with_reconnect_window_0_an_outage_ends_the_session_as_before(
    tmp_path: Path, netns: str
) -> None:
    with moving(tmp_path, netns, "--reconnect-window", "0") as m:
        m.receiver.process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        sent = finish(m.sender, 60)
        took = time.monotonic() - started
        m.receiver.process.send_signal(signal.SIGCONT)
        m.receiver.stop()
    assert sent.returncode == 7, sent.stderr
    assert "lost the connection" in sent.error_line()
    assert "reconnecting" not in sent.stderr
    assert took < 30


@pytest.mark.parametrize("who", ["sender", "receiver"])
def test_ctrl_c_on_either_side_ends_both_at_once_with_no_retry(
    tmp_path: Path, netns: str, who: str
) -> None:
    with moving(tmp_path, netns) as m:
        (m.sender if who == "sender" else m.receiver.process).send_signal(signal.SIGINT)
        started = time.monotonic()
        sent, received = finish(m.sender, 60), m.receiver.finish(60)
        took = time.monotonic() - started
    other = received if who == "sender" else sent
    assert other.returncode == 7, other.stderr
    assert "cancel" in other.error_line().lower(), other.stderr
    for said in (sent, received):
        assert "reconnecting" not in said.stderr, said.stderr
    assert took < 15


async def test_a_replayed_message_of_the_first_set_up_gets_no_one_in(tmp_path: Path) -> None:
    """A server (or anyone) that captured the first set-up plays its SPAKE2 message
    into every attempt to meet again: each fresh SPAKE2 then gives the two sides
    different keys, nothing opens, nothing moves; past the window both stop as before,
    the partial copy kept and nothing at the final name. Nothing but delay."""
    attack = ReplayAtRendezvous()
    src = make_file(tmp_path / "big.bin", 48 * 1024 * 1024)
    out = tmp_path / "out"
    out.mkdir()
    window = ("--reconnect-window", "20")
    logs = {name: tmp_path / f"{name}.err" for name in ("sender", "receiver")}

    def said() -> str:
        return "\n".join(f"{n}:\n{p.read_text(errors='replace')[-3000:]}" for n, p in logs.items())

    async with serve_evil(attack) as (url, _):
        env = {**peer_env(url), "SFS_QUIC": "0"}
        receiver = await _spawn(logs["receiver"], env, "receive", "--yes", "-o", str(out), *window)
        assert receiver.stdout is not None
        async with asyncio.timeout(30):
            code = re.search(rb"Code: (\S+)", await receiver.stdout.readline())
        assert code is not None
        sender = await _spawn(
            logs["sender"], env, "send", "--transport", "datachannel", "--chunk-size", "4096",
            *window, code.group(1).decode(), str(src),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while part_size(out, "big.bin") < 1024 * 1024:
                assert time.monotonic() < deadline, said()
                await asyncio.sleep(0.05)
            receiver.send_signal(signal.SIGSTOP)
            await asyncio.sleep(12)
            receiver.send_signal(signal.SIGCONT)
            try:
                async with asyncio.timeout(90):
                    await asyncio.gather(sender.communicate(), receiver.communicate())
            except TimeoutError:
                raise AssertionError("the peers did not stop in 90 s\n" + said()) from None
        finally:
            for process in (sender, receiver):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    assert attack.replayed > 0, "the attack never ran\n" + said()
    for process, log in ((sender, logs["sender"]), (receiver, logs["receiver"])):
        text = log.read_text(errors="replace")
        assert process.returncode == 7, text
        assert "Connection lost; reconnecting (for up to 20 s)…" in text
        assert "did not come back within 20 s" in text
        assert "Reconnected" not in text
    assert not (out / "big.bin").exists()
    assert 0 < part_size(out, "big.bin") < src.stat().st_size


async def _spawn(log: Path, env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    """`sfs ARGS`, its stdout a pipe, its stderr into ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        return await asyncio.create_subprocess_exec(
            *sfs_command(*args), stdout=asyncio.subprocess.PIPE, stderr=fd, env=env
        )
    finally:
        os.close(fd)


def test_a_senders_ctrl_c_behind_unread_data_still_ends_the_receiver_at_once(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """The receiver reads at 2 MiB/s (--limit-rate), so megabytes wait in the buffers
    between the two when the sender's user presses Ctrl-C: the CANCEL is behind them.
    The sender keeps the connection until they have left it (closed before, the CANCEL
    was lost with them, and the receiver took the end for an outage and waited out its
    5-minute window): the receiver reads the CANCEL and stops in seconds (exit 7), its
    partial copy kept."""
    src = make_file(tmp_path / "big.bin", 32 * 1024 * 1024)
    out = tmp_path / "out"
    receiver = start_receiver(sfs_server, out, "--yes", "--limit-rate", "2M")
    sender = start_sender(sfs_server, receiver.code, src)
    wait_for_progress(out, "big.bin", 2 << 20, sender=sender, receiver=receiver)
    sender.send_signal(signal.SIGINT)
    pressed = time.monotonic()
    sent = finish(sender, 40)
    received = receiver.finish(40)
    took = time.monotonic() - pressed
    assert sent.returncode == 130, sent.stderr
    assert "Telling the other side (after the data already on its way)…" in sent.stderr
    assert received.returncode == 7, received.stderr
    assert "the other side stopped the transfer: cancelled by the user" in received.stderr
    assert "reconnecting" not in received.stderr, received.stderr
    assert took < 30, f"the receiver stopped {took:.1f} s after the Ctrl-C"
    assert not (out / "big.bin").exists()
    assert part_size(out, "big.bin") > 0  # kept to resume
