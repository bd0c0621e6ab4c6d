"""A lab for the browser page: one network namespace with a veth pair (both ends
inside, so WebRTC has non-loopback host candidates: Chromium and aioice skip
loopback), a real `sfs serve` in it, headless Debian Chromium driven by Playwright
(launched inside the namespace through a wrapper), and real `sfs` CLI peers.

Screenshots of every step land in ``test-artifacts/web/`` (or ``$SFS_TEST_ARTIFACTS``)
and are checked to be non-blank.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROCESS_TIMEOUT_SECONDS, ServerProcess, start_server, stop_process

CHROMIUM = "/usr/bin/chromium"
SERVER_ADDRESS = "10.203.0.1"
PEER_ADDRESS = "10.203.0.2"
ARTIFACTS = Path(os.environ.get("SFS_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))
#: How long a page may take to reach a state (set-up, ICE and a 10 MiB transfer).
PAGE_TIMEOUT_MS = 60_000
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Plain host candidates, not *.local mDNS names, so aioice can use them.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]


def skip_unless_ready() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("the browser lab needs root and iproute2 (network namespaces)")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/test installs it as root)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")


@contextmanager
def web_namespace() -> Iterator[str]:
    """A namespace with lo and a veth pair, both ends inside; deleted afterwards."""
    name = f"sfs-web-{os.getpid()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run(["ip", "netns", "add", name], check=True)

    def inside(*command: str) -> None:
        subprocess.run(["ip", "netns", "exec", name, *command], check=True)

    try:
        inside("ip", "link", "set", "lo", "up")
        subprocess.run(
            ["ip", "link", "add", "sfsweb0", "netns", name, "type", "veth",
             "peer", "name", "sfsweb1", "netns", name],
            check=True,
        )  # fmt: skip
        inside("ip", "addr", "add", f"{SERVER_ADDRESS}/24", "dev", "sfsweb0")
        inside("ip", "addr", "add", f"{PEER_ADDRESS}/24", "dev", "sfsweb1")
        inside("ip", "link", "set", "sfsweb0", "up")
        inside("ip", "link", "set", "sfsweb1", "up")
        # Chromium gathers host candidates only on an interface with a route out.
        inside("ip", "route", "add", "default", "dev", "sfsweb0")
        yield name
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
        for pid in pids.stdout.split():
            subprocess.run(["kill", "-9", pid], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@dataclass
class Lab:
    netns: str
    server: ServerProcess
    browser: Any  # playwright.sync_api.Browser
    workdir: Path

    @property
    def url(self) -> str:
        return self.server.url

    def peer_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SFS_SERVER"] = self.server.url
        env["SFS_ICE_ADDRESSES"] = PEER_ADDRESS
        env.pop("SFS_DEBUG", None)
        return env

    def new_page(self, query: str = "?save=download", init_script: str | None = None) -> Any:
        context = self.browser.new_context(accept_downloads=True)
        if init_script is not None:
            context.add_init_script(init_script)
        page = context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.goto(self.url + "/" + query)
        return page

    def cli(
        self, *args: str, stdin: int | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """`sfs ARGS` in the namespace; ``env`` adds to peer_env()."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *_sfs(*args)],
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**self.peer_env(), **(env or {})},
        )


def _sfs(*args: str) -> list[str]:
    return [sys.executable, "-m", "sfs", *args]


@contextmanager
def lab(workdir: Path, *, mdns: bool = False) -> Iterator[Lab]:
    """:param mdns: Chromium as users run it, its host addresses hidden behind mDNS
    ``.local`` names (aioice then learns them as peer-reflexive)."""
    from playwright.sync_api import sync_playwright

    with web_namespace() as netns:
        server = start_server(workdir, netns=netns, host=SERVER_ADDRESS)
        wrapper = workdir / "chromium-in-netns"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {netns} {CHROMIUM} "$@"\n')
        wrapper.chmod(0o755)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(wrapper),
                    args=[
                        *(a for a in CHROMIUM_ARGS if not (mdns and "Mdns" in a)),
                        # WebCrypto, the service worker and the File System Access
                        # API need a secure context: what https gives in real use.
                        f"--unsafely-treat-insecure-origin-as-secure={server.url}",
                    ],
                )
                try:
                    yield Lab(netns, server, browser, workdir)
                finally:
                    browser.close()
        finally:
            stop_process(server.process)


# -- checks ---------------------------------------------------------------------------------


def wait_state(page: Any, *states: str, timeout_ms: int = PAGE_TIMEOUT_MS) -> str:
    """Wait until the page's ``body[data-state]`` is one of ``states``; fail with what
    the page says (its #status) if it does not get there."""
    selector = ", ".join(f'body[data-state="{s}"]' for s in states)
    try:
        page.wait_for_selector(selector, timeout=timeout_ms, state="attached")
    except Exception as exc:  # playwright's TimeoutError
        state = page.evaluate("document.body.dataset.state")
        raise AssertionError(
            f"the page never reached {states}: state {state!r}, status {status(page)!r}"
        ) from exc
    return str(page.evaluate("document.body.dataset.state"))


