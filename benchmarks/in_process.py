"""One process, no network: send_files and receive_files over the in-memory channel
pair of the unit tests, to see the cost of the transfer code itself (sealing,
hashing, the conversation, the disk) without a transport's noise.

    .venv/bin/python -m benchmarks.in_process [--size MiB]

Prints the wall and CPU seconds of one run (uvloop when installed); run it several
times, alternating checkouts, to compare (several runs in one process measured
slower after the first, not yet understood).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from sfs.peer.files.destinations import Plan
from sfs.peer.files.sources import inspect_sources
from sfs.peer.proto.framing import Role, TransferProtocol
from sfs.peer.proto.wire import Offer
from sfs.peer.receiving import receive_files
from sfs.peer.sending import send_files
from tests.helpers import channel_pair, key_pair

#: The direct TCP path's chunk size (sfs.peer.transport.tcp), less the frame overhead.
CHUNK_BYTES = 262_116


async def _yes(offer: Offer, plan: Plan) -> bool:
    return True


async def _one(src: Path, out: Path) -> tuple[float, float]:
    ks, kr = key_pair()
    a, b = channel_pair()
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(
        send_files(
            a,
            TransferProtocol(Role.SENDER, ks),
            inspect_sources([src]),
            sender="bench",
            chunk_size=CHUNK_BYTES,
            compress=False,
        ),
        receive_files(
            b,
            TransferProtocol(Role.RECEIVER, kr),
            output_dir=out,
            overwrite=False,
            decide=_yes,
            zstd=False,
        ),
    )
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="MiB (default 512)")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="sfs-in-process-") as tmp:
        src = Path(tmp) / "src.bin"
        with src.open("wb") as f:
            for _ in range(args.size):
                f.write(os.urandom(1024 * 1024))
        os.sync()  # the source's writeback must not compete with the runs
        out = Path(tmp) / "out"
        out.mkdir()
        wall, cpu = asyncio.run(_one(src, out))
        print(f"{args.size} MiB: wall {wall:.2f} s, cpu {cpu:.2f} s")


if __name__ == "__main__":
    main()
