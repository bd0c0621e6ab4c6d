"""scripts/load: many Socket.IO clients and concurrent handshakes against `sfs serve`.

Starts ``--nodes`` real ``sfs serve`` processes on 127.0.0.1 (port 0; with ``--redis``
they share their peers through a ``redis-server`` the script starts on a free port of
127.0.0.1, without persistence), connects ``--clients`` python-socketio clients to them,
spread evenly (websocket transport, as sfs itself), then runs ``--handshakes`` pairings
at once, each between a fresh receiver and sender drawn from those clients (with
several nodes, always on two different nodes) and each the signaling of a real
transfer (no WebRTC):

    receiver register_peer; sender register_peer, find_peer, send_connection_request;
    receiver gets connection_request, accept_connection; sender gets connection_accepted;
    both send_public_key and get receive_public_key; sender offer (sealed, ~2 KiB);
    receiver gets it and sends an answer; sender gets the answer.

The latency of a handshake runs from the sender's find_peer to its receiving the answer.
Every other client registers and stays connected, idle.  Any failed ack, wrong, missing
or late event, or exception is an error, as is a warning in a node's log; the script exits
1 if there was any.  The whole run, servers' start and stop included, is bounded by
``--timeout``.  ``--compare`` first runs the same load on one node in memory and on one
node with Redis, and ends with a table of all three.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import platform
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from benchmarks.bench import Usage, wait_usage
from sfs.defaults import DEFAULT_FD_RESERVE
from sfs.signal import messages as m
from tests.integration.cluster import RedisServer

LOOPBACK = "127.0.0.1"
MIB = 1024 * 1024
# A SPAKE2 message is 33 bytes; a sealed SDP of a one-stream offer is about 2 KiB.
PUBLIC_KEY_BYTES = 33
SEALED_SDP_BYTES = 1536  # 2048 base64 characters
# Each handshake makes two lookups, all from 127.0.0.1: find_peer and
# send_connection_request.  Headroom for the server's own slack.
LOOKUPS_PER_HANDSHAKE = 2
LOOKUP_HEADROOM = 16
CONNECTION_HEADROOM = 16
# File descriptors each process needs beyond one per client: the interpreter, the
# server's listening socket, log files, imported extension modules, and the reserve
# the server keeps free for /healthz (it refuses Socket.IO clients inside it).
FD_HEADROOM = 256 + DEFAULT_FD_RESERVE
# Of --timeout, kept for disconnecting the clients, letting the server finish with
# them and stopping it: a third each at most.
TEARDOWN_SECONDS = 15.0
# The server has finished a phase's work when it uses less CPU than this in a poll.
QUIET_CPU_SECONDS = 0.02
QUIET_POLL_SECONDS = 0.2
SERVER_START_SECONDS = 20.0
_LOG_PROBLEM_RE = re.compile(r" (WARNING|ERROR|CRITICAL) |^Traceback", re.MULTILINE)
_ERROR_EXAMPLES = 5
DESCRIPTION = "Many Socket.IO clients and concurrent handshakes against `sfs serve` nodes."
# Per node, unless --clients / --handshakes say otherwise.
CLIENTS_PER_NODE = 2000
HANDSHAKES_PER_NODE = 200


class LoadError(Exception):
    """A handshake or a client did not behave as a working server would make it."""


def _b64(size: int) -> str:
    return base64.b64encode(os.urandom(size)).decode("ascii")


# --------------------------------------------------------------------------- the server


def _proc_status_kib(pid: int, key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def _proc_cpu_seconds(pid: int) -> float:
    # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the name.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ServerSnapshot:
    rss_mib: float
    peak_rss_mib: float
    cpu_seconds: float


@dataclass(frozen=True)
class RedisSnapshot:
    used_mib: float  # INFO memory: used_memory
    rss_mib: float  # the redis-server process


def redis_snapshot(redis: RedisServer) -> RedisSnapshot:
    return RedisSnapshot(
        rss_mib=_proc_status_kib(redis.pid, "VmRSS") / 1024,
        used_mib=redis.used_memory_bytes() / MIB,
    )


class ServerProcess:
    """``sfs serve`` on 127.0.0.1, port 0, with limits raised for the run.

    :param redis_url: share the peers through this Redis (``--redis``)
    """

    def __init__(
        self,
        workdir: Path,
        *,
        max_connections: int,
        max_lookups: int,
        env: dict[str, str],
        index: int = 1,
        redis_url: str | None = None,
    ) -> None:
        self.log = workdir / f"serve-{index}.log"
        serve = ["serve", "--host", LOOPBACK, "--port", "0"]
        serve += ["--max-connections", str(max_connections)]
        # Every client comes from 127.0.0.1.
        serve += ["--max-connections-per-address", str(max_connections)]
        serve += ["--max-lookups-per-address", str(max_lookups)]
        if redis_url is not None:
            serve += ["--redis", redis_url]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sfs", *serve],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.pid = self.process.pid
        self.url = ""

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            match = re.search(r"listening on (http://\S+)", self.log.read_text())
            if match:
                self.url = match.group(1)
                return
            time.sleep(0.05)
        raise RuntimeError(f"sfs serve did not start:\n{self.log.read_text()[-2000:]}")

    def snapshot(self) -> ServerSnapshot:
        return ServerSnapshot(
            rss_mib=_proc_status_kib(self.pid, "VmRSS") / 1024,
            peak_rss_mib=_proc_status_kib(self.pid, "VmHWM") / 1024,
            cpu_seconds=_proc_cpu_seconds(self.pid),
        )

    def log_problems(self) -> list[str]:
        """Lines of the server log at WARNING or above, and tracebacks."""
        text = self.log.read_text(errors="replace")
        return [line for line in text.splitlines() if _LOG_PROBLEM_RE.search(line)]

    def stop(self, timeout: float) -> Usage | None:
        """Stop the server (SIGTERM, then SIGKILL) and return what it used in all."""
        if self.process.returncode is not None:
            return None
        self.process.terminate()
        try:
            return wait_usage(self.process, timeout)
        except RuntimeError:  # wait_usage killed it; reap it
            self.process.wait(timeout)
            return None


# --------------------------------------------------------------------------- the clients


class LoadClient:
    """One Socket.IO connection; pushed events land, in order, in one queue."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.sio: Any = socketio.AsyncClient(
            reconnection=False, handle_sigint=False, http_session=http
        )
        self.events: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        for name in (
            m.PEER_FOUND,
            m.CONNECTION_REQUEST,
            m.CONNECTION_ACCEPTED,
            m.RECEIVE_PUBLIC_KEY,
            m.OFFER,
            m.ANSWER,
            m.ICE_CANDIDATE,
            m.PEER_ABORTED,
            m.PEER_DISCONNECTED,
            m.ERROR,
        ):
            self.sio.on(name, self._handler(name))
        self.sio.on("disconnect", self._handler("disconnect"))

    def _handler(self, name: str) -> Any:
        async def handle(data: object = None, *rest: object) -> None:
            self.events.put_nowait((name, data))

        return handle

    async def connect(self, url: str) -> None:
        # Longer than any connect should take; the run's deadline bounds it anyway.
        await self.sio.connect(url, transports=["websocket"], wait_timeout=60)

    async def call(self, event: str, payload: dict[str, object]) -> dict[str, Any]:
        # No timeout of its own: every handshake runs under the run's deadline.
        ack = await self.sio.call(event, payload, timeout=3600)
        if not isinstance(ack, dict) or ack.get("ok") is not True:
            code = ack.get("error") if isinstance(ack, dict) else repr(ack)
            raise LoadError(f"{event} ack {code}")
        return ack

    async def register(self) -> str:
        peer_id = (await self.call(m.REGISTER_PEER, {}))["peer_id"]
        if not m.is_peer_id(peer_id):
            raise LoadError(f"register_peer gave {peer_id!r}")
        return str(peer_id)

    async def expect(self, name: str, **fields: str) -> None:
        """Take the next pushed event: it must be *name* carrying *fields*."""
        got, data = await self.events.get()
        if got != name:
            raise LoadError(f"expected {name}, got {got}")
        if not isinstance(data, dict) or any(data.get(k) != v for k, v in fields.items()):
            raise LoadError(f"{name} with a wrong payload")

    async def close(self) -> None:
        await self.sio.disconnect()


