"""scripts/bench: how fast sfs moves a file, and how close that is to aiortc's ceiling.

Every run uses real processes on 127.0.0.1: one `sfs serve`, then `sfs receive` and
`sfs send` as separate processes; then the raw aiortc DataChannel (two processes,
same message size and event loop, no sfs protocol); optionally magic-wormhole with a
local mailbox server and transit relay.  Runs are interleaved and the median of
``--runs`` is printed, with peak RSS and CPU seconds of each side (from wait4()).
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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

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
    chunk: int,
    placement: Placement = LOCAL,
    streams: int = 1,
) -> Sample:
    for leftover in out.iterdir():
        leftover.unlink()
    # No server: LAN mode, as a user runs it (mDNS, the embedded server, every
    # local address as ICE host candidate).
    lan = server is None
    common = ["-q", "-v"] if server is None else ["--server", server.url, "-q", "-v"]
    receive = ["receive", "--yes", "-o", str(out)]
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
    send = ["send", "--chunk-size", str(chunk), "--streams", str(streams)]
    if not lan:
        send += ["--ice-address", placement.sender_address]
    with open(sender_log, "wb") as slog:
        sender = subprocess.Popen(
            [*placement.sender_prefix, *python("-m", "sfs", *send, *common, code, str(src))],
            stdout=subprocess.DEVNULL,
            stderr=slog,
            env=env,
        )
    sender_usage = wait_usage(sender, 3600)
    total = time.time() - started
    receiver_usage = wait_usage(receiver, 60)
    if sender_usage.returncode or receiver_usage.returncode:
        raise RuntimeError(
            f"sfs failed:\n{sender_log.read_text()[-2000:]}\n{receiver_log.read_text()[-2000:]}"
        )
    sent = re.search(r"sent (\d+) bytes in ([\d.]+) s", sender_log.read_text())
    first = re.search(r"first data byte at ([\d.]+)", receiver_log.read_text())
    if not sent or not first:
        raise RuntimeError("could not read the timings from the -v logs")
    return Sample(
        mib_per_s=int(sent.group(1)) / MIB / float(sent.group(2)),
        total_s=total,
        first_byte_s=float(first.group(1)) - started,
        sides={"sender": sender_usage, "receiver": receiver_usage},
    )


def _start_raw_pair(
    size: int,
    message_size: int,
    env: dict[str, str],
    channels: int = 1,
    connections: int = 1,
    placement: Placement | None = None,
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
    answerer = subprocess.Popen(
        [*where.receiver_prefix, *python(*module, "answer", *answer_args, *stripes)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert offerer.stdin and offerer.stdout and answerer.stdin and answerer.stdout
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
) -> Sample:
    """The raw ceiling; with ``processes`` > 1, that many pairs share the bytes."""
    started = time.time()
    pairs = [
        _start_raw_pair(size // processes, message_size, env, channels, connections, placement)
        for _ in range(processes)
    ]
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
    return Sample(mib_per_s=moved / MIB / max(elapsed), total_s=time.time() - started, sides=sides)


def run_wormhole(src: Path, out: Path, relays: WormholeRelays) -> Sample:
    """magic-wormhole with its own mailbox server and transit relay on 127.0.0.1."""
    for leftover in out.iterdir():
        leftover.unlink()
    mailbox, transit = relays.urls
    wormhole = str(relays.bin / "wormhole")
    common = ["--relay-url", mailbox, "--transit-helper", transit]
    started = time.time()
    sender = subprocess.Popen(
        [wormhole, *common, "send", "--hide-progress", str(src)],
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
        [wormhole, *common, "receive", "--accept-file", "--hide-progress", code],
        cwd=out,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    receiver_usage = wait_usage(receiver, 3600)
    total = time.time() - started
    sender_usage = wait_usage(sender, 60)
    size = src.stat().st_size
    received = out / src.name
    if receiver_usage.returncode or not received.exists() or received.stat().st_size != size:
        raise RuntimeError("magic-wormhole did not deliver the file")
    return Sample(
        mib_per_s=size / MIB / total,
        total_s=total,
        sides={"sender": sender_usage, "receiver": receiver_usage},
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


def crypto_seconds(src: Path, chunk: int) -> tuple[float, float]:
    """CPU seconds that SHA-256 plus AES-GCM take for ``src`` on each side, measured
    here with sfs's own frame sealer and opener, chunk by chunk as in a transfer."""
    import hashlib

    from sfs.peer.crypto import FrameOpener, FrameSealer
    from sfs.peer.protocol import FrameType

    key = os.urandom(32)
    frames = []
    sealer = FrameSealer(key)
    start = time.process_time()
    digest = hashlib.sha256()
    with open(src, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
            frames.append(sealer.seal(FrameType.CHUNK, block))
            if len(frames) > 64:  # keep memory flat: time only, frames are dropped
                frames.clear()
    sender = time.process_time() - start
    sealer = FrameSealer(key)
    opener = FrameOpener(key)
    receiver = 0.0
    with open(src, "rb") as f:
        while block := f.read(chunk):
            frame = sealer.seal(FrameType.CHUNK, block)
            start = time.process_time()
            _, plain = opener.open(frame)
            hashlib.sha256().update(plain)
            receiver += time.process_time() - start
    return sender, receiver


def median(samples: Sequence[Sample], get: Callable[[Sample], float | None]) -> float:
    values = [v for v in (get(s) for s in samples) if v is not None]
    return statistics.median(values) if values else float("nan")


def report(name: str, samples: list[Sample]) -> list[str]:
    first_byte = median(samples, lambda s: s.first_byte_s)
    rows = [
        name,
        f"  {median(samples, lambda s: s.mib_per_s):6.1f} MiB/s"
        + (f"  first byte {first_byte:5.2f} s" if not math.isnan(first_byte) else "")
        + f"  total {median(samples, lambda s: s.total_s):6.2f} s"
        + f"  (runs: {', '.join(f'{s.mib_per_s:.1f}' for s in samples)})",
    ]
    for side in ("sender", "receiver"):
        rss = median(samples, lambda s, side=side: s.sides[side].peak_rss_mib)  # type: ignore[misc]
        cpu = median(samples, lambda s, side=side: s.sides[side].cpu_seconds)  # type: ignore[misc]
        rows.append(f"  {side:<8} peak RSS {rss:6.1f} MiB  CPU {cpu:6.2f} s")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument(
        "--size",
        type=parse_size,
        default=None,
        help="file size (256M; with --nat 32M, as every run there is five transfers)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each (median shown)")
    parser.add_argument("--chunk-size", type=int, default=None, help="sfs --chunk-size")
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio"],
        default="auto",
        help="event loop for both sfs and raw (auto: uvloop when installed)",
    )
    parser.add_argument("--compare", choices=["wormhole"], action="append", default=[])
    parser.add_argument(
        "--long-link",
        action="store_true",
        help="run the peers in two network namespaces joined by a 1 Gbit veth pair with "
        "25 ms of delay each way (root; builds benchmarks/longlink/nfqdelay.c)",
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
        "connect time (starting `sfs send` to its DataChannel open, median) and MiB/s for "
        "each case; sfs only",
    )
    parser.add_argument(
        "--tree",
        action="store_true",
        help="many small files (benchmarks/tree.py): 10 000 × 4 KiB and this checkout's "
        "source, each as a folder and as one tar stream, with and without compression; "
        "files/s, MiB/s and peak RSS on 127.0.0.1",
    )
    parser.add_argument("--no-raw", action="store_true", help="skip the raw ceiling")
    parser.add_argument("--streams", type=int, default=1, help="sfs send --streams N")
    parser.add_argument(
        "--stripe",
        type=int,
        default=0,
        metavar="N",
        help="also measure raw striping over N channels, N connections, N process pairs",
    )
    args = parser.parse_args(argv)
    if args.tree and (args.lan or args.long_link or args.nat):
        parser.error("--tree runs on 127.0.0.1 only: no --lan, --long-link or --nat")
    if args.tree and (args.size is not None or args.compare or args.stripe):
        parser.error("--tree has its own data sets: no --size, --compare or --stripe")
    if args.size is None:
        args.size = 32 * MIB if args.nat else 256 * MIB

    from sfs.peer.protocol import DEFAULT_CHUNK_BYTES

    chunk = args.chunk_size or DEFAULT_CHUNK_BYTES
    env = dict(os.environ)
    if args.loop == "asyncio":
        env["SFS_EVENT_LOOP"] = "asyncio"
    env.pop("SFS_DEBUG", None)
    from sfs.cli import event_loop_factory

    loop_name = "asyncio" if args.loop == "asyncio" or event_loop_factory() is None else "uvloop"
    if args.lan and args.long_link:
        parser.error("--lan and --long-link exclude each other")
    if args.nat:
        if args.lan or args.long_link:
            parser.error("--nat excludes --lan and --long-link")
        if os.geteuid() != 0:
            raise SystemExit("scripts/bench --nat needs root (network namespaces, iptables)")
        try:
            from benchmarks.nat import run_nat
        except ModuleNotFoundError as exc:  # the lab is the test suite's
            raise SystemExit(
                f"scripts/bench --nat needs {exc.name}: pip install -e '.[test]'"
            ) from None
        title = (
            f"sfs NAT matrix benchmark (tests/integration/nat.py: namespaces, coturn): "
            f"{args.size / MIB:.0f} MiB file, {args.runs} runs, chunk {chunk} B, "
            f"{args.streams} stream(s), {loop_name}; {platform.python_implementation()} "
            f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}"
        )
        loop_env = {"SFS_EVENT_LOOP": "asyncio"} if args.loop == "asyncio" else {}
        run_nat(args.size, args.runs, chunk, args.streams, loop_env, title)
        return
    if args.tree:
        from benchmarks.tree import run_tree

        run_tree(args.runs, chunk, args.streams, env, loop_name)
        return
    where = "long link (2 namespaces, 1 Gbit, 25 ms each way)" if args.long_link else LOOPBACK
    if args.lan:
        where = "LAN mode, no server (2 namespaces on a veth pair, mDNS)"
        env.pop("SFS_SERVER", None)
        env.pop("SFS_ICE_ADDRESSES", None)
    print(
        f"sfs benchmark on {where}: {args.size / MIB:.0f} MiB file, {args.runs} runs, "
        f"chunk {chunk} B, {args.streams} stream(s), "
        f"{loop_name}; {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="sfs-bench-") as tmp:
        workdir = Path(tmp)
        src = workdir / "src.bin"
        with open(src, "wb") as f:
            for _ in range(0, args.size, MIB):
                f.write(os.urandom(min(MIB, args.size - f.tell())))
        out = workdir / "out"
        out.mkdir()
        link: LongLink | LanPair | None = None
        placement = LOCAL
        if args.long_link:
            link = LongLink()
            addresses = (SENDER_ADDRESS, RECEIVER_ADDRESS)
        elif args.lan:
            link = LanPair()
            addresses = (LAN_SENDER_ADDRESS, LAN_RECEIVER_ADDRESS)
        if link is not None:
            link.__enter__()
            placement = Placement(
                tuple(link.prefix("sender")), tuple(link.prefix("receiver")), *addresses
            )
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
        results: dict[str, list[Sample]] = {"sfs": [], "raw": [], "wormhole": []}
        stripes = (
            {
                f"raw {args.stripe} channels": {"channels": args.stripe},
                f"raw {args.stripe} connections": {"connections": args.stripe},
                f"raw {args.stripe} processes": {"processes": args.stripe},
            }
            if args.stripe > 1
            else {}
        )
        for name in stripes:
            results[name] = []
        try:
            for run in range(args.runs):
                results["sfs"].append(
                    run_sfs(server, src, out, env, chunk, placement, args.streams)
                )
                if not args.no_raw:
                    results["raw"].append(run_raw(args.size, chunk + 28, env, placement=placement))
                for name, layout in stripes.items():
                    results[name].append(
                        run_raw(args.size, chunk + 28, env, placement=placement, **layout)
                    )
                if relays is not None:
                    results["wormhole"].append(run_wormhole(src, out, relays))
                print(f"  run {run + 1}/{args.runs} done", file=sys.stderr, flush=True)
        finally:
            started.close()
        crypto_cost = crypto_seconds(src, chunk)
    for name, samples in results.items():
        if samples:
            print("\n".join(report(name, samples)))
    if results["sfs"]:
        for side, seconds in zip(("sender", "receiver"), crypto_cost, strict=True):
            cpu = median(results["sfs"], lambda s, side=side: s.sides[side].cpu_seconds)  # type: ignore[misc]
            print(
                f"  {side:<8} SHA-256 + AES-GCM {seconds:5.2f} s CPU = {100 * seconds / cpu:4.1f} %"
                " of its CPU"
            )
    if results["raw"]:
        ratio = median(results["sfs"], lambda s: s.mib_per_s) / median(
            results["raw"], lambda s: s.mib_per_s
        )
        print(f"sfs/raw  {ratio:.2f}")


if __name__ == "__main__":
    main()
