"""sfs.platform: the one seam for what differs between Linux, macOS and Windows.

The decisions look at ``os.name``, ``sys.platform`` and the ``os`` module when they
are called, so the Windows and macOS paths are faked here on Linux; what only a real
Windows or macOS machine can show is marked to skip elsewhere.
"""

from __future__ import annotations

import asyncio
import errno
import getpass
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sfs import platform
from sfs.errors import DestinationExistsError
from sfs.peer.files import partial
from sfs.peer.files.destinations import keep_metadata
from sfs.peer.files.partial import PartFile, identity_of, make_durable
from sfs.peer.proto.wire import FileInfo

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX semantics (link, O_NOFOLLOW)")


def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decide as sfs would on Windows (os.name is what Windows has; sys.platform too)."""
    monkeypatch.setattr(os, "name", "nt")
    monkeypatch.setattr(sys, "platform", "win32")


def macos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")


# -- open flags ------------------------------------------------------------------------------


def test_open_flags_add_binary_mode_where_it_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    # Windows's os.open is in text mode without O_BINARY: "\n" would become "\r\n".
    monkeypatch.setattr(os, "O_BINARY", 0x8000, raising=False)
    monkeypatch.delattr(os, "O_NOFOLLOW", raising=False)
    assert platform.open_flags(os.O_WRONLY) == os.O_WRONLY | 0x8000


def test_open_flags_without_binary_mode_or_nofollow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "O_BINARY", raising=False)
    monkeypatch.delattr(os, "O_NOFOLLOW", raising=False)
    assert platform.open_flags(os.O_RDONLY) == os.O_RDONLY


@posix_only
def test_open_flags_refuse_a_link_here() -> None:
    assert platform.open_flags(0) & os.O_NOFOLLOW


def test_every_file_data_open_in_sfs_goes_through_the_seam() -> None:
    """os.open of file data anywhere but sfs.platform would miss O_BINARY on Windows."""
    root = Path(platform.__file__).parent
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for path in root.rglob("*.py")
        if "node_modules" not in path.parts and path.name != "platform.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "os.open(" in line and "platform." not in line and "new_file_flags()" not in line
    ]
    assert offenders == []


def test_fsync_opens_for_writing_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    # FlushFileBuffers needs a handle with write access: fsync of a read-only fd fails.
    assert platform.sync_open_flags() & (os.O_RDWR | os.O_WRONLY) == 0
    windows(monkeypatch)
    assert platform.sync_open_flags() & os.O_RDWR


def test_sync_all_only_where_sync_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(os, "sync", lambda: calls.append("sync"), raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert platform.sync_all()
    assert calls == ["sync"]
    macos(monkeypatch)  # sync(2) there schedules the writes and returns
    assert not platform.sync_all()
    windows(monkeypatch)
    monkeypatch.delattr(os, "sync")
    assert not platform.sync_all()
    assert calls == ["sync"]


@pytest.mark.parametrize("fake", [macos, windows])
def test_make_durable_fsyncs_each_file_without_a_waiting_sync(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake: Callable[[pytest.MonkeyPatch], None],
) -> None:
    paths = [tmp_path / "a", tmp_path / "b"]
    for path in paths:
        path.write_bytes(b"x")
    synced: list[int] = []
    monkeypatch.setattr(os, "sync", lambda: pytest.fail("sync() does not wait here"))
    monkeypatch.setattr(os, "fsync", synced.append)
    fake(monkeypatch)  # faked Windows opens with O_RDWR: fine here too
    make_durable(paths)
    assert len(synced) == 2


# -- placing a file without replacing one ---------------------------------------------------


def _part(tmp_path: Path, data: bytes = b"new") -> PartFile:
    part = PartFile(tmp_path / "f", identity=identity_of(FileInfo("f", len(data))))
    part.write(data)
    return part


def _no_hard_links(monkeypatch: pytest.MonkeyPatch, err: int = errno.EPERM) -> list[str]:
    """link() as on FAT: refused (EPERM on Linux's vfat)."""
    tried: list[str] = []

    def link(src: object, dst: object, **kwargs: object) -> None:
        tried.append(str(dst))
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "link", link)
    return tried


@posix_only
@pytest.mark.parametrize("err", [errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EACCES])
def test_without_hard_links_a_file_is_still_placed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    tried = _no_hard_links(monkeypatch, err)
    part = _part(tmp_path)
    asyncio.run(part.commit(hashlib.sha256(b"new").digest(), overwrite=False))
    assert tried == [str(tmp_path / "f")]
    assert (tmp_path / "f").read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["f"]


@posix_only
def test_without_hard_links_a_file_that_appeared_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback reserves the name with O_EXCL: a file there (written after the
    transfer began) is left as it is, and the new one goes to the next free name; only
    sfs's own empty file is ever renamed over."""
    _no_hard_links(monkeypatch)
    part = _part(tmp_path)
    (tmp_path / "f").write_bytes(b"old")
    placed = asyncio.run(part.commit(hashlib.sha256(b"new").digest(), overwrite=False))
    assert placed == tmp_path / "f (1)"
    assert (tmp_path / "f").read_bytes() == b"old"
    assert placed.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["f", "f (1)"]


@posix_only
def test_without_hard_links_a_failed_rename_leaves_no_reserved_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_hard_links(monkeypatch)

    def replace(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "replace", replace)
    src = tmp_path / "src"
    src.write_bytes(b"x")
    with pytest.raises(OSError, match="I/O"):
        platform.place_no_replace(src, tmp_path / "dst")
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_a_real_link_error_is_not_taken_for_missing_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_hard_links(monkeypatch, errno.ENOSPC)
    src = tmp_path / "src"
    src.write_bytes(b"x")
    with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)) as caught:
        platform.place_no_replace(src, tmp_path / "dst")
    assert caught.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == ["src"]


