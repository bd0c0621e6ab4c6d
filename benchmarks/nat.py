"""`scripts/bench --nat`: connect time and throughput for each case of the NAT matrix
(issues 11 and 25).

The lab is the test suite's own (``tests/integration/nat.py``): two home routers and
an "internet" in network namespaces, a real coturn (STUN, TURN over UDP and TCP) and
two real `sfs serve` in ``pub``: one with ``--turn ... --turn-secret-file`` (coturn's
credentials) for the WebRTC cases, and one with nothing but its own relay (no STUN,
no TURN) for the "relayed by sfs serve" case.  The WebRTC cases run the peers with
``--relay never``, so they measure WebRTC and TURN as before the relay existed; the
relay's case with ``--relay auto``, as users run it.  One lab serves every case:
before each run the NATs are set to the case's behaviour (which also forgets their
old mappings).  Each run is a real `sfs receive` and `sfs send` at ``-v`` in the
case's peer namespaces; the cases take turns run by run, as in the rest of
scripts/bench.  Connect time is from starting `sfs send` to the sender's "connected
at" log line (the DataChannel open, or the chosen TCP connection's proof: process
start, signaling, gathering, ICE, DTLS and SCTP, or the relay's head start,
included); MiB/s is from the sender's "sent N bytes in T s"; every received file's
SHA-256 is checked against the source's.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.bench import goal_line
from tests.conftest import ServerProcess, read_line_matching, sfs_command, stop_process
from tests.integration.lan import Host
from tests.integration.nat import (
    NatLab,
    NatMode,
    coturn,
    nat_env,
    nat_lab,
    nat_server,
    turn_args,
)
from tests.integration.peers import CODE_RE

MIB = 1024 * 1024
#: As in the matrix tests: long enough for the slowest path that works.
CONNECT_TIMEOUT = "30"
_CONNECTED_RE = re.compile(r"connected at (\d+\.\d+): (.+)$", re.MULTILINE)
_SENT_RE = re.compile(r"sent (\d+) bytes in ([\d.]+) s")


@dataclass(frozen=True)
class Case:
    """One matrix case: who sends to whom, and how the NATs behave."""

    name: str
    sender: Callable[[NatLab], Host]
    receiver: Callable[[NatLab], Host]
    nat1: NatMode = "cone"
    nat2: NatMode = "cone"
    udp_blocked: bool = False
    #: The peers' ``--relay``; "never" for the cases that measure WebRTC (and TURN).
    relay: str = "never"
    #: Whether the case uses the `sfs serve` that hands out coturn's STUN and TURN
    #: (else the one with nothing but its own relay).
    turn: bool = True

    def apply(self, lab: NatLab) -> None:
        lab.set_nat(self.nat1, 1)
        lab.set_nat(self.nat2, 2)
        lab.block_udp(self.udp_blocked)


def _peer1(lab: NatLab) -> Host:
    return lab.peer1


def _peer1b(lab: NatLab) -> Host:
    return lab.peer1b


def _peer2(lab: NatLab) -> Host:
    return lab.peer2


BOTH_SYMMETRIC_TURN = "both symmetric, coturn + WebRTC"
BOTH_SYMMETRIC_RELAYED = "both symmetric, relayed by sfs serve"

#: The cases of tests/integration/test_nat_matrix.py that transfer a file.
CASES = (
    Case("both cone", _peer2, _peer1),
    Case("one symmetric", _peer2, _peer1, nat2="symmetric"),
    Case(BOTH_SYMMETRIC_TURN, _peer2, _peer1, nat1="symmetric", nat2="symmetric"),
    # Issue 25: no coturn at all, `--relay auto`.
    Case(
        BOTH_SYMMETRIC_RELAYED,
        _peer2,
        _peer1,
        nat1="symmetric",
        nat2="symmetric",
        relay="auto",
        turn=False,
    ),
    Case("same NAT", _peer1b, _peer1),
    Case("all UDP blocked", _peer2, _peer1, udp_blocked=True),
)
#: The issue's goal for the relay: ≥ 5× coturn + WebRTC, both NATs symmetric.
RELAY_OVER_TURN_GOAL = 5.0


@dataclass
class NatSample:
    path: str  # as the sender says it connected
    connect_s: float
    mib_per_s: float


class RunFailed(Exception):
    pass


def _tail(path: Path, chars: int = 1500) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def run_once(
    lab: NatLab,
    case: Case,
    server: ServerProcess,
    src: Path,
    workdir: Path,
    send_args: list[str],
    env_extra: dict[str, str],
) -> NatSample:
    """One transfer of ``src`` in ``case``: `sfs receive` first, then `sfs send`."""
    out = workdir / "out"
    out.mkdir(exist_ok=True)
    for leftover in out.iterdir():
        leftover.unlink()
    case.apply(lab)
    env = {**nat_env(server), **env_extra}
    timeout = ("--connect-timeout", CONNECT_TIMEOUT, "--relay", case.relay)
    receiver_log, sender_log = workdir / "receiver.log", workdir / "sender.log"
    with open(receiver_log, "wb") as rlog:
        receiver = subprocess.Popen(
            sfs_command(
                *("receive", "--yes", "--output", str(out), *timeout, "-q", "-v"),
                netns=case.receiver(lab).netns,
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=rlog,
            env=env,
        )
    sender: subprocess.Popen[bytes] | None = None
    try:
        try:
            code = read_line_matching(receiver, CODE_RE).group(1)
        except AssertionError as exc:
            raise RunFailed(f"sfs receive showed no code: {exc}\n{_tail(receiver_log)}") from None
        # The file's size, at 0.1 MiB/s at worst, and the connect timeout.
        limit = 120 + src.stat().st_size / MIB * 10
        with open(sender_log, "wb") as slog:
            started = time.time()
            sender = subprocess.Popen(
                sfs_command(
                    *("send", "--name", "bench", *timeout, *send_args, "-q", "-v", code, str(src)),
                    netns=case.sender(lab).netns,
                ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=slog,
                env=env,
            )
        try:
            sent_code = sender.wait(limit)
            received_code = receiver.wait(60)
        except subprocess.TimeoutExpired:
            raise RunFailed(
                f"no end within {limit:.0f} s\n--- sfs send:\n{_tail(sender_log)}"
                f"\n--- sfs receive:\n{_tail(receiver_log)}"
            ) from None
    finally:
        for process in (sender, receiver):
            if process is not None:
                stop_process(process)
    sender_text = sender_log.read_text(errors="replace")
    if sent_code or received_code:
        raise RunFailed(
            f"sfs send exit {sent_code}, sfs receive exit {received_code}\n"
            f"--- sfs send:\n{sender_text[-1500:]}\n--- sfs receive:\n{_tail(receiver_log)}"
        )
    received = out / src.name
    if not received.is_file() or received.stat().st_size != src.stat().st_size:
        raise RunFailed(f"{received} is missing or not {src.stat().st_size} bytes")
    if _sha256(received) != _sha256(src):
        raise RunFailed(f"{received} differs from what was sent (SHA-256)")
    # The last: a WebRTC peer connection says it connected before the sender takes
    # QUIC over its path (or the DataChannel), and that says so again.
    connections = list(_CONNECTED_RE.finditer(sender_text))
    connected = connections[-1] if connections else None
    sent = _SENT_RE.search(sender_text)
    if not connected or not sent:
        raise RunFailed(f"no 'connected at' or 'sent' line in sfs send's -v log:\n{sender_text}")
    return NatSample(
        path=connected.group(2).strip(),
        connect_s=float(connected.group(1)) - started,
        mib_per_s=int(sent.group(1)) / MIB / float(sent.group(2)),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def _paths(samples: list[NatSample]) -> str:
    """The sender's path; when runs differ, each with how many runs took it."""
    counts = Counter(s.path for s in samples)
    if len(counts) == 1:
        return samples[0].path
    return ", ".join(f"{n}x {path}" for path, n in counts.most_common())