async def _sender(sender: LoadClient, receiver_id: str) -> float:
    """The sender's half of a handshake; returns its latency in seconds."""
    key, offer = _b64(PUBLIC_KEY_BYTES), _b64(SEALED_SDP_BYTES)
    started = time.perf_counter()
    await sender.call(m.FIND_PEER, {"peer_id": receiver_id})
    await sender.expect(m.PEER_FOUND, peer_id=receiver_id)
    await sender.call(m.SEND_CONNECTION_REQUEST, {"peer_id": receiver_id})
    await sender.expect(m.CONNECTION_ACCEPTED, peer_id=receiver_id)
    await sender.call(m.SEND_PUBLIC_KEY, {"peer_id": receiver_id, "key": key})
    await sender.expect(m.RECEIVE_PUBLIC_KEY, peer_id=receiver_id)
    await sender.call(m.OFFER, {"peer_id": receiver_id, "sealed": offer})
    await sender.expect(m.ANSWER, peer_id=receiver_id)
    return time.perf_counter() - started


async def _receiver(receiver: LoadClient, sender_id: str) -> None:
    key, answer = _b64(PUBLIC_KEY_BYTES), _b64(SEALED_SDP_BYTES)
    await receiver.expect(m.CONNECTION_REQUEST, peer_id=sender_id)
    await receiver.call(m.ACCEPT_CONNECTION, {"peer_id": sender_id})
    await receiver.call(m.SEND_PUBLIC_KEY, {"peer_id": sender_id, "key": key})
    await receiver.expect(m.RECEIVE_PUBLIC_KEY, peer_id=sender_id)
    await receiver.expect(m.OFFER, peer_id=sender_id)
    await receiver.call(m.ANSWER, {"peer_id": sender_id, "sealed": answer})