def test_windows_places_with_a_rename_that_never_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Windows, rename() fails when the name exists (MoveFileEx without
    REPLACE_EXISTING); hard links are not tried. Faked here: POSIX rename replaces."""
    renamed: list[tuple[str, str]] = []
    monkeypatch.setattr(os, "link", lambda *a, **k: pytest.fail("no link on Windows"))
    monkeypatch.setattr(os, "rename", lambda src, dst: renamed.append((str(src), str(dst))))
    windows(monkeypatch)
    platform.place_no_replace(tmp_path / "a", tmp_path / "b")
    assert renamed == [(str(tmp_path / "a"), str(tmp_path / "b"))]


def test_windows_rename_onto_an_existing_name_is_destination_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def rename(src: object, dst: object) -> None:
        raise FileExistsError(errno.EEXIST, "Cannot create a file when that file already exists")

    part = _part(tmp_path)
    monkeypatch.setattr(os, "rename", rename)
    windows(monkeypatch)
    monkeypatch.setattr(platform, "sync_open_flags", lambda: os.O_RDONLY)  # real fsync here
    with pytest.raises(DestinationExistsError):
        asyncio.run(part.commit(hashlib.sha256(b"new").digest(), overwrite=False))


@pytest.mark.skipif(os.name != "nt", reason="needs a real Windows file system")
def test_windows_rename_never_replaces(tmp_path: Path) -> None:  # pragma: no cover
    (tmp_path / "a").write_bytes(b"new")
    (tmp_path / "b").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        platform.place_no_replace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"old"


@pytest.mark.skipif(os.name != "nt", reason="needs Windows's text-mode os.open")
def test_windows_data_keeps_its_line_feeds(tmp_path: Path) -> None:  # pragma: no cover
    part = _part(tmp_path, b"a\nb\r\n\x1a")
    asyncio.run(part.commit(hashlib.sha256(b"a\nb\r\n\x1a").digest(), overwrite=False))
    assert (tmp_path / "f").read_bytes() == b"a\nb\r\n\x1a"


# -- metadata, limits, signals, names ------------------------------------------------------


@posix_only
def test_the_executable_bit_is_left_alone_on_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "run.sh"
    path.write_bytes(b"x")
    path.chmod(0o644)
    windows(monkeypatch)
    keep_metadata(path, FileInfo("run.sh", 1, executable=True))
    assert path.stat().st_mode & 0o777 == 0o644
    monkeypatch.undo()
    keep_metadata(path, FileInfo("run.sh", 1, executable=True))
    assert path.stat().st_mode & 0o777 == 0o755


def test_no_fd_limit_without_the_resource_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "resource", None)  # import fails, as on Windows
    assert platform.raise_fd_limit(1 << 20) is None


@pytest.mark.skipif(sys.platform == "win32", reason="resource is POSIX")
def test_fd_limit_is_the_soft_limit_after_raising() -> None:
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raised = platform.raise_fd_limit(1 << 20)
    if soft == resource.RLIM_INFINITY:
        assert raised is None
    else:
        assert raised == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert raised >= soft


def test_open_fd_count_falls_back_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    count = platform.open_fd_count()
    assert count is None or count > 2  # stdin, stdout, stderr at least
    monkeypatch.setattr(platform, "FD_FOLDERS", ("/nonexistent/fd",))
    assert platform.open_fd_count() is None


def test_server_guesses_open_fds_where_the_os_does_not_tell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sfs.defaults import FD_SPARE
    from sfs.signal import server

    monkeypatch.setattr(platform, "open_fd_count", lambda: None)
    assert server._open_fds() == 2 * FD_SPARE


def test_on_terminate_without_signal_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows's event loops raise NotImplementedError for add_signal_handler."""

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def refuse(*args: object) -> None:
            raise NotImplementedError

        monkeypatch.setattr(loop, "add_signal_handler", refuse)
        monkeypatch.setattr(loop, "remove_signal_handler", refuse)
        undo = platform.on_terminate(loop, lambda: None)
        undo()

    asyncio.run(main())


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM handlers are POSIX")
def test_on_terminate_calls_back_on_sigterm() -> None:
    import signal

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        got = asyncio.Event()
        undo = platform.on_terminate(loop, got.set)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            async with asyncio.timeout(5):
                await got.wait()
        finally:
            undo()
        return got.is_set()

    assert asyncio.run(main())


@pytest.mark.parametrize("error", [OSError("no login"), KeyError("uid"), ImportError("pwd")])
def test_login_name_when_the_system_cannot_tell(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def fail() -> str:
        raise error

    monkeypatch.setattr(getpass, "getuser", fail)
    assert platform.login_name() == ""


def test_partial_copies_read_the_seam_at_call_time() -> None:
    # A module-level constant would freeze the flags at import, out of the tests' reach.
    assert not hasattr(partial, "_NOFOLLOW")


def test_the_standard_event_loop_where_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop is installed only where it exists (not on Windows: pyproject's marker)."""
    from sfs.commands.running import event_loop_factory

    monkeypatch.delenv("SFS_EVENT_LOOP", raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import fails, as on Windows
    assert event_loop_factory() is None


def test_uvloop_is_not_required_on_windows() -> None:
    import tomllib

    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    uvloop = [d for d in dependencies if d.startswith("uvloop")]
    assert uvloop
    assert all("sys_platform != 'win32'" in d for d in uvloop)
