"""`scripts/bench --browser`: the browser page against the CLI, beside CLI↔CLI.

Everything runs in the web tests' lab (tests/integration/web.py): one network
namespace with a veth pair, a real `sfs serve`, headless Debian Chromium driven by
Playwright and real `sfs` processes.  These cases, interleaved run after run, every
one over the WebRTC path (`--relay never`, `?relay=never`) with the same file:

    page → CLI     the page sends, `sfs receive` saves
    CLI → page     `sfs send`, the page saves (a streamed download)
    page → page    two tabs of the same Chromium
    raw tab → tab  two tabs' own RTCPeerConnection, nothing of sfs: page → page's ceiling
    CLI ↔ CLI      `sfs send --transport datachannel` to `sfs receive` (DataChannel, and
                   QUIC on the same WebRTC path)

and page → CLI and CLI → page again from a second Chromium that does not treat the
page's plain-http origin as secure, as a page on a LAN address is: no WebCrypto there
(the @noble/ciphers fallback) and no service worker (the page saves in memory).

MiB/s is the file's size over the time from its first byte to its last at the
receiver: a CLI receiver's folder is polled every 20 ms; a page receiver reports
that time itself (``body[data-data-seconds]``, performance.now()).  Connection set-up
is not counted.  Every received file is checked by SHA-256.  "machine CPU" is what all
cores spent busy during the case (set-up included): the page's Chromium processes, the
CLIs and the server share two cores here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench import MIB, Sample, Sampler, Usage, bytes_in, data_seconds, median, wait_usage

PAGE_TO_CLI = "page → CLI"
CLI_TO_PAGE = "CLI → page"
PAGE_TO_PAGE = "page → page"
CLI_TO_CLI = "CLI ↔ CLI (datachannel)"
#: Two CLIs carry QUIC on the same WebRTC path (sfs.peer.transport.quic): beside the
#: DataChannel reference, which is what the page speaks.
CLI_TO_CLI_QUIC = "CLI ↔ CLI (QUIC on the WebRTC path)"
#: Two tabs of the same Chromium with their own RTCPeerConnection and nothing of sfs (no
#: sealing, no hashing, no file): the ceiling page → page can reach in this lab.
RAW_PAGE_TO_PAGE = "raw Chromium DataChannel, tab → tab (no sfs)"
PLAIN_PAGE_TO_CLI = "page → CLI, plain http"
PLAIN_CLI_TO_PAGE = "CLI → page, plain http"
#: The goals of issue 26, as (label, numerator, denominator or None, goal).
GOALS = [
    ("page → CLI / CLI ↔ CLI", PAGE_TO_CLI, CLI_TO_CLI, 0.8),
    ("CLI → page / CLI ↔ CLI", CLI_TO_PAGE, CLI_TO_CLI, 0.8),
    ("page → page, MiB/s", PAGE_TO_PAGE, None, 30.0),
]
QUERY = "?save=download&relay=never"
#: Plain http: no service worker, so the page saves in memory (as it chooses itself).
PLAIN_QUERY = "?relay=never"


def run_browser(size: int, runs: int, title: str) -> None:
    if os.geteuid() != 0:
        raise SystemExit("scripts/bench --browser needs root (a network namespace)")
    try:
        from tests.integration import web
    except ModuleNotFoundError as exc:  # the lab is the test suite's
        raise SystemExit(
            f"scripts/bench --browser needs {exc.name}: pip install -e '.[test]'"
        ) from None
    if not Path(web.CHROMIUM).exists():
        raise SystemExit(f"scripts/bench --browser needs Debian's chromium ({web.CHROMIUM})")
    print(title, flush=True)
    cases: dict[str, tuple[Callable[[Any, Path, Path, str, str], Sample], bool]] = {
        PAGE_TO_CLI: (_page_to_cli, True),
        CLI_TO_PAGE: (_cli_to_page, True),
        PAGE_TO_PAGE: (_page_to_page, True),
        RAW_PAGE_TO_PAGE: (_raw_page_to_page, True),
        CLI_TO_CLI: (_cli_to_cli, True),
        CLI_TO_CLI_QUIC: (_cli_to_cli_quic, True),
        PLAIN_PAGE_TO_CLI: (_page_to_cli, False),
        PLAIN_CLI_TO_PAGE: (_cli_to_page, False),
    }
    results: dict[str, list[Sample]] = {name: [] for name in cases}
    machine: dict[str, list[float]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory(prefix="sfs-bench-browser-") as tmp:
        workdir = Path(tmp)
        src = workdir / "src.bin"
        with open(src, "wb") as f:
            for _ in range(0, size, MIB):
                f.write(os.urandom(min(MIB, size - f.tell())))
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        (workdir / "lab").mkdir()
        with web.lab(workdir / "lab") as the_lab:
            # The lab's own wrapper runs Chromium in its namespace; this one lacks
            # --unsafely-treat-insecure-origin-as-secure.
            plain_browser = the_lab.browser.browser_type.launch(
                executable_path=str(workdir / "lab" / "chromium-in-netns"),
                args=web.CHROMIUM_ARGS,
            )
            plain_lab = dataclasses.replace(the_lab, browser=plain_browser)
            try:
                for run in range(runs):
                    for name, (case, secure) in cases.items():
                        out = workdir / "out"
                        _empty(out)
                        busy = machine_busy_seconds()
                        if secure:
                            sample = case(the_lab, src, out, digest, QUERY)
                        else:
                            sample = case(plain_lab, src, out, digest, PLAIN_QUERY)
                        machine[name].append(machine_busy_seconds() - busy)
                        results[name].append(sample)
                    print(f"  run {run + 1}/{runs} done", file=sys.stderr, flush=True)
            finally:
                plain_browser.close()
    print("\n".join(browser_table(results, machine)))
    print("\n".join(browser_goals(results)))


def browser_table(
    results: dict[str, list[Sample]], machine: dict[str, list[float]] | None = None
) -> list[str]:
    """:param machine: per case, the CPU seconds the whole machine spent on each run
    (machine_busy_seconds: Chromium's processes, the CLIs, the server, set-up included)."""
    rows = [
        "| | MiB/s | first to last byte | CPU of the CLI send / recv | machine CPU "
        "| runs (MiB/s) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, samples in results.items():
        busy = (machine or {}).get(name, [])
        rows.append(
            f"| {name} | {median(samples, lambda s: s.mib_per_s):.1f} "
            f"| {median(samples, lambda s: s.total_s):.2f} s "
            f"| {_cpu(samples, 'sender')} / {_cpu(samples, 'receiver')} "
            f"| {f'{statistics.median(busy):.1f} s' if busy else '–'} "
            f"| {', '.join(f'{s.mib_per_s:.1f}' for s in samples)} |"
        )
    return rows


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat: all but idle and
    iowait). The page's side is several Chromium processes that come and go with the
    tab; the machine's total is what they and the CLIs share on its cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _cpu(samples: list[Sample], side: str) -> str:
    """The median CPU seconds of one CLI side, or – where a page was that side."""
    values = [s.sides[side].cpu_seconds for s in samples if side in s.sides]
    return f"{statistics.median(values):.1f} s" if values else "–"


def browser_goals(results: dict[str, list[Sample]]) -> list[str]:
    from benchmarks.bench import goal_line

    def speed(name: str) -> float:
        return median(results.get(name, []), lambda s: s.mib_per_s)

    lines = []
    for label, top, bottom, goal in GOALS:
        value = speed(top) if bottom is None else speed(top) / speed(bottom)
        line = goal_line(label, value, goal)
        if line is not None:
            lines.append(line)
    return lines


# -- the cases: each returns the seconds from the first byte to the last ---------------------


def _page_to_cli(lab: Any, src: Path, out: Path, digest: str, query: str) -> Sample:
    from tests.integration.web import read_code, wait_state

    receiver = lab.cli("receive", "--yes", "--relay", "never", "-o", str(out))
    code = read_code(receiver)
    page = lab.new_page(query)
    try:
        page.click("#role-send")
        page.fill("#code-input", code)
        page.set_input_files("#file-input", [str(src)])
        sampler = Sampler(bytes_in(out), interval=0.02)
        page.click("#send")
        wait_state(page, "done", "error", timeout_ms=_timeout_ms(src))
        usage, stderr = _finish(receiver)
        series = sampler.stop()
        if usage.returncode:
            raise RuntimeError(f"sfs receive failed:\n{stderr[-2000:]}")
        _check(out / src.name, digest)
        return _sample(src, _seconds(series, src), receiver=usage)
    finally:
        page.context.close()


def _cli_to_page(lab: Any, src: Path, out: Path, digest: str, query: str) -> Sample:
    from tests.integration.web import receiver_code, wait_state

    page = lab.new_page(query)
    try:
        downloads: list[Any] = []
        page.on("download", lambda download: downloads.append(download))
        page.click("#role-receive")
        code = receiver_code(page)
        sender = lab.cli("send", "--relay", "never", code, str(src))
        wait_state(page, "deciding")
        page.click("#accept")
        state = wait_state(page, "done", "error", timeout_ms=_timeout_ms(src))
        usage, stderr = _finish(sender)
        if usage.returncode or state != "done":
            raise RuntimeError(f"CLI → page failed ({state}):\n{stderr[-2000:]}")
        return _sample(src, _saved(page, downloads, out, digest), sender=usage)
    finally:
        page.context.close()


def _page_to_page(lab: Any, src: Path, out: Path, digest: str, query: str) -> Sample:
    from tests.integration.web import receiver_code, wait_state

    receiving = lab.new_page(query)
    sending = lab.new_page(query)
    try:
        downloads: list[Any] = []
        receiving.on("download", lambda download: downloads.append(download))
        receiving.click("#role-receive")
        code = receiver_code(receiving)
        sending.click("#role-send")
        sending.fill("#code-input", code)
        sending.set_input_files("#file-input", [str(src)])
        sending.click("#send")
        wait_state(receiving, "deciding")
        receiving.click("#accept")
        state = wait_state(receiving, "done", "error", timeout_ms=_timeout_ms(src))
        if state != "done":
            raise RuntimeError(f"page → page failed: {receiving.locator('#status').inner_text()}")
        wait_state(sending, "done")
        return _sample(src, _saved(receiving, downloads, out, digest))
    finally:
        sending.context.close()
        receiving.context.close()


#: The raw case: the page's own message size (64 KiB less the frame's 28 bytes) and
#: high water (4 MiB of bufferedAmount), as sfs's page sends.
RAW_MESSAGE_BYTES = 64 * 1024 - 28
RAW_HIGH_WATER = 4 * MIB

_RAW_OFFER = """async () => {
  const pc = new RTCPeerConnection({iceServers: []});
  const dc = pc.createDataChannel("raw", {ordered: true});
  window.rawPc = pc; window.rawDc = dc;
  await pc.setLocalDescription(await pc.createOffer());
  while (pc.iceGatheringState !== "complete") await new Promise(r => setTimeout(r, 20));
  return pc.localDescription.sdp;
}"""
_RAW_ANSWER = """async (offer) => {
  const pc = new RTCPeerConnection({iceServers: []});
  window.rawPc = pc; window.raw = {bytes: 0, first: 0, last: 0};
  pc.ondatachannel = ({channel}) => {
    channel.binaryType = "arraybuffer";
    channel.onmessage = ({data}) => {
      const now = performance.now();
      if (!window.raw.bytes) window.raw.first = now;
      window.raw.bytes += data.byteLength; window.raw.last = now;
    };
  };
  await pc.setRemoteDescription({type: "offer", sdp: offer});
  await pc.setLocalDescription(await pc.createAnswer());
  while (pc.iceGatheringState !== "complete") await new Promise(r => setTimeout(r, 20));
  return pc.localDescription.sdp;
}"""
_RAW_SEND = """async ([answer, size, message, highWater]) => {
  const pc = window.rawPc, dc = window.rawDc;
  await pc.setRemoteDescription({type: "answer", sdp: answer});
  if (dc.readyState !== "open") await new Promise(r => dc.addEventListener("open", r));
  dc.bufferedAmountLowThreshold = highWater / 2;
  const chunk = new Uint8Array(message);
  for (let sent = 0; sent < size; ) {
    if (dc.bufferedAmount > highWater)
      await new Promise(r => dc.addEventListener("bufferedamountlow", r, {once: true}));
    const n = Math.min(message, size - sent);
    dc.send(n === message ? chunk : chunk.subarray(0, n));
    sent += n;
  }
}"""


def _raw_page_to_page(lab: Any, src: Path, out: Path, digest: str, query: str) -> Sample:
    """No sfs at all: what two tabs' DataChannel moves here (received bytes counted,
    not checked: nothing of sfs runs to check them)."""
    size = src.stat().st_size
    receiving = lab.new_page(query)
    sending = lab.new_page(query)
    try:
        answer = receiving.evaluate(_RAW_ANSWER, sending.evaluate(_RAW_OFFER))
        sending.evaluate(_RAW_SEND, [answer, size, RAW_MESSAGE_BYTES, RAW_HIGH_WATER])
        # Polled from here: wait_for_function's predicate is eval'd, which the page's
        # CSP forbids.
        deadline = time.monotonic() + _timeout_ms(src) / 1000
        while receiving.evaluate("window.raw.bytes") < size:
            if time.monotonic() > deadline:
                raise RuntimeError("raw tab → tab: not every byte arrived in time")
            time.sleep(0.05)
        first, last = receiving.evaluate("[window.raw.first, window.raw.last]")
        return _sample(src, (last - first) / 1000)
    finally:
        sending.context.close()
        receiving.context.close()


def _cli_to_cli_quic(lab: Any, src: Path, out: Path, digest: str, query: str) -> Sample:
    return _cli_to_cli(lab, src, out, digest, query, quic=True)


def _cli_to_cli(
    lab: Any, src: Path, out: Path, digest: str, query: str, *, quic: bool = False
) -> Sample:
    from tests.integration.web import read_code

    # The reference is the DataChannel, as the page speaks it: a receiver that takes
    # no QUIC (SFS_QUIC=0) keeps two CLIs on it.
    receiver = lab.cli(
        "receive", "--yes", "--relay", "never", "-o", str(out),
        env={"SFS_QUIC": "1" if quic else "0"},
    )  # fmt: skip
    code = read_code(receiver)
    sampler = Sampler(bytes_in(out), interval=0.02)
    sender = lab.cli("send", "--transport", "datachannel", "--relay", "never", code, str(src))
    sent, sent_err = _finish(sender)
    received, received_err = _finish(receiver)
    series = sampler.stop()
    for usage, stderr in ((sent, sent_err), (received, received_err)):
        if usage.returncode:
            raise RuntimeError(f"sfs failed:\n{stderr[-2000:]}")
    _check(out / src.name, digest)
    return _sample(src, _seconds(series, src), sender=sent, receiver=received)


# -- helpers ----------------------------------------------------------------------------------


def _finish(process: Any) -> tuple[Usage, str]:
    """Wait for an sfs process (its own CPU time, from wait4()); its stderr."""
    from tests.conftest import PROCESS_TIMEOUT_SECONDS

    usage = wait_usage(process, PROCESS_TIMEOUT_SECONDS)
    _out, err = process.communicate()
    return usage, err.decode(errors="replace")


def _sample(src: Path, seconds: float, **sides: Usage) -> Sample:
    return Sample(src.stat().st_size / MIB / seconds, seconds, sides=sides)


def _timeout_ms(src: Path) -> int:
    """A page's bound for one transfer: a minute, or 1 MiB/s, whichever is longer."""
    return int(max(60, src.stat().st_size / MIB) * 1000)


def _empty(out: Path) -> None:
    out.mkdir(exist_ok=True)
    for leftover in out.iterdir():
        leftover.unlink()


def _seconds(series: list[tuple[float, int]], src: Path) -> float:
    seconds = data_seconds(series, src.stat().st_size)
    if seconds is None:
        raise RuntimeError("the receiver's folder never went from empty to full")
    return seconds


def _saved(page: Any, downloads: list[Any], out: Path, digest: str) -> float:
    """The page's own first-to-last-byte time, once its download is checked."""
    seconds = float(page.evaluate("document.body.dataset.dataSeconds"))
    deadline = time.monotonic() + 60
    while not downloads and time.monotonic() < deadline:
        time.sleep(0.05)
    if len(downloads) != 1:
        raise RuntimeError(f"{len(downloads)} downloads, expected 1")
    failure = downloads[0].failure()
    if failure is not None:
        raise RuntimeError(f"the download failed: {failure}")
    path = out / "download.bin"
    downloads[0].save_as(str(path))
    _check(path, digest)
    return seconds


def _check(path: Path, digest: str) -> None:
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    if got != digest:
        raise RuntimeError(f"{path.name}: SHA-256 {got}, expected {digest}")
