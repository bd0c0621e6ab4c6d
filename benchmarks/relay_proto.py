"""Prototype relays for issue 25, measured on 127.0.0.1 (not wired into sfs).

    python benchmarks/relay_proto.py --modes ws,upgrade,tcp,splice --size 1G --runs 3

Each run: a relay process, a receiver process and a sender process.  Both clients
present the same 32-byte token; the relay pairs them, answers one byte (``\\x01``) to
each, and copies the sender's bytes to the receiver in ``--message-size`` writes.  The
wall time is from the sender's first byte to the receiver's last (one clock, one
machine); the relay's CPU is read from /proc over the same run.

Modes:

``ws``       an aiohttp web app with a WebSocket route; the relay copies each binary
             message to the partner (``ws.receive()`` -> ``send_bytes``); aiohttp clients
             (their frames are masked, as RFC 6455 requires).
``upgrade``  the same web app, a GET with ``Upgrade: sfs-relay`` answered 101; the
             handler hands the transport to a BufferedProtocol (``transport.set_protocol``)
             that forwards ``connection_lost`` to aiohttp's protocol; raw TCP afterwards.
``tcp``      a port of its own: the same BufferedProtocol from the first byte.
``splice``   the ``tcp`` handshake, then per direction a thread moving bytes with
             ``os.splice`` through a pipe (Linux), never into Python objects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, cast

from aiohttp import ClientSession, WSMsgType, web

TOKEN_BYTES = 32
READY = b"\x01"
BUFFER_BYTES = 1 << 20
HIGH_WATER = 4 << 20
UPGRADE_REQUEST = (
    b"GET /relay HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: sfs-relay\r\n\r\n"
)


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def _new_loop() -> asyncio.AbstractEventLoop:
    import uvloop

    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


# --- the relay --------------------------------------------------------------------


class Pairs:
    """Connections waiting for the partner with the same token."""

    def __init__(self, splice: bool = False) -> None:
        self.waiting: dict[bytes, RelayProtocol] = {}
        self.splice = splice

    def arrive(self, conn: RelayProtocol, token: bytes) -> None:
        other = self.waiting.pop(token, None)
        if other is None:
            self.waiting[token] = conn
            return
        conn.partner, other.partner = other, conn
        if self.splice:
            _splice_pair(conn, other)
            return
        for side in (conn, other):
            side.transport.write(READY)
        for side in (conn, other):
            side.flush_pending()


class RelayProtocol(asyncio.BufferedProtocol):
    """One side of a pair: reads the token, then copies what it reads to the partner.

    Reads land in a 1 MiB bytearray and are written as a memoryview.  uvloop keeps a
    reference to what it could not write at once, so when the partner's write buffer
    is not empty after the write, the next reads go into a fresh buffer.
    """

    def __init__(self, pairs: Pairs, previous: asyncio.BaseProtocol | None = None) -> None:
        self.pairs = pairs
        self.previous = previous  # aiohttp's protocol, told when the connection ends
        self.buf = bytearray(BUFFER_BYTES)
        self.view = memoryview(self.buf)
        self.token = bytearray()
        self.pending = bytearray()
        self.partner: RelayProtocol | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.set_write_buffer_limits(high=HIGH_WATER)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        partner = self.partner
        if partner is not None and not self.pending:
            partner.transport.write(self.view[:nbytes])
            if partner.transport.get_write_buffer_size():
                self.buf = bytearray(BUFFER_BYTES)
                self.view = memoryview(self.buf)
            return
        data = bytes(self.view[:nbytes])
        if len(self.token) < TOKEN_BYTES:
            need = TOKEN_BYTES - len(self.token)
            self.token += data[:need]
            self.pending += data[need:]
            if len(self.token) == TOKEN_BYTES:
                self.transport.pause_reading()
                self.pairs.arrive(self, bytes(self.token))
        else:
            self.pending += data

    def flush_pending(self) -> None:
        assert self.partner is not None
        if self.pending:
            self.partner.transport.write(bytes(self.pending))
            self.pending = bytearray()
        self.transport.resume_reading()

    def pause_writing(self) -> None:
        if self.partner is not None:
            self.partner.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.partner is not None:
            self.partner.transport.resume_reading()

    def eof_received(self) -> bool:
        if self.partner is not None and self.partner.transport.can_write_eof():
            self.partner.transport.write_eof()
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.partner is not None:
            self.partner.transport.close()
        if self.previous is not None:
            self.previous.connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)


def _splice_pair(a: RelayProtocol, b: RelayProtocol) -> None:
    """Take both sockets out of the loop and splice each direction in a thread."""
    fds = []
    for side in (a, b):
        side.transport.pause_reading()
        sock = side.transport.get_extra_info("socket")
        fd = os.dup(sock.fileno())
        os.set_blocking(fd, True)  # shared with the loop's fd: the loop no longer uses it
        os.write(fd, READY)
        fds.append(fd)
    for src, dst in ((fds[0], fds[1]), (fds[1], fds[0])):
        threading.Thread(target=_splice_loop, args=(src, dst), daemon=True).start()


def _splice_loop(src: int, dst: int) -> None:
    r, w = os.pipe()
    with contextlib.suppress(OSError):
        import fcntl

        fcntl.fcntl(w, 1031, BUFFER_BYTES)  # F_SETPIPE_SZ
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_MORE
    try:
        while True:
            n = os.splice(src, w, BUFFER_BYTES, flags=flags)
            if n == 0:
                break
            while n:
                n -= os.splice(r, dst, n, flags=flags)
    except OSError as e:
        print("splice", e, file=sys.stderr)
    finally:
        with contextlib.suppress(OSError):
            socket.socket(fileno=os.dup(dst)).shutdown(socket.SHUT_WR)
        for fd in (r, w, src):
            os.close(fd)


async def _ws_handler(request: web.Request) -> web.WebSocketResponse:
    waiting: dict[bytes, tuple[web.WebSocketResponse, asyncio.Future[web.WebSocketResponse]]]
    waiting = request.app[WS_WAITING]
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    token = (await ws.receive_bytes())[:TOKEN_BYTES]
    mine: asyncio.Future[web.WebSocketResponse] = asyncio.get_running_loop().create_future()
    if token in waiting:
        other, theirs = waiting.pop(token)
        theirs.set_result(ws)
        partner = other
    else:
        waiting[token] = (ws, mine)
        partner = await mine
    await ws.send_bytes(READY)
    async for msg in ws:
        if msg.type != WSMsgType.BINARY:
            break
        await partner.send_bytes(msg.data)
    await partner.close()
    return ws


async def _upgrade_handler(request: web.Request) -> web.StreamResponse:
    """Answer 101 and hand the connection to a RelayProtocol.

    aiohttp's parser treats only ``Upgrade: websocket`` (and ``tcp`` in the pure-Python
    parser) as an upgrade, so bytes after this request would be parsed as HTTP: the
    protocol is swapped before the 101 is written, in one step of the loop, and the
    client sends nothing before the 101 arrives.  The handler stays until the
    connection ends: when it returns, aiohttp closes the transport.
    """
    if request.headers.get("Upgrade", "").lower() != "sfs-relay":
        raise web.HTTPBadRequest()
    transport = cast(asyncio.Transport, request.transport)
    relay = RelayProtocol(request.app[PAIRS], previous=transport.get_protocol())
    transport.set_protocol(relay)
    relay.connection_made(transport)
    resp = web.StreamResponse(status=101, headers={"Connection": "Upgrade", "Upgrade": "sfs-relay"})
    await resp.prepare(request)
    await resp.write_eof()
    await relay.closed
    return resp


WS_WAITING: web.AppKey[dict[Any, Any]] = web.AppKey("ws_waiting", dict)
PAIRS = web.AppKey("pairs", Pairs)


async def _serve(mode: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    if mode in ("ws", "upgrade"):
        app = web.Application()
        app[WS_WAITING] = {}
        app[PAIRS] = Pairs()
        app.router.add_get("/ws", _ws_handler)
        app.router.add_get("/relay", _upgrade_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    else:
        pairs = Pairs(splice=mode == "splice")
        await loop.create_server(lambda: RelayProtocol(pairs), "127.0.0.1", port)
    print("ready", flush=True)
    await asyncio.Event().wait()


# --- the clients ------------------------------------------------------------------


class _Client(asyncio.BufferedProtocol):
    """A raw client: skips the 101 if asked, waits for READY, counts what follows."""

    def __init__(self, upgrade: bool, size: int) -> None:
        self.buf = memoryview(bytearray(BUFFER_BYTES))
        self.head = bytearray()
        self.upgrade = upgrade
        self.ready = asyncio.get_running_loop().create_future()
        self.done = asyncio.get_running_loop().create_future()
        self.drained = asyncio.Event()
        self.drained.set()
        self.upgraded = asyncio.Event()
        self.size = size
        self.count = 0

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        if self.ready.done():
            self.count += nbytes
        else:
            self.head += self.buf[:nbytes]
            if self.upgrade:
                end = self.head.find(b"\r\n\r\n")
                if end < 0:
                    return
                assert self.head.startswith(b"HTTP/1.1 101"), bytes(self.head)
                del self.head[: end + 4]
                self.upgrade = False
                self.upgraded.set()
            if self.head:
                assert self.head[:1] == READY
                self.count = len(self.head) - 1
                self.ready.set_result(None)
        if self.count >= self.size and not self.done.done():
            self.done.set_result(time.time())

    def pause_writing(self) -> None:
        self.drained.clear()

    def resume_writing(self) -> None:
        self.drained.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("relay closed before pairing"))
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed after {self.count} bytes"))
            self.done.exception()  # the sender never awaits it


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _client(mode: str, role: str, port: int, size: int, message: int, token: bytes) -> None:
    chunk = os.urandom(message)
    if mode == "ws":
        async with (
            ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{port}/ws", max_msg_size=0) as ws,
        ):
            await ws.send_bytes(token)
            assert await ws.receive_bytes() == READY
            cpu0 = _own_cpu()
            if role == "send":
                start = time.time()
                for _ in range(size // message):
                    await ws.send_bytes(chunk)
                await ws.receive()  # the relay closes when the receiver has all
                result = {"start": start}
            else:
                count = 0
                while count < size:
                    count += len(await ws.receive_bytes())
                result = {"end": time.time()}
    else:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_connection(
            lambda: _Client(mode == "upgrade", size if role == "recv" else 1 << 62),
            "127.0.0.1",
            port,
        )
        transport.set_write_buffer_limits(high=HIGH_WATER)
        if mode == "upgrade":
            transport.write(UPGRADE_REQUEST)
            # the token after the 101: aiohttp would parse earlier bytes as HTTP
            await proto.upgraded.wait()
        transport.write(token)
        await proto.ready
        cpu0 = _own_cpu()
        if role == "send":
            start = time.time()
            for _ in range(size // message):
                transport.write(chunk)
                if not proto.drained.is_set():
                    await proto.drained.wait()
            transport.write_eof()
            transport.set_write_buffer_limits(high=0)  # resumes when all is written
            await proto.drained.wait()
            result = {"start": start}
        else:
            result = {"end": await proto.done}
        transport.close()
    result["cpu"] = _own_cpu() - cpu0
    print(json.dumps(result), flush=True)


# --- the driver -------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User and system time of a process, its finished threads included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(mode: str, size: int, message: int, runs: int, port: int) -> dict[str, Any]:
    me = [sys.executable, os.path.abspath(__file__)]
    relay = subprocess.Popen(
        [*me, "serve", "--mode", mode, "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    rows = []
    try:
        assert relay.stdout is not None
        assert relay.stdout.readline().strip() == "ready"
        for _ in range(runs):
            token = os.urandom(TOKEN_BYTES).hex()
            common = ["--mode", mode, "--port", str(port), "--size", str(size)]
            common += ["--message-size", str(message), "--token", token]
            cpu0 = _cpu_seconds(relay.pid)
            recv = subprocess.Popen([*me, "recv", *common], stdout=subprocess.PIPE, text=True)
            time.sleep(0.3)  # let the receiver wait first, as in sfs
            send = subprocess.Popen([*me, "send", *common], stdout=subprocess.PIPE, text=True)
            out_s, _ = send.communicate(timeout=110)
            out_r, _ = recv.communicate(timeout=110)
            cpu1 = _cpu_seconds(relay.pid)
            s, r = json.loads(out_s), json.loads(out_r)
            wall = r["end"] - s["start"]
            rows.append(
                {
                    "mibs": size / wall / (1 << 20),
                    "relay_cpu": (cpu1 - cpu0) / wall,
                    "send_cpu": s["cpu"] / wall,
                    "recv_cpu": r["cpu"] / wall,
                }
            )
    finally:
        relay.terminate()
        relay.wait(timeout=10)
    median = sorted(rows, key=lambda row: row["mibs"])[len(rows) // 2]
    return {
        "mode": mode,
        "runs": [round(row["mibs"]) for row in rows],
        "median_mibs": round(statistics.median(row["mibs"] for row in rows)),
        **{k: round(v * 100) for k, v in median.items() if k != "mibs"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "role", nargs="?", default="bench", choices=["bench", "serve", "send", "recv"]
    )
    parser.add_argument("--modes", default="ws,upgrade,tcp,splice")
    parser.add_argument("--mode", default="tcp")
    parser.add_argument("--port", type=int, default=47125)
    parser.add_argument("--size", default="1G")
    parser.add_argument("--message-size", default="256K")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--token", default="")
    args = parser.parse_args()
    size, message = _size(args.size), _size(args.message_size)
    if args.role == "serve":
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(_serve(args.mode, args.port))
    elif args.role in ("send", "recv"):
        token = bytes.fromhex(args.token)
        run = _client(args.mode, args.role, args.port, size, message, token)
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(run)
    else:
        print("mode      MiB/s (median, runs)     relay CPU %  sender %  receiver %")
        for mode in args.modes.split(","):
            row = _measure(mode, size, message, args.runs, args.port)
            print(
                f"{row['mode']:<9} {row['median_mibs']:>5} {row['runs']!s:<20} "
                f"{row['relay_cpu']:>8} {row['send_cpu']:>9} {row['recv_cpu']:>10}",
                flush=True,
            )


if __name__ == "__main__":
    main()
