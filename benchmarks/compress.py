"""Would zstd compression pay in sfs?  Measured before it is added (issue 12, part 7).

    .venv/bin/pip install zstandard && .venv/bin/python -m benchmarks.compress [--link MIB_S]

Inputs: this checkout's tracked files as one tar (a real source tree), and random
bytes (what photos, videos and archives look like to a compressor).  For each zstd
level: compression and decompression speed on one core, and the ratio.

The sfs sender is CPU-bound on one core (aiortc's SCTP; docs/PERFORMANCE.md), so
compressing costs the same core the link uses: at link rate L (MiB/s of wire data)
and compression speed C (MiB/s of input), one input MiB takes 1/C + 1/(ratio * L)
seconds, so the effective rate is 1 / (1/C + 1/(ratio * L)).  It wins when that beats
L.  The receiver's decompression works the same way on its side.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import tarfile
import time
from pathlib import Path

MIB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[1]


def source_tree() -> bytes:
    names = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True
    ).stdout.split(b"\0")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in names:
            path = ROOT / name.decode()
            if name and path.is_file():
                tar.add(path, arcname=name.decode())
    return buffer.getvalue()


def timed(fn: object, data: bytes, repeat: int = 3) -> tuple[float, bytes]:
    best, out = float("inf"), b""
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn(data)  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.compress", description=__doc__)
    parser.add_argument("--link", type=float, default=15.0, help="sfs's rate here, MiB/s (15)")
    args = parser.parse_args()
    try:
        import zstandard
    except ImportError:
        raise SystemExit("needs zstandard: .venv/bin/pip install zstandard") from None
    inputs = {"source tree (tar)": source_tree(), "random": os.urandom(64 * MIB)}
    link = args.link
    print(f"zstandard {zstandard.__version__}; link {link:.1f} MiB/s, one core per side")
    print(
        f"{'input':<18} {'MiB':>6} {'level':>5} {'ratio':>6} {'compress':>9} "
        f"{'decompress':>10} {'effective':>9}  vs link"
    )
    for name, data in inputs.items():
        size = len(data) / MIB
        for level in (1, 3):
            compressor = zstandard.ZstdCompressor(level=level)
            decompressor = zstandard.ZstdDecompressor()
            c_seconds, packed = timed(compressor.compress, data)
            d_seconds, _ = timed(decompressor.decompress, packed)
            ratio = len(data) / len(packed)
            c_speed, d_speed = size / c_seconds, size / d_seconds
            slowest = min(c_speed, d_speed)
            effective = 1 / (1 / slowest + 1 / (ratio * link))
            print(
                f"{name:<18} {size:6.1f} {level:5d} {ratio:6.2f} {c_speed:7.0f}/s "
                f"{d_speed:8.0f}/s {effective:7.1f}/s  {effective / link:5.2f}x"
            )


if __name__ == "__main__":
    main()
