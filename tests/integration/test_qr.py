"""`sfs receive --qr` and `sfs send --print-code --qr`: the QR code a real process
prints is read back (parsed, rendered, decoded with zbarimg)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from sfs.signal.client import page_link, serves_page
from sfs.signal.config import ServerConfig
from tests.conftest import (
    ServerProcess,
    peer_env,
    read_line_matching,
    sfs_command,
    stop_process,
)
from tests.integration.peers import CODE_RE, make_file, start_receiver
from tests.integration.test_signal import serving
from tests.qr_decode import decode_drawing


def lines_until(process: subprocess.Popen[bytes], last: str, timeout: float = 30) -> list[str]:
    """stdout's lines up to the first that starts with ``last`` (excluded)."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode("utf-8")
        assert line, f"stdout ended before {last!r}: {lines!r}"
        if line.startswith(last):
            return lines
        lines.append(line.rstrip("\n"))
    raise AssertionError(f"no {last!r} line within {timeout} s")


def test_receive_qr_holds_the_page_link(sfs_server: ServerProcess, tmp_path: Path) -> None:
    """sfs serve serves the web page, which reads a code after `#`: the QR code holds
    that link, printed on stdout with the code and nowhere else."""
    receiver = start_receiver(sfs_server, tmp_path / "out", "--qr", "--yes")
    try:
        drawing = lines_until(receiver.process, "Link: ")
        link = f"{sfs_server.url}/#{receiver.code}"
        assert decode_drawing(drawing, tmp_path) == link
    finally:
        finished = receiver.stop()
    assert receiver.code not in finished.stderr


@pytest.mark.parametrize("flags", [("--print-code",), ("--many", "3")])
def test_a_senders_qr_holds_the_receiving_link(
    sfs_server: ServerProcess, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    """A sender's code makes the page receive: its QR code holds the page's link with
    ``#receive/`` before the code, printed on stdout with the code; with `--many 3`
    (--print-code implied) one code and one QR code serve every receiver."""
    source = make_file(tmp_path / "f.bin", 1000)
    process = subprocess.Popen(
        sfs_command("send", *flags, "--qr", str(source)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=peer_env(sfs_server.url),
    )
    try:
        code = read_line_matching(process, CODE_RE).group(1)
        drawing = lines_until(process, "Link: ")
    finally:
        stop_process(process)
    assert decode_drawing(drawing, tmp_path) == f"{sfs_server.url}/#receive/{code}"


async def test_serves_page_tells_a_server_with_the_page_from_one_without() -> None:
    """The link is given only where the page is: `sfs serve`, not a server with
    page=False (LAN mode's embedded server unless --qr or --json asks for the page),
    and not a port where nothing listens."""
    with_page = ServerConfig(host="127.0.0.1", port=0)
    without = ServerConfig(host="127.0.0.1", port=0, page=False)
    async with serving(with_page) as url, serving(without) as bare_url:
        assert await serves_page(url)
        assert not await serves_page(bare_url)
    assert not await serves_page("http://127.0.0.1:9")
    assert page_link(url + "/", "ABC-123-tiger-lamp") == f"{url}/#ABC-123-tiger-lamp"
    assert page_link(url, "ABC-123-tiger-lamp", receive=True) == (
        f"{url}/#receive/ABC-123-tiger-lamp"
    )
