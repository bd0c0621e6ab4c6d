"""`sfs serve` against one client that tries to exhaust it (issue 8, item 3).

Each test runs a real server process with short timeouts and small limits, plays one
kind of exhaustion (idle sockets, a full fd table, one address taking every slot,
sessions that never join or register, pairings that stall, partners that never read)
and checks the outcome in the server itself: its file descriptors
(``/proc/PID/fd``), its resident memory (``VmRSS``) and whether ``/healthz`` answers.
The waits are bounded but generous: a slow machine makes a test slower, not red.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from sfs.signal import messages as m
from sfs.signal.config import ServerConfig
from sfs.signal.redis_registry import RedisRegistry
from sfs.signal.server import METER_KEY, create_app
from tests.conftest import LOOPBACK, ServerProcess, rss_kib, start_server, stop_process
from tests.integration.sio_client import TIMEOUT_SECONDS
from tests.integration.test_server_hostile import (
    Ack,
    Client,
    RawClient,
    assert_serving,
    non_reading_partner,
    pair,
)

# Bounded waits for what the server does on its own clock (timeouts, sweeps): far
# longer than the few seconds configured, so only a server that never acts fails.
OUTCOME_SECONDS = 20.0
# A low fd limit for the server process (hard limit; the soft one starts lower).
LOW_FD_HARD_LIMIT = 512
LOW_FD_SOFT_LIMIT = 128
KIB = 1024
MIB = 1024 * KIB


# --------------------------------------------------------------------------- the server process


def start_limited_server(
    tmp: Path, *extra: str, nofile: tuple[int, int] | None = None, host: str = LOOPBACK
) -> ServerProcess:
    """`sfs serve`, optionally under ``ulimit -n`` *nofile*."""
    return start_server(tmp, *extra, host=host, nofile=nofile)


@contextlib.contextmanager
def serving(
    tmp: Path, *extra: str, nofile: tuple[int, int] | None = None, host: str = LOOPBACK
) -> Iterator[ServerProcess]:
    server = start_limited_server(tmp, *extra, nofile=nofile, host=host)
    try:
        yield server
    finally:
        stop_process(server.process)


def pool_slack(registry_args: list[str]) -> int:
    """The file descriptors a Redis registry may open as it gets busy, and keep: its
    connections to Redis."""
    return RedisRegistry.descriptors if "--redis" in registry_args else 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def soft_fd_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError(f"no open-files limit in /proc/{pid}/limits")


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host.strip("[]"), int(port)


async def registered(url: str) -> Client:
    return await (await Client(url).connect()).register()


async def healthz_status(url: str) -> int:
    """GET /healthz on a fresh connection; the status code."""
    async with (
        aiohttp.ClientSession() as session,
        asyncio.timeout(TIMEOUT_SECONDS),
        session.get(f"{url}/healthz") as response,
    ):
        return response.status


async def settle(check: object, *, seconds: float = OUTCOME_SECONDS) -> None:
    """Poll the callable *check* until it returns True (a retry loop, not a sleep)."""
    assert callable(check)
    async with asyncio.timeout(seconds):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.1)


async def open_sockets(url: str, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
    """*count* TCP connections that send *first_bytes* (maybe nothing) and then idle."""
    host, port = host_port(url)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    loop = asyncio.get_running_loop()
    socks = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                await loop.sock_connect(sock, (host, port))
            if first_bytes:
                await loop.sock_sendall(sock, first_bytes)
        except (OSError, TimeoutError):
            sock.close()
            continue
        socks.append(sock)
    return socks


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed or reset *sock* (never blocks)."""
    try:
        return sock.recv(1 << 16) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@contextlib.contextmanager