def status(page: Any) -> str:
    return str(page.locator("#status").inner_text())


def receiver_code(page: Any) -> str:
    # Polled from here: the page's CSP forbids the eval that wait_for_function uses.
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        code = str(page.locator("#code").inner_text()).strip()
        if re.fullmatch(r"[A-Z]{3}-[0-9]{3}-[a-z]+-[a-z]+", code):
            return code
        time.sleep(0.1)
    raise AssertionError(f"the page showed no code; its status: {status(page)!r}")


def screenshot(page: Any, name: str) -> Path:
    """Save a screenshot as a test artifact, and check it shows something."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "web" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    assert_not_blank(path)
    return path


def assert_not_blank(png: Path) -> None:
    """A PNG whose pixels are not all one colour (read with zlib: no image library)."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    idat = b"".join(_chunks(data, b"IDAT"))
    raw = zlib.decompress(idat)
    rows = len(raw) // height
    # Filter bytes aside, more than a handful of distinct byte values means content.
    distinct = {raw[r * rows + 1 : (r + 1) * rows] for r in range(0, height, max(height // 50, 1))}
    assert width > 100, f"{png} looks blank"
    assert height > 100, f"{png} looks blank"
    assert len(distinct) > 3, f"{png} looks blank"


def _chunks(data: bytes, kind: bytes) -> Iterator[bytes]:
    at = 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        if data[at + 4 : at + 8] == kind:
            yield data[at + 8 : at + 8 + length]
        at += 12 + length


@contextmanager
def dragging(page: Any, selector: str, *paths: Path) -> Iterator[None]:
    """Drag ``paths`` (files or folders) from the desktop over ``selector``, and drop
    them there when the block ends (or cancel the drag if it raised), as a user does:
    Chromium's own drag and drop, through the DevTools protocol (Input.dispatchDragEvent:
    dragEnter, dragOver, drop), since Playwright has no drag from outside the page.
    Chromium gives a dropped folder as a real FileSystemDirectoryEntry, empty folders in
    it included (its readEntries() needs a page with a real origin: on about:blank it
    fails with EncodingError)."""
    target = page.locator(selector)
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    assert box is not None, f"{selector} is not shown"
    where = {"x": box["x"] + box["width"] / 2, "y": box["y"] + box["height"] / 2}
    data = {"items": [], "files": [str(p) for p in paths], "dragOperationsMask": 1}
    cdp = page.context.new_cdp_session(page)
    try:
        for kind in ("dragEnter", "dragOver"):
            cdp.send("Input.dispatchDragEvent", {"type": kind, **where, "data": data})
        try:
            yield
        except BaseException:
            cdp.send("Input.dispatchDragEvent", {"type": "dragCancel", **where, "data": data})
            raise
        cdp.send("Input.dispatchDragEvent", {"type": "drop", **where, "data": data})
    finally:
        cdp.detach()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_files(folder: Path, sizes: dict[str, int]) -> list[Path]:
    """Files of random bytes in ``folder``, one per name, of its size."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, size in sizes.items():
        path = folder / name
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def finish(
    process: subprocess.Popen[bytes], timeout: float = PROCESS_TIMEOUT_SECONDS
) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(process)
        out, err = process.communicate()
        text = err.decode(errors="replace")
        raise AssertionError(
            f"sfs did not finish within {timeout:.0f} s; its stderr:\n{text}"
        ) from None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def read_code(process: subprocess.Popen[bytes], timeout: float = 30) -> str:
    """The code an `sfs receive` prints on stdout."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline().decode(errors="replace")
            match = re.search(r"Code: (\S+)", line)
            if match:
                return match.group(1)
            if not line:
                break
    stop_process(process)
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    raise AssertionError(f"sfs receive showed no code; its stderr:\n{stderr}")


#: The folder picker answers with the page's private folder (OPFS), as it is: headless
#: Chromium cannot answer the real dialog, and OPFS has the same directory handles.
PICKER_IS_OPFS_ROOT = "globalThis.showDirectoryPicker = () => navigator.storage.getDirectory();"

#: Every path in the page's private folder: "folder", or the SHA-256 of a file.
READ_OPFS = """
async () => {
  const found = {};
  const hex = (buffer) =>
    Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  const visit = async (folder, prefix) => {
    for await (const [name, handle] of folder.entries()) {
      const path = prefix + name;
      if (handle.kind === "directory") {
        found[path] = "folder";
        await visit(handle, path + "/");
      } else {
        const data = await (await handle.getFile()).arrayBuffer();
        found[path] = hex(await crypto.subtle.digest("SHA-256", data));
      }
    }
  };
  await visit(await navigator.storage.getDirectory(), "");
  return found;
}
"""

#: The size of a file in the page's private folder (-1: none).
OPFS_SIZE = """
async (name) => {
  try {
    const root = await navigator.storage.getDirectory();
    return (await (await root.getFileHandle(name)).getFile()).size;
  } catch {
    return -1;
  }
}
"""
