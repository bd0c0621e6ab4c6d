"""The signaling server over loopback, with real python-socketio clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import socketio
from prometheus_client.parser import text_string_to_metric_families

from sfs.signal import messages as m
from sfs.signal.config import ServerConfig
from sfs.signal.server import run_server
from tests.integration.sio_client import TIMEOUT_SECONDS, Peer

ICE = (
    m.IceServer(urls=("stun:stun.example.org:3478",)),
    m.IceServer(urls=("turn:turn.example.org?transport=tcp",), username="u", credential="p"),
)
KEY = "S0VZLUtFWS1LRVk="
SEALED = "c2VhbGVkLXNkcA=="
NOBODY = "ZZZ-999"


@contextlib.asynccontextmanager
async def serving(config: ServerConfig) -> AsyncIterator[str]:
    """Run run_server() in this loop and yield the URL it reports."""
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_server(config, ready=ready.set_result))
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            waiting: list[asyncio.Future[Any]] = [ready, task]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises what stopped the server
        yield ready.result()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(TIMEOUT_SECONDS):
                await task


MakeConfig = Callable[..., ServerConfig]


@pytest.fixture
def make_config(redis_url: str | None) -> MakeConfig:
    """``make_config(**overrides)``: a server on a free port of 127.0.0.1 with this
    test's registry (every test here runs with each, tests/conftest.py)."""

    def make(**overrides: Any) -> ServerConfig:
        defaults = {"host": "127.0.0.1", "port": 0, "ice_servers": ICE, "redis_url": redis_url}
        return ServerConfig(**{**defaults, **overrides})

    return make


Connect = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def server_url(make_config: MakeConfig) -> AsyncIterator[str]:
    async with serving(make_config()) as url:
        yield url


@pytest.fixture
async def connect(server_url: str) -> AsyncIterator[Connect]:
    """Return ``connect(register=True, url=server_url) -> Peer``; closes them all after."""
    peers: list[Peer] = []

    async def make(*, register: bool = True, url: str = server_url) -> Peer:
        peer = Peer()
        peers.append(peer)
        await peer.connect(url)
        if register:
            await peer.register()
        return peer

    yield make
    for peer in peers:
        await peer.close()


async def _pair(requester: Peer, target: Peer) -> None:
    ack = await requester.call(m.SEND_CONNECTION_REQUEST, {"peer_id": target.peer_id})
    assert ack == {"ok": True, "peer_id": target.peer_id}
    await target.expect(m.CONNECTION_REQUEST, {"peer_id": requester.peer_id})
    ack = await target.call(m.ACCEPT_CONNECTION, {"peer_id": requester.peer_id})
    assert ack == {"ok": True, "peer_id": requester.peer_id}
    await requester.expect(m.CONNECTION_ACCEPTED, {"peer_id": target.peer_id})


# --------------------------------------------------------------------------- basics


async def test_ready_url_and_healthz(server_url: str) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:[0-9]+", server_url)
    assert not server_url.endswith(":0")
    async with (
        aiohttp.ClientSession() as session,
        asyncio.timeout(TIMEOUT_SECONDS),
        session.get(f"{server_url}/healthz") as response,
    ):
        assert response.status == 200
        assert await response.text() == "ok"


async def _stats(url: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        asyncio.timeout(TIMEOUT_SECONDS),
        session.get(f"{url}/stats") as response,
    ):
        assert response.status == 200
        stats: dict[str, Any] = await response.json()
        return stats


