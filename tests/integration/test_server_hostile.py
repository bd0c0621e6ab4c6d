"""`sfs serve` under hostile input: a real server process, real Socket.IO clients and
hand-written engine.io/Socket.IO frames.

Every malformed, oversized, misaddressed or unknown request must get an error ack
(``{"ok": False, "error": CODE}``) or cost its sender the connection; never a crash,
never a success, never a relay to anyone but the sender's partner.  After each
phase the process must still be alive and answer ``/healthz``, and its log must
hold none of the payloads.  While a flood of such requests runs, two real `sfs`
processes transfer a file through the same server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from sfs.signal import messages as m
from tests.conftest import ServerProcess, sha256_file, start_server, stop_process
from tests.integration.peers import make_file, run_sender, start_receiver
from tests.integration.sio_client import TIMEOUT_SECONDS, QueueingClient

# How long a client watches its queue to show that nothing arrives.
QUIET_SECONDS = 0.3
MARKER = "HOSTILE-MARKER"
MARKER_B64 = base64.b64encode(f"{MARKER}-sealed-payload".encode()).decode()
MIB = 1 << 20
# Larger than every field limit, yet small enough to pass the 256 KiB frame limit.
BIG_CHARS = 200 * 1024
FRAME_LIMIT_BYTES = 256 * 1024
NOBODY = "ZZZ-999"

Ack = dict[str, Any]

# The fields of each client event, with a valid value ("PEER" stands for the partner).
SCHEMAS: dict[str, dict[str, object]] = {
    m.REGISTER_PEER: {"version": 1},
    m.FIND_PEER: {"peer_id": "PEER"},
    m.SEND_CONNECTION_REQUEST: {"peer_id": "PEER"},
    m.ACCEPT_CONNECTION: {"peer_id": "PEER"},
    m.SEND_PUBLIC_KEY: {"peer_id": "PEER", "key": MARKER_B64},
    m.OFFER: {"peer_id": "PEER", "sealed": MARKER_B64},
    m.ANSWER: {"peer_id": "PEER", "sealed": MARKER_B64},
    m.ICE_CANDIDATE: {"peer_id": "PEER", "sealed": MARKER_B64},
    m.ABORT: {"peer_id": "PEER", "reason": "wrong_code"},
}
assert set(SCHEMAS) == m.CLIENT_EVENTS

BAD_PEER_IDS: list[object] = [
    "",
    "abc-123",
    "ABC123",
    "ABC-1234",
    "ABCD-123",
    " ABC-123",
    "ABC-123\n",
    "ÀBC-123",
    "ABC-12\uff13",  # a fullwidth digit
    "ABC-123ABC-123",
    f"{MARKER}-" + "A" * 10_000,
]
BAD_BASE64: list[object] = [
    "",
    "abc",
    "ab=c",
    "YWJj\n",
    " YWJj",
    "YWJj====",
    "YW Jj",
    "YW-_",
    "ÿÿÿÿ",
    "====",
    f"{MARKER}!!",
]
BAD_REASONS: list[object] = ["", "WRONG", "wrong code", "a" * 65, "wrong_code\n", f"{MARKER}"]
BAD_VERSIONS: list[object] = ["1", True, 1.0, 0, 2, -1, 2**70]
WRONG_TYPES: list[object] = [0, 1.5, None, True, False, [], {}, ["ABC-123"], {"a": "ABC-123"}]


def nested_list(depth: int) -> object:
    value: object = MARKER
    for _ in range(depth):
        value = [value]
    return value


def nested_dict(depth: int) -> object:
    value: object = MARKER
    for _ in range(depth):
        value = {"a": value}
    return value


def bad_payloads(event: str, peer: str) -> Iterator[tuple[str, tuple[object, ...]]]:
    """Yield (description, arguments) of every malformed request for *event*.

    The arguments are what the client sends after the event name; apart from the
    defect being described, each payload is valid and addressed to *peer*.
    """
    valid = {k: peer if v == "PEER" else v for k, v in SCHEMAS[event].items()}
    yield "no payload", ()
    yield "two payloads", (valid, valid)
    yield "three payloads", (valid, valid, valid)
    for other in [None, [], [valid], "string", MARKER_B64, 0, 1.5, True, False]:
        yield f"non-dict {other!r:.20}", (other,)
    yield "extra field", ({**valid, "extra": 1},)
    yield "extra long field name", ({**valid, MARKER * 1000: 1},)
    yield "nested list payload", (nested_list(200),)
    yield "nested dict payload", (nested_dict(200),)
    for name in valid:
        missing = {k: v for k, v in valid.items() if k != name}
        if event != m.REGISTER_PEER:  # register_peer has only an optional field
            yield f"missing {name}", (missing,)
        bad_values: list[object] = [
            *WRONG_TYPES,
            nested_list(200),
            nested_dict(200),
            MARKER * (BIG_CHARS // len(MARKER)),
        ]
        if name == "peer_id":
            bad_values += BAD_PEER_IDS
        elif name in ("key", "sealed"):
            limit = m.SEALED_LIMITS.get(event, m.MAX_KEY_CHARS)
            too_long = "A" * (limit + 4)
            bad_values += [*BAD_BASE64, too_long]
        elif name == "reason":
            bad_values += BAD_REASONS
        elif name == "version":
            bad_values += BAD_VERSIONS
        for value in bad_values:
            yield f"{name}={value!r:.30}", ({**valid, name: value},)


# --------------------------------------------------------------------------- clients


class Client(QueueingClient):
    """A python-socketio client that queues every event it receives."""

    async def connect(self) -> Client:
        await self.open()
        return self

    async def call(self, event: str, *args: object) -> Ack:
        """Send *event* with *args* as its arguments (none, one or several)."""
        async with asyncio.timeout(TIMEOUT_SECONDS):
            ack: Ack = await self.sio.call(event, args or None, timeout=TIMEOUT_SECONDS)
        return ack

    async def register(self) -> Client:
        ack = await self.call(m.REGISTER_PEER, {})
        assert ack["ok"] is True, ack
        self.peer_id = ack["peer_id"]
        return self

    async def expect_failure(self, event: str, args: tuple[object, ...], code: str) -> None:
        """The ack and the `error` event must both carry *code*."""
        ack = await self.call(event, *args)
        assert ack["ok"] is False, ack
        assert ack["error"] == code, ack
        assert isinstance(ack["message"], str)
        assert MARKER not in ack["message"]
        name, payload = await self.next_event()
        assert name == m.ERROR, (name, payload)
        assert payload == {"event": event[:64], "error": code, "message": ack["message"]}

    async def expect_silence(self) -> None:
        """Nothing arrives for a while (a bounded wait, not a synchronisation)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(QUIET_SECONDS):
                event = await self.events.get()
                raise AssertionError(f"unexpected event {event!r:.200}")


