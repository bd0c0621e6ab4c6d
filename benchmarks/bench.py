"""scripts/bench: how fast sfs moves a file, side by side with what it competes with.

Every run uses real processes on 127.0.0.1: one `sfs serve`, then `sfs receive` and
`sfs send` as separate processes, once per transport (auto, tcp, datachannel); the
raw aiortc DataChannel (two processes, same message size and event loop, no sfs
protocol); optionally magic-wormhole with a local mailbox server and transit relay,
installed by the bench itself.  Runs are interleaved and one table prints the median
of ``--runs`` for each (MiB/s, first byte, peak RSS and CPU of each side, from
wait4()), the ratios, and the single-core limit computed from this machine's own
AES-GCM, SHA-256 and loopback TCP speeds.  ``--plot FILE.png`` draws each one's
throughput over time (matplotlib).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from benchmarks.lan import RECEIVER_ADDRESS as LAN_RECEIVER_ADDRESS
from benchmarks.lan import SENDER_ADDRESS as LAN_SENDER_ADDRESS
from benchmarks.lan import LanPair
from benchmarks.longlink import RECEIVER_ADDRESS, SENDER_ADDRESS, LongLink

MIB = 1024 * 1024
LOOPBACK = "127.0.0.1"
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMG]?)i?B?$", re.IGNORECASE)


def parse_size(text: str) -> int:
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256M or 2G)")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * {"": 1, "K": 1024, "M": MIB, "G": 1024 * MIB}[unit])


@dataclass
class Usage:
    """What one process used, from wait4()."""

    returncode: int
    peak_rss_mib: float
    cpu_seconds: float


@dataclass
class Sample:
    mib_per_s: float
    total_s: float
    first_byte_s: float | None = None
    sides: dict[str, Usage] = field(default_factory=dict)
    #: (seconds since the start, bytes arrived), sampled while it ran (for --plot).
    series: list[tuple[float, int]] = field(default_factory=list)
    #: What it chose, e.g. "4 streams" (sfs over WebRTC with --streams auto).
    note: str = ""


class Sampler:
    """Polls how many bytes have arrived, every ``interval`` seconds, in a thread."""

    def __init__(self, arrived: Callable[[], int], interval: float = 0.05) -> None:
        self.series: list[tuple[float, int]] = []
        self._arrived = arrived
        self._interval = interval
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            # OSError: a file renamed under us: the next poll sees it.
            with contextlib.suppress(OSError):
                self.series.append((time.monotonic() - self._start, self._arrived()))

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join(5)
        return self.series


def data_seconds(series: Sequence[tuple[float, int]], size: int) -> float | None:
    """From the last sample with nothing yet to the first with all of ``size``."""
    start = max((t for t, arrived in series if arrived == 0), default=None)
    end = min((t for t, arrived in series if arrived >= size), default=None)
    if start is None or end is None or end <= start:
        return None
    return end - start


def bytes_in(folder: Path) -> Callable[[], int]:
    """How many bytes the files in ``folder`` hold (hidden partial copies included)."""

    def arrived() -> int:
        return sum(entry.stat().st_size for entry in os.scandir(folder) if entry.is_file())

    return arrived


def wait_usage(process: subprocess.Popen[bytes], timeout: float) -> Usage:
    """Wait for ``process`` and return its own resource usage (not its siblings')."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, rusage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return Usage(
                process.returncode,
                rusage.ru_maxrss / 1024,  # KiB on Linux
                rusage.ru_utime + rusage.ru_stime,
            )
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{process.args!r} did not finish within {timeout:.0f} s")
        time.sleep(0.01)


