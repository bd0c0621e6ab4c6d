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


class Packer:
    """Cuts a file's bytes into chunks, compressing those that shrink.

    Data that does not compress (photos, video, archives) costs almost nothing:
    after MAX_INCOMPRESSIBLE_CHUNKS misses in a row, only a growing fraction of
    chunks is tried (at least one in MAX_SKIPPED_CHUNKS + 1, so a compressible part
    later in a pipe or a tree is found again).  The state carries from file to file.
    Runs in a worker thread for large files (zstd releases the GIL).
    """

    def __init__(self, chunk_size: int, *, compress: bool) -> None:
        self.chunk_size = chunk_size
        self._zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL) if compress else None
        self._misses = 0
        self._skip = 0

    def pack(self, block: bytes) -> list[Chunk]:
        view = memoryview(block)
        size = self.chunk_size
        chunks = [Chunk(view[i : i + size]) for i in range(0, len(block), size)]
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
