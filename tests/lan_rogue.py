"""A rogue on the LAN, for tests: what anyone on a network can do to a waiting sfs.

    python -m tests.lan_rogue MODE VICTIM_NAME [ARGS...]

It finds the victim's record by its display name (records carry no ID) and then:

``clone N STALLS [PEER_ID]``
    advertises N copies of the victim's record, each pointing at an embedded sfs
    server of its own (the real code, probes answered for a waiting receiver whose
    ID is PEER_ID if given, else a random one: a rogue that does not know the code),
    and STALLS copies pointing at ports that accept and never answer.  Each time a
    joiner registers at one of its servers (the step before any key exchange) it
    prints ``registered``.
``flood SESSIONS SILENT``
    opens SESSIONS Socket.IO sessions to the victim's embedded server, registers
    each, and keeps them idle; and SILENT TCP connections that never send a byte.
    Prints ``flooding A B`` (the sessions and connections that got in), and
    ``all dropped`` once the server has closed every session.
``burn GUESSES``
    what a neighbour without the code can try against the victim: registers at its
    embedded server and asks for a connection to GUESSES random peer IDs, and probes
    for them.  Prints ``burn: K probes passed, L requests accepted``.

It prints ``ready`` once it is in place, then runs until killed (``burn`` exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

import socketio

from sfs.lan.discovery import Browser, advertise, find_lan, open_zeroconf, probe
from sfs.lan.embedded import embedded_server
from sfs.lan.record import Advert, signaling_url
from sfs.signal import messages as m
from sfs.signal.memory_registry import PeerTable

FIND_SECONDS = 15.0


def say(text: str) -> None:
    print(text, flush=True)


async def find_victim(browser: Browser, name: str) -> Advert:
    deadline = time.monotonic() + FIND_SECONDS
    while time.monotonic() < deadline:
        for advert in browser.adverts.values():
            if advert.name == name:
                return advert
        await browser.wait_changed(deadline - time.monotonic())
    raise SystemExit(f"no record named {name!r}")


async def clone(victim: Advert, zeroconf: Any, count: int, stalls: int, peer_id: str) -> None:
    register = PeerTable.register

    def counted(self: PeerTable, sid: str, rendezvous: str | None = None, many: int = 0) -> str:
        say("registered")
        return register(self, sid, rendezvous, many)

    PeerTable.register = counted  # type: ignore[method-assign]
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(count):
            server = await stack.enter_async_context(embedded_server(victim.role))
            server.holding.peer_id = peer_id or m.new_peer_id()
            copy = Advert(victim.role, victim.name, server.port, lan_addresses(), victim.since)
            await stack.enter_async_context(advertise(zeroconf, copy))

        async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.Event().wait()

        for _ in range(stalls):
            server_ = await asyncio.start_server(never_answer, "0.0.0.0", 0)
            stack.push_async_callback(server_.wait_closed)
            stack.callback(server_.close)
            port = int(server_.sockets[0].getsockname()[1])
            copy = Advert(victim.role, victim.name, port, lan_addresses(), victim.since)
            await stack.enter_async_context(advertise(zeroconf, copy))
        say("ready")
        await asyncio.Event().wait()


async def flood(victim: Advert, sessions: int, silent: int) -> None:
    url = signaling_url(victim.addresses[0], victim.port)
    clients: list[Any] = []
    sockets = []
    gone: set[int] = set()  # id() of each client the server disconnected
    changed = asyncio.Event()

    def on_disconnect(client: Any) -> Any:
        async def handler(*_: object) -> None:
            gone.add(id(client))
            changed.set()

        return handler

    for _ in range(sessions):
        client: Any = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        client.on("disconnect", on_disconnect(client))
        try:
            async with asyncio.timeout(3):
                await client.connect(url, transports=["websocket"], wait_timeout=3)
                await client.call(m.REGISTER_PEER, {}, timeout=3)
        except Exception:  # refused: the limit holds
            with contextlib.suppress(Exception):
                await client.disconnect()
            continue
        clients.append(client)
    for _ in range(silent):
        try:
            async with asyncio.timeout(3):
                sockets.append(await asyncio.open_connection(victim.addresses[0], victim.port))
        except (OSError, TimeoutError):
            continue
    say(f"flooding {len(clients)} {len(sockets)}")
    say("ready")
    # Sessions that never ask for a connection are dropped in time.
    while not {id(client) for client in clients} <= gone:
        await changed.wait()
        changed.clear()
    say("all dropped")
    await asyncio.Event().wait()


async def burn(victim: Advert, guesses: int) -> None:
    url = signaling_url(victim.addresses[0], victim.port)
    passed = accepted = 0
    for _ in range(guesses):
        guess = m.new_peer_id()
        found = await probe(victim, peer_id=guess, waiting_role=victim.role)
        passed += found.instance is not None
    client: Any = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    await client.connect(url, transports=["websocket"], wait_timeout=3)
    await client.call(m.REGISTER_PEER, {}, timeout=3)
    for _ in range(guesses):
        ack = await client.call(m.SEND_CONNECTION_REQUEST, {"peer_id": m.new_peer_id()}, timeout=3)
        accepted += isinstance(ack, dict) and ack.get("ok") is True
    await client.disconnect()
    say(f"burn: {passed} probes passed, {accepted} requests accepted")


def lan_addresses() -> tuple[str, ...]:
    return find_lan().addresses


async def main(mode: str, name: str, args: list[str]) -> None:
    zeroconf = open_zeroconf(find_lan())
    try:
        async with Browser(zeroconf) as browser:
            victim = await find_victim(browser, name)
        if mode == "clone":
            peer_id = args[2] if len(args) > 2 else ""
            await clone(victim, zeroconf, int(args[0]), int(args[1]), peer_id)
        elif mode == "flood":
            await flood(victim, int(args[0]), int(args[1]))
        elif mode == "burn":
            await burn(victim, int(args[0]))
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    finally:
        await zeroconf.async_close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
