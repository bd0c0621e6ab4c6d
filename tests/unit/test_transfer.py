"""File-level transfer over an in-memory channel pair: names, safe writes, failures."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import shutil
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from sfs.errors import (
    CancelledByPeerError,
    CryptoError,
    DestinationExistsError,
    DiskError,
    IntegrityError,
    PeerGoneError,
    RejectedError,
    RemoteProtocolError,
    SourceError,
)
from sfs.peer.files.destinations import Plan, plan_destinations
from sfs.peer.files.partial import PartFile, identity_of, meta_path, part_path
from sfs.peer.files.sources import inspect_sources
from sfs.peer.proto.conversation import Sender
from sfs.peer.proto.crypto import FrameSealer
from sfs.peer.proto.framing import Role, State, TransferProtocol
from sfs.peer.proto.names import safe_name
from sfs.peer.proto.wire import (
    Accept,
    Chunk,
    FileDone,
    FileInfo,
    FrameType,
    Offer,
    Resume,
    encode_offer,
)
from sfs.peer.receiving import receive_files
from sfs.peer.sending import send_files
from sfs.peer.transfer import Pump, TransferResult
from tests.helpers import QueueChannel, channel_pair, key_pair


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("/etc/shadow", "shadow"),
        ("..\\..\\windows\\system32\\evil.dll", "evil.dll"),
        ("a\x00b\x1b[31mc", "ab[31mc"),
        ("evil\u202etxt.exe", "eviltxt.exe"),
        (".bashrc", "bashrc"),
        ("CON", "_CON"),
        ("lpt1.txt", "_lpt1.txt"),
        ("trailing. ", "trailing"),
        ("résumé.pdf", "résumé.pdf"),
        (". .x", "x"),
        ("a\u2028b", "ab"),
        # Windows: alternate data streams, reserved characters and device names
        ("report.pdf:Zone.Identifier", "report.pdf_Zone.Identifier"),
        ('a<b>c|d?e*f"g.txt', "a_b_c_d_e_f_g.txt"),
        ("CONIN$", "_CONIN$"),
        ("conout$.log", "_conout$.log"),
        ("COM\u00b9", "_COM\u00b9"),
        ("lpt\u00b3.txt", "_lpt\u00b3.txt"),
        ("COM\u00b2.tar.gz", "_COM\u00b2.tar.gz"),
        ("nul .txt", "_nul .txt"),
        ("AUX.tar.gz", "_AUX.tar.gz"),
        ("com0", "_com0"),
        ("console.txt", "console.txt"),
        ("name. . ", "name"),
    ],
)
def test_safe_name(offered: str, expected: str) -> None:
    assert safe_name(offered) == expected


@pytest.mark.parametrize("offered", ["", ".", "..", "/", "a/", "\x00\x01", "...", " ", ".\u2028."])
def test_unusable_names_are_refused(offered: str) -> None:
    with pytest.raises(RemoteProtocolError):
        safe_name(offered)


def test_long_names_are_cut_to_255_bytes_keeping_the_extension() -> None:
    name = safe_name("é" * 5000 + ".tar.gz")
    assert len(("." + name + ".sfs-part").encode()) <= 255
    assert name.endswith(".gz")
    name = safe_name("x" * 10_000)
    assert len(name.encode()) <= 245


def test_plan_keeps_both_when_a_name_exists_unless_overwrite(tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_text("keep me")
    offer = Offer(files=(FileInfo("report.pdf", 1),))
    plan = plan_destinations(offer, tmp_path, overwrite=False)
    assert plan.paths == [tmp_path / "report (1).pdf"]
    assert plan.notes == ["report.pdf exists: will save as report (1).pdf"]
    plan = plan_destinations(offer, tmp_path, overwrite=True)
    assert plan.paths == [tmp_path / "report.pdf"]
    assert plan.notes == ["report.pdf exists: will replace it (--overwrite)"]
    # A folder is never replaced: the next free name, --overwrite or not.
    (tmp_path / "b").mkdir()
    for overwrite in (False, True):
        plan = plan_destinations(Offer(files=(FileInfo("b", 1),)), tmp_path, overwrite=overwrite)
        assert plan.paths == [tmp_path / "b (1)"]


def test_plan_gives_a_same_sized_file_the_chance_to_be_the_same(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    offer = Offer(files=(FileInfo("a.txt", 1),))
    plan = plan_destinations(offer, tmp_path, overwrite=False, resume=True)
    assert plan.paths == [tmp_path / "a.txt"]
    assert plan.notes == [
        "a.txt exists with the same size: kept if it is the same file, else saved under "
        "the next free name"
    ]
    # Without resume it is simply taken.
    plan = plan_destinations(offer, tmp_path, overwrite=False, resume=False)
    assert plan.paths == [tmp_path / "a (1).txt"]


def test_plan_counts_dangling_symlinks_as_existing(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    plan = plan_destinations(Offer(files=(FileInfo("link", 1),)), tmp_path, overwrite=False)
    assert plan.paths == [tmp_path / "link (1)"]


def test_plan_dedupes_names_within_one_offer(tmp_path: Path) -> None:
    offer = Offer(files=(FileInfo("x/a.txt", 1), FileInfo("y/a.txt", 1), FileInfo("A.txt", 1)))
    plan = plan_destinations(offer, tmp_path, overwrite=False)
    assert [p.name for p in plan.paths] == ["a.txt", "a (1).txt", "A (2).txt"]
    assert plan.notes[0] == "a.txt is offered more than once: will save as a (1).txt"


def test_plan_counts_a_partial_copy_as_available_space(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    offer = Offer(files=(FileInfo("big", free + 1000),))
    with pytest.raises(DiskError):
        plan_destinations(offer, tmp_path, overwrite=False)
    # A user's own file named like a partial copy is not sfs's to reuse or free.
    with open(tmp_path / "big.part", "wb") as f:
        f.truncate(1024 * 1024)
    with pytest.raises(DiskError):
        plan_destinations(offer, tmp_path, overwrite=False)
    # sfs's own sparse partial copy of 1 MiB: its bytes are reused or freed either way.
    kept = PartFile(tmp_path / "big", identity=identity_of(FileInfo("big", 1)))
    kept.keep()
    os.truncate(part_path(tmp_path / "big"), 1024 * 1024)
    assert plan_destinations(offer, tmp_path, overwrite=False).paths == [tmp_path / "big"]


def test_plan_refuses_more_than_the_free_space(tmp_path: Path) -> None:
    offer = Offer(files=(FileInfo("huge", 2**62),))
    with pytest.raises(DiskError, match="not enough free space"):
        plan_destinations(offer, tmp_path, overwrite=False)


def test_part_file_with_wrong_hash_leaves_nothing(tmp_path: Path) -> None:
    part = PartFile(tmp_path / "f", identity=identity_of(FileInfo("f", 3)))
    part.write(b"data")
    with pytest.raises(IntegrityError):
        asyncio.run(part.commit(hashlib.sha256(b"other").digest(), overwrite=False))
    part.discard()
    assert os.listdir(tmp_path) == []


def test_part_file_never_replaces_a_file_that_appeared(tmp_path: Path) -> None:
    part = PartFile(tmp_path / "f", identity=identity_of(FileInfo("f", 3)))
    part.write(b"new")
    (tmp_path / "f").write_bytes(b"old")
    placed = asyncio.run(part.commit(hashlib.sha256(b"new").digest(), overwrite=False))
    assert placed == tmp_path / "f (1)"
    assert (tmp_path / "f").read_bytes() == b"old"
    assert (tmp_path / "f (1)").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["f", "f (1)"]


def test_non_utf8_source_names_are_offered_with_replacement_characters(tmp_path: Path) -> None:
    path = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.txt"))
    path.write_bytes(b"x")
    (source,) = inspect_sources([path])
    assert source.name == "caf\ufffd.txt"
    source.name.encode("utf-8")


def test_inspect_sources(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"12345")
    (source,) = inspect_sources([tmp_path / "f"])
    assert (source.name, source.size) == ("f", 5)
    with pytest.raises(SourceError, match="no such file"):
        inspect_sources([tmp_path / "missing"])
    with pytest.raises(SourceError, match="folder"):
        inspect_sources([tmp_path])
    unreadable = tmp_path / "secret"
    unreadable.write_bytes(b"x")
    unreadable.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(SourceError, match="cannot read"):
            inspect_sources([unreadable])


# -- whole transfers over an in-memory channel ---------------------------------------------


async def accept(offer: Offer, plan: Plan) -> bool:
    return True


async def decline(offer: Offer, plan: Plan) -> bool:
    return False


async def run_transfer(
    tmp_path: Path,
    contents: dict[str, bytes],
    *,
    decide: Callable[[Offer, Plan], Awaitable[bool]] = accept,
    chunk_size: int = 7,
    tamper: Callable[[int, bytes], bytes | None] | None = None,
    overwrite: bool = False,
) -> tuple[object, object]:
    src = tmp_path / "src"
    out = tmp_path / "out"
    src.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    paths = []
    for name, data in contents.items():
        (src / name).write_bytes(data)
        paths.append(src / name)
    ks, kr = key_pair()
    a, b = channel_pair()
    a.tamper = tamper
    sending = send_files(
        a,
        TransferProtocol(Role.SENDER, ks),
        inspect_sources(paths),
        sender="t",
        chunk_size=chunk_size,
    )
    receiving = receive_files(
        b, TransferProtocol(Role.RECEIVER, kr), output_dir=out, overwrite=overwrite, decide=decide
    )
    results = await asyncio.wait_for(
        asyncio.gather(sending, receiving, return_exceptions=True), timeout=10
    )
    return results[0], results[1]


async def test_files_of_many_sizes_arrive_intact(tmp_path: Path) -> None:
    contents = {f"f{n}": os.urandom(n) for n in (0, 1, 6, 7, 8, 100)}
    sent, received = await run_transfer(tmp_path, contents)
    assert not isinstance(sent, BaseException), sent
    assert not isinstance(received, BaseException), received
    for name, data in contents.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    assert sorted(os.listdir(tmp_path / "out")) == sorted(contents)


async def test_each_file_has_a_record_on_both_sides(tmp_path: Path) -> None:
    contents = {f"f{n}": os.urandom(n) for n in (0, 1, 100)}
    sent, received = await run_transfer(tmp_path, contents)
    assert isinstance(sent, TransferResult)
    assert isinstance(received, TransferResult)
    for result, folder in ((sent, "src"), (received, "out")):
        assert [r.name for r in result.records] == list(contents)
        for record in result.records:
            data = contents[record.name]
            assert record.path == tmp_path / folder / record.name
            assert record.size == len(data)
            assert record.sha256 == hashlib.sha256(data).hexdigest()
            assert record.seconds >= 0
            assert record.resumed_bytes == 0


async def test_decline_reaches_the_sender(tmp_path: Path) -> None:
    sent, received = await run_transfer(tmp_path, {"f": b"x"}, decide=decline)
    assert isinstance(sent, RejectedError)
    assert isinstance(received, RejectedError)
    assert os.listdir(tmp_path / "out") == []


async def test_an_existing_destination_is_kept_beside_the_new_file(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_bytes(b"precious")
    sent, received = await run_transfer(tmp_path, {"f": b"new data"})
    assert isinstance(received, TransferResult), received
    assert not isinstance(sent, BaseException), sent
    assert (tmp_path / "out" / "f").read_bytes() == b"precious"
    assert (tmp_path / "out" / "f (1)").read_bytes() == b"new data"
    assert [r.path for r in received.records] == [tmp_path / "out" / "f (1)"]


async def test_a_same_sized_file_that_differs_is_kept_beside_the_new_one(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_bytes(b"precious")  # the size of what is sent
    _sent, received = await run_transfer(tmp_path, {"f": b"new data"})
    assert isinstance(received, TransferResult), received
    assert (tmp_path / "out" / "f").read_bytes() == b"precious"
    assert (tmp_path / "out" / "f (1)").read_bytes() == b"new data"
    assert [r.path for r in received.records] == [tmp_path / "out" / "f (1)"]


async def test_overwrite_replaces(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_bytes(b"old")
    _sent, received = await run_transfer(tmp_path, {"f": b"new data"}, overwrite=True)
    assert not isinstance(received, BaseException), received
    assert (tmp_path / "out" / "f").read_bytes() == b"new data"


async def test_tampered_chunk_is_caught_and_nothing_kept(tmp_path: Path) -> None:
    def flip_third_frame(index: int, frame: bytes) -> bytes:
        if index == 2:
            return frame[:-1] + bytes([frame[-1] ^ 1])
        return frame

    sent, received = await run_transfer(tmp_path, {"f": os.urandom(50)}, tamper=flip_third_frame)
    assert isinstance(received, CryptoError)
    assert isinstance(sent, CancelledByPeerError)
    assert os.listdir(tmp_path / "out") == []


async def test_dropped_chunk_is_caught(tmp_path: Path) -> None:
    _sent, received = await run_transfer(
        tmp_path, {"f": os.urandom(50)}, tamper=lambda i, f: None if i == 2 else f
    )
    assert isinstance(received, CryptoError)
    assert os.listdir(tmp_path / "out") == []


def cut_after(frames: int) -> tuple[QueueChannel, QueueChannel]:
    """A channel pair whose link goes away after the sender's first ``frames`` frames."""
    a, b = channel_pair()

    def cut(index: int, frame: bytes) -> bytes | None:
        if index == frames:
            b.inbox.put_nowait(None)  # the link goes away
        return None if index >= frames else frame

    a.tamper = cut
    return a, b