async def handshake(receiver: LoadClient, sender: LoadClient) -> float:
    """One pairing and its signaling, as sfs receive and sfs send do it."""
    receiver_id = await receiver.register()
    sender_id = await sender.register()
    async with asyncio.TaskGroup() as group:
        group.create_task(_receiver(receiver, sender_id))
        latency = group.create_task(_sender(sender, receiver_id))
    return latency.result()


# --------------------------------------------------------------------------- the run


@dataclass
class Deployment:
    """The nodes of a run, and the Redis they share (if any)."""

    nodes: list[ServerProcess]
    redis: RedisServer | None = None

    @property
    def label(self) -> str:
        registry = "Redis" if self.redis is not None else "in memory"
        return f"{len(self.nodes)} node{'s' if len(self.nodes) > 1 else ''}, {registry}"


@dataclass
class Results:
    clients_wanted: int
    handshakes_wanted: int
    connect_concurrency: int
    label: str = ""
    nodes: int = 1
    clients_connected: int = 0
    connect_seconds: float = 0.0
    handshake_seconds: float = 0.0
    crossing: int = 0  # handshakes whose receiver and sender are on different nodes
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    server: list[dict[str, ServerSnapshot]] = field(default_factory=list)  # per node
    redis: dict[str, RedisSnapshot] = field(default_factory=dict)
    client_cpu_seconds: dict[str, float] = field(default_factory=dict)
    # This process's CPU when the run began (--compare runs several in one process).
    client_cpu_base: float = field(default_factory=time.process_time)
    server_usage: list[Usage | None] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)

    def error(self, phase: str, exc: BaseException) -> None:
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
        if isinstance(exc, TimeoutError | asyncio.CancelledError):
            text = "did not finish before --timeout"
        else:
            text = str(exc) or type(exc).__name__
        self.errors[f"{phase}: {text}"] += 1