def closing_all(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


async def ws_refused(
    session: aiohttp.ClientSession, url: str, keep: list[RawClient] | None = None
) -> int | None:
    """Open a websocket; None if admitted, else the HTTP status (0: closed on accept).

    An admitted one is added to *keep* (or closed): one nobody refers to is closed
    when it is garbage collected.
    """
    try:
        client = await RawClient.open(session, url, join=False)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    except (aiohttp.ClientError, ConnectionError):
        return 0
    if keep is None:
        await client.close()
    else:
        keep.append(client)
    return None


# --------------------------------------------------------------------------- (a) raw TCP


async def test_idle_and_slow_sockets_are_closed_by_the_header_timeout(
    tmp_path: Path, registry_args: list[str]
) -> None:
    with serving(tmp_path, *registry_args, "--header-timeout", "1") as server:
        pid = server.process.pid
        baseline = fd_count(pid) + pool_slack(registry_args)
        idle = await open_sockets(server.url, 30)
        slowloris = await open_sockets(server.url, 10, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        with closing_all(idle + slowloris) as socks:
            assert len(socks) == 40
            await settle(lambda: all(closed_by_server(s) for s in socks))
            await settle(lambda: fd_count(pid) <= baseline)
        # An honest request is answered all along, and its connection not kept open.
        assert await healthz_status(server.url) == 200
        await settle(lambda: fd_count(pid) <= baseline)
        await assert_serving(server)


async def test_fd_limit_raised_and_healthz_answers_through_a_flood_of_idle_sockets(
    tmp_path: Path,
    registry_args: list[str],
) -> None:
    """The server at ``ulimit -n 128`` (hard 512), 600 idle sockets open against it."""
    flags = ("--max-connections-per-address", "100000", "--header-timeout", "3")
    with serving(
        tmp_path, *registry_args, *flags, nofile=(LOW_FD_SOFT_LIMIT, LOW_FD_HARD_LIMIT)
    ) as server:
        pid = server.process.pid
        assert soft_fd_limit(pid) == LOW_FD_HARD_LIMIT  # raised to the hard limit at start
        baseline = fd_count(pid) + pool_slack(registry_args)
        with closing_all(await open_sockets(server.url, 600)) as socks:
            assert len(socks) >= 500
            for _ in range(5):
                assert await healthz_status(server.url) == 200
                assert fd_count(pid) < LOW_FD_HARD_LIMIT
            # Evicted to make room, or closed by the header timeout: none stays.
            await settle(lambda: all(closed_by_server(s) for s in socks))
        await settle(lambda: fd_count(pid) <= baseline)
        await assert_serving(server)
        assert "out of system resource" not in server.log_text()


async def test_websockets_stop_short_of_the_fd_limit_with_a_503(
    tmp_path: Path, registry_args: list[str]
) -> None:
    """Sessions are refused with 503 before the fds run out; /healthz keeps answering."""
    flags: tuple[str, ...] = ("--max-connections-per-address", "100000")
    flags += ("--join-timeout", "60", "--register-timeout", "60")
    with serving(
        tmp_path, *registry_args, *flags, nofile=(LOW_FD_HARD_LIMIT, LOW_FD_HARD_LIMIT)
    ) as server:
        pid = server.process.pid
        baseline = fd_count(pid) + pool_slack(registry_args)
        sessions: list[RawClient] = []
        refusal: int | None = None
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            while len(sessions) < LOW_FD_HARD_LIMIT and refusal is None:
                refusal = await ws_refused(session, server.url, sessions)
            admitted = len(sessions)
            assert refusal == 503, (admitted, refusal)
            # Most of the table went to clients, and the reserve is still free.
            assert LOW_FD_HARD_LIMIT // 4 < admitted < LOW_FD_HARD_LIMIT - 100, admitted
            assert fd_count(pid) < LOW_FD_HARD_LIMIT - 100
            for _ in range(5):
                assert await healthz_status(server.url) == 200
            assert await ws_refused(session, server.url) == 503
            for client in sessions:
                await client.close()
        await settle(lambda: fd_count(pid) <= baseline)
        await assert_serving(server)


# --------------------------------------------------------------------------- (b) one address


async def test_one_address_gets_a_few_connections_not_every_slot(
    tmp_path: Path, registry_args: list[str]
) -> None:
    flags = ("--max-connections", "20", "--max-connections-per-address", "4")
    with serving(tmp_path, *registry_args, *flags) as server:
        pid = server.process.pid
        baseline = fd_count(pid) + pool_slack(registry_args)
        clients = [await Client(server.url).connect() for _ in range(4)]
        try:
            for client in clients:
                await client.register()
            async with aiohttp.ClientSession() as session:
                assert await ws_refused(session, server.url) == 0  # closed on accept
            with closing_all(await open_sockets(server.url, 5)) as socks:
                await settle(lambda: all(closed_by_server(s) for s in socks))
            # Those admitted are still served; one leaving makes room for one more.
            assert (await clients[0].call(m.FIND_PEER, {"peer_id": clients[1].peer_id}))["ok"]
            await clients.pop().close()
            newcomer: Client | None = None

            async def admitted() -> bool:
                nonlocal newcomer
                try:
                    newcomer = await Client(server.url).connect()
                except Exception:
                    return False
                return True

            await settle(admitted)
            assert newcomer is not None
            clients.append(newcomer)
            assert fd_count(pid) <= baseline + 4
        finally:
            for client in clients:
                await client.close()


async def test_session_that_never_joins_the_namespace_is_dropped(
    tmp_path: Path, registry_args: list[str]
) -> None:
    flags = ("--join-timeout", "1", "--max-connections-per-address", "8")
    with serving(tmp_path, *registry_args, *flags) as server:
        pid = server.process.pid
        baseline = fd_count(pid) + pool_slack(registry_args)
        async with aiohttp.ClientSession() as session:
            # It answers every engine.io ping (autoping), but never sends "40".
            raws = [await RawClient.open(session, server.url, join=False) for _ in range(8)]
            assert await ws_refused(session, server.url) == 0
            for raw in raws:
                async with asyncio.timeout(OUTCOME_SECONDS):
                    while (await raw.ws.receive()).type not in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR,
                    ):
                        pass
                await raw.close()
            await settle(lambda: fd_count(pid) <= baseline)
            # The slots are free again for clients that do join.
            joined = [await RawClient.open(session, server.url) for _ in range(8)]
            for raw in joined:
                ack = await raw.call(m.REGISTER_PEER, {})
                assert isinstance(ack, list)
                assert ack[0]["ok"] is True
                await raw.close()
        await assert_serving(server)


async def test_client_that_never_registers_is_dropped(
    tmp_path: Path, registry_args: list[str]
) -> None:
    with serving(tmp_path, *registry_args, "--register-timeout", "1") as server:
        lurker = await Client(server.url).connect()
        peer = await registered(server.url)
        try:
            async with asyncio.timeout(OUTCOME_SECONDS):
                await lurker.gone.wait()
            assert peer.sio.connected
            ack = await peer.call(m.FIND_PEER, {"peer_id": "ZZZ-999"})
            assert ack["error"] == m.UNKNOWN_PEER
        finally:
            await lurker.close()
            await peer.close()
        await assert_serving(server)


async def test_pairings_that_make_no_progress_expire(
    tmp_path: Path, registry_args: list[str]
) -> None:
    with serving(tmp_path, *registry_args, "--pairing-timeout", "2") as server:
        a, b, c, d, waiting = [await registered(server.url) for _ in "abcde"]
        try:
            await pair(a, b)  # paired, then silent
            ack = await c.call(m.SEND_CONNECTION_REQUEST, {"peer_id": d.peer_id})
            assert ack["ok"]  # asked, never accepted
            for client in (a, b, c, d):
                async with asyncio.timeout(OUTCOME_SECONDS):
                    await client.gone.wait()
            # A receiver waiting for its sender is not a stalled pairing.
            assert waiting.sio.connected
            assert (await waiting.call(m.FIND_PEER, {"peer_id": "ZZZ-999"}))["ok"] is False

            async def idle() -> bool:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{server.url}/stats") as response,
                ):
                    stats = await response.json()
                return bool(stats == {"connections": 1, "peers": 1, "pending": 0, "pairs": 0})

            await settle(idle)
        finally:
            for client in (a, b, c, d, waiting):
                await client.close()
        await assert_serving(server)


