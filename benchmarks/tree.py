"""`scripts/bench --tree`: how fast sfs moves many small files.

    scripts/bench --tree [--runs 3] [--chunk-size N] [--loop auto|asyncio] [--streams N]

Two data sets: a generated tree of 10 000 files of 4 KiB random bytes (100 folders of
100), and this checkout's own source (the files `git ls-files` lists, copied into a
temporary folder so the tree holds still while others edit it).  Each is sent twice
with real processes on 127.0.0.1 (one `sfs serve`, then `sfs receive` and `sfs send`
with ``--ice-address 127.0.0.1``): as a folder (`sfs send CODE DIR`), and as one tar
stream (`tar cf - DIR | sfs send CODE - --as data.tar` into `sfs receive --stdout`);
then both once more with `--no-compress`, to show what zstd brings.  Every transfer
is checked: the received tree's paths and SHA-256s against the source's (names as
sfs's receiver makes them safe; hidden ones inside the folder keep their dot), the received tar's
SHA-256 against `tar cf -` of the same folder.

Per row, medians over ``--runs``: the data phase (the sender's -v line "sent N bytes
in T s", from the receiver's accept to the last byte), files/s and MiB/s over it, the
wall time from starting `sfs send` to its exit, and each side's peak RSS.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from benchmarks.bench import (
    LOOPBACK,
    MIB,
    Sample,
    SignalServer,
    Usage,
    median,
    python,
    wait_usage,
)

ROOT = Path(__file__).resolve().parents[1]
#: The goal this benchmark checks: GOAL_FILES files of FILE_BYTES at GOAL_RATE files/s.
GOAL_FILES = 10_000
GOAL_RATE = 1_000
FILE_BYTES = 4096
FOLDERS = 100
#: The bound on every wait for a process.
TIMEOUT = 600.0
#: How long `sfs receive` may take to show its code.
CODE_TIMEOUT = 30.0
#: The folders walked when git cannot list the checkout's files.
FALLBACK_FOLDERS = ("sfs", "tests", "benchmarks", "docs")
_CODE_RE = re.compile(r"Code: (\S+)")
_SENT_RE = re.compile(r"sent (\d+) bytes in ([\d.]+) s")


class TreeBenchError(RuntimeError):
    """A transfer failed, was wrong, or did not finish in time."""


@dataclass(frozen=True)
class DataSet:
    """A folder to send, with what a correct copy of it looks like."""

    label: str
    path: Path
    #: Relative path (POSIX) -> SHA-256 of every file in the tree.
    manifest: dict[str, str]
    size: int
    tar_sha256: str
    tar_size: int

    @property
    def files(self) -> int:
        return len(self.manifest)


@dataclass(frozen=True)
class Case:
    """One way of sending a data set."""

    how: str
    tar: bool
    compress: bool


CASES = (
    Case("folder", tar=False, compress=True),
    Case("tar stream", tar=True, compress=True),
    Case("folder, --no-compress", tar=False, compress=False),
    Case("tar stream, --no-compress", tar=True, compress=False),
)


@dataclass
class TreeSample(Sample):
    """bench.Sample (data-phase MiB/s, wall time, usage of each side) plus the
    data-phase seconds and the bytes the sender counted."""

    seconds: float = 0.0
    sent_bytes: int = 0


def _thousands(n: float) -> str:
    """10000 -> '10 000'."""
    return f"{n:,.0f}".replace(",", " ")


def _tree_median(samples: Sequence[TreeSample], get: Callable[[TreeSample], float]) -> float:
    return median(samples, lambda s: get(s) if isinstance(s, TreeSample) else None)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"    (no {path.name})"
    last = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in last) or "    (empty)"


def _fail(what: str, *logs: Path) -> TreeBenchError:
    parts = [what]
    for log in logs:
        parts.append(f"  last lines of {log.name}:\n{_tail(log)}")
    return TreeBenchError("\n".join(parts))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def manifest(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every regular file under ``root``."""
    return {
        path.relative_to(root).as_posix(): _sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def _tar_sha256(folder: Path, workdir: Path) -> tuple[str, int]:
    """SHA-256 and size of `tar cf - -C PARENT NAME`, the stream the tar rows send.

    The tar goes through a file, never this process's memory: a child's peak RSS as
    wait4() reports it is at least this process's own at the child's start (vfork and
    exec hand the parent's high-water mark on), so this process stays small.
    """
    log = workdir / "tar-reference.err"
    reference = workdir / "reference.tar"
    with open(log, "wb") as err, open(reference, "wb") as out:
        try:
            done = subprocess.run(
                ["tar", "cf", "-", "-C", str(folder.parent), folder.name],
                stdout=out,
                stderr=err,
                timeout=TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise _fail(f"tar of {folder} did not finish within {TIMEOUT:.0f} s", log) from None
    if done.returncode:
        raise _fail(f"tar of {folder} failed (exit {done.returncode})", log)
    try:
        return _sha256_file(reference), reference.stat().st_size
    finally:
        reference.unlink()


def _data_set(label: str, folder: Path, workdir: Path) -> DataSet:
    files = manifest(folder)
    tar_sha256, tar_size = _tar_sha256(folder, workdir)
    size = sum((folder / name).stat().st_size for name in files)
    return DataSet(label, folder, files, size, tar_sha256, tar_size)


def generated_tree(folder: Path, files: int = GOAL_FILES) -> None:
    """``files`` files of FILE_BYTES random bytes, in FOLDERS folders (fewer when
    ``files`` is small)."""
    folders = min(FOLDERS, files)
    for i in range(files):
        sub = folder / f"d{i % folders:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i // folders:05d}.bin").write_bytes(os.urandom(FILE_BYTES))


def _checkout_files() -> list[Path]:
    """This checkout's tracked files (relative to ROOT); without git, FALLBACK_FOLDERS."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z"],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
        names = [Path(name) for name in listed.decode().split("\0") if name]
    except (OSError, subprocess.SubprocessError):
        names = []
    if not names:
        print("  git ls-files gave nothing: walking the source folders", file=sys.stderr)
        names = [
            path.relative_to(ROOT)
            for top in FALLBACK_FOLDERS
            for path in sorted((ROOT / top).rglob("*"))
            if "__pycache__" not in path.parts
        ]
    # What sfs sends from a folder: regular files (it skips links inside a folder).
    return [name for name in names if (ROOT / name).is_file() and not (ROOT / name).is_symlink()]


def checkout_tree(folder: Path) -> None:
    for name in _checkout_files():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)


class Processes:
    """Every process one transfer starts; ``close()`` ends those still running."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        args: list[str],
        *,
        stdin: int | IO[bytes] | None = None,
        stdout: int | IO[bytes] | None = None,
        stderr: IO[bytes],
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(args, stdin=stdin, stdout=stdout, stderr=stderr, env=env)
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            if process.returncode is None and process.poll() is None:
                process.kill()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    print(f"  pid {process.pid} survived SIGKILL", file=sys.stderr)


@contextmanager
def _processes() -> Iterator[Processes]:
    processes = Processes()
    try:
        yield processes
    finally:
        processes.close()


def _wait(process: subprocess.Popen[bytes], name: str, timeout: float, *logs: Path) -> Usage:
    """wait_usage, with the last stderr lines of ``logs`` when the process fails or hangs."""
    try:
        usage = wait_usage(process, timeout)
    except RuntimeError:
        raise _fail(f"{name} did not finish within {timeout:.0f} s", *logs) from None
    if usage.returncode:
        raise _fail(f"{name} failed (exit {usage.returncode})", *logs)
    return usage


def _wait_for_code(
    printed: Path, receiver: subprocess.Popen[bytes], log: Path, timeout: float = CODE_TIMEOUT
) -> str:
    """The code `sfs receive` prints into ``printed`` (its stdout, or with --stdout its
    stderr); the file is polled, so a silent receiver cannot hang the benchmark."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _CODE_RE.search(printed.read_text(errors="replace"))
        if match:
            return match.group(1)
        if receiver.poll() is not None:
            raise _fail(f"sfs receive exited ({receiver.returncode}) without a code", log)
        time.sleep(0.02)
    raise _fail(f"sfs receive printed no code within {timeout:.0f} s", log)


def as_received(sent: dict[str, str]) -> dict[str, str]:
    """The manifest a correct copy has: each path as the receiver names it (sfs's own
    rule, sfs.peer.proto.tree.local_parts, under the sent folder: inside it ``.gitignore``
    keeps its dot)."""
    from sfs.peer.proto.tree import local_parts

    return {
        "/".join(local_parts(("folder", *name.split("/")))[1:]): sha for name, sha in sent.items()
    }


def _compare_manifests(want: dict[str, str], got: dict[str, str]) -> list[str]:
    problems = [f"missing {name}" for name in sorted(want.keys() - got.keys())]
    problems += [f"unexpected {name}" for name in sorted(got.keys() - want.keys())]
    problems += [
        f"differs {name}" for name in sorted(want.keys() & got.keys()) if want[name] != got[name]
    ]
    return problems


def run_transfer(
    server: SignalServer,
    data: DataSet,
    case: Case,
    workdir: Path,
    env: dict[str, str],
    chunk: int,
    streams: str,
) -> TreeSample:
    """One `sfs receive` + `sfs send` of ``data`` the way ``case`` says, checked."""
    out = workdir / "out"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    receiver_out, receiver_err = logs / "receiver.out", logs / "receiver.err"
    sender_err, tar_err = logs / "sender.err", logs / "tar.err"
    common = ["--server", server.url, "--ice-address", LOOPBACK, "-q", "-v"]
    receive = ["receive", "--yes", *common]
    receive += ["--stdout"] if case.tar else ["-o", str(out)]
    send = ["send", "--chunk-size", str(chunk), "--streams", str(streams), *common]
    if not case.compress:
        send.append("--no-compress")
    received_tar = out / "data.tar"
    with _processes() as processes:
        with (
            open(received_tar if case.tar else receiver_out, "wb") as rout,
            open(receiver_err, "wb") as rerr,
        ):
            receiver = processes.start(
                python("-m", "sfs", *receive), stdout=rout, stderr=rerr, env=env
            )
        code = _wait_for_code(receiver_err if case.tar else receiver_out, receiver, receiver_err)
        with open(sender_err, "wb") as serr, open(tar_err, "wb") as terr:
            started = time.monotonic()
            if case.tar:
                tar = processes.start(
                    ["tar", "cf", "-", "-C", str(data.path.parent), data.path.name],
                    stdout=subprocess.PIPE,
                    stderr=terr,
                )
                assert tar.stdout is not None
                args = [*send, code, "-", "--as", "data.tar"]
                sender = processes.start(
                    python("-m", "sfs", *args),
                    stdin=tar.stdout,
                    stdout=subprocess.DEVNULL,
                    stderr=serr,
                    env=env,
                )
                tar.stdout.close()  # the sender's copy is the only one: tar sees it end
            else:
                sender = processes.start(
                    python("-m", "sfs", *send, code, str(data.path)),
                    stdout=subprocess.DEVNULL,
                    stderr=serr,
                    env=env,
                )
        # A failed sender often fails because of the receiver: show both sides.
        sender_usage = _wait(sender, "sfs send", TIMEOUT, sender_err, receiver_err)
        wall = time.monotonic() - started
        if case.tar:
            _wait(tar, "tar", TIMEOUT, tar_err)
        receiver_usage = _wait(receiver, "sfs receive", TIMEOUT, receiver_err, sender_err)
    sent = _SENT_RE.search(sender_err.read_text(errors="replace"))
    if not sent:
        raise _fail("no 'sent N bytes in T s' line in the sender's -v log", sender_err)
    sent_bytes, seconds = int(sent.group(1)), float(sent.group(2))
    what = f"{data.label}, {case.how}"
    expected = data.tar_size if case.tar else data.size
    if sent_bytes != expected:
        raise _fail(f"{what}: the sender counted {sent_bytes} B, not {expected}", sender_err)
    if case.tar:
        got = _sha256_file(received_tar)
        if got != data.tar_sha256:
            raise _fail(
                f"{what}: the received tar ({received_tar.stat().st_size} B, SHA-256 {got}) "
                f"is not what tar made ({data.tar_size} B, {data.tar_sha256})",
                receiver_err,
            )
    else:
        problems = _compare_manifests(as_received(data.manifest), manifest(out / data.path.name))
        if problems:
            shown = "\n".join(f"    {p}" for p in problems[:10])
            more = f"\n    ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise _fail(
                f"{what}: the received tree differs from the source "
                f"({len(problems)} problems):\n{shown}{more}",
                receiver_err,
            )
    return TreeSample(
        mib_per_s=sent_bytes / MIB / seconds,
        total_s=wall,
        sides={"sender": sender_usage, "receiver": receiver_usage},
        seconds=seconds,
        sent_bytes=sent_bytes,
    )


def _row(data: DataSet, case: Case, samples: list[TreeSample]) -> str:
    seconds = _tree_median(samples, lambda s: s.seconds)
    mib = _tree_median(samples, lambda s: s.sent_bytes / MIB)
    files = 1 if case.tar else data.files
    # A tar row's files/s counts the source files the stream carries, to compare.
    files_per_s = _tree_median(samples, lambda s: data.files / s.seconds)
    rss = "/".join(
        f"{median(samples, lambda s, side=side: s.sides[side].peak_rss_mib):.0f}"  # type: ignore[misc]
        for side in ("sender", "receiver")
    )
    cells = [
        data.label,
        case.how,
        f"{files}",
        f"{mib:.1f}",
        f"{seconds:.2f}",
        _thousands(files_per_s) + ("*" if case.tar else ""),
        f"{median(samples, lambda s: s.mib_per_s):.2f}",
        f"{median(samples, lambda s: s.total_s):.2f}",
        rss,
    ]
    return "| " + " | ".join(cells) + " |"


def _goal_line(data: DataSet, samples: list[TreeSample]) -> str:
    rate = _tree_median(samples, lambda s: data.files / s.seconds)
    wall = _tree_median(samples, lambda s: data.files / s.total_s)
    verdict = "met" if rate >= GOAL_RATE else "NOT met"
    return (
        f"Goal {_thousands(GOAL_FILES)} × 4 KiB at ≥ {_thousands(GOAL_RATE)} files/s "
        f"(folder, compression on): {verdict}: {_thousands(rate)} files/s over the data "
        f"phase ({_thousands(wall)} files/s over the wall time, connecting and the offer "
        "included)"
    )


def run_tree(
    runs: int,
    chunk: int,
    streams: str,
    env: dict[str, str],
    loop_name: str,
    *,
    files: int = GOAL_FILES,
) -> None:
    """Build both data sets, run every case ``runs`` times (interleaved), print the
    table; a failed or wrong transfer exits non-zero with the reason."""
    streams_note = f", --streams {streams}" if streams != "auto" else ""
    print(
        f"sfs tree benchmark on {LOOPBACK}: {runs} runs, chunk {chunk} B{streams_note}, "
        f"{loop_name}; {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}",
        flush=True,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="sfs-bench-tree-") as tmp:
            workdir = Path(tmp)
            data_root = workdir / "data"
            generated_tree(data_root / "tree", files)
            checkout_tree(data_root / "checkout")
            label = f"{_thousands(files)} × 4 KiB"
            generated = _data_set(label, data_root / "tree", workdir)
            checkout = _data_set("this checkout", data_root / "checkout", workdir)
            checkout = DataSet(
                f"this checkout ({checkout.files} files)",
                checkout.path,
                checkout.manifest,
                checkout.size,
                checkout.tar_sha256,
                checkout.tar_size,
            )
            sets = (generated, checkout)
            results: dict[tuple[str, str], list[TreeSample]] = {
                (data.label, case.how): [] for data in sets for case in CASES
            }
            server = SignalServer(workdir)
            try:
                for run in range(runs):
                    for data in sets:
                        for case in CASES:
                            sample = run_transfer(server, data, case, workdir, env, chunk, streams)
                            results[data.label, case.how].append(sample)
                    print(f"  run {run + 1}/{runs} done", file=sys.stderr, flush=True)
            finally:
                try:
                    server.stop()
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait(10)
    except (RuntimeError, OSError) as exc:  # TreeBenchError, SignalServer's, no tar, disk
        raise SystemExit(f"scripts/bench --tree: {exc}") from None
    header = ["data", "how", "files", "MiB", "s", "files/s", "MiB/s", "wall s", "RSS send/recv MiB"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for data in sets:
        for case in CASES:
            print(_row(data, case, results[data.label, case.how]))
    print(
        "s, files/s, MiB/s: the data phase (the sender's 'sent N bytes in T s', from the "
        "accept to the last byte); wall s: starting `sfs send` to its exit. "
        "* the files the tar stream carries, per second."
    )
    if files == GOAL_FILES:
        print(_goal_line(generated, results[generated.label, CASES[0].how]))