def _snapshot(deployment: Deployment, results: Results, name: str) -> None:
    results.client_cpu_seconds[name] = time.process_time() - results.client_cpu_base
    if not results.server:
        results.server = [{} for _ in deployment.nodes]
    for i, server in enumerate(deployment.nodes):
        if server.process.poll() is None:
            results.server[i][name] = server.snapshot()
        elif not any(kind.startswith(f"node {i + 1}:") for kind in results.errors):
            results.errors[f"node {i + 1}: exited with status {server.process.returncode}"] += 1
    if deployment.redis is not None:
        try:
            results.redis[name] = redis_snapshot(deployment.redis)
        except (OSError, ValueError) as exc:  # redis-py's errors are OSErrors too
            results.error("redis", exc)


async def _quiet(servers: list[ServerProcess], deadline: float) -> None:
    """Wait until every node is idle again (or *deadline*)."""
    running = [s for s in servers if s.process.poll() is None]
    while running and time.monotonic() < deadline:
        before = [s.snapshot().cpu_seconds for s in running]
        await asyncio.sleep(QUIET_POLL_SECONDS)
        after = [s.snapshot().cpu_seconds for s in running]
        if all(b - a < QUIET_CPU_SECONDS for a, b in zip(before, after, strict=True)):
            return


def _errors_of(outcomes: Sequence[object]) -> list[BaseException]:
    return [o for o in outcomes if isinstance(o, BaseException)]


async def _bounded(deadline: float, coros: Sequence[Coroutine[Any, Any, object]]) -> list[object]:
    """Run *coros* at once until *deadline*; an unfinished one yields TimeoutError."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if tasks:
        await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
    outcomes: list[object] = []
    for task in tasks:
        if not task.done():
            task.cancel()
            outcomes.append(TimeoutError())
        elif task.cancelled():
            outcomes.append(asyncio.CancelledError())
        else:
            outcomes.append(task.exception() or task.result())
    await asyncio.gather(*tasks, return_exceptions=True)
    return outcomes


def handshake_pairs(clients: int, handshakes: int, nodes: int) -> list[tuple[int, int]]:
    """(receiver, sender) client indexes for each handshake, client *i* being on node
    ``i % nodes``: with several nodes, the sender is always on the receiver's next node."""
    by_node = [list(range(n, clients, nodes)) for n in range(nodes)]
    for indexes in by_node:
        random.shuffle(indexes)
    pairs = []
    for i in range(handshakes):
        receiver_node = i % nodes
        sender_node = (receiver_node + 1) % nodes
        pairs.append((by_node[receiver_node].pop(), by_node[sender_node].pop()))
    return pairs


