"""The Redis registry in process: two nodes (two RedisRegistry objects) on one real
``redis-server``, without Socket.IO in between.

What only a shared registry must get right: a peer ID taken by exactly one node even
when both draw the same IDs at once, exactly one winner among senders racing for one
receiver, lookups counted per address across nodes, stalled pairings and dead nodes
noticed on the other node, and a Redis that stalls, forgets or comes back.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import pytest

from sfs.signal import messages as m
from sfs.signal.config import ServerConfig
from sfs.signal.redis_registry import PREFIX, REDIS_TIMEOUT_SECONDS, RedisRegistry
from sfs.signal.registry import Departure, RegistryUnavailable, Rejected
from tests.integration.cluster import RedisServer

ADDRESS = "192.0.2.7"
TTL_SECONDS = 2.0
# How long after its last heartbeat a dead node's partner may wait to be told: the
# TTL, one sweep of the polling below, and slack for a loaded machine.
NOTICE_BOUND_SECONDS = TTL_SECONDS + 1.5

_sids = itertools.count()


def _config(url: str, **overrides: object) -> ServerConfig:
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        redis_url=url,
        redis_ttl_seconds=TTL_SECONDS,
        max_lookups_per_address=10_000,
    )
    return replace(config, **overrides)  # type: ignore[arg-type]


Node = Callable[..., Awaitable[RedisRegistry]]


@pytest.fixture
async def node(redis_server: RedisServer) -> AsyncIterator[Node]:
    """``node(**config overrides, new_id=...)``: a started RedisRegistry (a node
    without its Socket.IO server) on a freshly emptied Redis; all closed afterwards."""
    redis_server.flush()
    async with AsyncExitStack() as stack:

        async def make(
            new_id: Callable[[], str] = m.new_peer_id, **overrides: object
        ) -> RedisRegistry:
            registry = RedisRegistry(_config(redis_server.url, **overrides), new_id=new_id)
            await registry.start()
            stack.push_async_callback(registry.close)
            return registry

        yield make


async def _peer(registry: RedisRegistry, address: str = ADDRESS) -> tuple[str, str]:
    """Connect and register a new client: (its sid, its peer ID)."""
    sid = f"sid-{next(_sids)}"
    assert registry.connect(sid, address, now=time.monotonic())
    return sid, await registry.register(sid)


async def _departures_seen(
    registry: RedisRegistry, until: Callable[[list[Departure]], bool], seconds: float
) -> tuple[list[Departure], float]:
    """Sweep *registry* as its server would (every 0.1 s here) until *until* holds."""
    seen: list[Departure] = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        seen += (await registry.expire(now=time.monotonic())).departed
        if until(seen):
            return seen, time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {seen} after {seconds:.1f} s")


# --------------------------------------------------------------------------- peer IDs


async def test_an_id_goes_to_one_peer_even_when_both_nodes_draw_it_at_once(
    node: Node, redis_server: RedisServer
) -> None:
    """400 registrations at once on two nodes that draw from only 600 IDs: collisions
    happen by the hundred, and still every peer gets an ID of its own, which Redis
    holds for the right node and session. (At 500 of 600 the last peers fail their 50
    draws about once in a thousand runs, as a CI run here did: a full pool is refused
    by design.)"""
    pool = [f"AA{chr(ord('A') + i // 100)}-{i % 100:03d}" for i in range(600)]
    draws = 0

    def crowded() -> str:
        nonlocal draws
        draws += 1
        return random.choice(pool)

    a, b = await node(new_id=crowded), await node(new_id=crowded)
    sids = []
    for i in range(400):
        registry = (a, b)[i % 2]
        sid = f"sid-{next(_sids)}"
        assert registry.connect(sid, ADDRESS, now=0.0)
        sids.append((registry, sid))
    ids = await asyncio.gather(*(registry.register(sid) for registry, sid in sids))
    assert len(set(ids)) == 400
    assert draws > 500, f"only {draws - 400} collisions: the race was not run"
    with redis_server.client() as client:
        for (registry, sid), peer_id in zip(sids, ids, strict=True):
            entry = client.hgetall(f"{PREFIX}peer:{peer_id}")
            assert (entry["node"], entry["sid"]) == (registry.node, sid)
        assert len(client.keys(f"{PREFIX}peer:*")) == 400


async def test_register_twice_and_without_registering(node: Node) -> None:
    a = await node()
    sid, peer_id = await _peer(a)
    with pytest.raises(Rejected) as info:
        await a.register(sid)
    assert info.value.code == m.ALREADY_REGISTERED
    assert peer_id in info.value.message
    assert a.connect("lurker", ADDRESS, now=0.0)
    with pytest.raises(Rejected) as info:
        await a.find("lurker", peer_id, now=0.0)
    assert info.value.code == m.NOT_REGISTERED


async def test_a_rendezvous_is_held_by_one_connection_across_nodes(node: Node) -> None:
    """A session meeting again (issue 28) registers under its rendezvous ID: on any
    node, one connection holds it; once it leaves, another may take it, and a peer on
    the other node finds it."""
    a, b = await node(), await node()
    rendezvous = "~" + "b3" * 13
    for registry, sid in ((a, "r1"), (b, "r2"), (b, "r3")):
        assert registry.connect(sid, ADDRESS, now=0.0)
    assert await a.register("r1", rendezvous) == rendezvous
    with pytest.raises(Rejected) as info:
        await b.register("r2", rendezvous)
    assert info.value.code == m.BUSY
    await a.disconnect("r1")
    assert await b.register("r3", rendezvous) == rendezvous
    finder, _ = await _peer(a)
    await a.find(finder, rendezvous, now=0.0)


# --------------------------------------------------------------------------- the race


async def test_of_senders_racing_for_one_receiver_exactly_one_wins(node: Node) -> None:
    a, b = await node(), await node()
    for _ in range(30):
        receiver_sid, receiver_id = await _peer(a)
        senders = [(reg, *await _peer(reg)) for reg in (a, b, a, b, b, a)]
        outcomes = await asyncio.gather(
            *(reg.request(sid, receiver_id, now=0.0) for reg, sid, _ in senders),
            return_exceptions=True,
        )
        winners = [o for o in outcomes if not isinstance(o, BaseException)]
        losers = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(winners) == 1, outcomes
        assert all(isinstance(o, Rejected) and o.code == m.BUSY for o in losers), outcomes
        winner = winners[0]
        assert winner.to_sid == receiver_sid
        # The receiver can accept the winner and nobody else.
        for _, _, sender_id in senders:
            if sender_id != winner.from_peer_id:
                with pytest.raises(Rejected):
                    await a.accept(receiver_sid, sender_id)
        route = await a.accept(receiver_sid, winner.from_peer_id)
        assert route.from_peer_id == receiver_id


async def _paired_across(node: Node) -> tuple[RedisRegistry, RedisRegistry, list[str]]:
    """Nodes a and b; a receiver on a paired with a sender on b, and a third peer on
    b: (a, b, [receiver sid, receiver ID, sender sid, sender ID, third sid, third ID])."""
    a, b = await node(), await node()
    r_sid, r_id = await _peer(a)
    s_sid, s_id = await _peer(b)
    third_sid, third_id = await _peer(b)
    await b.request(s_sid, r_id, now=0.0)
    await a.accept(r_sid, s_id)
    return a, b, [r_sid, r_id, s_sid, s_id, third_sid, third_id]


async def test_a_pairing_across_nodes_relays_only_between_its_peers(node: Node) -> None:
    a, b, (r_sid, r_id, s_sid, s_id, intruder_sid, _) = await _paired_across(node)
    assert (await b.relay(s_sid, r_id)).to_sid == r_sid
    assert (await a.relay(r_sid, s_id)).to_sid == s_sid
    with pytest.raises(Rejected) as info:
        await b.relay(intruder_sid, r_id)
    assert info.value.code == m.NOT_PAIRED
    assert (await a.abort(r_sid, s_id)).to_sid == s_sid
    with pytest.raises(Rejected):
        await b.relay(s_sid, r_id)
    stats = await a.stats(), await b.stats()
    assert [s["pairs"] + s["pending"] for s in stats] == [0, 0]


# --------------------------------------------------------------------------- lookups


async def test_lookups_per_address_are_counted_across_nodes(node: Node) -> None:
    a = await node(max_lookups_per_address=3)
    b = await node(max_lookups_per_address=3)
    a_sid, _ = await _peer(a)
    b_sid, b_id = await _peer(b)
    other_sid, _ = await _peer(b, address="198.51.100.9")
    await a.find(a_sid, b_id, now=0.0)
    with pytest.raises(Rejected):
        await b.find(b_sid, "ZZZ-999", now=0.0)  # a miss counts too
    await a.find(a_sid, b_id, now=0.0)
    for registry, sid in ((a, a_sid), (b, b_sid)):
        with pytest.raises(Rejected) as info:
            await registry.find(sid, b_id, now=0.0)
        assert info.value.code == m.RATE_LIMITED
    await b.find(other_sid, b_id, now=0.0)  # another address has its own window


# --------------------------------------------------------------------------- clocks


async def test_a_stalled_pairing_across_nodes_costs_both_ends(node: Node) -> None:
    a = await node(pairing_timeout_seconds=0.5)
    b = await node(pairing_timeout_seconds=0.5)
    r_sid, r_id = await _peer(a)
    s_sid, _s_id = await _peer(b)
    idle_sid, _ = await _peer(b)
    await b.request(s_sid, r_id, now=0.0)
    await asyncio.sleep(0.6)
    first = await a.expire(now=time.monotonic())
    assert first.stalled == [r_sid]
    # Node a drops its end first; node b still drops its own, as one process would.
    departure = await a.disconnect(r_sid)
    assert departure == Departure(peer_id=r_id, notify_sid=s_sid)
    second = await b.expire(now=time.monotonic())
    assert second.stalled == [s_sid]
    assert idle_sid not in second.stalled
    assert (await a.expire(now=time.monotonic())).stalled == []  # named once


async def test_the_partner_of_a_peer_on_a_dead_node_is_told_within_the_ttl(node: Node) -> None:
    a, b, (r_sid, r_id, _, s_id, _, idle_id) = await _paired_across(node)
    await b.heartbeat()
    await b.close()  # b dies: no goodbye, no more heartbeats
    died = time.monotonic()
    seen, _ = await _departures_seen(a, lambda seen: bool(seen), NOTICE_BOUND_SECONDS + 1)
    waited = time.monotonic() - died
    assert seen == [Departure(peer_id=s_id, notify_sid=r_sid)]
    assert TTL_SECONDS - 0.5 < waited <= NOTICE_BOUND_SECONDS, waited
    # b's peers are gone from the registry, and the receiver is free for others.
    with pytest.raises(Rejected) as info:
        await a.find(r_sid, idle_id, now=0.0)
    assert info.value.code == m.UNKNOWN_PEER
    new_sid, _new_id = await _peer(a)
    await a.request(new_sid, r_id, now=0.0)


async def test_heartbeats_keep_a_live_nodes_peers(node: Node) -> None:
    a, b = await node(), await node()
    _, b_id = await _peer(b)
    a_sid, _ = await _peer(a)
    await asyncio.sleep(2 * TTL_SECONDS)  # b's own heartbeat task runs meanwhile
    await a.find(a_sid, b_id, now=0.0)
    assert (await b.expire(now=time.monotonic())).lost == []


# --------------------------------------------------------------------------- Redis itself


async def test_peers_redis_forgot_are_named_lost_once(
    node: Node, redis_server: RedisServer
) -> None:
    a = await node()
    sid, _ = await _peer(a)
    redis_server.flush()  # as if Redis restarted without its data
    await a.heartbeat()
    assert (await a.expire(now=time.monotonic())).lost == [sid]
    assert (await a.expire(now=time.monotonic())).lost == []
    await a.disconnect(sid)  # its server drops it: nothing left to forget
    new_sid, _ = await _peer(a)
    assert a.peer_id_of(new_sid) is not None


async def test_a_stalled_redis_refuses_and_the_node_catches_up_after(
    node: Node, redis_server: RedisServer
) -> None:
    """Redis stops answering for longer than a request may wait (CLIENT PAUSE keeps
    its data): registrations are refused, a peer that leaves meanwhile is forgotten
    later, and its partner is told then.  The peers outlive the pause (their TTL is
    longer), as they would a short outage."""
    a, b = await node(redis_ttl_seconds=10.0), await node(redis_ttl_seconds=10.0)
    r_sid, r_id = await _peer(a)
    s_sid, s_id = await _peer(b)
    await b.request(s_sid, r_id, now=0.0)
    with redis_server.client() as client:
        # Long enough for the two calls below to give up.
        client.execute_command("CLIENT", "PAUSE", int(1000 * (2 * REDIS_TIMEOUT_SECONDS + 1.5)))
    newcomer = "sid-newcomer"
    assert a.connect(newcomer, ADDRESS, now=0.0)
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable) as info:
        await a.register(newcomer)
    assert time.monotonic() - started < REDIS_TIMEOUT_SECONDS + 1
    assert info.value.code == m.SERVER_FULL
    assert "Redis" in info.value.message
    departure = await b.disconnect(s_sid)  # the sender leaves while Redis is away
    assert departure == Departure(peer_id=s_id, notify_sid=None)
    seen, _ = await _departures_seen(b, lambda seen: bool(seen), 10)
    assert seen == [Departure(peer_id=s_id, notify_sid=r_sid)]
    assert m.is_peer_id(await a.register(newcomer))
    again_sid, _ = await _peer(b)
    await b.request(again_sid, r_id, now=0.0)  # the receiver is free again


async def test_an_unreachable_redis_at_start_is_one_clear_error(tmp_path: Path) -> None:
    from sfs.errors import RegistryUnreachableError

    dead = RedisServer(tmp_path)  # never started: nothing listens on its port
    url = f"redis://:s3cret@127.0.0.1:{dead.port}/0"
    registry = RedisRegistry(_config(url))
    with pytest.raises(RegistryUnreachableError) as info:
        await registry.start()
    text = str(info.value)
    assert text.startswith(f"cannot reach Redis at redis://127.0.0.1:{dead.port}/0: ")
    assert "s3cret" not in text
