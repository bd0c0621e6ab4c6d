"""The page through `sfs serve`'s WebSocket relay (issue 25, part 4), in headless
Debian Chromium (Playwright) inside the web tests' own namespace, with a real
`sfs serve` and real CLI processes: page -> CLI, CLI -> page and page -> page, every
file checked by SHA-256, and both ends say `relayed by HOST`.

The relay is forced on both ends: the page with `?relay=only` in its address (its
`--relay only`: the relay at once, never the DataChannel) and the CLI with
`--relay only` (SFS_RELAY). Without that, WebRTC connects inside the namespace
and the relay would never be taken.

Needs the relay's server side (`/relay`, WebSocket and raw) and the CLI's relay
(`--relay`, `relay` in the sealed offer/answer): written before they were on main.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_web import Downloads
from tests.integration.web import (
    Lab,
    finish,
    lab,
    read_code,
    receiver_code,
    sha256,
    skip_unless_ready,
    status,
    wait_state,
)

pytestmark = pytest.mark.slow

#: The page's own switch (sfs/web/src/relay.js relayMode).
RELAY_ONLY = "?save=download&relay=only"
SIZES = {"empty.bin": 0, "one.bin": 1, "five-mib.bin": 5 * 1024 * 1024 + 3, "ünï ✓.txt": 3000}


@pytest.fixture(scope="module")
def relay_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    skip_unless_ready()
    with lab(tmp_path_factory.mktemp("web-relay")) as the_lab:
        yield the_lab


def make_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, size in SIZES.items():
        path = folder / name
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def test_the_page_sends_to_the_cli_through_the_relay(relay_lab: Lab, tmp_path: Path) -> None:
    files = make_files(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    receiver = relay_lab.cli("receive", "--relay", "only", "--yes", "-o", str(out))
    code = read_code(receiver)
    page = relay_lab.new_page(RELAY_ONLY)
    page.click("#role-send")
    page.fill("#code-input", code)
    page.set_input_files("#file-input", [str(p) for p in files])
    page.click("#send")
    wait_state(page, "done")
    returncode, stdout, stderr = finish(receiver)
    assert returncode == 0, stderr
    for path in files:
        assert sha256(out / path.name) == sha256(path), path.name
    assert "relayed by" in status(page), status(page)
    assert "relayed by" in stdout, stdout
    page.context.close()


def test_the_cli_sends_to_the_page_through_the_relay(relay_lab: Lab, tmp_path: Path) -> None:
    files = make_files(tmp_path / "src")
    page = relay_lab.new_page(RELAY_ONLY)
    downloads = Downloads(page, tmp_path / "downloads")
    page.click("#role-receive")
    code = receiver_code(page)
    sender = relay_lab.cli("send", "--relay", "only", code, *(str(p) for p in files))
    wait_state(page, "deciding")
    page.click("#accept")
    wait_state(page, "done")
    returncode, stdout, stderr = finish(sender)
    assert returncode == 0, stderr
    saved = downloads.saved(len(files))
    for path in files:
        assert sha256(saved[path.name]) == sha256(path), path.name
    assert "relayed by" in status(page), status(page)
    assert "relayed by" in stdout, stdout
    page.context.close()


def test_a_page_sends_to_a_page_through_the_relay(relay_lab: Lab, tmp_path: Path) -> None:
    files = make_files(tmp_path / "src")
    receiving = relay_lab.new_page(RELAY_ONLY)
    downloads = Downloads(receiving, tmp_path / "downloads")
    receiving.click("#role-receive")
    code = receiver_code(receiving)
    sending = relay_lab.new_page(RELAY_ONLY)
    sending.click("#role-send")
    sending.fill("#code-input", code)
    sending.set_input_files("#file-input", [str(p) for p in files])
    sending.click("#send")
    wait_state(receiving, "deciding")
    receiving.click("#accept")
    wait_state(receiving, "done")
    wait_state(sending, "done")
    saved = downloads.saved(len(files))
    for path in files:
        assert sha256(saved[path.name]) == sha256(path), path.name
    assert "relayed by" in status(sending), status(sending)
    assert "relayed by" in status(receiving), status(receiving)
    sending.context.close()
    receiving.context.close()