async def run_load(
    deployment: Deployment, args: argparse.Namespace, results: Results, deadline: float
) -> None:
    """Connect the clients, run the handshakes, disconnect; all by *deadline*."""
    nodes = deployment.nodes
    # One connection pool for all clients, with no limit: each websocket holds its
    # connection for its whole life, and aiohttp's default pool stops at 100.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        clients = [LoadClient(http) for _ in range(args.clients)]
        pairs = handshake_pairs(args.clients, args.handshakes, len(nodes))
        results.crossing = sum(r % len(nodes) != s % len(nodes) for r, s in pairs)
        in_handshakes = {i for pair in pairs for i in pair}
        gate = asyncio.Semaphore(args.connect_concurrency)
        connected: list[LoadClient] = []

        async def join(index: int) -> None:
            async with gate:
                client = clients[index]
                await client.connect(nodes[index % len(nodes)].url)
                connected.append(client)
                if index not in in_handshakes:
                    await client.register()  # an idle peer, as a receiver showing its code

        try:
            started = time.monotonic()
            outcomes = await _bounded(deadline, [join(i) for i in range(args.clients)])
            results.connect_seconds = time.monotonic() - started
            results.clients_connected = len(connected)
            for exc in _errors_of(outcomes):
                results.error("connect", exc)
            _snapshot(deployment, results, "connected")

            if results.clients_connected == args.clients:
                started = time.monotonic()
                outcomes = await _bounded(
                    deadline, [handshake(clients[r], clients[s]) for r, s in pairs]
                )
                results.handshake_seconds = time.monotonic() - started
                results.latencies = [o for o in outcomes if isinstance(o, float)]
                for exc in _errors_of(outcomes):
                    results.error("handshake", exc)
                _snapshot(deployment, results, "handshakes")
            results.log_problems = [line for s in nodes for line in s.log_problems()]
        finally:
            # Bounded: a client stuck in its closing handshake must not hold the run.
            await _bounded(time.monotonic() + TEARDOWN_SECONDS / 3, [c.close() for c in connected])
    # A client's disconnect does not wait for the server, which goes on handling the
    # closed connections for a while: count that CPU in this phase.
    await _quiet(nodes, time.monotonic() + TEARDOWN_SECONDS / 3)
    _snapshot(deployment, results, "disconnected")


