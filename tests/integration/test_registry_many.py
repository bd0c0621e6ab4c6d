"""A peer that serves several (``register_peer`` ``many``, ``sfs send --many``), as
both registries keep it: the in-memory one, and the Redis one across two nodes on a
real ``redis-server`` (the peer on one node, the askers spread over both).

The rules: up to ``many`` peers may ask it, in all and at once; each asker's link is
its own (accepted, relayed, aborted and timed out on its own); the next asker is
refused ``used_up``; a serving peer never asks anyone; when it leaves, every asker
is told and freed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace

import pytest

from sfs.signal import messages as m
from sfs.signal.config import ServerConfig
from sfs.signal.memory_registry import MemoryRegistry
from sfs.signal.redis_registry import RedisRegistry
from sfs.signal.registry import Registry, Rejected
from tests.integration.cluster import RedisServer

ADDRESS = "192.0.2.7"
_sids = itertools.count()

#: ``nodes(**config overrides)``: two registries that share their peers (one and the
#: same in-memory registry twice, or two Redis nodes).
Nodes = Callable[..., Awaitable[tuple[Registry, Registry]]]


@pytest.fixture(params=["memory", "redis"])
async def nodes(request: pytest.FixtureRequest) -> AsyncIterator[Nodes]:
    async with AsyncExitStack() as stack:

        async def make(**overrides: object) -> tuple[Registry, Registry]:
            config = replace(
                ServerConfig(host="127.0.0.1", port=0, max_lookups_per_address=10_000),
                **overrides,  # type: ignore[arg-type]
            )
            if request.param == "memory":
                registry = MemoryRegistry(config)
                return registry, registry
            redis_server: RedisServer = request.getfixturevalue("redis_server")
            redis_server.flush()
            config = replace(config, redis_url=redis_server.url, redis_ttl_seconds=2.0)
            made = []
            for _ in range(2):
                node = RedisRegistry(config)
                await node.start()
                stack.push_async_callback(node.close)
                made.append(node)
            return made[0], made[1]

        yield make


async def _peer(registry: Registry, many: int = 0) -> tuple[str, str]:
    sid = f"sid-{next(_sids)}"
    assert registry.connect(sid, ADDRESS, now=time.monotonic())
    return sid, await registry.register(sid, None, many)


async def _refused(code: str, call: Awaitable[object]) -> Rejected:
    with pytest.raises(Rejected) as info:
        await call
    assert info.value.code == code, info.value.message
    return info.value


async def test_up_to_many_ask_at_once_and_the_next_is_refused_used_up(nodes: Nodes) -> None:
    a, b = await nodes()
    s_sid, s_id = await _peer(a, many=3)
    askers = [(reg, *await _peer(reg)) for reg in (a, b, b, a)]
    # Three ask at once: each gets its own request through.
    routes = await asyncio.gather(*(reg.request(sid, s_id, now=0.0) for reg, sid, _ in askers[:3]))
    assert {r.to_sid for r in routes} == {s_sid}
    assert sorted(r.from_peer_id for r in routes) == sorted(i for _, _, i in askers[:3])
    # The fourth: refused, by find and by request, in words that say why.
    reg4, sid4, _ = askers[3]
    refusal = await _refused(m.USED_UP, reg4.find(sid4, s_id, now=0.0))
    assert "every receiver its sender allowed" in refusal.message
    await _refused(m.USED_UP, reg4.request(sid4, s_id, now=0.0))
    stats = [await r.stats() for r in {id(a): a, id(b): b}.values()]
    assert sum(s["pending"] for s in stats) == 3


async def test_each_askers_link_is_its_own(nodes: Nodes) -> None:
    a, b = await nodes()
    s_sid, s_id = await _peer(a, many=3)
    (r1_sid, r1_id), (r2_sid, r2_id), (r3_sid, r3_id) = [await _peer(b) for _ in range(3)]
    for sid in (r1_sid, r2_sid, r3_sid):
        await b.request(sid, s_id, now=0.0)
    assert (await a.accept(s_sid, r1_id)).to_sid == r1_sid
    assert (await a.accept(s_sid, r2_id)).to_sid == r2_sid
    await _refused(m.UNKNOWN_PEER, a.accept(s_sid, r1_id))  # accepted once only
    # Relays pass between the serving peer and each paired asker, both ways.
    assert (await a.relay(s_sid, r1_id)).to_sid == r1_sid
    assert (await a.relay(s_sid, r2_id)).to_sid == r2_sid
    assert (await b.relay(r2_sid, s_id)).to_sid == s_sid
    # Not with an asker still waiting for its accept, nor between askers.
    await _refused(m.NOT_PAIRED, a.relay(s_sid, r3_id))
    await _refused(m.NOT_PAIRED, b.relay(r3_sid, s_id))
    await _refused(m.NOT_PAIRED, b.relay(r1_sid, r2_id))
    # An abort ends that link alone.
    assert (await b.abort(r1_sid, s_id)).to_sid == s_sid
    await _refused(m.NOT_PAIRED, a.relay(s_sid, r1_id))
    await _refused(m.NOT_PAIRED, b.relay(r1_sid, s_id))
    assert (await a.relay(s_sid, r2_id)).to_sid == r2_sid
    # The aborted asker is free (it may ask someone else); its slot stays spent.
    other_sid, other_id = await _peer(a)
    await b.request(r1_sid, other_id, now=0.0)
    # An asker that leaves tells the serving peer, and only that link ends.
    departure = await b.disconnect(r2_sid)
    assert departure is not None
    assert departure.told == (s_sid,)
    await _refused(m.NOT_PAIRED, a.relay(s_sid, r2_id))
    assert (await a.accept(s_sid, r3_id)).to_sid == r3_sid
    # All three slots were spent: the serving peer takes nobody else.
    late_sid, _ = await _peer(b)
    await _refused(m.USED_UP, b.request(late_sid, s_id, now=0.0))
    del other_sid


async def test_a_serving_peer_never_asks_and_its_leaving_frees_every_asker(nodes: Nodes) -> None:
    a, b = await nodes()
    s_sid, s_id = await _peer(a, many=2)
    target_sid, target_id = await _peer(a)
    await _refused(m.INVALID, a.request(s_sid, target_id, now=0.0))
    (r1_sid, r1_id), (r2_sid, _) = await _peer(b), await _peer(a)
    await b.request(r1_sid, s_id, now=0.0)
    await a.request(r2_sid, s_id, now=0.0)
    await a.accept(s_sid, r1_id)  # one paired, one still asking
    departure = await a.disconnect(s_sid)
    assert departure is not None
    assert departure.peer_id == s_id
    assert sorted(departure.told) == sorted([r1_sid, r2_sid])
    # Both are free again: either may ask another peer.
    await b.request(r1_sid, target_id, now=0.0)
    del target_sid


async def test_a_stalled_link_drops_the_asker_only(nodes: Nodes) -> None:
    a, b = await nodes(pairing_timeout_seconds=0.3)
    s_sid, s_id = await _peer(a, many=2)
    r_sid, _ = await _peer(b)
    await b.request(r_sid, s_id, now=time.monotonic())
    await asyncio.sleep(0.4)
    stalled = [*(await a.expire(now=time.monotonic())).stalled]
    if b is not a:
        stalled += (await b.expire(now=time.monotonic())).stalled
    assert stalled == [r_sid]
    departure = await b.disconnect(r_sid)
    assert departure is not None
    assert departure.told == (s_sid,)
    # The serving peer stays, and its second slot is still there.
    late_sid, _ = await _peer(b)
    await b.request(late_sid, s_id, now=time.monotonic())


@pytest.mark.parametrize("many", [-1, 21, True, "3"])
def test_register_peer_many_must_be_a_number_up_to_the_cap(many: object) -> None:
    with pytest.raises(m.InvalidMessage):
        m.parse_register_peer({"many": many})


def test_register_peer_many_is_not_a_rendezvous() -> None:
    assert m.parse_register_peer({"many": 20}).many == 20
    with pytest.raises(m.InvalidMessage):
        m.parse_register_peer({"many": 2, "rendezvous": "~" + "a" * 26})
