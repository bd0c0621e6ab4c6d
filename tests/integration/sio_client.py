"""A python-socketio test client that queues every event it receives."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio

from sfs.signal import messages as m
from sfs.signal.client import trust

TIMEOUT_SECONDS = 5.0


class QueueingClient:
    """Connects over websocket only; events land in :attr:`events` in arrival order.

    :param ca_file: certificates to trust for an ``https://`` server (a private CA)
    """

    def __init__(self, url: str = "", *, ca_file: str | None = None) -> None:
        self.url = url
        extra: dict[str, Any] = {}
        if ca_file is not None:
            extra["websocket_extra_options"] = {"ssl": trust(ca_file)}
        self.sio: Any = socketio.AsyncClient(reconnection=False, handle_sigint=False, **extra)
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


Ack = dict[str, Any]


class Peer(QueueingClient):
    """A client that calls with acks, registers and checks refusals."""

    async def connect(self, url: str) -> None:
        await self.open(url)

    async def call(self, event: str, data: object = None) -> Ack:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            ack: Ack = await self.sio.call(event, data, timeout=TIMEOUT_SECONDS)
        return ack

    async def register(self) -> str:
        ack = await self.call(m.REGISTER_PEER, {})
        assert ack["ok"], ack
        self.peer_id = ack["peer_id"]
        return self.peer_id

    async def expect_failure(self, event: str, data: object, code: str) -> None:
        """Send *event*; the ack and the `error` event must both carry *code*."""
        ack = await self.call(event, data)
        assert ack["ok"] is False, ack
        assert ack["error"] == code, ack
        assert isinstance(ack["message"], str)
        assert ack["message"]
        name, payload = await self.next_event()
        assert name == m.ERROR
        assert payload == {"event": event, "error": code, "message": ack["message"]}
