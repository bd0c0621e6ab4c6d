"""The Redis registry: several ``sfs serve`` nodes share their peers through Redis.

``sfs serve --redis URL`` (or ``SFS_REDIS_URL``).  Each node keeps its own
connections as the in-memory registry does (their addresses, lookups used and
registration clocks); what all nodes must agree on lives in Redis, under ``sfs:``:

``sfs:peer:{ID}`` (hash)
    one live peer: ``sid`` (its Socket.IO session on its node), ``node``, ``link``
    (``free``, ``requesting``, ``requested`` or ``paired``), ``other`` (the peer at
    the other end of the link, or empty) and ``out`` (``1`` for the one that asked).
    The key exists exactly while the ID is taken, and expires ``--redis-ttl``
    seconds after its node's last heartbeat: the peers of a node that dies leave
    with it.
``sfs:links:{ID}`` (hash)
    a peer that serves several (``register_peer`` ``many``, ``sfs send --many``;
    its own hash then has ``many`` and ``served``, and its ``link`` stays ``free``):
    each peer that asked it, ``requested`` or ``paired``.  Only the askers are on
    their nodes' ``linked`` lists: a link runs out with the asker's clock.
``sfs:node:{NODE}:linked`` (sorted set)
    the node's peers in a request or pairing, scored by when it must have ended
    (milliseconds of Redis's clock); the node sweeps it for stalled pairings and for
    partners that are gone.
``sfs:lookups:{ADDRESS}`` (sorted set)
    the lookups made from one client address (IPv6: its /64) in the last window, so
    the per-address limit holds across nodes.
channel ``sfs:socketio``
    python-socketio's ``AsyncRedisManager``: an emit to a client of another node.

Every change is one Lua script, which Redis runs atomically: a peer ID is taken by
exactly one registration on any node, and of two requests for one receiver exactly
one wins.  The shared clocks use Redis's ``TIME``, so the nodes' clocks do not matter.

When Redis does not answer, a request that needs it is refused
(:class:`~sfs.signal.registry.RegistryUnavailable`, the ``server_full`` code with a
message that says why), the node stays up and tries again with the next request:
it recovers by itself when Redis is back.  A peer that left meanwhile is forgotten
then, and a peer whose ID Redis lost (it restarted empty, or the entry expired
while the node could not refresh it) is disconnected, as after a server restart.

Redis Cluster is not supported (the scripts touch keys of several hash slots): use
one Redis, with replicas or Sentinel for availability (docs/DEPLOY.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import socketio
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from sfs.defaults import DEFAULT_REDIS_TTL_SECONDS, MIN_REDIS_TTL_SECONDS
from sfs.errors import RegistryUnreachableError
from sfs.signal import messages as m
from sfs.signal.config import redis_url_display
from sfs.signal.registry import (
    MAX_PEER_ID_ATTEMPTS,
    Connection,
    ConnectionBook,
    Delivery,
    DeliveryCheck,
    Departure,
    Expiry,
    OwnRoomsOnly,
    Registry,
    RegistryUnavailable,
    refusal,
)

if TYPE_CHECKING:
    from sfs.signal.config import ServerConfig

logger = logging.getLogger(__name__)

PREFIX = "sfs:"
CHANNEL = PREFIX + "socketio"
DEFAULT_TTL_SECONDS = DEFAULT_REDIS_TTL_SECONDS
MIN_TTL_SECONDS = MIN_REDIS_TTL_SECONDS
# A node refreshes its peers' entries this many times per TTL, so a late heartbeat
# or two does not lose them.
HEARTBEATS_PER_TTL = 3
# Every command gives up after this long, so no client waits on a Redis that is gone.
REDIS_TIMEOUT_SECONDS = 2.0
# How long `sfs serve --redis` waits for Redis at start before it gives up.
START_TIMEOUT_SECONDS = 5.0
# Connections to Redis per node for the registry; requests wait for a free one.
# Scripts take tens of microseconds, so a few carry thousands of requests a second.
REDIS_CONNECTIONS = 8
# The subscriber reconnects after this long, doubling up to the maximum (python-
# socketio's own manager doubles up to 60 s: too long to stay deaf to other nodes).
LISTEN_RETRY_MIN_SECONDS = 0.1
LISTEN_RETRY_MAX_SECONDS = 2.0
# Peer IDs per heartbeat script: Redis runs one script at a time, so keep each short.
HEARTBEAT_BATCH = 1000
# How long Redis remembers whom a departed peer's leaving freed (see _LEAVE).
LEFT_MEMORY_MS = 60_000
# redis-py's own options for every client here: bounded waits, no silent retries (a
# script run twice is not what the caller asked for), TCP keepalive to notice a peer
# that vanished.
_CLIENT_OPTIONS: dict[str, Any] = {
    "socket_timeout": REDIS_TIMEOUT_SECONDS,
    "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
    "socket_keepalive": True,
    "retry": Retry(NoBackoff(), 0),
}


def _departure(peer_id: str, notify: Sequence[str]) -> Departure:
    """A departure that tells the sids the leave script named."""
    sids = tuple(str(sid) for sid in notify)
    return Departure(peer_id=peer_id, notify_sid=sids[0] if sids else None, also=sids[1:])


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]


# --------------------------------------------------------------------------- scripts

# Every script gets the key prefix as ARGV[1] and builds its keys from it.
_PRELUDE = """
local prefix = ARGV[1]
local function peer_key(id) return prefix .. 'peer:' .. id end
local function linked_key(node) return prefix .. 'node:' .. node .. ':linked' end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function set_free(key)
  redis.call('HSET', key, 'link', 'free', 'other', '', 'out', '0')