# --------------------------------------------------------------------------- (c) unread data


async def relay_offers(sender: Client, peer_id: str, count: int, chars: int) -> list[Ack]:
    """Relay up to *count* sealed offers of *chars* characters; stop at the first refusal."""
    sealed = "A" * chars
    acks: list[Ack] = []
    for _ in range(count):
        acks.append(await sender.call(m.OFFER, {"peer_id": peer_id, "sealed": sealed}))
        if not acks[-1]["ok"]:
            break
    return acks


async def read_until_closed(reader: asyncio.StreamReader) -> None:
    async with asyncio.timeout(OUTCOME_SECONDS):
        with contextlib.suppress(ConnectionError):
            while await reader.read(1 << 16):
                pass


async def warm_up(server: ServerProcess) -> int:
    """Relay between one honest pair once, so allocator growth is not blamed on the test."""
    a, b = [await registered(server.url) for _ in "ab"]
    await pair(a, b)
    for ack in await relay_offers(a, b.peer_id, 20, m.MAX_SEALED_SDP_CHARS):
        assert ack["ok"]
    await a.close()
    await b.close()
    return rss_kib(server.process.pid)


async def test_partner_that_never_reads_is_dropped_at_its_byte_budget(
    tmp_path: Path, registry_args: list[str]
) -> None:
    """Eight pairs whose receivers stop reading: 100 offers of 64 KiB each (6.4 MiB,
    fewer than the 128-packet limit) are relayed to each, and nobody reads them."""
    pairs, offers = 8, 100
    with serving(tmp_path, *registry_args, "--max-connections-per-address", "64") as server:
        pid = server.process.pid
        before = await warm_up(server)
        baseline_fds = fd_count(pid) + pool_slack(registry_args)
        async with contextlib.AsyncExitStack() as stack:
            senders = [await registered(server.url) for _ in range(pairs)]
            for sender in senders:
                stack.push_async_callback(sender.close)
            readers = []
            for sender in senders:
                reader, peer_id = await stack.enter_async_context(
                    non_reading_partner(server.url, sender)
                )
                readers.append(reader)
                acks = await relay_offers(sender, peer_id, offers, m.MAX_SEALED_SDP_CHARS)
                assert acks[-1].get("error") == m.NOT_PAIRED, (len(acks), acks[-1])
            grown_kib = rss_kib(pid) - before
            # Each unread pair costs at most its budget (512 KiB) plus buffers, not 6 MiB.
            assert grown_kib < pairs * 2 * KIB, f"RSS grew by {grown_kib} KiB"
            for reader in readers:
                await read_until_closed(reader)
            for sender in senders:
                while (event := await sender.next_event())[0] == m.ERROR:
                    pass
                assert event[0] == m.PEER_DISCONNECTED, event
        await settle(lambda: fd_count(pid) <= baseline_fds)
        await assert_serving(server)


