"""A python-socketio test client that queues every event it receives."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio

TIMEOUT_SECONDS = 5.0


class QueueingClient:
    """Connects over websocket only; events land in :attr:`events` in arrival order."""

    def __init__(self, url: str = "") -> None:
        self.url = url
        self.sio: Any = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.gone = asyncio.Event()
        self.peer_id = ""
        self.sio.on("*", self._on_event)
        self.sio.on("disconnect", self._on_disconnect)

    async def _on_event(self, event: str, *args: Any) -> None:
        self.events.put_nowait((event, args[0] if len(args) == 1 else args))

    async def _on_disconnect(self, reason: object = None) -> None:
        self.gone.set()

    async def open(self, url: str | None = None) -> None:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await self.sio.connect(
                url or self.url, transports=["websocket"], wait_timeout=TIMEOUT_SECONDS
            )

    async def close(self) -> None:
        if self.sio.connected:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                await self.sio.disconnect()

    async def next_event(self) -> tuple[str, Any]:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            return await self.events.get()

    async def expect(self, event: str, payload: object) -> None:
        assert await self.next_event() == (event, payload)

    async def wait_gone(self) -> None:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await self.gone.wait()
