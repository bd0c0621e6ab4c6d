"""A malicious signaling server for tests, built from the real one.

:class:`EvilSignalServer` is the real ``sfs serve`` logic with two seams an attacker
who runs the server controls completely: what each client's event says when it
arrives (:meth:`Attack.incoming`) and what the server sends out
(:meth:`Attack.outgoing`, which may change, drop, delay, replay or add messages).
The attacks below are the ones SECURITY.md lists; tests run real `sfs send` and
`sfs receive` processes against this server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from sfs.peer.proto.crypto import KeyExchange, seal_message
from sfs.signal import messages as m
from sfs.signal.config import ServerConfig
from sfs.signal.server import _SignalServer

Emit = tuple[str, dict[str, object], str]


class Attack:
    """Pass-through; subclasses override what they attack."""

    def incoming(self, server: EvilSignalServer, sid: str, event: str, payload: object) -> object:
        return payload

    def reply(self, server: EvilSignalServer, event: str, ack: dict[str, object]) -> object:
        """The acknowledgement the client gets for ``event``."""
        return ack

    async def outgoing(
        self, server: EvilSignalServer, event: str, data: dict[str, object], to: str
    ) -> list[Emit]:
        return [(event, data, to)]


class EvilSignalServer(_SignalServer):
    def __init__(self, config: ServerConfig, attack: Attack) -> None:
        self.attack = attack
        self.senders: set[str] = set()  # peer IDs that asked for a connection
        super().__init__(config)

    def _guarded(
        self, event: str, handler: Callable[[str, object], Awaitable[dict[str, object]]]
    ) -> Callable[..., Awaitable[dict[str, object]]]:
        async def tampered(sid: str, payload: object) -> dict[str, object]:
            ack = await handler(sid, self.attack.incoming(self, sid, event, payload))
            return self.attack.reply(self, event, ack)  # type: ignore[return-value]

        return super()._guarded(event, tampered)

    async def _emit(self, event: str, data: dict[str, object], to: str) -> None:
        for out_event, out_data, out_to in await self.attack.outgoing(self, event, data, to):
            await super()._emit(out_event, out_data, out_to)

    def role_of(self, sid: str) -> str:
        """Receivers register first and are asked; senders ask."""
        peer_id = self.registry.peer_id_of(sid)
        return "sender" if peer_id in self.senders else "receiver"


@asynccontextmanager
async def serve_evil(attack: Attack) -> AsyncIterator[tuple[str, EvilSignalServer]]:
    """Serve ``attack`` on 127.0.0.1 (a free port) in this event loop; yield its URL."""
    server = EvilSignalServer(ServerConfig(host="127.0.0.1", port=0), attack)
    app = web.Application()
    server.sio.attach(app)

    async def on_shutdown(app: web.Application) -> None:
        await server.close_all()

    app.on_shutdown.append(on_shutdown)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", server
    finally:
        await runner.cleanup()


# -- helpers ------------------------------------------------------------------------------


def flip_sealed(data: dict[str, object]) -> dict[str, object]:
    sealed = bytearray(base64.b64decode(str(data["sealed"])))
    sealed[len(sealed) // 2] ^= 0x01
    return {**data, "sealed": base64.b64encode(bytes(sealed)).decode()}


class TrackSenders(Attack):
    """Remembers which peers are senders (they send connection requests)."""

    def incoming(self, server: EvilSignalServer, sid: str, event: str, payload: object) -> object:
        if event == m.SEND_CONNECTION_REQUEST:
            peer_id = server.registry.peer_id_of(sid)
            if peer_id:
                server.senders.add(peer_id)
        return payload


# -- the attacks ----------------------------------------------------------------------------


class SubstituteSpake2(TrackSenders):
    """A full man in the middle of SPAKE2, guessing the words (one guess per side)."""

    guess = b"able-acid"

    async def outgoing(
        self, server: EvilSignalServer, event: str, data: dict[str, object], to: str
    ) -> list[Emit]:
        if event == m.RECEIVE_PUBLIC_KEY:
            to_sender = server.role_of(to) == "sender"
            receiver_id = server.registry.peer_id_of(to) if not to_sender else str(data["peer_id"])
            # Play the receiver's part towards the sender and vice versa.
            exchange = KeyExchange(
                role="receiver" if to_sender else "sender",
                password=self.guess,
                code_id=receiver_id or "AAA-000",
            )
            data = {**data, "key": base64.b64encode(exchange.message).decode()}
        return [(event, data, to)]


class TamperSealed(Attack):
    """Flips one bit of the sealed offer or answer on its way."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    async def outgoing(
        self, server: EvilSignalServer, event: str, data: dict[str, object], to: str
    ) -> list[Emit]:
        if event == self.kind:
            data = flip_sealed(data)
        return [(event, data, to)]


