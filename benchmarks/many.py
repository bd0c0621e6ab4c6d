"""`scripts/bench --many`: one `sfs send` to several receivers at once (issue 30), on
127.0.0.1 through a real `sfs serve`, against the same file sent to one receiver.

Each run, interleaved: `sfs send --print-code` to one receiver (the baseline), `sfs
send --many 1` to one (what the lobby costs), and `sfs send --many N` to N receivers
that start at once.  Figures: each receiver's rate (the median of the receivers'
`done` rates), the rate of all of them together (N × size over the longest
receiver's time), and the sender's CPU time and peak RSS (one process serves all).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench import LOOPBACK, MIB, SignalServer, python, wait_usage


@dataclass(frozen=True)
class ManyRun:
    each_mib_s: float
    together_mib_s: float
    sender_cpu_s: float
    sender_rss_mib: float


def _one(server: SignalServer, src: Path, work: Path, env: dict[str, str], many: int) -> ManyRun:
    """One sender (``--many MANY``, or 0: ``--print-code``) and as many receivers at once."""
    common = ["--server", server.url, "--ice-address", LOOPBACK, "--transport", "tcp", "--json"]
    flag = ["--print-code"] if many == 0 else ["--many", str(many)]
    sender = subprocess.Popen(
        python("-m", "sfs", "send", *common, *flag, str(src)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert sender.stdout is not None
    first = json.loads(sender.stdout.readline() or b"{}")
    if first.get("type") != "code":
        sender.kill()
        raise RuntimeError(f"sfs send printed no code: {first}")
    receivers = []
    for k in range(max(many, 1)):
        out = work / f"out{k}"
        out.mkdir()
        receivers.append(
            subprocess.Popen(
                python("-m", "sfs", "receive", "--yes", "-o", str(out), *common, first["code"]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        )
    lines = sender.stdout.read().decode().splitlines()
    usage = wait_usage(sender, 3600)
    codes = [wait_usage(r, 60).returncode for r in receivers]
    if usage.returncode or any(codes):
        raise RuntimeError(f"sfs failed: sender {usage.returncode}, receivers {codes}")
    dones = [e for e in map(json.loads, lines) if e["type"] == "done"]
    size = src.stat().st_size
    return ManyRun(
        each_mib_s=statistics.median(d["rate"] for d in dones) / MIB,
        together_mib_s=len(dones) * size / max(d["seconds"] for d in dones) / MIB,
        sender_cpu_s=usage.cpu_seconds,
        sender_rss_mib=usage.peak_rss_mib,
    )


def run_many(size: int, runs: int, receivers: int, env: dict[str, str], loop_name: str) -> None:
    counts = {"--print-code (1 receiver)": 0, "--many 1": 1, f"--many {receivers}": receivers}
    print(
        f"sfs send --many on {LOOPBACK} through sfs serve: {size / MIB:.0f} MiB file, direct "
        f"TCP, {runs} runs (medians), {loop_name}; the rows interleaved in each run",
        flush=True,
    )
    results: dict[str, list[ManyRun]] = {name: [] for name in counts}
    with tempfile.TemporaryDirectory(prefix="sfs-bench-many-") as tmp:
        root = Path(tmp)
        src = root / "src.bin"
        with open(src, "wb") as f:
            for _ in range(size // MIB):
                f.write(os.urandom(MIB))
        server = SignalServer(root)
        try:
            for run in range(runs):
                for name, many in counts.items():
                    work = root / f"run{run}-{many}"
                    work.mkdir()
                    results[name].append(_one(server, src, work, env, many))
                    for out in work.iterdir():
                        for file in out.iterdir():
                            file.unlink()
        finally:
            server.stop()
    print(f"{'':28}{'each MiB/s':>12}{'together MiB/s':>16}{'sender CPU s':>14}"
          f"{'sender RSS MiB':>16}")  # fmt: skip
    for name, samples in results.items():
        print(
            f"{name:28}"
            f"{statistics.median(s.each_mib_s for s in samples):12.0f}"
            f"{statistics.median(s.together_mib_s for s in samples):16.0f}"
            f"{statistics.median(s.sender_cpu_s for s in samples):14.2f}"
            f"{statistics.median(s.sender_rss_mib for s in samples):16.0f}"
        )
