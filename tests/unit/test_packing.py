"""The Packer's first chunks: small, then doubling up to the chunk size, so the first
byte of a transfer does not wait for a new connection's window to carry a whole
chunk (docs/PERFORMANCE.md, "First byte on the long link")."""

from __future__ import annotations

import os

from sfs.peer.proto.packing import FIRST_CHUNK_BYTES, Packer
from sfs.peer.proto.wire import Chunk


def _sizes(chunks: list[Chunk]) -> list[int]:
    return [len(c.data) if c.plain_size is None else c.plain_size for c in chunks]


def test_the_first_chunks_ramp_up_to_the_chunk_size_then_stay() -> None:
    packer = Packer(8 * FIRST_CHUNK_BYTES, compress=False)
    block = os.urandom(40 * FIRST_CHUNK_BYTES)
    chunks = packer.pack(block)
    k = FIRST_CHUNK_BYTES
    assert _sizes(chunks) == [k, 2 * k, 4 * k, 8 * k, 8 * k, 8 * k, 8 * k, k]
    assert b"".join(bytes(c.data) for c in chunks) == block


def test_the_ramp_carries_across_blocks_and_files_and_happens_once() -> None:
    packer = Packer(4 * FIRST_CHUNK_BYTES, compress=False)
    k = FIRST_CHUNK_BYTES
    assert _sizes(packer.pack(os.urandom(k + 10))) == [k, 10]
    assert _sizes(packer.pack(os.urandom(7 * k))) == [4 * k, 3 * k]  # each cut doubles
    assert _sizes(packer.pack(os.urandom(9 * k))) == [4 * k, 4 * k, k]


def test_no_ramp_cuts_whole_chunks_from_the_start() -> None:
    packer = Packer(4 * FIRST_CHUNK_BYTES, compress=False, ramp=False)
    assert _sizes(packer.pack(os.urandom(9 * FIRST_CHUNK_BYTES))) == [4096, 4096, 1024]


def test_a_chunk_size_below_the_first_chunk_is_kept() -> None:
    packer = Packer(100, compress=True)
    assert _sizes(packer.pack(os.urandom(250))) == [100, 100, 50]


def test_ramped_chunks_compress_and_restore_the_same_bytes() -> None:
    import zstandard

    packer = Packer(16 * FIRST_CHUNK_BYTES, compress=True)
    block = b"sfs " * (20 * FIRST_CHUNK_BYTES)
    chunks = packer.pack(block)
    assert all(c.plain_size is not None for c in chunks)  # text shrinks
    plain = b"".join(
        zstandard.ZstdDecompressor().decompress(bytes(c.data), max_output_size=c.plain_size or 0)
        for c in chunks
    )
    assert plain == block
    assert _sizes(chunks)[:5] == [FIRST_CHUNK_BYTES * 2**i for i in range(5)]
