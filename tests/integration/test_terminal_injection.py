"""Text from a peer or a server never reaches the terminal raw.

A malicious peer (it has the code) or server writes every C0 and C1 control, ESC/CSI/
OSC sequences (clear screen, OSC 52 clipboard write, a fake green "Received" line) and
bidi overrides into each string it controls; the real `sfs` processes must show them
only as inert escapes, on the one line where they belong.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sfs.app import PeerOptions, receiver_session, sender_session
from sfs.code import parse_code
from sfs.peer.proto.crypto import FrameOpener, FrameSealer
from sfs.peer.proto.wire import FileInfo, FrameType, Offer, encode_offer
from sfs.signal import messages as m
from sfs.text import is_unsafe
from tests.conftest import (
    LOOPBACK,
    ServerProcess,
    peer_env,
    sfs_command,
    start_server,
    stop_process,
)
from tests.evil_server import Attack, EvilSignalServer, serve_evil
from tests.helpers import QuietUi
from tests.integration.peers import make_file, run_sender, start_receiver
from tests.integration.sio_client import QueueingClient

CONTROLS = "".join(map(chr, range(0x20))) + "\x7f" + "".join(map(chr, range(0x80, 0xA0)))
SEQUENCES = (
    "\x1b[2J\x1b[H"  # clear the screen, cursor home
    "\x1b]52;c;ZXZpbA==\x07"  # OSC 52: write the clipboard
    "\r\x1b[32mReceived report.pdf (1.2 MB)\x1b[0m\n"  # a fake success line
)
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u2028\u2029"
#: Fits a CANCEL/REJECT reason (at most 200 characters).
HOSTILE = CONTROLS + SEQUENCES + BIDI
#: Fits a sender name (at most 64 characters).
HOSTILE_SHORT = "\x1b[2J\x1b]52;c;ZXZpbA==\x07\r\n\x9b31m\u202eevil\u2066"
TIMEOUT_SECONDS = 60


def assert_inert(text: str) -> None:
    """Only line breaks of sfs's own, no control or bidi character, no forged line."""
    bad = sorted({f"U+{ord(c):04X}" for c in text if is_unsafe(c) and c != "\n"})
    assert not bad, (bad, text)
    assert not any(line.startswith("Received") for line in text.splitlines()), text


def options(url: str) -> PeerOptions:
    return PeerOptions(
        reconnect_window=0.0,  # an attacker that vanishes is not waited for
        server_url=url,
        ice_servers=(),
        ice_addresses=(LOOPBACK,),
        connect_timeout=10,
    )


async def test_sender_name_file_name_and_cancel_reason(
    sfs_server: ServerProcess, tmp_path: Path
) -> None:
    """A malicious sender: hostile sender and file names in the offer (shown at the
    accept line), then a CANCEL whose reason is the whole hostile string."""
    receiver = start_receiver(sfs_server, tmp_path / "out", "--yes", "--connect-timeout", "10")
    code = parse_code(receiver.code)
    async with sender_session(code, options(sfs_server.url), QuietUi()) as session:
        seal = FrameSealer(session.keys.frame_send).seal
        opener = FrameOpener(session.keys.frame_receive)
        offer = Offer((FileInfo(HOSTILE_SHORT + "x.txt", 10),), HOSTILE_SHORT, 1000)
        session.channel.send(seal(FrameType.OFFER, encode_offer(offer)))
        async with asyncio.timeout(TIMEOUT_SECONDS):
            kind, _ = opener.open(await session.channel.receive())
        assert FrameType(kind) is FrameType.ACCEPT
        reason = json.dumps({"reason": HOSTILE}).encode()
        session.channel.send(seal(FrameType.CANCEL, reason))
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await session.channel.wait_closed()
    result = receiver.finish()
    assert result.returncode == 7, result.stderr
    assert "Receive " in result.stderr
    assert "\\x1b[2J" in result.stderr
    assert "\\x1b]52;c;ZXZpbA==\\x07" in result.error_line()
    assert_inert(result.stderr + result.stdout)


async def test_reject_reason(sfs_server: ServerProcess, tmp_path: Path) -> None:
    """A malicious receiver declines with the hostile string as its reason."""
    src = make_file(tmp_path / "f.bin", 1000)
    ui = QuietUi()

    async def evil_receiver() -> None:
        async with receiver_session(options(sfs_server.url), ui) as session:
            seal = FrameSealer(session.keys.frame_send).seal
            opener = FrameOpener(session.keys.frame_receive)
            async with asyncio.timeout(TIMEOUT_SECONDS):
                kind, _ = opener.open(await session.channel.receive())
            assert FrameType(kind) is FrameType.OFFER
            session.channel.send(seal(FrameType.REJECT, json.dumps({"reason": HOSTILE}).encode()))
            async with asyncio.timeout(TIMEOUT_SECONDS):
                await session.channel.wait_closed()

    receiving = asyncio.ensure_future(evil_receiver())
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            code = await ui.code
        sent = await asyncio.to_thread(
            run_sender, sfs_server, "--connect-timeout", "10", code, str(src)
        )
    finally:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await asyncio.gather(receiving, return_exceptions=True)
    assert sent.returncode == 6, sent.stderr
    assert "\\x1b[32mReceived" in sent.error_line()
    assert_inert(sent.stderr + sent.stdout)


class HostileErrors(Attack):
    """The server refuses every registration with the hostile string as its message."""

    def reply(self, server: EvilSignalServer, event: str, ack: dict[str, object]) -> object:
        if event == m.REGISTER_PEER:
            return {"ok": False, "error": "x" + HOSTILE_SHORT, "message": HOSTILE}
        return ack


async def test_server_error_message(tmp_path: Path) -> None:
    src = make_file(tmp_path / "f.bin", 10)
    async with serve_evil(HostileErrors()) as (url, _):
        for args in (("receive", "--yes", "-o", str(tmp_path)), ("send", "ABC-123-able-acid")):
            command = args if args[0] == "receive" else (*args, str(src))
            process = await asyncio.create_subprocess_exec(
                *sfs_command(*command),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=peer_env(url),
            )
            async with asyncio.timeout(TIMEOUT_SECONDS):
                out, err = await process.communicate()
            text = err.decode("utf-8", "replace")
            assert process.returncode == 3, text
            assert "\\x1b]52;c;ZXZpbA==\\x07" in text
            assert_inert(text + out.decode("utf-8", "replace"))


async def test_hostile_event_name_in_the_server_log(tmp_path: Path) -> None:
    """The server logs a client's unknown event name at -vv: the operator's terminal
    must not run it."""
    server = start_server(tmp_path, "-vv")
    try:
        client = QueueingClient(server.url)
        await client.open()
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                reply = await client.sio.call(HOSTILE_SHORT, {}, timeout=10)
            assert reply["ok"] is False
        finally:
            await client.close()
    finally:
        stop_process(server.process)
    log = server.log_text()
    assert "\\x1b[2J" in log  # the name was logged, as inert text
    assert_inert(log)