async def test_peer_vanishing_mid_transfer(tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.write_bytes(os.urandom(1000))
    out = tmp_path / "out"
    out.mkdir()
    ks, kr = key_pair()
    a, b = cut_after(5)
    sending = send_files(
        a, TransferProtocol(Role.SENDER, ks), inspect_sources([src]), sender="", chunk_size=10
    )
    receiving = receive_files(
        b, TransferProtocol(Role.RECEIVER, kr), output_dir=out, overwrite=False, decide=accept
    )
    receive_task = asyncio.ensure_future(receiving)
    send_task = asyncio.ensure_future(sending)
    with pytest.raises(PeerGoneError):
        await asyncio.wait_for(receive_task, 5)
    a.inbox.put_nowait(None)
    with pytest.raises((PeerGoneError, CancelledByPeerError)):
        await asyncio.wait_for(send_task, 5)
    # Nothing at the final name; what arrived is kept, with its record, for a resume.
    assert sorted(os.listdir(out)) == [".big.sfs-info", ".big.sfs-part"]
    held = (out / ".big.sfs-part").read_bytes()
    assert held
    assert held == src.read_bytes()[: len(held)]

    # Resuming: the receiver claims what it holds, the sender checks it and continues.
    ks, kr = key_pair()
    a, b = channel_pair()
    sent, received = await asyncio.gather(
        send_files(
            a, TransferProtocol(Role.SENDER, ks), inspect_sources([src]), sender="", chunk_size=10
        ),
        receive_files(
            b, TransferProtocol(Role.RECEIVER, kr), output_dir=out, overwrite=False, decide=accept
        ),
    )
    assert sent.resumed_bytes == received.resumed_bytes > 0
    assert [r.resumed_bytes for r in sent.records] == [sent.resumed_bytes]
    assert [r.resumed_bytes for r in received.records] == [sent.resumed_bytes]
    assert received.records[0].sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert (out / "big").read_bytes() == src.read_bytes()
    assert os.listdir(out) == ["big"]


async def test_a_sender_that_cannot_resume_leaves_no_partial_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An offer that says ``"resumes": false`` (a client that never resumes): what
    arrived before the link went is removed, and the receiver says why, rather than
    keep a copy no later offer will continue."""
    import functools

    from sfs.peer import sending

    monkeypatch.setattr(sending, "Offer", functools.partial(Offer, resumes=False))
    src = tmp_path / "big"
    src.write_bytes(os.urandom(1000))
    out = tmp_path / "out"
    out.mkdir()
    ks, kr = key_pair()
    a, b = cut_after(5)
    messages: list[str] = []
    send_task = asyncio.ensure_future(
        send_files(
            a, TransferProtocol(Role.SENDER, ks), inspect_sources([src]), sender="", chunk_size=10
        )
    )
    receiving = receive_files(
        b,
        TransferProtocol(Role.RECEIVER, kr),
        output_dir=out,
        overwrite=False,
        decide=accept,
        status=messages.append,
    )
    with pytest.raises(PeerGoneError):
        await asyncio.wait_for(receiving, 5)
    a.inbox.put_nowait(None)
    with pytest.raises((PeerGoneError, CancelledByPeerError)):
        await asyncio.wait_for(send_task, 5)
    assert os.listdir(out) == []
    assert any("the sender cannot resume a transfer (its offer says so)" in m for m in messages)


async def test_resume_restarts_when_the_source_changed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    src = tmp_path / "f"
    src.write_bytes(b"new content, same length!")
    # A partial copy of an older version with the same name, size and mtime on record.
    info = inspect_sources([src])[0]
    kept = PartFile(out / "f", identity=identity_of(FileInfo("f", info.size, info.mtime_ns)))
    kept.write(b"old content")
    kept.keep()
    messages: list[str] = []
    ks, kr = key_pair()
    a, b = channel_pair()
    sent, _received = await asyncio.gather(
        send_files(
            a,
            TransferProtocol(Role.SENDER, ks),
            [info],
            sender="",
            chunk_size=4,
            status=messages.append,
        ),
        receive_files(
            b,
            TransferProtocol(Role.RECEIVER, kr),
            output_dir=out,
            overwrite=False,
            decide=accept,
            status=messages.append,
        ),
    )
    assert sent.resumed_bytes == 0
    assert (out / "f").read_bytes() == src.read_bytes()
    assert any("partial copy differs; sending all" in m for m in messages)
    assert any("starting over" in m for m in messages)


async def test_no_resume_starts_over(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    src = tmp_path / "f"
    src.write_bytes(b"0123456789")
    info = inspect_sources([src])[0]
    kept = PartFile(out / "f", identity=identity_of(FileInfo("f", info.size, info.mtime_ns)))
    kept.write(b"01234")
    kept.keep()
    ks, kr = key_pair()
    a, b = channel_pair()
    sent, _ = await asyncio.gather(
        send_files(a, TransferProtocol(Role.SENDER, ks), [info], sender="", chunk_size=4),
        receive_files(
            b,
            TransferProtocol(Role.RECEIVER, kr),
            output_dir=out,
            overwrite=False,
            decide=accept,
            resume=False,
        ),
    )
    assert sent.resumed_bytes == 0
    assert (out / "f").read_bytes() == b"0123456789"


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([(FrameType.CHUNK, b"x" * 5)], RemoteProtocolError),
        ([(FrameType.PING, b""), (FrameType.FILE_DONE, bytes(32))], RemoteProtocolError),
        ([(FrameType.OFFER, encode_offer(Offer(files=(FileInfo("g", 1),))))], RemoteProtocolError),
        ([(FrameType.PING, b""), (FrameType.CANCEL, b'{"reason":"no"}')], CancelledByPeerError),
    ],
    ids=["chunk", "ping-then-done", "second-offer", "ping-then-cancel"],
)
async def test_only_ping_or_cancel_while_the_receiver_decides(
    tmp_path: Path, frames: list[tuple[int, bytes]], error: type[Exception]
) -> None:
    # The prompt is still open: the receiver reads the channel meanwhile, so a sender
    # cannot pile frames up in its memory, and a cancel ends the prompt at once.
    ks, kr = key_pair()
    a, b = channel_pair()
    seal = FrameSealer(ks.frame_send).seal
    a.send(seal(FrameType.OFFER, encode_offer(Offer(files=(FileInfo("f", 5),)))))
    await a.drain()
    prompt_open = asyncio.Event()

    async def never_answers(offer: Offer, plan: Plan) -> bool:
        prompt_open.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    receiving = asyncio.ensure_future(
        receive_files(
            b,
            TransferProtocol(Role.RECEIVER, kr),
            output_dir=tmp_path,
            overwrite=False,
            decide=never_answers,
        )
    )
    await asyncio.wait_for(prompt_open.wait(), 5)
    for frame in frames:
        a.send(seal(*frame))
        await a.drain()
    with pytest.raises(error):
        await asyncio.wait_for(receiving, 5)
    assert os.listdir(tmp_path) == []


async def test_a_slow_answer_then_yes_loses_no_frame(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"hello")
    out = tmp_path / "out"
    out.mkdir()
    ks, kr = key_pair()
    a, b = channel_pair()
    answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def slow_user(offer: Offer, plan: Plan) -> bool:
        return await answer

    sending = asyncio.ensure_future(
        send_files(
            a, TransferProtocol(Role.SENDER, ks), inspect_sources([src]), sender="", chunk_size=2
        )
    )
    receiving = asyncio.ensure_future(
        receive_files(
            b,
            TransferProtocol(Role.RECEIVER, kr),
            output_dir=out,
            overwrite=False,
            decide=slow_user,
        )
    )
    await asyncio.sleep(0.05)  # the receiver listens while the user thinks
    assert not sending.done()
    assert not receiving.done()
    answer.set_result(True)
    await asyncio.wait_for(asyncio.gather(sending, receiving), 5)
    assert (out / "f").read_bytes() == b"hello"


# -- partial copies: only sfs's own, under hidden names, are ever touched -----------------


async def test_a_users_own_part_file_is_never_touched(tmp_path: Path) -> None:
    # A browser's unfinished download, say: sfs neither truncates nor removes it.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.docx.part").write_bytes(b"the user's own bytes")
    _sent, received = await run_transfer(tmp_path, {"thesis.docx": b"offered"})
    assert not isinstance(received, BaseException), received
    assert (tmp_path / "out" / "thesis.docx.part").read_bytes() == b"the user's own bytes"
    assert (tmp_path / "out" / "thesis.docx").read_bytes() == b"offered"
    assert sorted(os.listdir(tmp_path / "out")) == ["thesis.docx", "thesis.docx.part"]


async def test_offered_x_part_and_x_both_arrive(tmp_path: Path) -> None:
    contents = {"x.part": b"first file", "x": b"second file", "x.part.sfs": b"third"}
    _sent, received = await run_transfer(tmp_path, contents)
    assert not isinstance(received, BaseException), received
    for name, data in contents.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    assert sorted(os.listdir(tmp_path / "out")) == sorted(contents)


@pytest.mark.parametrize("in_the_way", ["file", "symlink", "record", "folder"])
def test_a_part_name_sfs_did_not_write_is_refused_untouched(
    tmp_path: Path, in_the_way: str
) -> None:
    final = tmp_path / "f"
    part, record = part_path(final), meta_path(final)
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    if in_the_way == "file":  # a part file without sfs's record
        part.write_bytes(b"not sfs's")
    elif in_the_way == "symlink":  # sfs's record, but its part replaced by a symlink
        _write_record(final, FileInfo("f", 4))
        part.symlink_to(target)
    elif in_the_way == "record":  # something at the record's name that sfs did not write
        record.write_text("not a record")
    else:
        _write_record(final, FileInfo("f", 4))
        part.mkdir()
    before = {p.name: p.lstat() for p in tmp_path.iterdir()}
    for overwrite in (False, True):
        with pytest.raises(DestinationExistsError, match="sfs did not write"):
            plan_destinations(Offer(files=(FileInfo("f", 4),)), tmp_path, overwrite=overwrite)
    assert {p.name: p.lstat() for p in tmp_path.iterdir()} == before
    assert target.read_bytes() == b"keep"


def _write_record(final: Path, info: FileInfo) -> None:
    """A record as sfs writes it, next to a part name that is then replaced."""
    kept = PartFile(final, identity=identity_of(info))
    kept.keep()
    os.unlink(part_path(final))


def test_part_names_are_hidden_and_fit_a_file_system_name(tmp_path: Path) -> None:
    name = safe_name("é" * 5000 + ".tar.gz")
    for path in (part_path(tmp_path / name), meta_path(tmp_path / name)):
        assert path.name.startswith(".")
        assert len(path.name.encode()) <= 255
    # A final name never starts with a dot, so it can never be a part or record name.
    assert not safe_name(part_path(tmp_path / "x").name).startswith(".")


async def test_an_older_version_of_sfs_partial_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    kept = PartFile(out / "f", identity=identity_of(FileInfo("f", 99, 1)))
    kept.write(b"old")
    kept.keep()
    _sent, received = await run_transfer(tmp_path, {"f": b"new content"})
    assert not isinstance(received, BaseException), received
    assert os.listdir(out) == ["f"]
    assert (out / "f").read_bytes() == b"new content"


class RecordingProgress:
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def begin(self, files: int, total: int | None) -> None:
        pass

    def start(self, name: str, size: int | None) -> None:
        assert size is not None
        self.events.append(("start", size))

    def advance(self, n: int) -> None:
        self.events.append(("advance", n))

    def finish(self) -> None:
        self.events.append(("finish", 0))


async def test_the_senders_bar_counts_what_left_not_what_was_queued(tmp_path: Path) -> None:
    """With 30 bytes still buffered in the channel, the bar never shows them as sent
    until the file is complete, and it ends at the file's size."""
    data = os.urandom(100)
    (tmp_path / "f").write_bytes(data)
    (tmp_path / "out").mkdir()
    ks, kr = key_pair()
    a, b = channel_pair()
    a.unsent = 30
    progress = RecordingProgress()
    sending = send_files(
        a,
        TransferProtocol(Role.SENDER, ks),
        inspect_sources([tmp_path / "f"]),
        sender="t",
        chunk_size=10,
        progress=progress,
    )
    lines: list[str] = []
    receiving = receive_files(
        b,
        TransferProtocol(Role.RECEIVER, kr),
        output_dir=tmp_path / "out",
        overwrite=False,
        decide=accept,
        status=lines.append,
    )
    await asyncio.wait_for(asyncio.gather(sending, receiving), timeout=10)
    shown = 0
    for kind, n in progress.events[1:-2]:  # up to the last chunk's advance
        assert kind == "advance"
        shown += n
        assert shown <= 100 - 30
    assert sum(n for kind, n in progress.events if kind == "advance") == 100
    assert progress.events[-1] == ("finish", 0)
    assert lines == [f"Saved {tmp_path / 'out' / 'f'}"]


async def test_each_saved_path_is_told_and_a_changed_name_says_so(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    ks, kr = key_pair()
    a, b = channel_pair()
    lines: list[str] = []
    offer = Offer((FileInfo("a.txt", 1), FileInfo("A.TXT", 1), FileInfo("x:y", 1)), "t", 1)

    async def send() -> None:
        proto = TransferProtocol(Role.SENDER, ks)
        a.send(proto.send(offer))
        await a.drain()
        assert isinstance(proto.receive(await a.receive()), Accept)
        a.send(proto.send(Resume((0, 0, 0))))
        await a.drain()
        for _ in offer.files:
            a.send(proto.send(Chunk(b"z")))
            await a.drain()
            a.send(proto.send(FileDone(hashlib.sha256(b"z").digest())))
            await a.drain()
        while proto.state is not State.DONE:
            proto.receive(await a.receive())

    receiving = receive_files(
        b,
        TransferProtocol(Role.RECEIVER, kr),
        output_dir=tmp_path / "out",
        overwrite=False,
        decide=accept,
        status=lines.append,
    )
    await asyncio.wait_for(asyncio.gather(send(), receiving), timeout=10)
    out = tmp_path / "out"
    assert lines == [
        f"Saved {out / 'a.txt'}",
        f"Saved {out / 'A (1).TXT'} (offered as 'A.TXT')",
        f"Saved {out / 'x_y'} (offered as 'x:y')",
    ]


async def test_a_cancelled_thread_job_prints_nothing_when_it_fails_later() -> None:
    """Ctrl-C while a block read runs in a thread: the sender closes the file and the
    read then fails; asyncio must not print that as "Future exception was never
    retrieved" (a CI run showed the traceback on the terminal)."""
    ks, _ = key_pair()
    a, _ = channel_pair()
    pump = Pump(a, Sender(TransferProtocol(Role.SENDER, ks), 0.0))
    release = threading.Event()

    def read() -> bytes:
        release.wait(5)
        raise ValueError("read of closed file")

    reported: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    job = asyncio.ensure_future(pump.in_thread(read))
    await asyncio.sleep(0.05)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    release.set()
    await asyncio.sleep(0.1)  # the thread ends; its future's callbacks run
    del job
    gc.collect()
    assert reported == []
