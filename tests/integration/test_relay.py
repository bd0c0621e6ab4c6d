"""The relay in `sfs serve` (``GET /relay``) against a real server process: real
clients (sfs.peer.transport.relay.open_relay, aiohttp's WebSocket client) and hostile
ones written by hand.  Every refused or silent client gets its answer, holds nothing
past its limits and never stops a real pair; the server answers /healthz after all."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sfs.errors import RelayRefusedError
from sfs.peer.transport.relay import open_relay, parse_relay_answer, relay_request
from tests.conftest import ServerProcess, start_server
from tests.integration.test_tls_and_turn import make_pki

MIB = 1 << 20
WAIT_SECONDS = 10.0


class Sink(asyncio.Protocol):
    """Collects what the partner sends; ``ended`` when the relay closes the connection."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.more = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.more.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(None)
        self.more.set()

    async def until(self, nbytes: int) -> bytes:
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.data) < nbytes and not self.ended.done():
                self.more.clear()
                await self.more.wait()
        return bytes(self.data)


def healthy(server: ServerProcess) -> None:
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as reply:
        assert reply.read() == b"ok", server.log_text()
    assert server.process.poll() is None, server.log_text()


def metric(server: ServerProcess, name: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


async def pair(
    url: str, token: bytes | None = None
) -> tuple[Sink, Sink, asyncio.Transport, asyncio.Transport]:
    """Two open_relay clients with one token: the first waits, the second pairs it."""
    token = token or os.urandom(32)
    first = asyncio.create_task(open_relay(f"{url}/relay", token, Sink, timeout=WAIT_SECONDS))
    await asyncio.sleep(0)  # let it connect first; order does not matter to the relay
    t2, s2 = await open_relay(f"{url}/relay", token, Sink, timeout=WAIT_SECONDS)
    t1, s1 = await first
    return s1, s2, t1, t2


@contextlib.asynccontextmanager
async def raw(
    host: str, port: int, *, local: str = "127.0.0.1"
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(host, port, local_addr=(local, 0))
    try:
        yield reader, writer
    finally:
        writer.close()


def host_port(server: ServerProcess) -> tuple[str, int]:
    host, _, port = server.url.rpartition("//")[2].rpartition(":")
    return host, int(port)


async def answer_of(reader: asyncio.StreamReader) -> tuple[int, str]:
    async with asyncio.timeout(WAIT_SECONDS + 5):
        data = await reader.read()  # the relay closes after its answer
    answer = parse_relay_answer(data, eof=True)
    assert answer is not None
    return answer.status, answer.reason


async def exchange(
    s1: Sink, s2: Sink, t1: asyncio.Transport, t2: asyncio.Transport, size: int
) -> None:
    one, two = os.urandom(size), os.urandom(size)
    t1.write(one)
    t2.write(two)
    got2, got1 = await s2.until(size), await s1.until(size)
    assert hashlib.sha256(got2).hexdigest() == hashlib.sha256(one).hexdigest()
    assert hashlib.sha256(got1).hexdigest() == hashlib.sha256(two).hexdigest()


def test_two_clients_with_one_token_get_a_byte_pipe(
    tmp_path: Path, serve: list[ServerProcess]
) -> None:
    serve.append(server := start_server(tmp_path))

    async def run() -> None:
        s1, s2, t1, t2 = await pair(server.url)
        await exchange(s1, s2, t1, t2, 8 * MIB)
        t1.close()  # one end goes: the relay closes the other
        async with asyncio.timeout(WAIT_SECONDS):
            await s2.ended

    asyncio.run(run())
    assert metric(server, "sfs_relay_bytes_total") == 16 * MIB
    assert metric(server, "sfs_relay_pairs_active") == 0
    healthy(server)


def test_hostile_relay_clients_get_refused_and_the_pair_keeps_working(
    tmp_path: Path, serve: list[ServerProcess]
) -> None:
    serve.append(server := start_server(tmp_path))
    host, port = host_port(server)

    async def run() -> None:
        token = os.urandom(32)
        s1, s2, t1, t2 = await pair(server.url, token)
        # No token, a malformed one: 400 with the reason.
        for header in (
            b"",
            b"Sfs-Relay-Token: " + b"zz" * 32 + b"\r\n",
            b"Sfs-Relay-Token: ab\r\n",
        ):
            async with raw(host, port) as (reader, writer):
                writer.write(
                    b"GET /relay HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                    b"Upgrade: sfs-relay\r\n" + header + b"\r\n"
                )
                status, reason = await answer_of(reader)
                assert status == 400, reason
                assert "token" in reason
        # A third party with the pair's token: 409, and the pair is untouched.
        with pytest.raises(RelayRefusedError, match="already formed a pair") as refused:
            await open_relay(f"{server.url}/relay", token, Sink, timeout=WAIT_SECONDS)
        assert refused.value.status == 409
        await exchange(s1, s2, t1, t2, 2 * MIB)
        assert metric(server, "sfs_relay_pairs_active") == 1
        t1.close()
        async with asyncio.timeout(WAIT_SECONDS):
            await s2.ended
        # Once ended, the token is still spent.
        with pytest.raises(RelayRefusedError, match="HTTP 409"):
            await open_relay(f"{server.url}/relay", token, Sink, timeout=WAIT_SECONDS)

    asyncio.run(run())
    assert metric(server, 'sfs_relay_refused_total{reason="no_token"}') == 1
    assert metric(server, 'sfs_relay_refused_total{reason="malformed_token"}') == 2
    assert metric(server, 'sfs_relay_refused_total{reason="token_used"}') == 2
    healthy(server)


def test_a_flood_of_tokens_from_one_address_is_capped_and_a_real_pair_still_pairs(
    tmp_path: Path, serve: list[ServerProcess]
) -> None:
    serve.append(server := start_server(tmp_path, "--relay-pairs-per-address", "3"))
    host, port = host_port(server)

    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            waiting = []
            for _ in range(3):  # from 127.0.0.2: the flooder's own address
                reader, writer = await stack.enter_async_context(raw(host, port, local="127.0.0.2"))
                writer.write(relay_request(host="x", path="/relay", token=os.urandom(32)))
                waiting.append(reader)
            async with raw(host, port, local="127.0.0.2") as (reader, writer):
                writer.write(relay_request(host="x", path="/relay", token=os.urandom(32)))
                status, reason = await answer_of(reader)
                assert status == 429, reason
            # The flooder's three still wait (no answer yet) while a real pair forms.
            s1, s2, t1, t2 = await pair(server.url)
            await exchange(s1, s2, t1, t2, MIB)
            assert metric(server, "sfs_relay_waiting") == 3
            t1.close()
            t2.close()

    asyncio.run(run())
    assert metric(server, 'sfs_relay_refused_total{reason="waiting_per_address"}') == 1
    healthy(server)


def test_silent_and_lonely_relay_connections_are_closed(
    tmp_path: Path, serve: list[ServerProcess]
) -> None:
    serve.append(server := start_server(tmp_path, "--header-timeout", "1", "--relay-wait", "1"))
    host, port = host_port(server)

    async def run() -> None:
        start = time.monotonic()
        async with raw(host, port) as (reader, _):  # never sends a request
            async with asyncio.timeout(WAIT_SECONDS):
                assert await reader.read() == b""
        async with raw(host, port) as (reader, writer):  # a token nobody else has
            writer.write(relay_request(host="x", path="/relay", token=os.urandom(32)))
            status, reason = await answer_of(reader)
            assert status == 408, reason
            assert "no partner came within 1 s" in reason
        with pytest.raises(RelayRefusedError, match="HTTP 408"):
            await open_relay(f"{server.url}/relay", os.urandom(32), Sink, timeout=WAIT_SECONDS)
        assert time.monotonic() - start < WAIT_SECONDS

    asyncio.run(run())
    assert metric(server, 'sfs_relay_refused_total{reason="no_partner"}') == 2
    assert metric(server, "sfs_relay_waiting") == 0
    healthy(server)


def test_the_rate_limit_holds_and_the_byte_limit_closes_the_pair(
    tmp_path: Path, serve: list[ServerProcess]
) -> None:
    serve.append(limited := start_server(tmp_path, "--relay-rate", "1M"))
    serve.append(capped := start_server(tmp_path, "--relay-max-bytes", "1M"))

    async def run() -> None:
        _s1, s2, t1, _t2 = await pair(limited.url)
        start = time.monotonic()
        t1.write(os.urandom(4 * MIB))
        async with asyncio.timeout(30):
            while len(s2.data) < 4 * MIB:
                s2.more.clear()
                await s2.more.wait()
        took = time.monotonic() - start
        assert took >= 3.0, f"4 MiB at 1 MiB/s took {took:.2f} s"
        t1.close()

        s1, s2, t1, _t2 = await pair(capped.url)
        t1.write(os.urandom(4 * MIB))
        async with asyncio.timeout(WAIT_SECONDS):
            await s2.ended
            await s1.ended
        assert len(s2.data) == MIB

    asyncio.run(run())
    healthy(limited)
    healthy(capped)


def test_a_websocket_end_pairs_with_a_raw_end(tmp_path: Path, serve: list[ServerProcess]) -> None:
    serve.append(server := start_server(tmp_path))

    async def run() -> None:
        token = os.urandom(32)
        one, two = os.urandom(3 * MIB), os.urandom(3 * MIB)
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{server.url}/relay", max_msg_size=0) as ws,
        ):
            await ws.send_bytes(token)
            t2, s2 = await open_relay(f"{server.url}/relay", token, Sink, timeout=WAIT_SECONDS)
            async with asyncio.timeout(WAIT_SECONDS):
                assert await ws.receive_str() == "paired"
            for i in range(0, len(one), 64 * 1024):
                await ws.send_bytes(one[i : i + 64 * 1024])
            t2.write(two)
            got = bytearray()
            async with asyncio.timeout(WAIT_SECONDS):
                while len(got) < len(two):
                    got += await ws.receive_bytes()
            assert hashlib.sha256(got).digest() == hashlib.sha256(two).digest()
            assert hashlib.sha256(await s2.until(len(one))).digest() == hashlib.sha256(one).digest()
            # A WebSocket presenting the now-used token is closed with 4409.
            async with session.ws_connect(f"{server.url}/relay") as third:
                await third.send_bytes(token)
                async with asyncio.timeout(WAIT_SECONDS):
                    msg = await third.receive()
                assert msg.type == aiohttp.WSMsgType.CLOSE, msg
                assert msg.data == 4409, msg
            t2.close()
            async with asyncio.timeout(WAIT_SECONDS):
                msg = await ws.receive()
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg

    asyncio.run(run())
    assert metric(server, "sfs_relay_bytes_total") == 6 * MIB
    healthy(server)


def test_the_relay_works_over_tls_and_not_with_no_relay(
    tmp_path: Path, serve: list[ServerProcess]
) -> None:
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    serve.append(
        tls := start_server(
            tmp_path, "--tls-cert", str(pki["server.pem"]), "--tls-key", str(pki["server.key"])
        )
    )
    serve.append(off := start_server(tmp_path, "--no-relay"))

    async def run() -> None:
        token = os.urandom(32)
        ca = str(pki["ca"])
        first = asyncio.create_task(
            open_relay(f"{tls.url}/relay", token, Sink, timeout=WAIT_SECONDS, ca_file=ca)
        )
        t2, s2 = await open_relay(f"{tls.url}/relay", token, Sink, timeout=WAIT_SECONDS, ca_file=ca)
        t1, s1 = await first
        await exchange(s1, s2, t1, t2, 2 * MIB)
        t1.close()
        with pytest.raises(RelayRefusedError, match="HTTP 404"):
            await open_relay(f"{off.url}/relay", token, Sink, timeout=WAIT_SECONDS)

    asyncio.run(run())
    healthy(off)


def test_the_register_ack_names_the_relay(tmp_path: Path, serve: list[ServerProcess]) -> None:
    from sfs.signal.client import SignalClient

    elsewhere = "https://sfs.example.org/node/2/relay"
    serve.append(own := start_server(tmp_path))
    serve.append(other := start_server(tmp_path, "--relay-url", elsewhere))
    serve.append(none := start_server(tmp_path, "--no-relay"))

    async def relay_of(server: ServerProcess) -> str | None:
        async with SignalClient(server.url) as client:
            return (await client.register()).relay

    assert asyncio.run(relay_of(own)) == ""
    assert asyncio.run(relay_of(other)) == elsewhere
    assert asyncio.run(relay_of(none)) is None