end
local function links_key(id) return prefix .. 'links:' .. id end
local function serves_many(key) return tonumber(redis.call('HGET', key, 'many') or '0') > 0 end
"""

# ARGV: prefix, id, sid, node, ttl_ms, many.  1 if the ID is now this sid's (also
# when a retried call finds it so), 0 if another peer holds it.
_REGISTER = """
local key = peer_key(ARGV[2])
local holder = redis.call('HGET', key, 'sid')
if holder then
  if holder == ARGV[3] then return 1 end
  return 0
end
redis.call('HSET', key, 'sid', ARGV[3], 'node', ARGV[4], 'link', 'free', 'other', '', 'out', '0',
  'many', ARGV[6], 'served', '0')
redis.call('PEXPIRE', key, ARGV[5])
redis.call('DEL', links_key(ARGV[2]))
return 1
"""

# ARGV: prefix, id, sid, remember_ms.  Forgets the peer if it is still this sid's,
# frees its partner or counterpart (a peer serving several: each of them) and
# returns their sids, or {}.  What it returned is kept for a while: a call whose
# answer was lost (it timed out after Redis had run it) is made again, and must name
# the partners again.
_LEAVE = """
local me = ARGV[2]
local mine = peer_key(me)
local told = prefix .. 'told:' .. me .. ':' .. ARGV[3]
local my = redis.call('HMGET', mine, 'sid', 'other', 'node')
if my[1] ~= ARGV[3] then
  return redis.call('LRANGE', told, 0, -1)
end
local many = serves_many(mine)
redis.call('DEL', mine)
redis.call('ZREM', linked_key(my[3]), me)
local others = {}
if many then
  others = redis.call('HKEYS', links_key(me))
  redis.call('DEL', links_key(me))
elseif my[2] ~= '' then
  others = {my[2]}
end
local sids = {}
for _, other in ipairs(others) do
  local theirs = peer_key(other)
  local o = redis.call('HMGET', theirs, 'other', 'sid', 'node')
  if o[1] == me then
    set_free(theirs)
    -- A partner whose clock has run out stays on its node's list: that node drops it
    -- as stalled, as one process drops both ends of a stalled pairing.
    local list = linked_key(o[3])
    local due = redis.call('ZSCORE', list, other)
    if due and tonumber(due) > now_ms() then redis.call('ZREM', list, other) end
    table.insert(sids, o[2])
  elseif o[2] and not many and redis.call('HDEL', links_key(other), me) == 1 then
    table.insert(sids, o[2])  -- it serves several: only this link ends
  end
end
if #sids > 0 then
  redis.call('RPUSH', told, unpack(sids))
  redis.call('PEXPIRE', told, ARGV[4])