class RawClient:
    """engine.io v4 + Socket.IO v5 text protocol spoken by hand over aiohttp's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 1
        self.events: list[object] = []

    @classmethod
    async def open(
        cls, session: aiohttp.ClientSession, url: str, *, join: bool = True
    ) -> RawClient:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            ws = await session.ws_connect(
                f"{url}/socket.io/?EIO=4&transport=websocket", max_msg_size=0, autoping=True
            )
            client = cls(ws)
            opening = await ws.receive_str()
            assert opening.startswith("0{"), opening  # engine.io OPEN
            if join:
                await ws.send_str("40")
                joined = await ws.receive_str()
                assert joined.startswith("40{"), joined  # Socket.IO CONNECT
        return client

    @classmethod
    async def try_open(cls, session: aiohttp.ClientSession, url: str) -> RawClient | None:
        """Open and join, or return None (and leave nothing open) if the server is full."""
        try:
            client = await cls.open(session, url, join=False)
        except aiohttp.WSServerHandshakeError:
            return None
        await client.send("40")
        async with asyncio.timeout(TIMEOUT_SECONDS):
            joined = await client.ws.receive_str()
        if joined.startswith("40{"):
            return client
        await client.close()
        return None

    async def send(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame)

    async def call(self, event: object, *args: object) -> object:
        """Send an event with an ack id; return the ack's argument list."""
        ack_id, self.next_id = self.next_id, self.next_id + 1
        await self.send(f"42{ack_id}" + json.dumps([event, *args]))
        prefix = f"43{ack_id}"
        async with asyncio.timeout(TIMEOUT_SECONDS):
            while True:
                text = await self.ws.receive_str()
                if text.startswith(prefix):
                    return json.loads(text[len(prefix) :])
                self.events.append(text)

    async def expect_dropped(self) -> None:
        """The server must end the websocket (whatever it sends first)."""
        async with asyncio.timeout(TIMEOUT_SECONDS):
            while True:
                msg = await self.ws.receive()
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    return

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(TIMEOUT_SECONDS):
                await self.ws.close()


