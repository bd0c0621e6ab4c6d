"""The signaling server a waiting peer runs in its own process in LAN mode.

It is ``sfs serve``'s own code (:func:`sfs.signal.server.run_server`), with its
validation and limits, on one free port of every address (one dual-stack socket
where IPv6 is there, so IPv4 and IPv6 share the port the record names).  It lives
only while the waiting side sets up; peers talk directly after that.

Beside signaling it answers two more requests: ``POST PROBE_PATH``, the joining
side's question whether this endpoint holds the code's ID (see
:mod:`sfs.lan.record`), which the record no longer says; and ``POST PAIR_PROBE_PATH``,
a paired device's question whether this is one of its pairs, whose answer only a
paired device can read (:func:`sfs.peer.proto.crypto.answer_pair_probe`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sfs.defaults import MAX_PAIRS
from sfs.errors import CryptoError
from sfs.lan.record import MAX_PROBE_BODY_BYTES, PAIR_PROBE_PATH, PROBE_PATH
from sfs.peer.proto.crypto import (
    PROBE_INSTANCE_BYTES,
    answer_pair_probe,
    answer_probe,
    pair_period,
)
from sfs.signal.config import ServerConfig
from sfs.signal.registry import address_key
from sfs.signal.server import run_server

logger = logging.getLogger(__name__)

#: One pairing needs two connections (the waiting side's own and the joiner's); the
#: rest is room for mistaken or hostile neighbours.  One address may hold only a
#: few, so that a flood from one or a few neighbours cannot fill it, and every slot
#: must make progress: a connection that sends nothing is closed after the header
#: timeout, one that does not register after the register timeout, and one from
#: another machine that has not asked for a connection after the request timeout
#: (a joining sfs asks at once; only the waiting side itself, on loopback, waits).
EMBEDDED_MAX_CONNECTIONS = 64
EMBEDDED_MAX_CONNECTIONS_PER_ADDRESS = 4
EMBEDDED_CONFIG = ServerConfig(
    host="::",
    port=0,
    max_connections=EMBEDDED_MAX_CONNECTIONS,
    max_connections_per_address=EMBEDDED_MAX_CONNECTIONS_PER_ADDRESS,
    # A joining sfs asks at once: the ID space is small, so guessing is slowed.
    max_lookups_per_address=10,
    header_timeout_seconds=5.0,
    join_timeout_seconds=5.0,
    register_timeout_seconds=5.0,
    request_timeout_seconds=10.0,
    page=False,
    # On a LAN the peers reach each other; a relay on one of them would only copy.
    relay=False,
    # Gone once the transfer starts: a page cannot meet its peer here again.
    come_back=False,
    # The waiting side itself: its code's connection, and one per paired device.
    loopback_extra_connections=1 + MAX_PAIRS,
)
#: Probes one address may send per PROBE_WINDOW_SECONDS: each costs a SPAKE2 run
#: (about 10 ms of CPU), and an honest joiner sends one per address it tries.
PROBES_PER_ADDRESS = 8
PROBE_WINDOW_SECONDS = 10.0


@dataclass
class Holding:
    """What the embedded server proves to probes: the waiting peer's ID (None
    until the server has given it one) and role, under a random instance name."""

    role: str
    peer_id: str | None = None
    #: The secrets of the paired devices the waiting side waits for (sfs.pairs).
    pairs: list[bytes] = field(default_factory=list)
    instance: bytes = field(default_factory=lambda: os.urandom(PROBE_INSTANCE_BYTES))
    _recent: dict[str, deque[float]] = field(default_factory=dict)

    def admit(self, key: str, now: float) -> bool:
        """Count a probe from address *key*; False once it sends too many."""
        window = self._recent.setdefault(key, deque())
        while window and window[0] <= now - PROBE_WINDOW_SECONDS:
            window.popleft()
        if len(window) >= PROBES_PER_ADDRESS:
            return False
        window.append(now)
        if len(self._recent) > 4 * EMBEDDED_MAX_CONNECTIONS:  # forget the idle ones
            for idle in [k for k, w in self._recent.items() if not w]:
                del self._recent[idle]
        return True

    async def answer(self, request: web.Request) -> web.Response:
        """``POST PROBE_PATH`` ``{"msg": b64}`` -> ``{"msg", "instance", "proof"}``."""

        def reply(peer_id: str, body: dict[str, Any]) -> dict[str, Any]:
            message = _b64(body["msg"])
            answer, proof = answer_probe(
                peer_id=peer_id, role=self.role, message=message, instance=self.instance
            )
            return {"msg": _text(answer), "instance": _text(self.instance), "proof": _text(proof)}

        return await self._probed(request, reply)

    async def answer_pair(self, request: web.Request) -> web.Response:
        """``POST PAIR_PROBE_PATH`` ``{"nonce": b64}`` -> ``{"nonce", "tags"}``: as
        many tags whatever pairs there are, so anyone may ask and learn nothing."""

        def reply(peer_id: str, body: dict[str, Any]) -> dict[str, Any]:
            asked = _b64(body["nonce"])
            answered, tags = answer_pair_probe(self.pairs, pair_period(time.time()), asked)
            return {"nonce": _text(answered), "tags": [_text(t) for t in tags]}

        return await self._probed(request, reply)

    async def _probed(
        self, request: web.Request, reply: Callable[[str, dict[str, Any]], dict[str, Any]]
    ) -> web.Response:
        """Either probe: 503 before the waiting side has its ID or past an address's
        share, 400 for a body that is not one, else ``reply``'s answer."""
        key = address_key(str(request.remote or "unknown"))
        if self.peer_id is None or not self.admit(key, asyncio.get_running_loop().time()):
            return web.Response(status=503, text="busy")
        body = await request.content.read(MAX_PROBE_BODY_BYTES + 1)
        try:
            if len(body) > MAX_PROBE_BODY_BYTES:
                raise ValueError("too long")
            question = json.loads(body)
            if not isinstance(question, dict):
                raise TypeError("not an object")
            return web.json_response(reply(self.peer_id, question))
        except (ValueError, KeyError, TypeError, binascii.Error, CryptoError):
            return web.Response(status=400, text="bad probe")