def table(results: dict[str, list[NatSample]], failures: dict[str, int]) -> list[str]:
    header = ("case", "path (sender's view)", "connect s", "MiB/s", "runs")
    rows = []
    for name, samples in results.items():
        done = f"{len(samples)}" + (f" ({failures[name]} failed)" if failures[name] else "")
        if samples:
            connect = f"{statistics.median(s.connect_s for s in samples):.2f}"
            speed = f"{statistics.median(s.mib_per_s for s in samples):.1f}"
            rows.append((name, _paths(samples), connect, speed, done))
        else:
            rows.append((name, "failed", "-", "-", done))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        left = [cell.ljust(width) for cell, width in zip(row[:2], widths[:2], strict=True)]
        right = [cell.rjust(width) for cell, width in zip(row[2:], widths[2:], strict=True)]
        return " | ".join(left + right).rstrip()

    rule = "-+-".join("-" * width for width in widths)
    return [line(header), rule, *(line(row) for row in rows), *goals(results)]


def goals(results: dict[str, list[NatSample]]) -> list[str]:
    """Issue 25's goal in the matrix: both NATs symmetric, the relay of `sfs serve`
    at ≥ 5× coturn + WebRTC, medians of the same run."""

    def speed(name: str) -> float:
        samples = results.get(name, [])
        return statistics.median(s.mib_per_s for s in samples) if samples else math.nan

    line = goal_line(
        "both symmetric: relayed by sfs serve / coturn + WebRTC",
        speed(BOTH_SYMMETRIC_RELAYED) / speed(BOTH_SYMMETRIC_TURN),
        RELAY_OVER_TURN_GOAL,
    )
    return [] if line is None else [line]