async def assert_serving(server: ServerProcess, *markers: str) -> None:
    """The process is alive, /healthz answers 200 and the log holds no payload."""
    assert server.process.poll() is None, server.log_text()
    async with (
        aiohttp.ClientSession() as session,
        asyncio.timeout(TIMEOUT_SECONDS),
        session.get(f"{server.url}/healthz") as response,
    ):
        assert response.status == 200
    log = server.log_text()
    for marker in (MARKER, MARKER_B64, *markers):
        assert marker not in log, f"{marker!r} in the server log"
    assert "Traceback" not in log, log[-3000:]


async def eventually(
    attempt: Callable[[], Awaitable[bool]], *, seconds: float = TIMEOUT_SECONDS
) -> None:
    """Retry *attempt* until it returns True (the server's bookkeeping is asynchronous)."""
    async with asyncio.timeout(seconds):
        while True:
            if await attempt():
                return
            await asyncio.sleep(0.05)  # a retry interval, not a synchronisation


async def try_connect(url: str) -> Client | None:
    client = Client(url)
    try:
        return await client.connect()
    except socketio.exceptions.ConnectionError:
        return None


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, module_registry_args: list[str]
) -> Iterator[ServerProcess]:
    # Every client here shares 127.0.0.1; the per-address lookup limit is not
    # what these tests are about.
    process = start_server(
        tmp_path_factory.mktemp("hostile"),
        "--max-lookups-per-address",
        "1000",
        *module_registry_args,
    )
    try:
        yield process
    finally:
        stop_process(process.process)


Connect = Callable[..., Awaitable[Client]]


@pytest.fixture
async def connect(server: ServerProcess) -> AsyncIterator[Connect]:
    """``connect(register=True, url=server.url)``; every client is closed afterwards."""
    clients: list[Client] = []

    async def make(*, register: bool = True, url: str = server.url) -> Client:
        client = Client(url)
        clients.append(client)
        await client.connect()
        return await client.register() if register else client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def pair(requester: Client, target: Client) -> None:
    ack = await requester.call(m.SEND_CONNECTION_REQUEST, {"peer_id": target.peer_id})
    assert ack == {"ok": True, "peer_id": target.peer_id}
    await target.expect(m.CONNECTION_REQUEST, {"peer_id": requester.peer_id})
    ack = await target.call(m.ACCEPT_CONNECTION, {"peer_id": requester.peer_id})
    assert ack == {"ok": True, "peer_id": requester.peer_id}
    await requester.expect(m.CONNECTION_ACCEPTED, {"peer_id": target.peer_id})


# --------------------------------------------------------------------------- malformed payloads