end
return sids
"""

# ARGV: prefix, me, target, node, connection_spent (0/1), window_ms,
# max_per_address, member, request (0/1), pairing_ms, ttl_ms, address key.
# {refusal or 'ok', lookup counted (0/1), target sid}.  The checks come in the order
# of the in-memory PeerTable's: the rate limits before the target, so that misses
# count as well as hits.
_LOOKUP = """
local me, target = ARGV[2], ARGV[3]
local mine = peer_key(me)
local my_link = redis.call('HGET', mine, 'link')
if not my_link then return {'lost', 0} end
local request = ARGV[9] == '1'
if request and serves_many(mine) then return {'many_requests', 0} end
if request and my_link ~= 'free' then return {'busy_self', 0} end
if ARGV[5] == '1' then return {'connection_lookups', 0} end
local now = now_ms()
local window = prefix .. 'lookups:' .. ARGV[12]
redis.call('ZREMRANGEBYSCORE', window, '-inf', now - tonumber(ARGV[6]))
if redis.call('ZCARD', window) >= tonumber(ARGV[7]) then return {'address_lookups', 0} end
redis.call('ZADD', window, now, ARGV[8])
redis.call('PEXPIRE', window, ARGV[6])
local theirs = peer_key(target)
local t = redis.call('HMGET', theirs, 'link', 'sid', 'node', 'many', 'served')
if not t[1] then return {'unknown_peer', 1} end
if target == me then return {'self', 1} end
local many = tonumber(t[4] or '0')
if many > 0 then
  if tonumber(t[5] or '0') >= many then return {'used_up', 1} end
elseif t[1] ~= 'free' then
  return {'busy_target', 1}
end
if not request then return {'ok', 1, t[2]} end
redis.call('HSET', mine, 'link', 'requesting', 'other', target, 'out', '1')
local due = now + tonumber(ARGV[10])
local clocks = {{ARGV[4], me}}
if many > 0 then
  -- Its own link, on the asker's clock: running out drops the asker only.
  redis.call('HSET', links_key(target), me, 'requested')
  redis.call('PEXPIRE', links_key(target), ARGV[11])
  redis.call('HINCRBY', theirs, 'served', 1)
else
  redis.call('HSET', theirs, 'link', 'requested', 'other', me, 'out', '0')
  table.insert(clocks, {t[3], target})
end
for _, entry in ipairs(clocks) do
  local list = linked_key(entry[1])
  redis.call('ZADD', list, due, entry[2])
  redis.call('PEXPIRE', list, ARGV[11])
end
return {'ok', 1, t[2]}
"""

# ARGV: prefix, me, requester.  {refusal or 'ok', requester's sid}.
_ACCEPT = """
local mine, theirs = peer_key(ARGV[2]), peer_key(ARGV[3])
local my = redis.call('HMGET', mine, 'link', 'other')
if not my[1] then return {'lost'} end
local r = redis.call('HMGET', theirs, 'link', 'other', 'sid')
local many = serves_many(mine)
if many then my = {redis.call('HGET', links_key(ARGV[2]), ARGV[3]), ARGV[3]} end
if my[1] ~= 'requested' or my[2] ~= ARGV[3] or r[1] ~= 'requesting' or r[2] ~= ARGV[2] then
  return {'no_request'}
end
if many then
  redis.call('HSET', links_key(ARGV[2]), ARGV[3], 'paired')
else
  redis.call('HSET', mine, 'link', 'paired')
end
redis.call('HSET', theirs, 'link', 'paired')
return {'ok', r[3]}
"""

# ARGV: prefix, me, partner, dissolve (0/1).  {refusal or 'ok', partner's sid}; with
# dissolve, the pairing ends (an abort).
_RELAY = """
local mine, theirs = peer_key(ARGV[2]), peer_key(ARGV[3])
local my = redis.call('HMGET', mine, 'link', 'other', 'node')
if not my[1] then return {'lost'} end
local p = redis.call('HMGET', theirs, 'link', 'other', 'sid', 'node')
-- A peer that serves several keeps each link in its links hash.
local i_serve, they_serve = serves_many(mine), p[1] and serves_many(theirs)
if i_serve then my = {redis.call('HGET', links_key(ARGV[2]), ARGV[3]), ARGV[3], my[3]} end
if they_serve then p = {redis.call('HGET', links_key(ARGV[3]), ARGV[2]), ARGV[2], p[3], p[4]} end
if my[1] ~= 'paired' or my[2] ~= ARGV[3] or p[1] ~= 'paired' or p[2] ~= ARGV[2] then
  return {'not_paired'}
