"""A sender with the right code whose sealed offer aims the receiver's dials at
services of the receiver's own machine, for tests.

    python -m tests.hostile_direct_offer SERVER_URL CODE OWN_ADDRESS

Run it in the receiver's network namespace.  It opens traps there (listeners on
every IPv4 address, on a privileged port 22 too, and on every IPv6 address), then
sets up a session with the real `sfs receive` of CODE through SERVER_URL, with its
own ICE and TCP on OWN_ADDRESS, but with a sealed ``tcp`` list naming the traps by
loopback, unspecified, IPv4-mapped, broadcast and privileged-port addresses (8, the
most a list may hold).  Once the session is open (the receiver dialled what it chose
to long before) it takes every connection waiting at the traps and prints one JSON
line: ``{"offered": [...], "knocked": [[trap port, bytes heard], ...]}``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

from sfs.app import PeerOptions, sender_session
from sfs.code import parse_code
from sfs.defaults import Transport
from sfs.peer.transport.tcp import DirectPath
from tests.helpers import QuietUi


def _trap(family: int, host: str, port: int = 0) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _heard(traps: list[socket.socket]) -> list[tuple[int, int]]:
    """Every connection waiting at a trap: (the trap's port, how many bytes it sent)."""
    knocked = []
    for trap in traps:
        while True:
            try:
                conn, _ = trap.accept()
            except BlockingIOError:
                break
            conn.settimeout(2)
            try:
                data = conn.recv(1024)
            except OSError:
                data = b""
            conn.close()
            knocked.append((trap.getsockname()[1], len(data)))
    return knocked


async def main(url: str, code: str, own: str) -> None:
    v4 = _trap(socket.AF_INET, "0.0.0.0")
    privileged = _trap(socket.AF_INET, "0.0.0.0", 22)
    v6 = _trap(socket.AF_INET6, "::")
    p4, p6 = v4.getsockname()[1], v6.getsockname()[1]
    offered = [
        f"127.0.0.1:{p4}",
        f"127.0.0.2:{p4}",
        f"[::1]:{p6}",
        f"0.0.0.0:{p4}",
        f"[::]:{p6}",
        f"[::ffff:127.0.0.1]:{p4}",
        f"{own}:22",
        f"255.255.255.255:{p4}",
    ]
    listen = DirectPath.listen

    async def hostile_listen(self: DirectPath) -> tuple[str, ...]:
        await listen(self)  # really listens (on OWN_ADDRESS), but seals the traps
        return tuple(offered)

    DirectPath.listen = hostile_listen  # type: ignore[method-assign]
    options = PeerOptions(
        reconnect_window=0.0,  # an attacker that vanishes is not waited for
        server_url=url,
        ice_servers=(),
        ice_addresses=(own,),
        connect_timeout=20,
        transport=Transport.TCP,
    )
    async with sender_session(parse_code(code), options, QuietUi()):
        pass
    print(json.dumps({"offered": offered, "knocked": _heard([v4, privileged, v6])}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
