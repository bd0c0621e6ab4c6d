"""The signaling server a waiting peer runs in its own process in LAN mode.

It is ``sfs serve``'s own code (:func:`sfs.signal.server.run_server`), with its
validation and limits, on one free port of every address (one dual-stack socket
where IPv6 is there, so IPv4 and IPv6 share the port the record names).  It lives
only while the waiting side sets up; peers talk directly after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sfs.signal.server import ServerConfig, run_server

logger = logging.getLogger(__name__)

#: One pairing needs two connections; the rest is room for a few mistaken or
#: hostile neighbours, each held to the usual per-address limits.
EMBEDDED_CONFIG = ServerConfig(host="::", port=0, max_connections=64, page=False)


@dataclass(frozen=True)
class Embedded:
    """:param port: the port every address listens on (for the record)
    :param local_url: how this process reaches it"""

    port: int
    local_url: str


def _listening_socket() -> socket.socket:
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        pass
    else:
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0))
            return sock
        except OSError:  # IPv6 disabled: IPv4 alone
            sock.close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("0.0.0.0", 0))
    return sock


@contextlib.asynccontextmanager
async def embedded_server(config: ServerConfig = EMBEDDED_CONFIG) -> AsyncIterator[Embedded]:
    """Run the signaling server until the block ends."""
    sock = _listening_socket()
    port = int(sock.getsockname()[1])
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_server(config, ready=ready.set_result, sock=sock))
    try:
        waiters: set[asyncio.Future[Any]] = {task, ready}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises why it did not start
            raise RuntimeError("the embedded signaling server stopped at once")
        # 127.0.0.1 reaches a dual-stack socket too (as ::ffff:127.0.0.1).
        yield Embedded(port=port, local_url=f"http://127.0.0.1:{port}")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sock.close()
