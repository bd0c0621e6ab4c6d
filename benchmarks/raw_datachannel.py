"""The raw aiortc DataChannel ceiling: no sfs protocol, no encryption, no files.

Run as two processes by benchmarks.bench::

    python -m benchmarks.raw_datachannel offer  --size N --message-size M [--channels C]
                                                 [--connections P]
    python -m benchmarks.raw_datachannel answer --size N [--connections P]

Signaling is one JSON line each way over stdin/stdout (the parent relays it).  The
offerer sends ``size`` bytes in ``message-size`` messages with the same backpressure
as sfs (bufferedAmountLowThreshold against a 16 MiB mark), the answerer counts them
and answers one byte at the end; the offerer prints the elapsed seconds as JSON.

``--channels`` and ``--connections`` stripe the bytes round-robin over several
DataChannels of one connection, or over several peer connections (each its own SCTP
association and receive window), to measure what striping could gain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sfs.commands.running import event_loop_factory, tune_runtime
from sfs.peer.transport.gathering import gathering_on
from sfs.peer.transport.webrtc import HIGH_WATER_BYTES, LOW_WATER_BYTES


async def _read_line() -> dict[str, Any]:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    result: dict[str, Any] = json.loads(line)
    return result


def _write_line(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class _Sender:
    """One DataChannel with the same backpressure as sfs."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.opened = asyncio.Event()
        self.drained = asyncio.Event()
        channel.bufferedAmountLowThreshold = LOW_WATER_BYTES
        channel.on("open", self.opened.set)
        channel.on("bufferedamountlow", self.drained.set)

    async def send(self, data: bytes) -> None:
        self.channel.send(data)
        if self.channel.bufferedAmount > HIGH_WATER_BYTES:
            self.drained.clear()
            await self.drained.wait()


async def offer(
    size: int, message_size: int, channels: int, connections: int, address: str
) -> None:
    pcs = [RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(connections)]
    senders = [
        _Sender(pc.createDataChannel(f"raw{i}", ordered=True))
        for pc in pcs
        for i in range(channels)
    ]
    done = asyncio.Event()
    senders[0].channel.on("message", lambda _: done.set())
    with gathering_on((address,)):
        for pc in pcs:
            await pc.setLocalDescription(await pc.createOffer())
    _write_line({"sdps": [pc.localDescription.sdp for pc in pcs]})
    answers = (await _read_line())["sdps"]
    for pc, sdp in zip(pcs, answers, strict=True):
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
    for sender in senders:
        await asyncio.wait_for(sender.opened.wait(), 30)
    payload = bytes(message_size)

    async def pump(sender: _Sender, share: int) -> None:
        while share:
            n = min(message_size, share)
            await sender.send(payload if n == message_size else payload[:n])
            share -= n

    shares = [size // len(senders)] * len(senders)
    shares[0] += size - sum(shares)
    start = time.monotonic()
    await asyncio.gather(*(pump(s, share) for s, share in zip(senders, shares, strict=True)))
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.monotonic() - start
    _write_line({"elapsed": elapsed})
    for pc in pcs:
        await pc.close()


async def answer(size: int, connections: int, address: str, progress: str | None) -> None:
    pcs = [RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(connections)]
    received = 0
    shown = 0.0
    first: list[Any] = []
    closed = asyncio.Event()

    def on_channel(channel: Any) -> None:
        if channel.label == "raw0" and not first:
            first.append(channel)

        def on_message(message: bytes) -> None:
            nonlocal received, shown
            received += len(message)
            if progress is not None and time.monotonic() - shown > 0.05:
                # For the bench's throughput plot: how much has come, now.
                shown = time.monotonic()
                with open(progress + ".new", "w") as f:
                    f.write(str(received))
                os.replace(progress + ".new", progress)  # never seen half-written
            if received >= size:
                first[0].send(b"!")

        channel.on("close", closed.set)
        channel.on("message", on_message)

    for pc in pcs:
        pc.on("datachannel", on_channel)
    offers = (await _read_line())["sdps"]
    for pc, sdp in zip(pcs, offers, strict=True):
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
    with gathering_on((address,)):
        for pc in pcs:
            await pc.setLocalDescription(await pc.createAnswer())
    _write_line({"sdps": [pc.localDescription.sdp for pc in pcs]})
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closed.wait(), 600)
    for pc in pcs:
        await pc.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["offer", "answer"])
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--message-size", type=int, default=64 * 1024)
    parser.add_argument("--channels", type=int, default=1, help="DataChannels per connection")
    parser.add_argument("--connections", type=int, default=1, help="peer connections")
    parser.add_argument("--address", default="127.0.0.1", help="the only ICE host address")
    parser.add_argument("--progress", default=None, help="(answer) write bytes received here")
    args = parser.parse_args()
    tune_runtime()  # the same runtime settings as sfs itself
    if args.role == "offer":
        coro = offer(args.size, args.message_size, args.channels, args.connections, args.address)
    else:
        coro = answer(args.size, args.connections, args.address, args.progress)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(coro)


if __name__ == "__main__":
    main()
