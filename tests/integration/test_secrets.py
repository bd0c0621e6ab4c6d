"""The secret part of a code stays secret: not in any log, not in the process list,
and no key outlives its transfer."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
from pathlib import Path

from spake2 import SPAKE2_A, SPAKE2_B

from sfs import app
from sfs.code import parse_code
from sfs.peer.files.destinations import Plan
from sfs.peer.proto.crypto import FrameOpener, FrameSealer, KeyExchange, SessionKeys
from sfs.peer.proto.progress import NullProgress, Progress
from sfs.peer.proto.wire import Offer
from sfs.signal.config import ServerConfig
from sfs.signal.server import run_server
from tests.conftest import (
    LOOPBACK,
    PROCESS_TIMEOUT_SECONDS,
    peer_env,
    sfs_command,
    sha256_file,
    start_server,
    stop_process,
)
from tests.integration.peers import make_file, start_receiver


def test_secret_is_in_no_log_and_no_command_line(tmp_path: Path) -> None:
    server = start_server(tmp_path, "-vv")
    try:
        src = make_file(tmp_path / "big.bin", 8 * 1024 * 1024)
        receiver = start_receiver(server, tmp_path / "out", "--yes", "-vv")
        env = peer_env(server.url)
        env["SFS_DEBUG"] = "1"
        with open(tmp_path / "sender.err", "wb") as err:
            sender = subprocess.Popen(
                sfs_command("send", "-vv", "--chunk-size", "1024", str(src)),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
            )
        assert sender.stdin is not None
        sender.stdin.write(receiver.code.encode() + b"\n")
        sender.stdin.close()
        # While the transfer runs, look at what every user can see of both processes.
        secret = receiver.code[8:]
        seen: list[bytes] = []
        while sender.poll() is None and len(seen) < 20:
            for pid in (sender.pid, receiver.process.pid):
                with contextlib.suppress(OSError):
                    seen.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        assert seen
        assert all(secret.encode() not in cmdline for cmdline in seen)
        assert sender.wait(PROCESS_TIMEOUT_SECONDS) == 0
        received = receiver.finish()
        assert received.returncode == 0, received.stderr
        assert sha256_file(tmp_path / "out" / "big.bin") == sha256_file(src)
    finally:
        stop_process(server.process)
    logs = {
        "server": server.log_text(),
        "receiver stderr": received.stderr,
        "sender stderr": (tmp_path / "sender.err").read_text(),
    }
    assert "DEBUG" in logs["sender stderr"]
    assert "DEBUG" in logs["receiver stderr"]
    for name, text in logs.items():
        assert secret not in text, name


class InProcessUi:
    def __init__(self, baseline: set[int]) -> None:
        self.code: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.baseline = baseline
        self.live_during_transfer = 0
        self.key_exchanges_during_transfer = -1

    def status(self, message: str) -> None:
        pass

    def show_code(self, code: str, link: str | None = None) -> None:
        self.code.set_result(code)

    def progress(self) -> Progress:
        return NullProgress()

    async def decide(self, offer: Offer, plan: Plan, *, paired: str | None = None) -> bool:
        self.live_during_transfer = len(
            [obj for obj in live_secrets() if id(obj) not in self.baseline]
        )
        # The SPAKE2 state holds the password: gone once the keys are derived.
        self.key_exchanges_during_transfer = len(
            [obj for obj in live_key_exchanges() if id(obj) not in self.baseline]
        )
        return True

    async def confirm_verifier(self, verifier: str) -> bool:
        return True

    def kept_partial(self, name: str, held_bytes: int) -> None:
        pass

    def reconnecting(self, window: float) -> None:
        pass

    def reconnected(self, route: str) -> None:
        pass


def live_key_exchanges() -> list[object]:
    gc.collect()
    kinds = (KeyExchange, SPAKE2_A, SPAKE2_B)
    return [obj for obj in gc.get_objects() if isinstance(obj, kinds)]


def live_secrets() -> list[object]:
    gc.collect()
    kinds = (SessionKeys, KeyExchange, FrameSealer, FrameOpener)
    return [obj for obj in gc.get_objects() if isinstance(obj, kinds)]


async def test_no_key_outlives_its_transfer(tmp_path: Path) -> None:
    """Both peers in this process: after the transfer, no key object is left alive."""
    # Other tests in this process may hold keys of their own: only new ones count.
    before = {id(obj) for obj in live_secrets() + live_key_exchanges()}
    urls: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server = asyncio.ensure_future(
        run_server(ServerConfig(host=LOOPBACK, port=0), ready=urls.set_result)
    )
    try:
        url = await urls
        options = app.PeerOptions(server_url=url, ice_servers=(), ice_addresses=(LOOPBACK,))
        src = make_file(tmp_path / "f.bin", 100_000)
        (tmp_path / "out").mkdir()
        ui = InProcessUi(before)
        receiving = asyncio.ensure_future(
            app.receive(app.ReceiveConfig(output_dir=tmp_path / "out", peer=options), ui)
        )
        code = parse_code(await ui.code)
        sent = await app.send(app.SendConfig(code=code, paths=(src,), peer=options), ui)
        received = await receiving
        assert sent.total_bytes == received.total_bytes == 100_000
        assert (tmp_path / "out" / "f.bin").read_bytes() == src.read_bytes()
        # The check does see keys while they are in use (both sides' keys, sealers...).
        assert ui.live_during_transfer >= 4
        assert ui.key_exchanges_during_transfer == 0
        del sent, received, receiving, code, ui
        assert [obj for obj in live_secrets() if id(obj) not in before] == []
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
    assert os.listdir(tmp_path / "out") == ["f.bin"]