@pytest.mark.parametrize("event", sorted(SCHEMAS))
async def test_every_malformed_payload_is_invalid(
    server: ServerProcess, connect: Connect, event: str
) -> None:
    # Set up so that the valid request would succeed: only the defect can fail it.
    sender, partner = await connect(register=event != m.REGISTER_PEER), await connect()
    if event == m.ACCEPT_CONNECTION:
        ack = await partner.call(m.SEND_CONNECTION_REQUEST, {"peer_id": sender.peer_id})
        assert ack["ok"] is True
        await sender.expect(m.CONNECTION_REQUEST, {"peer_id": partner.peer_id})
    elif event not in (m.REGISTER_PEER, m.FIND_PEER, m.SEND_CONNECTION_REQUEST):
        await pair(sender, partner)
    cases = list(bad_payloads(event, partner.peer_id))
    assert len(cases) >= 30
    for description, args in cases:
        try:
            await sender.expect_failure(event, args, m.INVALID)
        except AssertionError as exc:
            raise AssertionError(f"{event} with {description}: {exc}") from exc
    await partner.expect_silence()
    # The connection still works, and the valid request succeeds.
    valid = {k: partner.peer_id if v == "PEER" else v for k, v in SCHEMAS[event].items()}
    assert (await sender.call(event, valid))["ok"] is True
    await assert_serving(server)


