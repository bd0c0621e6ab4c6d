"""Transfers of protocol version 3 over an in-memory channel: text messages, pipes,
trees of more than 1000 files, files already there whole, compression, batching,
and what an old receiver's refusal looks like."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from sfs.errors import (
    IntegrityError,
    RejectedError,
    UpgradeError,
)
from sfs.peer.files.destinations import Plan
from sfs.peer.files.sources import (
    SourceFile,
    inspect_sources,
    inspect_tree,
    stream_source,
    text_source,
)
from sfs.peer.proto.crypto import FrameOpener, FrameSealer, SessionKeys
from sfs.peer.proto.framing import Role, TransferProtocol
from sfs.peer.proto.wire import FrameType, Offer
from sfs.peer.receiving import receive_files
from sfs.peer.sending import send_files
from sfs.peer.transfer import TransferResult
from tests.helpers import QueueChannel, channel_pair, key_pair


async def accept(offer: Offer, plan: Plan) -> bool:
    return True


def resealing(
    keys: SessionKeys, change: Callable[[int, int, bytes], bytes]
) -> Callable[[int, bytes], bytes]:
    """A tamper for the sender's channel that opens every frame and seals it again with
    the real key, FILE_DONE payloads replaced by ``change(type, n, payload)`` (n counts
    FILE_DONE frames from 1): a sender that lies about a hash, not a damaged frame."""
    opener, sealer = FrameOpener(keys.frame_send), FrameSealer(keys.frame_send)
    done = 0

    def tamper(index: int, frame: bytes) -> bytes:
        nonlocal done
        kind, payload = opener.open(frame)
        if kind == FrameType.FILE_DONE:
            done += 1
            payload = change(kind, done, payload)
        return sealer.seal(kind, payload)

    return tamper


def frame_types(channel: QueueChannel) -> list[int]:
    return [frame[1] for frame in channel.sent]


async def transfer(
    sources: list[SourceFile],
    out: Path,
    *,
    folders: tuple[tuple[str, ...], ...] = (),
    sink: io.BytesIO | None = None,
    overwrite: bool = False,
    chunk_size: int = 1000,
    compress: bool = True,
) -> tuple[TransferResult | BaseException, TransferResult | BaseException, QueueChannel]:
    out.mkdir(exist_ok=True)  # noqa: ASYNC240 - a test's set-up
    ks, kr = key_pair()
    a, b = channel_pair()
    results = await asyncio.wait_for(
        asyncio.gather(
            send_files(
                a,
                TransferProtocol(Role.SENDER, ks),
                sources,
                sender="t",
                chunk_size=chunk_size,
                folders=folders,
                compress=compress,
            ),
            receive_files(
                b,
                TransferProtocol(Role.RECEIVER, kr),
                output_dir=out,
                overwrite=overwrite,
                decide=accept,
                sink=sink,
            ),
            return_exceptions=True,
        ),
        timeout=30,
    )
    return results[0], results[1], a


async def test_a_text_message_arrives_in_the_result_and_writes_nothing(tmp_path: Path) -> None:
    text = "the wifi password is 🦊\nsecond line"
    sent, received, _ = await transfer([text_source(text)], tmp_path / "out")
    assert isinstance(received, TransferResult)
    assert received.text == text
    assert isinstance(sent, TransferResult)
    assert os.listdir(tmp_path / "out") == []
    # Its records name no file: there is none on either side.
    assert [r.path for r in sent.records] == [r.path for r in received.records] == [None]
    assert received.records[0].sha256 == hashlib.sha256(text.encode()).hexdigest()


async def test_a_pipe_streams_to_the_sink_with_its_hash_checked(tmp_path: Path) -> None:
    data = os.urandom(50_000) + b"z" * 50_000
    sink = io.BytesIO()
    sent, received, wire = await transfer(
        [stream_source(io.BytesIO(data), "backup.tar")], tmp_path / "out", sink=sink
    )
    assert isinstance(received, TransferResult), received
    assert sink.getvalue() == data
    assert received.total_bytes == len(data)
    assert isinstance(sent, TransferResult)
    assert sent.total_bytes == len(data)
    assert FrameType.ZCHUNK in frame_types(wire)  # the run of z's shrank
    assert os.listdir(tmp_path / "out") == []


async def test_stdout_refuses_more_than_one_file(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(b"x")
    sent, received, _ = await transfer(
        inspect_sources([tmp_path / "a", tmp_path / "b"]), tmp_path / "out", sink=io.BytesIO()
    )
    assert isinstance(received, RejectedError)
    assert "--stdout takes one" in str(received)
    assert isinstance(sent, RejectedError)
    assert "--stdout" in str(sent)


def make_tree(root: Path, files: int, size: int = 100) -> Path:
    tree = root / "tree"
    for i in range(files):
        folder = tree / f"d{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}").write_bytes(os.urandom(size))
    (tree / "empty").mkdir()
    return tree


def same_tree(a: Path, b: Path) -> bool:
    def listing(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file()
            else "dir"
            for p in root.rglob("*")
        }

    return listing(a) == listing(b)


async def test_a_tree_of_more_than_1000_files_arrives(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", 1500)
    sources = inspect_tree([tree])
    sent, received, wire = await transfer(sources.files, tmp_path / "out", folders=sources.folders)
    assert isinstance(received, TransferResult), received
    assert isinstance(sent, TransferResult), sent
    assert same_tree(tree, tmp_path / "out" / "tree")
    assert len(received.records) == 1500
    assert frame_types(wire)[:2] == [FrameType.OFFER, FrameType.LISTING]


async def test_files_already_there_whole_are_confirmed_and_skipped(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", 30, size=5000)
    sources = inspect_tree([tree])
    out = tmp_path / "out"
    out.mkdir()
    (out / "tree" / "d0").mkdir(parents=True)
    # Half of one folder is here already (as an interrupted transfer leaves it).
    for i in range(0, 30, 14):
        (out / "tree" / "d0" / f"f{i}").write_bytes((tree / "d0" / f"f{i}").read_bytes())
    sent, received, wire = await transfer(sources.files, out, folders=sources.folders)
    assert isinstance(received, TransferResult), received
    assert isinstance(sent, TransferResult), sent
    assert received.skipped_files == sent.skipped_files == 3
    assert same_tree(tree, out / "tree")
    # Only the other 27 files' bytes moved.
    chunks = frame_types(wire).count(FrameType.CHUNK)
    assert chunks == 27 * 5


async def test_a_file_of_the_same_size_but_other_bytes_is_kept_beside_the_new_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "f").write_bytes(b"new data")
    out = tmp_path / "out"
    out.mkdir()
    (out / "f").write_bytes(b"precious")
    sent, received, _ = await transfer(inspect_sources([tmp_path / "f"]), out)
    assert isinstance(received, TransferResult), received
    assert isinstance(sent, TransferResult), sent
    assert (out / "f").read_bytes() == b"precious"
    assert (out / "f (1)").read_bytes() == b"new data"
    assert [r.path for r in received.records] == [out / "f (1)"]
    (out / "f (1)").unlink()
    sent, received, _ = await transfer(inspect_sources([tmp_path / "f"]), out, overwrite=True)
    assert isinstance(received, TransferResult), received
    assert (out / "f").read_bytes() == b"new data"


@pytest.mark.parametrize("compress", [True, False])
async def test_compressible_data_goes_compressed_and_random_data_does_not(
    tmp_path: Path, compress: bool
) -> None:
    (tmp_path / "text").write_bytes(b"all work and no play " * 5000)
    (tmp_path / "noise").write_bytes(os.urandom(100_000))
    sources = inspect_sources([tmp_path / "text", tmp_path / "noise"])
    _sent, received, wire = await transfer(
        sources, tmp_path / "out", chunk_size=10_000, compress=compress
    )
    assert isinstance(received, TransferResult), received
    for name in ("text", "noise"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / name).read_bytes()
    types = frame_types(wire)
    zchunks, chunks = types.count(FrameType.ZCHUNK), types.count(FrameType.CHUNK)
    if compress:
        # All of the text (its first four chunks the ramp's 1, 2, 4 and 8 KiB, then
        # nine of 10 000 bytes); the noise goes as it is (only a few chunks are tried).
        assert zchunks == 13
        assert chunks == 10
    else:
        assert zchunks == 0
        assert chunks == 23


async def test_a_tampered_file_in_a_batch_never_gets_its_name(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", 20)
    sources = inspect_tree([tree])
    out = tmp_path / "out"
    out.mkdir()
    ks, kr = key_pair()
    a, b = channel_pair()
    # File 12's FILE_DONE carries a wrong SHA-256, sealed with the real key: only the
    # hash check can catch it.
    a.tamper = resealing(ks, lambda kind, n, payload: b"\0" * 32 if n == 12 else payload)
    results = await asyncio.wait_for(
        asyncio.gather(
            send_files(
                a, TransferProtocol(Role.SENDER, ks), sources.files, sender="", chunk_size=50,
                folders=sources.folders,
            ),
            receive_files(
                b, TransferProtocol(Role.RECEIVER, kr), output_dir=out, overwrite=False,
                decide=accept,
            ),
            return_exceptions=True,
        ),
        timeout=30,
    )  # fmt: skip
    assert isinstance(results[1], Exception)
    placed = [p for p in (out / "tree").rglob("f*") if not p.name.startswith(".")]
    # The 11 files verified before the damaged one have their names; none after it.
    assert len(placed) == 11
    for path in placed:
        assert path.read_bytes() == (tree / path.relative_to(out / "tree")).read_bytes()


async def test_an_old_receivers_refusal_of_a_version_3_offer_says_upgrade(
    tmp_path: Path,
) -> None:
    ks, kr = key_pair()
    a, b = channel_pair()

    async def old_receiver() -> None:
        # What sfs with protocol 2 does with a version 3 offer: CANCEL, reason as below.
        old = TransferProtocol(Role.RECEIVER, kr)
        await b.receive()  # the offer: its version is unknown there
        sealer = FrameSealer(kr.frame_send)
        b.send(sealer.seal(FrameType.CANCEL, json.dumps({"reason": "protocol violation"}).encode()))
        await b.drain()
        del old

    sent, _ = await asyncio.gather(
        send_files(
            a, TransferProtocol(Role.SENDER, ks), [text_source("hi")], sender="", chunk_size=100
        ),
        old_receiver(),
        return_exceptions=True,
    )
    assert isinstance(sent, UpgradeError)
    assert "upgrade sfs there" in str(sent)


async def test_a_pipe_with_a_wrong_hash_is_exit_12_after_the_data(tmp_path: Path) -> None:
    sink = io.BytesIO()
    ks, kr = key_pair()
    a, b = channel_pair()

    a.tamper = resealing(ks, lambda kind, n, payload: b"\0" * 32)
    _, received = await asyncio.gather(
        send_files(
            a, TransferProtocol(Role.SENDER, ks), [stream_source(io.BytesIO(b"abc" * 100), "p")],
            sender="", chunk_size=100,
        ),
        receive_files(
            b, TransferProtocol(Role.RECEIVER, kr), output_dir=tmp_path, overwrite=False,
            decide=accept, sink=sink,
        ),
        return_exceptions=True,
    )  # fmt: skip
    assert isinstance(received, IntegrityError)
    assert "already written" in str(received)
    assert received.exit_code == 12
    assert sink.getvalue() == b"abc" * 100  # it went out before the check could fail


async def test_a_pipe_into_a_folder_becomes_a_file_of_the_size_that_came(tmp_path: Path) -> None:
    data = os.urandom(70_000)
    sent, received, _ = await transfer(
        [stream_source(io.BytesIO(data), "backup.tar")], tmp_path / "out"
    )
    assert isinstance(received, TransferResult), received
    assert (tmp_path / "out" / "backup.tar").read_bytes() == data
    assert received.total_bytes == len(data) == getattr(sent, "total_bytes", None)