class SubstituteOffer(Attack):
    """Replaces the offer with the server's own SDP (its own DTLS fingerprint), sealed
    under a key of its choosing: the server cannot know the real one."""

    async def outgoing(
        self, server: EvilSignalServer, event: str, data: dict[str, object], to: str
    ) -> list[Emit]:
        if event == m.OFFER:
            sdp = (
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
                "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
            )
            forged = seal_message(
                key=os.urandom(32),
                kind="offer",
                plaintext=json.dumps({"type": "offer", "sdp": sdp}).encode(),
            )
            data = {**data, "sealed": base64.b64encode(forged).decode()}
        return [(event, data, to)]


@dataclass
class Replay(Attack):
    """Records one session's messages and plays them into the next session."""

    events: tuple[str, ...] = (m.OFFER,)
    recorded: dict[str, dict[str, object]] = field(default_factory=dict)
    session: int = 0

    def start_next_session(self) -> None:
        self.session += 1

    async def outgoing(
        self, server: EvilSignalServer, event: str, data: dict[str, object], to: str
    ) -> list[Emit]:
        if event in self.events:
            if self.session == 0:
                self.recorded[event] = data
            elif event in self.recorded:
                data = {**self.recorded[event], "peer_id": data["peer_id"]}
        return [(event, data, to)]


@dataclass
class ReplayAtRendezvous(Attack):
    """Records the SPAKE2 messages of a session's first set-up and plays them into
    every set-up at a rendezvous (a session meeting again after an outage, issue 28):
    what someone who captured the first set-up could try."""

    events: tuple[str, ...] = (m.RECEIVE_PUBLIC_KEY,)
    recorded: dict[str, dict[str, object]] = field(default_factory=dict)
    replaying: bool = False
    replayed: int = 0

    def incoming(self, server: EvilSignalServer, sid: str, event: str, payload: object) -> object:
        if event == m.REGISTER_PEER and isinstance(payload, dict) and "rendezvous" in payload:
            self.replaying = True
        return payload

    async def outgoing(
        self, server: EvilSignalServer, event: str, data: dict[str, object], to: str
    ) -> list[Emit]:
        if event in self.events:
            if not self.replaying:
                self.recorded.setdefault(event, data)
            elif event in self.recorded:
                # An old message in place of the new one (each side's own is fresh).
                data = {**self.recorded[event], "peer_id": data["peer_id"]}
                self.replayed += 1
        return [(event, data, to)]


@dataclass
class ReplayPairedSession(Attack):
    """Records the SPAKE2 messages and sealed offer of one paired session (`sfs send
    @NAME`, issue 29) while ``mode`` is "record", and plays them into every set-up
    while it is "replay": what a server that keeps a pair's messages could try while
    the pair's rendezvous is the same (one period)."""

    mode: str = "idle"
    events: tuple[str, ...] = (m.RECEIVE_PUBLIC_KEY, m.OFFER)
    recorded: dict[str, dict[str, object]] = field(default_factory=dict)
    replayed: int = 0

    async def outgoing(
        self, server: EvilSignalServer, event: str, data: dict[str, object], to: str
    ) -> list[Emit]:
        if event in self.events:
            if self.mode == "record":
                self.recorded.setdefault(event, data)
            elif self.mode == "replay" and event in self.recorded:
                data = {**self.recorded[event], "peer_id": data["peer_id"]}
                self.replayed += 1
        return [(event, data, to)]


class Drop(Attack):
    def __init__(self, kind: str) -> None:
        self.kind = kind

    async def outgoing(
        self, server: EvilSignalServer, event: str, data: dict[str, object], to: str
    ) -> list[Emit]:
        return [] if event == self.kind else [(event, data, to)]


class DeliverOfferBeforeKey(Attack):
    """Holds the sender's SPAKE2 message to the receiver until after the offer: a
    harmless reordering that the receiver must survive."""

    def __init__(self) -> None:
        self.receiver_sid: str | None = None
        self.held: Emit | None = None

    def incoming(self, server: EvilSignalServer, sid: str, event: str, payload: object) -> object:
        if event == m.ACCEPT_CONNECTION:  # only the receiver accepts
            self.receiver_sid = sid
        return payload

    async def outgoing(
        self, server: EvilSignalServer, event: str, data: dict[str, object], to: str
    ) -> list[Emit]:
        if event == m.RECEIVE_PUBLIC_KEY and to == self.receiver_sid:
            self.held = (event, data, to)
            return []
        if event == m.OFFER and self.held is not None:
            held, self.held = self.held, None
            return [(event, data, to), held]
        return [(event, data, to)]


