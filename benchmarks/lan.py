"""Two namespaces on one veth pair, for `scripts/bench --lan`: a LAN where LAN mode
(mDNS and the embedded signaling server) runs with no `sfs serve` anywhere."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

SENDER_ADDRESS = "10.98.0.1"
RECEIVER_ADDRESS = "10.98.0.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


@dataclass
class LanPair:
    """Namespaces ``<prefix>-s`` (sender) and ``<prefix>-r`` (receiver), IPv4 only."""

    def __post_init__(self) -> None:
        prefix = f"sfslan{os.getpid()}"
        self.sender_ns, self.receiver_ns = f"{prefix}-s", f"{prefix}-r"

    def __enter__(self) -> LanPair:
        if os.geteuid() != 0:
            raise SystemExit("--lan needs root (network namespaces)")
        s, r = self.sender_ns, self.receiver_ns
        _ip("netns", "add", s)
        _ip("netns", "add", r)
        try:
            _ip("link", "add", "lan-s", "netns", s, "type", "veth", "peer", "name", "lan-r",
                "netns", r)  # fmt: skip
            for ns, dev, address in ((s, "lan-s", SENDER_ADDRESS), (r, "lan-r", RECEIVER_ADDRESS)):
                subprocess.run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        "sysctl",
                        "-qw",
                        "net.ipv6.conf.all.disable_ipv6=1",
                    ],
                    check=True,
                )
                _ip("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.sender_ns, self.receiver_ns):
            subprocess.run(["ip", "netns", "del", ns], check=False)

    def prefix(self, side: str) -> list[str]:
        return ["ip", "netns", "exec", self.sender_ns if side == "sender" else self.receiver_ns]