def _tool(name: str) -> str | None:
    """A command from this virtual environment, else from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


#: What `--compare wormhole` runs, installed by the bench itself into a virtual
#: environment of its own (never into sfs's: twisted and its pins stay apart).
WORMHOLE_PACKAGES = (
    "magic-wormhole",
    "magic-wormhole-mailbox-server",
    "magic-wormhole-transit-relay",
)
COMPARE_VENV = Path(
    os.environ.get("SFS_COMPARE_VENV", Path(__file__).resolve().parents[1] / ".venv-compare")
)


def wormhole_tools() -> Path:
    """The bin folder of a virtual environment with magic-wormhole and its local
    mailbox server and transit relay, made (once) if it is not there yet."""
    bin_dir = COMPARE_VENV / "bin"
    if (bin_dir / "wormhole").exists() and (bin_dir / "twistd").exists():
        return bin_dir
    print(f"installing {', '.join(WORMHOLE_PACKAGES)} into {COMPARE_VENV} …", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(COMPARE_VENV)], check=True, timeout=300)
        subprocess.run(
            [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", *WORMHOLE_PACKAGES],
            check=True,
            timeout=900,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise SystemExit(
            f"could not install {' '.join(WORMHOLE_PACKAGES)} into {COMPARE_VENV}: {exc}"
        ) from None
    return bin_dir


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


@dataclass(frozen=True)
class Placement:
    """Where each side runs: a command prefix (e.g. ``ip netns exec NS``) and the only
    address it offers as ICE host candidate. The server runs beside the sender."""

    sender_prefix: tuple[str, ...] = ()
    receiver_prefix: tuple[str, ...] = ()
    sender_address: str = LOOPBACK
    receiver_address: str = LOOPBACK


LOCAL = Placement()


class SignalServer:
    def __init__(self, workdir: Path, placement: Placement = LOCAL) -> None:
        self.log = workdir / "serve.log"
        serve = ["serve", "--host", placement.sender_address, "--port", "0"]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [*placement.sender_prefix, *python("-m", "sfs", *serve)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            match = re.search(r"listening on (http://\S+)", self.log.read_text())
            if match:
                self.url = match.group(1)
                return
            time.sleep(0.05)
        self.process.kill()
        raise RuntimeError("sfs serve did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _read_code(stdout: IO[bytes], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stdout.readline().decode()
        match = re.search(r"Code: (\S+)", line)
        if match:
            return match.group(1)
    raise RuntimeError("sfs receive printed no code")


def run_sfs(
    server: SignalServer | None,
    src: Path,
    out: Path,
    env: dict[str, str],
    chunk: int | None,
    placement: Placement = LOCAL,
    streams: str = "auto",
    transport: str = "auto",
    relay: str = "auto",
) -> Sample:
    """One `sfs receive` and `sfs send` of ``src``, both with ``--relay RELAY``."""
    for leftover in out.iterdir():
        leftover.unlink()
    # No server: LAN mode, as a user runs it (mDNS, the embedded server, every
    # local address as ICE host candidate).
    lan = server is None
    common = ["-q", "-v"] if server is None else ["--server", server.url, "-q", "-v"]
    receive = ["receive", "--yes", "-o", str(out), "--relay", relay]
    if not lan:
        receive += ["--ice-address", placement.receiver_address]
    receiver_log = out.parent / "receiver.log"
    sender_log = out.parent / "sender.log"
    with open(receiver_log, "wb") as rlog:
        receiver = subprocess.Popen(
            [*placement.receiver_prefix, *python("-m", "sfs", *receive, *common)],
            stdout=subprocess.PIPE,
            stderr=rlog,
            env=env,
        )
    assert receiver.stdout is not None
    code = _read_code(receiver.stdout)
    started = time.time()
    send = ["send", "--streams", streams, "--transport", transport, "--relay", relay]
    if chunk is not None:
        send += ["--chunk-size", str(chunk)]
    if not lan:
        send += ["--ice-address", placement.sender_address]
    with open(sender_log, "wb") as slog:
        sender = subprocess.Popen(
            [*placement.sender_prefix, *python("-m", "sfs", *send, *common, code, str(src))],
            stdout=subprocess.DEVNULL,
            stderr=slog,
            env=env,
        )
    sampler = Sampler(bytes_in(out))
    sender_usage = wait_usage(sender, 3600)
    series = sampler.stop()
    total = time.time() - started
    receiver_usage = wait_usage(receiver, 60)
    if sender_usage.returncode or receiver_usage.returncode:
        raise RuntimeError(
            f"sfs failed:\n{sender_log.read_text()[-2000:]}\n{receiver_log.read_text()[-2000:]}"
        )
    sender_text = sender_log.read_text()
    sent = re.search(r"sent (\d+) bytes in ([\d.]+) s", sender_text)
    first = re.search(r"first data byte at ([\d.]+)", receiver_log.read_text())
    if not sent or not first:
        raise RuntimeError("could not read the timings from the -v logs")
    chosen = re.search(r"(\d+) WebRTC stream", sender_text)
    note = f"WebRTC, {chosen.group(1) if chosen else streams} stream(s)"
    # The chosen TCP connection's route, as sfs.peer.transport.opening logs it.
    route = re.search(r"connected at [\d.]+: (direct over TCP|relayed by (?!TURN )\S+)$",
                      sender_text, re.MULTILINE)  # fmt: skip
    if route:
        note = "TCP" if route.group(1) == "direct over TCP" else route.group(1)
    elif re.search(r"connected at [\d.]+: .*, over QUIC$", sender_text, re.MULTILINE):
        quic = re.search(r"QUIC on (\d+) peer connection", sender_text)
        note = f"WebRTC path, QUIC ×{quic.group(1)}" if quic else "WebRTC path, QUIC"
    return Sample(
        mib_per_s=int(sent.group(1)) / MIB / float(sent.group(2)),
        total_s=total,
        first_byte_s=float(first.group(1)) - started,
        sides={"sender": sender_usage, "receiver": receiver_usage},
        series=series,
        note=note,
    )


def _start_raw_pair(
    size: int,
    message_size: int,
    env: dict[str, str],
    channels: int = 1,
    connections: int = 1,
    placement: Placement | None = None,
    progress: Path | None = None,
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    where = placement or LOCAL
    module = ["-m", "benchmarks.raw_datachannel"]
    stripes = ["--connections", str(connections)]
    offer_args = ["--size", str(size), "--message-size", str(message_size)]
    offer_args += ["--channels", str(channels), "--address", where.sender_address]
    offerer = subprocess.Popen(
        [*where.sender_prefix, *python(*module, "offer", *offer_args, *stripes)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    answer_args = ["--size", str(size), "--address", where.receiver_address]
    if progress is not None:
        answer_args += ["--progress", str(progress)]
    answerer = subprocess.Popen(
        [*where.receiver_prefix, *python(*module, "answer", *answer_args, *stripes)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert offerer.stdin
    assert offerer.stdout
    assert answerer.stdin
    assert answerer.stdout
    answerer.stdin.write(offerer.stdout.readline())
    answerer.stdin.flush()
    offerer.stdin.write(answerer.stdout.readline())
    offerer.stdin.flush()
    return offerer, answerer


def run_raw(
    size: int,
    message_size: int,
    env: dict[str, str],
    *,
    channels: int = 1,
    connections: int = 1,
    processes: int = 1,
    placement: Placement | None = None,
    workdir: Path | None = None,
) -> Sample:
    """The raw ceiling; with ``processes`` > 1, that many pairs share the bytes."""
    started = time.time()
    progress = None if workdir is None or processes > 1 else workdir / "raw-progress"
    if progress is not None:
        progress.write_text("0")
    pairs = [
        _start_raw_pair(
            size // processes, message_size, env, channels, connections, placement, progress
        )
        for _ in range(processes)
    ]
    sampler = None
    if progress is not None:
        path = progress
        sampler = Sampler(lambda: int(path.read_text() or 0))
    elapsed = []
    sides: dict[str, Usage] = {}
    for offerer, answerer in pairs:
        assert offerer.stdout is not None
        elapsed.append(json.loads(offerer.stdout.readline())["elapsed"])
        # With several pairs, each side's figures are summed (RSS and CPU in all).
        for name, usage in (
            ("sender", wait_usage(offerer, 600)),
            ("receiver", wait_usage(answerer, 60)),
        ):
            if name in sides:
                sides[name].peak_rss_mib += usage.peak_rss_mib
                sides[name].cpu_seconds += usage.cpu_seconds
            else:
                sides[name] = usage
    moved = size // processes * processes
    return Sample(
        mib_per_s=moved / MIB / max(elapsed),
        total_s=time.time() - started,
        sides=sides,
        series=sampler.stop() if sampler is not None else [],
    )


def run_wormhole(src: Path, out: Path, relays: WormholeRelays, *, listen: bool = True) -> Sample:
    """magic-wormhole with its own mailbox server and transit relay on 127.0.0.1.
    With ``listen`` False both sides run ``--no-listen``: neither offers a direct
    hint, so the bytes go through the transit relay (the relay row)."""
    for leftover in out.iterdir():
        leftover.unlink()
    mailbox, transit = relays.urls
    wormhole = str(relays.bin / "wormhole")
    common = ["--relay-url", mailbox, "--transit-helper", transit]
    side = ["--hide-progress", *([] if listen else ["--no-listen"])]
    started = time.time()
    sender = subprocess.Popen(
        [wormhole, *common, "send", *side, str(src)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert sender.stdout is not None
    code = ""
    deadline = time.monotonic() + 30
    while not code and time.monotonic() < deadline:
        match = re.search(r"wormhole receive (\S+)", sender.stdout.readline().decode())
        code = match.group(1) if match else ""
    receiver = subprocess.Popen(
        [wormhole, *common, "receive", "--accept-file", *side, code],
        cwd=out,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sampler = Sampler(bytes_in(out))
    receiver_usage = wait_usage(receiver, 3600)
    series = sampler.stop()
    total = time.time() - started
    sender_usage = wait_usage(sender, 60)
    size = src.stat().st_size
    received = out / src.name
    if receiver_usage.returncode or not received.exists() or received.stat().st_size != size:
        raise RuntimeError("magic-wormhole did not deliver the file")
    # Its data phase, as sfs's figure is (first byte to last; sfs's own counts from
    # the offer's acceptance to the last acknowledgement, fsync included): from the
    # arrivals sampled every 50 ms. The whole job's time is the "wall" column.
    data_phase = data_seconds(series, size)
    return Sample(
        mib_per_s=size / MIB / (data_phase or total),
        total_s=total,
        sides={"sender": sender_usage, "receiver": receiver_usage},
        series=series,
    )


class WormholeRelays:
    """A local mailbox server and transit relay (magic-wormhole-mailbox-server,
    magic-wormhole-transit-relay), so no traffic leaves 127.0.0.1."""

    def __init__(self, workdir: Path) -> None:
        self.bin = wormhole_tools()
        services = (("mailbox", "wormhole-mailbox", 4000), ("transit", "transitrelay", 4001))
        self.processes = [
            subprocess.Popen(
                [
                    str(self.bin / "twistd"),
                    "-n",
                    "--pidfile",
                    str(workdir / f"{name}.pid"),
                    plugin,
                    "--port",
                    f"tcp:{port}:interface=127.0.0.1",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=workdir,
            )
            for name, plugin, port in services
        ]
        time.sleep(3)
        self.urls = ("ws://127.0.0.1:4000/v1", "tcp:127.0.0.1:4001")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(10)


@dataclass(frozen=True)
class Limits:
    """What one core of this machine does per second (MiB/s), measured here."""

    aes_gcm: float  # sealing frames of the chunk size with sfs's own FrameSealer
    sha256: float  # hashlib, 1 MiB blocks
    tcp: float  # loopback TCP, one thread at each end, 1 MiB writes

    @property
    def single_core(self) -> float:
        """A side that hashes, seals (or opens) and moves every byte on one core."""
        return 1 / (1 / self.aes_gcm + 1 / self.sha256 + 1 / self.tcp)


def _rate(step: Callable[[], int], seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += step()
    return done / MIB / (time.perf_counter() - start)


def micro_limits(chunk: int, seconds: float = 1.0) -> Limits:
    import hashlib

    from sfs.peer.proto.crypto import FrameSealer
    from sfs.peer.proto.wire import FrameType

    block = os.urandom(MIB)
    payload = block[:chunk]
    sealer = FrameSealer(os.urandom(32))
    aes = _rate(lambda: len(sealer.seal(FrameType.CHUNK, payload)) and len(payload), seconds)
    digest = hashlib.sha256()

    def hash_block() -> int:
        digest.update(block)
        return len(block)

    sha = _rate(hash_block, seconds)

    server = socket.create_server((LOOPBACK, 0))
    port = server.getsockname()[1]

    def drain() -> None:
        connection, _ = server.accept()
        buffer = bytearray(MIB)
        with connection:
            while connection.recv_into(buffer):
                pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    with socket.create_connection((LOCAL.sender_address, port)) as client:

        def send_block() -> int:
            client.sendall(block)
            return len(block)

        tcp = _rate(send_block, seconds)
    reader.join(10)
    server.close()
    return Limits(aes, sha, tcp)


def median(samples: Sequence[Sample], get: Callable[[Sample], float | None]) -> float:
    values = [v for v in (get(s) for s in samples) if v is not None]
    return statistics.median(values) if values else float("nan")


def _fmt(value: float, spec: str) -> str:
    return "–" if math.isnan(value) else format(value, spec)


def table(results: dict[str, list[Sample]]) -> list[str]:
    """One row per contender: medians, and every run's MiB/s."""
    rows = [
        "| | MiB/s | first byte | wall | RSS send / recv | CPU send / recv | path | runs (MiB/s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, samples in results.items():
        if not samples:
            continue

        def side(side: str, what: str, samples: list[Sample] = samples) -> float:
            return median(samples, lambda sample: float(getattr(sample.sides[side], what)))

        notes = sorted({s.note for s in samples if s.note})
        rows.append(
            f"| {name} | {median(samples, lambda s: s.mib_per_s):.1f} "
            f"| {_fmt(median(samples, lambda s: s.first_byte_s), '.2f')} s "
            f"| {median(samples, lambda s: s.total_s):.1f} s "
            f"| {side('sender', 'peak_rss_mib'):.0f} / {side('receiver', 'peak_rss_mib'):.0f} MiB "
            f"| {side('sender', 'cpu_seconds'):.1f} / {side('receiver', 'cpu_seconds'):.1f} s "
            f"| {', '.join(notes) or '–'} "
            f"| {', '.join(f'{s.mib_per_s:.1f}' for s in samples)} |"
        )
    return rows


def goal_line(label: str, value: float, goal: float) -> str | None:
    """``label: value (goal ≥ goal: met|NOT met)``; None when a side was not measured."""
    if math.isnan(value):
        return None
    verdict = "met" if value >= goal else "NOT met"
    return f"{label}: {value:.2f} (goal ≥ {goal}: {verdict})"


def ratios(
    results: dict[str, list[Sample]], limits: Limits | None, *, long_link: bool = False
) -> list[str]:
    """The ratios the goals are stated in, each with its goal and whether it is met."""

    def speed(name: str) -> float:
        return median(results.get(name, []), lambda s: s.mib_per_s)

    lines = []

    def check(label: str, value: float, goal: float) -> None:
        line = goal_line(label, value, goal)
        if line is not None:
            lines.append(line)

    check("sfs auto / magic-wormhole", speed(AUTO) / speed(WORMHOLE), 1.5)
    # Issue 25: sfs serve's relay at least as fast as magic-wormhole's transit relay.
    check("sfs relay / magic-wormhole relay", speed(RELAY) / speed(WORMHOLE_RELAY), 1.0)
    if limits is not None:
        check("sfs auto / single-core limit", speed(AUTO) / limits.single_core, 0.5)
    # Issue 26: the WebRTC path at least 1.5x raw aiortc on 127.0.0.1; on the 50 ms
    # link 3x, and 30 MiB/s.
    check(
        "sfs datachannel / raw aiortc", speed(DATACHANNEL) / speed(RAW), 3.0 if long_link else 1.5
    )
    if not long_link:
        return lines
    check("sfs datachannel, MiB/s", speed(DATACHANNEL), 30.0)
    # The first-byte goal is the 50 ms link's (on 127.0.0.1 the table shows it plainly).
    for name in (AUTO, TCP, DATACHANNEL):
        first = median(results.get(name, []), lambda s: s.first_byte_s)
        if not math.isnan(first):
            verdict = "met" if first <= 1.0 else "NOT met"
            lines.append(f"first byte, {name}: {first:.2f} s (goal ≤ 1.0 s: {verdict})")
    return lines


def plot(results: dict[str, list[Sample]], path: Path, title: str) -> None:
    """Throughput over time of each contender's median run (0.25 s windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5), dpi=110)
    for name, samples in results.items():
        runs = sorted((s for s in samples if len(s.series) > 2), key=lambda s: s.mib_per_s)
        if not runs:
            continue
        series = runs[len(runs) // 2].series
        times, rates = [], []
        j = 0
        for i, (t, arrived) in enumerate(series):
            while series[j][0] < t - 0.25:
                j += 1
            if i > j:
                times.append(t)
                rates.append((arrived - series[j][1]) / MIB / (t - series[j][0]))
        axes.plot(times, rates, label=name, linewidth=1.5)
    axes.set_xlabel("seconds since the sender started")
    axes.set_ylabel("MiB/s arriving (0.25 s window)")
    axes.set_title(textwrap.fill(title, 100), fontsize=9)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


AUTO, TCP, DATACHANNEL = "sfs auto", "sfs --transport tcp", "sfs --transport datachannel"
RAW, WORMHOLE = "raw aiortc DataChannel", "magic-wormhole (direct TCP)"
#: With --compare wormhole: each one's relay on 127.0.0.1 (issue 25).
RELAY = "sfs --relay only (sfs serve's relay)"
WORMHOLE_RELAY = "magic-wormhole --no-listen (transit relay)"
SFS_CONTENDERS = {AUTO: "auto", TCP: "tcp", DATACHANNEL: "datachannel"}


#: What `--startup` times: the commands that must answer at once.
STARTUP_COMMANDS = (("--version",), ("--help",), ("send", "--help"), ("receive", "--help"))


def startup_times(runs: int) -> list[str]:
    """Wall time of ``sfs --version`` and ``--help`` as a user runs them (the installed
    ``sfs`` script, a fresh process each time), median and slowest of ``runs``, beside
    the interpreter's own start as the floor."""
    script = Path(sys.executable).with_name("sfs")
    command_line = [str(script)] if script.exists() else [sys.executable, "-m", "sfs"]
    cases = [("python -c pass (the floor)", [sys.executable, "-c", "pass"])]
    cases += [(f"sfs {' '.join(args)}", [*command_line, *args]) for args in STARTUP_COMMANDS]
    lines = [f"start-up ({runs} runs each: median / slowest):"]
    for label, argv in cases:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - started)
        lines.append(f"  {label:<28} {statistics.median(times) * 1000:6.0f} ms / "
                     f"{max(times) * 1000:4.0f} ms")  # fmt: skip
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.startup:
        print("\n".join(startup_times(max(args.runs, 10))))
        return
    _check_args(parser, args)
    if args.size is None and not args.browser and not args.many:
        args.size = 32 * MIB if args.nat else 256 * MIB

    from sfs.defaults import DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES

    chunk = args.chunk_size or DEFAULT_CHUNK_BYTES  # for raw, --nat and --tree
    sfs_chunk = args.chunk_size  # None: each transport's own default
    env = dict(os.environ)
    if args.loop == "asyncio":
        env["SFS_EVENT_LOOP"] = "asyncio"
    env.pop("SFS_DEBUG", None)
    from sfs.commands.running import event_loop_factory

    loop_name = "asyncio" if args.loop == "asyncio" or event_loop_factory() is None else "uvloop"
    if args.nat:
        _run_nat(args, chunk, loop_name)
        return
    if args.browser:
        _run_browser(args, loop_name)
        return
    if args.many:
        from benchmarks.many import run_many

        run_many(args.size or 64 * MIB, args.runs, args.many, env, loop_name)
        return
    if args.tree:
        from benchmarks.tree import run_tree

        run_tree(args.runs, chunk, args.streams, env, loop_name)
        return
    where = "long link (2 namespaces, 1 Gbit, 25 ms each way)" if args.long_link else LOOPBACK
    if args.loss:
        where += f", {args.loss:g} % of UDP packets lost"
    if args.lan:
        where = "LAN mode, no server (2 namespaces on a veth pair, mDNS)"
        env.pop("SFS_SERVER", None)
        env.pop("SFS_ICE_ADDRESSES", None)
    title = (
        f"sfs benchmark on {where}: {args.size / MIB:.0f} MiB file, {args.runs} runs, "
        f"chunk {sfs_chunk or f'{DEFAULT_CHUNK_BYTES} B (WebRTC) / {MAX_CHUNK_BYTES} B (TCP)'}, "
        f"--streams {args.streams}, "
        f"{loop_name}; {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    print(title, flush=True)
    print("\n".join(startup_times(5)), flush=True)
    transports = set(args.transport) or set(SFS_CONTENDERS.values())
    if args.lan:
        transports &= {"auto"}  # mDNS and LAN mode as users run them
    results, on_loopback = _measure(args, env, chunk, sfs_chunk, transports)
    _report(
        results,
        (sfs_chunk or MAX_CHUNK_BYTES) if on_loopback else None,
        args.plot,
        title,
        # The goals are stated for the clean long link, not a lossy one.
        long_link=args.long_link and not args.loss,
    )


def _measure(
    args: argparse.Namespace,
    env: dict[str, str],
    chunk: int,
    sfs_chunk: int | None,
    transports: set[str],
) -> tuple[dict[str, list[Sample]], bool]:
    """Every contender's samples, run after run, and whether they ran on loopback
    (no --long-link, no --lan)."""
    with tempfile.TemporaryDirectory(prefix="sfs-bench-") as tmp:
        workdir = Path(tmp)
        src = workdir / "src.bin"
        with open(src, "wb") as f:
            for _ in range(0, args.size, MIB):
                f.write(os.urandom(min(MIB, args.size - f.tell())))
        out = workdir / "out"
        out.mkdir()
        link, placement = _open_link(args)
        # Every early exit ends what was started: the relays come first (installing
        # magic-wormhole may fail), and one stack stops them all.
        started = contextlib.ExitStack()
        if link is not None:
            started.callback(link.__exit__, None, None, None)
        relays = None
        server = None
        try:
            if "wormhole" in args.compare:
                relays = WormholeRelays(workdir)
                started.callback(relays.stop)
            if not args.lan:
                server = SignalServer(workdir, placement)
                started.callback(server.stop)
        except BaseException:
            started.close()
            raise
        results = _contenders(args, transports)
        stripes = _stripes(args.stripe)
        for name in stripes:
            results[name] = []
        if relays is not None:
            results[WORMHOLE] = []
            if server is not None:
                results[RELAY] = []
            results[WORMHOLE_RELAY] = []
        try:
            for run in range(args.runs):
                for name, transport in SFS_CONTENDERS.items():
                    if name in results:
                        results[name].append(
                            run_sfs(
                                server, src, out, env, sfs_chunk, placement, args.streams, transport
                            )
                        )
                if not args.no_raw:
                    results[RAW].append(
                        run_raw(args.size, chunk + 28, env, placement=placement, workdir=workdir)
                    )
                for name, layout in stripes.items():
                    results[name].append(
                        run_raw(args.size, chunk + 28, env, placement=placement, **layout)
                    )
                if relays is not None:
                    _compare_wormhole(results, relays, server, src, out, env, sfs_chunk, placement)
                print(f"  run {run + 1}/{args.runs} done", file=sys.stderr, flush=True)
        finally:
            started.close()
    return results, link is None


def _compare_wormhole(
    results: dict[str, list[Sample]],
    relays: WormholeRelays,
    server: SignalServer | None,
    src: Path,
    out: Path,
    env: dict[str, str],
    sfs_chunk: int | None,
    placement: Placement,
) -> None:
    """One run of magic-wormhole as it chooses (direct), then of each one's relay:
    `sfs serve`'s (``--relay only``) and magic-wormhole's transit relay."""
    results[WORMHOLE].append(run_wormhole(src, out, relays))
    if server is not None:
        results[RELAY].append(run_sfs(server, src, out, env, sfs_chunk, placement, relay="only"))
    results[WORMHOLE_RELAY].append(run_wormhole(src, out, relays, listen=False))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument(
        "--size",
        type=parse_size,
        default=None,
        help="file size (256M; with --nat 32M, as every run there is five transfers)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each (median shown)")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="sfs --chunk-size (default: sfs's own, per transport) and the raw message size",
    )
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio"],
        default="auto",
        help="event loop for both sfs and raw (auto: uvloop when installed)",
    )
    parser.add_argument(
        "--compare",
        choices=["wormhole"],
        action="append",
        default=[],
        help="also magic-wormhole (installed into .venv-compare), as it chooses and "
        "forced through its transit relay (--no-listen), beside sfs --relay only",
    )
    parser.add_argument(
        "--long-link",
        action="store_true",
        help="run the peers in two network namespaces joined by a 1 Gbit veth pair with "
        "25 ms of delay each way on every packet (root; builds "
        "benchmarks/longlink/nfqdelay.c); --streams auto picks the WebRTC streams",
    )
    parser.add_argument(
        "--loss",
        type=float,
        default=0.0,
        help="with --long-link: drop this percentage of the UDP packets arriving on "
        "either side (iptables statistic), e.g. 1",
    )
    parser.add_argument(
        "--lan",
        action="store_true",
        help="LAN mode: no `sfs serve`; the peers in two network namespaces on a veth "
        "pair find each other by mDNS (root). The first-byte figure is the time from "
        "starting `sfs send` to the receiver's first file byte",
    )
    parser.add_argument(
        "--nat",
        action="store_true",
        help="the NAT matrix (root; tests/integration/nat.py's lab, coturn and sfs serve): "
        "connect time (starting `sfs send` to its connection, median) and MiB/s for "
        "each case (WebRTC with --relay never; both symmetric also relayed by sfs serve, "
        "no coturn); sfs only",
    )
    parser.add_argument(
        "--tree",
        action="store_true",
        help="many small files (benchmarks/tree.py): 10 000 × 4 KiB and this checkout's "
        "source, each as a folder and as one tar stream, with and without compression; "
        "files/s, MiB/s and peak RSS on 127.0.0.1",
    )
    parser.add_argument(
        "--browser",
        action="store_true",
        help="the browser page (benchmarks/browser.py; root, Debian chromium, playwright): "
        "page → CLI, CLI → page, page → page and CLI ↔ CLI over the DataChannel in one "
        "namespace (tests/integration/web.py's lab); --size 64M unless given",
    )
    parser.add_argument(
        "--many",
        type=int,
        default=0,
        metavar="N",
        help="one `sfs send --many N` to N receivers at once, beside one receiver "
        "(`--print-code`, `--many 1`), on 127.0.0.1 (benchmarks/many.py; --size 64M unless "
        "given): each receiver's rate, all together, the sender's CPU and peak RSS",
    )
    parser.add_argument("--no-raw", action="store_true", help="skip the raw ceiling")
    parser.add_argument(
        "--startup",
        action="store_true",
        help="only time `sfs --version` and `--help` (10 runs each, or --runs if more); "
        "every other bench prints them too, after its title",
    )
    parser.add_argument("--streams", default="auto", help="sfs send --streams auto|N (for WebRTC)")
    parser.add_argument(
        "--transport",
        choices=sorted(SFS_CONTENDERS.values()),
        action="append",
        default=[],
        help="measure sfs with only this --transport (repeatable; default: all three)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="FILE.png",
        help="draw each one's throughput over time (its median run) into FILE.png",
    )
    parser.add_argument(
        "--stripe",
        type=int,
        default=0,
        metavar="N",
        help="also measure raw striping over N channels, N connections, N process pairs",
    )
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The combinations that make no sense, refused before anything starts."""
    if args.tree and (args.lan or args.long_link or args.nat):
        parser.error("--tree runs on 127.0.0.1 only: no --lan, --long-link or --nat")
    if args.tree and (args.size is not None or args.compare or args.stripe):
        parser.error("--tree has its own data sets: no --size, --compare or --stripe")
    if args.many and (args.lan or args.long_link or args.nat or args.tree or args.browser):
        parser.error("--many runs on 127.0.0.1 only")
    if args.loss and not args.long_link:
        parser.error("--loss needs --long-link")
    if args.lan and args.long_link:
        parser.error("--lan and --long-link exclude each other")
    if args.nat and (args.lan or args.long_link):
        parser.error("--nat excludes --lan and --long-link")
    if args.browser and (args.lan or args.long_link or args.nat or args.tree or args.compare):
        parser.error("--browser runs in its own namespace: no --lan, --long-link, --nat, "
                     "--tree or --compare")  # fmt: skip


def _run_nat(args: argparse.Namespace, chunk: int, loop_name: str) -> None:
    if os.geteuid() != 0:
        raise SystemExit("scripts/bench --nat needs root (network namespaces, iptables)")
    try:
        from benchmarks.nat import run_nat
    except ModuleNotFoundError as exc:  # the lab is the test suite's
        raise SystemExit(
            f"scripts/bench --nat needs {exc.name}: pip install -e '.[test]'"
        ) from None
    title = (
        f"sfs NAT matrix benchmark (tests/integration/nat.py: namespaces, coturn, "
        f"sfs serve's relay): "
        f"{args.size / MIB:.0f} MiB file, {args.runs} runs, chunk {chunk} B, "
        f"{args.streams} stream(s), {loop_name}; {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}"
    )
    loop_env = {"SFS_EVENT_LOOP": "asyncio"} if args.loop == "asyncio" else {}
    run_nat(args.size, args.runs, chunk, args.streams, loop_env, title)


def _run_browser(args: argparse.Namespace, loop_name: str) -> None:
    from benchmarks.browser import run_browser

    size = args.size if args.size is not None else 64 * MIB
    title = (
        f"sfs browser benchmark (tests/integration/web.py's lab: one namespace, sfs serve, "
        f"headless Chromium): {size / MIB:.0f} MiB file, {args.runs} runs, CLI on "
        f"{loop_name}; {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    run_browser(size, args.runs, title)


def _open_link(args: argparse.Namespace) -> tuple[LongLink | LanPair | None, Placement]:
    """The two namespaces of --long-link or --lan, entered, and where each side runs."""
    link: LongLink | LanPair | None = None
    placement = LOCAL
    if args.long_link:
        link = LongLink(loss_percent=args.loss)
        addresses = (SENDER_ADDRESS, RECEIVER_ADDRESS)
    elif args.lan:
        link = LanPair()
        addresses = (LAN_SENDER_ADDRESS, LAN_RECEIVER_ADDRESS)
    if link is not None:
        link.__enter__()
        placement = Placement(
            tuple(link.prefix("sender")), tuple(link.prefix("receiver")), *addresses
        )
    return link, placement


def _contenders(args: argparse.Namespace, transports: set[str]) -> dict[str, list[Sample]]:
    """An empty list of samples for each sfs transport measured, and the raw ceiling."""
    results: dict[str, list[Sample]] = {
        name: [] for name, transport in SFS_CONTENDERS.items() if transport in transports
    }
    if not args.no_raw:
        results[RAW] = []
    return results


def _stripes(count: int) -> dict[str, dict[str, Any]]:
    """The raw striping layouts of --stripe N (none for N < 2)."""
    if count <= 1:
        return {}
    return {
        f"raw {count} channels": {"channels": count},
        f"raw {count} connections": {"connections": count},
        f"raw {count} processes": {"processes": count},
    }


def _report(
    results: dict[str, list[Sample]],
    limits_chunk: int | None,
    plot_path: Path | None,
    title: str,
    *,
    long_link: bool = False,
) -> None:
    """The table, the micro-limits (on loopback only: *limits_chunk* None elsewhere),
    the ratios and the plot."""
    limits = None if limits_chunk is None else micro_limits(limits_chunk)
    print("\n".join(table(results)))
    if limits is not None:
        print(
            f"micro-limits, one core: AES-256-GCM {limits.aes_gcm:.0f} MiB/s, SHA-256 "
            f"{limits.sha256:.0f} MiB/s, loopback TCP {limits.tcp:.0f} MiB/s: a side that "
            f"does all three for every byte moves at most {limits.single_core:.0f} MiB/s"
        )
    print("\n".join(ratios(results, limits, long_link=long_link)))
    if plot_path is not None:
        plot(results, plot_path, title)
        print(f"throughput over time: {plot_path}")


if __name__ == "__main__":
    main()