def _b64(value: object) -> bytes:
    if not isinstance(value, str):
        raise TypeError("not base64 text")
    return base64.b64decode(value, validate=True)


def _text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class Embedded:
    """:param port: the port every address listens on (for the record)
    :param local_url: how this process reaches it
    :param holding: set its ``peer_id`` to the ID the server gave the waiting side"""

    port: int
    local_url: str
    holding: Holding


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


#: With the page (``--qr``, ``--json``): a browser loads the page's files over a few
#: connections at once (each closed after its one response) beside its socket.
EMBEDDED_PAGE_CONFIG = dataclasses.replace(
    EMBEDDED_CONFIG, page=True, max_connections_per_address=8
)


@contextlib.asynccontextmanager
async def embedded_server(
    role: str, config: ServerConfig = EMBEDDED_CONFIG
) -> AsyncIterator[Embedded]:
    """Run the signaling server until the block ends.

    :param role: the waiting side's role, which probes prove along with the ID
    :param config: EMBEDDED_PAGE_CONFIG to serve the browser page too (as ``sfs
        serve`` does: the same files, headers and Content-Security-Policy)
    """
    sock = _listening_socket()
    port = int(sock.getsockname()[1])
    holding = Holding(role)

    def extend(app: web.Application) -> None:
        app.router.add_post(PROBE_PATH, holding.answer)
        app.router.add_post(PAIR_PROBE_PATH, holding.answer_pair)

    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_server(config, ready=ready.set_result, sock=sock, extend=extend))
    try:
        waiters: set[asyncio.Future[Any]] = {task, ready}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises why it did not start
            raise RuntimeError("the embedded signaling server stopped at once")
        # 127.0.0.1 reaches a dual-stack socket too (as ::ffff:127.0.0.1).
        yield Embedded(port=port, local_url=f"http://127.0.0.1:{port}", holding=holding)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sock.close()