async def test_global_budget_drops_the_largest_backlog_and_spares_the_others(
    tmp_path: Path,
    registry_args: list[str],
) -> None:
    """Three non-readers, each under its own (large) budget, together over the global one."""
    flags: tuple[str, ...] = ("--max-queued-bytes-per-connection", str(4 * MIB))
    flags += ("--max-queued-bytes", str(4 * MIB))
    with serving(tmp_path, *registry_args, *flags) as server:
        pid = server.process.pid
        before = await warm_up(server)
        async with contextlib.AsyncExitStack() as stack:
            senders = [await registered(server.url) for _ in range(3)]
            for sender in senders:
                stack.push_async_callback(sender.close)
            for sender in senders:
                _, peer_id = await stack.enter_async_context(
                    non_reading_partner(server.url, sender)
                )
                await relay_offers(sender, peer_id, 45, m.MAX_SEALED_SDP_CHARS)
            # 8.6 MiB went to non-readers; at least one was dropped to stay under 4 MiB.
            heard: list[str] = []

            def someone_dropped() -> bool:
                for sender in senders:
                    while not sender.events.empty():
                        heard.append(sender.events.get_nowait()[0])
                return m.PEER_DISCONNECTED in heard

            await settle(someone_dropped)
            assert rss_kib(pid) - before < 16 * KIB
            # An honest pair relays as much as each non-reader tried, undisturbed.
            a, b = [await registered(server.url) for _ in "ab"]
            stack.push_async_callback(a.close)
            stack.push_async_callback(b.close)
            await pair(a, b)
            sealed = "A" * m.MAX_SEALED_SDP_CHARS
            for _ in range(45):
                ack = await a.call(m.OFFER, {"peer_id": b.peer_id, "sealed": sealed})
                assert ack == {"ok": True}
                await b.expect(m.OFFER, {"peer_id": a.peer_id, "sealed": sealed})
            assert a.sio.connected
            assert b.sio.connected
        await assert_serving(server)


# --------------------------------------------------------------------------- IPv6


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1)")
async def test_ipv6_clients_are_capped_too(tmp_path: Path, registry_args: list[str]) -> None:
    flags = ("--max-connections-per-address", "3", "--header-timeout", "30")
    with (
        serving(tmp_path, *registry_args, *flags, host="::1") as server,
        closing_all(await open_sockets(server.url, 6)) as socks,
    ):
        assert len(socks) == 6

        def three_refused() -> bool:
            return sum(closed_by_server(s) for s in socks) >= 3

        await settle(three_refused)
        assert not any(closed_by_server(s) for s in socks[:3])


# --------------------------------------------------------------------------- bookkeeping


async def test_unread_bytes_are_forgotten_whichever_way_a_client_leaves(
    redis_url: str | None,
) -> None:
    """In process, to read the meter: every way out returns its bytes to the budget."""
    app = create_app(ServerConfig(host=LOOPBACK, port=0, max_connections=3, redis_url=redis_url))
    meter = app[METER_KEY]
    runner = web.AppRunner(app, shutdown_timeout=0.25)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    url = f"http://{LOOPBACK}:{site.port}"
    try:
        sender = await registered(url)
        async with non_reading_partner(url, sender) as (_, peer_id):  # dropped at its budget
            acks = await relay_offers(sender, peer_id, 100, m.MAX_SEALED_SDP_CHARS)
            assert acks[-1].get("error") == m.NOT_PAIRED
        async with aiohttp.ClientSession() as session:
            raw = await RawClient.open(session, url)  # leaves after a frame it cannot decode
            await raw.send("4" + "[" * 100_000)
            await raw.expect_dropped()
            await raw.close()
            clients = [await registered(url) for _ in range(2)]  # the server is now full
            assert await ws_refused(session, url) == 401
        for client in (sender, *clients):
            await client.close()

        await settle(lambda: meter.queued_bytes == 0 and meter.tracked_queues == 0)
    finally:
        await runner.cleanup()
