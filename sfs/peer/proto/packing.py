"""Packing: a file's bytes cut into chunks, compressed where that pays, sans I/O."""

from __future__ import annotations

import zstandard

from sfs.peer.proto.wire import (
    Chunk,
)

#: Compression is kept for a chunk only if it saves at least this fraction.
MIN_COMPRESSION_SAVING = 0.1
#: After this many chunks in a row that do not shrink, compression backs off: it
#: skips 1, 2, 4 … chunks between tries, at most MAX_SKIPPED_CHUNKS.
MAX_INCOMPRESSIBLE_CHUNKS = 4
MAX_SKIPPED_CHUNKS = 32
#: zstd level 1: measured (docs/PERFORMANCE.md) within 1 % of level 3's effective
#: speed at this link rate, for less of the sender's CPU.
ZSTD_LEVEL = 1
#: The first chunk of a transfer carries this many bytes, and each next one twice the
#: last, up to the chunk size.  A new connection's congestion window (aiortc's SCTP:
#: 3 packets of 1 200 bytes; TCP: 10 segments) grows one round trip at a time: a whole
#: first chunk (64 KiB over WebRTC, 256 KiB over TCP) took four or five round trips to
#: arrive before the receiver could open it and write its first byte, a 1 KiB one
#: takes one trip, and the ramp costs a handful of extra frames (docs/PERFORMANCE.md,
#: "First byte on the long link").
FIRST_CHUNK_BYTES = 1024


class Packer:
    """Cuts a file's bytes into chunks, compressing those that shrink.

    Data that does not compress (photos, video, archives) costs almost nothing:
    after MAX_INCOMPRESSIBLE_CHUNKS misses in a row, only a growing fraction of
    chunks is tried (at least one in MAX_SKIPPED_CHUNKS + 1, so a compressible part
    later in a pipe or a tree is found again).  The state carries from file to file.
    Runs in a worker thread for large files (zstd releases the GIL).
    """

    def __init__(self, chunk_size: int, *, compress: bool, ramp: bool = True) -> None:
        """:param ramp: start with FIRST_CHUNK_BYTES, doubling up to ``chunk_size``."""
        self.chunk_size = chunk_size
        self._next_size = min(FIRST_CHUNK_BYTES, chunk_size) if ramp else chunk_size
        self._zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL) if compress else None
        self._misses = 0
        self._skip = 0

    def pack(self, block: bytes) -> list[Chunk]:
        view = memoryview(block)
        chunks = []
        start = 0
        while self._next_size < self.chunk_size and start < len(block):
            chunks.append(Chunk(view[start : start + self._next_size]))
            start += self._next_size
            self._next_size = min(2 * self._next_size, self.chunk_size)
        size = self.chunk_size
        chunks += [Chunk(view[i : i + size]) for i in range(start, len(block), size)]
        if self._zstd is None:
            return chunks
        for n, chunk in enumerate(chunks):
            if self._skip:
                self._skip -= 1
                continue
            packed = self._zstd.compress(chunk.data)
            if len(packed) <= len(chunk.data) * (1 - MIN_COMPRESSION_SAVING):
                chunks[n] = Chunk(packed, len(chunk.data))
                self._misses = 0
                continue
            self._misses += 1
            if self._misses >= MAX_INCOMPRESSIBLE_CHUNKS:
                backoff = 2 ** (self._misses - MAX_INCOMPRESSIBLE_CHUNKS)
                self._skip = min(backoff, MAX_SKIPPED_CHUNKS)
        return chunks
