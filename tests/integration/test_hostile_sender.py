"""More of a malicious sender against a real `sfs receive` (test_malicious_peer.py's
Attacker): names Windows cannot store, frames while the receiver's prompt is open, and
probing a kept partial copy through the resume exchange.

A module of its own, so that its sessions get their own server and its per-address
lookup budget (60 a minute), which test_malicious_peer.py's own sessions nearly use up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pty
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sfs.app import PeerOptions, sender_session
from sfs.code import parse_code
from sfs.errors import SfsError
from sfs.peer.files.partial import PartFile, identity_of
from sfs.peer.proto.wire import FileInfo, FrameType, Offer, encode_offer
from tests.conftest import LOOPBACK, ServerProcess
from tests.helpers import QuietUi
from tests.integration.peers import Finished, start_receiver
from tests.integration.test_malicious_peer import (
    CHUNK,
    DATA,
    Attacker,
    attack,
    offer_one_file,
    snapshot,
)


@pytest.mark.parametrize(
    ("offered", "saved"),
    [
        ("report.pdf:Zone.Identifier", "report.pdf_Zone.Identifier"),
        ("COM\u00b9.txt", "_COM\u00b9.txt"),
        ('a<b>|?*"c', "a_b_____c"),
    ],
)
async def test_names_windows_cannot_store_are_defused(
    sfs_server: ServerProcess, tmp_path: Path, offered: str, saved: str
) -> None:
    result = await attack(sfs_server, tmp_path, offer_one_file(offered))
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path / "out") == [saved]
    assert (tmp_path / "out" / saved).read_bytes() == DATA


# -- frames while the receiver's "Receive …? [y/N]" prompt is open ----------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def attack_at_prompt(
    server: ServerProcess, tmp_path: Path, script: Callable[[Attacker, int], Awaitable[None]]
) -> tuple[Finished, float]:
    """Run ``script`` against a receiver that waits at its prompt (stdin a terminal nobody
    types on); return the receiver's end and how long it took after the script began."""
    terminal, tty = pty.openpty()
    try:
        receiver = start_receiver(server, tmp_path / "out", "--connect-timeout", "10", stdin=tty)
        os.close(tty)
        options = PeerOptions(
            reconnect_window=0.0,  # an attacker that vanishes is not waited for
            server_url=server.url,
            ice_servers=(),
            ice_addresses=(LOOPBACK,),
            connect_timeout=10,
        )
        async with sender_session(parse_code(receiver.code), options, QuietUi()) as session:
            began = time.monotonic()
            # SfsError: the receiver closed the connection: what it should do.
            with contextlib.suppress(SfsError):
                await script(Attacker(session), receiver.process.pid)
            # It must end without an answer to its prompt (the session stays open meanwhile).
            await asyncio.to_thread(receiver.process.wait, 15)
            took = time.monotonic() - began
        return receiver.finish(), took
    finally:
        os.close(terminal)


def offer_frame(a: Attacker, size: int = 2**30) -> bytes:
    return a.seal(FrameType.OFFER, encode_offer(Offer((FileInfo("f.bin", size),), "m", 60_000)))


