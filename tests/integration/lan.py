"""A local network of namespaces for LAN-mode tests, and sfs processes on it.

``lan_hosts(n)`` builds, for one test, a "switch" namespace holding a bridge and
``n`` host namespaces, each with one veth cable plugged into it: a LAN with
multicast, as at home, where nothing reaches this machine's real interfaces.  Every
name carries this test run's PID and a counter, and everything is deleted after.
No sfs process here has a server: they run in LAN mode (real zeroconf, the
embedded signaling server).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PROCESS_TIMEOUT_SECONDS, read_line_matching, sfs_command, stop_process
from tests.integration.peers import CODE_RE, Finished, Receiver, run_sfs

_counter = itertools.count()


@dataclass(frozen=True)
class Host:
    netns: str
    ipv4: str | None
    ipv6: str | None

    def run(self, *command: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.netns, *command], check=True)


def lan_env() -> dict[str, str]:
    """The environment of an sfs with no server: LAN mode."""
    env = dict(os.environ)
    for name in ("SFS_SERVER", "SFS_ICE_ADDRESSES", "SFS_DEBUG"):
        env.pop(name, None)
    return env


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def require_root() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")


@contextlib.contextmanager
def lan_hosts(count: int, *, ipv4: bool = True, ipv6: bool = False) -> Iterator[list[Host]]:
    """``count`` hosts on one bridge: 10.77.N.i/24 and/or fd77:N::i/64."""
    require_root()
    run = next(_counter)
    tag = f"{os.getpid() % 100000}{run}"
    switch = f"sfs-lan-{tag}-sw"
    names = [f"sfs-lan-{tag}-h{i}" for i in range(count)]
    created: list[str] = []
    try:
        for name in [switch, *names]:
            _ip("netns", "add", name)
            created.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", switch, "link", "set", "br0", "up")
        hosts = []
        for i, name in enumerate(names):
            # Made in the switch namespace (never in this machine's own), then one end
            # moves into the host and is named eth0 there.
            _ip("-n", switch, "link", "add", f"p{i}", "type", "veth", "peer", "name", f"h{i}")
            _ip("-n", switch, "link", "set", f"h{i}", "netns", name)
            _ip("-n", name, "link", "set", f"h{i}", "name", "eth0")
            _ip("-n", switch, "link", "set", f"p{i}", "master", "br0")
            _ip("-n", switch, "link", "set", f"p{i}", "up")
            v4 = f"10.77.{run % 250}.{i + 1}" if ipv4 else None
            v6 = f"fd77:{run % 250}::{i + 1}" if ipv6 else None
            if not ipv6:
                subprocess.run(
                    ["ip", "netns", "exec", name, "sysctl", "-qw",
                     "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
                    check=True,
                )  # fmt: skip
            if v4:
                _ip("-n", name, "addr", "add", f"{v4}/24", "dev", "eth0")
            if v6:
                _ip("-n", name, "addr", "add", f"{v6}/64", "dev", "eth0", "nodad")
            _ip("-n", name, "link", "set", "eth0", "up")
            hosts.append(Host(name, v4, v6))
        if ipv6:
            _wait_for_link_local(hosts)
        yield hosts
    finally:
        for name in reversed(created):
            subprocess.run(["ip", "netns", "del", name], check=False)


def _wait_for_link_local(hosts: list[Host]) -> None:
    """IPv6 mDNS goes out from the link-local address, which needs its DAD first."""
    deadline = time.monotonic() + 10
    for host in hosts:
        while True:
            shown = subprocess.run(
                ["ip", "-n", host.netns, "-6", "addr", "show", "dev", "eth0", "scope", "link"],
                capture_output=True,
                text=True,
            ).stdout
            if "inet6" in shown and "tentative" not in shown:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no usable IPv6 link-local address in {host.netns}")
            time.sleep(0.1)


def _interruptible() -> None:
    # A test run started in the background inherits SIGINT ignored, and Python then
    # installs no Ctrl-C handler: the tests that press Ctrl-C need the default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(host: Host, *args: str, stderr_path: Path) -> subprocess.Popen[bytes]:
    with open(stderr_path, "wb") as err:
        return subprocess.Popen(
            sfs_command(*args, netns=host.netns),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=lan_env(),
            preexec_fn=_interruptible,
        )


class Lines:
    """Every stdout line of a long-running process, read by a thread (a burst of
    lines, such as a table, must not wait in a buffer that select() cannot see)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(raw.decode("utf-8", "replace"))

    def wait_for(self, pattern: str, timeout: float) -> float:
        """Wait until a line matches; return when (monotonic)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if re.search(pattern, line):
                return time.monotonic()
        raise AssertionError(f"no line matching {pattern!r} in {timeout} s; saw {self.seen!r}")


def start_waiting(host: Host, tmp: Path, *args: str) -> Receiver:
    """`sfs ARGS` on ``host`` that shows a code (receive, or send --print-code)."""
    stderr_path = tmp / f"{args[0]}-{time.monotonic_ns()}.err"
    process = start(host, *args, stderr_path=stderr_path)
    try:
        code = read_line_matching(process, CODE_RE).group(1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nits stderr:\n{stderr_path.read_text()}") from None
    return Receiver(process, code, stderr_path, command=args[0])


def run(host: Host, *args: str, timeout: float = PROCESS_TIMEOUT_SECONDS) -> Finished:
    """`sfs ARGS` on ``host``, to its end."""
    return run_sfs(*args, env=lan_env(), netns=host.netns, timeout=timeout)


def stop(process: subprocess.Popen[bytes]) -> None:
    stop_process(process)