@pytest.mark.parametrize(
    "event_field",
    [(event, field) for event, fields in sorted(SCHEMAS.items()) for field in fields],
    ids=lambda ef: "-".join(ef),
)
async def test_one_mib_field_costs_the_connection(
    server: ServerProcess, connect: Connect, event_field: tuple[str, str]
) -> None:
    event, field = event_field
    sender, partner = await connect(), await connect()
    await pair(sender, partner)
    payload = {k: partner.peer_id if v == "PEER" else v for k, v in SCHEMAS[event].items()}
    payload[field] = MARKER * (MIB // len(MARKER))
    async with asyncio.timeout(TIMEOUT_SECONDS):
        await sender.sio.emit(event, payload)
    await sender.wait_gone()
    # Dropping the sender ended its pairing; nothing else reached the partner.
    await partner.expect(m.PEER_DISCONNECTED, {"peer_id": sender.peer_id})
    await partner.expect_silence()
    await assert_serving(server)


# --------------------------------------------------------------------------- event names


async def test_unknown_event_names(server: ServerProcess, connect: Connect) -> None:
    client = await connect()
    for name in [
        "nope",
        "message",
        "connect_error",
        "error",
        "peer_found",
        "peers_updated",
        "Register_peer",
        "register_peer ",
        "",
        "x" * 10_000,
        MARKER * 1000,
    ]:
        for args in [(), ({},), ({"peer_id": NOBODY}, 1)]:
            await client.expect_failure(name, args, m.UNKNOWN_EVENT)
    assert (await client.call(m.FIND_PEER, {"peer_id": NOBODY}))["error"] == m.UNKNOWN_PEER
    await assert_serving(server)


@pytest.mark.parametrize("name", ["connect", "disconnect", "*"])
async def test_reserved_event_names_cannot_reach_internal_handlers(
    server: ServerProcess, connect: Connect, session: aiohttp.ClientSession, name: str
) -> None:
    # python-socketio would route these names to the server's connect, disconnect
    # and catch-all handlers; a client sending them must not fake its own
    # connection or departure (which reset its rate limit or freed its slot).
    forger, partner = await connect(), await connect()
    await pair(forger, partner)
    async with asyncio.timeout(TIMEOUT_SECONDS):
        await forger.sio.emit(name, {})
    await forger.wait_gone()
    await partner.expect(m.PEER_DISCONNECTED, {"peer_id": forger.peer_id})
    # And over a raw websocket, with an ack id and arguments.
    raw = await RawClient.open(session, server.url)
    await raw.send(f'421["{name}",{{}},"client disconnect"]')
    await raw.expect_dropped()
    await raw.close()
    # The partner is free again: it can be paired with a new peer.
    fresh = await connect()
    await pair(fresh, partner)
    await assert_serving(server)


# --------------------------------------------------------------------------- raw frames


GARBAGE_FRAMES: list[str | bytes] = [
    "42[",
    "4",
    "42",
    "42{}",
    "42[]",
    "42[1]",
    "42[null]",
    "42[{}]",
    '42[["find_peer"]]',
    '42"find_peer"',
    "4" + "2" * 200,
    "42" + "1" * 200 + '["find_peer",{}]',
    '45-["find_peer",{"_placeholder":true,"num":0}]',
    '451-["find_peer",{"_placeholder":true,"num":0}]',
    '4999-["find_peer",{"_placeholder":true,"num":0}]',
    "43",
    "431[]",
    '44{"message":"x"}',
    "47",
    "49",
    "4x",
    '42/other,["find_peer",{}]',
    "40/other,",
    '4{"event":"find_peer"}',
    "4" + "[" * 100_000 + "]" * 100_000,
    '421["find_peer",' + "[" * 100_000 + "]" * 100_000 + "]",
    '421["find_peer",' + '{"a":' * 40_000 + "1" + "}" * 40_000 + "]",
    '42["register_peer",' + json.dumps(MARKER * (BIG_CHARS // len(MARKER))) + "]x",
    "x",
    "",
    b"\x00\x01binary",
    b'42["register_peer",{}]',
    b"4" + MARKER.encode() * 1000,
]


async def test_malformed_frames_cost_the_connection(
    server: ServerProcess, session: aiohttp.ClientSession, connect: Connect
) -> None:
    bystander = await connect()
    for frame in GARBAGE_FRAMES:
        raw = await RawClient.open(session, server.url)
        ack = await raw.call(m.REGISTER_PEER, {})
        assert isinstance(ack, list)
        assert ack[0]["ok"] is True
        await raw.send(frame)
        try:
            await raw.expect_dropped()
        except TimeoutError:
            raise AssertionError(f"still connected after {frame[:60]!r}") from None
        finally:
            await raw.close()
    await bystander.expect_silence()
    assert (await bystander.call(m.FIND_PEER, {"peer_id": NOBODY}))["error"] == m.UNKNOWN_PEER
    await assert_serving(server)


async def test_events_before_joining_the_namespace_cost_the_connection(
    server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    raw = await RawClient.open(session, server.url, join=False)
    await raw.send('421["register_peer",{}]')
    await raw.expect_dropped()
    await raw.close()
    await assert_serving(server)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
async def test_oversized_frame_costs_the_connection(
    server: ServerProcess, session: aiohttp.ClientSession, binary: bool
) -> None:
    raw = await RawClient.open(session, server.url)
    text = '42["register_peer",' + json.dumps(MARKER * (2 * MIB // len(MARKER))) + "]"
    # The server may reset the connection as soon as it has read the frame's header,
    # before all 2 MiB are written: that is the drop this test wants, not a failure.
    with contextlib.suppress(ConnectionError):
        await raw.send(text.encode() if binary else text)
    await raw.expect_dropped()
    await raw.close()
    # Just under the limit is still read, and refused politely.
    raw = await RawClient.open(session, server.url)
    filler = "A" * (FRAME_LIMIT_BYTES - 64)
    ack = await raw.call(m.REGISTER_PEER, {"version": filler})
    assert isinstance(ack, list)
    assert ack[0]["error"] == m.INVALID
    await raw.close()
    await assert_serving(server)


async def test_only_the_websocket_transport_is_served(
    server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    async with asyncio.timeout(TIMEOUT_SECONDS):
        async with session.get(f"{server.url}/socket.io/?EIO=4&transport=polling") as response:
            assert response.status == 400
    await assert_serving(server)


def _ws_frame(text: str) -> bytes:
    """A masked client websocket text frame."""
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes([0x81, 0x80 | n])
    elif n < 1 << 16:
        header = bytes([0x81, 0x80 | 126]) + struct.pack("!H", n)
    else:
        header = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", n)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@contextlib.asynccontextmanager
async def slow_reader(
    url: str,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A websocket whose client hardly reads: a tiny receive buffer, read only on demand."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        await loop.sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        async with asyncio.timeout(TIMEOUT_SECONDS):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            writer.write(_ws_frame("40"))
            await writer.drain()
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_until_closed(reader: asyncio.StreamReader) -> None:
    """Read (and discard) until the server closes the TCP connection."""
    async with asyncio.timeout(TIMEOUT_SECONDS):
        with contextlib.suppress(ConnectionError):
            while await reader.read(1 << 16):
                pass


async def test_client_that_never_reads_its_replies_is_dropped(server: ServerProcess) -> None:
    # Each bad event makes the server queue an ack and an `error` event; a client
    # that never reads them must not make that queue grow without bound.  This one
    # only writes, until the server resets the connection.
    async with slow_reader(server.url) as (_, writer):
        frames = _ws_frame('421["find_peer",1]') * 1000

        async def dropped() -> bool:
            try:
                writer.write(frames)
                await writer.drain()
            except ConnectionError:
                return True
            return False

        await eventually(dropped, seconds=3 * TIMEOUT_SECONDS)
    await assert_serving(server)


@contextlib.asynccontextmanager
async def non_reading_partner(
    url: str, sender: Client
) -> AsyncIterator[tuple[asyncio.StreamReader, str]]:
    """A raw websocket client paired with *sender* that stops reading once paired
    (it registers and accepts over the raw socket, reading just those replies)."""
    async with slow_reader(url) as (reader, writer):
        writer.write(_ws_frame('421["register_peer",{}]'))
        async with asyncio.timeout(TIMEOUT_SECONDS):
            # The ack ends with its last key: that sessions may meet again here (issue 28).
            reply = (await reader.readuntil(b'"rendezvous":true}]')).decode("latin-1")
        peer_id = reply.split('"peer_id":"')[1][:7]
        assert m.is_peer_id(peer_id), reply
        assert (await sender.call(m.SEND_CONNECTION_REQUEST, {"peer_id": peer_id}))["ok"]
        writer.write(_ws_frame(f'422["accept_connection",{{"peer_id":"{sender.peer_id}"}}]'))
        await sender.expect(m.CONNECTION_ACCEPTED, {"peer_id": peer_id})
        yield reader, peer_id


async def test_partner_that_never_reads_is_dropped(server: ServerProcess, connect: Connect) -> None:
    sender = await connect()
    async with non_reading_partner(server.url, sender) as (reader, peer_id):
        # Now the partner stops reading while the sender relays large offers.
        sealed = "A" * m.MAX_SEALED_SDP_CHARS
        acks: list[Ack] = []
        for _ in range(2000):
            acks.append(await sender.call(m.OFFER, {"peer_id": peer_id, "sealed": sealed}))
            if not acks[-1]["ok"]:
                break
        assert acks[-1].get("error") == m.NOT_PAIRED, (len(acks), acks[-1])
        await read_until_closed(reader)
    while (event := await sender.next_event())[0] == m.ERROR:
        pass
    assert event == (m.PEER_DISCONNECTED, {"peer_id": peer_id})
    await assert_serving(server)


# --------------------------------------------------------------------------- relay isolation


async def test_relay_only_between_partners(server: ServerProcess, connect: Connect) -> None:
    a, b, c, d = [await connect() for _ in range(4)]
    await pair(a, b)
    await pair(c, d)
    stranger = await connect(register=False)
    for target in (a, b):
        ref = {"peer_id": target.peer_id}
        for event, payload in [
            (m.SEND_PUBLIC_KEY, {**ref, "key": MARKER_B64}),
            (m.OFFER, {**ref, "sealed": MARKER_B64}),
            (m.ANSWER, {**ref, "sealed": MARKER_B64}),
            (m.ICE_CANDIDATE, {**ref, "sealed": MARKER_B64}),
            (m.ABORT, {**ref, "reason": "wrong_code"}),
        ]:
            await c.expect_failure(event, (payload,), m.NOT_PAIRED)
            await stranger.expect_failure(event, (payload,), m.NOT_REGISTERED)
        await c.expect_failure(m.ACCEPT_CONNECTION, (ref,), m.UNKNOWN_PEER)
        await stranger.expect_failure(m.SEND_CONNECTION_REQUEST, (ref,), m.NOT_REGISTERED)
    await c.expect_failure(m.SEND_CONNECTION_REQUEST, ({"peer_id": a.peer_id},), m.BUSY)
    e = await connect()
    await e.expect_failure(m.FIND_PEER, ({"peer_id": a.peer_id},), m.BUSY)
    await e.expect_failure(m.SEND_CONNECTION_REQUEST, ({"peer_id": b.peer_id},), m.BUSY)
    for victim in (a, b, d):
        await victim.expect_silence()
    # Both pairings are intact, and the server names each sender itself.
    for src, dst in ((a, b), (b, a), (c, d)):
        ack = await src.call(m.OFFER, {"peer_id": dst.peer_id, "sealed": "QUJD"})
        assert ack == {"ok": True}
        await dst.expect(m.OFFER, {"peer_id": src.peer_id, "sealed": "QUJD"})
    await assert_serving(server)


# --------------------------------------------------------------------------- connection limit


async def test_max_connections(
    tmp_path: Path, session: aiohttp.ClientSession, registry_args: list[str]
) -> None:
    limit = 3
    server = start_server(tmp_path, "--max-connections", str(limit), *registry_args)
    clients: list[Client] = []
    try:
        clients = [await Client(server.url).connect() for _ in range(limit)]
        assert await try_connect(server.url) is None
        # Neither can bare engine.io sessions that never join the namespace.
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await RawClient.open(session, server.url, join=False)
        # Those admitted are still served.
        a, b, c = clients
        await a.register()
        await b.register()
        await pair(a, b)
        assert (await a.call(m.OFFER, {"peer_id": b.peer_id, "sealed": "QUJD"}))["ok"]
        await b.expect(m.OFFER, {"peer_id": a.peer_id, "sealed": "QUJD"})
        # A client that leaves makes room for exactly one more.
        await c.close()
        newcomer: Client | None = None

        async def admitted() -> bool:
            nonlocal newcomer
            newcomer = await try_connect(server.url)
            return newcomer is not None

        await eventually(admitted)
        assert newcomer is not None
        clients[2] = newcomer
        assert await try_connect(server.url) is None
        # A client dropped for a malformed frame frees its slot at once, not
        # only when the engine.io ping times out.
        await newcomer.close()
        raw: RawClient | None = None

        async def raw_admitted() -> bool:
            nonlocal raw
            raw = await RawClient.try_open(session, server.url)
            return raw is not None

        for frame in ["", "x", "4" + "[" * 100_000, "42["]:
            await eventually(raw_admitted)
            assert raw is not None
            await raw.send(frame)
            await raw.expect_dropped()
            await raw.close()
        clients[2] = Client(server.url)
        await eventually(lambda: _connect_into(clients[2]))
        await assert_serving(server)
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
        stop_process(server.process)


async def _connect_into(client: Client) -> bool:
    try:
        await client.connect()
    except socketio.exceptions.ConnectionError:
        return False
    return True


# --------------------------------------------------------------------------- a transfer under fire


async def _flood(url: str, target: str, stop: asyncio.Event, acks: list[Ack], budget: int) -> None:
    """Hostile traffic of several kinds until *stop* is set or *budget* events are sent.

    :param target: the real receiver's peer ID, which the flood tries to relay to
    :param acks: receives every ack the flood gets
    """
    sent = 0

    async def requests(client: Client, cases: list[tuple[str, tuple[object, ...]]]) -> None:
        nonlocal sent
        for event, args in itertools.cycle(cases):
            if stop.is_set() or sent >= budget:
                return
            sent += 1
            acks.append(await client.call(event, *args))

    async def garbage(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        frames = [*GARBAGE_FRAMES[:12], "4" + "[" * 100_000, '42["disconnect"]', "x", ""]
        for frame in itertools.cycle(frames):
            if stop.is_set() or sent >= budget:
                return
            sent += 1
            raw = await RawClient.open(session, url)
            await raw.send(frame)
            await raw.expect_dropped()
            await raw.close()

    ref = {"peer_id": target}
    relays: list[tuple[str, tuple[object, ...]]] = [
        (m.SEND_PUBLIC_KEY, ({**ref, "key": MARKER_B64},)),
        (m.OFFER, ({**ref, "sealed": MARKER_B64},)),
        (m.ANSWER, ({**ref, "sealed": MARKER_B64},)),
        (m.ICE_CANDIDATE, ({**ref, "sealed": MARKER_B64},)),
        (m.ABORT, ({**ref, "reason": "wrong_code"},)),
        (m.ACCEPT_CONNECTION, (ref,)),
    ]
    malformed = [
        (event, args)
        for event in sorted(SCHEMAS)
        for _, args in bad_payloads(event, target)
        if len(json.dumps(args)) < 8192
    ]
    unknown: list[tuple[str, tuple[object, ...]]] = [
        (name, ({},)) for name in ("message", "x" * 10_000, "peers_updated")
    ]
    plans = [relays, malformed, unknown + relays, malformed[::-1], relays + malformed[:20]]
    clients = [Client(url) for _ in plans]
    async with aiohttp.ClientSession() as session:
        try:
            for client in clients:
                await client.connect()
            for client in clients[:-1]:  # the last one stays unregistered
                await client.register()
            async with asyncio.TaskGroup() as tasks:
                for client, plan in zip(clients, plans, strict=True):
                    tasks.create_task(requests(client, plan))
                tasks.create_task(garbage(session))
        finally:
            for client in clients:
                await client.close()


async def test_transfer_succeeds_during_a_flood(tmp_path: Path, registry_args: list[str]) -> None:
    server = start_server(tmp_path, *registry_args)
    try:
        src = make_file(
            tmp_path / "payload.bin", 1 * MIB + int.from_bytes(os.urandom(3)) % (3 * MIB)
        )
        out = tmp_path / "out"
        receiver = await asyncio.to_thread(start_receiver, server, out, "--yes")
        stop = asyncio.Event()
        acks: list[Ack] = []
        # No budget that a fast machine could use up before the transfer ends: the
        # flood runs until stopped, and the test shows it ran all along.
        flood = asyncio.create_task(_flood(server.url, receiver.code[:7], stop, acks, budget=10**9))
        try:
            async with asyncio.timeout(90):

                def still_flooding(since: int) -> Callable[[], Awaitable[bool]]:
                    async def more() -> bool:
                        assert not flood.done(), flood
                        return len(acks) > since

                    return more

                await eventually(still_flooding(0))  # it started before the transfer
                before = len(acks)
                sent = await asyncio.to_thread(run_sender, server, receiver.code, str(src))
                during = len(acks) - before
                await eventually(still_flooding(len(acks)))  # and goes on after it
                received = await asyncio.to_thread(receiver.finish)
        finally:
            stop.set()
            async with asyncio.timeout(30):
                await flood
        assert sent.returncode == 0, sent.stderr
        assert received.returncode == 0, received.stderr
        assert sha256_file(out / src.name) == sha256_file(src)
        assert os.listdir(out) == [src.name]
        # The flood overlapped the transfer (answered requests before, during and
        # after it: not a count, which a faster or slower machine misses), and none of
        # it succeeded.
        assert during > 0, during
        assert all(ack["ok"] is False for ack in acks), [a for a in acks if a["ok"]][:3]
        assert {ack["error"] for ack in acks} <= {
            m.INVALID,
            m.NOT_PAIRED,
            m.NOT_REGISTERED,
            m.UNKNOWN_EVENT,
            m.UNKNOWN_PEER,
        }
        await assert_serving(server, receiver.code[8:])
    finally:
        stop_process(server.process)