async def test_frames_flooded_at_the_prompt_end_the_transfer(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    peak = 0

    async def flood(a: Attacker, pid: int) -> None:
        nonlocal peak
        a.send(offer_frame(a))
        await a.drain()
        junk = os.urandom(60_000)
        deadline = time.monotonic() + 20
        sent = 0
        while time.monotonic() < deadline:
            a.send(a.seal(FrameType.CHUNK, junk))
            await a.drain()
            sent += 1
            if sent % 50 == 0:
                peak = max(peak, rss_bytes(pid))
            frame = a.channel.poll()
            if frame is not None and a.opener.open(frame)[0] == FrameType.CANCEL:
                return

    before = snapshot(tmp_path)
    result, took = await attack_at_prompt(sfs_server, tmp_path, flood)
    assert result.returncode == 13, result.stderr
    assert "unexpected CHUNK" in result.error_line()
    assert took < 10, f"the receiver took {took:.1f} s to refuse"
    assert peak < 200 * 1024 * 1024, f"the receiver grew to {peak >> 20} MiB"
    assert os.listdir(tmp_path / "out") == []
    assert {p for p in snapshot(tmp_path) if not p.startswith("receiver-")} == before


async def test_cancel_at_the_prompt_ends_it_at_once(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    async def ping_then_cancel(a: Attacker, pid: int) -> None:
        a.send(offer_frame(a, 10))
        await a.drain()
        for _ in range(3):  # keepalives are fine while the user decides
            a.send(a.seal(FrameType.PING, b""))
            await a.drain()
            await asyncio.sleep(0.2)
        a.send(a.seal(FrameType.CANCEL, json.dumps({"reason": "changed my mind"}).encode()))
        await a.drain()

    result, took = await attack_at_prompt(sfs_server, tmp_path, ping_then_cancel)
    assert result.returncode == 7, result.stderr
    assert "changed my mind" in result.error_line()
    assert took < 5, f"the receiver took {took:.1f} s to notice the cancel"
    assert os.listdir(tmp_path / "out") == []


# -- the resume exchange reveals nothing of a kept partial -------------------------------

PIN_FILE = FileInfo("pin.txt", 100, 1_700_000_000_123_456_789)


async def probe_partial(server: ServerProcess, folder: Path, secret: bytes) -> list[bytes]:
    """A sender with a valid code, offering exactly the file a kept partial is of, tries
    to learn that partial's bytes; return every plaintext the receiver sent it."""
    out = folder / "out"
    out.mkdir(parents=True)
    # The partial, written by sfs itself as an interrupted transfer leaves it.
    kept = PartFile(out / PIN_FILE.name, identity=identity_of(PIN_FILE))
    kept.write(secret)
    kept.keep()
    receiver = start_receiver(server, out, "--yes", "--connect-timeout", "10")
    options = PeerOptions(
        reconnect_window=0.0,  # an attacker that vanishes is not waited for
        server_url=server.url,
        ice_servers=(),
        ice_addresses=(LOOPBACK,),
        connect_timeout=10,
    )
    heard: list[bytes] = []

    async def hear() -> tuple[FrameType, Any]:
        kind, payload = a.opener.open(await a.channel.receive())
        heard.append(bytes([kind]) + bytes(payload))
        return FrameType(kind), json.loads(payload) if payload else None

    mine = os.urandom(PIN_FILE.size)
    async with sender_session(parse_code(receiver.code), options, QuietUi()) as session:
        a = Attacker(session)
        a.send(a.seal(FrameType.OFFER, encode_offer(Offer((PIN_FILE,), "m", CHUNK))))
        await a.drain()
        kind, accept = await hear()
        assert kind is FrameType.ACCEPT
        held = accept["held"][0]
        assert held == len(secret)  # the length it holds, nothing more
        # A guess at the partial's bytes: one guess, which costs the receiver its partial.
        guess = hashlib.sha256(b"PIN=000000" * 4).hexdigest()
        resume = {"offsets": [held], "sha256": [guess]}
        a.send(a.seal(FrameType.RESUME, json.dumps(resume).encode()))
        await a.drain()
        kind, start = await hear()
        assert (kind, start) == (FrameType.START, {"offsets": [0]})
        await a.chunks(mine)
        a.send(a.seal(FrameType.FILE_DONE, hashlib.sha256(mine).digest()))
        await a.drain()
        assert (await hear())[0] is FrameType.FILE_ACK
    result = receiver.finish()
    assert result.returncode == 0, result.stderr
    assert os.listdir(out) == [PIN_FILE.name]  # the partial is gone: no second guess
    assert (out / PIN_FILE.name).read_bytes() == mine
    digest = hashlib.sha256(secret).digest()
    for plaintext in heard:
        assert digest not in plaintext
        assert digest.hex().encode() not in plaintext
    return heard


async def test_resume_reveals_nothing_of_a_kept_partial(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    first = await probe_partial(sfs_server, tmp_path / "a", b"PIN=123456" * 4)
    second = await probe_partial(sfs_server, tmp_path / "b", b"PIN=654321" * 4)
    assert first == second  # what the sender heard does not depend on the partial's bytes