async def test_stats_counts_only(server_url: str, connect: Connect) -> None:
    def counts(connections: int, peers: int, pending: int, pairs: int) -> dict[str, int]:
        return {"connections": connections, "peers": peers, "pending": pending, "pairs": pairs}

    assert await _stats(server_url) == counts(0, 0, 0, 0)
    unregistered = await connect(register=False)
    a, b, c = await connect(), await connect(), await connect()
    assert await _stats(server_url) == counts(4, 3, 0, 0)
    await a.call(m.SEND_CONNECTION_REQUEST, {"peer_id": b.peer_id})
    await b.expect(m.CONNECTION_REQUEST, {"peer_id": a.peer_id})
    assert await _stats(server_url) == counts(4, 3, 1, 0)
    await b.call(m.ACCEPT_CONNECTION, {"peer_id": a.peer_id})
    await a.expect(m.CONNECTION_ACCEPTED, {"peer_id": b.peer_id})
    assert await _stats(server_url) == counts(4, 3, 0, 1)
    stats_text = str(await _stats(server_url))
    assert not any(p.peer_id in stats_text for p in (a, b, c))
    for peer in (unregistered, a, b, c):
        await peer.close()
    # The server learns of each disconnect asynchronously: poll, for up to 5 s.
    for _ in range(100):
        if (stats := await _stats(server_url)) == counts(0, 0, 0, 0):
            break
        await asyncio.sleep(0.05)
    assert stats == counts(0, 0, 0, 0)


