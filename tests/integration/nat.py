"""Two home routers and an "internet" in network namespaces, real coturn, and sfs
processes across them (issue 11, the NAT matrix).

``nat_lab()`` builds, for one test, the topology of ``../shared/network-testing.md``::

                         pub  (bridge br0 10.200.0.1/24: sfs serve + coturn)
                  /                                        \\
    nat1  wan 10.200.0.11                           nat2  wan 10.200.0.12
    LAN bridge 192.168.101.1/24                     LAN 192.168.102.1/24
      |-- peer1   192.168.101.10                      |-- peer2  192.168.102.10
      |-- peer1b  192.168.101.11  (same NAT as peer1: the hairpin case)

Each NAT masquerades its LAN ("cone": port-preserving, endpoint-independent mapping;
"symmetric": ``--random-fully``, a new port per destination) and drops unsolicited
inbound traffic as a home router does.  Nothing is connected to this machine's own
namespace: every veth is made inside a namespace of the test's, every name carries
this test run's PID and a counter, and everything is deleted after.
``coturn()`` runs a real ``turnserver`` in ``pub`` with ``use-auth-secret`` (the
secret in a file that ``sfs serve --turn-secret-file`` also reads), and
``nat_server()`` the real ``sfs serve`` beside it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    ServerProcess,
    read_line_matching,
    sfs_command,
    start_server,
    stop_process,
)
from tests.integration.lan import Host
from tests.integration.peers import CODE_RE, Finished, Receiver, run_sfs

PUB_IP = "10.200.0.1"
SECOND_PUB_IP = "10.200.0.2"
TURN_PORT = 3478
STUN_URL = f"stun:{PUB_IP}:{TURN_PORT}"
TURN_URLS = (
    f"turn:{PUB_IP}:{TURN_PORT}?transport=udp",
    f"turn:{PUB_IP}:{TURN_PORT}?transport=tcp",
)
#: A neighbour nobody owns on pub's bridge: the "internet" default route leads there.
_BLACK_HOLE = ("10.200.0.254", "02:00:00:00:00:fe")
_STARTUP_SECONDS = 15

NatMode = Literal["cone", "symmetric"]

_counter = itertools.count()


def require_tools(*tools: str) -> None:
    """Skip (with the reason) unless root with ``ip`` and each of ``tools``."""
    if os.geteuid() != 0:
        pytest.skip("the NAT matrix needs root (network namespaces, iptables)")
    missing = [tool for tool in ("ip", *tools) if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"not installed: {', '.join(missing)} (scripts/test installs them as root: "
            "iproute2, iptables, conntrack, coturn, faketime)"
        )


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _in(netns: str, *command: str, check: bool = True) -> None:
    done = subprocess.run(["ip", "netns", "exec", netns, *command], capture_output=True, text=True)
    if check and done.returncode:
        raise RuntimeError(f"in {netns}: {' '.join(command)}: {done.stderr.strip()}")


@dataclass(frozen=True)
class NatLab:
    pub: Host
    nat1: Host
    nat2: Host
    peer1: Host
    peer1b: Host
    peer2: Host

    def _nats(self, which: tuple[int, ...]) -> list[Host]:
        return [(self.nat1, self.nat2)[n - 1] for n in which or (1, 2)]

    def set_nat(self, mode: NatMode, *which: int) -> None:
        """NAT ``which`` (1, 2; both if none given) maps as ``mode`` from now on; its
        old mappings are forgotten."""
        for nat in self._nats(which):
            _in(nat.netns, "iptables", "-t", "nat", "-F")
            masquerade = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan"]
            masquerade += ["-j", "MASQUERADE"]
            if mode == "symmetric":
                masquerade.append("--random-fully")
            _in(nat.netns, *masquerade)
            self._forget(nat)

    def block_udp(self, blocked: bool = True) -> None:
        """Drop (or stop dropping) every UDP packet leaving either LAN: only TCP,
        so only TURN over TCP, gets out, as behind a UDP-hostile firewall."""
        for nat in self._nats(()):
            rule = ["FORWARD", "-o", "wan", "-p", "udp", "-j", "DROP"]
            _in(nat.netns, "iptables", "-D", *rule, check=False)
            if blocked:
                _in(nat.netns, "iptables", "-I", *rule)
            self._forget(nat)

    @staticmethod
    def _forget(nat: Host) -> None:
        # conntrack exits 1 when the table is already empty.
        _in(nat.netns, "conntrack", "-F", check=False)


def _host(netns: str, address: str | None) -> Host:
    return Host(netns, address, None)


@contextlib.contextmanager
def nat_lab() -> Iterator[NatLab]:
    """The topology above, both NATs "cone" and UDP not blocked."""
    require_tools("iptables", "conntrack")
    prefix = f"sfs-nat-{os.getpid()}-{next(_counter)}"
    roles = ("pub", "nat1", "nat2", "peer1", "peer1b", "peer2")
    ns = {role: f"{prefix}-{role}" for role in roles}
    created: list[str] = []
    try:
        for role in roles:
            _ip("netns", "add", ns[role])
            created.append(ns[role])
            _in(ns[role], "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1")  # fmt: skip
            _ip("-n", ns[role], "link", "set", "lo", "up")
        pub = ns["pub"]
        _ip("-n", pub, "link", "add", "br0", "type", "bridge")
        _ip("-n", pub, "addr", "add", f"{PUB_IP}/24", "dev", "br0")
        _ip("-n", pub, "link", "set", "br0", "up")
        # The "internet" swallows packets to unknown (private) addresses silently.
        # Without a route there, coturn gets ENETUNREACH relaying to a peer's private
        # host candidate and tears down the whole allocation.
        address, mac = _BLACK_HOLE
        _ip("-n", pub, "neigh", "add", address, "lladdr", mac, "nud", "permanent", "dev", "br0")
        _ip("-n", pub, "route", "add", "default", "via", address)
        for n in (1, 2):
            nat = ns[f"nat{n}"]
            # Made in pub (never in this machine's own namespace), its far end
            # created directly inside the NAT as "wan".
            _ip("-n", pub, "link", "add", f"nat{n}", "type", "veth", "peer", "name", "wan",
                "netns", nat)  # fmt: skip
            _ip("-n", pub, "link", "set", f"nat{n}", "master", "br0", "up")
            _ip("-n", nat, "addr", "add", f"10.200.0.1{n}/24", "dev", "wan")
            _ip("-n", nat, "link", "set", "wan", "up")
            _ip("-n", nat, "route", "add", "default", "via", PUB_IP)
            _in(nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            # Home-router filtering.  Dropping unsolicited inbound packets matters: one
            # delivered locally (even to a closed port) gets a *confirmed* conntrack
            # entry, which then clashes with the peer's own outbound mapping during
            # simultaneous hole punching, so MASQUERADE picks another port and ICE
            # fails.  A dropped packet's entry is never confirmed.
            established = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]
            _in(nat, "iptables", "-A", "INPUT", "-i", "wan", *established)
            _in(nat, "iptables", "-A", "INPUT", "-i", "wan", "-j", "DROP")
            _in(nat, "iptables", "-A", "FORWARD", "-i", "wan", *established)
            _in(nat, "iptables", "-A", "FORWARD", "-i", "wan", "-j", "DROP")
            _ip("-n", nat, "link", "add", "brlan", "type", "bridge")
            _ip("-n", nat, "addr", "add", f"192.168.10{n}.1/24", "dev", "brlan")
            _ip("-n", nat, "link", "set", "brlan", "up")
        hosts: dict[str, Host] = {}
        for role, n, last in (("peer1", 1, 10), ("peer1b", 1, 11), ("peer2", 2, 10)):
            nat = ns[f"nat{n}"]
            address = f"192.168.10{n}.{last}"
            _ip("-n", nat, "link", "add", role, "type", "veth", "peer", "name", "eth0",
                "netns", ns[role])  # fmt: skip
            _ip("-n", nat, "link", "set", role, "master", "brlan", "up")
            _ip("-n", ns[role], "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns[role], "link", "set", "eth0", "up")
            _ip("-n", ns[role], "route", "add", "default", "via", f"192.168.10{n}.1")
            hosts[role] = _host(ns[role], address)
        lab = NatLab(
            pub=_host(pub, PUB_IP),
            nat1=_host(ns["nat1"], "10.200.0.11"),
            nat2=_host(ns["nat2"], "10.200.0.12"),
            peer1=hosts["peer1"],
            peer1b=hosts["peer1b"],
            peer2=hosts["peer2"],
        )
        lab.set_nat("cone")
        yield lab
    finally:
        for name in reversed(created):
            _end_processes_in(name)
            subprocess.run(["ip", "netns", "del", name], check=False)


def _end_processes_in(netns: str) -> None:
    """Kill, by PID, what a failed test left running in its own namespace (a
    namespace is only gone once nothing runs in it)."""
    done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    for pid in done.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)


# -- coturn and sfs serve in pub ------------------------------------------------------------


@dataclass
class Coturn:
    process: subprocess.Popen[bytes]
    log: Path
    #: The ``static-auth-secret``, for ``sfs serve --turn-secret-file``.
    secret_file: Path

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _listening(netns: str, protocol: str) -> bool:
    shown = subprocess.run(
        ["ip", "netns", "exec", netns, "ss", "-Hln", protocol, "src", f"{PUB_IP}:{TURN_PORT}"],
        capture_output=True,
        text=True,
    ).stdout
    return f"{PUB_IP}:{TURN_PORT}" in shown


@contextlib.contextmanager
def coturn(
    lab: NatLab, tmp: Path, *, clock_ahead: str | None = None, second_ip: bool = False
) -> Iterator[Coturn]:
    """A real coturn (STUN + TURN over UDP and TCP) on 10.200.0.1:3478 in pub, with
    coturn's REST credentials under a secret made for this test.

    ``clock_ahead`` (libfaketime's "+2h", say) sets coturn's wall clock that far
    ahead of everyone else's: every credential ``sfs serve`` issues for less than
    that has already expired when coturn checks it.  ``second_ip`` makes it listen on
    SECOND_PUB_IP too: two STUN servers, as `sfs check` needs to tell the NAT's
    mapping behaviour.
    """
    require_tools("turnserver", "ss", *(["faketime"] if clock_ahead else []))
    folder = tmp / "coturn"
    folder.mkdir()
    secret_file = folder / "secret"
    secret_file.write_text(secrets.token_urlsafe(32) + "\n")
    secret_file.chmod(0o600)
    config = folder / "turnserver.conf"
    # A config file rather than options, so the secret never shows in `ps`.
    if second_ip:
        _ip("-n", lab.pub.netns, "addr", "add", f"{SECOND_PUB_IP}/24", "dev", "br0")
    settings = [
        *([f"listening-ip={SECOND_PUB_IP}"] if second_ip else []),
        f"listening-ip={PUB_IP}",
        f"relay-ip={PUB_IP}",
        f"listening-port={TURN_PORT}",
        "use-auth-secret",
        f"static-auth-secret={secret_file.read_text().strip()}",
        "realm=sfs.test",
        "fingerprint",
        # Production practice, and the second fix of the ENETUNREACH trap: never
        # relay to the LANs' private addresses.
        "denied-peer-ip=192.168.0.0-192.168.255.255",
        "no-multicast-peers",
        "no-tls",
        "no-dtls",
        "no-cli",
        "min-port=49152",
        "max-port=49352",
        f"userdb={folder / 'turndb'}",
        f"pidfile={folder / 'turnserver.pid'}",
        "log-file=stdout",
        "simple-log",
    ]
    config.write_text("\n".join(settings) + "\n")
    config.chmod(0o600)
    log = folder / "turnserver.log"
    command = ["turnserver", "-c", str(config)]
    env = dict(os.environ)
    if clock_ahead:
        command = ["faketime", "-f", clock_ahead, *command]
        env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"  # coturn's timers keep their pace
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["ip", "netns", "exec", lab.pub.netns, *command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = Coturn(process, log, secret_file)
    try:
        deadline = time.monotonic() + _STARTUP_SECONDS
        while not (_listening(lab.pub.netns, "-u") and _listening(lab.pub.netns, "-t")):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"turnserver did not start:\n{server.log_tail()}")
            time.sleep(0.1)
        yield server
    finally:
        stop_process(process)


def turn_args(secret_file: Path) -> tuple[str, ...]:
    """The `sfs serve` options that hand out the lab's STUN and TURN servers."""
    args = ["--stun", STUN_URL]
    for url in TURN_URLS:
        args += ["--turn", url]
    return (*args, "--turn-secret-file", str(secret_file))


@contextlib.contextmanager
def nat_server(lab: NatLab, tmp: Path, *args: str) -> Iterator[ServerProcess]:
    """A real `sfs serve ARGS` on 10.200.0.1 in pub (a free port)."""
    server = start_server(tmp, *args, netns=lab.pub.netns, host=PUB_IP)
    try:
        yield server
    finally:
        stop_process(server.process)


# -- sfs peers behind the NATs --------------------------------------------------------------


def nat_env(server: ServerProcess) -> dict[str, str]:
    """The environment of a peer that uses ``server``, with every local address
    (no ``SFS_ICE_ADDRESSES``): ICE finds its own way through the NATs."""
    env = dict(os.environ)
    for name in ("SFS_ICE_ADDRESSES", "SFS_DEBUG"):
        env.pop(name, None)
    env["SFS_SERVER"] = server.url
    return env


def start_receiver(host: Host, server: ServerProcess, out_dir: Path, *args: str) -> Receiver:
    """`sfs receive --yes --output OUT_DIR ARGS` on ``host``, once it shows its code."""
    out_dir.mkdir(exist_ok=True)
    stderr_path = out_dir.parent / f"receive-{time.monotonic_ns()}.err"
    with open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            sfs_command("receive", "--yes", "--output", str(out_dir), *args, netns=host.netns),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=nat_env(server),
        )
    try:
        code = read_line_matching(process, CODE_RE).group(1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nits stderr:\n{stderr_path.read_text()}") from None
    return Receiver(process, code, stderr_path)


def run_sender(
    host: Host, server: ServerProcess, *args: str, timeout: float = PROCESS_TIMEOUT_SECONDS
) -> Finished:
    """`sfs send --name tester ARGS` on ``host``, to its end."""
    return run_sfs(
        "send", "--name", "tester", *args, env=nat_env(server), netns=host.netns, timeout=timeout
    )
