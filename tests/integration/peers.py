"""Running real `sfs receive` and `sfs send` processes in tests."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import (
    PROCESS_TIMEOUT_SECONDS,
    ServerProcess,
    peer_env,
    read_line_matching,
    sfs_command,
    stop_process,
)

CODE_RE = r"Code: ([A-Z]{3}-[0-9]{3}-[a-z]+-[a-z]+)"


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str

    def error_line(self) -> str:
        """The one `Error:` line, checking that there is exactly one and no traceback."""
        # A prompt answered on a terminal leaves no newline on stderr, so the error may
        # follow it on the same line.
        lines = [line for line in self.stderr.splitlines() if "Error: " in line]
        assert len(lines) == 1, self.stderr
        assert lines[0].count("Error: ") == 1, self.stderr
        assert "Traceback" not in self.stderr, self.stderr
        return lines[0][lines[0].index("Error: ") :]


@dataclass
class Receiver:
    process: subprocess.Popen[bytes]
    code: str
    stderr_path: Path
    command: str = "receive"

    def finish(self, timeout: float = PROCESS_TIMEOUT_SECONDS) -> Finished:
        """Wait for the receiver to end; if it does not, fail with what it said."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.process)
            raise AssertionError(
                f"sfs {self.command} did not finish within {timeout:.0f} s; its stderr:\n"
                f"{self.stderr_path.read_text(errors='replace')[-3000:]}"
            ) from None
        finally:
            stop_process(self.process)
        assert self.process.stdout is not None
        out = self.process.stdout.read().decode("utf-8", "replace")
        return Finished(self.process.returncode, out, self.stderr_path.read_text(errors="replace"))

    def stop(self) -> Finished:
        """End a receiver whose sender failed (it would wait for a sender forever)."""
        if self.process.poll() is None:
            self.process.terminate()
        return self.finish()


def start_receiver(
    server: ServerProcess,
    out_dir: Path,
    *args: str,
    stdin: int | None = None,
    netns: str | None = None,
    env: dict[str, str] | None = None,
) -> Receiver:
    """`sfs receive --output OUT_DIR ARGS`, its code read; ``env`` adds to peer_env()."""
    out_dir.mkdir(exist_ok=True)
    stderr_path = out_dir.parent / f"receiver-{time.monotonic_ns()}.err"
    with open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            sfs_command("receive", "--output", str(out_dir), *args, netns=netns),
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**peer_env(server.url), **(env or {})},
        )
    code = read_line_matching(process, CODE_RE).group(1)
    return Receiver(process, code, stderr_path)


def start_joining(server: ServerProcess, out: Path, code: str, *args: str) -> Receiver:
    """`sfs receive --yes -o OUT ARGS CODE`, running (several may run at once)."""
    out.mkdir(exist_ok=True)
    stderr_path = out.parent / f"{out.name}-{time.monotonic_ns()}.err"
    with open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            sfs_command("receive", "--yes", "-o", str(out), *args, code),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=peer_env(server.url),
        )
    return Receiver(process, code, stderr_path)


def wait_for_partials(receivers: list[Receiver], outs: list[Path], at_least: int = 1) -> None:
    """Until each receiver holds a partial copy of ``at_least`` bytes (its transfer is
    under way); fail with a receiver's stderr if one ends first."""
    deadline = time.monotonic() + PROCESS_TIMEOUT_SECONDS
    while True:
        held = [
            any(p.name.endswith(".sfs-part") and p.stat().st_size >= at_least
                for p in out.iterdir())
            for out in outs
        ]  # fmt: skip
        if all(held):
            return
        for receiver in receivers:
            assert receiver.process.poll() is None, receiver.finish().stderr
        assert time.monotonic() < deadline, f"no partial copy in {outs}"
        time.sleep(0.1)


def run_sfs(
    *args: str,
    env: dict[str, str],
    netns: str | None = None,
    stdin: str | None = None,
    timeout: float = PROCESS_TIMEOUT_SECONDS,
) -> Finished:
    """`sfs ARGS` (in ``netns``) to its end; if it does not end in time, fail with what
    it said."""
    try:
        done = subprocess.run(
            sfs_command(*args, netns=netns),
            input=None if stdin is None else stdin.encode(),
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode("utf-8", "replace")
        raise AssertionError(
            f"sfs {args[0]} did not finish within {timeout:.0f} s; its stderr:\n{stderr[-3000:]}"
        ) from None
    return Finished(
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )


def run_sender(
    server: ServerProcess,
    *args: str,
    stdin: str | None = None,
    url: str | None = None,
    netns: str | None = None,
) -> Finished:
    return run_sfs(
        "send", "--name", "tester", *args, env=peer_env(url or server.url), netns=netns,
        stdin=stdin or "",
    )  # fmt: skip


def make_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path