# --------------------------------------------------------------------------- reporting


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (so p99 of 200 values is the 198th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def report(results: Results) -> list[str]:
    nodes = results.nodes
    spread = f", {results.clients_wanted // nodes} per node" if nodes > 1 else ""
    rows = [
        f"== {results.label}",
        f"clients connected   {results.clients_connected}/{results.clients_wanted} in "
        f"{results.connect_seconds:.2f} s ({results.connect_concurrency} at a time; "
        f"{results.clients_wanted - 2 * results.handshakes_wanted} registered and idle{spread})",
        f"handshakes done     {len(results.latencies)}/{results.handshakes_wanted} in "
        f"{results.handshake_seconds:.2f} s, all started at once"
        + (f"; {results.crossing} across nodes" if nodes > 1 else ""),
    ]
    if results.latencies:
        ms = [1000 * x for x in results.latencies]
        rows.append(
            "handshake latency   "
            + "  ".join(f"p{p} {percentile(ms, p):.1f}" for p in (50, 90, 99))
            + f"  max {max(ms):.1f} ms (find_peer to answer, at the sender)"
        )
    for i, snaps in enumerate(results.server):
        if not snaps:
            continue
        who = "server" if nodes == 1 else f"node {i + 1}"
        rss = ", ".join(f"{_RSS_LABELS[name]} {s.rss_mib:.1f}" for name, s in snaps.items())
        peak = max(s.peak_rss_mib for s in snaps.values())
        rows.append(f"{who + ' RSS':<20}{rss} MiB; peak (VmHWM) {peak:.1f} MiB")
        cpu = _cpu_by_phase({name: s.cpu_seconds for name, s in snaps.items()})
        usage = results.server_usage[i] if i < len(results.server_usage) else None
        total = f"; {usage.cpu_seconds:.2f} s in all" if usage else ""
        rows.append(f"{who + ' CPU':<20}{cpu}{total}")
    if results.redis:
        used = ", ".join(
            f"{_RSS_LABELS[name]} {s.used_mib:.1f}" for name, s in results.redis.items()
        )
        redis_rss = max(s.rss_mib for s in results.redis.values())
        rows.append(
            f"Redis memory        used_memory: {used} MiB; "
            f"redis-server RSS up to {redis_rss:.1f} MiB"
        )
    own = resource.getrusage(resource.RUSAGE_SELF)
    rows.append(
        f"load client         CPU {_cpu_by_phase(results.client_cpu_seconds)}; "
        f"peak RSS {own.ru_maxrss / 1024:.1f} MiB so far (same machine, same CPUs)"
    )
    rows.append(f"server log          {len(results.log_problems)} warnings or errors")
    rows.extend(f"    {line[:200]}" for line in results.log_problems[:_ERROR_EXAMPLES])
    rows.append(f"errors              {error_count(results)}")
    rows.extend(f"    {n} x {kind}" for kind, n in results.errors.most_common())
    return rows


def summary(runs: Sequence[Results]) -> list[str]:
    """One row per run: what docs/PERFORMANCE.md quotes."""
    rows = [
        "| nodes | registry | clients | handshakes (across nodes) | p50 ms | p99 ms "
        "| RSS per node, peak MiB | Redis used_memory, peak MiB | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        ms = [1000 * x for x in r.latencies]
        p50, p99 = (f"{percentile(ms, p):.0f}" for p in (50, 99)) if ms else ("-", "-")
        rss = " / ".join(
            f"{max(s.peak_rss_mib for s in snaps.values()):.0f}" for snaps in r.server if snaps
        )
        redis = f"{max(s.used_mib for s in r.redis.values()):.1f}" if r.redis else "-"
        registry = "Redis" if r.redis else "memory"
        rows.append(
            f"| {r.nodes} | {registry} | {r.clients_connected} | {len(r.latencies)} "
            f"({r.crossing}) | {p50} | {p99} | {rss} | {redis} | {error_count(r)} |"
        )
    return rows


_RSS_LABELS = {
    "idle": "idle",
    "connected": "all connected",
    "handshakes": "after the handshakes",
    "disconnected": "after the disconnects",
}
_CPU_LABELS = {
    "idle": "start-up",
    "connected": "connects",
    "handshakes": "handshakes",
    "disconnected": "disconnects",
}


def _cpu_by_phase(cumulative: dict[str, float]) -> str:
    """CPU seconds spent in each phase, from cumulative readings at their ends."""
    spent, before = [], 0.0
    for name, seconds in cumulative.items():
        spent.append(f"{_CPU_LABELS[name]} {seconds - before:.2f}")
        before = seconds
    return ", ".join(spent) + " s"


def error_count(results: Results) -> int:
    return sum(results.errors.values()) + len(results.log_problems)


# --------------------------------------------------------------------------- main


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; return the new soft limit.

    The servers inherit it, so every process gets it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def run_once(
    args: argparse.Namespace,
    *,
    nodes: int,
    redis: bool,
    env: dict[str, str],
    loop_factory: Any,
) -> Results:
    """One whole run: Redis (if asked) and the nodes started, loaded, stopped, all
    within ``--timeout``."""
    deadline = time.monotonic() + args.timeout - TEARDOWN_SECONDS
    max_connections = args.clients + CONNECTION_HEADROOM
    max_lookups = LOOKUPS_PER_HANDSHAKE * args.handshakes + LOOKUP_HEADROOM
    results = Results(args.clients, args.handshakes, args.connect_concurrency, nodes=nodes)
    with tempfile.TemporaryDirectory(prefix="sfs-load-") as tmp:
        deployment = Deployment([])
        try:
            if redis:
                deployment.redis = RedisServer(Path(tmp) / "redis").start()
            for index in range(1, nodes + 1):
                deployment.nodes.append(
                    ServerProcess(
                        Path(tmp),
                        index=index,
                        max_connections=max_connections,
                        max_lookups=max_lookups,
                        env=env,
                        redis_url=deployment.redis.url if deployment.redis else None,
                    )
                )
            for server in deployment.nodes:
                server.wait_ready(min(SERVER_START_SECONDS, deadline - time.monotonic()))
            results.label = deployment.label
            _snapshot(deployment, results, "idle")
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(run_load(deployment, args, results, deadline))
        finally:
            results.server_usage = [s.stop(TEARDOWN_SECONDS / 3) for s in deployment.nodes]
            if deployment.redis is not None:
                deployment.redis.stop()
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/load", description=DESCRIPTION)
    parser.add_argument(
        "--nodes", type=int, default=1, help="sfs serve processes (1; more need --redis)"
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="start a redis-server on 127.0.0.1 and run the nodes with --redis",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="first run the same load on 1 node in memory and 1 node with Redis",
    )
    parser.add_argument("--clients", type=int, help=f"clients in all ({CLIENTS_PER_NODE} per node)")
    parser.add_argument(
        "--handshakes",
        type=int,
        help=f"concurrent handshakes, 2 clients each ({HANDSHAKES_PER_NODE} per node)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="hard bound on each run, s (120)"
    )
    parser.add_argument(
        "--connect-concurrency", type=int, default=100, help="connects in flight at once (100)"
    )
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio"],
        default="auto",
        help="event loop for the servers and the clients (auto: uvloop when installed)",
    )
    args = parser.parse_args(argv)
    if args.nodes < 1 or (args.nodes > 1 and not args.redis):
        parser.error("--nodes must be at least 1, and more than 1 needs --redis")
    if args.compare and not (args.redis and args.nodes > 1):
        parser.error("--compare compares several nodes with Redis: add --redis --nodes N")
    if args.redis and not RedisServer.available():
        parser.error("--redis needs redis-server (Debian package redis-server)")
    args.clients = args.clients or CLIENTS_PER_NODE * args.nodes
    args.handshakes = args.handshakes or HANDSHAKES_PER_NODE * args.nodes
    if args.handshakes < 1 or args.clients < 2 * args.handshakes:
        parser.error("need --handshakes >= 1 and --clients >= 2 x --handshakes")
    if args.connect_concurrency < 1:
        parser.error("--connect-concurrency must be at least 1")
    if args.timeout < 2 * TEARDOWN_SECONDS:
        parser.error(f"--timeout must be at least {2 * TEARDOWN_SECONDS:.0f} s")

    fds = raise_fd_limit()
    if fds != resource.RLIM_INFINITY and fds < args.clients + FD_HEADROOM:
        raise SystemExit(
            f"open-file limit {fds} is too low for {args.clients} clients: each side needs "
            f"about {args.clients + FD_HEADROOM}; raise it (ulimit -Hn) or use fewer --clients"
        )

    env = dict(os.environ)
    env.pop("SFS_DEBUG", None)
    env.pop("SFS_REDIS_URL", None)  # only what --redis says
    if args.loop == "asyncio":
        env["SFS_EVENT_LOOP"] = "asyncio"
        os.environ["SFS_EVENT_LOOP"] = "asyncio"
    from sfs.commands.running import event_loop_factory

    loop_factory = event_loop_factory()
    max_connections = args.clients + CONNECTION_HEADROOM
    max_lookups = LOOKUPS_PER_HANDSHAKE * args.handshakes + LOOKUP_HEADROOM
    print(
        f"sfs serve under load on {LOOPBACK}: {args.clients} clients, {args.handshakes} "
        f"concurrent handshakes, timeout {args.timeout:.0f} s per run; "
        f"{'asyncio' if loop_factory is None else 'uvloop'}; "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, open-file limit {fds}",
        flush=True,
    )
    print(
        f"server limits       --max-connections {max_connections} --max-lookups-per-address "
        f"{max_lookups} (every handshake makes {LOOKUPS_PER_HANDSHAKE} lookups from "
        f"{LOOPBACK}: find_peer and send_connection_request; the default is 60 a minute)",
        flush=True,
    )
    plan = [(args.nodes, args.redis)]
    if args.compare:
        plan = [(1, False), (1, True), *plan]
    runs = []
    for nodes, redis in plan:
        results = run_once(args, nodes=nodes, redis=redis, env=env, loop_factory=loop_factory)
        print("\n".join(report(results)), flush=True)
        runs.append(results)
    print("\n".join(summary(runs)))
    sys.exit(1 if any(error_count(r) for r in runs) else 0)


if __name__ == "__main__":
    main()