async def test_metrics_count_what_happened_and_name_nobody(
    server_url: str, connect: Connect
) -> None:
    a, b, c = await connect(), await connect(), await connect()
    for _ in range(10):  # the lookups a connection may make
        await c.expect_failure(m.FIND_PEER, {"peer_id": NOBODY}, m.UNKNOWN_PEER)
    await c.expect_failure(m.FIND_PEER, {"peer_id": a.peer_id}, m.RATE_LIMITED)
    await _pair(a, b)
    await a.call(m.SEND_PUBLIC_KEY, {"peer_id": b.peer_id, "key": KEY})
    for event in (m.OFFER, m.ICE_CANDIDATE, m.ICE_CANDIDATE):
        assert (await a.call(event, {"peer_id": b.peer_id, "sealed": SEALED}))["ok"]
    await a.expect_failure(m.OFFER, {"peer_id": c.peer_id, "sealed": SEALED}, m.NOT_PAIRED)
    async with (
        aiohttp.ClientSession() as session,
        asyncio.timeout(TIMEOUT_SECONDS),
        session.get(f"{server_url}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("sfs_connections") == 3
    assert value("sfs_registered_peers") == 3
    assert value("sfs_pairings") == 1
    assert value("sfs_pending_requests") == 0
    assert value("sfs_registry_up") == 1
    assert value("sfs_registrations_total") == 3
    assert value("sfs_pairings_made_total") == 1
    assert value("sfs_relayed_messages_total", event=m.SEND_PUBLIC_KEY) == 1
    assert value("sfs_relayed_messages_total", event=m.OFFER) == 1
    assert value("sfs_relayed_messages_total", event=m.ICE_CANDIDATE) == 2
    assert value("sfs_rejected_events_total", reason=m.UNKNOWN_PEER) == 10
    assert value("sfs_rejected_events_total", reason=m.RATE_LIMITED) == 1
    assert value("sfs_rejected_events_total", reason=m.NOT_PAIRED) == 1
    assert value("sfs_rejected_events_total", reason="registry_unavailable") == 0
    assert value("sfs_lookup_rate_limited_total") == 1
    # Counts only: no peer ID, no address, nothing of the Redis URL.
    secrets = [a.peer_id, b.peer_id, c.peer_id, NOBODY, "127.0.0.1", "redis://"]
    for secret in secrets:
        assert secret not in text, secret


async def test_register_hands_out_unique_ids_and_ice_servers(connect: Connect) -> None:
    peers = [await connect(register=False) for _ in range(6)]
    acks = [await peer.call(m.REGISTER_PEER, {"version": 1}) for peer in peers]
    for ack in acks:
        assert ack["ok"] is True
        assert m.is_peer_id(ack["peer_id"])
        assert ack["ice_servers"] == [s.to_dict() for s in ICE]
        reply = m.parse_register_reply(m.parse_ack(ack))
        assert reply.ice_servers == ICE
    assert len({ack["peer_id"] for ack in acks}) == len(peers)


async def test_register_only_once(connect: Connect) -> None:
    peer = await connect()
    await peer.expect_failure(m.REGISTER_PEER, {}, m.ALREADY_REGISTERED)


async def test_nothing_works_before_register(connect: Connect) -> None:
    target = await connect()
    peer = await connect(register=False)
    ref = {"peer_id": target.peer_id}
    for event, data in [
        (m.FIND_PEER, ref),
        (m.SEND_CONNECTION_REQUEST, ref),
        (m.ACCEPT_CONNECTION, ref),
        (m.SEND_PUBLIC_KEY, {**ref, "key": KEY}),
        (m.OFFER, {**ref, "sealed": SEALED}),
        (m.ABORT, {**ref, "reason": "wrong_code"}),
    ]:
        await peer.expect_failure(event, data, m.NOT_REGISTERED)
    assert target.events.empty()


async def test_find_peer(connect: Connect) -> None:
    a, b, c = await connect(), await connect(), await connect()
    await a.expect_failure(m.FIND_PEER, {"peer_id": NOBODY}, m.UNKNOWN_PEER)
    await a.expect_failure(m.FIND_PEER, {"peer_id": a.peer_id}, m.INVALID)
    assert await a.call(m.FIND_PEER, {"peer_id": b.peer_id}) == {"ok": True, "peer_id": b.peer_id}
    await a.expect(m.PEER_FOUND, {"peer_id": b.peer_id})
    assert b.events.empty()  # being looked up is not announced
    await _pair(a, b)
    await c.expect_failure(m.FIND_PEER, {"peer_id": a.peer_id}, m.BUSY)
    await c.expect_failure(m.FIND_PEER, {"peer_id": b.peer_id}, m.BUSY)


async def test_error_event_reaches_clients_that_use_no_ack(connect: Connect) -> None:
    peer = await connect()
    async with asyncio.timeout(TIMEOUT_SECONDS):
        await peer.sio.emit(m.FIND_PEER, {"peer_id": NOBODY})
    name, payload = await peer.next_event()
    assert (name, payload["event"], payload["error"]) == (m.ERROR, m.FIND_PEER, m.UNKNOWN_PEER)


async def test_unknown_event(connect: Connect) -> None:
    peer = await connect()
    for event in ("peers_updated", "list_peers", "message"):
        await peer.expect_failure(event, {}, m.UNKNOWN_EVENT)
    ack = await peer.call("x" * 100, {})
    assert ack["error"] == m.UNKNOWN_EVENT
    _, payload = await peer.next_event()
    assert payload["event"] == "x" * 64  # echoed, but truncated


# --------------------------------------------------------------------------- pairing and relay


async def test_full_pairing_and_relay(connect: Connect) -> None:
    receiver, sender = await connect(), await connect()
    await _pair(sender, receiver)
    for src, dst in ((sender, receiver), (receiver, sender)):
        ack = await src.call(m.SEND_PUBLIC_KEY, {"peer_id": dst.peer_id, "key": KEY})
        assert ack == {"ok": True}
        await dst.expect(m.RECEIVE_PUBLIC_KEY, {"peer_id": src.peer_id, "key": KEY})
    for event, src, dst in [
        (m.OFFER, sender, receiver),
        (m.ANSWER, receiver, sender),
        (m.ICE_CANDIDATE, sender, receiver),
        (m.ICE_CANDIDATE, receiver, sender),
    ]:
        ack = await src.call(event, {"peer_id": dst.peer_id, "sealed": SEALED})
        assert ack == {"ok": True}
        await dst.expect(event, {"peer_id": src.peer_id, "sealed": SEALED})
    # Many in a row arrive in order (an offer must not be overtaken by candidates).
    sealed = [f"{i:03d}A" for i in range(30)]
    for s in sealed:
        await sender.call(m.ICE_CANDIDATE, {"peer_id": receiver.peer_id, "sealed": s})
    assert [(await receiver.next_event())[1]["sealed"] for _ in sealed] == sealed

    ack = await receiver.call(m.ABORT, {"peer_id": sender.peer_id, "reason": "wrong_code"})
    assert ack == {"ok": True}
    await sender.expect(m.PEER_ABORTED, {"peer_id": receiver.peer_id, "reason": "wrong_code"})
    # The abort ended the pairing: nothing more passes, and both are free again.
    offer = {"peer_id": receiver.peer_id, "sealed": SEALED}
    await sender.expect_failure(m.OFFER, offer, m.NOT_PAIRED)
    await _pair(sender, receiver)
    assert receiver.events.empty()
    assert sender.events.empty()


async def test_connection_request_rules(connect: Connect) -> None:
    a, b, c = await connect(), await connect(), await connect()
    await a.expect_failure(m.SEND_CONNECTION_REQUEST, {"peer_id": NOBODY}, m.UNKNOWN_PEER)
    await a.expect_failure(m.ACCEPT_CONNECTION, {"peer_id": b.peer_id}, m.UNKNOWN_PEER)
    await a.call(m.SEND_CONNECTION_REQUEST, {"peer_id": b.peer_id})
    await b.expect(m.CONNECTION_REQUEST, {"peer_id": a.peer_id})
    # b has a pending request: nobody else may ask it, nor may a ask a second peer.
    await c.expect_failure(m.SEND_CONNECTION_REQUEST, {"peer_id": b.peer_id}, m.BUSY)
    await c.expect_failure(m.SEND_CONNECTION_REQUEST, {"peer_id": a.peer_id}, m.BUSY)
    await a.expect_failure(m.SEND_CONNECTION_REQUEST, {"peer_id": c.peer_id}, m.BUSY)
    # Only b may accept, and only a's request.
    await c.expect_failure(m.ACCEPT_CONNECTION, {"peer_id": a.peer_id}, m.UNKNOWN_PEER)
    await b.expect_failure(m.ACCEPT_CONNECTION, {"peer_id": c.peer_id}, m.UNKNOWN_PEER)
    # Pending is not paired: nothing is relayed yet.
    await a.expect_failure(m.OFFER, {"peer_id": b.peer_id, "sealed": SEALED}, m.NOT_PAIRED)
    assert await b.call(m.ACCEPT_CONNECTION, {"peer_id": a.peer_id}) == {
        "ok": True,
        "peer_id": a.peer_id,
    }
    await a.expect(m.CONNECTION_ACCEPTED, {"peer_id": b.peer_id})
    assert c.events.empty()
    assert b.events.empty()


async def test_third_peer_cannot_inject(connect: Connect) -> None:
    victim, partner, intruder = await connect(), await connect(), await connect()
    await _pair(partner, victim)
    to_victim = {"peer_id": victim.peer_id}
    for event, data in [
        (m.SEND_PUBLIC_KEY, {**to_victim, "key": KEY}),
        (m.OFFER, {**to_victim, "sealed": SEALED}),
        (m.ANSWER, {**to_victim, "sealed": SEALED}),
        (m.ICE_CANDIDATE, {**to_victim, "sealed": SEALED}),
        (m.ABORT, {**to_victim, "reason": "wrong_code"}),
    ]:
        await intruder.expect_failure(event, data, m.NOT_PAIRED)
    # The intruder's acks came after the server would have relayed anything, so
    # if the victim's next event is the partner's, the intruder got nothing through.
    await partner.call(m.OFFER, {**to_victim, "sealed": "UEFSVE5FUg=="})
    await victim.expect(m.OFFER, {"peer_id": partner.peer_id, "sealed": "UEFSVE5FUg=="})
    # A partner cannot aim at a third peer either.
    await partner.expect_failure(
        m.OFFER, {"peer_id": intruder.peer_id, "sealed": SEALED}, m.NOT_PAIRED
    )
    assert victim.events.empty()
    assert intruder.events.empty()


# --------------------------------------------------------------------------- disconnects


async def test_disconnect_notifies_partner_and_frees_it(connect: Connect) -> None:
    a, b, c = await connect(), await connect(), await connect()
    await _pair(a, b)
    gone_id = a.peer_id
    await a.close()
    await b.expect(m.PEER_DISCONNECTED, {"peer_id": gone_id})
    await b.expect_failure(m.OFFER, {"peer_id": gone_id, "sealed": SEALED}, m.NOT_PAIRED)
    await c.expect_failure(m.FIND_PEER, {"peer_id": gone_id}, m.UNKNOWN_PEER)
    await _pair(c, b)  # b is free again
    assert c.events.empty()


@pytest.mark.parametrize("requester_leaves", [True, False])
async def test_disconnect_during_pending_request(connect: Connect, requester_leaves: bool) -> None:
    requester, target = await connect(), await connect()
    await requester.call(m.SEND_CONNECTION_REQUEST, {"peer_id": target.peer_id})
    await target.expect(m.CONNECTION_REQUEST, {"peer_id": requester.peer_id})
    leaving, staying = (requester, target) if requester_leaves else (target, requester)
    await leaving.close()
    await staying.expect(m.PEER_DISCONNECTED, {"peer_id": leaving.peer_id})
    newcomer = await connect()
    await _pair(newcomer, staying)


# --------------------------------------------------------------------------- bad input

BAD_REF: list[object] = [
    None,  # no payload at all
    ({"peer_id": NOBODY}, {"peer_id": NOBODY}),  # two payloads
    [NOBODY],
    "ZZZ-999",
    42,
    {},
    {"peer_id": "zzz-999"},
    {"peer_id": 999},
    {"peer_id": NOBODY, "extra": 1},
]


def _bad_payloads(partner_id: str) -> list[tuple[str, object]]:
    ref = {"peer_id": partner_id}
    bad_register: list[object] = [None, [], {"version": 2}, {"version": 1, "name": "x"}]
    cases: list[tuple[str, object]] = [(m.REGISTER_PEER, p) for p in bad_register]
    for event in (m.FIND_PEER, m.SEND_CONNECTION_REQUEST, m.ACCEPT_CONNECTION):
        cases += [(event, p) for p in BAD_REF]
    cases += [
        (m.SEND_PUBLIC_KEY, p)
        for p in (
            None,
            ref,
            {**ref, "key": "not base64"},
            {**ref, "key": 7},
            {**ref, "key": "A" * (m.MAX_KEY_CHARS + 4)},
            {**ref, "key": KEY, "sealed": KEY},
        )
    ]
    for event, limit in m.SEALED_LIMITS.items():
        cases += [
            (event, p)
            for p in (
                None,
                ref,
                {**ref, "sealed": ""},
                {**ref, "sealed": "AA=A"},
                {**ref, "sealed": ["AAAA"]},
                {**ref, "sealed": "A" * (limit + 4)},
                {"peer_id": "nope", "sealed": SEALED},
                {**ref, "sealed": SEALED, "key": KEY},
            )
        ]
    cases += [
        (m.ABORT, p)
        for p in (
            None,
            ref,
            {**ref, "reason": "Wrong Code"},
            {**ref, "reason": "x" * (m.MAX_REASON_CHARS + 1)},
            {**ref, "reason": 3},
            {**ref, "reason": "wrong_code", "extra": ""},
        )
    ]
    return cases


async def test_bad_payloads_get_invalid_and_server_keeps_serving(connect: Connect) -> None:
    a, b = await connect(), await connect()
    await _pair(a, b)
    cases = _bad_payloads(b.peer_id)
    assert len(cases) > 60
    for event, payload in cases:
        await a.expect_failure(event, payload, m.INVALID)
    assert b.events.empty()  # nothing was relayed
    # The pairing survived, and the server still serves old and new clients.
    await a.call(m.OFFER, {"peer_id": b.peer_id, "sealed": SEALED})
    await b.expect(m.OFFER, {"peer_id": a.peer_id, "sealed": SEALED})
    assert m.is_peer_id((await connect()).peer_id)


async def test_oversized_frame_drops_only_that_connection(connect: Connect) -> None:
    a, b = await connect(), await connect()
    await _pair(a, b)
    async with asyncio.timeout(TIMEOUT_SECONDS):
        await a.sio.emit(m.OFFER, {"peer_id": b.peer_id, "sealed": "A" * 300_000})
    await a.wait_gone()
    await b.expect(m.PEER_DISCONNECTED, {"peer_id": a.peer_id})  # never the offer
    assert m.is_peer_id((await connect()).peer_id)


# --------------------------------------------------------------------------- limits


async def test_rate_limit_per_connection(connect: Connect, make_config: MakeConfig) -> None:
    async with serving(make_config(max_lookups_per_connection=3)) as url:
        a, b = await connect(url=url), await connect(url=url)
        await a.call(m.FIND_PEER, {"peer_id": b.peer_id})
        await a.expect(m.PEER_FOUND, {"peer_id": b.peer_id})
        await a.expect_failure(m.FIND_PEER, {"peer_id": NOBODY}, m.UNKNOWN_PEER)  # misses count
        await a.expect_failure(m.SEND_CONNECTION_REQUEST, {"peer_id": NOBODY}, m.UNKNOWN_PEER)
        await a.expect_failure(m.FIND_PEER, {"peer_id": b.peer_id}, m.RATE_LIMITED)
        await a.expect_failure(m.SEND_CONNECTION_REQUEST, {"peer_id": b.peer_id}, m.RATE_LIMITED)
        # A fresh connection has a fresh budget.
        await b.call(m.FIND_PEER, {"peer_id": a.peer_id})
        await b.expect(m.PEER_FOUND, {"peer_id": a.peer_id})


async def test_rate_limit_per_address(connect: Connect, make_config: MakeConfig) -> None:
    config = make_config(max_lookups_per_connection=100, max_lookups_per_address=4)
    async with serving(config) as url:
        a, b = await connect(url=url), await connect(url=url)
        for _ in range(3):
            await a.expect_failure(m.FIND_PEER, {"peer_id": NOBODY}, m.UNKNOWN_PEER)
        await b.expect_failure(m.FIND_PEER, {"peer_id": NOBODY}, m.UNKNOWN_PEER)
        # All clients here share 127.0.0.1, so both connections are now spent.
        await b.expect_failure(m.FIND_PEER, {"peer_id": a.peer_id}, m.RATE_LIMITED)
        await a.expect_failure(m.FIND_PEER, {"peer_id": b.peer_id}, m.RATE_LIMITED)
        c = await connect(url=url)
        await c.expect_failure(m.SEND_CONNECTION_REQUEST, {"peer_id": a.peer_id}, m.RATE_LIMITED)


async def test_server_full_refuses_connections(connect: Connect, make_config: MakeConfig) -> None:
    async with serving(make_config(max_connections=2)) as url:
        a, b = await connect(url=url), await connect(url=url)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await connect(url=url)
        await _pair(a, b)
        await a.close()
        await b.expect(m.PEER_DISCONNECTED, {"peer_id": a.peer_id})  # the slot is free now
        c = await connect(url=url)
        assert m.is_peer_id(c.peer_id)


# --------------------------------------------------------------------------- logging


async def test_logs_events_once_and_never_payloads(
    connect: Connect, caplog: pytest.LogCaptureFixture, make_config: MakeConfig
) -> None:
    caplog.set_level(logging.DEBUG, logger="sfs")
    secret_key, secret_sdp = "U0VDUkVULUtFWQ==", "U0VDUkVULVNEUA=="
    async with serving(make_config()) as url:
        a, b = await connect(url=url), await connect(url=url)
        await _pair(a, b)
        await a.call(m.SEND_PUBLIC_KEY, {"peer_id": b.peer_id, "key": secret_key})
        await a.call(m.OFFER, {"peer_id": b.peer_id, "sealed": secret_sdp})
        await a.call(m.OFFER, {"peer_id": b.peer_id, "sealed": secret_sdp + "!"})  # invalid
        await a.call(m.ABORT, {"peer_id": b.peer_id, "reason": "wrong_code"})
        await a.close()
    records = [r for r in caplog.records if r.name == "sfs.signal.server"]
    infos = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert infos == [
        f"sfs signaling server listening on {url}",
        f"registered {a.peer_id} (127.0.0.1)",
        f"registered {b.peer_id} (127.0.0.1)",
        f"paired {a.peer_id} with {b.peer_id}",
        f"disconnected {a.peer_id}",
        f"disconnected {b.peer_id}",  # by the server, at shutdown
    ]
    for record in caplog.records:
        text = record.getMessage()
        assert secret_key not in text, text
        assert secret_sdp not in text, text
