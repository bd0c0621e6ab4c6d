"""Claims on the names sfs writes: one transfer at a time per name, a claim dropped
when its process dies, and the next free name for a second file of one name."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfs import platform
from sfs.errors import DestinationExistsError, RemoteProtocolError
from sfs.peer.files.claims import try_claim
from sfs.peer.files.destinations import NameClaims, Plan
from sfs.peer.files.partial import PartFile, identity_of, lock_path, meta_path, part_path
from sfs.peer.files.sources import inspect_sources
from sfs.peer.proto.framing import Role, State, TransferProtocol
from sfs.peer.proto.names import (
    FIRST_COPY_NUMBER,
    MAX_NAME_BYTES,
    free_name,
    names_taken,
    safe_name,
)
from sfs.peer.proto.wire import Accept, Chunk, FileDone, FileInfo, Offer, Resume
from sfs.peer.receiving import receive_files
from sfs.peer.sending import send_files
from tests.helpers import QueueChannel, channel_pair, key_pair

# -- the next free name (pure) ----------------------------------------------------------------


def test_a_free_name_is_kept_and_a_taken_one_gets_the_next_number() -> None:
    assert FIRST_COPY_NUMBER == 1  # as browsers and LocalSend number a taken name
    assert free_name("same", set()) == "same"
    assert free_name("same", names_taken("same")) == "same (1)"
    taken = names_taken("report.pdf") | names_taken("report (1).pdf")
    assert free_name("report.pdf", taken) == "report (2).pdf"
    # Case-folded, as Windows and macOS compare: REPORT.PDF takes report.pdf.
    assert free_name("report.pdf", names_taken("REPORT.PDF")) == "report (1).pdf"
    # A partial copy or a lock of a name takes it too.
    assert free_name("x", {".x.sfs-lock"}) == "x (1)"
    # A hidden name (inside a folder) keeps its dot; a folder keeps its dots in place.
    assert free_name(".gitignore", names_taken(".gitignore")) == ".gitignore (1)"
    assert free_name(".config.json", names_taken(".config.json")) == ".config (1).json"
    assert free_name("v1.2", {"v1.2"}, folder=True) == "v1.2 (1)"


def _safe(text: str) -> str | None:
    try:
        return safe_name(text)
    except RemoteProtocolError:
        return None


@given(
    wanted=st.text(min_size=1, max_size=300).map(_safe).filter(lambda n: n is not None),
    numbers=st.sets(st.integers(min_value=1, max_value=12), max_size=8),
    others=st.sets(st.text(max_size=20), max_size=5),
)
def test_the_free_name_is_the_first_candidate_whose_names_are_all_free(
    wanted: str | None, numbers: set[int], others: set[str]
) -> None:
    assert wanted is not None
    # Taken: the wanted name or some of its numbered forms, and unrelated names.
    taken = {o.casefold() for o in others}
    for n in numbers:
        taken |= names_taken(wanted if n == 1 else _nth(wanted, n))
    name = free_name(wanted, taken)
    assert names_taken(name).isdisjoint(taken)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert safe_name(name) == name  # a name sfs could have chosen for an offer
    # No earlier candidate was free: the first free one is taken, never a later one.
    earlier = [wanted] + [_nth(wanted, n) for n in range(2, 14)]
    for candidate in earlier[: earlier.index(name) if name in earlier else len(earlier)]:
        assert not names_taken(candidate).isdisjoint(taken)


def _nth(wanted: str, n: int) -> str:
    """The n-th candidate, by asking free_name with every earlier one taken."""
    taken = names_taken(wanted)
    for _ in range(2, n):
        taken |= names_taken(free_name(wanted, taken))
    return free_name(wanted, taken)


# -- the claim ----------------------------------------------------------------------------


def test_one_name_one_claim_in_one_process(tmp_path: Path) -> None:
    lock = lock_path(tmp_path / "same")
    first = try_claim(lock)
    assert first is not None
    assert lock.exists()
    assert try_claim(lock) is None  # another open of the same file: held
    first.release()
    assert not lock.exists()  # nothing left behind
    second = try_claim(lock)
    assert second is not None
    second.release()
    second.release()  # idempotent


HOLDER = """
import sys
from pathlib import Path
from sfs.peer.files.claims import try_claim
claim = try_claim(Path(sys.argv[1]))
print("held" if claim is not None else "refused", flush=True)
sys.stdin.read()
"""


def _holder(lock: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != "held":
        process.kill()
        raise AssertionError(f"the holder said {line!r}: {process.communicate(timeout=10)[1]}")
    return process


@pytest.mark.skipif(os.name != "posix", reason="kill -9 of a child: POSIX")
def test_a_claim_in_another_process_holds_until_that_process_dies(tmp_path: Path) -> None:
    lock = lock_path(tmp_path / "same")
    holder = _holder(lock)
    try:
        assert try_claim(lock) is None
        assert try_claim(lock) is None
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=10)
    # Killed with the lock file still there: its lock went with it, and the stale
    # file is taken over (and removed on release).
    assert lock.exists()
    claim = try_claim(lock)
    assert claim is not None
    claim.release()
    assert not lock.exists()


def test_a_lock_file_removed_between_open_and_lock_is_not_taken_for_the_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = lock_path(tmp_path / "same")
    holder = try_claim(lock)
    assert holder is not None
    real_try_lock = platform.try_lock
    calls: list[int] = []

    def holder_releases_first(fd: int) -> bool:
        calls.append(fd)
        if len(calls) == 1:
            holder.release()  # the file just opened is removed: an orphan now
        return real_try_lock(fd)

    monkeypatch.setattr(platform, "try_lock", holder_releases_first)
    claim = try_claim(lock)
    assert claim is not None
    assert len(calls) == 2
    assert lock.exists()
    assert try_claim(lock) is None  # and the claim is on the file at the name
    claim.release()


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_a_lock_name_sfs_did_not_write_is_refused_untouched(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"mine")
    lock = lock_path(tmp_path / "a")
    lock.symlink_to(target)
    with pytest.raises(DestinationExistsError, match="sfs did not write"):
        try_claim(lock)
    assert lock.is_symlink()
    assert target.read_bytes() == b"mine"
    lock.unlink()
    lock.write_bytes(b"notes")  # a file with something in it is nobody's lock
    with pytest.raises(DestinationExistsError, match="sfs did not write"):
        try_claim(lock)
    assert lock.read_bytes() == b"notes"


def test_windows_locks_with_msvcrt_and_removes_after_closing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked: set[int] = set()

    def locking(fd: int, mode: int, nbytes: int) -> None:
        assert (mode, nbytes) == (2, 1)
        if fd in locked:
            raise OSError(errno.EACCES, "locked")
        locked.add(fd)

    monkeypatch.setitem(sys.modules, "msvcrt", types.SimpleNamespace(LK_NBLCK=2, locking=locking))
    monkeypatch.setattr(os, "name", "nt")
    path = tmp_path / "l"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    assert platform.try_lock(fd) is True
    assert platform.try_lock(fd) is False
    closed: list[int] = []
    real_close = os.close

    def close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(os, "close", close)
    platform.release_lock_file(fd, path)
    assert closed == [fd]
    assert not path.exists()


def test_no_locks_on_the_file_system_means_going_on_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    import fcntl

    monkeypatch.setattr(fcntl, "flock", no_locks)
    fd = os.open(tmp_path / "l", os.O_RDWR | os.O_CREAT)
    try:
        assert platform.try_lock(fd) is True
    finally:
        os.close(fd)


# -- a transfer and its names ---------------------------------------------------------------


def test_a_name_that_appeared_since_the_plan_moves_to_the_next_free_one(tmp_path: Path) -> None:
    destinations = [tmp_path / "same", tmp_path / "same (1)"]
    claims = NameClaims(destinations, overwrite=False)
    (tmp_path / "same").write_bytes(b"placed by another transfer")
    said: list[str] = []
    claims.claim(0, said.append)
    # Not "same (1)": the offer's own second file has that name.
    assert destinations == [tmp_path / "same (2)", tmp_path / "same (1)"]
    assert said == ["'same' appeared since you accepted; this file is saved as 'same (2)'"]
    assert try_claim(lock_path(tmp_path / "same (2)")) is None
    claims.release_all()
    assert sorted(os.listdir(tmp_path)) == ["same"]


def test_a_folders_file_in_use_moves_to_the_next_free_name(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    other = try_claim(lock_path(tmp_path / "d" / "a"))
    assert other is not None
    destinations = [tmp_path / "d" / "a"]
    claims = NameClaims(destinations, overwrite=True)
    said: list[str] = []
    claims.claim(0, said.append)
    assert destinations == [tmp_path / "d" / "a (1)"]
    assert said == ["'a' is in use by another transfer; this file is saved as 'a (1)'"]
    claims.release_all()
    other.release()


def test_a_part_file_refuses_a_name_another_transfer_holds(tmp_path: Path) -> None:
    live = PartFile(tmp_path / "same", identity=identity_of(FileInfo("same", 10, 1)))
    live.write(b"live")
    with pytest.raises(DestinationExistsError, match="in use by another transfer"):
        PartFile(tmp_path / "same", identity=identity_of(FileInfo("same", 10, 2)))
    live.keep()
    assert part_path(tmp_path / "same").read_bytes() == b"live"


async def test_two_transfers_of_one_name_into_one_folder_at_once(tmp_path: Path) -> None:
    """The first transfer is paused half-way through `same` while a second, of another
    file named `same`, runs to its end in the same folder: the second lands as
    `same (1)`, the first's partial copy is never touched, and both are saved whole."""
    out = tmp_path / "out"
    out.mkdir()
    first_data, second_data = os.urandom(5000), os.urandom(7000)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "same").write_bytes(second_data)
    half_way, go_on = asyncio.Event(), asyncio.Event()
    offer = Offer((FileInfo("same", len(first_data), 1),), "first", 1000)

    async def first_sender(channel: QueueChannel) -> None:
        proto = TransferProtocol(Role.SENDER, keys_a[0])
        channel.send(proto.send(offer))
        await channel.drain()
        assert isinstance(proto.receive(await channel.receive()), Accept)
        channel.send(proto.send(Resume((0,))))
        await channel.drain()
        for i in range(0, len(first_data), 1000):
            if i == 2000:
                await go_on.wait()
            channel.send(proto.send(Chunk(first_data[i : i + 1000])))
            await channel.drain()
        channel.send(proto.send(FileDone(hashlib.sha256(first_data).digest())))
        await channel.drain()
        while proto.state is not State.DONE:
            proto.receive(await channel.receive())

    keys_a, keys_b = key_pair(), key_pair()
    a1, a2 = channel_pair()
    b1, b2 = channel_pair()
    lines_a: list[str] = []
    lines_b: list[str] = []
    first = asyncio.gather(
        first_sender(a1),
        receive_files(
            a2,
            TransferProtocol(Role.RECEIVER, keys_a[1]),
            output_dir=out,
            overwrite=False,
            decide=_accept,
            status=lines_a.append,
            progress=_Reached(2000, half_way),
        ),
    )
    await asyncio.wait_for(half_way.wait(), 10)
    # The first is writing its partial copy: the second must leave it and its record be.
    part = os.stat(part_path(out / "same"))
    record = meta_path(out / "same").read_bytes()
    _, second = await asyncio.wait_for(
        asyncio.gather(
            send_files(
                b1,
                TransferProtocol(Role.SENDER, keys_b[0]),
                inspect_sources([tmp_path / "b" / "same"]),
                sender="second",
                chunk_size=999,
            ),
            receive_files(
                b2,
                TransferProtocol(Role.RECEIVER, keys_b[1]),
                output_dir=out,
                overwrite=False,
                decide=_accept,
                status=lines_b.append,
            ),
        ),
        10,
    )
    assert not first.done()
    assert os.stat(part_path(out / "same")).st_ino == part.st_ino
    assert meta_path(out / "same").read_bytes() == record
    go_on.set()
    _, first_result = await asyncio.wait_for(first, 10)
    assert (out / "same").read_bytes() == first_data
    assert (out / "same (1)").read_bytes() == second_data
    assert sorted(os.listdir(out)) == ["same", "same (1)"]
    assert f"Saved {out / 'same'}" in lines_a
    assert f"Saved {out / 'same (1)'} (offered as 'same')" in lines_b
    assert [r.path for r in first_result.records] == [out / "same"]
    assert [r.path for r in second.records] == [out / "same (1)"]
    assert second.records[0].sha256 == hashlib.sha256(second_data).hexdigest()


async def _accept(offer: Offer, plan: Plan) -> bool:
    return True


class _Reached:
    """A Progress that sets ``event`` once ``at_least`` bytes were written."""

    def __init__(self, at_least: int, event: asyncio.Event) -> None:
        self.at_least, self.event, self.done = at_least, event, 0

    def begin(self, files: int, total: int | None) -> None:
        pass

    def start(self, name: str, size: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        self.done += n
        if self.done >= self.at_least:
            self.event.set()

    def finish(self) -> None:
        pass


def test_the_lock_name_is_hidden_and_fits_a_file_system_name(tmp_path: Path) -> None:
    name = safe_name("é" * 5000 + ".tar.gz")
    lock = lock_path(tmp_path / name)
    assert lock.name.startswith(".")
    assert len(lock.name.encode()) <= 255
    assert lock.name.endswith(".sfs-lock")