end
if ARGV[4] == '1' then
  local sides = {{i_serve, ARGV[2], ARGV[3], my[3]}, {they_serve, ARGV[3], ARGV[2], p[4]}}
  for _, side in ipairs(sides) do
    if side[1] then
      redis.call('HDEL', links_key(side[2]), side[3])
    else
      set_free(peer_key(side[2]))
      redis.call('ZREM', linked_key(side[4]), side[2])
    end
  end
end
return {'ok', p[3]}
"""

# ARGV: prefix, node.  {stalled IDs, {id, gone partner, ...}}: the node's peers whose
# request or pairing ran out (taken off the list), and those whose partner is gone
# (its node died and its entry expired), freed here.
_SWEEP = """
local list = linked_key(ARGV[2])
local stalled = redis.call('ZRANGEBYSCORE', list, '-inf', now_ms())
for _, id in ipairs(stalled) do redis.call('ZREM', list, id) end
local orphans = {}
for _, id in ipairs(redis.call('ZRANGE', list, 0, -1)) do
  local mine = peer_key(id)
  local other = redis.call('HGET', mine, 'other')
  if not other or other == '' then
    redis.call('ZREM', list, id)
  elseif redis.call('HGET', peer_key(other), 'other') ~= id
      and redis.call('HEXISTS', links_key(other), id) == 0 then
    set_free(mine)
    redis.call('ZREM', list, id)
    table.insert(orphans, id)
    table.insert(orphans, other)
  end
end
return {stalled, orphans}
"""

# ARGV: prefix, node, ttl_ms, id...  Pushes back the expiry of each of the node's
# peers; returns the IDs that are no longer the node's.
_HEARTBEAT = """
local lost = {}
for i = 4, #ARGV do
  local key = peer_key(ARGV[i])
  if redis.call('HGET', key, 'node') == ARGV[2] then
    redis.call('PEXPIRE', key, ARGV[3])
    redis.call('PEXPIRE', links_key(ARGV[i]), ARGV[3])
  else
    table.insert(lost, ARGV[i])
  end
end
redis.call('PEXPIRE', linked_key(ARGV[2]), ARGV[3])
return lost
"""

# ARGV: prefix, node.  {pending requests, pairings} asked for by the node's peers.
_STATS = """
local pending, pairs = 0, 0
for _, id in ipairs(redis.call('ZRANGE', linked_key(ARGV[2]), 0, -1)) do
  local h = redis.call('HMGET', peer_key(id), 'link', 'out')
  if h[1] == 'requesting' then
    pending = pending + 1
  elseif h[1] == 'paired' and h[2] == '1' then
    pairs = pairs + 1
  end