def run_nat(
    size: int, runs: int, chunk: int, streams: str, env_extra: dict[str, str], title: str
) -> None:
    """Build the lab, run every case ``runs`` times, print the table; exit 1 if any
    run failed (its reason is on stderr)."""
    print(title, flush=True)
    send_args = ["--chunk-size", str(chunk), "--streams", str(streams)]
    results: dict[str, list[NatSample]] = {case.name: [] for case in CASES}
    failures = dict.fromkeys(results, 0)
    with tempfile.TemporaryDirectory(prefix="sfs-bench-nat-") as tmp:
        workdir = Path(tmp)
        src = workdir / "src.bin"
        with open(src, "wb") as f:
            for offset in range(0, size, MIB):
                f.write(os.urandom(min(MIB, size - offset)))
        try:
            with contextlib.ExitStack() as stack:
                lab = stack.enter_context(nat_lab())
                turn = stack.enter_context(coturn(lab, workdir))
                with_turn = stack.enter_context(
                    nat_server(lab, workdir, *turn_args(turn.secret_file))
                )
                relay_only = stack.enter_context(nat_server(lab, workdir))
                for run in range(runs):
                    for case in CASES:
                        progress = f"  run {run + 1}/{runs} {case.name}:"
                        server = with_turn if case.turn else relay_only
                        try:
                            sample = run_once(lab, case, server, src, workdir, send_args, env_extra)
                        except RunFailed as exc:
                            failures[case.name] += 1
                            print(f"{progress} FAILED {exc}", file=sys.stderr, flush=True)
                            continue
                        results[case.name].append(sample)
                        progress += f" {sample.path}, connect {sample.connect_s:.2f} s,"
                        progress += f" {sample.mib_per_s:.1f} MiB/s"
                        print(progress, file=sys.stderr, flush=True)
        except pytest.skip.Exception as exc:  # the lab's own check for its tools
            raise SystemExit(f"scripts/bench --nat: {exc.msg}") from None
    print("\n".join(table(results, failures)))
    if any(failures.values()):
        raise SystemExit(1)
