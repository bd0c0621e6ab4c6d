"""Strangers at a direct TCP port, for tests: what anyone who reaches a listening port
can do without the session key.

:class:`Strangers` opens real connections to a listener: silent ones, slow ones that
dribble a well-formed hello (the magic bytes, then a nonce) one byte at a time, and,
while the real peer connects, a steady stream of new silent ones.  Each comes from
one source address or from one of many (any 127.0.0.0/8 address is this machine's).
"""

from __future__ import annotations

import asyncio
import os
from collections import deque

from sfs.peer.proto.crypto import TCP_MAGIC, TCP_NONCE_BYTES

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]

#: How often a slow stranger sends its next byte (a hello takes 24 of them).
DRIBBLE_SECONDS = 0.05
#: How often a new silent stranger knocks while the real peer connects.
KNOCK_SECONDS = 0.01
#: How many of those stay open at once (the newest).
KNOCKS_HELD = 8


def many_sources(count: int, first: int = 2) -> list[str]:
    """``count`` loopback source addresses from 127.0.0.``first`` on."""
    return [f"127.0.{(first + i) // 256}.{(first + i) % 256}" for i in range(count)]


class Strangers:
    """Connections to ``host``:``port`` that never prove anything."""

    def __init__(self, host: str, port: int, sources: list[str]) -> None:
        self.host = host
        self.port = port
        self.sources = sources
        self.silent: list[Connection] = []
        self.slow: list[tuple[Connection, bytes]] = []
        self.knocks = 0
        self._next = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def _connect(self) -> Connection:
        source = self.sources[self._next % len(self.sources)]
        self._next += 1
        return await asyncio.open_connection(self.host, self.port, local_addr=(source, 0))

    async def open(self, *, silent: int, slow: int) -> None:
        """Open ``silent`` silent and ``slow`` slow connections, one after another (the
        listener takes each before the next comes), and start the slow ones dribbling."""
        for _ in range(silent):
            self.silent.append(await self._connect())
        for _ in range(slow):
            self.slow.append((await self._connect(), TCP_MAGIC + os.urandom(TCP_NONCE_BYTES)))
        self._tasks.append(asyncio.ensure_future(self._dribble()))

    async def _dribble(self) -> None:
        for i in range(len(TCP_MAGIC) + TCP_NONCE_BYTES):
            for (_, writer), hello in self.slow:
                if not writer.is_closing():
                    writer.write(hello[i : i + 1])
            await asyncio.sleep(DRIBBLE_SECONDS)

    def keep_knocking(self, most: int = 3000) -> None:
        """Go on opening silent connections (at most ``most``) until the listener is
        gone: as the real peer connects, and after."""
        self._tasks.append(asyncio.ensure_future(self._knock(most)))

    async def _knock(self, most: int) -> None:
        recent: deque[asyncio.StreamWriter] = deque()
        try:
            for _ in range(most):
                try:
                    _, writer = await self._connect()
                except OSError:  # the listener closed: the choice is made
                    return
                self.knocks += 1
                recent.append(writer)
                if len(recent) > KNOCKS_HELD:
                    recent.popleft().transport.abort()
                await asyncio.sleep(KNOCK_SECONDS)
        finally:
            for writer in recent:
                writer.transport.abort()

    def closed_by_listener(self) -> int:
        """How many of the silent and slow connections the listener has closed."""
        connections = [*self.silent, *(c for c, _ in self.slow)]
        return sum(reader.at_eof() or reader.exception() is not None for reader, _ in connections)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, writer in [*self.silent, *(c for c, _ in self.slow)]:
            writer.transport.abort()
