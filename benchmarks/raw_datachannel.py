"""The raw aiortc DataChannel ceiling: no sfs protocol, no encryption, no files.

Run as two processes by benchmarks.bench::

    python -m benchmarks.raw_datachannel offer  --size N --message-size M
    python -m benchmarks.raw_datachannel answer --size N

Signaling is one JSON line each way over stdin/stdout (the parent relays it).  The
offerer sends ``size`` bytes in ``message-size`` messages with the same backpressure
as sfs (bufferedAmountLowThreshold against a 16 MiB mark), the answerer counts them
and answers one byte at the end; the offerer prints the elapsed seconds as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sfs.cli import event_loop_factory, tune_runtime
from sfs.peer.connection import HIGH_WATER_BYTES, LOW_WATER_BYTES, gathering_on

LOOPBACK = ("127.0.0.1",)


async def _read_line() -> dict[str, Any]:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    result: dict[str, Any] = json.loads(line)
    return result


def _write_line(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def offer(size: int, message_size: int) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channel = pc.createDataChannel("raw", ordered=True)
    channel.bufferedAmountLowThreshold = LOW_WATER_BYTES
    opened = asyncio.Event()
    drained = asyncio.Event()
    done = asyncio.Event()
    channel.on("open", opened.set)
    channel.on("bufferedamountlow", drained.set)
    channel.on("message", lambda _: done.set())
    with gathering_on(LOOPBACK):
        await pc.setLocalDescription(await pc.createOffer())
    _write_line({"type": "offer", "sdp": pc.localDescription.sdp})
    answer = await _read_line()
    await pc.setRemoteDescription(RTCSessionDescription(**answer))
    await asyncio.wait_for(opened.wait(), 30)
    payload = bytes(message_size)
    start = time.monotonic()
    remaining = size
    while remaining:
        n = min(message_size, remaining)
        channel.send(payload if n == message_size else payload[:n])
        remaining -= n
        if channel.bufferedAmount > HIGH_WATER_BYTES:
            drained.clear()
            await drained.wait()
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.monotonic() - start
    _write_line({"elapsed": elapsed})
    await pc.close()


async def answer(size: int) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    received = 0
    closed = asyncio.Event()

    def on_channel(channel: Any) -> None:
        def on_message(message: bytes) -> None:
            nonlocal received
            received += len(message)
            if received >= size:
                channel.send(b"!")

        channel.on("close", closed.set)
        channel.on("message", on_message)

    pc.on("datachannel", on_channel)
    offer_obj = await _read_line()
    await pc.setRemoteDescription(RTCSessionDescription(**offer_obj))
    with gathering_on(LOOPBACK):
        await pc.setLocalDescription(await pc.createAnswer())
    _write_line({"type": "answer", "sdp": pc.localDescription.sdp})
    try:
        await asyncio.wait_for(closed.wait(), 600)
    except TimeoutError:
        pass
    await pc.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["offer", "answer"])
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--message-size", type=int, default=16 * 1024)
    args = parser.parse_args()
    tune_runtime()  # the same runtime settings as sfs itself
    coro = offer(args.size, args.message_size) if args.role == "offer" else answer(args.size)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(coro)


if __name__ == "__main__":
    main()
