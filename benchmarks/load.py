"""scripts/load: many Socket.IO clients and concurrent handshakes against one `sfs serve`.

Starts a real ``sfs serve`` on 127.0.0.1 (port 0), connects ``--clients`` python-socketio
clients to it (websocket transport, as sfs itself), then runs ``--handshakes`` pairings at
once, each between a fresh receiver and sender drawn from those clients and each the
signaling of a real transfer (no WebRTC):

    receiver register_peer; sender register_peer, find_peer, send_connection_request;
    receiver gets connection_request, accept_connection; sender gets connection_accepted;
    both send_public_key and get receive_public_key; sender offer (sealed, ~2 KiB);
    receiver gets it and sends an answer; sender gets the answer.

The latency of a handshake runs from the sender's find_peer to its receiving the answer.
Every other client registers and stays connected, idle.  Any failed ack, wrong, missing
or late event, or exception is an error; the script exits 1 if there was any.  The whole
run, server start and stop included, is bounded by ``--timeout``.
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
from sfs.signal import messages as m
from sfs.signal.server import DEFAULT_FD_RESERVE

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
DESCRIPTION = "Many Socket.IO clients and concurrent handshakes against one `sfs serve`."


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


class ServerProcess:
    """``sfs serve`` on 127.0.0.1, port 0, with limits raised for the run."""

    def __init__(
        self, workdir: Path, *, max_connections: int, max_lookups: int, env: dict[str, str]
    ) -> None:
        self.log = workdir / "serve.log"
        serve = ["serve", "--host", LOOPBACK, "--port", "0"]
        serve += ["--max-connections", str(max_connections)]
        # Every client comes from 127.0.0.1.
        serve += ["--max-connections-per-address", str(max_connections)]
        serve += ["--max-lookups-per-address", str(max_lookups)]
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
class Results:
    clients_wanted: int
    handshakes_wanted: int
    connect_concurrency: int
    clients_connected: int = 0
    connect_seconds: float = 0.0
    handshake_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    server: dict[str, ServerSnapshot] = field(default_factory=dict)
    client_cpu_seconds: dict[str, float] = field(default_factory=dict)
    server_usage: Usage | None = None
    log_problems: list[str] = field(default_factory=list)

    def error(self, phase: str, exc: BaseException) -> None:
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
        if isinstance(exc, TimeoutError | asyncio.CancelledError):
            text = "did not finish before --timeout"
        else:
            text = str(exc) or type(exc).__name__
        self.errors[f"{phase}: {text}"] += 1


def _snapshot(server: ServerProcess, results: Results, name: str) -> None:
    results.client_cpu_seconds[name] = time.process_time()
    if server.process.poll() is None:
        results.server[name] = server.snapshot()
    elif not any(kind.startswith("server:") for kind in results.errors):
        results.errors[f"server: exited with status {server.process.returncode}"] += 1


async def _quiet(server: ServerProcess, deadline: float) -> None:
    """Wait until the server is idle again (or *deadline*)."""
    while server.process.poll() is None and time.monotonic() < deadline:
        before = server.snapshot().cpu_seconds
        await asyncio.sleep(QUIET_POLL_SECONDS)
        if server.snapshot().cpu_seconds - before < QUIET_CPU_SECONDS:
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


async def run_load(
    server: ServerProcess, args: argparse.Namespace, results: Results, deadline: float
) -> None:
    """Connect the clients, run the handshakes, disconnect; all by *deadline*."""
    # One connection pool for all clients, with no limit: each websocket holds its
    # connection for its whole life, and aiohttp's default pool stops at 100.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        clients = [LoadClient(http) for _ in range(args.clients)]
        pairs = random.sample(range(args.clients), 2 * args.handshakes)
        in_handshakes = set(pairs)
        gate = asyncio.Semaphore(args.connect_concurrency)
        connected: list[LoadClient] = []

        async def join(index: int) -> None:
            async with gate:
                client = clients[index]
                await client.connect(server.url)
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
            _snapshot(server, results, "connected")

            if results.clients_connected == args.clients:
                started = time.monotonic()
                outcomes = await _bounded(
                    deadline,
                    [
                        handshake(clients[pairs[2 * i]], clients[pairs[2 * i + 1]])
                        for i in range(args.handshakes)
                    ],
                )
                results.handshake_seconds = time.monotonic() - started
                results.latencies = [o for o in outcomes if isinstance(o, float)]
                for exc in _errors_of(outcomes):
                    results.error("handshake", exc)
                _snapshot(server, results, "handshakes")
            results.log_problems = server.log_problems()
        finally:
            # Bounded: a client stuck in its closing handshake must not hold the run.
            await _bounded(time.monotonic() + TEARDOWN_SECONDS / 3, [c.close() for c in connected])
    # A client's disconnect does not wait for the server, which goes on handling the
    # closed connections for a while: count that CPU in this phase.
    await _quiet(server, time.monotonic() + TEARDOWN_SECONDS / 3)
    _snapshot(server, results, "disconnected")


# --------------------------------------------------------------------------- reporting


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (so p99 of 200 values is the 198th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def report(results: Results) -> list[str]:
    rows = [
        f"clients connected   {results.clients_connected}/{results.clients_wanted} in "
        f"{results.connect_seconds:.2f} s ({results.connect_concurrency} at a time; "
        f"{results.clients_wanted - 2 * results.handshakes_wanted} registered and idle)",
        f"handshakes done     {len(results.latencies)}/{results.handshakes_wanted} in "
        f"{results.handshake_seconds:.2f} s, all started at once",
    ]
    if results.latencies:
        ms = [1000 * x for x in results.latencies]
        rows.append(
            "handshake latency   "
            + "  ".join(f"p{p} {percentile(ms, p):.1f}" for p in (50, 90, 99))
            + f"  max {max(ms):.1f} ms (find_peer to answer, at the sender)"
        )
    snaps = results.server
    if snaps:
        rss = ", ".join(f"{_RSS_LABELS[name]} {s.rss_mib:.1f}" for name, s in snaps.items())
        peak = max(s.peak_rss_mib for s in snaps.values())
        rows.append(f"server RSS          {rss} MiB; peak (VmHWM) {peak:.1f} MiB")
        cpu = _cpu_by_phase({name: s.cpu_seconds for name, s in snaps.items()})
        usage = results.server_usage
        total = f"; {usage.cpu_seconds:.2f} s in all" if usage else ""
        rows.append(f"server CPU          {cpu}{total}")
    own = resource.getrusage(resource.RUSAGE_SELF)
    rows.append(
        f"load client         CPU {_cpu_by_phase(results.client_cpu_seconds)}; "
        f"peak RSS {own.ru_maxrss / 1024:.1f} MiB (same machine, same CPUs)"
    )
    rows.append(f"server log          {len(results.log_problems)} warnings or errors")
    rows.extend(f"    {line[:200]}" for line in results.log_problems[:_ERROR_EXAMPLES])
    rows.append(f"errors              {error_count(results)}")
    rows.extend(f"    {n} x {kind}" for kind, n in results.errors.most_common())
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

    The server inherits it, so both processes get it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/load", description=DESCRIPTION)
    parser.add_argument("--clients", type=int, default=2000, help="clients in all (2000)")
    parser.add_argument(
        "--handshakes", type=int, default=200, help="concurrent handshakes, 2 clients each (200)"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="hard bound on the whole run, s (120)"
    )
    parser.add_argument(
        "--connect-concurrency", type=int, default=100, help="connects in flight at once (100)"
    )
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio"],
        default="auto",
        help="event loop for the server and the clients (auto: uvloop when installed)",
    )
    args = parser.parse_args(argv)
    if args.handshakes < 1 or args.clients < 2 * args.handshakes:
        parser.error("need --handshakes >= 1 and --clients >= 2 x --handshakes")
    if args.connect_concurrency < 1:
        parser.error("--connect-concurrency must be at least 1")
    if args.timeout < 2 * TEARDOWN_SECONDS:
        parser.error(f"--timeout must be at least {2 * TEARDOWN_SECONDS:.0f} s")
    deadline = time.monotonic() + args.timeout - TEARDOWN_SECONDS

    fds = raise_fd_limit()
    if fds != resource.RLIM_INFINITY and fds < args.clients + FD_HEADROOM:
        raise SystemExit(
            f"open-file limit {fds} is too low for {args.clients} clients: each side needs "
            f"about {args.clients + FD_HEADROOM}; raise it (ulimit -Hn) or use fewer --clients"
        )

    env = dict(os.environ)
    env.pop("SFS_DEBUG", None)
    if args.loop == "asyncio":
        env["SFS_EVENT_LOOP"] = "asyncio"
        os.environ["SFS_EVENT_LOOP"] = "asyncio"
    from sfs.cli import event_loop_factory

    loop_factory = event_loop_factory()
    max_connections = args.clients + CONNECTION_HEADROOM
    max_lookups = LOOKUPS_PER_HANDSHAKE * args.handshakes + LOOKUP_HEADROOM
    print(
        f"sfs serve under load on {LOOPBACK}: {args.clients} clients, {args.handshakes} "
        f"concurrent handshakes, timeout {args.timeout:.0f} s; "
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
    results = Results(args.clients, args.handshakes, args.connect_concurrency)
    with tempfile.TemporaryDirectory(prefix="sfs-load-") as tmp:
        server = ServerProcess(
            Path(tmp), max_connections=max_connections, max_lookups=max_lookups, env=env
        )
        try:
            server.wait_ready(min(SERVER_START_SECONDS, deadline - time.monotonic()))
            _snapshot(server, results, "idle")
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(run_load(server, args, results, deadline))
        finally:
            results.server_usage = server.stop(TEARDOWN_SECONDS / 3)
    print("\n".join(report(results)))
    sys.exit(1 if error_count(results) else 0)


if __name__ == "__main__":
    main()
