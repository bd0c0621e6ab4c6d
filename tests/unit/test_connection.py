"""The reassembly cap's bookkeeping: a message's size is known whatever order its
fragments arrive in, without rescanning aiortc's reassembly list."""

from __future__ import annotations

import random

import pytest
from aiortc.rtcsctptransport import (
    SCTP_DATA_FIRST_FRAG,
    SCTP_DATA_LAST_FRAG,
    DataChunk,
    InboundStream,
)

from sfs.peer.transport.sctp_window import _join_run

CAP = 262_144


def fragments(first_tsn: int, sizes: list[int], seq: int) -> list[DataChunk]:
    chunks = []
    for i, size in enumerate(sizes):
        chunk = DataChunk()
        chunk.tsn = (first_tsn + i) % 2**32
        chunk.stream_seq = seq
        chunk.user_data = bytes(size)
        chunk.flags = (SCTP_DATA_FIRST_FRAG if i == 0 else 0) | (
            SCTP_DATA_LAST_FRAG if i == len(sizes) - 1 else 0
        )
        chunks.append(chunk)
    return chunks


def deliver(stream: InboundStream, chunks: list[DataChunk]) -> tuple[int, list[int]]:
    """Add ``chunks`` as the receiver would; return the largest run seen and what
    aiortc delivered."""
    largest = 0
    delivered = []
    for chunk in chunks:
        largest = max(largest, _join_run(stream.reassembly, chunk))
        stream.add_chunk(chunk)
        delivered += [len(m[2]) for m in stream.pop_messages()]
    return largest, delivered


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("base", [1000, 2**32 - 300])  # also across the TSN wrap
def test_runs_measure_each_message_in_any_order(seed: int, base: int) -> None:
    rng = random.Random(seed)
    messages = [[rng.randint(1, 1160) for _ in range(rng.randint(1, 200))] for _ in range(6)]
    chunks = []
    tsn = base
    for seq, sizes in enumerate(messages):
        chunks += fragments(tsn, sizes, seq)
        tsn += len(sizes)
    rng.shuffle(chunks)
    stream = InboundStream()
    largest, delivered = deliver(stream, chunks)
    assert largest == max(sum(m) for m in messages)
    assert delivered == [sum(m) for m in messages]
    assert stream.reassembly == []


def test_a_message_over_the_cap_is_seen_before_it_is_complete() -> None:
    sizes = [1024] * 300  # 300 KiB in one message
    chunks = fragments(5, sizes, 0)
    stream = InboundStream()
    sizes_seen = []
    for chunk in chunks[::-1]:  # even backwards
        sizes_seen.append(_join_run(stream.reassembly, chunk))
        if sizes_seen[-1] > CAP:
            break
        stream.add_chunk(chunk)
    assert sizes_seen[-1] > CAP
    assert len(sizes_seen) == CAP // 1024 + 1
    assert not list(stream.pop_messages())


def test_whole_messages_keep_no_references() -> None:
    chunks = fragments(7, [100, 100, 100], 0)
    stream = InboundStream()
    deliver(stream, [chunks[2], chunks[0], chunks[1]])
    assert not any(hasattr(c, "_sfs_run") for c in (chunks[0], chunks[2]))