class Redirect(Attack):
    """Pairs the sender with another receiver than the one it asked for, and relabels
    peer IDs so that each side sees the IDs it expects."""

    def __init__(self) -> None:
        self.asked: str | None = None
        self.decoy: str | None = None
        self.sender_sid: str | None = None

    def incoming(self, server: EvilSignalServer, sid: str, event: str, payload: object) -> object:
        if not isinstance(payload, dict) or "peer_id" not in payload:
            return payload
        if event == m.FIND_PEER or event == m.SEND_CONNECTION_REQUEST:
            self.asked = str(payload["peer_id"])
            self.sender_sid = sid
        if sid == self.sender_sid and payload.get("peer_id") == self.asked:
            return {**payload, "peer_id": self.decoy}
        return payload

    async def outgoing(
        self, server: EvilSignalServer, event: str, data: dict[str, object], to: str
    ) -> list[Emit]:
        if to == self.sender_sid and data.get("peer_id") == self.decoy:
            data = {**data, "peer_id": self.asked}
        return [(event, data, to)]


class Flood(Attack):
    """Before every real message, sends each client a burst of junk: unknown events,
    malformed payloads, and well-formed ones from peers that are not its partner."""

    def __init__(self, burst: int = 300) -> None:
        self.burst = burst
        self.sent = 0

    async def outgoing(
        self, server: EvilSignalServer, event: str, data: dict[str, object], to: str
    ) -> list[Emit]:
        if event in (m.CONNECTION_REQUEST, m.ERROR):
            return [(event, data, to)]  # a fake request would take the code's one try
        junk: list[Emit] = []
        for i in range(self.burst):
            stranger = f"ZZZ-{i % 1000:03d}"
            junk.append(("no_such_event", {"x": i}, to))
            junk.append((m.OFFER, {"peer_id": stranger, "sealed": "AAAA"}, to))
            junk.append((m.RECEIVE_PUBLIC_KEY, {"peer_id": stranger, "key": "AAAA"}, to))
            junk.append((m.PEER_ABORTED, {"peer_id": stranger, "reason": "wrong_code"}, to))
            junk.append((m.PEER_DISCONNECTED, {"peer_id": stranger}, to))
            junk.append((m.ANSWER, {"unexpected": [1, 2, {"deep": "x" * 100}]}, to))
        self.sent += len(junk)
        return [*junk, (event, data, to)]


class HoldOffer(Attack):
    """Holds the sealed offer until the test says go (at most ``seconds``): the sender
    listens for a direct connection meanwhile, and the test can knock on its port first.
    Records every payload it relays, to show that no address travels in clear."""

    def __init__(self, seconds: float = 15.0) -> None:
        self.seconds = seconds
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.relayed: list[str] = []

    async def outgoing(
        self, server: EvilSignalServer, event: str, data: dict[str, object], to: str
    ) -> list[Emit]:
        self.relayed.append(json.dumps(data))
        if event == m.OFFER:
            self.holding.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.seconds)
        return [(event, data, to)]


class HoldDescriptions(Attack):
    """Holds the sealed offer, then the sealed answer, each until the test says go
    (at most ``seconds``): meanwhile the side that sealed it listens for a direct
    connection, and the test can fill its listener with strangers first."""

    def __init__(self, seconds: float = 20.0) -> None:
        self.seconds = seconds
        self.holding = {m.OFFER: asyncio.Event(), m.ANSWER: asyncio.Event()}
        self.release = {m.OFFER: asyncio.Event(), m.ANSWER: asyncio.Event()}

    async def outgoing(
        self, server: EvilSignalServer, event: str, data: dict[str, object], to: str
    ) -> list[Emit]:
        if event in self.holding:
            self.holding[event].set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release[event].wait(), self.seconds)
        return [(event, data, to)]


class ForgeDirectAddresses(Attack):
    """Replaces the sealed offer with one listing the server's own TCP address, sealed
    under a key of its choosing (it cannot know the real one): the receiver must not
    dial it."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def outgoing(
        self, server: EvilSignalServer, event: str, data: dict[str, object], to: str
    ) -> list[Emit]:
        if event == m.OFFER:
            plaintext = {"type": "offer", "sdp": "v=0\r\n", "tcp": [self.address]}
            forged = seal_message(
                key=os.urandom(32), kind="offer", plaintext=json.dumps(plaintext).encode()
            )
            data = {**data, "sealed": base64.b64encode(forged).decode()}
        return [(event, data, to)]