end
return {pending, pairs}
"""

_SCRIPTS = {
    "register": _REGISTER,
    "leave": _LEAVE,
    "lookup": _LOOKUP,
    "accept": _ACCEPT,
    "relay": _RELAY,
    "sweep": _SWEEP,
    "heartbeat": _HEARTBEAT,
    "stats": _STATS,
}


# --------------------------------------------------------------------------- Socket.IO


class _RedisClientManager(OwnRoomsOnly, socketio.AsyncRedisManager):  # type: ignore[misc]
    """python-socketio's Redis manager, with three changes for sfs.

    An emit to a client of this node goes straight to it, without a round trip
    through Redis (every emit of sfs names one sid).  An emit from another node is
    dropped at once unless its client is here, and before it is delivered the server
    checks that client's unread budget (*check_delivery*), as it does for its own.
    The subscriber reconnects within :data:`LISTEN_RETRY_MAX_SECONDS` when Redis comes
    back, and :attr:`subscribed` tells whether it is listening now.
    """

    def __init__(self, url: str, *, check_delivery: DeliveryCheck) -> None:
        super().__init__(url, channel=CHANNEL, logger=logger, redis_options=dict(_CLIENT_OPTIONS))
        self.check_delivery = check_delivery
        self.subscribed = False
        self.listening = asyncio.Event()

    async def emit(
        self,
        event: str,
        data: object,
        namespace: str | None = None,
        room: str | None = None,
        skip_sid: object = None,
        callback: object = None,
        to: str | None = None,
        **kwargs: object,
    ) -> None:
        target = to or room
        if target is not None and callback is None and self.is_connected(target, namespace or "/"):
            kwargs["ignore_queue"] = True  # ours: no need to ask the other nodes
        await super().emit(
            event,
            data,
            namespace=namespace,
            room=room,
            skip_sid=skip_sid,
            callback=callback,
            to=to,
            **kwargs,
        )

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        room = message.get("room")
        if room is not None:
            if not self.is_connected(room, message.get("namespace") or "/"):
                return  # a client of another node
            if not await self.check_delivery(room):
                return  # dropped instead: it does not read what it is sent
        await super()._handle_emit(message)

    async def _redis_listen_with_retries(self) -> AsyncIterator[dict[str, Any]]:
        delay = LISTEN_RETRY_MIN_SECONDS
        while True:
            client: Any = None
            pubsub: Any = None
            try:
                client = Redis.from_url(self.redis_url, **self.redis_options)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                self._listening(True)
                delay = LISTEN_RETRY_MIN_SECONDS
                async for message in pubsub.listen():
                    yield message
            # Whatever ends the subscription (redis-py raises several kinds when a
            # connection drops), the node must go on listening once Redis is back.
            except Exception as exc:
                if self.subscribed:
                    logger.warning("lost the Redis subscription (%s); reconnecting", _reason(exc))
                else:
                    logger.debug("cannot subscribe to Redis yet: %s", _reason(exc))
            finally:
                self._listening(False)
                for closable in (pubsub, client):
                    if closable is not None:
                        with contextlib.suppress(Exception):
                            await closable.aclose()
            await asyncio.sleep(delay)
            delay = min(2 * delay, LISTEN_RETRY_MAX_SECONDS)

    def _listening(self, on: bool) -> None:
        if on and not self.subscribed:
            logger.debug("subscribed to %s", CHANNEL)
        self.subscribed = on
        if on:
            self.listening.set()
        else:
            self.listening.clear()

    async def stop(self) -> None:
        """Stop listening and let go of the publishing connection."""
        thread = getattr(self, "thread", None)
        if isinstance(thread, asyncio.Task):
            thread.cancel()
            await asyncio.wait([thread], timeout=REDIS_TIMEOUT_SECONDS)
        for closable in (self.pubsub, self.redis):
            if closable is not None:
                with contextlib.suppress(Exception):
                    await closable.aclose()


# --------------------------------------------------------------------------- the registry


class RedisRegistry(ConnectionBook[Connection], Registry):
    """Peers shared by every node that uses the same Redis.

    :param config: the limits to enforce, ``redis_url`` and ``redis_ttl_seconds``
    :param new_id: source of candidate peer IDs (tests pass one that collides)
    :param node: this node's name in Redis (random unless given)
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        new_id: Callable[[], str] = m.new_peer_id,
        node: str | None = None,
    ) -> None:
        if config.redis_url is None:
            raise ValueError("RedisRegistry needs config.redis_url")
        super().__init__(config, Connection)
        self.url = config.redis_url
        self.display = redis_url_display(self.url)
        self.node = node or secrets.token_hex(6)
        self._new_id = new_id
        self._ttl_ms = max(1, math.ceil(config.redis_ttl_seconds * 1000))
        self._departures: list[tuple[str, str]] = []  # (peer ID, sid) not yet forgotten
        self._lost: set[str] = set()  # sids whose peer ID Redis no longer has
        self._redis: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._manager: _RedisClientManager | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._reachable = True

    # The registry's pool, the subscriber and python-socketio's publisher.
    descriptors = REDIS_CONNECTIONS + 2

    def describe(self) -> str:
        return f"Redis at {self.display}, node {self.node}"

    def client_manager(self, *, check_delivery: DeliveryCheck) -> Any:
        self._manager = _RedisClientManager(self.url, check_delivery=check_delivery)
        return self._manager

    # ------------------------------------------------------------------ start and stop

    async def start(self) -> None:
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=REDIS_CONNECTIONS,
            timeout=REDIS_TIMEOUT_SECONDS,
            decode_responses=True,
            **_CLIENT_OPTIONS,
        )
        self._redis = Redis.from_pool(pool)
        self._scripts = {
            name: self._redis.register_script(_PRELUDE + body) for name, body in _SCRIPTS.items()
        }
        try:
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                await self._redis.ping()
                await self._start_listening()
        except (RedisError, OSError, TimeoutError) as exc:
            await self.close()
            reason = "no answer" if isinstance(exc, TimeoutError) else _reason(exc)
            raise RegistryUnreachableError(
                f"cannot reach Redis at {self.display}: {reason}"
            ) from None
        self._heartbeat = asyncio.create_task(self._heartbeat_forever())
        logger.info(
            "peers registry: %s; a node's peers expire %g s after its last heartbeat",
            self.describe(),
            self.config.redis_ttl_seconds,
        )

    async def _start_listening(self) -> None:
        """Start python-socketio's subscriber now (it would wait for the first
        client), and wait until it listens."""
        manager = self._manager
        if manager is None:
            return
        server = manager.server
        if not server.manager_initialized:
            server.manager_initialized = True
            manager.initialize()
        await manager.listening.wait()

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.wait([self._heartbeat], timeout=REDIS_TIMEOUT_SECONDS)
            self._heartbeat = None
        if self._manager is not None:
            await self._manager.stop()
        if self._redis is not None:
            await self._redis.aclose(close_connection_pool=True)
            self._redis = None

    # ------------------------------------------------------------------ talking to Redis

    async def _run(self, script: str, *args: object) -> Any:
        """Run one of :data:`_SCRIPTS` with *args* after the prefix.

        :raises RegistryUnavailable: when Redis does not answer in time or fails.
        """
        if self._redis is None:
            raise RegistryUnavailable()
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                result = await self._scripts[script](args=[PREFIX, *args], client=self._redis)
        except (RedisError, OSError, TimeoutError) as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Cancelled while waiting: redis-py may report that as a connection
                # error (its pool does), which must not hide the cancellation.
                raise asyncio.CancelledError() from exc
            if self._reachable:
                self._reachable = False
                logger.warning(
                    "Redis at %s does not answer (%s): refusing registrations until it does",
                    self.display,
                    "timed out" if isinstance(exc, TimeoutError) else _reason(exc),
                )
            raise RegistryUnavailable() from exc
        if not self._reachable:
            self._reachable = True
            logger.warning("Redis at %s answers again", self.display)
        return result

    def _ready(self) -> None:
        """Refuse what would pair a peer this node cannot hear from the others."""
        if self._manager is not None and not self._manager.subscribed:
            raise RegistryUnavailable()

    async def _heartbeat_forever(self) -> None:
        interval = self.config.redis_ttl_seconds / HEARTBEATS_PER_TTL
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(RegistryUnavailable):  # _run logged it
                await self.heartbeat()

    async def heartbeat(self) -> None:
        """Push back the expiry of this node's peers; note those Redis lost."""
        ids = list(self._sid_by_peer_id)
        for start in range(0, max(len(ids), 1), HEARTBEAT_BATCH):
            batch = ids[start : start + HEARTBEAT_BATCH]
            for peer_id in await self._run("heartbeat", self.node, self._ttl_ms, *batch):
                sid = self._sid_by_peer_id.get(peer_id)
                if sid is not None:
                    self._lost.add(sid)

    # ------------------------------------------------------------------ shared

    async def register(self, sid: str, rendezvous: str | None = None, many: int = 0) -> str:
        conn = self._not_yet_registered(sid)
        self._ready()
        for _ in range(1 if rendezvous is not None else MAX_PEER_ID_ATTEMPTS):
            peer_id = rendezvous if rendezvous is not None else self._new_id()
            if not await self._run("register", peer_id, sid, self.node, self._ttl_ms, many):
                if rendezvous is not None:
                    raise refusal("rendezvous_taken")
                continue
            if self._connections.get(sid) is not conn:  # it left while Redis answered
                self._departures.append((peer_id, sid))
                raise refusal("not_registered")
            self._set_peer_id(conn, peer_id)
            return peer_id
        raise refusal("no_free_id")

    async def disconnect(self, sid: str) -> Departure | None:
        conn = self._forget(sid)
        if conn is None:
            return None
        self._lost.discard(sid)
        if conn.peer_id is None:
            return Departure(peer_id=None, notify_sid=None)
        try:
            notify = await self._run("leave", conn.peer_id, sid, LEFT_MEMORY_MS)
        except RegistryUnavailable:
            self._departures.append((conn.peer_id, sid))  # expire() tries again
            return Departure(peer_id=conn.peer_id, notify_sid=None)
        return _departure(conn.peer_id, notify)

    async def find(self, sid: str, peer_id: str, *, now: float) -> None:
        await self._lookup(sid, peer_id, request=False)

    async def request(self, sid: str, peer_id: str, *, now: float) -> Delivery:
        conn, target_sid = await self._lookup(sid, peer_id, request=True)
        assert conn.peer_id is not None  # _lookup checked it
        return Delivery(to_sid=target_sid, from_peer_id=conn.peer_id)

    async def _lookup(self, sid: str, peer_id: str, *, request: bool) -> tuple[Connection, str]:
        conn = self._registered(sid)
        assert conn.peer_id is not None
        if request:
            self._ready()
        outcome, counted, *rest = await self._run(
            "lookup",
            conn.peer_id,
            peer_id,
            self.node,
            int(conn.lookups >= self.config.max_lookups_per_connection),
            math.ceil(self.config.lookup_window_seconds * 1000),
            self.config.max_lookups_per_address,
            f"{self.node}:{sid}:{conn.lookups}",
            int(request),
            math.ceil(self.config.pairing_timeout_seconds * 1000),
            self._ttl_ms,
            conn.address_key,
        )
        if counted:
            conn.lookups += 1
        self._check(sid, outcome, peer_id)
        return conn, str(rest[0])

    async def accept(self, sid: str, peer_id: str) -> Delivery:
        conn = self._registered(sid)
        outcome, *rest = await self._run("accept", conn.peer_id, peer_id)
        self._check(sid, outcome, peer_id)
        return Delivery(to_sid=str(rest[0]), from_peer_id=self._id(conn))

    async def relay(self, sid: str, peer_id: str) -> Delivery:
        return await self._relay(sid, peer_id, dissolve=False)

    async def abort(self, sid: str, peer_id: str) -> Delivery:
        return await self._relay(sid, peer_id, dissolve=True)

    async def _relay(self, sid: str, peer_id: str, *, dissolve: bool) -> Delivery:
        conn = self._registered(sid)
        outcome, *rest = await self._run("relay", conn.peer_id, peer_id, int(dissolve))
        self._check(sid, outcome, peer_id)
        return Delivery(to_sid=str(rest[0]), from_peer_id=self._id(conn))

    async def expire(self, *, now: float) -> Expiry:
        expiry = Expiry()
        try:
            await self._finish_departures(expiry)
            stalled, orphans = await self._run("sweep", self.node)
        except RegistryUnavailable:
            stalled, orphans = [], []
        expiry.stalled.extend(self._local_sids(stalled))
        for peer_id, gone in zip(orphans[::2], orphans[1::2], strict=True):
            sid = self._sid_by_peer_id.get(peer_id)
            if sid is not None:
                expiry.departed.append(Departure(peer_id=gone, notify_sid=sid))
        expiry.lost.extend(sid for sid in self._lost if sid in self._connections)
        self._lost.clear()
        return expiry

    async def _finish_departures(self, expiry: Expiry) -> None:
        while self._departures:
            peer_id, sid = self._departures[0]
            notify = await self._run("leave", peer_id, sid, LEFT_MEMORY_MS)
            self._departures.pop(0)
            if notify:
                expiry.departed.append(_departure(peer_id, notify))

    async def stats(self) -> dict[str, int]:
        counts = {"connections": len(self._connections), "peers": len(self._sid_by_peer_id)}
        try:
            pending, pairs = await self._run("stats", self.node)
        except RegistryUnavailable:
            return counts  # the shared counts are unknown just now
        return {**counts, "pending": int(pending), "pairs": int(pairs)}

    # ------------------------------------------------------------------ helpers

    def _check(self, sid: str, outcome: str, peer_id: str) -> None:
        if outcome == "ok":
            return
        if outcome == "lost":
            # Redis no longer has this peer: it gets disconnected at the next sweep.
            self._lost.add(sid)
            raise RegistryUnavailable()
        raise refusal(outcome, peer_id)

    def _local_sids(self, peer_ids: Sequence[str]) -> list[str]:
        sids = (self._sid_by_peer_id.get(peer_id) for peer_id in peer_ids)
        return [sid for sid in sids if sid is not None]
