"""An emulated long link for benchmarks: two network namespaces joined by a veth pair,
1 Gbit (tbf), and a fixed delay each way on every packet (UDP and TCP alike: WebRTC,
the direct TCP path and signaling) added by nfqdelay (NFQUEUE), because this
machine's kernel has no netem."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("nfqdelay.c")
SENDER_ADDRESS = "10.99.0.1"
RECEIVER_ADDRESS = "10.99.0.2"


def _run(*command: str) -> None:
    subprocess.run(command, check=True)


def build_nfqdelay(workdir: Path) -> Path:
    """Compile nfqdelay; install its build needs by package name when missing."""
    header = Path("/usr/include/libnetfilter_queue/libnetfilter_queue.h")
    if not header.exists() or shutil.which("iptables") is None:
        _run("apt-get", "update", "-qq")
        _run("apt-get", "install", "-y", "-qq", "libnetfilter-queue-dev", "iptables", "gcc")
    binary = workdir / "nfqdelay"
    _run("gcc", "-O2", "-o", str(binary), str(SOURCE), "-lnetfilter_queue", "-lnfnetlink")
    return binary


@dataclass
class LongLink:
    """Namespaces ``<prefix>-s`` (sender, 10.99.0.1) and ``<prefix>-r`` (receiver,
    10.99.0.2); every packet leaving either side waits ``delay_ms``."""

    delay_ms: float = 25.0
    rate: str = "1gbit"
    #: Percentage of UDP packets dropped on arrival at either side (before the delay).
    loss_percent: float = 0.0

    def __post_init__(self) -> None:
        prefix = f"sfsll{os.getpid()}"
        self.sender_ns, self.receiver_ns = f"{prefix}-s", f"{prefix}-r"
        self._delays: list[subprocess.Popen[bytes]] = []
        self._workdir = Path(tempfile.mkdtemp(prefix="sfs-longlink-"))

    def __enter__(self) -> LongLink:
        if os.geteuid() != 0:
            raise SystemExit("--long-link needs root (network namespaces, iptables)")
        binary = build_nfqdelay(self._workdir)
        s, r = self.sender_ns, self.receiver_ns
        _run("ip", "netns", "add", s)
        _run("ip", "netns", "add", r)
        try:
            _run(
                "ip",
                "link",
                "add",
                "veth-s",
                "netns",
                s,
                "type",
                "veth",
                "peer",
                "name",
                "veth-r",
                "netns",
                r,
            )
            for ns, dev, address in (
                (s, "veth-s", SENDER_ADDRESS),
                (r, "veth-r", RECEIVER_ADDRESS),
            ):
                _run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
                _run("ip", "-n", ns, "link", "set", dev, "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
                _run(
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    self.rate,
                    "burst",
                    "256kb",
                    "latency",
                    "50ms",
                )
                if self.loss_percent:
                    _run(
                        *("ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-i", dev),
                        *("-p", "udp", "-m", "statistic", "--mode", "random"),
                        *("--probability", str(self.loss_percent / 100), "-j", "DROP"),
                    )
                _run(
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "iptables",
                    "-A",
                    "INPUT",
                    "-i",
                    dev,
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    "0",
                )
                self._delays.append(
                    subprocess.Popen(
                        ["ip", "netns", "exec", ns, str(binary), "0", str(self.delay_ms)],
                        stderr=subprocess.DEVNULL,
                    )
                )
            time.sleep(0.3)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self._delays:
            process.terminate()
            process.wait(5)
        for ns in (self.sender_ns, self.receiver_ns):
            subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(self._workdir, ignore_errors=True)

    def prefix(self, side: str) -> list[str]:
        return ["ip", "netns", "exec", self.sender_ns if side == "sender" else self.receiver_ns]
